"""Fast gradient sign method (Goodfellow et al., "Explaining and harnessing adversarial examples", ICLR 2015)."""

from __future__ import annotations

import torch
from torch import nn

from spikeforge.analysis.attacks.base import ATTACKS, Attack, check_fraction

__all__ = ["FGSM"]


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """One step ``x + eps * sign(grad)``, clipped to ``[0, 1]``. On an SNN the gradient comes from BPTT through the
    surrogate (straight through a Poisson encoder): an SNN-crafted white-box attack (Sharmin et al., ECCV 2020)."""

    name = "fgsm"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, **kw):
        super().__init__(model, **kw)
        self.eps = check_fraction("eps", eps)

    @classmethod
    def from_budget(cls, model: nn.Module, eps: float, *, alpha=None, steps=7, eot_iter=4, random_start=True,
                    **kw) -> FGSM:
        """FGSM at ``eps``; the iterative options (``alpha``, ``steps``, ``eot_iter``, ``random_start``) are ignored."""
        return cls(model, eps=eps, **kw)

    def _settings(self) -> dict:
        return {"eps": self.eps}

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        step = self.eps * self.gradient(images, labels).sign()
        return (images + step).clamp(0.0, 1.0)
