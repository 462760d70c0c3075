"""Inference: `Predictor` (a trained model with its preprocessing). TensorFlow only."""

from tfseg.inference.predictor import Predictor, probability_map, read_metadata

__all__ = ["Predictor", "probability_map", "read_metadata"]
