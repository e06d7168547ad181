"""The dataset registry: what a dataset is (:class:`DatasetInfo`) and where the known ones are (:data:`DATASETS`).

A dataset registers itself in its own module (``idx.py``, ``cifar.py``, ``imagefolder.py``) with
:func:`register_dataset`; ``spikeforge/data/__init__.py`` imports those modules once. Adding a dataset is one new
file plus one import line there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from spikeforge.errors import ConfigError
from spikeforge.registry import Registry

__all__ = ["DATASETS", "DatasetInfo", "canonical_name", "event_dataset_names", "register_dataset",
           "tensor_dataset_names"]

#: ``load(data_root, train, download) -> (images uint8 [N, C, H, W], labels int64 [N])`` for a tensor dataset.
TensorLoad = Callable[[Path, bool, bool], Any]


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    ``num_classes`` is ``None`` for ``imagefolder`` until :func:`~spikeforge.data.build_data` discovers it.
    ``mean``/``std`` are per channel, for images scaled to ``[0, 1]``. ``kind`` is ``"tensor"`` (the whole split held
    in memory and served by :class:`~spikeforge.data.TensorLoader`; needs ``load``) or ``"folder"`` (a torch
    ``DataLoader``; needs ``build_loaders``). ``augment_default`` says whether training augments when the recipe
    leaves ``augment`` unset; ``crop_padding``/``flip`` are the on-device augmentation a tensor dataset then gets
    (random crop from the zero-padded image, random horizontal flip). ``aliases`` are other accepted spellings.

    ``build_loaders(cfg, info, use_aug, seed, rank, world_size) -> (train, test, info, calib_dataset)`` builds the
    loaders of a folder dataset (``info`` updated with what was discovered, e.g. ``num_classes``).

    ``kind="events"``: an event-camera or spike-train dataset (:mod:`spikeforge.data.events`), binned into
    ``timesteps`` frames per sample (its default T) of ``in_channels x image_size x image_size`` (polarity as
    channels; ``image_size`` 1 for a 1-D sensor such as SHD's 700 channels, whose frames are ``[in_channels]``).
    Its ``build_loaders(cfg, info, use_aug, seed, rank, world_size, device)`` returns ``(train, test, info,
    calib_frames)``.
    """

    name: str
    num_classes: int | None
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str
    augment_default: bool = False
    crop_padding: int = 0
    flip: bool = False
    aliases: tuple[str, ...] = ()
    load: TensorLoad | None = field(default=None, compare=False, repr=False)
    build_loaders: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    timesteps: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("tensor", "folder", "events"):
            raise ConfigError(f"dataset {self.name!r}: kind must be 'tensor', 'folder' or 'events', got {self.kind!r}")
        if self.kind == "events" and not (isinstance(self.timesteps, int) and self.timesteps >= 1):
            raise ConfigError(f"dataset {self.name!r} of kind 'events' needs a default number of frames (timesteps)")
        hook = "load" if self.kind == "tensor" else "build_loaders"
        if getattr(self, hook) is None:
            raise ConfigError(f"dataset {self.name!r} of kind {self.kind!r} needs a {hook} function")
        counts = (1, self.in_channels) if self.kind == "events" else (self.in_channels,)
        if len(self.mean) != len(self.std) or len(self.mean) not in counts:
            raise ConfigError(f"dataset {self.name!r}: mean and std need one value per channel "
                              f"({self.in_channels})")

    def augment_spec(self) -> dict[str, Any]:
        """The :class:`~spikeforge.data.TensorLoader` ``augment`` argument used when augmentation is on."""
        return {"crop_padding": self.crop_padding, "flip": self.flip}


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Register ``info`` under ``info.name`` (its ``aliases`` are accepted by :func:`canonical_name`)."""
    return DATASETS.register(info.name, info)


def tensor_dataset_names() -> tuple[str, ...]:
    """Names of the registered datasets held in memory as tensors."""
    return tuple(name for name, info in DATASETS.items() if info.kind == "tensor")


def event_dataset_names() -> tuple[str, ...]:
    """Names of the registered event datasets (binned into frames, :mod:`spikeforge.data.events`)."""
    return tuple(name for name, info in DATASETS.items() if info.kind == "events")


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def canonical_name(name: Any, *, allowed: Iterable[str] | None = None, what: str | None = None) -> str:
    """The registered name ``name`` spells (case, ``_``/``-`` and aliases forgiven), if it is in ``allowed``
    (default: every registered dataset). Otherwise raises :class:`ConfigError` ``'<what> must be one of ..., got
    ...'``, or with ``what=None`` a plain ``ValueError('must be one of ...')`` (for a config field validator)."""
    allowed = tuple(DATASETS.names() if allowed is None else allowed)
    key = None
    if isinstance(name, str):
        key = _normalise(name)
        for registered, info in DATASETS.items():
            if key in (_normalise(a) for a in info.aliases):
                key = registered
    if key not in allowed:
        msg = f"must be one of {', '.join(repr(a) for a in allowed)}, got {name!r}"
        raise ValueError(msg) if what is None else ConfigError(f"{what} {msg}")
    return key

