"""Layers shared by ANN and SNN twins, and the time-folding rule.

Stateless layers (conv, linear, pooling, BN, flatten) run once on ``[T*B, ...]``; only modules marked
``time_aware = True`` (neurons, encoders, BNTT, spiking dropout, readout, residual blocks) see ``[T, B, ...]``, and
they are called ``module(x, steps=T)`` with the run's number of timesteps (a time axis of 1, as from direct
encoding, stands for ``T`` identical steps). No module stores ``T``: the model owns it (``model.timesteps``).
"""

from __future__ import annotations

import torch
from torch import nn


def fold(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a stateless ``module`` to time-first ``x`` ``[T, B, ...]`` as one call on ``[T*B, ...]``."""
    steps, batch = x.shape[:2]
    y = module(x.reshape(steps * batch, *x.shape[2:]))
    return y.reshape(steps, batch, *y.shape[1:])


def apply_time_first(module: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    """Apply one module to time-first ``x`` of a ``steps``-step run: a time-aware module as ``module(x, steps=steps)``
    on ``[T, B, ...]``, any other folded (:func:`fold`)."""
    return module(x, steps=steps) if getattr(module, "time_aware", False) else fold(module, x)


def run_sequence(seq: nn.Sequential, x: torch.Tensor, steps: int) -> torch.Tensor:
    """Run ``seq`` on time-first ``x`` for ``steps`` timesteps (:func:`apply_time_first` for each module)."""
    for module in seq:
        x = apply_time_first(module, x, steps)
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
    """Dropout on spikes with one mask per sample, reused at every timestep (Rathi et al. 2020, hybrid conversion +
    STDB; Rathi & Roy 2020, DIET-SNN).

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

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """``steps`` is unused: the mask broadcasts over whatever time axis ``x`` has."""
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
    """Accumulate the last layer's output over time: ``sum_t`` (Rathi et al. 2020 hybrid; Rathi & Roy 2020 DIET-SNN)
    or ``mean_t`` (Kim & Panda 2021 BNTT).

    The ANN twin has an identity at the same position. A time axis of 1 stands for ``steps`` identical steps.
    """

    time_aware = True

    def __init__(self, mode: str = "sum"):
        super().__init__()
        if mode not in ("sum", "mean"):
            raise ValueError(f"readout must be 'sum' or 'mean', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        if x.shape[0] == 1 and steps is not None and steps > 1:
            x = x.expand(steps, *x.shape[1:])
        return x.sum(0) if self.mode == "sum" else x.mean(0)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"
