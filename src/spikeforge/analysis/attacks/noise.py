"""Gaussian input noise: the baseline corruption of robustness studies of SNNs (Kim & Panda, "Revisiting batch
normalization for training low-latency deep spiking neural networks from scratch", Frontiers in Neuroscience 2021)."""

from __future__ import annotations

import math

import torch
from torch import nn

from spikeforge.analysis.attacks.base import Attack, check_fraction

__all__ = ["GaussianNoise"]


class GaussianNoise(Attack):
    """Additive Gaussian noise ``x + std * N(0, 1)``, clipped to ``[0, 1]``. Not an adversarial attack (not in
    :data:`~spikeforge.analysis.attacks.ATTACKS`): the model is not queried."""

    name = "gaussian"
    needs_gradient = False

    def __init__(self, model: nn.Module, std: float = 0.1, **kw):
        super().__init__(model, **kw)
        self.std = check_fraction("std", std, high=math.inf)

    def _settings(self) -> dict:
        return {"std": self.std}

    def target_labels(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return labels

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (images + self.std * torch.randn_like(images)).clamp(0.0, 1.0)
