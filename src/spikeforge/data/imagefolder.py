"""``imagefolder``: ``root/train`` and ``root/val`` with one sub-folder of images per class (the ImageNet layout of
Deng et al. 2009, "ImageNet: a large-scale hierarchical image database", CVPR), served by a torch ``DataLoader``.

Training images get RandomResizedCrop + RandomHorizontalFlip (Szegedy et al. 2015, "Going deeper with
convolutions", CVPR), evaluation images Resize(size * 8/7) + CenterCrop(size); all are float in ``[0, 1]``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from spikeforge.data.common import check_int, derive_seed
from spikeforge.data.paths import HOW_TO_PROVIDE, abspath, resolve_data_dir
from spikeforge.data.registry import DatasetInfo, register_dataset
from spikeforge.errors import DataError

__all__ = ["FolderLoader", "image_folder_loader"]


def folder_transform(train: bool, image_size: int):
    """The torchvision transform of a training (random crop + flip) or evaluation (resize + centre crop) image."""
    from torchvision import transforms as T

    if train:
        return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor()])
    return T.Compose([T.Resize(int(image_size * 8 / 7)), T.CenterCrop(image_size), T.ToTensor()])


def subset_indices(n: int, subset: int | None) -> list[int] | None:
    """A fixed pseudo-random subset (folders are class-sorted, so 'the first N' would be biased)."""
    if subset is None or subset >= n:
        return None
    g = torch.Generator().manual_seed(derive_seed(0, n, subset))
    return sorted(torch.randperm(n, generator=g)[:subset].tolist())


def image_folder(root: Path, split: str, transform):
    """torchvision's ``ImageFolder`` over ``root/split``; a missing or empty folder is a :class:`DataError`."""
    from torchvision.datasets import ImageFolder

    folder = root / split
    if not folder.is_dir():
        raise DataError(
            f"image folder {folder} does not exist: the imagefolder dataset needs {root}/train and "
            f"{root}/val, each with one sub-folder of images per class. {HOW_TO_PROVIDE} "
            "(that directory must contain train/ and val/)."
        )
    try:
        return ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(
            f"no usable images in {folder} ({exc}): it needs one sub-folder per class holding "
            ".jpg/.png/... images"
        )


class FolderLoader(torch.utils.data.DataLoader):
    """A torch ``DataLoader`` over an ``ImageFolder`` with ``set_epoch`` like :class:`TensorLoader`."""

    def __init__(self, dataset, *, classes: list[str], seed: int, **kwargs):
        super().__init__(dataset, **kwargs)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.seed = int(seed)

    @property
    def dataset_size(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffling (and worker seeds) as a function of ``(seed, epoch)``."""
        if isinstance(self.sampler, torch.utils.data.DistributedSampler):
            self.sampler.set_epoch(int(epoch))
        if self.generator is not None:
            self.generator.manual_seed(derive_seed(self.seed, int(epoch), 2))


def image_folder_loader(
    root: str | os.PathLike[str],
    *,
    train: bool,
    image_size: int,
    batch_size: int,
    workers: int = 2,
    seed: int = 0,
    subset: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> FolderLoader:
    """A ``DataLoader`` over ``root/train`` (``train=True``) or ``root/val``.

    Train: RandomResizedCrop + RandomHorizontalFlip, shuffled; test: Resize(size*8/7) +
    CenterCrop. Images are float in ``[0, 1]`` (no normalisation). ``subset`` keeps a fixed
    pseudo-random subset of that many images. ``loader.num_classes`` / ``loader.classes`` give
    the classes found. With ``world_size > 1`` a ``DistributedSampler`` shards the data."""
    image_size = check_int("image_size", image_size, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    workers = check_int("workers", workers, 0)
    root = abspath(root)
    dataset = image_folder(root, "train" if train else "val", folder_transform(train, image_size))
    classes = dataset.classes
    keep = subset_indices(len(dataset), subset)
    if keep is not None:
        dataset = torch.utils.data.Subset(dataset, keep)
    generator = torch.Generator().manual_seed(derive_seed(seed, 0, 2))
    sampler = None
    if world_size > 1:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed)
    elif train:
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    return FolderLoader(dataset, classes=classes, seed=seed, batch_size=batch_size, sampler=sampler,
                        num_workers=workers, generator=generator, pin_memory=torch.cuda.is_available(),
                        drop_last=False)


def build_folder_loaders(cfg: Any, info: DatasetInfo, use_aug: bool, seed: int, rank: int, world_size: int):
    """The ``build_loaders`` hook of ``imagefolder``: ``(train, test, info, calib_dataset)`` for data config
    ``cfg``; ``info`` gets the ``num_classes`` found and the image size used (``cfg.image_size`` or 224). The
    calibration set is the (subset of the) training folder with the evaluation transform."""
    size = cfg.image_size or info.image_size
    root = resolve_data_dir(cfg.data_dir)
    common = dict(image_size=size, workers=cfg.workers, seed=seed, rank=rank, world_size=world_size)
    train = image_folder_loader(root, train=True, batch_size=cfg.batch_size, subset=cfg.train_subset, **common)
    test = image_folder_loader(root, train=False, batch_size=cfg.test_batch_size or cfg.batch_size,
                               subset=cfg.test_subset, **common)
    if not use_aug:  # plain eval-style transform for training too
        base = train.dataset.dataset if isinstance(train.dataset, torch.utils.data.Subset) else train.dataset
        base.transform = folder_transform(False, size)
    if test.classes != train.classes:
        raise DataError(
            f"{root}/train has classes {train.classes[:5]}... but {root}/val has "
            f"{test.classes[:5]}...: both must contain the same class sub-folders")
    calib = image_folder(root, "train", folder_transform(False, size))
    keep = subset_indices(len(calib), cfg.train_subset)
    if keep is not None:
        calib = torch.utils.data.Subset(calib, keep)
    info = dataclasses.replace(info, num_classes=train.num_classes, image_size=size)
    return train, test, info, calib


register_dataset(DatasetInfo("imagefolder", None, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "folder",
                             augment_default=True, aliases=("image-folder",), build_loaders=build_folder_loaders))
