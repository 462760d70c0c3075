"""Training: the shared loop (loop), the model families' recipes (pranet, earnet), strategies, run folders."""

from tfseg.training.loop import TrainingConfig, TrainingInterrupted
from tfseg.training.pranet import PraNetConfig, resume_config, train_pranet
from tfseg.training.strategy import make_strategy

__all__ = ["PraNetConfig", "TrainingConfig", "TrainingInterrupted", "make_strategy", "resume_config", "train_pranet"]
