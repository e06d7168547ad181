"""Augmentation of binned event frames, batched on the device (applied to the ``uint8`` count frames of one batch,
no per-event Python): random crop from the zero-padded frames and random horizontal flip (the same draw for every
frame of a sample, :func:`spikeforge.data.augment.crop_flip`), dropping events and jittering them in time.

Event dropping and time jitter act on event counts: a pixel holding ``n`` events keeps ``Binomial(n, 1 - p)`` of
them; under jitter ``Binomial(n, q)`` of them move, half (binomially) to the previous frame and the rest to the next
(events at the first or last frame stay). These are the frame-level forms of the event augmentations of Tonic
(``DropEvent``, ``TimeJitter``) and of the event-drop augmentation of Gu et al. 2021 ("EventDrop: data augmentation
for event-based learning", IJCAI), applied after binning so that the cached frames are reused every epoch.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from spikeforge.data.augment import crop_flip
from spikeforge.errors import ConfigError

__all__ = ["EVENT_AUGMENT_KEYS", "check_event_augment", "crop_flip_frames", "drop_events", "time_jitter"]

EVENT_AUGMENT_KEYS = ("crop_padding", "flip", "time_jitter", "drop_events")


def check_event_augment(augment: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"crop_padding": int, "flip": bool, "time_jitter": q, "drop_events": p}`` from ``None`` or a mapping with
    some of those keys; anything else is a :class:`ConfigError`."""
    out = {"crop_padding": 0, "flip": False, "time_jitter": 0.0, "drop_events": 0.0}
    if augment is None:
        return out
    if not isinstance(augment, Mapping):
        raise ConfigError(f"event augment must be None or a mapping with keys {list(EVENT_AUGMENT_KEYS)}, got "
                          f"{augment!r}")
    unknown = sorted(set(augment) - set(EVENT_AUGMENT_KEYS))
    if unknown:
        raise ConfigError(f"unknown event augment key(s) {unknown}; allowed: {list(EVENT_AUGMENT_KEYS)}")
    out.update({k: v for k, v in augment.items() if v is not None})
    pad, flip = out["crop_padding"], out["flip"]
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ConfigError(f"event augment crop_padding must be an integer >= 0, got {pad!r}")
    if not isinstance(flip, bool):
        raise ConfigError(f"event augment flip must be true or false, got {flip!r}")
    for key, top in (("time_jitter", 1.0), ("drop_events", 1.0 - 1e-12)):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= top:
            end = ")" if key == "drop_events" else "]"
            raise ConfigError(f"event augment {key} must be a probability in [0, 1{end}, got {v!r}")
        out[key] = float(v)
    return out


def crop_flip_frames(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Crop + flip ``uint8 [B, T, C, H, W]`` frames, one draw per sample for all its frames."""
    b, t, c, h, w = x.shape
    return crop_flip(x.reshape(b, t * c, h, w), offsets, flips, padding).reshape(b, t, c, h, w)


def _binomial(counts: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """``Binomial(counts, p)`` element-wise (``counts`` float)."""
    return torch.binomial(counts, torch.full_like(counts, p), generator=generator)


def drop_events(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Each event of the ``uint8`` count frames ``x`` is dropped with probability ``p`` (only nonzero pixels are
    drawn)."""
    if p <= 0:
        return x
    out = x.clone()
    nz = x > 0
    out[nz] = _binomial(x[nz].float(), 1.0 - p, generator).to(x.dtype)
    return out


def time_jitter(x: torch.Tensor, q: float, generator: torch.Generator) -> torch.Tensor:
    """Each event of ``uint8 [B, T, ...]`` count frames moves to the previous or next frame with probability ``q``
    (each direction ``q / 2``; events would leave the recording stay in their frame)."""
    if q <= 0 or x.shape[1] < 2:
        return x
    nz = x > 0
    n = x[nz].float()
    moved = _binomial(n, q, generator)
    back = _binomial(moved, 0.5, generator)
    stay = torch.zeros(x.shape, dtype=torch.int16, device=x.device)
    left = torch.zeros_like(stay)
    right = torch.zeros_like(stay)
    stay[nz] = (n - moved).to(torch.int16)
    left[nz] = back.to(torch.int16)
    right[nz] = (moved - back).to(torch.int16)
    stay[:, :-1] += left[:, 1:]
    stay[:, 0] += left[:, 0]
    stay[:, 1:] += right[:, :-1]
    stay[:, -1] += right[:, -1]
    return stay.clamp_(max=255).to(x.dtype)
