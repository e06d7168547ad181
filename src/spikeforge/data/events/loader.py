"""The on-device loader of binned event datasets: :class:`EventLoader`."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from spikeforge.data.common import derive_seed
from spikeforge.data.events.augment import check_event_augment, crop_flip_frames, drop_events, time_jitter
from spikeforge.data.loader import TensorLoader
from spikeforge.errors import ConfigError, DataError

__all__ = ["EventLoader"]


class EventLoader(TensorLoader):
    """Iterate over binned event frames held as one ``uint8`` tensor ``[N, T, C, H, W]`` (``[N, T, C]`` for a 1-D
    sensor) on ``device``, like :class:`~spikeforge.data.TensorLoader` does for images (same shuffling, sharding and
    per-epoch seeding).

    Yields ``(x, y)``: ``x`` float32 ``[B, T, ...]`` event counts (not rescaled; the batch dimension first, as every
    loader of the library; models with ``input: events`` take it so), ``y`` int64 ``[B]``. ``augment`` (``None`` or
    a mapping with ``crop_padding``, ``flip``, ``time_jitter``, ``drop_events``;
    :mod:`spikeforge.data.events.augment`) is applied per batch on the device; the random draws of batch ``k`` of an
    epoch come from a generator seeded with ``(seed, epoch, 4, rank, k)``."""

    def _check(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() not in (3, 5):
            raise ConfigError(f"EventLoader needs frames as a uint8 tensor [N, T, C, H, W] or [N, T, C], got "
                              f"{images.dtype} of shape {list(images.shape)}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise ConfigError(f"EventLoader needs integer labels of shape [{images.shape[0]}], got {labels.dtype} of "
                              f"shape {list(labels.shape)}")
        if images.shape[0] == 0:
            raise DataError("EventLoader got an empty dataset (0 samples): check the data source")

    def _set_augment(self, augment: Mapping[str, Any] | None) -> None:
        aug = check_event_augment(augment)
        self.crop_padding, self.flip = aug["crop_padding"], aug["flip"]
        self.time_jitter, self.drop_events = aug["time_jitter"], aug["drop_events"]

    @property
    def frames(self) -> torch.Tensor:
        """All frames, ``uint8 [N, T, ...]``, on the device."""
        return self.images

    @property
    def timesteps(self) -> int:
        """Frames per sample."""
        return int(self.images.shape[1])

    def _draw(self, m: int, epoch: int):
        if self.images.dim() != 5 and (self.crop_padding > 0 or self.flip):
            raise ConfigError("crop and flip augmentation need 2-D frames [T, C, H, W]; this dataset has 1-D frames: "
                              "set data.events.crop_padding: 0 and flip: false")
        return super()._draw(m, epoch)

    def _transform(self, x: torch.Tensor, draws, sl: slice, epoch: int, batch: int) -> torch.Tensor:
        if draws is not None:
            x = crop_flip_frames(x, draws[0][sl], draws[1][sl], self.crop_padding)
        if self.drop_events > 0 or self.time_jitter > 0:
            gen = torch.Generator(device=x.device)
            gen.manual_seed(derive_seed(self.seed, epoch, 4, self.rank, batch))
            x = time_jitter(drop_events(x, self.drop_events, gen), self.time_jitter, gen)
        return x.float()
