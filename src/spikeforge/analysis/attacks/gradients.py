"""Input gradients of the attack objective for ANNs and SNNs, and attack-time surrogates.

The objective is the batch-mean cross-entropy on the model's logits (an SNN's readout over ``T``), ascended for
untargeted attacks; a targeted attack descends the cross-entropy to its targets (ascends its negative).

Estimators (``grad_estimator=``):

* ``"bptt"``: autograd through the whole model, back-propagating through all ``T`` steps with each neuron's
  surrogate (BPTT; Sharmin et al., "Inherent adversarial robustness of deep spiking neural networks", ECCV 2020).
  A Poisson encoder is passed straight-through, ``d s / d x = d E[s] / d x`` (see :mod:`spikeforge.nn.encoders`);
  with direct input or an ANN the gradient is exact.
* ``"sharmin"``: the first-layer estimator of Sharmin et al. (ECCV 2020): the gradients of the loss with respect to
  the first layer's output (the membrane input ``I_1`` of the first neurons) are summed over all ``T`` steps and
  passed back through that layer only, ``dL/dx ~ W_1^T (sum_t dL/dI_1[t]) / std``, as if every step's input spikes
  were the analog image, then through the normalization to the image. With direct input (and for an ANN) it equals
  the exact gradient, because the first layer is linear. It is the faithful reproduction of the paper's attack,
  which later work found weaker than better gradient estimators.
* ``"auto"`` (default): ``"bptt"``.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from spikeforge.analysis.common import spiking_neurons
from spikeforge.errors import ConfigError, ShapeError
from spikeforge.neuron.surrogate import get_surrogate

__all__ = ["GRAD_ESTIMATORS", "attack_surrogate", "input_gradient", "resolve_estimator"]

GRAD_ESTIMATORS = ("auto", "bptt", "sharmin")


@contextlib.contextmanager
def attack_surrogate(model: nn.Module, surrogate):
    """Within this context every spiking neuron of ``model`` uses ``surrogate`` (name, dict or instance); the
    previous surrogates are restored on exit, also after an error. ``None`` changes nothing."""
    if surrogate is None:
        yield model
        return
    new = get_surrogate(surrogate)
    neurons = spiking_neurons(model)
    if not neurons:
        raise ConfigError("an attack-time surrogate was given for a model without spiking neurons (an ANN); "
                          "leave surrogate unset for ANNs")
    old = [n.surrogate for n in neurons]
    try:
        for n in neurons:
            n.surrogate = new
        yield model
    finally:
        for n, s in zip(neurons, old):
            n.surrogate = s


def objective(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """What an attack ascends: the cross-entropy to the true labels, or minus the cross-entropy to the targets."""
    loss = F.cross_entropy(logits, labels)
    return -loss if targeted else loss


def resolve_estimator(grad_estimator: str) -> str:
    """``"bptt"`` or ``"sharmin"`` for a valid ``grad_estimator`` (``"auto"`` is ``"bptt"``)."""
    if grad_estimator not in GRAD_ESTIMATORS:
        raise ConfigError(f"grad_estimator must be one of {list(GRAD_ESTIMATORS)}, got {grad_estimator!r}")
    return "bptt" if grad_estimator == "auto" else grad_estimator


def input_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, targeted: bool = False,
                   grad_estimator: str = "auto") -> torch.Tensor:
    """Gradient of the attack objective with respect to ``images`` (``[B, C, H, W]`` in pixel space).

    The objective is the mean cross-entropy (``targeted``: minus the cross-entropy to ``labels``, which are then the
    targets). ``grad_estimator``: ``auto``/``bptt`` (autograd through the model; straight-through over a Poisson
    encoder) or ``sharmin`` (first-layer gradients summed over time, passed back through the first layer only; see
    the module docstring). No parameter ``.grad`` is changed; the model's mode is left as it is.
    """
    how = resolve_estimator(grad_estimator)
    x = images.detach()
    with torch.enable_grad():
        if how == "sharmin":
            return _sharmin_gradient(model, x, labels, targeted)
        x = x.clone().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(objective(logits, labels, targeted), x)
    return grad


def _first_layer_output(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Run ``model`` on ``x`` with the graph cut at the output of the first ``Conv2d``/``Linear`` layer the forward
    pass meets; returns the logits and ``{module, inp (its input shape), out (a leaf tensor)}``."""
    captured: dict = {}

    def hook(module, inputs, output):
        if captured:  # only the first linear layer the forward pass meets
            return None
        leaf = output.detach().requires_grad_(True)  # cut the graph here: the encoder is never differentiated
        captured.update(module=module, inp=inputs[0].shape, out=leaf)
        return leaf

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    if not captured:
        raise ConfigError("grad_estimator='sharmin' found no Conv2d or Linear layer in the model")
    return logits, captured


def _through_first_layer(layer: nn.Module, in_shape: torch.Size, x: torch.Tensor, g_sum: torch.Tensor) -> torch.Tensor:
    """``W_1^T g``: the gradient at the first layer's output passed back to its input (one sample per row)."""
    batch = x.shape[0]
    if isinstance(layer, nn.Conv2d):
        if tuple(in_shape[1:]) != tuple(x.shape[1:]) or layer.padding_mode != "zeros":
            raise ConfigError("grad_estimator='sharmin' needs the first layer to be a zero-padded conv reading the "
                              f"(encoded) image; it reads {tuple(in_shape[1:])} for images {tuple(x.shape[1:])}")
        return torch.nn.grad.conv2d_input((batch, *in_shape[1:]), layer.weight, g_sum, stride=layer.stride,
                                          padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
    if math.prod(in_shape[1:]) != math.prod(x.shape[1:]):
        raise ConfigError("grad_estimator='sharmin' needs the first layer to read the (encoded) image")
    return g_sum @ layer.weight


def _sharmin_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Sharmin et al. (ECCV 2020): ``dL/dx ~ W_1^T (sum_t dL/dI_1[t]) / std`` with ``I_1`` the first layer's
    output."""
    norm = getattr(model, "normalize", None)
    if norm is None or not hasattr(norm, "std"):
        raise ConfigError("grad_estimator='sharmin' needs a spikeforge model (with its 'normalize' layer); "
                          "use grad_estimator='bptt' for other modules")
    logits, captured = _first_layer_output(model, x)
    (g_out,) = torch.autograd.grad(objective(logits, labels, targeted), captured["out"])
    batch, in_shape = x.shape[0], captured["inp"]
    if in_shape[0] % batch:
        raise ShapeError(f"first layer saw {in_shape[0]} rows for a batch of {batch}; cannot split them into steps")
    g_sum = g_out.reshape(-1, batch, *g_out.shape[1:]).sum(0)  # sum over the T steps (T = 1 for direct / ANN)
    g_in = _through_first_layer(captured["module"], in_shape, x, g_sum)
    return (g_in.reshape(x.shape) / norm.std).detach()
