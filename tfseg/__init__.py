"""tfseg: medical image segmentation with TensorFlow/Keras."""

__version__ = "0.1.0"
