"""Layers shared by ANN and SNN twins, and the time-folding rule.

Stateless layers (conv, linear, pooling, BN, flatten) run once on ``[T*B, ...]``; only modules marked
``time_aware = True`` (neurons, encoders, spiking dropout, readout, residual blocks) see ``[T, B, ...]``.
"""

from __future__ import annotations

import torch
from torch import nn


def fold(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a stateless ``module`` to time-first ``x`` ``[T, B, ...]`` as one call on ``[T*B, ...]``."""
    steps, batch = x.shape[:2]
    y = module(x.reshape(steps * batch, *x.shape[2:]))
    return y.reshape(steps, batch, *y.shape[1:])


def run_sequence(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run ``seq`` on time-first ``x``: time-aware modules get ``[T, B, ...]``, the rest run folded."""
    for module in seq:
        x = module(x) if getattr(module, "time_aware", False) else fold(module, x)
    return x


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel. Models take images in ``[0, 1]`` and normalize inside."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SpikingDropout(nn.Module):
    """Dropout on spikes with one mask per sample, reused at every timestep (methods.md §1.6).

    Input ``[T, B, ...]``; the mask has shape ``[1, B, ...]`` and is scaled by ``1 / (1 - p)`` like ``nn.Dropout``.
    Identity in eval mode. The ANN twin uses ``nn.Dropout`` at the same position.

    :meth:`hold_mask` keeps the mask across calls (time chunks of one sample batch, and their recomputation under
    activation checkpointing): the first call draws it into the given store, later calls reuse it.
    """

    time_aware = True

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self._held: dict | None = None

    def hold_mask(self, store: dict) -> None:
        """Take the mask from ``store`` (keyed by this module's id) if there, else draw it and put it there."""
        self._held = store

    def release_mask(self) -> None:
        self._held = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = (1, *x.shape[1:])
        keep = None if self._held is None else self._held.get(id(self))
        if keep is None or keep.shape != shape or keep.dtype != x.dtype or keep.device != x.device:
            keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1.0 - self.p)
            if self._held is not None:
                self._held[id(self)] = keep
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Readout(nn.Module):
    """Accumulate the last layer's output over time: ``sum_t`` (hybrid HEAD, DIET, IIR) or ``mean_t`` (BNTT, SAM).

    The ANN twin has an identity at the same position. (§1.5)
    """

    time_aware = True

    def __init__(self, mode: str = "sum"):
        super().__init__()
        if mode not in ("sum", "mean"):
            raise ValueError(f"readout must be 'sum' or 'mean', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(0) if self.mode == "sum" else x.mean(0)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"
