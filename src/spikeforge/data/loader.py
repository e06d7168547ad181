"""The on-device loader of tensor datasets: the whole split as one ``uint8`` tensor on the device, shuffled and
augmented batch-wise there (no worker processes, no per-image Python)."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch

from spikeforge.data.augment import check_augment, crop_flip, draw_augment
from spikeforge.data.common import check_int, derive_seed
from spikeforge.errors import ConfigError, DataError

__all__ = ["TensorLoader"]


def _check_tensors(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ConfigError(
            f"TensorLoader needs images as a uint8 tensor [N, C, H, W], got "
            f"{images.dtype} of shape {list(images.shape)}"
        )
    if labels.dim() != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
        raise ConfigError(
            f"TensorLoader needs integer labels of shape [{images.shape[0]}], got "
            f"{labels.dtype} of shape {list(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise DataError("TensorLoader got an empty dataset (0 images): check the data source")


class TensorLoader:
    """Iterate over an in-memory image set held as one ``uint8`` tensor on ``device``.

    Yields ``(x, y)``: ``x`` float32 ``[B, C, H, W]`` in ``[0, 1]``, ``y`` int64 ``[B]``, both on
    ``device``. ``augment`` (``None`` or ``{"crop_padding": p, "flip": bool}``) is applied per
    batch on the device: random crop from the zero-padded image and random horizontal flip.

    Randomness comes from private generators seeded with a function of ``(seed, epoch)`` (and the
    rank, for augmentation), so an epoch is reproducible regardless of history. Each iteration
    uses the current epoch and then advances it by one; call :meth:`set_epoch` before iterating
    to pin it (e.g. when resuming). With ``world_size > 1`` every rank sees a disjoint stride of
    the same permutation, padded by repeating samples (or trimmed with ``drop_last``) so that
    all ranks get the same number of samples and batches.
    """

    def __init__(
        self,
        images_uint8: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        augment: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        images = torch.as_tensor(images_uint8)
        labels = torch.as_tensor(labels)
        self._check(images, labels)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.world_size = check_int("world_size", world_size, 1)
        self.rank = check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ConfigError(f"rank must be in [0, {self.world_size - 1}], got {rank}")
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._set_augment(augment)
        self.device = torch.device(device)
        self.images = images.to(self.device).contiguous()
        self.labels = labels.to(device=self.device, dtype=torch.int64)
        self.dataset_size = int(images.shape[0])
        self.samples_per_rank = self._samples_per_rank()
        self.epoch = 0

    def _check(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Refuse anything but ``uint8 [N, C, H, W]`` images with ``N`` integer labels (a subclass checks its own)."""
        _check_tensors(images, labels)

    def _set_augment(self, augment: Mapping[str, Any] | None) -> None:
        self.crop_padding, self.flip = check_augment(augment)

    def _samples_per_rank(self) -> int:
        n, ws = self.dataset_size, self.world_size
        per_rank = n // ws if self.drop_last and ws > 1 else -(-n // ws)
        if per_rank == 0 or (self.drop_last and per_rank < self.batch_size):
            raise ConfigError(
                f"batch_size {self.batch_size} with drop_last=True leaves no batch: each of the "
                f"{ws} rank(s) gets {per_rank} of {n} samples; lower batch_size or "
                "set drop_last=False"
            )
        return per_rank

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration reproduces."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return self.samples_per_rank // self.batch_size
        return -(-self.samples_per_rank // self.batch_size)

    def _indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for ``epoch`` (CPU, int64)."""
        n, ws = self.dataset_size, self.world_size
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        total = self.samples_per_rank * ws
        if total > n:
            order = order.repeat(-(-total // n))
        return order[:total][self.rank::ws]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        return self._iterate(epoch)

    def _iterate(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices(epoch)
        m = idx.shape[0]
        draws = self._draw(m, epoch)
        idx = idx.to(self.device)
        stop = m - m % self.batch_size if self.drop_last else m
        for batch, start in enumerate(range(0, stop, self.batch_size)):
            sl = slice(start, min(start + self.batch_size, stop))
            b = idx[sl]
            x = self.images.index_select(0, b)
            yield self._transform(x, draws, sl, epoch, batch), self.labels.index_select(0, b)

    def _draw(self, m: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The epoch's crop offsets and flip flags on the device (None: no crop or flip)."""
        if not (self.crop_padding > 0 or self.flip):
            return None
        offsets, flips = draw_augment(m, self.crop_padding, self.flip, derive_seed(self.seed, epoch, 1, self.rank))
        return offsets.to(self.device), flips.to(self.device)

    def _transform(self, x: torch.Tensor, draws, sl: slice, epoch: int, batch: int) -> torch.Tensor:
        """One ``uint8`` batch -> the float batch yielded (augmented when ``draws`` is given)."""
        if draws is not None:
            x = crop_flip(x, draws[0][sl], draws[1][sl], self.crop_padding)
        return x.float().div_(255.0)
