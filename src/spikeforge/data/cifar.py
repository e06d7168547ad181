"""CIFAR-10 and CIFAR-100, read from the python-version archives without ``pickle.load``.

Krizhevsky (2009), "Learning multiple layers of features from tiny images", tech. report, University of Toronto:
60k 32x32 colour images, 50k training / 10k test, in 10 (CIFAR-10) or 100 (CIFAR-100, ``fine_labels``) classes.
Each batch file is a pickled dict whose ``data`` is a ``uint8 [N, 3072]`` array (the R plane, then G, then B, each
row-major 32x32) and whose labels are a list of ints.

The batches are read with a restricted unpickler that resolves only what a numpy-array-in-a-dict pickle needs, so a
tampered file cannot run code. Accepted layouts: ``DIR/cifar-10-batches-py/`` (``DIR/cifar-100-python/``) or the
archive ``DIR/cifar-10-python.tar.gz`` (checked against its published MD5, then extracted); missing data is
downloaded with torchvision.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from spikeforge.data.cache import cached_split
from spikeforge.data.paths import (
    HOW_TO_PROVIDE,
    download_root,
    is_writable_dir,
    missing_message,
    resolve_cache_dir,
    search_roots,
    verify_md5,
)
from spikeforge.data.registry import DATASETS, DatasetInfo, canonical_name, register_dataset
from spikeforge.errors import DataError

__all__ = ["load_cifar_split", "read_cifar"]

# name -> (folder, torchvision class name, train files, test files, label key)
_CIFAR_SETS = {
    "cifar10": ("cifar-10-batches-py", "CIFAR10", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", "CIFAR100", ["train"], ["test"], "fine_labels"),
}

_REPLACE = "replace the file with the official download"


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _latin1_encode(obj: Any, encoding: str = "latin1") -> bytes:
    """Safe stand-in for ``_codecs.encode`` (how Python 3 pickles bytes at protocol 2)."""
    if not isinstance(obj, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise DataError("refusing a pickle that calls _codecs.encode with unexpected arguments")
    return obj.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a numpy-array-in-a-dict pickle needs."""

    def __init__(self, file, *, source: str):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise DataError(
            f"refusing to load {self._source}: it references {module}.{name}, which a CIFAR "
            "batch file never contains, so the file is not the original (possibly malicious). "
            "Replace it with the official download."
        )

    def persistent_load(self, pid):  # pragma: no cover - never in CIFAR files
        raise DataError(f"refusing to load {self._source}: unexpected persistent id in pickle")


def _safe_unpickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"could not read {path} ({exc}): check that the file is readable")
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source=str(path)).load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"{path} is not a valid CIFAR batch file ({type(exc).__name__}: {exc}): it is "
            "corrupt or truncated; replace it with the official download"
        )


def _get(d: Mapping, key: str, path: Path):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(
        f"{path} has no {key!r} entry (keys: {sorted(map(str, d.keys()))}): it is not a CIFAR "
        "batch file in the python format; replace it with the official download"
    )


def _check_data(data: Any, path: Path) -> np.ndarray:
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = (f"{data.dtype} array of shape {list(data.shape)}"
                if isinstance(data, np.ndarray) else type(data).__name__)
        raise DataError(f"{path}: 'data' is a {desc}, expected a uint8 array with 3072 bytes per row: {_REPLACE}")
    return data


def _check_labels(labels: Any, n: int, label_key: str, num_classes: int, name: str, path: Path) -> np.ndarray:
    try:
        lab = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        lab = np.zeros(0)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise DataError(f"{path}: {n} images but the {label_key!r} entry does not hold {n} integer labels: {_REPLACE}")
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise DataError(
            f"{path}: labels must lie in [0, {num_classes - 1}] for {name}, found "
            f"{int(lab.min())}..{int(lab.max())}: {_REPLACE}"
        )
    return lab


def _read_batch(path: Path, name: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as ``(data uint8 [N, 3072], labels int64 [N])``, every entry checked."""
    _, _, train_files, test_files, label_key = _CIFAR_SETS[name]
    if not path.is_file():
        raise DataError(
            f"{path} is missing: the {name} folder {folder} must hold "
            f"{', '.join(train_files + test_files)}. {HOW_TO_PROVIDE}."
        )
    obj = _safe_unpickle(path)
    if not isinstance(obj, dict):
        raise DataError(
            f"{path} holds a {type(obj).__name__}, not a dict: it is not a CIFAR batch file; "
            "replace it with the official download"
        )
    data = _check_data(_get(obj, "data", path), path)
    labels = _check_labels(_get(obj, label_key, path), data.shape[0], label_key, DATASETS[name].num_classes, name,
                           path)
    return data, labels


def read_cifar(folder: str | os.PathLike[str], name: str, train: bool = True):
    """Read CIFAR python-format batch files from ``folder`` (e.g. ``.../cifar-10-batches-py``).

    Uses a restricted unpickler (only numpy array reconstruction is allowed). Returns
    ``(images uint8 [N, 3, 32, 32], labels int64 [N])``; any malformed file is a
    :class:`DataError`."""
    name = canonical_name(name, allowed=tuple(_CIFAR_SETS), what="CIFAR dataset name")
    _, _, train_files, test_files, _ = _CIFAR_SETS[name]
    folder = Path(folder)
    xs, ys = [], []
    for fname in train_files if train else test_files:
        data, lab = _read_batch(folder / fname, name, folder)
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(lab)
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate(xs)))
    y = torch.from_numpy(np.concatenate(ys))
    return x, y


def _extracted(roots: list[Path], base: str, archive: str, md5: str, needed: list[str]) -> Path | None:
    """The folder of an already extracted copy, or of a downloaded archive extracted now; None if neither."""
    from torchvision.datasets import utils as tvu

    for folder in (r / base for r in roots):
        if all((folder / f).is_file() for f in needed):
            return folder
    for root in roots:  # an archive that was downloaded but not extracted yet
        tar = root / archive
        if tar.is_file():
            verify_md5(tar, md5)
            dest = root if is_writable_dir(root) else resolve_cache_dir() / "data"
            try:
                tvu.extract_archive(str(tar), str(dest))
            except Exception as exc:
                raise DataError(
                    f"could not extract {tar} into {dest} ({type(exc).__name__}: {exc}): "
                    "make the directory writable or extract the archive there yourself"
                )
            if all((dest / base / f).is_file() for f in needed):
                return dest / base
    return None


def _cifar_folder(name: str, data_dir: Path, train: bool, download: bool) -> Path:
    """The folder holding the batch files of a split: found, extracted from the archive or downloaded."""
    base, tv_name, train_files, test_files, _ = _CIFAR_SETS[name]
    from torchvision import datasets as tvd
    from torchvision.datasets import utils as tvu

    cls = getattr(tvd, tv_name)
    url, archive, md5 = cls.url, cls.filename, cls.tgz_md5
    needed = train_files if train else test_files
    roots = search_roots(data_dir)
    found = _extracted(roots, base, archive, md5, needed)
    if found is not None:
        return found
    searched = [r / base for r in roots]
    expected = [f"{base}/{f}" for f in needed]
    layout = f"DIR/{base}/<files> or DIR/{archive}"
    title = f"{name} {'training' if train else 'test'} files"
    if not download:
        raise DataError(missing_message(title, searched, expected, layout, "; or allow downloading (download=True)"))
    root = download_root(data_dir)
    try:
        tvu.download_and_extract_archive(url, download_root=str(root), filename=archive, md5=md5)
    except Exception as exc:
        raise DataError(missing_message(
            title, searched, expected, layout,
            f"; downloading {url} into {root} also failed ({type(exc).__name__}: {exc})"))
    if not all((root / base / f).is_file() for f in needed):
        raise DataError(missing_message(
            title, searched, expected, layout, f"; the download into {root} finished but the files are still missing"))
    return root / base


def load_cifar_split(name: str, data_dir: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split of CIFAR-10/100 as ``(images uint8 [N, 3, 32, 32], labels int64 [N])``, cached."""
    info = DATASETS[name]
    folder = _cifar_folder(name, data_dir, train, download)
    _, _, train_files, test_files, _ = _CIFAR_SETS[name]
    files = [folder / f for f in (train_files if train else test_files)]
    return cached_split(info, train, files, lambda: read_cifar(folder, name, train))


def _cifar10(root: Path, train: bool, download: bool):
    return load_cifar_split("cifar10", root, train, download)


def _cifar100(root: Path, train: bool, download: bool):
    return load_cifar_split("cifar100", root, train, download)


register_dataset(DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "tensor",
                             augment_default=True, crop_padding=4, flip=True, aliases=("cifar-10",), load=_cifar10))
register_dataset(DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "tensor",
                             augment_default=True, crop_padding=4, flip=True, aliases=("cifar-100",), load=_cifar100))
