"""Training: strategy selection, the distributed loop, run folders and checkpoints."""

from tfseg.training.loop import TrainConfig, resume_config, train_pranet
from tfseg.training.strategy import make_strategy
