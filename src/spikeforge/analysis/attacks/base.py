"""The attack interface, shaped like torchattacks' (``atk = PGD(model, eps=8/255, alpha=2/255, steps=7);
adv = atk(images, labels)``), and the registry of adversarial attacks.

Images are ``[B, C, H, W]`` in ``[0, 1]``; the model normalizes inside, so every perturbation is measured and
clipped in pixel space. One call:

* runs the model in eval mode (``model_training=True`` keeps the caller's modes) and restores every module's
  ``training`` flag afterwards;
* freezes the parameters while crafting (``requires_grad`` restored afterwards) and takes gradients with
  ``torch.autograd.grad`` with respect to the image only, so no parameter ``.grad`` is touched;
* an SNN starts every forward from zero neuron state (no state leaks between calls) and back-propagates through all
  ``T`` steps (BPTT) with each neuron's surrogate, or with an attack-time ``surrogate=`` that replaces every neuron's
  surrogate during crafting and is put back afterwards (Sharmin et al., "A comprehensive analysis on adversarial
  robustness of spiking neural networks", IJCNN 2019; Sharmin et al., ECCV 2020);
* ``seed=N`` makes the call reproducible (random start, Poisson draws, random targets) without touching the caller's
  random state; ``seed=None`` (default) draws from the global generator, as torchattacks does.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
from torch import nn

from spikeforge.analysis.common import forked_rng, spiking_neurons
from spikeforge.analysis.attacks.gradients import attack_surrogate, input_gradient, resolve_estimator
from spikeforge.errors import ConfigError, ShapeError
from spikeforge.neuron.surrogate import get_surrogate
from spikeforge.registry import Registry

__all__ = ["ATTACKS", "TARGET_MODES", "Attack", "check_fraction", "check_int", "seeded"]

TARGET_MODES = ("default", "targeted_by_label", "targeted_random", "targeted_least_likely", "targeted_by_function")


def seeded(seed: int | None, device: torch.device):
    """Run the block with the global generator(s) of ``device`` seeded, then put the caller's state back;
    ``seed=None`` runs it on the global generators as they are."""
    return contextlib.nullcontext() if seed is None else forked_rng(device, seed)


def check_fraction(name: str, value, *, low: float = 0.0, high: float = 1.0, open_low: bool = False) -> float:
    """``value`` as a float in ``[low, high]`` (``(low, high]`` with ``open_low``), else a :class:`ConfigError`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v > high or v < low or (open_low and v == low):
        bound = "(" if open_low else "["
        raise ConfigError(f"{name} must lie in {bound}{low:g}, {high:g}] (images are in [0, 1]; e.g. 8/255 = "
                          f"{8 / 255:.4f}), got {value!r}")
    return v


def check_int(name: str, value, minimum: int) -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``, else a :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class Attack:
    """Base class of the attacks: ``adv = attack(images, labels)``.

    ``surrogate``: attack-time surrogate for every spiking neuron (name such as ``"atan"``, a dict or a
    :class:`~spikeforge.neuron.surrogate.Surrogate`; None keeps the model's). ``grad_estimator``: ``auto``, ``bptt`` or
    ``sharmin`` (:mod:`spikeforge.analysis.attacks.gradients`). ``model_training``: craft in the model's current mode
    instead of eval mode. ``seed``: reseed the random start, the Poisson draws and random targets at every call
    (reproducible; the caller's random state is untouched). Subclasses implement :meth:`perturb` and, to be built by
    name, :meth:`from_budget`.

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
        if self.surrogate is not None and not spiking_neurons(model):
            raise ConfigError("surrogate= applies to SNNs, but the model has no spiking neurons (an ANN); "
                              "leave it unset")
        resolve_estimator(grad_estimator)
        self.grad_estimator = grad_estimator
        self.model_training = bool(model_training)
        if seed is not None:
            check_int("seed", seed, 0)
        self.seed = seed
        self.mode = "default"
        self._target_fn: Callable | None = None
        self._kth_min = 1

    @classmethod
    def from_budget(cls, model: nn.Module, eps: float, *, alpha: float | None = None, steps: int = 7,
                    eot_iter: int = 4, random_start: bool = True, **kw) -> Attack:
        """The attack at L-inf budget ``eps`` from the options every registered attack is given (each uses the
        ones it has); other keywords go to :class:`Attack`."""
        raise NotImplementedError(f"{cls.__name__} cannot be built by name")

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
        self._kth_min = check_int("kth_min", kth_min, 1)
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
        with seeded(self.seed, images.device), self._crafting():
            targets = self.target_labels(images, labels)
            adv = self.perturb(images, targets)
        return adv.detach()

    def _check_inputs(self, images, labels):
        if getattr(getattr(self.model, "spec", None), "input", "image") == "events":
            raise ConfigError(f"{self.name}: this model reads event frames (event counts, model input: events); the "
                              "attacks perturb images in [0, 1] and are not defined on event data")
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
            raise ShapeError(f"{self.name} expects float images [B, C, H, W] in [0, 1]; got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        labels = torch.as_tensor(labels, device=images.device)
        if labels.dim() != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise ShapeError(f"{self.name} expects integer labels [{images.shape[0]}]; got {tuple(labels.shape)}")
        classes = getattr(getattr(self.model, "spec", None), "num_classes", None)
        if classes and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ConfigError(f"{self.name}: labels must lie in [0, {classes - 1}] for this {classes}-class model; got "
                              f"values in [{int(labels.min())}, {int(labels.max())}]")
        if images.numel() and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
            raise ConfigError(f"{self.name} expects images in [0, 1] (the model normalizes inside); got values in "
                              f"[{float(images.min()):.3g}, {float(images.max()):.3g}]")
        return images.detach(), labels.long()

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


#: Adversarial attacks by name (``fgsm``, ``pgd``, ``eotpgd``); each registers itself in its own module.
ATTACKS: Registry[type[Attack]] = Registry("attack")
