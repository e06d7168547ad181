"""Engine: checkpoints, the training loop, stages and the run."""

from .checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from .train import OptimConfig, evaluate, fit

__all__ = ["OptimConfig", "evaluate", "fit", "load_checkpoint", "resolve_checkpoint", "save_checkpoint"]
