"""Connection pruning and weight quantization during STDP training (Rathi, Panda & Roy, "STDP-based pruning of
connections and weight quantization in spiking neural networks for energy-efficient recognition", IEEE TCAD 38(4),
2019).

Criterion (documented choice): the STDP-learned weight. STDP depresses synapses whose input rarely fires shortly
before the neuron, so the lowest weights of a neuron mark its least correlated inputs. At each pruning step every
excitatory neuron keeps its ``(1 - fraction)`` highest-weight inputs; the others are removed with a persistent
binary mask (a pruned synapse never returns: the mask only loses entries and the weight stays 0 under STDP and
normalization). The neuron's normalization target shrinks by the weight fraction it lost
(:meth:`~spikeforge.methods.stdp.network.DiehlCook.prune_to`): re-normalizing the survivors to the full sum 78 instead
redistributes the pruned weight onto them and cost 3 points of accuracy at 50% pruning in our measurement.
The surviving weights are then quantized to ``levels`` conductance values, evenly spaced from 0 to
``w_max`` (``range: wmax``, one set of device levels for the whole crossbar) or from 0 to each neuron's largest
weight (``range: neuron``, a per-column scale such as a per-column read gain), rounding to the nearest level.
"""

from __future__ import annotations

import torch

from spikeforge.errors import ConfigError


@torch.no_grad()
def prune_lowest(W: torch.Tensor, mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """New mask: each column keeps its ``round((1 - fraction) * rows)`` largest surviving weights (ties: lower
    index first). Already-pruned synapses stay pruned, so the result is a subset of ``mask``."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"pruning fraction must be in [0, 1), got {fraction!r}")
    rows = W.shape[0]
    keep = int(round((1.0 - fraction) * rows))
    if keep >= rows:
        return mask.clone()
    score = torch.where(mask, W, torch.full_like(W, -1.0))
    idx = score.topk(keep, dim=0, largest=True, sorted=False).indices
    new = torch.zeros_like(mask)
    new.scatter_(0, idx, True)
    return new & mask


def level_values(levels: int, top: float | torch.Tensor) -> torch.Tensor:
    """The ``levels`` conductance values ``0, top/(levels-1), ..., top``."""
    if levels < 2:
        raise ConfigError(f"levels must be at least 2, got {levels!r}")
    return torch.linspace(0, 1, levels) * top


@torch.no_grad()
def quantize(W: torch.Tensor, mask: torch.Tensor, levels: int, w_max: float, range_: str = "wmax",
             rounding: str = "nearest") -> torch.Tensor:
    """Round the surviving weights to ``levels`` evenly spaced values in ``[0, top]`` (top = ``w_max``, or each
    column's largest weight with ``range_='neuron'``); pruned weights are 0.

    ``rounding``: ``nearest`` (each weight to its nearest level), or ``sum`` (largest-remainder rounding per neuron:
    every weight goes to the level just below or just above it, and the ones with the largest remainders go up,
    as many as keep the neuron's total input weight within half a level step of its unquantized total). Nearest
    rounding drifts each neuron's total weight (most STDP weights are small and round down), which upsets the
    balance of the winner-take-all competition that the weight normalization maintains.
    """
    if levels < 2:
        raise ConfigError(f"levels must be at least 2, got {levels!r}")
    if range_ == "wmax":
        top = torch.full((1, W.shape[1]), float(w_max), device=W.device)
    elif range_ == "neuron":
        top = W.clamp(0, w_max).amax(0, keepdim=True).clamp_min(1e-12)
    else:
        raise ConfigError(f"quantization range must be 'wmax' or 'neuron', got {range_!r}")
    step = top / (levels - 1)
    x = (W.clamp(min=0) / step).clamp_(0, levels - 1) * mask
    if rounding == "nearest":
        return torch.round(x) * step * mask
    if rounding != "sum":
        raise ConfigError(f"quantization rounding must be 'nearest' or 'sum', got {rounding!r}")
    low = torch.floor(x)
    rem = torch.where(mask & (low < levels - 1), x - low, torch.full_like(x, -1.0))
    ups = torch.round(x.sum(0) - low.sum(0)).long()  # how many weights of each column go one level up
    ups = torch.minimum(ups.clamp_(min=0), (rem >= 0).sum(0))
    rank = torch.empty_like(rem, dtype=torch.long)
    order = rem.argsort(dim=0, descending=True, stable=True)
    rank.scatter_(0, order, torch.arange(W.shape[0], device=W.device).unsqueeze(1).expand_as(order).contiguous())
    q = low + (rank < ups.unsqueeze(0)).to(low.dtype)
    return q * step * mask


def pruned_fraction(mask: torch.Tensor) -> float:
    return 1.0 - float(mask.float().mean())


def prune_target(seen: int, total: int, fraction: float, start: int = 0, end: float = 0.5) -> float:
    """Pruned fraction wanted after ``seen`` of ``total`` training images: 0 before image ``start``, then rising
    linearly to ``fraction``, reached after ``end * total`` images (Rathi, Panda & Roy prune gradually during
    training so that STDP can re-balance the surviving weights)."""
    if fraction <= 0 or seen < start:
        return 0.0
    stop = max(start + 1, int(end * total))
    return fraction * min(1.0, (seen - start) / max(1, stop - start))


def constrain(net, fraction: float | None, levels: int | None, quant_range: str = "wmax",
              rounding: str = "nearest") -> None:
    """Prune ``net`` (a :class:`~spikeforge.methods.stdp.network.DiehlCook`) to ``fraction`` (if more than now),
    re-normalize the survivors, then quantize them to ``levels`` (see :func:`quantize`)."""
    if fraction and fraction > pruned_fraction(net.mask) + 1e-9:
        net.prune_to(prune_lowest(net.W, net.mask, fraction))
    net.normalize()
    if levels:
        net.W.copy_(quantize(net.W, net.mask, levels, net.cfg.w_max, quant_range, rounding))


__all__ = ["constrain", "level_values", "prune_lowest", "prune_target", "pruned_fraction", "quantize"]
