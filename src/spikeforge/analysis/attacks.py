"""Adversarial attacks and noise robustness for spikeforge ANNs and SNNs (methods.md §5, §7.4).

Attacks are callables shaped like torchattacks' (``atk = PGD(model, eps=8/255, alpha=2/255, steps=7);
adv = atk(images, labels)``). Images are ``[B, C, H, W]`` in ``[0, 1]``; the model normalizes inside, so every
perturbation is measured and clipped in pixel space. The loss is the batch-mean cross-entropy on the model's logits
(SNN: the readout over ``T``), ascended for untargeted attacks and descended towards the target labels for targeted
ones.

What one call does:

* runs the model in eval mode (``model_training=True`` keeps the caller's modes) and restores every module's
  ``training`` flag afterwards;
* freezes the parameters while crafting (``requires_grad`` restored afterwards) and takes gradients with
  ``torch.autograd.grad`` with respect to the image only, so no parameter ``.grad`` is touched;
* an SNN starts every forward from zero neuron state (no state leaks between calls) and back-propagates through all
  ``T`` steps (BPTT) with each neuron's surrogate, or with an attack-time ``surrogate=`` that replaces every neuron's
  surrogate during crafting and is put back afterwards;
* ``seed=N`` makes the call reproducible (random start, Poisson draws, random targets) without touching the caller's
  random state; ``seed=None`` (default) draws from the global generator, as torchattacks does.

Input-gradient estimators (``grad_estimator=``):

* ``"bptt"``: autograd through the whole model. With Poisson input it passes the encoder straight-through
  (``d s / d x = d E[s] / d x``, see :mod:`spikeforge.nn.encoders`); with direct input or an ANN it is the exact gradient.
* ``"sharmin"``: the reference method of Sharmin et al. (ECCV 2020, methods.md §5.3): the gradients of the loss with
  respect to the first layer's output (the membrane input of the first neurons) are summed over all ``T`` steps and
  passed back through that layer only (``conv_transpose`` with its weights ``W_1``), as if every step's input spikes
  were the analog image, then through the normalization to the image. With direct input (and for an ANN) this equals
  the exact gradient, because the first layer is linear (methods.md §12). It is the faithful reproduction of the
  paper's attack, which the later literature found weaker than better estimators (§5.5); it is labelled as such.
* ``"auto"`` (default): ``"bptt"`` (straight-through for Poisson models, exact for direct input and ANNs).

Evaluation: :func:`accuracy` (optionally under a perturbation), :func:`robustness` (clean, white-box, black-box
transfer from a source model, and Gaussian noise over a sigma sweep, clipped to ``[0, 1]``) and the
``spikeforge attack`` command (:func:`add_attack_parser`, :func:`attack_cli`), which prints a table and writes a JSON
file and an accuracy-against-epsilon plot.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spikeforge.errors import ConfigError, ShapeError
from spikeforge.neuron import SpikingNeuron
from spikeforge.neuron.surrogate import get_surrogate

__all__ = [
    "ATTACKS",
    "GRAD_ESTIMATORS",
    "Attack",
    "EOTPGD",
    "FGSM",
    "GaussianNoise",
    "PGD",
    "accuracy",
    "add_attack_parser",
    "attack_cli",
    "attack_surrogate",
    "describe_model",
    "input_gradient",
    "make_attack",
    "parse_values",
    "plot_robustness",
    "robustness",
    "robustness_table",
]

GRAD_ESTIMATORS = ("auto", "bptt", "sharmin")
TARGET_MODES = ("default", "targeted_by_label", "targeted_random", "targeted_least_likely", "targeted_by_function")


# ---------------------------------------------------------------------------------------------------------------
# gradients


def _neurons(model: nn.Module) -> list[SpikingNeuron]:
    return [m for m in model.modules() if isinstance(m, SpikingNeuron)]


@contextlib.contextmanager
def attack_surrogate(model: nn.Module, surrogate):
    """Within this context every spiking neuron of ``model`` uses ``surrogate`` (name, dict or instance); the
    previous surrogates are restored on exit, also after an error. ``None`` changes nothing."""
    if surrogate is None:
        yield model
        return
    new = get_surrogate(surrogate)
    neurons = _neurons(model)
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


def _objective(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """What the attack ascends: the cross-entropy to the true labels, or minus the cross-entropy to the targets."""
    loss = F.cross_entropy(logits, labels)
    return -loss if targeted else loss


def _is_spiking(model: nn.Module) -> bool:
    return bool(getattr(model, "spiking", False)) or bool(_neurons(model))


def _resolve_estimator(grad_estimator: str) -> str:
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
    how = _resolve_estimator(grad_estimator)
    x = images.detach()
    with torch.enable_grad():
        if how == "sharmin":
            return _sharmin_gradient(model, x, labels, targeted)
        x = x.clone().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(_objective(logits, labels, targeted), x)
    return grad


def _sharmin_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Sharmin et al. §5.3: ``dL/dx ~ W_1^T (sum_t dL/dI_1[t]) / std`` with ``I_1`` the first layer's output."""
    norm = getattr(model, "normalize", None)
    if norm is None or not hasattr(norm, "std"):
        raise ConfigError("grad_estimator='sharmin' needs a spikeforge model (with its 'normalize' layer); "
                          "use grad_estimator='bptt' for other modules")
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
    (g_out,) = torch.autograd.grad(_objective(logits, labels, targeted), captured["out"])
    layer, batch = captured["module"], x.shape[0]
    in_shape = captured["inp"]
    if in_shape[0] % batch:
        raise ShapeError(f"first layer saw {in_shape[0]} rows for a batch of {batch}; cannot split them into steps")
    g_sum = g_out.reshape(-1, batch, *g_out.shape[1:]).sum(0)  # sum over the T steps (T = 1 for direct / ANN)
    if isinstance(layer, nn.Conv2d):
        if tuple(in_shape[1:]) != tuple(x.shape[1:]) or layer.padding_mode != "zeros":
            raise ConfigError("grad_estimator='sharmin' needs the first layer to be a zero-padded conv reading the "
                              f"(encoded) image; it reads {tuple(in_shape[1:])} for images {tuple(x.shape[1:])}")
        g_in = torch.nn.grad.conv2d_input((batch, *in_shape[1:]), layer.weight, g_sum, stride=layer.stride,
                                          padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
    else:
        if math.prod(in_shape[1:]) != math.prod(x.shape[1:]):
            raise ConfigError("grad_estimator='sharmin' needs the first layer to read the (encoded) image")
        g_in = g_sum @ layer.weight
    return (g_in.reshape(x.shape) / norm.std).detach()


# ---------------------------------------------------------------------------------------------------------------
# attacks


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Run the block with the global generator(s) of ``device`` seeded, then put the caller's state back."""
    if seed is None:
        yield
        return
    device = torch.device(device)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _check_fraction(name: str, value, *, low: float = 0.0, high: float = 1.0, open_low: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v > high or v < low or (open_low and v == low):
        bound = "(" if open_low else "["
        raise ConfigError(f"{name} must lie in {bound}{low:g}, {high:g}] (images are in [0, 1]; e.g. 8/255 = "
                          f"{8 / 255:.4f}), got {value!r}")
    return v


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class Attack:
    """Base class of the attacks: ``adv = attack(images, labels)``.

    ``surrogate``: attack-time surrogate for every spiking neuron (name such as ``"atan"``, a dict or a
    :class:`~spikeforge.neuron.surrogate.Surrogate`; None keeps the model's). ``grad_estimator``: ``auto``, ``bptt`` or
    ``sharmin`` (module docstring). ``model_training``: craft in the model's current mode instead of eval mode.
    ``seed``: reseed the random start, the Poisson draws and random targets at every call (reproducible; the
    caller's random state is untouched). Subclasses implement :meth:`perturb`.

    Targeted modes (as in torchattacks): :meth:`set_mode_targeted_by_label` (the labels passed to the call are the
    targets), :meth:`set_mode_targeted_random`, :meth:`set_mode_targeted_least_likely`,
    :meth:`set_mode_targeted_by_function`; :meth:`set_mode_default` goes back to untargeted.
    """

    name = "attack"
    needs_gradient = True

    def __init__(self, model: nn.Module, *, surrogate=None, grad_estimator: str = "auto",
                 model_training: bool = False, seed: int | None = None):
        if not isinstance(model, nn.Module):
            raise ConfigError(f"attacks need an nn.Module model, got {type(model).__name__}")
        self.model = model
        self.surrogate = None if surrogate is None else get_surrogate(surrogate)
        if self.surrogate is not None and not _neurons(model):
            raise ConfigError("surrogate= applies to SNNs, but the model has no spiking neurons (an ANN); "
                              "leave it unset")
        _resolve_estimator(grad_estimator)
        self.grad_estimator = grad_estimator
        self.model_training = bool(model_training)
        if seed is not None:
            _check_int("seed", seed, 0)
        self.seed = seed
        self.mode = "default"
        self._target_fn: Callable | None = None
        self._kth_min = 1

    # -- targeted modes ----------------------------------------------------------------------------------------
    @property
    def targeted(self) -> bool:
        return self.mode != "default"

    def set_mode_default(self) -> Attack:
        self.mode = "default"
        return self

    def set_mode_targeted_by_label(self) -> Attack:
        """The ``labels`` given to each call are the target classes."""
        self.mode = "targeted_by_label"
        return self

    def set_mode_targeted_random(self) -> Attack:
        """Each image gets a uniformly drawn target class different from its label."""
        self.mode = "targeted_random"
        return self

    def set_mode_targeted_least_likely(self, kth_min: int = 1) -> Attack:
        """Target the ``kth_min``-th least likely class of the clean prediction."""
        self._kth_min = _check_int("kth_min", kth_min, 1)
        self.mode = "targeted_least_likely"
        return self

    def set_mode_targeted_by_function(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Attack:
        """Targets are ``fn(images, labels)``."""
        if not callable(fn):
            raise ConfigError("set_mode_targeted_by_function needs a callable fn(images, labels) -> targets")
        self._target_fn = fn
        self.mode = "targeted_by_function"
        return self

    def target_labels(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The labels the loss uses: the true labels (untargeted) or the targets of the current mode."""
        if self.mode in ("default", "targeted_by_label"):
            return labels
        if self.mode == "targeted_by_function":
            return torch.as_tensor(self._target_fn(images, labels), device=labels.device).long()
        with torch.no_grad():
            logits = self.get_logits(images)
        classes = logits.shape[1]
        if self.mode == "targeted_random":
            shift = torch.randint(1, classes, labels.shape, device=labels.device)
            return (labels + shift) % classes
        if self._kth_min > classes:
            raise ConfigError(f"kth_min={self._kth_min} but the model has only {classes} classes")
        return logits.topk(self._kth_min, dim=1, largest=False).indices[:, -1]

    # -- running ----------------------------------------------------------------------------------------------
    def get_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Gradient of the objective (ascend it) at ``images`` with this attack's estimator."""
        return input_gradient(self.model, images, labels, targeted=self.targeted, grad_estimator=self.grad_estimator)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Return adversarial images; ``labels`` are the loss labels (targets in a targeted mode)."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images, labels = self._check_inputs(images, labels)
        with self._random_state(images.device), self._crafting():
            targets = self.target_labels(images, labels)
            adv = self.perturb(images, targets)
        return adv.detach()

    def _check_inputs(self, images, labels):
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
            raise ShapeError(f"{self.name} expects float images [B, C, H, W] in [0, 1]; got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        labels = torch.as_tensor(labels, device=images.device)
        if labels.dim() != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise ShapeError(f"{self.name} expects integer labels [{images.shape[0]}]; got {tuple(labels.shape)}")
        if images.numel() and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
            raise ConfigError(f"{self.name} expects images in [0, 1] (the model normalizes inside); got values in "
                              f"[{float(images.min()):.3g}, {float(images.max()):.3g}]")
        return images.detach(), labels.long()

    def _random_state(self, device: torch.device):
        return _seeded(self.seed, device)

    @contextlib.contextmanager
    def _crafting(self):
        model = self.model
        modes = [(m, m.training) for m in model.modules()]
        flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            if not self.model_training:
                model.eval()
            for p, _ in flags:
                p.requires_grad_(False)
            with attack_surrogate(model, self.surrogate), torch.enable_grad():
                yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            for m, mode in modes:
                m.training = mode

    def _settings(self) -> dict:
        return {}

    def config(self) -> dict:
        """JSON-friendly description (name, parameters, estimator, surrogate, mode, seed)."""
        return {"attack": self.name, **self._settings(), "grad_estimator": self.grad_estimator,
                "surrogate": None if self.surrogate is None else self.surrogate.to_config(), "mode": self.mode,
                "seed": self.seed}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self._settings().items())
        return (f"{type(self).__name__}({args}, grad_estimator={self.grad_estimator!r}, "
                f"surrogate={self.surrogate}, mode={self.mode!r})")


class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al. 2015): ``x + eps * sign(grad)``, clipped to ``[0, 1]``."""

    name = "fgsm"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, **kw):
        super().__init__(model, **kw)
        self.eps = _check_fraction("eps", eps)

    def _settings(self) -> dict:
        return {"eps": self.eps}

    def perturb(self, images, labels):
        step = self.eps * self.gradient(images, labels).sign()
        return (images + step).clamp(0.0, 1.0)


class PGD(Attack):
    """L-infinity projected gradient descent (Madry et al. 2018).

    Optional uniform random start in the ``eps`` ball, then ``steps`` sign-gradient steps of size ``alpha``, each
    followed by projection onto the ``eps`` ball around the clean image and onto ``[0, 1]``. Defaults follow Sharmin
    et al. (eps 8/255, alpha 2/255, 7 steps). The gradient is recomputed at every step (one full ``T``-step forward and
    backward each).
    """

    name = "pgd"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 7,
                 random_start: bool = True, **kw):
        super().__init__(model, **kw)
        self.eps = _check_fraction("eps", eps)
        self.alpha = _check_fraction("alpha", alpha, open_low=True)
        self.steps = _check_int("steps", steps, 1)
        self.random_start = bool(random_start)

    def _settings(self) -> dict:
        return {"eps": self.eps, "alpha": self.alpha, "steps": self.steps, "random_start": self.random_start}

    def _project(self, adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        delta = (adv - clean).clamp(-self.eps, self.eps)
        return (clean + delta).clamp(0.0, 1.0)

    def step_gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.gradient(images, labels)

    def perturb(self, images, labels):
        adv = images.clone()
        if self.random_start:
            adv = (adv + torch.empty_like(adv).uniform_(-self.eps, self.eps)).clamp(0.0, 1.0)
        for _ in range(self.steps):
            adv = self._project(adv + self.alpha * self.step_gradient(adv, labels).sign(), images)
        return adv


class EOTPGD(PGD):
    """PGD with expectation over transformation (Athalye et al. 2018): every step averages the gradients of
    ``eot_iter`` forward passes, each with fresh randomness (Poisson input draws new spikes). For deterministic
    models (direct input, ANNs) it equals PGD at ``eot_iter`` times the cost."""

    name = "eotpgd"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 7,
                 eot_iter: int = 4, random_start: bool = True, **kw):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, **kw)
        self.eot_iter = _check_int("eot_iter", eot_iter, 1)

    def _settings(self) -> dict:
        return {**super()._settings(), "eot_iter": self.eot_iter}

    def step_gradient(self, images, labels):
        total = self.gradient(images, labels)
        for _ in range(self.eot_iter - 1):
            total = total + self.gradient(images, labels)
        return total / self.eot_iter


class GaussianNoise(Attack):
    """Additive Gaussian noise ``x + std * N(0, 1)``, clipped to ``[0, 1]`` (not an adversarial attack: the baseline
    corruption of BNTT's robustness study, methods.md §7.4). The model is not queried."""

    name = "gaussian"
    needs_gradient = False

    def __init__(self, model: nn.Module, std: float = 0.1, **kw):
        super().__init__(model, **kw)
        self.std = _check_fraction("std", std, high=math.inf)

    def _settings(self) -> dict:
        return {"std": self.std}

    def target_labels(self, images, labels):
        return labels

    def perturb(self, images, labels):
        return (images + self.std * torch.randn_like(images)).clamp(0.0, 1.0)


ATTACKS: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD, "eotpgd": EOTPGD}


def make_attack(name: str, model: nn.Module, eps: float, *, alpha: float | None = None, steps: int = 7,
                eot_iter: int = 4, random_start: bool = True, **kw) -> Attack:
    """Attack by name (``fgsm``, ``pgd``, ``eotpgd``). ``alpha=None`` gives ``eps / 4`` (Sharmin et al.'s 2/255 at
    8/255); ``steps``, ``alpha``, ``eot_iter`` and ``random_start`` are ignored by FGSM. Other keywords go to
    :class:`Attack`."""
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}")
    if name == "fgsm":
        return FGSM(model, eps=eps, **kw)
    a = eps / 4 if alpha is None else alpha
    if eps == 0:
        a = alpha or 1 / 255  # a zero ball: any positive step, the projection keeps the clean image
    if name == "pgd":
        return PGD(model, eps=eps, alpha=a, steps=steps, random_start=random_start, **kw)
    return EOTPGD(model, eps=eps, alpha=a, steps=steps, eot_iter=eot_iter, random_start=random_start, **kw)


# ---------------------------------------------------------------------------------------------------------------
# evaluation


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def _batches(loader, max_batches: int | None):
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        yield batch


@torch.no_grad()
def _correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> int:
    with _eval_mode(model):
        return int((model(images).argmax(1) == labels).sum())


def accuracy(model: nn.Module, loader, perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             *, max_batches: int | None = None, device=None) -> float:
    """Accuracy (fraction) of ``model`` in eval mode on ``loader``, optionally on ``perturb(images, labels)``
    (an :class:`Attack` crafted on this model for white-box, on another model for black-box transfer)."""
    correct = total = 0
    for x, y in _batches(loader, max_batches):
        if device is not None:
            x, y = x.to(device), y.to(device)
        if perturb is not None:
            x = perturb(x, y)
        correct += _correct(model, x, y)
        total += int(y.numel())
    return correct / max(total, 1)


def describe_model(model: nn.Module) -> str:
    """``"ANN"`` or ``"SNN T=5, direct, LIF leak 0.9"``-style label (mean leak over layers) for tables and plots."""
    if not getattr(model, "spiking", False):
        return "ANN"
    leaks = [float(n.leak.detach().mean()) for n in _neurons(model)]
    leak = sum(leaks) / len(leaks) if leaks else 1.0
    kind = "IF" if leak == 1.0 else f"LIF leak {leak:.3g}"
    return f"SNN T={model.timesteps}, {model.snn.encoding}, {kind}"


def _key(v: float) -> str:
    """Stable JSON key of an epsilon or sigma (``0.0314`` for 8/255)."""
    return f"{v:.6g}"


def robustness(target: nn.Module, loader, *, attack: str = "pgd", eps: Sequence[float] = (8 / 255,),
               source: nn.Module | None = None, noise: Sequence[float] = (), max_batches: int | None = None,
               alpha: float | None = None, steps: int = 7, eot_iter: int = 4, random_start: bool = True,
               surrogate=None, grad_estimator: str = "auto", seed: int | None = 0, device=None,
               progress: bool = False) -> dict:
    """Clean and adversarial accuracy of ``target`` at every ``eps`` (white-box: crafted on ``target``).

    With ``source``: the source's own clean and white-box accuracy, and the target's accuracy on examples crafted on
    the source (black-box transfer). ``noise``: accuracy under Gaussian noise of each sigma (clipped to ``[0, 1]``)
    for the target (and the source). ``surrogate`` is used for the spiking models only; ``seed`` (per batch, so a
    batch's result does not depend on the others) makes a run reproducible. Returns a JSON-ready dict with
    ``samples``, ``eps``, ``noise``, ``attack`` and per model (``target``, ``source``) ``clean``, ``white_box``
    (eps -> accuracy), ``noise`` (sigma -> accuracy), plus ``black_box`` (eps -> target accuracy) with a source.
    """
    eps = [_check_fraction("eps", e) for e in eps]
    noise = [_check_fraction("noise sigma", s, high=math.inf, open_low=True) for s in noise]
    models = {"target": target} if source is None else {"target": target, "source": source}

    def attack_on(model, e, batch_seed):
        sur = surrogate if _is_spiking(model) else None
        return make_attack(attack, model, e, alpha=alpha, steps=steps, eot_iter=eot_iter, random_start=random_start,
                           surrogate=sur, grad_estimator=grad_estimator, seed=batch_seed)

    cfg = make_attack(attack, target, eps[0] if eps else 8 / 255, alpha=alpha, steps=steps, eot_iter=eot_iter,
                      random_start=random_start, grad_estimator=grad_estimator).config()  # validates the settings
    counts = {name: {"clean": 0, "white_box": [0] * len(eps), "noise": [0] * len(noise)} for name in models}
    black = [0] * len(eps)
    total = 0
    seconds = {name: 0.0 for name in models}
    n_batches = len(loader) if max_batches is None else min(len(loader), max_batches)
    it = _batches(loader, max_batches)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=n_batches, desc=f"{attack} x {len(eps)} eps", leave=False)
    for b, (x, y) in enumerate(it):
        if device is not None:
            x, y = x.to(device), y.to(device)
        batch_seed = None if seed is None else seed + b
        total += int(y.numel())
        with _seeded(None if seed is None else seed + 104729 * (b + 1), x.device):  # Poisson evaluation draws
            for name, model in models.items():
                counts[name]["clean"] += _correct(model, x, y)
            for i, e in enumerate(eps):
                for name, model in models.items():
                    t0 = time.perf_counter()
                    adv = attack_on(model, e, batch_seed)(x, y)
                    seconds[name] += time.perf_counter() - t0
                    counts[name]["white_box"][i] += _correct(model, adv, y)
                    if name == "source":
                        black[i] += _correct(target, adv, y)
            for j, s in enumerate(noise):
                noisy = GaussianNoise(target, std=s, seed=None if seed is None else seed + 7919 * (b + 1))(x, y)
                for name, model in models.items():
                    counts[name]["noise"][j] += _correct(model, noisy, y)
    if total == 0:
        raise ConfigError("the loader yielded no images; check --batches and the dataset")
    cfg.pop("eps", None)
    cfg.pop("mode", None)
    if attack != "fgsm":
        cfg["alpha"] = "eps/4" if alpha is None else alpha
    cfg["surrogate"] = None if surrogate is None else get_surrogate(surrogate).to_config()
    cfg["seed"] = seed
    out = {"attack": cfg, "samples": total, "eps": eps, "noise": noise, "models": {}}
    for name, model in models.items():
        c = counts[name]
        out["models"][name] = {
            "model": describe_model(model),
            "clean": c["clean"] / total,
            "white_box": {_key(e): c["white_box"][i] / total for i, e in enumerate(eps)},
            "noise": {_key(s): c["noise"][j] / total for j, s in enumerate(noise)},
            "seconds_crafting": seconds[name],
        }
    if source is not None:
        out["black_box"] = {_key(e): black[i] / total for i, e in enumerate(eps)}
    return out


def _fmt_eps(e: float) -> str:
    k = e * 255
    if e > 0 and abs(k - round(k)) < 1e-3 and round(k) <= 16:  # CIFAR-style budgets; 0.2 stays 0.2
        return f"{round(k)}/255"
    return f"{e:g}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def robustness_table(result: dict) -> str:
    """Plain-text table of a :func:`robustness` result: one row per epsilon (and per noise sigma)."""
    from spikeforge.utils import text_table as _tt; _table = lambda rows, head: _tt(head, rows)

    models = result["models"]
    has_src = "source" in models
    head = ["eps", f"target {models['target']['model']}"]
    if has_src:
        head += [f"source {models['source']['model']}", "black-box (source -> target)"]
    rows = [["clean"] + [_pct(models["target"]["clean"])]
            + ([_pct(models["source"]["clean"]), "-"] if has_src else [])]
    for e in result["eps"]:
        k = _key(e)
        row = [_fmt_eps(e), _pct(models["target"]["white_box"][k])]
        if has_src:
            row += [_pct(models["source"]["white_box"][k]), _pct(result["black_box"][k])]
        rows.append(row)
    text = _table(rows, head)
    if result["noise"]:
        nrows = [[f"{s:g}", _pct(models["target"]["noise"][_key(s)])]
                 + ([_pct(models["source"]["noise"][_key(s)])] if has_src else []) for s in result["noise"]]
        text += "\n\n" + _table(nrows, ["noise sigma", "target"] + (["source"] if has_src else []))
    return text


def plot_robustness(result: dict, path: str | Path) -> Path:
    """Accuracy against epsilon (white-box for each model, black-box transfer with a source) and, with noise,
    accuracy against sigma, written as a PNG (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = result["models"]
    panels = 2 if result["noise"] else 1
    fig = Figure(figsize=(5.2 * panels, 3.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, panels, 1)
    xs = [0.0] + list(result["eps"])
    styles = {"target": ("C1", "o"), "source": ("C0", "s")}
    for name, m in models.items():
        ys = [m["clean"]] + [m["white_box"][_key(e)] for e in result["eps"]]
        color, marker = styles[name]
        ax.plot(xs, [100 * v for v in ys], marker=marker, color=color, label=f"{m['model']} (white-box)")
    if "black_box" in result:
        ys = [models["target"]["clean"]] + [result["black_box"][_key(e)] for e in result["eps"]]
        ax.plot(xs, [100 * v for v in ys], marker="^", ls="--", color="C1",
                label=f"{models['target']['model']} (black-box from {models['source']['model']})")
    att = result["attack"]
    ax.set_xlabel("epsilon (L-inf, pixels in [0, 1])")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{att['attack'].upper()} on {result['samples']} test images")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if panels == 2:
        ax2 = fig.add_subplot(1, 2, 2)
        xs = [0.0] + list(result["noise"])
        for name, m in models.items():
            ys = [m["clean"]] + [m["noise"][_key(s)] for s in result["noise"]]
            color, marker = styles[name]
            ax2.plot(xs, [100 * v for v in ys], marker=marker, color=color, label=m["model"])
        ax2.set_xlabel("Gaussian noise sigma (clipped to [0, 1])")
        ax2.set_ylabel("accuracy (%)")
        ax2.set_title("Gaussian noise")
        ax2.set_ylim(-2, 102)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------------------------------------------
# command line


def parse_values(text: str, what: str = "--eps", *, high: float = 1.0) -> list[float]:
    """``"2/255,4/255,0.1"`` -> floats; each value a fraction ``a/b`` or a decimal in ``(0, high]``."""
    if text is None or not str(text).strip():
        raise ConfigError(f"{what} needs at least one value, e.g. {what} 2/255,4/255,8/255")
    values = []
    for item in str(text).split(","):
        item = item.strip()
        try:
            v = float(Fraction(item))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{what}: {item!r} is not a number; write fractions like 8/255 or decimals like "
                              "0.1, separated by commas") from None
        if not (0.0 < v <= high):
            raise ConfigError(f"{what}: {item} = {v:g} is outside (0, {high:g}]; images are in [0, 1], "
                              "so use e.g. 8/255 or 0.1")
        values.append(v)
    return values


def add_attack_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``spikeforge attack TARGET ...`` on an ``argparse`` subparsers object."""
    data_help = "dataset directory (default: $SPIKEFORGE_DATA, else ~/.cache/spikeforge/data)"
    p = subparsers.add_parser(
        "attack", help="adversarial (FGSM/PGD/EOT-PGD) and Gaussian-noise robustness of a checkpoint",
        description="Clean and adversarial test accuracy of a checkpoint at each epsilon: white-box (crafted on the "
                    "target) and, with --source, black-box (crafted on the source checkpoint, e.g. an ANN, and "
                    "evaluated on the target); optional Gaussian noise sweep. Prints a table, writes JSON and a plot "
                    "of accuracy against epsilon (methods.md §5).")
    p.add_argument("checkpoint", help="target checkpoint file, stage directory or run directory")
    p.add_argument("--attack", default="pgd", choices=sorted(ATTACKS), help="attack (default pgd)")
    p.add_argument("--eps", default="2/255,4/255,8/255",
                   help="comma-separated L-inf budgets in pixel units, fractions or decimals (default "
                        "2/255,4/255,8/255; MNIST papers go up to 0.3)")
    p.add_argument("--source", help="checkpoint to craft black-box (transfer) examples on")
    p.add_argument("--noise", help="comma-separated Gaussian noise sigmas, e.g. 0.05,0.1,0.2")
    p.add_argument("--steps", type=int, default=7, help="PGD steps (default 7)")
    p.add_argument("--alpha", help="PGD step size, e.g. 2/255 (default: eps/4 for every eps)")
    p.add_argument("--eot-iter", type=int, default=4, help="EOT-PGD: gradient samples per step (default 4)")
    p.add_argument("--no-random-start", action="store_true", help="PGD: start from the clean image")
    p.add_argument("--surrogate", help="attack-time surrogate for SNNs: " + ", ".join(
        ["linear", "stdb", "fast_sigmoid", "atan", "exp"]) + " (default: each model's own)")
    p.add_argument("--grad-estimator", default="auto", choices=list(GRAD_ESTIMATORS),
                   help="input gradient: auto (= bptt), bptt (straight-through Poisson encoder), sharmin "
                        "(Sharmin et al.'s first-layer method)")
    p.add_argument("--timesteps", type=int, help="run the target SNN at this T (default: the checkpoint's)")
    p.add_argument("--batches", type=int, help="use only this many test batches (default: the whole test set)")
    p.add_argument("--batch-size", type=int, default=100, help="test batch size (default 100)")
    p.add_argument("--data-dir", help=data_help)
    p.add_argument("--dataset", help="dataset name if the checkpoint does not record it")
    p.add_argument("--out", help="output directory (default: the target's checkpoint directory)")
    p.add_argument("--seed", type=int, default=0, help="random seed (random start, Poisson draws, noise)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.set_defaults(func=attack_cli)
    return p


def attack_cli(args) -> int:
    """``spikeforge attack``: load the checkpoint(s), run :func:`robustness`, print, write JSON and PNG."""
    from spikeforge.app.common import pick_device
    from spikeforge.data import DataConfig, build_data
    from spikeforge.engine.checkpoint import atomic_write_json, load_checkpoint, resolve_checkpoint

    eps = parse_values(args.eps, "--eps")
    noise = parse_values(args.noise, "--noise", high=math.inf) if args.noise is not None else []
    alpha = parse_values(args.alpha, "--alpha")[0] if args.alpha is not None else None
    for name in ("steps", "eot_iter", "batches", "batch_size", "timesteps"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if args.surrogate is not None:
        get_surrogate(args.surrogate)
    path = resolve_checkpoint(args.checkpoint)
    target, head = load_checkpoint(path)
    if args.timesteps:
        if not target.spiking:
            raise ConfigError(f"{path} holds an ANN; --timesteps applies to SNN checkpoints")
        target.timesteps = args.timesteps
    source = src_path = None
    if args.source:
        src_path = resolve_checkpoint(args.source)
        source, src_head = load_checkpoint(src_path)
        if src_head.get("dataset") and head.get("dataset") and src_head["dataset"] != head["dataset"]:
            raise ConfigError(f"--source {src_path} was trained on {src_head['dataset']} but the target on "
                              f"{head['dataset']}; pass a source trained on the same dataset")
    if args.surrogate and not target.spiking and (source is None or not source.spiking):
        raise ConfigError("--surrogate applies to SNN checkpoints, but no SNN was given")
    dataset = args.dataset or head.get("dataset")
    if not dataset:
        raise ConfigError(f"{path} does not record its dataset; pass --dataset NAME")
    device = pick_device(args.device)
    data = build_data(DataConfig(dataset=dataset, data_dir=args.data_dir, test_batch_size=args.batch_size,
                                 image_size=target.spec.input_size if dataset == "imagefolder" else None),
                      device=device)
    target.to(device)
    if source is not None:
        source.to(device)
    t0 = time.perf_counter()
    result = robustness(target, data.test, attack=args.attack, eps=eps, source=source, noise=noise,
                        max_batches=args.batches, alpha=alpha, steps=args.steps, eot_iter=args.eot_iter,
                        random_start=not args.no_random_start, surrogate=args.surrogate,
                        grad_estimator=args.grad_estimator, seed=args.seed, device=device, progress=True)
    result = {"checkpoint": str(path), "source": None if src_path is None else str(src_path), "dataset": dataset,
              **result, "seconds": time.perf_counter() - t0}
    print(f"{args.attack.upper()} on {result['samples']} {dataset} test images, target {path}"
          + (f", source {src_path}" if src_path else ""))
    print(robustness_table(result))
    out = Path(args.out) if args.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"attack-{args.attack}.json"
    atomic_write_json(json_path, result)
    png = plot_robustness(result, out / f"attack-{args.attack}.png")
    print(f"wrote {json_path} and {png}")
    return 0

