"""Datasets and data loaders.

Two paths:

* **Tensor datasets** (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100): the whole split is read once
  from the original distribution files (checksum-verified, parsed without ``pickle.load``), cached
  as a ``.pt`` file, and served by :class:`TensorLoader`, which keeps the set as one ``uint8``
  tensor on the device and does shuffling and augmentation batched on the device.
* **Event datasets** (N-MNIST, DVS128 Gesture, CIFAR10-DVS, SHD and the simulated ``mnist-saccade``;
  :mod:`spikeforge.data.events`): recordings read once, binned into ``T`` frames, cached, and served by
  :class:`~spikeforge.data.events.EventLoader` as float event counts ``[B, T, C, H, W]`` (``[B, T, C]`` for SHD).
* **Image folders** (``imagefolder``): ``root/train`` and ``root/val`` with one sub-folder per class,
  served by a torch ``DataLoader`` (:func:`image_folder_loader`).

All loaders yield images as float32 in ``[0, 1]``; models normalise with :class:`DatasetInfo`'s
``mean``/``std`` themselves.

Where data is looked for: ``--data-dir DIR`` (``data_dir=``) > ``$SPIKEFORGE_DATA`` >
``~/.cache/spikeforge/data`` (:func:`resolve_data_dir`). Parsed tensors are cached under
``$SPIKEFORGE_CACHE`` or ``~/.cache/spikeforge`` (:func:`resolve_cache_dir`).

Layout: ``registry`` (:class:`DatasetInfo`, :data:`DATASETS`), ``paths`` (directories, checksums), ``cache``
(parsed-tensor cache), one module per dataset family that registers its datasets (``idx``: MNIST, Fashion-MNIST;
``cifar``: CIFAR-10/100; ``imagefolder``), ``augment`` + ``loader`` (:class:`TensorLoader`) and ``build``
(:class:`DataConfig`, :func:`build_data`). A new dataset is one module calling :func:`register_dataset`, imported
below.
"""

from __future__ import annotations

# The dataset modules register their datasets when imported: one line per module.
from spikeforge.data import idx  # noqa: F401  mnist, fashion-mnist
from spikeforge.data import cifar  # noqa: F401  cifar10, cifar100
from spikeforge.data import imagefolder  # noqa: F401  imagefolder
from spikeforge.data import events  # noqa: F401  nmnist, dvs-gesture, cifar10-dvs, shd, mnist-saccade
from spikeforge.data.build import Data, DataConfig, build_data, dataset_info, load_tensors
from spikeforge.data.events import EventLoader, EventOptions, EventStream, SaccadeOptions, bin_events
from spikeforge.data.cifar import read_cifar
from spikeforge.data.idx import read_idx
from spikeforge.data.imagefolder import FolderLoader, image_folder_loader
from spikeforge.data.loader import TensorLoader
from spikeforge.data.paths import CACHE_ENV, DATA_ENV, resolve_cache_dir, resolve_data_dir
from spikeforge.data.registry import DATASETS, DatasetInfo, register_dataset

__all__ = [
    "CACHE_ENV",
    "DATASETS",
    "DATA_ENV",
    "Data",
    "DataConfig",
    "EventLoader",
    "EventOptions",
    "EventStream",
    "SaccadeOptions",
    "DatasetInfo",
    "FolderLoader",
    "TensorLoader",
    "bin_events",
    "build_data",
    "dataset_info",
    "image_folder_loader",
    "load_tensors",
    "read_cifar",
    "read_idx",
    "register_dataset",
    "resolve_cache_dir",
    "resolve_data_dir",
]
