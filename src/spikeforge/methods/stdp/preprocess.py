"""Image preparation for the Diehl & Cook network: images -> input intensities in [0, 1], one per input neuron.

MNIST needs none (pixel / 255). Natural images (e.g. Caltech) are turned to luminance, resized, and edge-filtered
with a difference of Gaussians, the usual front end of STDP networks on natural images (e.g. Kheradpisheh et al.,
"STDP-based spiking deep convolutional neural networks for object recognition", Neural Networks 99, 2018).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def preprocess(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Images ``[B, C, H, W]`` in [0, 1] -> ``[B, D]`` input intensities in [0, 1].

    ``grayscale`` (default True for 3-channel images): luminance; ``size``: bilinear resize; ``dog``:
    ``[s1, s2]`` difference of Gaussians (on-center minus surround), rectified and scaled so each image's
    maximum is 1 (the usual edge preprocessing for Diehl & Cook style networks on natural images); ``invert``.
    """
    x = x.float()
    if cfg.get("grayscale", x.shape[1] == 3) and x.shape[1] == 3:
        x = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    size = cfg.get("size")
    if size and (x.shape[-1] != size or x.shape[-2] != size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    dog = cfg.get("dog")
    if dog:
        x = gaussian_blur(x, float(dog[0])) - gaussian_blur(x, float(dog[1]))
        x = x.clamp_min(0)
        x = x / x.flatten(1).amax(1).clamp_min(1e-6).view(-1, 1, 1, 1)
    if cfg.get("invert"):
        x = 1.0 - x
    return x.clamp(0, 1).reshape(x.shape[0], -1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` (radius ``ceil(3 sigma)``, replicated borders)."""
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def all_images(loader, pre: dict) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    """Every image of a loader, preprocessed, in a fixed order: ``(x [M, D] float, y [M], (C, H, W))``."""
    if hasattr(loader, "images") and hasattr(loader, "labels"):  # an in-memory loader: the whole split at once
        imgs, labels = loader.images, loader.labels
        xs = [preprocess(imgs[i:i + 4096].float().div_(255.0), pre) for i in range(0, imgs.shape[0], 4096)]
        shape = image_shape(imgs[:1].float(), pre)
        return torch.cat(xs), labels.clone(), shape
    xs, ys, shape = [], [], None
    for x, y in loader:
        shape = shape or image_shape(x[:1], pre)
        xs.append(preprocess(x, pre))
        ys.append(y)
    return torch.cat(xs), torch.cat(ys), shape


def image_shape(x1: torch.Tensor, pre: dict) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image after :func:`preprocess` (before flattening)."""
    x = x1.float()
    c = 1 if (pre.get("grayscale", x.shape[1] == 3) and x.shape[1] == 3) else x.shape[1]
    size = pre.get("size")
    h, w = (size, size) if size else tuple(x.shape[-2:])
    return (c, h, w)


__all__ = ["all_images", "gaussian_blur", "image_shape", "preprocess"]
