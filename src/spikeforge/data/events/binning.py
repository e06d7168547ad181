"""Events -> frames, vectorised over all events of a batch of samples (numpy; no per-event Python).

* :func:`bin_events`: ``T`` frames per sample, polarity as channels. ``time``: sample ``i``'s events from its first
  (``t0``) to its last (``t1``) timestamp fall into ``T`` equal windows, ``bin = floor((t - t0) * T / (t1 - t0 +
  1))`` (integer microseconds, so the last event lands in bin ``T - 1``; Tonic's ``ToFrame(n_time_bins=T)``
  instead drops the events after ``T`` whole windows). ``count``: the ``k``-th of the sample's ``n`` events (time
  order) goes to bin ``floor(k * T / n)``, so bins differ by at most one event (Tonic's ``n_event_bins`` drops the
  remainder). ``window``: bins of ``window_us`` from ``t0``; events after ``T`` windows are dropped. A frame pixel
  holds the number of events there (saturating at 255, stored as ``uint8``).
* :func:`denoise`: an event is kept when one of its four neighbouring pixels fired before it (in recording order)
  less than ``filter_us`` earlier -- the rule of Tonic's ``Denoise`` (after Delbruck 2008, "Frame-free dynamic
  digital vision"), found for all events at once with sorted keys and ``searchsorted``. (Tonic starts every pixel's
  memory at ``filter_us``, which keeps all events of the first ``filter_us`` of a recording; here they need a
  neighbour too.)
* :func:`downsample`: integer spatial down-sampling, ``x // f``, ``y // f`` (the events of an ``f x f`` block add up).
"""

from __future__ import annotations

import numpy as np

from spikeforge.data.events.stream import EventStream, Sensor
from spikeforge.errors import ConfigError

__all__ = ["bin_events", "denoise", "downsample", "frame_shape"]

#: Frame elements counted at once by one ``np.bincount`` (bounds the memory of a chunk).
_CHUNK_ELEMS = 1 << 24


def frame_shape(sensor: Sensor, merge_polarity: bool = False) -> tuple[int, ...]:
    """Shape of one frame: ``(C, H, W)``, or ``(C * W,)`` for a 1-D sensor (``height == 1``: SHD's frames are its
    700 channels)."""
    channels = 1 if merge_polarity else sensor.polarities
    return (channels * sensor.width,) if sensor.height == 1 else (channels, sensor.height, sensor.width)


def _bins(ev: EventStream, timesteps: int, by: str, window_us: float | None) -> np.ndarray:
    """The frame index of every event (``-1``: dropped)."""
    counts = ev.counts
    sample = ev.sample_index()
    starts = ev.offsets[:-1]
    if ev.t.size == 0:
        return np.zeros(0, dtype=np.int64)
    nonempty = counts > 0
    t0 = np.zeros(ev.samples, dtype=np.int64)
    t0[nonempty] = ev.t[starts[nonempty]]  # events are in time order within a sample
    rel = ev.t - t0[sample]
    if by == "time":
        t1 = np.zeros(ev.samples, dtype=np.int64)
        t1[nonempty] = ev.t[ev.offsets[1:][nonempty] - 1]
        span = (t1 - t0 + 1)[sample]
        return rel * timesteps // span
    if by == "count":
        rank = np.arange(ev.t.size, dtype=np.int64) - starts[sample]
        return rank * timesteps // counts[sample]
    if by == "window":
        b = np.floor(rel / float(window_us)).astype(np.int64)
        return np.where(b < timesteps, b, -1)
    raise ConfigError(f"bin_by must be 'time', 'count' or 'window', got {by!r}")


def bin_events(ev: EventStream, timesteps: int, sensor: Sensor, *, by: str = "time", window_us: float | None = None,
               merge_polarity: bool = False) -> np.ndarray:
    """Frames ``uint8 [n, T, C, H, W]`` (``[n, T, C * W]`` for a 1-D sensor) of the ``n`` samples of ``ev``: event
    counts per pixel, frame and polarity channel (module docstring for the three ``by`` rules)."""
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ConfigError(f"timesteps must be a positive integer, got {timesteps!r}")
    shape = frame_shape(sensor, merge_polarity)
    per_frame = int(np.prod(shape))
    b = _bins(ev, timesteps, by, window_us)
    pol = np.zeros_like(ev.p) if merge_polarity or sensor.polarities == 1 else ev.p
    pixel = (pol * sensor.height + ev.y) * sensor.width + ev.x
    sample = ev.sample_index()
    keep = b >= 0
    flat = (sample * timesteps + b) * per_frame + pixel
    out = np.empty((ev.samples, timesteps, *shape), dtype=np.uint8)
    per_sample = timesteps * per_frame
    step = max(1, _CHUNK_ELEMS // per_sample)
    for first in range(0, ev.samples, step):
        last = min(first + step, ev.samples)
        lo, hi = int(ev.offsets[first]), int(ev.offsets[last])
        sel = keep[lo:hi]
        idx = flat[lo:hi][sel] - first * per_sample
        hist = np.bincount(idx, minlength=(last - first) * per_sample)
        out[first:last] = np.minimum(hist, 255).astype(np.uint8).reshape(last - first, timesteps, *shape)
    return out


def denoise(ev: EventStream, sensor: Sensor, filter_us: float) -> EventStream:
    """Keep the events that have an earlier event less than ``filter_us`` before them at one of the 4 neighbouring
    pixels (same sample, any polarity); module docstring."""
    n = ev.t.size
    if n == 0:
        return ev
    sample = ev.sample_index()
    key = (sample * sensor.height + ev.y) * sensor.width + ev.x
    index = np.arange(n, dtype=np.int64)
    order = np.lexsort((index, key))
    sorted_keys = key[order] * n + index[order]  # (pixel, recording order), ascending
    keep = np.zeros(n, dtype=bool)
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nx, ny = ev.x + dx, ev.y + dy
        inside = (nx >= 0) & (nx < sensor.width) & (ny >= 0) & (ny < sensor.height)
        nkey = (sample * sensor.height + ny) * sensor.width + nx
        pos = np.searchsorted(sorted_keys, nkey * n + index) - 1  # the neighbour's last event before this one
        pos_ok = pos >= 0
        found = sorted_keys[np.where(pos_ok, pos, 0)]
        same_pixel = pos_ok & (found // n == nkey)
        prev = found % n
        keep |= inside & same_pixel & (ev.t - ev.t[prev] < filter_us)
    return ev.keep(keep)


def downsample(ev: EventStream, sensor: Sensor, factor: int) -> tuple[EventStream, Sensor]:
    """Integer spatial down-sampling by ``factor`` (a 1-D sensor only along ``x``): the events and the new sensor."""
    if factor == 1:
        return ev, sensor
    fy = 1 if sensor.height == 1 else factor
    small = sensor.downsampled(factor)
    return EventStream(ev.x // factor, ev.y // fy, ev.t, ev.p, ev.offsets), small
