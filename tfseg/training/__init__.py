"""Training: strategy selection, the distributed loop, run folders and checkpoints."""

from tfseg.training.loop import TrainConfig, TrainingInterrupted, resume_config, train_pranet
from tfseg.training.strategy import make_strategy
