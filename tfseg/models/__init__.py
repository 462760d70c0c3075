"""Segmentation models: PraNet (polyps; Res2Net-50, ResNet50, MobileNetV2 backbones) and EAR-Net (retinal vessels;
HRNetV2-OCR, stage 2 with error attention). Importing this package registers every tfseg layer and model for
`keras.models.load_model`."""

from tfseg.models.backbones import BACKBONES, build_backbone
from tfseg.models.earnet import EARNet
from tfseg.models.hrnet import HRNetOCR
from tfseg.models.pranet import PraNet
from tfseg.preprocessing import normalize

__all__ = ["BACKBONES", "EARNet", "HRNetOCR", "PraNet", "build_backbone", "normalize"]
