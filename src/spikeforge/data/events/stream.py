"""A batch of event recordings held as flat arrays: :class:`EventStream`.

Every event of every sample sits in five flat numpy arrays ``x``, ``y``, ``t`` (microseconds), ``p`` (polarity
0 = OFF, 1 = ON) and the owning sample's events delimited by ``offsets`` (``offsets[i]:offsets[i + 1]``, as in a
CSR matrix), so that binning, denoising and down-sampling run as whole-array numpy operations (no per-event Python).
A 1-D sensor (SHD's 700 cochlea channels) uses ``x`` for the channel and ``y = 0``, ``p = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from spikeforge.errors import DataError

__all__ = ["EventStream", "Sensor"]


@dataclass(frozen=True)
class Sensor:
    """Sensor geometry: ``width`` x ``height`` pixels with ``polarities`` event channels (1 or 2)."""

    width: int
    height: int
    polarities: int

    def downsampled(self, factor: int) -> "Sensor":
        """The sensor seen after integer spatial down-sampling by ``factor`` (``x // factor``, ``y // factor``; a 1-D
        sensor only along ``x``)."""
        fy = 1 if self.height == 1 else factor
        return Sensor(-(-self.width // factor), -(-self.height // fy), self.polarities)


@dataclass
class EventStream:
    """Events of ``n`` samples (:mod:`module docstring <spikeforge.data.events.stream>`). Within a sample, events are
    in time order (stable: simultaneous events keep their recorded order)."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    offsets: np.ndarray

    @property
    def samples(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def counts(self) -> np.ndarray:
        """Events per sample, ``int64 [n]``."""
        return np.diff(self.offsets)

    def sample_index(self) -> np.ndarray:
        """The sample each event belongs to, ``int64 [events]``."""
        return np.repeat(np.arange(self.samples, dtype=np.int64), self.counts)

    def sample(self, i: int) -> dict[str, np.ndarray]:
        """Sample ``i``'s events as a dict of arrays ``x``, ``y``, ``t``, ``p``."""
        sl = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return {"x": self.x[sl], "y": self.y[sl], "t": self.t[sl], "p": self.p[sl]}

    def keep(self, mask: np.ndarray) -> "EventStream":
        """The stream with only the events where ``mask`` is true (per-sample boundaries kept)."""
        kept = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        return EventStream(self.x[mask], self.y[mask], self.t[mask], self.p[mask], kept[self.offsets])

    @classmethod
    def from_samples(cls, samples: Sequence, *, fields: tuple[str, str, str, str] = ("x", "y", "t", "p"),
                     time_scale: float = 1.0) -> "EventStream":
        """Concatenate per-sample records (numpy structured arrays or dicts of arrays) whose x, y, t, p fields are
        named ``fields`` (``y`` may be ``None`` for a 1-D sensor, ``p`` ``None`` for one polarity); ``t`` is
        multiplied by ``time_scale`` (to microseconds). Each sample is put in time order (stable sort)."""
        fx, fy, ft, fp = fields
        lengths = np.array([len(s[ft]) for s in samples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        total = int(offsets[-1])

        def column(name, dtype):
            if name is None or total == 0:
                return np.zeros(total, dtype=dtype)
            return np.concatenate([np.asarray(s[name]) for s in samples]).astype(dtype, copy=False)

        t = column(ft, np.float64) * time_scale if time_scale != 1.0 else column(ft, np.int64)
        stream = cls(column(fx, np.int64), column(fy, np.int64), np.round(t).astype(np.int64),
                     column(fp, np.int64), offsets)
        return stream.sorted()

    def sorted(self) -> "EventStream":
        """Events in time order within each sample (stable)."""
        order = np.lexsort((self.t, self.sample_index()))
        if np.array_equal(order, np.arange(order.shape[0])):
            return self
        return EventStream(self.x[order], self.y[order], self.t[order], self.p[order], self.offsets)

    def check(self, sensor: Sensor, where: str) -> None:
        """Raise :class:`DataError` naming ``where`` if an event lies outside ``sensor``."""
        if self.x.size == 0:
            return
        bad = ((self.x < 0) | (self.x >= sensor.width) | (self.y < 0) | (self.y >= sensor.height)
               | (self.p < 0) | (self.p >= max(sensor.polarities, 2)))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where}: event (x={int(self.x[i])}, y={int(self.y[i])}, p={int(self.p[i])}) lies outside "
                            f"the {sensor.width}x{sensor.height} sensor: the file is not of this dataset or is "
                            "corrupt; replace it with the original file")
