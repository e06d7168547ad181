"""One-call construction of the data of a run: :class:`DataConfig` (recipe section ``data``) -> :func:`build_data`
-> :class:`Data` (train and test loaders, dataset description, calibration batch)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Annotated, Any, Mapping

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, BeforeValidator

from spikeforge.config import NonNegInt, PosInt, config
from spikeforge.config import from_dict as config_from_dict
from spikeforge.data.common import check_int, derive_seed
from spikeforge.data.events.build import EVENT_SOURCES, event_info
from spikeforge.data.events.options import EventOptions, event_options_field
from spikeforge.data.loader import TensorLoader
from spikeforge.data.paths import resolve_data_dir
from spikeforge.data.registry import DATASETS, DatasetInfo, canonical_name, tensor_dataset_names
from spikeforge.errors import ConfigError

__all__ = ["Data", "DataConfig", "build_data", "dataset_info", "load_tensors"]


def _path_or_none(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ValueError(f"must be a path or null, got {value!r}")


@config
class DataConfig:
    """Data options (recipe section ``data``).

    ``dataset`` is a registered dataset (:data:`~spikeforge.data.DATASETS`; case, ``_``/``-`` and aliases such as
    ``cifar-10`` are forgiven and stored canonical). ``augment=None`` means the dataset's default (CIFAR: random crop
    with padding 4 + flip; MNIST/Fashion: none); ``train_subset`` / ``test_subset`` keep only the first N samples
    (a fixed pseudo-random N for ``imagefolder``); ``image_size`` resizes tensor datasets (and defaults to 224 for
    ``imagefolder``); ``test_batch_size=None`` means ``batch_size``; ``calib_batch_size`` is the default size of
    :meth:`Data.calibration_batch`.

    Event datasets (``nmnist``, ``dvs-gesture``, ``cifar10-dvs``, ``shd``, ``mnist-saccade``;
    :mod:`spikeforge.data.events`): ``timesteps`` is the number of frames per sample (None: the dataset's default),
    which is also the model's ``T``; ``events`` holds the binning, denoising, down-sampling and augmentation options
    (:class:`~spikeforge.data.events.EventOptions`). Both are refused for image datasets."""

    dataset: Annotated[str, AfterValidator(canonical_name)] = "mnist"
    data_dir: Annotated[str | None, BeforeValidator(_path_or_none)] = None
    batch_size: PosInt = 128
    test_batch_size: PosInt | None = 1000
    augment: bool | None = None
    train_subset: PosInt | None = None
    test_subset: PosInt | None = None
    image_size: PosInt | None = None
    workers: NonNegInt = 2
    download: bool = True
    calib_batch_size: PosInt = 512
    timesteps: PosInt | None = None
    events: event_options_field = field(default_factory=EventOptions)

    def __post_init__(self) -> None:
        if DATASETS[self.dataset].kind == "events":
            return
        if self.timesteps is not None:
            raise ValueError(f"data.timesteps is the number of frames of an event dataset; {self.dataset!r} is an "
                             "image dataset (its T is snn.timesteps): remove data.timesteps")
        if self.events != EventOptions():
            raise ValueError(f"data.events applies to event datasets only; {self.dataset!r} is an image dataset: "
                             "remove data.events")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "data") -> "DataConfig":
        """Build from a mapping (e.g. a recipe section); unknown keys and bad values are one :class:`ConfigError`
        naming ``where.key``."""
        return config_from_dict(cls, dict(d) if isinstance(d, Mapping) else d, where)


@dataclass
class Data:
    """What :func:`build_data` returns: ``train``/``test`` loaders and the dataset ``info``."""

    train: Any
    test: Any
    info: DatasetInfo
    config: DataConfig
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _calib_images: torch.Tensor | None = field(default=None, repr=False)
    _calib_divisor: float = field(default=255.0, repr=False)  # uint8 -> float: images / 255, event counts / 1
    _calib_dataset: Any = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return int(self.info.num_classes)

    def calibration_batch(self, n: int | None = None) -> torch.Tensor:
        """The first ``n`` (default ``config.calib_batch_size``) images of a fixed seeded random
        ordering of the training set, un-augmented, as float ``[n, C, H, W]`` in ``[0, 1]`` on
        the device (all images if the training set is smaller); for an event dataset its frames, float
        ``[n, T, ...]`` event counts."""
        n = self.config.calib_batch_size if n is None else check_int("n", n, 1)
        if self._calib_images is not None:
            total = self._calib_images.shape[0]
        else:
            total = len(self._calib_dataset)
        g = torch.Generator().manual_seed(derive_seed(self.seed, 3))
        idx = torch.randperm(total, generator=g)[: min(n, total)]
        if self._calib_images is not None:
            x = self._calib_images.index_select(0, idx.to(self._calib_images.device))
            return x.float().div_(self._calib_divisor).to(self.device)
        return torch.stack([self._calib_dataset[i][0] for i in idx.tolist()]).to(self.device)


def load_tensors(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    train: bool = True,
    download: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a whole split as ``(images uint8 [N, C, H, W], labels int64 [N])``.

    ``name`` is a registered tensor dataset (``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"cifar100"``).
    Files are looked for under :func:`~spikeforge.data.resolve_data_dir` ``(data_dir)`` (each dataset module
    documents its accepted layouts) and downloaded with torchvision if missing and ``download`` is true.
    Checksums and formats are verified; the parsed tensors are cached under
    :func:`~spikeforge.data.resolve_cache_dir`. Raises :class:`DataError` if the data cannot be provided."""
    name = canonical_name(name, allowed=tensor_dataset_names(), what="dataset for load_tensors")
    return DATASETS[name].load(resolve_data_dir(data_dir), bool(train), bool(download))


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """The description of ``cfg.dataset`` as ``cfg`` serves it: for an event dataset the frame channels and size
    after down-sampling and polarity merging and ``timesteps`` frames; an image dataset's ``image_size`` if set."""
    info = DATASETS[cfg.dataset]
    if info.kind == "events":
        return event_info(info, EVENT_SOURCES[info.name].sensor, cfg.events, cfg.timesteps)
    if cfg.image_size is not None:
        return dataclasses.replace(info, image_size=cfg.image_size)
    return info


def _resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking) of a ``uint8`` image set, in chunks, rounded back to uint8."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = []
    for chunk in torch.split(x, 4096):
        y = F.interpolate(chunk.float(), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=size < x.shape[-1])
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _build_tensor_data(cfg: DataConfig, info: DatasetInfo, use_aug: bool, device: torch.device, seed: int,
                       rank: int, world_size: int) -> Data:
    xtr, ytr = load_tensors(cfg.dataset, cfg.data_dir, train=True, download=cfg.download)
    xte, yte = load_tensors(cfg.dataset, cfg.data_dir, train=False, download=cfg.download)
    if cfg.train_subset is not None:
        xtr, ytr = xtr[: cfg.train_subset], ytr[: cfg.train_subset]
    if cfg.test_subset is not None:
        xte, yte = xte[: cfg.test_subset], yte[: cfg.test_subset]
    if cfg.image_size is not None and cfg.image_size != info.image_size:
        xtr, xte = _resize_uint8(xtr, cfg.image_size), _resize_uint8(xte, cfg.image_size)
        info = dataclasses.replace(info, image_size=cfg.image_size)
    augment = info.augment_spec() if use_aug else None
    train = TensorLoader(xtr, ytr, cfg.batch_size, shuffle=True, augment=augment, device=device,
                         seed=seed, rank=rank, world_size=world_size)
    test = TensorLoader(xte, yte, cfg.test_batch_size or cfg.batch_size, shuffle=False, device=device, seed=seed,
                        rank=rank, world_size=world_size)
    return Data(train=train, test=test, info=info, config=cfg, seed=seed, device=device,
                _calib_images=train.images)


def build_data(
    cfg: DataConfig,
    device: str | torch.device = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Data:
    """Build the train loader (shuffled, augmented) and test loader (in order) for ``cfg``.

    Tensor datasets give :class:`TensorLoader`\\ s on ``device``, event datasets
    :class:`~spikeforge.data.events.EventLoader`\\ s (frames ``[B, T, ...]``); folder datasets (``imagefolder``) give
    their ``build_loaders`` hook's loaders (``DataLoader``\\ s, batches on the CPU) and fill ``info.num_classes`` from
    the folder. Both loaders are sharded over ``world_size`` ranks."""
    if not isinstance(cfg, DataConfig):
        raise ConfigError(f"build_data needs a DataConfig, got {type(cfg).__name__}")
    info = DATASETS[cfg.dataset]
    device = torch.device(device)
    use_aug = info.augment_default if cfg.augment is None else cfg.augment
    if info.kind == "tensor":
        return _build_tensor_data(cfg, info, use_aug, device, seed, rank, world_size)
    if info.kind == "events":
        train, test, info, frames = info.build_loaders(cfg, info, use_aug, seed, rank, world_size, device)
        return Data(train=train, test=test, info=info, config=cfg, seed=seed, device=device, _calib_images=frames,
                    _calib_divisor=1.0)
    train, test, info, calib = info.build_loaders(cfg, info, use_aug, seed, rank, world_size)
    return Data(train=train, test=test, info=info, config=cfg, seed=seed, device=device, _calib_dataset=calib)
