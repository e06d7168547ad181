"""Datasets and data loaders.

Two paths:

* **Tensor datasets** (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100): the whole split is read once
  from the original distribution files (checksum-verified, parsed without ``pickle.load``), cached
  as a ``.pt`` file, and served by :class:`TensorLoader`, which keeps the set as one ``uint8``
  tensor on the device and does shuffling and augmentation batched on the device.
* **Image folders** (``imagefolder``): ``root/train`` and ``root/val`` with one sub-folder per class,
  served by a torch ``DataLoader`` (:func:`image_folder_loader`).

All loaders yield images as float32 in ``[0, 1]``; models normalise with :class:`DatasetInfo`'s
``mean``/``std`` themselves.

Where data is looked for: ``--data-dir DIR`` (``data_dir=``) > ``$SPIKEFORGE_DATA`` >
``~/.cache/spikeforge/data`` (:func:`resolve_data_dir`). Parsed tensors are cached under
``$SPIKEFORGE_CACHE`` or ``~/.cache/spikeforge`` (:func:`resolve_cache_dir`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import math
import os
import pickle
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from spikeforge.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "Data",
    "DataConfig",
    "DatasetInfo",
    "TensorLoader",
    "build_data",
    "image_folder_loader",
    "load_tensors",
    "read_cifar",
    "read_idx",
    "resolve_cache_dir",
    "resolve_data_dir",
]

DATA_ENV = "SPIKEFORGE_DATA"
CACHE_ENV = "SPIKEFORGE_CACHE"
_CACHE_FORMAT = 1

_HOW_TO_PROVIDE = (
    f"Point spikeforge at a directory holding the files with --data-dir DIR or the {DATA_ENV} "
    "environment variable"
)


# --------------------------------------------------------------------------------------------
# Dataset descriptions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    ``num_classes`` is ``None`` for ``imagefolder`` until :func:`build_data` discovers it.
    ``mean``/``std`` are per channel, for images scaled to ``[0, 1]``. ``kind`` is ``"tensor"``
    (held in memory, :class:`TensorLoader`) or ``"folder"`` (torch ``DataLoader``).
    """

    name: str
    num_classes: int | None
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), "tensor"),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), "tensor"),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "tensor"
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "tensor"
    ),
    "imagefolder": DatasetInfo(
        "imagefolder", None, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "folder"
    ),
}

_ALIASES = {
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "image-folder": "imagefolder",
}

# Augmentation used when DataConfig.augment is True (or None and the dataset defaults to it).
_AUGMENT_ON: dict[str, dict[str, Any]] = {
    "mnist": {"crop_padding": 2, "flip": False},  # digits must not be mirrored
    "fashion-mnist": {"crop_padding": 2, "flip": True},
    "cifar10": {"crop_padding": 4, "flip": True},
    "cifar100": {"crop_padding": 4, "flip": True},
}
_AUGMENT_DEFAULT = {"mnist": False, "fashion-mnist": False, "cifar10": True, "cifar100": True,
                    "imagefolder": True}


def _canonical_name(name: Any, *, what: str, allowed: tuple[str, ...]) -> str:
    key = str(name).strip().lower().replace("_", "-") if isinstance(name, str) else None
    key = _ALIASES.get(key, key) if key is not None else None
    if key not in allowed:
        raise ConfigError(
            f"{what} must be one of {', '.join(repr(a) for a in allowed)}, got {name!r}"
        )
    return key


# --------------------------------------------------------------------------------------------
# Directories
# --------------------------------------------------------------------------------------------


def _abspath(p: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(p))))


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data root: ``data_dir`` if given, else ``$SPIKEFORGE_DATA``, else
    ``~/.cache/spikeforge/data``. Relative paths are taken relative to the working directory."""
    if data_dir is not None and os.fspath(data_dir) != "":
        return _abspath(data_dir)
    env = os.environ.get(DATA_ENV, "")
    if env:
        return _abspath(env)
    return _abspath("~/.cache/spikeforge/data")


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the writable cache root: ``cache_dir`` if given, else ``$SPIKEFORGE_CACHE``, else
    ``~/.cache/spikeforge``."""
    if cache_dir is not None and os.fspath(cache_dir) != "":
        return _abspath(cache_dir)
    env = os.environ.get(CACHE_ENV, "")
    if env:
        return _abspath(env)
    return _abspath("~/.cache/spikeforge")


def _is_writable_dir(path: Path) -> bool:
    """True if ``path`` exists or can be created, and a file can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def _download_root(data_dir: Path) -> Path:
    """Where a download goes: the data dir if writable, else ``<cache>/data``."""
    return data_dir if _is_writable_dir(data_dir) else resolve_cache_dir() / "data"


def _search_roots(data_dir: Path) -> list[Path]:
    roots = [data_dir]
    fallback = resolve_cache_dir() / "data"
    if fallback != data_dir:
        roots.append(fallback)
    return roots


# --------------------------------------------------------------------------------------------
# Tensor cache
# --------------------------------------------------------------------------------------------


def _fingerprint(files: list[Path]) -> list[list[Any]]:
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f), int(st.st_size), int(st.st_mtime_ns)])
    return out


def _cache_path(name: str, split: str) -> Path:
    return resolve_cache_dir() / "tensors" / f"{name}-{split}.pt"


def _load_cache(path: Path, fingerprint: list[list[Any]], info: DatasetInfo):
    """Return (images, labels) from the cache, or None if absent, stale or corrupt."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != _CACHE_FORMAT:
            return None
        if obj.get("source") != fingerprint:
            return None
        images, labels = obj["images"], obj["labels"]
        size = info.image_size
        if (
            not isinstance(images, torch.Tensor)
            or not isinstance(labels, torch.Tensor)
            or images.dtype != torch.uint8
            or labels.dtype != torch.int64
            or images.dim() != 4
            or tuple(images.shape[1:]) != (info.in_channels, size, size)
            or labels.shape != (images.shape[0],)
        ):
            return None
        return images, labels
    except Exception:  # corrupt / truncated / foreign file: rebuild it
        return None


def _save_cache(path: Path, fingerprint, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Write the cache atomically (temp file + os.replace); a failure only warns."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        with open(tmp, "xb") as fh:  # unique name; default permissions (umask)
            torch.save(
                {"format": _CACHE_FORMAT, "source": fingerprint, "images": images,
                 "labels": labels},
                fh,
            )
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        warnings.warn(
            f"could not write the dataset cache {path} ({exc}); loading will not be cached. "
            f"Set {CACHE_ENV} to a writable directory to enable the cache.",
            stacklevel=3,
        )
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX)
# --------------------------------------------------------------------------------------------

_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801

# name -> (shared-layout folder, torchvision class name)
_IDX_SETS = {"mnist": ("mnist", "MNIST"), "fashion-mnist": ("fashion-mnist", "FashionMNIST")}


def _idx_md5s(name: str) -> dict[str, str]:
    """MD5 of each .gz file, as listed by torchvision's dataset class ``resources``."""
    from torchvision import datasets as tvd

    cls = getattr(tvd, _IDX_SETS[name][1])
    return {fname: md5 for fname, md5 in cls.resources}


def read_idx(path: str | os.PathLike[str], *, expected_magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (``.gz`` or plain) with numpy and return a ``uint8`` array.

    Validates the magic number (``0x00000803`` images, ``0x00000801`` labels, or
    ``expected_magic``) and that the payload length matches the header; raises
    :class:`DataError` naming the file otherwise."""
    path = Path(path)
    fix = "replace it with an intact copy (or delete it so it can be downloaded again)"
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"could not read {path} ({exc}); the file is corrupt or truncated: {fix}")
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes): {fix}")
    magic = int.from_bytes(raw[0:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"{path} has IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x}: "
            f"it is not the expected file; {fix}"
        )
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise DataError(f"{path} is not an unsigned-byte IDX file (magic 0x{magic:08x}): {fix}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} has a truncated IDX header: {fix}")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} data bytes but its header (shape {shape}) "
            f"announces {expected - header}: the file is corrupt or truncated; {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find_idx_files(name: str, data_dir: Path, split: str) -> tuple[list[Path], list[Path]]:
    """Return ``([images, labels], searched_dirs)``; the first list is empty if not found."""
    shared, tv_name = _IDX_SETS[name]
    stems = [f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"]
    candidates = [data_dir / shared, data_dir / tv_name / "raw"]
    for root in _search_roots(data_dir)[1:]:
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


def _verify_md5(path: Path, md5: str) -> None:
    from torchvision.datasets.utils import check_integrity

    if not check_integrity(str(path), md5):
        raise DataError(
            f"checksum mismatch for {path}: its MD5 is not the published {md5}, so the file is "
            "corrupt, truncated or a different version. Replace it with an intact copy "
            "(or delete it so it can be downloaded again)."
        )


def _missing_message(title: str, searched: list[Path], expected: list[str], layout: str,
                     extra: str = "") -> str:
    where = ", ".join(str(p) for p in searched)
    return (
        f"{title} not found. Looked in: {where}. Expected files: {', '.join(expected)}. "
        f"{_HOW_TO_PROVIDE} (layout: {layout}){extra}."
    )


def _load_idx(name: str, data_dir: Path, train: bool, download: bool):
    info = DATASETS[name]
    split = "train" if train else "t10k"
    shared, tv_name = _IDX_SETS[name]
    files, searched = _find_idx_files(name, data_dir, split)
    expected = [f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz"]
    layout = f"DIR/{shared}/<files> or DIR/{tv_name}/raw/<files>"
    title = f"{name} {'training' if train else 'test'} files"
    if not files:
        if not download:
            raise DataError(_missing_message(
                title, searched, expected, layout, "; or allow downloading (download=True)"))
        root = _download_root(data_dir)
        try:
            from torchvision import datasets as tvd

            getattr(tvd, tv_name)(str(root), train=train, download=True)
        except Exception as exc:  # no network, blocked mirror, disk full, ...
            raise DataError(_missing_message(
                title, searched, expected, layout,
                f"; downloading into {root / tv_name / 'raw'} also failed "
                f"({type(exc).__name__}: {exc})"))
        files, searched = _find_idx_files(name, data_dir, split)
        if not files:
            raise DataError(_missing_message(
                title, searched, expected, layout,
                f"; the download into {root} finished but the files are still missing"))

    fingerprint = _fingerprint(files)
    cache = _cache_path(name, "train" if train else "test")
    hit = _load_cache(cache, fingerprint, info)
    if hit is not None:
        return hit

    md5s = _idx_md5s(name)
    for f in files:
        if f.name in md5s:
            _verify_md5(f, md5s[f.name])
    images = read_idx(files[0], expected_magic=_IDX_IMAGES_MAGIC)
    labels = read_idx(files[1], expected_magic=_IDX_LABELS_MAGIC)
    size = info.image_size
    if images.ndim != 3 or images.shape[1:] != (size, size):
        raise DataError(
            f"{files[0]} holds images of shape {list(images.shape[1:])}, expected "
            f"[{size}, {size}] for {name}: replace it with the original file"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{files[0]} holds {images.shape[0]} images but {files[1]} holds "
            f"{labels.shape[0] if labels.ndim == 1 else labels.shape} labels: the two files do "
            "not belong together; replace them with the original pair"
        )
    if labels.size and int(labels.max()) >= info.num_classes:
        raise DataError(
            f"{files[1]} contains label {int(labels.max())}, but {name} has "
            f"{info.num_classes} classes: replace it with the original file"
        )
    x = torch.from_numpy(images).unsqueeze(1).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    _save_cache(cache, fingerprint, x, y)
    return x, y


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickles, read with a restricted unpickler)
# --------------------------------------------------------------------------------------------


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
        if name == "_reconstruct" and module in ("numpy.core.multiarray",
                                                 "numpy._core.multiarray"):
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


# name -> (folder, archive, url attribute source, train files, test files, label key)
_CIFAR_SETS = {
    "cifar10": ("cifar-10-batches-py", "CIFAR10",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", "CIFAR100", ["train"], ["test"], "fine_labels"),
}


def read_cifar(folder: str | os.PathLike[str], name: str, train: bool = True):
    """Read CIFAR python-format batch files from ``folder`` (e.g. ``.../cifar-10-batches-py``).

    Uses a restricted unpickler (only numpy array reconstruction is allowed). Returns
    ``(images uint8 [N, 3, 32, 32], labels int64 [N])``; any malformed file is a
    :class:`DataError`."""
    name = _canonical_name(name, what="CIFAR dataset name", allowed=tuple(_CIFAR_SETS))
    _, _, train_files, test_files, label_key = _CIFAR_SETS[name]
    num_classes = DATASETS[name].num_classes
    folder = Path(folder)
    xs, ys = [], []
    for fname in train_files if train else test_files:
        path = folder / fname
        if not path.is_file():
            raise DataError(
                f"{path} is missing: the {name} folder {folder} must hold "
                f"{', '.join(train_files + test_files)}. {_HOW_TO_PROVIDE}."
            )
        obj = _safe_unpickle(path)
        if not isinstance(obj, dict):
            raise DataError(
                f"{path} holds a {type(obj).__name__}, not a dict: it is not a CIFAR batch file; "
                "replace it with the official download"
            )
        data = _get(obj, "data", path)
        labels = _get(obj, label_key, path)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
                or data.shape[1] != 3072:
            desc = (f"{data.dtype} array of shape {list(data.shape)}"
                    if isinstance(data, np.ndarray) else type(data).__name__)
            raise DataError(
                f"{path}: 'data' is a {desc}, expected a uint8 array with 3072 bytes per row: "
                "replace the file with the official download"
            )
        try:
            lab = np.asarray(labels, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            lab = np.zeros(0)
        if lab.ndim != 1 or lab.shape[0] != data.shape[0]:
            raise DataError(
                f"{path}: {data.shape[0]} images but the {label_key!r} entry does not hold "
                f"{data.shape[0]} integer labels: replace the file with the official download"
            )
        if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
            raise DataError(
                f"{path}: labels must lie in [0, {num_classes - 1}] for {name}, found "
                f"{int(lab.min())}..{int(lab.max())}: replace the file with the official download"
            )
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(lab)
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate(xs)))
    y = torch.from_numpy(np.concatenate(ys))
    return x, y


def _cifar_folder(name: str, data_dir: Path, train: bool, download: bool) -> Path:
    base, tv_name, train_files, test_files, _ = _CIFAR_SETS[name]
    from torchvision import datasets as tvd
    from torchvision.datasets import utils as tvu

    cls = getattr(tvd, tv_name)
    url, archive, md5 = cls.url, cls.filename, cls.tgz_md5
    needed = train_files if train else test_files
    roots = _search_roots(data_dir)
    searched = [r / base for r in roots]
    for folder in searched:
        if all((folder / f).is_file() for f in needed):
            return folder
    # An archive that was downloaded but not extracted yet.
    for root in roots:
        tar = root / archive
        if tar.is_file():
            _verify_md5(tar, md5)
            dest = root if _is_writable_dir(root) else resolve_cache_dir() / "data"
            try:
                tvu.extract_archive(str(tar), str(dest))
            except Exception as exc:
                raise DataError(
                    f"could not extract {tar} into {dest} ({type(exc).__name__}: {exc}): "
                    "make the directory writable or extract the archive there yourself"
                )
            if all((dest / base / f).is_file() for f in needed):
                return dest / base
    expected = [f"{base}/{f}" for f in needed]
    layout = f"DIR/{base}/<files> or DIR/{archive}"
    title = f"{name} {'training' if train else 'test'} files"
    if not download:
        raise DataError(_missing_message(
            title, searched, expected, layout, "; or allow downloading (download=True)"))
    root = _download_root(data_dir)
    try:
        tvu.download_and_extract_archive(url, download_root=str(root), filename=archive, md5=md5)
    except Exception as exc:
        raise DataError(_missing_message(
            title, searched, expected, layout,
            f"; downloading {url} into {root} also failed ({type(exc).__name__}: {exc})"))
    if not all((root / base / f).is_file() for f in needed):
        raise DataError(_missing_message(
            title, searched, expected, layout,
            f"; the download into {root} finished but the files are still missing"))
    return root / base


def _load_cifar(name: str, data_dir: Path, train: bool, download: bool):
    info = DATASETS[name]
    folder = _cifar_folder(name, data_dir, train, download)
    _, _, train_files, test_files, _ = _CIFAR_SETS[name]
    files = [folder / f for f in (train_files if train else test_files)]
    fingerprint = _fingerprint(files)
    cache = _cache_path(name, "train" if train else "test")
    hit = _load_cache(cache, fingerprint, info)
    if hit is not None:
        return hit
    x, y = read_cifar(folder, name, train)
    _save_cache(cache, fingerprint, x, y)
    return x, y


def load_tensors(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    train: bool = True,
    download: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a whole split as ``(images uint8 [N, C, H, W], labels int64 [N])``.

    ``name`` is ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` or ``"cifar100"``. Files are
    looked for under :func:`resolve_data_dir` ``(data_dir)`` (see the module docstring for the
    accepted layouts) and downloaded with torchvision if missing and ``download`` is true.
    Checksums and formats are verified; the parsed tensors are cached under
    :func:`resolve_cache_dir`. Raises :class:`DataError` if the data cannot be provided."""
    tensor_sets = tuple(k for k, v in DATASETS.items() if v.kind == "tensor")
    name = _canonical_name(name, what="dataset for load_tensors", allowed=tensor_sets)
    root = resolve_data_dir(data_dir)
    if name in _IDX_SETS:
        return _load_idx(name, root, bool(train), bool(download))
    return _load_cifar(name, root, bool(train), bool(download))


# --------------------------------------------------------------------------------------------
# TensorLoader: whole dataset on the device, batched augmentation
# --------------------------------------------------------------------------------------------


def _derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a fixed function of the integers ``parts``."""
    digest = hashlib.sha256(":".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _check_augment(augment: Mapping[str, Any] | None) -> tuple[int, bool]:
    if augment is None:
        return 0, False
    if not isinstance(augment, Mapping):
        raise ConfigError(
            f"augment must be None or a dict like {{'crop_padding': 4, 'flip': True}}, "
            f"got {augment!r}"
        )
    unknown = set(augment) - {"crop_padding", "flip"}
    if unknown:
        raise ConfigError(
            f"unknown augment key(s) {sorted(unknown)}; allowed keys: 'crop_padding', 'flip'"
        )
    pad = augment.get("crop_padding", 0) or 0
    flip = augment.get("flip", False)
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ConfigError(f"augment['crop_padding'] must be an integer >= 0, got {pad!r}")
    if not isinstance(flip, bool):
        raise ConfigError(f"augment['flip'] must be true or false, got {flip!r}")
    return pad, flip


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


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
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ConfigError(f"rank must be in [0, {self.world_size - 1}], got {rank}")
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.crop_padding, self.flip = _check_augment(augment)
        self.device = torch.device(device)
        self.images = images.to(self.device).contiguous()
        self.labels = labels.to(device=self.device, dtype=torch.int64)
        self.dataset_size = int(images.shape[0])
        n, ws = self.dataset_size, self.world_size
        if self.drop_last and ws > 1:
            self.samples_per_rank = n // ws
        else:
            self.samples_per_rank = -(-n // ws)
        if self.samples_per_rank == 0 or (self.drop_last and self.samples_per_rank < self.batch_size):
            raise ConfigError(
                f"batch_size {self.batch_size} with drop_last=True leaves no batch: each of the "
                f"{ws} rank(s) gets {self.samples_per_rank} of {n} samples; lower batch_size or "
                "set drop_last=False"
            )
        self.epoch = 0

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
            g = torch.Generator().manual_seed(_derive_seed(self.seed, epoch, 0))
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
        augment = self.crop_padding > 0 or self.flip
        if augment:
            g = torch.Generator().manual_seed(_derive_seed(self.seed, epoch, 1, self.rank))
            p = self.crop_padding
            offsets = torch.randint(0, 2 * p + 1, (m, 2), generator=g)
            flips = torch.rand(m, generator=g) < 0.5 if self.flip else torch.zeros(m, dtype=torch.bool)
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        idx = idx.to(self.device)
        stop = m - m % self.batch_size if self.drop_last else m
        for start in range(0, stop, self.batch_size):
            sl = slice(start, min(start + self.batch_size, stop))
            b = idx[sl]
            x = self.images.index_select(0, b)
            if augment:
                x = self._augment(x, offsets[sl], flips[sl])
            yield x.float().div_(255.0), self.labels.index_select(0, b)

    def _augment(self, x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Crop + flip a uint8 batch with one vectorized gather (no per-image Python)."""
        bsz, c, h, w = x.shape
        p = self.crop_padding
        if p:
            x = F.pad(x, (p, p, p, p))
        dev = x.device
        ar_h = torch.arange(h, device=dev)
        ar_w = torch.arange(w, device=dev)
        rows = offsets[:, 0:1] + ar_h  # [B, H]
        cols = torch.where(flips[:, None], offsets[:, 1:2] + (w - 1 - ar_w), offsets[:, 1:2] + ar_w)
        bi = torch.arange(bsz, device=dev)[:, None, None, None]
        ci = torch.arange(c, device=dev)[None, :, None, None]
        return x[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


# --------------------------------------------------------------------------------------------
# ImageFolder path
# --------------------------------------------------------------------------------------------


def _folder_transform(train: bool, image_size: int):
    from torchvision import transforms as T

    if train:
        return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor()])
    return T.Compose([T.Resize(int(image_size * 8 / 7)), T.CenterCrop(image_size), T.ToTensor()])


def _subset_indices(n: int, subset: int | None) -> list[int] | None:
    """A fixed pseudo-random subset (folders are class-sorted, so 'the first N' would be biased)."""
    if subset is None or subset >= n:
        return None
    g = torch.Generator().manual_seed(_derive_seed(0, n, subset))
    return sorted(torch.randperm(n, generator=g)[:subset].tolist())


def _image_folder(root: Path, split: str, transform):
    from torchvision.datasets import ImageFolder

    folder = root / split
    if not folder.is_dir():
        raise DataError(
            f"image folder {folder} does not exist: the imagefolder dataset needs {root}/train and "
            f"{root}/val, each with one sub-folder of images per class. {_HOW_TO_PROVIDE} "
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
            self.generator.manual_seed(_derive_seed(self.seed, int(epoch), 2))


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
    image_size = _check_int("image_size", image_size, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    workers = _check_int("workers", workers, 0)
    root = _abspath(root)
    dataset = _image_folder(root, "train" if train else "val", _folder_transform(train, image_size))
    classes = dataset.classes
    keep = _subset_indices(len(dataset), subset)
    if keep is not None:
        dataset = torch.utils.data.Subset(dataset, keep)
    generator = torch.Generator().manual_seed(_derive_seed(seed, 0, 2))
    sampler = None
    if world_size > 1:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed)
    elif train:
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    return FolderLoader(
        dataset,
        classes=classes,
        seed=seed,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )


# --------------------------------------------------------------------------------------------
# Config and one-call construction
# --------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Data options (recipe section ``data``). ``augment=None`` means the dataset's default
    (CIFAR: random crop with padding 4 + flip; MNIST/Fashion: none); ``train_subset`` /
    ``test_subset`` keep only the first N samples; ``image_size`` resizes tensor datasets
    (and defaults to 224 for ``imagefolder``)."""

    dataset: str = "mnist"
    data_dir: str | None = None
    batch_size: int = 128
    test_batch_size: int = 1000
    augment: bool | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    image_size: int | None = None
    workers: int = 2
    download: bool = True
    calib_batch_size: int = 512

    def __post_init__(self) -> None:
        self.dataset = _canonical_name(self.dataset, what="DataConfig.dataset",
                                       allowed=tuple(DATASETS))
        if self.data_dir is not None:
            if not isinstance(self.data_dir, (str, os.PathLike)):
                raise ConfigError(
                    f"DataConfig.data_dir must be a path or None, got {self.data_dir!r}")
            self.data_dir = os.fspath(self.data_dir)
        for name in ("batch_size", "test_batch_size", "calib_batch_size"):
            _check_int(f"DataConfig.{name}", getattr(self, name), 1)
        for name in ("train_subset", "test_subset", "image_size"):
            if getattr(self, name) is not None:
                _check_int(f"DataConfig.{name}", getattr(self, name), 1)
        _check_int("DataConfig.workers", self.workers, 0)
        if self.augment is not None and not isinstance(self.augment, bool):
            raise ConfigError(
                f"DataConfig.augment must be true, false or null (dataset default), "
                f"got {self.augment!r}")
        if not isinstance(self.download, bool):
            raise ConfigError(f"DataConfig.download must be true or false, got {self.download!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "DataConfig":
        """Build from a mapping (e.g. a recipe section); unknown keys are a :class:`ConfigError`."""
        d = dict(d or {})
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ConfigError(
                f"unknown data option(s) {unknown}; allowed: {', '.join(allowed)}")
        return cls(**d)


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
    _calib_dataset: Any = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return int(self.info.num_classes)

    def calibration_batch(self, n: int | None = None) -> torch.Tensor:
        """The first ``n`` (default ``config.calib_batch_size``) images of a fixed seeded random
        ordering of the training set, un-augmented, as float ``[n, C, H, W]`` in ``[0, 1]`` on
        the device (all images if the training set is smaller)."""
        n = self.config.calib_batch_size if n is None else _check_int("n", n, 1)
        if self._calib_images is not None:
            total = self._calib_images.shape[0]
        else:
            total = len(self._calib_dataset)
        g = torch.Generator().manual_seed(_derive_seed(self.seed, 3))
        idx = torch.randperm(total, generator=g)[: min(n, total)]
        if self._calib_images is not None:
            x = self._calib_images.index_select(0, idx.to(self._calib_images.device))
            return x.float().div_(255.0).to(self.device)
        return torch.stack([self._calib_dataset[i][0] for i in idx.tolist()]).to(self.device)


def _resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = []
    for chunk in torch.split(x, 4096):
        y = F.interpolate(chunk.float(), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=size < x.shape[-1])
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def build_data(
    cfg: DataConfig,
    device: str | torch.device = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Data:
    """Build the train loader (shuffled, augmented) and test loader (in order) for ``cfg``.

    Tensor datasets give :class:`TensorLoader`\\ s on ``device``; ``imagefolder`` gives
    :class:`FolderLoader`\\ s (``DataLoader``, batches on the CPU) and fills ``info.num_classes``
    from the folder. Both loaders are sharded over ``world_size`` ranks."""
    if not isinstance(cfg, DataConfig):
        raise ConfigError(f"build_data needs a DataConfig, got {type(cfg).__name__}")
    info = DATASETS[cfg.dataset]
    device = torch.device(device)
    use_aug = _AUGMENT_DEFAULT[cfg.dataset] if cfg.augment is None else cfg.augment

    if info.kind == "folder":
        size = cfg.image_size or info.image_size
        root = resolve_data_dir(cfg.data_dir)
        common = dict(image_size=size, workers=cfg.workers, seed=seed, rank=rank,
                      world_size=world_size)
        train = image_folder_loader(root, train=True, batch_size=cfg.batch_size,
                                    subset=cfg.train_subset, **common)
        test = image_folder_loader(root, train=False, batch_size=cfg.test_batch_size,
                                   subset=cfg.test_subset, **common)
        if not use_aug:  # plain eval-style transform for training too
            base = train.dataset.dataset if isinstance(train.dataset, torch.utils.data.Subset) \
                else train.dataset
            base.transform = _folder_transform(False, size)
        if test.classes != train.classes:
            raise DataError(
                f"{root}/train has classes {train.classes[:5]}... but {root}/val has "
                f"{test.classes[:5]}...: both must contain the same class sub-folders")
        calib = _image_folder(root, "train", _folder_transform(False, size))
        keep = _subset_indices(len(calib), cfg.train_subset)
        if keep is not None:
            calib = torch.utils.data.Subset(calib, keep)
        info = dataclasses.replace(info, num_classes=train.num_classes, image_size=size)
        return Data(train=train, test=test, info=info, config=cfg, seed=seed, device=device,
                    _calib_dataset=calib)

    xtr, ytr = load_tensors(cfg.dataset, cfg.data_dir, train=True, download=cfg.download)
    xte, yte = load_tensors(cfg.dataset, cfg.data_dir, train=False, download=cfg.download)
    if cfg.train_subset is not None:
        xtr, ytr = xtr[: cfg.train_subset], ytr[: cfg.train_subset]
    if cfg.test_subset is not None:
        xte, yte = xte[: cfg.test_subset], yte[: cfg.test_subset]
    if cfg.image_size is not None and cfg.image_size != info.image_size:
        xtr, xte = _resize_uint8(xtr, cfg.image_size), _resize_uint8(xte, cfg.image_size)
        info = dataclasses.replace(info, image_size=cfg.image_size)
    augment = _AUGMENT_ON[cfg.dataset] if use_aug else None
    train = TensorLoader(xtr, ytr, cfg.batch_size, shuffle=True, augment=augment, device=device,
                         seed=seed, rank=rank, world_size=world_size)
    test = TensorLoader(xte, yte, cfg.test_batch_size, shuffle=False, device=device, seed=seed,
                        rank=rank, world_size=world_size)
    return Data(train=train, test=test, info=info, config=cfg, seed=seed, device=device,
                _calib_images=train.images)
