"""``mnist-saccade``: a *simulated* event-camera MNIST, made the way N-MNIST was recorded.

N-MNIST (Orchard, Jayawant, Cohen & Thakor 2015, "Converting static image datasets to spiking neuromorphic datasets
using saccades", Front. Neurosci. 9:437) was recorded by an ATIS sensor on a pan-tilt unit looking at each MNIST
digit on a monitor while making three saccades (about 100 ms each) along an isosceles triangle. This module simulates
that recording from the MNIST originals, deterministically:

* **Motion.** The 28 x 28 digit moves over a 34 x 34 sensor along the triangle ``(0, 0) -> (A/2, A) -> (A, 0) ->
  (0, 0)`` pixels (``A = amplitude_px``; N-MNIST's saccades span about 3.5 x 7 pixels), one saccade per leg, each
  ``saccade_ms`` long at constant speed, rendered with sub-pixel (bilinear) shifts at ``steps_per_saccade`` steps
  per saccade.
* **Pixels.** Each pixel sees the luminance ``dark + (1 - dark) * I`` (``I`` the MNIST intensity in [0, 1]) and, as a
  DVS/ATIS change detector (Lichtsteiner, Posch & Delbruck 2008, "A 128x128 120 dB 15 us latency asynchronous
  temporal contrast vision sensor", IEEE JSSC 43(2)), emits an ON (OFF) event each time its log luminance rises
  (falls) by its contrast threshold since its last event: ``n = floor(|log L - log L_ref| / C_pix)`` events, and
  ``L_ref`` moves by ``n * C_pix``. ``C_pix = contrast + contrast_sigma * N(0, 1)`` is fixed per pixel (mismatch).
  After an event a pixel is refractory for ``refractory_us``, which caps its events per step; the events of one step
  are spread evenly over the step. The sensor starts adapted to the digit at its first position (no events at t=0).
* **Noise** (optional): background events at ``noise_hz`` per pixel per second, random polarity, uniform in time.

All randomness (threshold mismatch: ``seed``; noise: ``(seed, split, chunk)``) is seeded, so the dataset is the same
on every machine. It is a simulation: real sensors add latency, bandwidth limits, flicker and monitor refresh that are
not modelled. The parameters are :class:`~spikeforge.data.events.options.SaccadeOptions` (``data.events.saccade``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from spikeforge.data.common import derive_seed
from spikeforge.data.events.build import EventSource, register_event_dataset
from spikeforge.data.events.options import EventOptions, SaccadeOptions
from spikeforge.data.events.stream import EventStream, Sensor
from spikeforge.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, idx_files, read_idx
from spikeforge.errors import DataError

__all__ = ["SENSOR", "saccade_path", "simulate_saccades"]

SENSOR = Sensor(34, 34, 2)
_CHUNK = 2000  # digits simulated at once


def saccade_path(opts: SaccadeOptions) -> tuple[np.ndarray, np.ndarray]:
    """``(times_us [K], positions [K, 2])``: the end time and the (dx, dy) offset of every simulation step."""
    a = float(opts.amplitude_px)
    corners = np.array([[0.0, 0.0], [a / 2, a], [a, 0.0], [0.0, 0.0]])
    s = int(opts.steps_per_saccade)
    frac = np.arange(1, s + 1) / s
    pos = np.concatenate([corners[i] + frac[:, None] * (corners[i + 1] - corners[i]) for i in range(3)])
    dt = opts.saccade_ms * 1000.0 / s
    return np.arange(1, 3 * s + 1) * dt, pos


def _render(img: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """Digits ``[B, 28, 28]`` in [0, 1] shifted by ``(dx, dy)`` pixels (bilinear) onto the 34 x 34 sensor."""
    b = img.shape[0]
    canvas = img.new_zeros(b, SENSOR.height + 2, SENSOR.width + 2)
    ix, iy = int(math.floor(dx)), int(math.floor(dy))
    fx, fy = dx - ix, dy - iy
    for ox, oy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        if w > 0:
            canvas[:, iy + oy: iy + oy + 28, ix + ox: ix + ox + 28] += w * img
    return canvas[:, : SENSOR.height, : SENSOR.width]


def _events(counts: torch.Tensor, on: torch.Tensor, times: np.ndarray, dt: float) -> EventStream:
    """The event stream of per-step counts ``uint8 [B, K, H, W]`` (``on``: ON polarity): the ``n`` events of a pixel
    in step ``k`` are spread evenly over ``(times[k] - dt, times[k]]``; each sample's events in time order."""
    b, k, y, x = (v.numpy() for v in torch.nonzero(counts, as_tuple=True))
    n = counts[b, k, y, x].numpy().astype(np.int64)
    pol = on[b, k, y, x].numpy().astype(np.int64)
    first = np.cumsum(n) - n
    rep = np.repeat(np.arange(n.size), n)
    j = np.arange(rep.size) - first[rep]
    t = np.round(times[k[rep]] - dt + (j + 1) * dt / n[rep]).astype(np.int64)
    sample = b[rep]
    order = np.argsort(sample * (int(times[-1]) + 1) + t, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(b, weights=n, minlength=counts.shape[0]))]).astype(np.int64)
    return EventStream(x[rep][order], y[rep][order], t[order], pol[rep][order], offsets)


def _noise(counts: torch.Tensor, on: torch.Tensor, rate: float, dt: float, gen: torch.Generator) -> None:
    """Add background events: one per pixel and step with probability ``rate * dt``, random polarity."""
    hit = torch.rand(counts.shape, generator=gen) < rate * dt * 1e-6
    flip = torch.rand(counts.shape, generator=gen) < 0.5
    noise_only = hit & (counts == 0)
    on[noise_only] = flip[noise_only]
    counts += hit.to(counts.dtype)


def _simulate_chunk(images: np.ndarray, opts: SaccadeOptions, thresholds: torch.Tensor,
                    gen: torch.Generator) -> EventStream:
    times, pos = saccade_path(opts)
    dt = float(times[0])
    img = torch.from_numpy(images).float().div_(255.0)
    ref = _log_luminance(_render(img, 0.0, 0.0), opts.dark)
    cap = max(1, int(dt // opts.refractory_us)) if opts.refractory_us > 0 else 255
    shape = (images.shape[0], len(times), SENSOR.height, SENSOR.width)
    counts = torch.zeros(shape, dtype=torch.uint8)
    on = torch.zeros(shape, dtype=torch.bool)
    for k, (dx, dy) in enumerate(pos):
        diff = _log_luminance(_render(img, float(dx), float(dy)), opts.dark) - ref
        n = torch.clamp(torch.floor(diff.abs() / thresholds), max=min(cap, 254))
        ref += torch.sign(diff) * n * thresholds
        counts[:, k] = n.to(torch.uint8)
        on[:, k] = diff > 0
    if opts.noise_hz > 0:
        _noise(counts, on, opts.noise_hz, dt, gen)
    return _events(counts, on, times, dt)


def _log_luminance(frame: torch.Tensor, dark: float) -> torch.Tensor:
    return torch.log(dark + (1.0 - dark) * frame)


def sensor_thresholds(opts: SaccadeOptions) -> torch.Tensor:
    """The per-pixel contrast thresholds of the simulated sensor ``[34, 34]`` (fixed by ``opts.seed``)."""
    g = torch.Generator().manual_seed(derive_seed(opts.seed, 7))
    c = opts.contrast + opts.contrast_sigma * torch.randn(SENSOR.height, SENSOR.width, generator=g)
    return c.clamp_(min=0.1 * opts.contrast)


def simulate_saccades(images: np.ndarray | torch.Tensor, opts: SaccadeOptions | None = None, *,
                      stream: int = 0) -> EventStream:
    """Simulated recordings (module docstring) of MNIST-like digits ``uint8 [N, 28, 28]`` (or ``[N, 1, 28, 28]``);
    ``stream`` selects the noise stream (the dataset uses one per split and chunk)."""
    opts = opts or SaccadeOptions()
    x = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    x = x.reshape(x.shape[0], 28, 28) if x.ndim == 4 and x.shape[1] == 1 else x
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
        raise DataError(f"simulate_saccades needs uint8 digits [N, 28, 28], got {x.dtype} {list(x.shape)}")
    gen = torch.Generator().manual_seed(derive_seed(opts.seed, 8, stream))
    return _simulate_chunk(x, opts, sensor_thresholds(opts), gen)


def _locate(data_dir: Path, train: bool, download: bool) -> list[Path]:
    return idx_files("mnist", data_dir, train, download)


def _read(files: list, train: bool, options: EventOptions) -> Iterator[tuple[EventStream, np.ndarray]]:
    images = read_idx(files[0], expected_magic=IDX_IMAGES_MAGIC)
    labels = read_idx(files[1], expected_magic=IDX_LABELS_MAGIC).astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise DataError(f"{files[0]} and {files[1]} are not a matching pair of MNIST files: replace them")
    for i, start in enumerate(range(0, images.shape[0], _CHUNK)):
        chunk = images[start:start + _CHUNK]
        yield simulate_saccades(chunk, options.saccade, stream=2 * i + int(train)), labels[start:start + _CHUNK]


register_event_dataset(EventSource("mnist-saccade", SENSOR, _locate, _read,
                                   settings=lambda options: dataclasses.asdict(options.saccade)),
                       num_classes=10, timesteps=10, crop_padding=2, flip=False, aliases=("saccade-mnist",))
