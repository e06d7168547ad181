"""The parsed-tensor cache: a whole split as ``(images uint8, labels int64)`` in one ``.pt`` file.

File ``<cache>/tensors/<dataset>-<train|test>.pt`` holding ``{"format": 1, "source": fingerprint, "images",
"labels"}``; the fingerprint (path, size, mtime of every source file) invalidates it when the sources change.
A stale, corrupt or foreign file is rebuilt; an unwritable cache only warns.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from spikeforge.data.paths import CACHE_ENV, resolve_cache_dir
from spikeforge.data.registry import DatasetInfo

__all__ = ["CACHE_FORMAT", "cache_path", "cached_split", "fingerprint", "load_cache", "save_cache"]

CACHE_FORMAT = 1


def fingerprint(files: list[Path]) -> list[list[Any]]:
    """``[[path, size, mtime_ns], ...]`` of the source files of a split."""
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f), int(st.st_size), int(st.st_mtime_ns)])
    return out


def cache_path(name: str, split: str) -> Path:
    """The cache file of split ``split`` (``"train"``/``"test"``) of dataset ``name``."""
    return resolve_cache_dir() / "tensors" / f"{name}-{split}.pt"


def _valid(images: Any, labels: Any, info: DatasetInfo) -> bool:
    size = info.image_size
    return (
        isinstance(images, torch.Tensor)
        and isinstance(labels, torch.Tensor)
        and images.dtype == torch.uint8
        and labels.dtype == torch.int64
        and images.dim() == 4
        and tuple(images.shape[1:]) == (info.in_channels, size, size)
        and labels.shape == (images.shape[0],)
    )


def load_cache(path: Path, source: list[list[Any]], info: DatasetInfo):
    """Return (images, labels) from the cache, or None if absent, stale or corrupt."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != CACHE_FORMAT:
            return None
        if obj.get("source") != source:
            return None
        images, labels = obj["images"], obj["labels"]
        return (images, labels) if _valid(images, labels, info) else None
    except Exception:  # corrupt / truncated / foreign file: rebuild it
        return None


def save_cache(path: Path, source: Any, images: torch.Tensor, labels: torch.Tensor, *, fmt: int = CACHE_FORMAT) -> None:
    """Write the cache atomically (temp file + os.replace); a failure only warns. ``fmt`` is the file's format
    number (the event-frame cache has its own)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        with open(tmp, "xb") as fh:  # unique name; default permissions (umask)
            torch.save({"format": fmt, "source": source, "images": images, "labels": labels}, fh)
        os.replace(tmp, path)
        tmp = None
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        warnings.warn(
            f"could not write the dataset cache {path} ({exc}); loading will not be cached. "
            f"Set {CACHE_ENV} to a writable directory to enable the cache.",
            stacklevel=4,
        )
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def cached_split(info: DatasetInfo, train: bool, files: list[Path], parse: Callable[[], tuple]) -> tuple:
    """``(images, labels)`` of a split whose source files are ``files``: from the cache when it is current,
    else ``parse()`` (which verifies and reads the files), then cached."""
    source = fingerprint(files)
    path = cache_path(info.name, "train" if train else "test")
    hit = load_cache(path, source, info)
    if hit is not None:
        return hit
    x, y = parse()
    save_cache(path, source, x, y)
    return x, y
