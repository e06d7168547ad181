"""From event files to on-device loaders: :class:`EventSource` (how one dataset is found and read),
:func:`register_event_dataset`, the binned-frame cache and :func:`event_split`.

A split is read once (in chunks of samples, each an :class:`~spikeforge.data.events.stream.EventStream`), denoised,
down-sampled and binned (:mod:`~spikeforge.data.events.binning`), and the frames are cached as one ``uint8`` tensor in
``<cache>/events/<dataset>-<split>-<key>.pt``. The key hashes everything that changes the frames: the dataset, the
split, ``T``, every binning option, the source's own settings (e.g. the simulator's) and the identity of every source
file (path, size, modification time), so changing any of them builds (and keeps) another file; a stale, corrupt or
foreign file is rebuilt. Loading a cached split is one ``torch.load``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from spikeforge.data.cache import save_cache
from spikeforge.data.events.binning import bin_events, denoise, downsample, frame_shape
from spikeforge.data.events.loader import EventLoader
from spikeforge.data.events.options import EventOptions
from spikeforge.data.events.stream import EventStream, Sensor
from spikeforge.data.paths import resolve_cache_dir, resolve_data_dir
from spikeforge.data.registry import DatasetInfo, register_dataset
from spikeforge.errors import ConfigError, DataError

__all__ = ["EVENT_CACHE_FORMAT", "EventSource", "event_cache_path", "event_info", "event_split",
           "register_event_dataset"]

EVENT_CACHE_FORMAT = 1

#: ``locate(data_root, train, download) -> files`` of a split (one :class:`DataError` line when missing).
Locate = Callable[[Path, bool, bool], list]
#: ``read(files, train, options) -> iterator of (events, labels int64)`` chunks of samples, in a fixed order.
Read = Callable[[list, bool, EventOptions], Iterator[tuple[EventStream, np.ndarray]]]


@dataclass(frozen=True)
class EventSource:
    """How a dataset's events are found and read: its ``sensor``, ``locate`` and ``read`` hooks, and ``settings``
    (``options -> dict``: the source's own settings that change the events, part of the cache key)."""

    name: str
    sensor: Sensor
    locate: Locate
    read: Read
    settings: Callable[[EventOptions], dict] = field(default=lambda options: {})


def event_info(info: DatasetInfo, sensor: Sensor, options: EventOptions, timesteps: int | None) -> DatasetInfo:
    """``info`` as the model sees the binned data: channels and size after down-sampling and polarity merging, and
    ``timesteps`` frames (None: the dataset's default)."""
    small = sensor.downsampled(options.downsample)
    shape = frame_shape(small, options.merge_polarity)
    size = 1 if len(shape) == 1 else small.height
    if len(shape) == 3 and small.height != small.width:
        raise ConfigError(f"dataset {info.name!r}: frames of {small.width}x{small.height} pixels are not square")
    return dataclasses.replace(info, in_channels=shape[0], image_size=size,
                               timesteps=int(timesteps or info.timesteps), mean=(0.0,), std=(1.0,))


def _fingerprint(files: list[Path]) -> list:
    out = []
    for f in files:
        st = Path(f).stat()
        out.append([str(f), int(st.st_size), int(st.st_mtime_ns)])
    return out


def event_cache_path(name: str, train: bool, key: dict) -> tuple[Path, str]:
    """The cache file of a split binned with ``key``, and the key's SHA-256."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return resolve_cache_dir() / "events" / f"{name}-{'train' if train else 'test'}-{digest[:16]}.pt", digest


def _load(path: Path, digest: str):
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(obj, dict) or obj.get("format") != EVENT_CACHE_FORMAT or obj.get("source") != digest:
            return None
        frames, labels = obj["images"], obj["labels"]
        ok = frames.dtype == torch.uint8 and labels.dtype == torch.int64 and labels.shape == frames.shape[:1]
        return (frames, labels) if ok else None
    except Exception:  # corrupt / truncated / foreign file: rebuild it
        return None


def _bin_chunks(source: EventSource, files: list, train: bool, options: EventOptions, timesteps: int):
    frames, labels = [], []
    for stream, y in source.read(files, train, options):
        stream.check(source.sensor, f"{source.name} {'training' if train else 'test'} data")
        sensor = source.sensor
        if options.denoise_us is not None:
            stream = denoise(stream, sensor, options.denoise_us)
        stream, sensor = downsample(stream, sensor, options.downsample)
        frames.append(torch.from_numpy(bin_events(stream, timesteps, sensor, by=options.bin_by,
                                                  window_us=options.window_us,
                                                  merge_polarity=options.merge_polarity)))
        labels.append(torch.as_tensor(np.asarray(y), dtype=torch.int64))
    if not frames:
        raise DataError(f"{source.name}: no samples found in {files[0] if files else 'the data directory'}")
    return torch.cat(frames), torch.cat(labels)


def event_split(source: EventSource, options: EventOptions, timesteps: int, data_dir: Path | str | None,
                train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split as ``(frames uint8 [N, T, ...], labels int64 [N])``: from the cache when current, else read,
    binned and cached (module docstring)."""
    files = source.locate(resolve_data_dir(data_dir), train, download)
    key = {"format": EVENT_CACHE_FORMAT, "dataset": source.name, "train": bool(train), "timesteps": int(timesteps),
           **options.binning_key(), "settings": source.settings(options), "files": _fingerprint(files)}
    path, digest = event_cache_path(source.name, train, key)
    hit = _load(path, digest)
    if hit is not None:
        return hit
    frames, labels = _bin_chunks(source, files, train, options, timesteps)
    save_cache_events(path, digest, frames, labels)
    return frames, labels


def save_cache_events(path: Path, digest: str, frames: torch.Tensor, labels: torch.Tensor) -> None:
    """Write the binned split atomically (a failure only warns, as for the image cache)."""
    save_cache(path, digest, frames, labels, fmt=EVENT_CACHE_FORMAT)


def _augment(cfg: Any, info: DatasetInfo, use_aug: bool) -> dict | None:
    if not use_aug:
        return None
    o = cfg.events
    return {"crop_padding": info.crop_padding if o.crop_padding is None else o.crop_padding,
            "flip": info.flip if o.flip is None else o.flip, "time_jitter": o.time_jitter,
            "drop_events": o.drop_events}


def build_event_loaders(source: EventSource, cfg: Any, info: DatasetInfo, use_aug: bool, seed: int, rank: int,
                        world_size: int, device: torch.device):
    """The ``build_loaders`` hook of an event dataset: ``(train EventLoader, test EventLoader, info, calib frames)``."""
    if cfg.image_size is not None:
        raise ConfigError(f"data.image_size does not apply to the event dataset {info.name!r}; use "
                          "data.events.downsample to shrink its frames")
    info = event_info(info, source.sensor, cfg.events, cfg.timesteps)
    steps = info.timesteps
    xtr, ytr = event_split(source, cfg.events, steps, cfg.data_dir, True, cfg.download)
    xte, yte = event_split(source, cfg.events, steps, cfg.data_dir, False, cfg.download)
    if cfg.train_subset is not None:
        xtr, ytr = xtr[: cfg.train_subset], ytr[: cfg.train_subset]
    if cfg.test_subset is not None:
        xte, yte = xte[: cfg.test_subset], yte[: cfg.test_subset]
    for split, y in (("training", ytr), ("test", yte)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
            raise DataError(f"{info.name} {split} data holds label {int(y.max())}, but the dataset has "
                            f"{info.num_classes} classes: the files are not of this dataset")
    train = EventLoader(xtr, ytr, cfg.batch_size, shuffle=True, augment=_augment(cfg, info, use_aug), device=device,
                        seed=seed, rank=rank, world_size=world_size)
    test = EventLoader(xte, yte, cfg.test_batch_size or cfg.batch_size, shuffle=False, device=device, seed=seed,
                       rank=rank, world_size=world_size)
    return train, test, info, train.frames


def register_event_dataset(source: EventSource, *, num_classes: int, timesteps: int, augment_default: bool = False,
                           crop_padding: int = 0, flip: bool = False, aliases: tuple[str, ...] = ()) -> DatasetInfo:
    """Register ``source`` as an event dataset (kind ``events``) in :data:`~spikeforge.data.DATASETS`."""
    shape = frame_shape(source.sensor)
    size = 1 if len(shape) == 1 else source.sensor.height
    info = DatasetInfo(source.name, num_classes, shape[0], size, (0.0,), (1.0,), "events",
                       augment_default=augment_default, crop_padding=crop_padding, flip=flip, aliases=aliases,
                       build_loaders=functools.partial(build_event_loaders, source), timesteps=timesteps)
    EVENT_SOURCES[source.name] = source
    return register_dataset(info)


#: Event dataset name -> its :class:`EventSource`.
EVENT_SOURCES: dict[str, EventSource] = {}
