"""Post-hoc pruning / quantization sweep of a trained Diehl & Cook network: accuracy and crossbar cost of the final
weights pruned further and quantized to fewer levels, each relabeled on the labeling images (the accuracy-against-
sparsity curves of Rathi, Panda & Roy, IEEE TCAD 2019, without retraining)."""

from __future__ import annotations

from typing import Callable

import torch

from spikeforge.methods.stdp.hardware import CrossbarModel, compare, crossbar_cost
from spikeforge.methods.stdp.learn import evaluate
from spikeforge.methods.stdp.network import DiehlCook
from spikeforge.methods.stdp.prune import constrain, pruned_fraction


def sweep(net: DiehlCook, labeling: tuple, test: tuple, num_classes: int, generator: torch.Generator | None, *,
          prune: list, levels: list, batch: int, quant_range: str = "wmax", rounding: str = "nearest",
          activity: tuple[torch.Tensor, float], hardware: CrossbarModel | None = None,
          log: Callable[[str], None] = print) -> list[dict]:
    """One row per (pruned fraction, levels) pair: the current fraction and every ``prune`` value at least as large,
    times full precision (None) and every ``levels`` value. ``labeling``/``test``: ``(x, y)``; ``activity``:
    ``(input spikes per input, active steps)`` from :func:`~spikeforge.methods.stdp.hardware.input_activity`.
    The network is restored afterwards."""
    if not prune and not levels:
        return []
    fracs = sorted(set([pruned_fraction(net.mask)] + [float(f) for f in prune]))
    qs = list(dict.fromkeys([None] + list(levels)))
    saved = (net.W.clone(), net.mask.clone(), net.norm_target.clone())
    dense = crossbar_cost(torch.ones_like(saved[1]), None, *activity, hardware)
    out = []
    for f in fracs:
        for q in qs:
            if f < pruned_fraction(saved[1]) - 1e-9:
                continue
            _restore(net, saved)
            constrain(net, f, q, quant_range, rounding)
            ev = evaluate(net, *labeling, *test, num_classes, batch, generator, False)
            cost = compare(dense, crossbar_cost(net.mask, q, *activity, hardware))
            row = {"pruned": pruned_fraction(net.mask), "levels": q, "test_acc": ev["acc"],
                   "area_x": cost["area_x"], "area_packed_x": cost["area_packed_x"], "energy_x": cost["energy_x"]}
            out.append(row)
            log(f"sweep: pruned {row['pruned']:.2f} levels {q or 'full'}: acc {ev['acc']:.4f}, area "
                f"{row['area_x']:.2f}x (packed {row['area_packed_x']:.2f}x), energy {row['energy_x']:.2f}x")
    _restore(net, saved)
    return out


def _restore(net: DiehlCook, saved: tuple) -> None:
    W, mask, target = saved
    net.W.copy_(W)
    net.mask.copy_(mask)
    net.norm_target.copy_(target)


__all__ = ["sweep"]
