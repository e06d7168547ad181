"""Engine: recipes (the configuration of a run), checkpoints, the training loop, stages and the run."""

from spikeforge.engine.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from spikeforge.engine.train import OptimConfig, evaluate, fit

__all__ = ["OptimConfig", "evaluate", "fit", "load_checkpoint", "resolve_checkpoint", "save_checkpoint"]
