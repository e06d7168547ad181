"""MNIST and Fashion-MNIST, read from their original IDX files.

MNIST: LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to document recognition",
Proc. IEEE 86(11); 60k/10k 28x28 grey digits, 10 classes. Fashion-MNIST: Xiao, Rasul & Vollgraf (2017),
"Fashion-MNIST: a novel image dataset for benchmarking machine learning algorithms", arXiv:1708.07747; the same
format and sizes, clothing images. The IDX format (a big-endian magic number ``0x000008ND``, then ``N`` big-endian
uint32 dimensions, then the unsigned-byte payload) is the one LeCun et al. published the files in.

Accepted layouts (``.gz`` or decompressed): ``DIR/mnist/<files>``, ``DIR/MNIST/raw/<files>`` (torchvision's), and
likewise ``fashion-mnist`` / ``FashionMNIST``. Missing files are downloaded with torchvision; each ``.gz`` is checked
against its published MD5.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from spikeforge.data.cache import cached_split
from spikeforge.data.paths import download_root, missing_message, search_roots, verify_md5
from spikeforge.data.registry import DATASETS, DatasetInfo, register_dataset
from spikeforge.errors import DataError

__all__ = ["IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "idx_files", "load_idx_split", "read_idx"]

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

# name -> (shared-layout folder, torchvision class name)
_IDX_SETS = {"mnist": ("mnist", "MNIST"), "fashion-mnist": ("fashion-mnist", "FashionMNIST")}

_FIX = "replace it with an intact copy (or delete it so it can be downloaded again)"


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except PermissionError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror}); make it readable (or {_FIX})") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"could not read {path} ({exc}); the file is corrupt or truncated: {_FIX}") from None


def read_idx(path: str | os.PathLike[str], *, expected_magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (``.gz`` or plain) with numpy and return a ``uint8`` array.

    Validates the magic number (``0x00000803`` images, ``0x00000801`` labels, or
    ``expected_magic``) and that the payload length matches the header; raises
    :class:`DataError` naming the file otherwise."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes): {_FIX}")
    magic = int.from_bytes(raw[0:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"{path} has IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x}: "
            f"it is not the expected file; {_FIX}"
        )
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise DataError(f"{path} is not an unsigned-byte IDX file (magic 0x{magic:08x}): {_FIX}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} has a truncated IDX header: {_FIX}")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} data bytes but its header (shape {shape}) "
            f"announces {expected - header}: the file is corrupt or truncated; {_FIX}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _idx_md5s(name: str) -> dict[str, str]:
    """MD5 of each .gz file, as listed by torchvision's dataset class ``resources``."""
    from torchvision import datasets as tvd

    cls = getattr(tvd, _IDX_SETS[name][1])
    return {fname: md5 for fname, md5 in cls.resources}


def _find_idx_files(name: str, data_dir: Path, split: str) -> tuple[list[Path], list[Path]]:
    """Return ``([images, labels], searched_dirs)``; the first list is empty if not found."""
    shared, tv_name = _IDX_SETS[name]
    stems = [f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"]
    candidates = [data_dir / shared, data_dir / tv_name / "raw"]
    for root in search_roots(data_dir)[1:]:
        candidates.append(root / tv_name / "raw")
    for folder in candidates:
        found = []
        for stem in stems:
            gz, plain = folder / (stem + ".gz"), folder / stem
            if gz.is_file():
                found.append(gz)
            elif plain.is_file():
                found.append(plain)
        if len(found) == len(stems):
            return found, candidates
    return [], candidates


def _locate(name: str, data_dir: Path, train: bool, download: bool) -> list[Path]:
    """The ``[images, labels]`` files of a split, downloaded with torchvision if missing and allowed."""
    split = "train" if train else "t10k"
    shared, tv_name = _IDX_SETS[name]
    files, searched = _find_idx_files(name, data_dir, split)
    if files:
        return files
    expected = [f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz"]
    layout = f"DIR/{shared}/<files> or DIR/{tv_name}/raw/<files>"
    title = f"{name} {'training' if train else 'test'} files"
    if not download:
        raise DataError(missing_message(title, searched, expected, layout, "; or allow downloading (download=True)"))
    root = download_root(data_dir)
    try:
        from torchvision import datasets as tvd

        getattr(tvd, tv_name)(str(root), train=train, download=True)
    except Exception as exc:  # no network, blocked mirror, disk full, ...
        raise DataError(missing_message(
            title, searched, expected, layout,
            f"; downloading into {root / tv_name / 'raw'} also failed ({type(exc).__name__}: {exc})"))
    files, searched = _find_idx_files(name, data_dir, split)
    if not files:
        raise DataError(missing_message(
            title, searched, expected, layout, f"; the download into {root} finished but the files are still missing"))
    return files


def idx_files(name: str, data_dir: Path, train: bool, download: bool) -> list[Path]:
    """The ``[images, labels]`` IDX files of a split of ``mnist`` or ``fashion-mnist`` (downloaded if missing and
    allowed; one :class:`DataError` line otherwise)."""
    return _locate(name, data_dir, train, download)


def _parse(info: DatasetInfo, files: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Verify the checksums of ``[images, labels]``, read them and check that they belong together."""
    md5s = _idx_md5s(info.name)
    for f in files:
        if f.name in md5s:
            verify_md5(f, md5s[f.name])
    images = read_idx(files[0], expected_magic=IDX_IMAGES_MAGIC)
    labels = read_idx(files[1], expected_magic=IDX_LABELS_MAGIC)
    size = info.image_size
    if images.ndim != 3 or images.shape[1:] != (size, size):
        raise DataError(
            f"{files[0]} holds images of shape {list(images.shape[1:])}, expected "
            f"[{size}, {size}] for {info.name}: replace it with the original file"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{files[0]} holds {images.shape[0]} images but {files[1]} holds "
            f"{labels.shape[0] if labels.ndim == 1 else labels.shape} labels: the two files do "
            "not belong together; replace them with the original pair"
        )
    if labels.size and int(labels.max()) >= info.num_classes:
        raise DataError(
            f"{files[1]} contains label {int(labels.max())}, but {info.name} has "
            f"{info.num_classes} classes: replace it with the original file"
        )
    return torch.from_numpy(images).unsqueeze(1).contiguous(), torch.from_numpy(labels.astype(np.int64))


def load_idx_split(name: str, data_dir: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split of an IDX dataset as ``(images uint8 [N, 1, 28, 28], labels int64 [N])``, cached."""
    info = DATASETS[name]
    files = _locate(name, data_dir, train, download)
    return cached_split(info, train, files, lambda: _parse(info, files))


def _mnist(root: Path, train: bool, download: bool):
    return load_idx_split("mnist", root, train, download)


def _fashion_mnist(root: Path, train: bool, download: bool):
    return load_idx_split("fashion-mnist", root, train, download)


register_dataset(DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), "tensor",
                             augment_default=False, crop_padding=2, flip=False,  # digits must not be mirrored
                             load=_mnist))
register_dataset(DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), "tensor",
                             augment_default=False, crop_padding=2, flip=True, aliases=("fashionmnist", "fmnist"),
                             load=_fashion_mnist))
