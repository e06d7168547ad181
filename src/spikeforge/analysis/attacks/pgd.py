"""Iterative L-inf attacks: projected gradient descent (Madry et al., "Towards deep learning models resistant to
adversarial attacks", ICLR 2018) and its expectation-over-transformation variant for stochastic models (Athalye et
al., "Synthesizing robust adversarial examples", ICML 2018)."""

from __future__ import annotations

import torch
from torch import nn

from spikeforge.analysis.attacks.base import ATTACKS, Attack, check_fraction, check_int

__all__ = ["EOTPGD", "PGD", "default_alpha"]


def default_alpha(eps: float, alpha: float | None) -> float:
    """The step size: ``alpha``, or ``eps / 4`` when it is ``None`` (Sharmin et al.'s 2/255 at 8/255); a zero
    budget takes any positive step (``alpha`` or 1/255), the projection keeps the clean image."""
    if eps == 0:
        return alpha or 1 / 255
    return eps / 4 if alpha is None else alpha


@ATTACKS.register("pgd")
class PGD(Attack):
    """L-infinity projected gradient descent (Madry et al. 2018).

    Optional uniform random start in the ``eps`` ball, then ``steps`` sign-gradient steps of size ``alpha``, each
    followed by projection onto the ``eps`` ball around the clean image and onto ``[0, 1]``. Defaults follow Sharmin
    et al. (ECCV 2020: eps 8/255, alpha 2/255, 7 steps). The gradient is recomputed at every step (one full
    ``T``-step forward and backward each).
    """

    name = "pgd"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 7,
                 random_start: bool = True, **kw):
        super().__init__(model, **kw)
        self.eps = check_fraction("eps", eps)
        self.alpha = check_fraction("alpha", alpha, open_low=True)
        self.steps = check_int("steps", steps, 1)
        self.random_start = bool(random_start)

    @classmethod
    def from_budget(cls, model: nn.Module, eps: float, *, alpha: float | None = None, steps: int = 7,
                    eot_iter: int = 4, random_start: bool = True, **kw) -> PGD:
        """PGD at ``eps`` with step :func:`default_alpha` (``eot_iter`` is ignored)."""
        return cls(model, eps=eps, alpha=default_alpha(eps, alpha), steps=steps, random_start=random_start, **kw)

    def _settings(self) -> dict:
        return {"eps": self.eps, "alpha": self.alpha, "steps": self.steps, "random_start": self.random_start}

    def _project(self, adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        delta = (adv - clean).clamp(-self.eps, self.eps)
        return (clean + delta).clamp(0.0, 1.0)

    def step_gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.gradient(images, labels)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv = images.clone()
        if self.random_start:
            adv = (adv + torch.empty_like(adv).uniform_(-self.eps, self.eps)).clamp(0.0, 1.0)
        for _ in range(self.steps):
            adv = self._project(adv + self.alpha * self.step_gradient(adv, labels).sign(), images)
        return adv


@ATTACKS.register("eotpgd")
class EOTPGD(PGD):
    """PGD with expectation over transformation (Athalye et al. 2018): every step averages the gradients of
    ``eot_iter`` forward passes, each with fresh randomness (Poisson input draws new spikes). For deterministic
    models (direct input, ANNs) it equals PGD at ``eot_iter`` times the cost."""

    name = "eotpgd"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 7,
                 eot_iter: int = 4, random_start: bool = True, **kw):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, **kw)
        self.eot_iter = check_int("eot_iter", eot_iter, 1)

    @classmethod
    def from_budget(cls, model: nn.Module, eps: float, *, alpha: float | None = None, steps: int = 7,
                    eot_iter: int = 4, random_start: bool = True, **kw) -> EOTPGD:
        """EOT-PGD at ``eps`` with step :func:`default_alpha`."""
        return cls(model, eps=eps, alpha=default_alpha(eps, alpha), steps=steps, eot_iter=eot_iter,
                   random_start=random_start, **kw)

    def _settings(self) -> dict:
        return {**super()._settings(), "eot_iter": self.eot_iter}

    def step_gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        total = self.gradient(images, labels)
        for _ in range(self.eot_iter - 1):
            total = total + self.gradient(images, labels)
        return total / self.eot_iter
