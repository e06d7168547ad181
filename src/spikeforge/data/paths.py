"""Where data is looked for, where downloads and caches go, and checksum verification.

Data root: ``--data-dir DIR`` (``data_dir=``) > ``$SPIKEFORGE_DATA`` > ``~/.cache/spikeforge/data``
(:func:`resolve_data_dir`). Writable cache root: ``$SPIKEFORGE_CACHE`` > ``~/.cache/spikeforge``
(:func:`resolve_cache_dir`); a download goes to the data root if it is writable, else to ``<cache>/data``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from spikeforge.errors import DataError

__all__ = ["CACHE_ENV", "DATA_ENV", "HOW_TO_PROVIDE", "abspath", "download_root", "is_writable_dir",
           "missing_message", "resolve_cache_dir", "resolve_data_dir", "search_roots", "verify_md5"]

DATA_ENV = "SPIKEFORGE_DATA"
CACHE_ENV = "SPIKEFORGE_CACHE"

HOW_TO_PROVIDE = (
    f"Point spikeforge at a directory holding the files with --data-dir DIR or the {DATA_ENV} "
    "environment variable"
)


def abspath(p: str | os.PathLike[str]) -> Path:
    """``p`` with ``~`` expanded, made absolute against the working directory."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(p))))


def _resolve(explicit: str | os.PathLike[str] | None, env: str, default: str) -> Path:
    if explicit is not None and os.fspath(explicit) != "":
        return abspath(explicit)
    value = os.environ.get(env, "")
    return abspath(value if value else default)


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data root: ``data_dir`` if given, else ``$SPIKEFORGE_DATA``, else
    ``~/.cache/spikeforge/data``. Relative paths are taken relative to the working directory."""
    return _resolve(data_dir, DATA_ENV, "~/.cache/spikeforge/data")


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the writable cache root: ``cache_dir`` if given, else ``$SPIKEFORGE_CACHE``, else
    ``~/.cache/spikeforge``."""
    return _resolve(cache_dir, CACHE_ENV, "~/.cache/spikeforge")


def is_writable_dir(path: Path) -> bool:
    """True if ``path`` exists or can be created, and a file can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def download_root(data_dir: Path) -> Path:
    """Where a download goes: the data dir if writable, else ``<cache>/data``."""
    return data_dir if is_writable_dir(data_dir) else resolve_cache_dir() / "data"


def search_roots(data_dir: Path) -> list[Path]:
    """The roots searched for a dataset: the data dir, then ``<cache>/data`` (where failed-over downloads go)."""
    roots = [data_dir]
    fallback = resolve_cache_dir() / "data"
    if fallback != data_dir:
        roots.append(fallback)
    return roots


def verify_md5(path: Path, md5: str) -> None:
    """Raise :class:`DataError` unless ``path`` has the published MD5 checksum ``md5``."""
    from torchvision.datasets.utils import check_integrity

    try:
        ok = check_integrity(str(path), md5)
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc}); make it readable, or replace it with an "
                        "intact copy") from None
    if not ok:
        raise DataError(
            f"checksum mismatch for {path}: its MD5 is not the published {md5}, so the file is "
            "corrupt, truncated or a different version. Replace it with an intact copy "
            "(or delete it so it can be downloaded again)."
        )


def missing_message(title: str, searched: list[Path], expected: list[str], layout: str, extra: str = "") -> str:
    """The message of a 'dataset not found' :class:`DataError`: where we looked, what we expected, how to fix it."""
    where = ", ".join(str(p) for p in searched)
    return (
        f"{title} not found. Looked in: {where}. Expected files: {', '.join(expected)}. "
        f"{HOW_TO_PROVIDE} (layout: {layout}){extra}."
    )
