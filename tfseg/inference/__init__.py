"""Inference: `Predictor` (a trained model in any exported format, with its preprocessing), image folders
(`predict_images`) and videos (`segment_video`). TensorFlow only."""

from tfseg.files import read_metadata
from tfseg.inference.images import predict_images
from tfseg.inference.predictor import Predictor, probability_map
from tfseg.inference.video import VideoError, segment_video

__all__ = ["Predictor", "VideoError", "predict_images", "probability_map", "read_metadata", "segment_video"]
