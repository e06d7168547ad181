"""The four recorded event datasets, read from their original release files (Tonic's readers and layouts; Tonic,
the optional ``events`` extra, also downloads them with checksums when a split is missing and downloading is
allowed).

* ``nmnist`` -- N-MNIST (Orchard, Jayawant, Cohen & Thakor 2015, "Converting static image datasets to spiking
  neuromorphic datasets using saccades", Front. Neurosci. 9:437): MNIST digits recorded by an ATIS sensor on a
  pan-tilt unit making three saccades; 34 x 34 pixels, 2 polarities, 10 classes, 60k/10k samples of about 300 ms.
  Files ``DIR/NMNIST/Train/<digit>/<id>.bin`` and ``DIR/NMNIST/Test/...``: 40-bit records (x: 8 bits, y: 8 bits,
  polarity: 1 bit, timestamp: 23 bits in microseconds), read by ``tonic.io.read_mnist_file``.
* ``dvs-gesture`` -- DVS128 Gesture (Amir et al. 2017, "A low power, fully event-based gesture recognition system",
  CVPR): 11 hand and arm gestures by 29 people under 5 lightings, DVS128 sensor, 128 x 128 x 2. Files: the release
  Tonic downloads, recordings already cut per gesture, ``DIR/DVSGesture/ibmGestureTrain/user<NN>_<lighting>/
  <label>.npy`` (and ``ibmGestureTest``), each an ``[events, 4]`` array of x, y, polarity, time in milliseconds.
* ``cifar10-dvs`` -- CIFAR10-DVS (Li, Liu, Ji, Li & Shi 2017, "CIFAR10-DVS: an event-stream dataset for object
  classification", Front. Neurosci. 11:309): 10,000 CIFAR-10 images moved on a monitor in front of a DVS128,
  128 x 128 x 2, 10 classes. Files ``DIR/CIFAR10DVS/<class>/*.aedat`` (the original AER-DAT 2.0 release: big-endian
  32-bit address + 32-bit timestamp pairs, DVS128 addresses decoded as Tonic's ``read_dvs_128`` does) or
  ``*.aedat4`` (Tonic's release; reading it needs the ``aedat`` package). The release has no test split: the first
  90% of each class's files (sorted by name) train, the last 10% test, as is usual (e.g. Kim & Panda 2021).
* ``shd`` -- Spiking Heidelberg Digits (Cramer, Stradmann, Schemmel & Zenke 2020, "The Heidelberg spiking data sets
  for the systematic evaluation of spiking neural networks", IEEE TNNLS): spoken digits 0-9 in English and German
  (20 classes) as spikes of 700 cochlea channels. Files ``DIR/SHD/shd_train.h5`` and ``shd_test.h5`` (HDF5:
  ``spikes/times`` in seconds, ``spikes/units``, ``labels``), read with ``h5py``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from spikeforge.data.events.build import EventSource, register_event_dataset
from spikeforge.data.events.options import EventOptions
from spikeforge.data.events.stream import EventStream, Sensor
from spikeforge.data.paths import download_root, missing_message, search_roots
from spikeforge.errors import DataError

__all__ = ["CIFAR10_DVS_CLASSES", "read_aedat_dvs128", "tonic_module"]

_CHUNK = 2048  # files read per chunk
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def tonic_module(what: str) -> Any:
    """The ``tonic`` package, or one :class:`DataError` line naming the extra that installs it."""
    try:
        import tonic
        import tonic.io  # noqa: F401
    except ImportError:
        raise DataError(f"{what} needs the optional package tonic: pip install 'spikeforge[events]'") from None
    return tonic


def _download(tonic_class: str, root: Path, title: str, searched: list, expected: list, layout: str, **kw) -> None:
    """Download a split with Tonic's dataset class (checksum-verified); one :class:`DataError` line on failure."""
    tonic_module(f"downloading {title}")
    try:
        datasets = importlib.import_module("tonic.datasets")
        getattr(datasets, tonic_class)(save_to=str(root), **kw)
    except Exception as exc:  # no network, blocked mirror, disk full, checksum mismatch ...
        raise DataError(missing_message(title, searched, expected, layout,
                                        f"; downloading with Tonic into {root / tonic_class} also failed "
                                        f"({type(exc).__name__}: {exc})")) from None


def _locate(data_dir: Path, folder: str, find, title: str, expected: list, layout: str, download: bool,
            tonic_class: str, **kw) -> list[Path]:
    """The files ``find(dataset_dir)`` returns under the first search root that has them; else download with Tonic
    (if allowed) or one :class:`DataError` line saying where we looked and what we expected."""
    searched = [root / folder for root in search_roots(data_dir)]
    for d in searched:
        files = find(d)
        if files:
            return files
    if not download:
        raise DataError(missing_message(title, searched, expected, layout, "; or allow downloading (download=True)"))
    root = download_root(data_dir)
    _download(tonic_class, root, title, searched, expected, layout, **kw)
    files = find(root / folder)
    if not files:
        raise DataError(missing_message(title, searched, expected, layout,
                                        f"; the download into {root / folder} finished but the files are missing"))
    return files


def _chunks(files: list, read_one, labels: list[int]) -> Iterator[tuple[EventStream, np.ndarray]]:
    for start in range(0, len(files), _CHUNK):
        part = files[start:start + _CHUNK]
        yield EventStream.from_samples([read_one(f) for f in part]), np.asarray(labels[start:start + _CHUNK])


# -- N-MNIST ---------------------------------------------------------------------------------------------------
def _nmnist_find(d: Path, train: bool) -> list[Path]:
    split = d / ("Train" if train else "Test")
    return sorted(split.glob("[0-9]/*.bin")) if split.is_dir() else []


def _nmnist_locate(data_dir: Path, train: bool, download: bool) -> list[Path]:
    split = "Train" if train else "Test"
    return _locate(data_dir, "NMNIST", lambda d: _nmnist_find(d, train), f"N-MNIST {split.lower()} files",
                   [f"{split}/<digit>/<id>.bin"], f"DIR/NMNIST/{split}/0 ... 9/*.bin (the unzipped release)",
                   download, "NMNIST", train=train)


def _nmnist_read(files: list, train: bool, options: EventOptions):
    tonic = tonic_module("reading N-MNIST")
    dtype = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
    return _chunks(files, lambda f: tonic.io.read_mnist_file(str(f), dtype=dtype), [int(f.parent.name) for f in files])


# -- DVS128 Gesture ----------------------------------------------------------------------------------------------
def _gesture_find(d: Path, train: bool) -> list[Path]:
    split = d / ("ibmGestureTrain" if train else "ibmGestureTest")
    return sorted(split.glob("user*_*/*.npy")) if split.is_dir() else []


def _gesture_locate(data_dir: Path, train: bool, download: bool) -> list[Path]:
    split = "ibmGestureTrain" if train else "ibmGestureTest"
    return _locate(data_dir, "DVSGesture", lambda d: _gesture_find(d, train), f"DVS128 Gesture {split} files",
                   [f"{split}/user<NN>_<lighting>/<label>.npy"], f"DIR/DVSGesture/{split}/user01_fluorescent/0.npy ...",
                   download, "DVSGesture", train=train)


def _gesture_one(f: Path) -> dict:
    try:
        a = np.load(f, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"could not read {f} ({exc}): replace it with the original file") from None
    if a.ndim != 2 or a.shape[1] != 4:
        raise DataError(f"{f} holds an array of shape {list(a.shape)}, expected [events, 4] (x, y, p, t in ms)")
    return {"x": a[:, 0], "y": a[:, 1], "p": a[:, 2], "t": a[:, 3].astype(np.int64) * 1000}


def _gesture_read(files: list, train: bool, options: EventOptions):
    return _chunks(files, _gesture_one, [int(f.stem) for f in files])


# -- CIFAR10-DVS -------------------------------------------------------------------------------------------------
def _cifar_find(d: Path, train: bool) -> list[Path]:
    out = []
    for name in CIFAR10_DVS_CLASSES:
        files = sorted(p for p in (d / name).glob("*.aedat*") if p.suffix in (".aedat", ".aedat4"))
        cut = len(files) - max(1, int(round(0.1 * len(files)))) if files else 0  # at least one test file
        out += files[:cut] if train else files[cut:]
    return out


def _cifar_locate(data_dir: Path, train: bool, download: bool) -> list[Path]:
    return _locate(data_dir, "CIFAR10DVS", lambda d: _cifar_find(d, train), "CIFAR10-DVS files",
                   ["<class>/*.aedat or <class>/*.aedat4"], "DIR/CIFAR10DVS/airplane/*.aedat ... truck/*.aedat",
                   download, "CIFAR10DVS")


def read_aedat_dvs128(path: str | Path) -> dict:
    """Events of an AER-DAT (``.aedat``, versions 2 and 3) DVS128 recording, with Tonic's header and event parsers
    and its DVS128 address layout (x: bits 8-14, y: bits 1-7, polarity: bit 0)."""
    tonic = tonic_module("reading .aedat files")
    try:
        version, start, _ = tonic.io.read_aedat_header_from_file(str(path))
        ev = tonic.io.get_aer_events_from_file(str(path), version, start)
    except Exception as exc:  # not an AER-DAT file, truncated header ...
        raise DataError(f"could not read {path} as an AER-DAT file ({type(exc).__name__}: {exc}); replace it with the "
                        "original file") from None
    addr = ev["address"].astype(np.int64)
    return {"x": (addr >> 8) & 0x7F, "y": (addr >> 1) & 0x7F, "p": addr & 1, "t": ev["timeStamp"].astype(np.int64)}


def _cifar_one(f: Path) -> dict:
    if f.suffix == ".aedat":
        return read_aedat_dvs128(f)
    tonic = tonic_module("reading .aedat4 files")
    try:
        ev = tonic.io.read_aedat4(str(f))
    except ImportError:
        raise DataError(f"reading {f} (AEDAT4) needs the package aedat: pip install aedat") from None
    ev.dtype.names = ["t", "x", "y", "p"]
    return {"x": ev["x"], "y": ev["y"], "p": ev["p"], "t": ev["t"]}


def _cifar_read(files: list, train: bool, options: EventOptions):
    return _chunks(files, _cifar_one, [CIFAR10_DVS_CLASSES.index(f.parent.name) for f in files])


# -- SHD ---------------------------------------------------------------------------------------------------------
def _shd_find(d: Path, train: bool) -> list[Path]:
    f = d / f"shd_{'train' if train else 'test'}.h5"
    return [f] if f.is_file() else []


def _shd_locate(data_dir: Path, train: bool, download: bool) -> list[Path]:
    name = f"shd_{'train' if train else 'test'}.h5"
    return _locate(data_dir, "SHD", lambda d: _shd_find(d, train), f"SHD file {name}", [name],
                   f"DIR/SHD/{name} (unzipped)", download, "SHD", train=train)


def _shd_read(files: list, train: bool, options: EventOptions):
    try:
        import h5py
    except ImportError:
        raise DataError("reading SHD needs the optional package h5py: pip install 'spikeforge[events]'") from None
    try:
        with h5py.File(files[0], "r") as f:
            times, units, labels = f["spikes/times"][:], f["spikes/units"][:], f["labels"][:]
    except (OSError, KeyError) as exc:
        raise DataError(f"could not read {files[0]} as an SHD file ({exc}); replace it with the original "
                        "file") from None
    samples = [{"x": u, "t": tm} for tm, u in zip(times, units)]
    for start in range(0, len(samples), _CHUNK):
        part = samples[start:start + _CHUNK]
        yield (EventStream.from_samples(part, fields=("x", None, "t", None), time_scale=1e6),
               np.asarray(labels[start:start + _CHUNK], dtype=np.int64))


register_event_dataset(EventSource("nmnist", Sensor(34, 34, 2), _nmnist_locate, _nmnist_read), num_classes=10,
                       timesteps=10, crop_padding=2, flip=False, aliases=("n-mnist",))
register_event_dataset(EventSource("dvs-gesture", Sensor(128, 128, 2), _gesture_locate, _gesture_read),
                       num_classes=11, timesteps=20, crop_padding=8, flip=False,  # left/right gestures are classes
                       aliases=("dvsgesture", "dvs128-gesture", "ibm-gesture"))
register_event_dataset(EventSource("cifar10-dvs", Sensor(128, 128, 2), _cifar_locate, _cifar_read), num_classes=10,
                       timesteps=10, crop_padding=8, flip=True, aliases=("cifar10dvs", "dvs-cifar10"))
register_event_dataset(EventSource("shd", Sensor(700, 1, 1), _shd_locate, _shd_read), num_classes=20, timesteps=20,
                       aliases=("spiking-heidelberg-digits",))
