"""Small helpers shared by the loaders: seed derivation and integer argument checks."""

from __future__ import annotations

import hashlib
from typing import Any

from spikeforge.errors import ConfigError

__all__ = ["check_int", "derive_seed"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a fixed function of the integers ``parts`` (SHA-256 of ``"p0:p1:..."``).

    Every random stream of the data pipeline is seeded with one (shuffling: ``(seed, epoch, 0)``, augmentation:
    ``(seed, epoch, 1, rank)``, folder shuffling: ``(seed, epoch, 2)``, calibration batch: ``(seed, 3)``), so an
    epoch is reproducible whatever ran before it."""
    digest = hashlib.sha256(":".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``; a :class:`ConfigError` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
