"""Helpers every analysis shares: eval mode with each module's flag restored, spiking or not, batch limits, random
streams forked (and optionally seeded) around a computation, finite numbers for JSON."""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Iterable, Iterator

import torch
from torch import nn

from spikeforge.neuron import SpikingNeuron

__all__ = ["batches", "eval_mode", "finite_or_none", "forked_rng", "is_spiking", "spiking_neurons"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode inside the block; restore each module's own ``training`` flag
    afterwards (also after an error)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def spiking_neurons(model: nn.Module) -> list[SpikingNeuron]:
    """The :class:`~spikeforge.neuron.SpikingNeuron` modules of ``model`` in definition order."""
    return [m for m in model.modules() if isinstance(m, SpikingNeuron)]


def is_spiking(model: nn.Module) -> bool:
    """A spikeforge model's own ``spiking`` flag; for other modules, whether they hold a spiking neuron."""
    flag = getattr(model, "spiking", None)
    if flag is not None:
        return bool(flag)
    return bool(spiking_neurons(model))


def batches(loader: Iterable, max_batches: int | None = None) -> Iterator:
    """The items of ``loader``, at most ``max_batches`` of them (``None``: all); no item past the last is drawn."""
    return iter(loader) if max_batches is None else itertools.islice(loader, max_batches)


@contextlib.contextmanager
def forked_rng(device: torch.device | str, seed: int | None = None):
    """Run the block on a fork of the global random generators (CPU, and ``device`` if it is a CUDA device) and put
    the caller's state back afterwards; ``seed`` reseeds the fork first (a reproducible block)."""
    device = torch.device(device)
    cuda = [device] if device.type == "cuda" and torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        if seed is not None:
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
        yield


def finite_or_none(value) -> float | None:
    """``value`` as a float, or ``None`` for ``None``, booleans, non-numbers, NaN and infinities (JSON-safe)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
