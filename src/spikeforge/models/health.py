"""Silent layers: spiking layers that emit no spikes, so nothing reaches the readout.

A network whose last spiking layer never fires returns all-zero (or input-independent) logits and learns nothing
through it. The usual causes are an un-normalised input (mean 0, std 1 instead of the dataset's statistics), thresholds
too high for the currents of a random initialisation, and for a converted network thresholds that were not balanced
on data (Sengupta et al. 2019) or scaled too high. A :class:`~spikeforge.models.TwinNet` checks its first forward pass
(:func:`silent_layers`) and warns with :class:`SilentLayerWarning`;
:class:`~spikeforge.analysis.monitor.DeadLayerWatch` watches whole training and evaluation runs.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["SilentLayerWarning", "count_spikes", "silent_layer_message", "silent_layers"]


class SilentLayerWarning(UserWarning):
    """A spiking layer emitted no spikes (filter it with ``warnings.filterwarnings("ignore", category=...)``)."""


def _normalisation_off(model: nn.Module) -> bool:
    spec = getattr(model, "spec", None)
    return spec is not None and all(m == 0 for m in spec.mean) and all(s == 1 for s in spec.std)


def silent_layer_message(model: nn.Module, silent: list[str], layers: list[str], where: str) -> str:
    """The warning text: the first silent layer of ``silent`` (in forward order ``layers``), how many follow it, and
    the usual fixes."""
    first = silent[0]
    after = len(silent) - 1
    th = dict(model.named_modules()).get(first)
    th_text = ""
    if th is not None and isinstance(getattr(th, "threshold", None), torch.Tensor):
        th_text = f" (threshold {float(th.threshold.detach().float().mean()):.4g})"
    tail = f" and the {after} spiking layer{'s' if after > 1 else ''} after it" if after else ""
    norm = "normalise the input: create_model(..., dataset=NAME) or mean=/std="
    fixes = ["lower the thresholds (threshold=...) or train them (learn_threshold=True)",
             "for a converted SNN, balance the thresholds on data (balance_thresholds; a smaller scaling/percentile)"]
    if _normalisation_off(model):
        fixes.insert(0, norm + " (this model's normalisation is off: mean 0, std 1)")
    else:
        fixes.append("check that the images are in [0, 1] (the model normalises them itself)")
    last = " The readout receives no spikes, so the logits carry no information about the input." \
        if silent[-1] == layers[-1] else ""
    return (f"spiking layer {first!r}{th_text}{tail} emitted no spikes {where}.{last} Usual fixes: "
            + "; ".join(fixes) + ".")


@contextlib.contextmanager
def count_spikes(layers: dict[str, nn.Module]):
    """Within the block, add every call's spike count of each layer (a device tensor, no synchronisation) into the
    yielded dict ``{name: count}``; layers that never ran are absent."""
    counts: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, args, output):
            n = output.detach().sum(dtype=torch.float32)
            counts[name] = counts[name] + n if name in counts else n
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def silent_layers(counts: dict[str, torch.Tensor], names: list[str]) -> list[str]:
    """Names (in order ``names``) whose count is zero; one synchronisation for all."""
    ran = [n for n in names if n in counts]
    if not ran:
        return []
    device = counts[ran[0]].device
    totals = torch.stack([counts[n].to(device) for n in ran]).tolist()
    return [n for n, c in zip(ran, totals) if c == 0]
