"""Consistency of visual explanations between clean and perturbed inputs: how much a spike activation map (SAM; Kim &
Panda, "Visual explanations from spiking neural networks using inter-spike intervals", Sci. Rep. 11:19037, 2021)
or a Grad-CAM map (Selvaraju et al., ICCV 2017) of an image moves when the image is attacked or made noisy.

For a clean image ``x`` and its perturbed version ``x'`` (FGSM/PGD crafted through time, black-box transfer, Gaussian
noise), let ``M`` and ``M'`` be the explainer's image-level maps: SAM summed over the ``T`` timesteps for an SNN
(``SAM.summed``: ``sum_t SAM_ij[t]`` with ``SAM_ij[t] = sum_k NCS_k,ij[t] s_k,ij[t]``, Kim & Panda 2021, Eqs. 1-2),
Grad-CAM of the predicted class for an ANN (``GradCAM.summed``), each min-max normalized to ``[0, 1]`` on the
input's pixel grid. Two per-image scores, then averaged over the images (:func:`consistency`):

* **correlation** -- the Pearson correlation of the ``H*W`` pixel values of ``M`` and ``M'`` (1: same map up to an
  affine change; 0: unrelated). An image whose map is constant (no spike at the target layer) has no correlation
  and is left out of the average (the count of such images is reported);
* **top-k overlap** -- ``|top_k(M) & top_k(M')| / k`` with ``top_k`` the ``k = ceil(frac * H * W)`` pixels of
  largest value (ties broken by pixel index): the top-k intersection of Ghorbani, Abid & Zou ("Interpretation of
  neural networks is fragile", AAAI 2019, Sec. 3), in ``[0, 1]``, 1 when the most salient ``frac`` of the image is
  the same. Random maps give about ``frac``. A constant map has no most salient pixels (its top-k would be the
  first ``k`` pixel indices, an artefact of the tie-break), so the overlap of a pair with a constant map is
  undefined (NaN) and left out of the average like the correlation.

With Poisson input the SAM of one image also changes from one simulation to the next. The robustness study
(:func:`spikeforge.analysis.attacks.robustness` with ``compare``) therefore computes the clean and every perturbed
map of a batch with the same random draws (common random numbers: each comparison runs in a generator forked with
one seed per batch, and the clean map is the first simulation in it), so the scores measure the change caused by
the perturbation; it also reports the clean map against an independent second simulation of the same clean image
(the ``clean`` entry), the change caused by Poisson sampling alone. Direct input and ANNs are deterministic (their
``clean`` scores are exactly 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spikeforge.analysis.common import is_spiking
from spikeforge.analysis.explain.maps import SAM, GradCAM, pearson
from spikeforge.errors import ConfigError

__all__ = ["MapConsistency", "explanation_maps", "map_correlation", "topk_overlap"]


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Pearson correlation ``[B]`` of two map batches ``[B, H, W]``; NaN where either map is constant."""
    _check_pair(a, b)
    return pearson(a, b)


def topk_overlap(a: torch.Tensor, b: torch.Tensor, frac: float = 0.1) -> torch.Tensor:
    """Per-image top-k intersection ``[B]`` of two map batches ``[B, H, W]``: the share of the ``k = ceil(frac * H *
    W)`` largest pixels of ``a`` that are also among the ``k`` largest of ``b`` (Ghorbani et al., AAAI 2019).

    NaN for an image where either map is constant (no salient pixels: e.g. no spike at the target layer)."""
    _check_pair(a, b)
    if not (0.0 < float(frac) <= 1.0):
        raise ConfigError(f"top-k fraction must be in (0, 1], got {frac!r}")
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    k = max(1, math.ceil(float(frac) * a.shape[1]))
    top_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, _topk_index(a, k), True)
    top_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, _topk_index(b, k), True)
    overlap = (top_a & top_b).sum(1).float() / k
    constant = (a.amax(1) == a.amin(1)) | (b.amax(1) == b.amin(1))
    return overlap.masked_fill(constant, float("nan"))


def _topk_index(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest values per row, ties broken by the lower index (stable sort)."""
    return torch.sort(x, dim=1, descending=True, stable=True).indices[:, :k]


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() < 2:
        raise ConfigError(f"maps to compare must be batches [B, H, W] of the same shape; got {tuple(a.shape)} "
                          f"and {tuple(b.shape)}")


def explanation_maps(model: nn.Module, images: torch.Tensor, layer: str | None = None,
                     gamma: float = 0.5) -> torch.Tensor:
    """Image-level maps ``[B, H, W]`` in ``[0, 1]``: SAM summed over time (``gamma`` of the NCS) for a spiking
    model, Grad-CAM of the predicted class for an ANN; at ``layer`` (None: the middle spatial activation layer)."""
    layers = None if layer is None else [layer]
    if is_spiking(model):
        explainer = SAM(model, target_layers=layers, gamma=gamma)
        explainer(images)
    else:
        explainer = GradCAM(model, target_layers=layers)
        explainer(images)
    return explainer.summed.detach()


class MapConsistency:
    """Scores of :func:`map_correlation` and :func:`topk_overlap` between the maps of clean and perturbed images
    (module docstring), for :func:`spikeforge.analysis.attacks.robustness`'s ``compare`` hook.

    ``MapConsistency(layer=None, topk=0.1, gamma=0.5)(model, clean, perturbed)`` returns per-image tensors
    ``{"correlation": [B], "topk": [B]}`` (NaN correlation for constant maps). The clean maps are computed at the
    first call for a (model, clean batch) pair and reused for the next perturbations of the same batch tensor.
    :meth:`baseline` scores the clean images against a second simulation of themselves (Poisson input).
    """

    def __init__(self, layer: str | None = None, topk: float = 0.1, gamma: float = 0.5):
        if not (0.0 < float(topk) <= 1.0):
            raise ConfigError(f"top-k fraction must be in (0, 1], got {topk!r}")
        self.layer, self.topk, self.gamma = layer, float(topk), float(gamma)
        self._clean: tuple[nn.Module, torch.Tensor, torch.Tensor] | None = None

    def method(self, model: nn.Module) -> str:
        """``"SAM"`` for a spiking model, else ``"Grad-CAM"``."""
        return "SAM" if is_spiking(model) else "Grad-CAM"

    def _clean_maps(self, model: nn.Module, clean: torch.Tensor) -> torch.Tensor:
        """The clean maps, computed once per model and clean batch (the same maps for every perturbation of it)."""
        if self._clean is None or self._clean[0] is not model or self._clean[1] is not clean:
            self._clean = (model, clean, explanation_maps(model, clean, self.layer, self.gamma))
        return self._clean[2]

    def __call__(self, model: nn.Module, clean: torch.Tensor, perturbed: torch.Tensor) -> dict[str, torch.Tensor]:
        ref = self._clean_maps(model, clean)
        other = explanation_maps(model, perturbed, self.layer, self.gamma)
        return {"correlation": map_correlation(ref, other), "topk": topk_overlap(ref, other, self.topk)}

    def baseline(self, model: nn.Module, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """Clean maps against a second, independent simulation of the same clean images."""
        return self(model, clean, clean.clone())
