"""Segmentation models: PraNet on Res2Net-50 / ResNet50 / MobileNetV2 backbones."""

from tfseg.models.backbones import BACKBONES, build_backbone, normalize
from tfseg.models.pranet import PraNet
