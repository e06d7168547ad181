"""Bounds that hold by themselves, and optimizer parameter groups for a plain PyTorch training loop.

A spiking neuron's threshold must stay positive and its leak in ``[0, 1]``: in the leaky integrate-and-fire neuron
with learnable threshold ``V_th`` and leak ``lambda`` of Rathi & Roy 2020 (DIET-SNN),
``U[t] = lambda * U[t-1] + I[t] - V_th * s[t]``, a leak above 1 makes the membrane grow without input and a threshold
at or below 0 fires without input. Every neuron of a :class:`~spikeforge.models.TwinNet`
(and of any module passed to :func:`auto_constrain` or :func:`param_groups`) is registered here; after **every** step
of **any** ``torch.optim`` optimizer that holds its threshold or leak, the neuron's ``constrain_()`` clamps them back
(a global ``torch.optim`` step post-hook). The clamp is idempotent and a no-op for values already in range, so a loop
that also calls ``model.constrain_()`` computes exactly what it did before. The engine's optimizer is built from
:func:`param_groups`, so it relies on this too.

:func:`param_groups` builds the optimizer groups ``weights``, ``threshold`` and ``leak`` with their own learning
rates (DIET-SNN trains thresholds and leaks with their own rates)::

    opt = torch.optim.Adam(param_groups(model, 1e-3, threshold_lr=1e-2, leak_lr=1e-2))
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from spikeforge.errors import ConfigError

__all__ = ["GROUPS", "auto_constrain", "param_groups", "parameter_group"]

#: The parameter groups of a spiking model, in the order :func:`param_groups` returns them.
GROUPS = ("weights", "threshold", "leak")

_WATCHED: weakref.WeakSet = weakref.WeakSet()  # neurons kept in range after every optimizer step
_HOOK: list = []  # the one global hook handle, registered on first use


def _is_neuron(module: nn.Module) -> bool:
    """A spiking neuron layer: has ``threshold`` and ``leak`` parameters and a ``constrain_`` method."""
    return (callable(getattr(module, "constrain_", None)) and isinstance(getattr(module, "threshold", None), nn.Parameter)
            and isinstance(getattr(module, "leak", None), nn.Parameter))


def _after_step(optimizer, args, kwargs) -> None:
    """Global ``torch.optim`` step post-hook: clamp the registered neurons whose parameters ``optimizer`` holds."""
    if not len(_WATCHED):
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for neuron in list(_WATCHED):
        if id(neuron.threshold) in held or id(neuron.leak) in held:
            neuron.constrain_()


def auto_constrain(module: nn.Module) -> nn.Module:
    """Keep every spiking neuron inside ``module`` in range (threshold > 0, leak in [0, 1]) after each optimizer step,
    without calling ``constrain_()`` yourself. Models from :func:`~spikeforge.create_model` are registered already;
    call this for your own module built from :mod:`spikeforge.neuron` layers. Returns ``module``."""
    if not _HOOK:
        _HOOK.append(register_optimizer_step_post_hook(_after_step))
    for m in module.modules():
        if _is_neuron(m):
            _WATCHED.add(m)
    return module


def parameter_group(name: str) -> str:
    """The group of a parameter by its name: ``*.threshold`` -> ``threshold``, ``*.leak`` -> ``leak``, else
    ``weights``."""
    if name == "threshold" or name.endswith(".threshold"):
        return "threshold"
    if name == "leak" or name.endswith(".leak"):
        return "leak"
    return "weights"


def param_groups(model: nn.Module, lr: float, *, threshold_lr: float | None = None, leak_lr: float | None = None,
                 weight_decay: float = 0.0, train: Iterable[str] | None = None) -> list[dict]:
    """Optimizer parameter groups ``weights``, ``threshold`` and ``leak`` (each dict has ``params``, ``lr``,
    ``weight_decay`` and ``name``; empty groups are left out), for ``torch.optim.SGD/Adam(param_groups(...))``.

    ``lr`` is the weights' learning rate; ``threshold_lr``/``leak_lr`` default to it. ``weight_decay`` applies to the
    weights only. ``train`` names the groups that learn and sets ``requires_grad`` accordingly (e.g.
    ``["weights", "threshold", "leak"]`` for DIET-SNN, Rathi & Roy 2020); ``None`` keeps every parameter's own
    ``requires_grad`` and takes those that require gradients. The model's neurons are registered with
    :func:`auto_constrain`.
    """
    chosen = None if train is None else set(train)
    if chosen is not None and not chosen <= set(GROUPS):
        raise ConfigError(f"param_groups: train must name groups among {list(GROUPS)}, got {sorted(chosen)}")
    groups: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
    for name, p in model.named_parameters():
        group = parameter_group(name)
        if chosen is not None:
            p.requires_grad_(group in chosen)
        if p.requires_grad:
            groups[group].append(p)
    rates = {"weights": lr, "threshold": threshold_lr or lr, "leak": leak_lr or lr}
    out = [{"params": ps, "lr": rates[g], "weight_decay": weight_decay if g == "weights" else 0.0, "name": g}
           for g, ps in groups.items() if ps]
    if not out:
        which = sorted(chosen) if chosen is not None else "that require gradients"
        raise ConfigError(f"param_groups: no parameters to train in groups {which} (an ANN has no threshold or leak; "
                          "create the SNN with learn_threshold=True / learn_leak=True, or pass train=[...])")
    auto_constrain(model)
    return out
