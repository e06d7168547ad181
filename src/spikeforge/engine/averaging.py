"""Exponential moving average of a model's weights (Polyak averaging), the ``ema`` option of every training stage.

After every optimizer step the average moves toward the current parameters,

    w_avg <- d_n * w_avg + (1 - d_n) * w,      d_n = min(d, (1 + n) / (10 + n)),

where ``n`` counts the updates so far and the ramp ``(1 + n) / (10 + n)`` keeps the first updates from being
dominated by the initial weights (the warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=...)``).
The stage evaluates and keeps the average, not the last iterate (Polyak & Juditsky, "Acceleration of stochastic
approximation by averaging", SIAM J. Control Optim. 1992; the exponential form as used by Tan & Le, "EfficientNet",
ICML 2019). Thresholds and leaks are averaged with the weights: an average of positive thresholds stays positive and
one of leaks in [0, 1] stays there, so the neurons' constraints hold. Batch-norm running statistics are averaged
too; other buffers (counters, neuron state) are left as they are.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["WeightAverage"]

_AVERAGED_BUFFERS = ("running_mean", "running_var")


class WeightAverage:
    """The running average of ``model``'s floating-point parameters (and batch-norm statistics), decay ``decay``."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the averaging decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {name: t.detach().clone() for name, t in self._tensors(model)}

    @staticmethod
    def _tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        for name, p in model.named_parameters():
            if p.is_floating_point():
                yield name, p
        for name, b in model.named_buffers():
            if b.is_floating_point() and name.rsplit(".", 1)[-1] in _AVERAGED_BUFFERS:
                yield name, b

    def current_decay(self) -> float:
        """``d_n`` of the next update."""
        n = self.updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step toward ``model``'s current values."""
        d = self.current_decay()
        for name, t in self._tensors(model):
            self.shadow[name].lerp_(t.detach(), 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def _swap(self, model: nn.Module) -> None:
        for name, t in self._tensors(model):
            tmp = t.detach().clone()
            t.copy_(self.shadow[name])
            self.shadow[name].copy_(tmp)

    @contextmanager
    def applied(self, model: nn.Module):
        """Inside the block ``model`` holds the average; its own values come back afterwards."""
        self._swap(model)
        try:
            yield model
        finally:
            self._swap(model)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Give ``model`` the averaged values for good (the end of a stage)."""
        for name, t in self._tensors(model):
            t.copy_(self.shadow[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"the saved weight average lacks {sorted(missing)[:3]}")
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        for name, t in self.shadow.items():
            t.copy_(state["shadow"][name])
