"""Batched on-device augmentation of ``uint8`` image batches: random crop from the zero-padded image and random
horizontal flip (the standard CIFAR augmentation of He, Zhang, Ren & Sun 2016, "Deep residual learning for image
recognition", CVPR, Sec. 4.2: pad 4, random 32x32 crop, random flip).

The random draws for a whole epoch are made up front on the CPU from one seeded generator (:func:`draw_augment`),
so the result does not depend on the device or the batch size; :func:`crop_flip` applies them to one batch with one
vectorised gather.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from spikeforge.errors import ConfigError

__all__ = ["check_augment", "crop_flip", "draw_augment"]


def check_augment(augment: Mapping[str, Any] | None) -> tuple[int, bool]:
    """``(crop_padding, flip)`` from ``None`` or ``{"crop_padding": p, "flip": bool}``; anything else is a
    :class:`ConfigError`."""
    if augment is None:
        return 0, False
    if not isinstance(augment, Mapping):
        raise ConfigError(
            f"augment must be None or a dict like {{'crop_padding': 4, 'flip': True}}, got {augment!r}"
        )
    unknown = set(augment) - {"crop_padding", "flip"}
    if unknown:
        raise ConfigError(f"unknown augment key(s) {sorted(unknown)}; allowed keys: 'crop_padding', 'flip'")
    pad = augment.get("crop_padding", 0) or 0
    flip = augment.get("flip", False)
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ConfigError(f"augment['crop_padding'] must be an integer >= 0, got {pad!r}")
    if not isinstance(flip, bool):
        raise ConfigError(f"augment['flip'] must be true or false, got {flip!r}")
    return pad, flip


def draw_augment(m: int, crop_padding: int, flip: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the crop offsets ``int64 [m, 2]`` (row, column, in ``[0, 2p]``) and flip flags ``bool [m]`` of ``m``
    samples from a CPU generator seeded with ``seed`` (offsets first, then flips)."""
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, 2 * crop_padding + 1, (m, 2), generator=g)
    flips = torch.rand(m, generator=g) < 0.5 if flip else torch.zeros(m, dtype=torch.bool)
    return offsets, flips


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, crop_padding: int) -> torch.Tensor:
    """Crop + flip a ``uint8 [B, C, H, W]`` batch with one vectorised gather (no per-image Python): sample ``i`` is
    the ``H x W`` window at ``offsets[i]`` of the image zero-padded by ``crop_padding``, mirrored if ``flips[i]``."""
    bsz, c, h, w = x.shape
    p = crop_padding
    if p:
        x = F.pad(x, (p, p, p, p))
    dev = x.device
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = offsets[:, 0:1] + ar_h  # [B, H]
    cols = torch.where(flips[:, None], offsets[:, 1:2] + (w - 1 - ar_w), offsets[:, 1:2] + ar_w)
    bi = torch.arange(bsz, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return x[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
