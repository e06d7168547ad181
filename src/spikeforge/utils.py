"""Small helpers shared by every layer: text tables, atomic file writes, JSON of tensors and paths.

Nothing here imports another spikeforge module except :mod:`spikeforge.errors`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence


def text_table(head: Sequence[Any], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A plain-text table: the first ``left`` columns left-aligned, the others right-aligned, a dashed rule under the
    head."""
    head = [str(h) for h in head]
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

    def line(r):
        return "  ".join(c.rjust(w) if i >= left else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def bars_disabled(progress: bool = True) -> bool:
    """The ``disable`` argument of every progress bar: off when ``progress`` is false, and when standard error is not
    a terminal (a log file or a pipe would fill with redrawn bars). ``SPIKEFORGE_PROGRESS=1`` forces bars on a
    non-terminal, ``SPIKEFORGE_PROGRESS=0`` turns them off everywhere."""
    if not progress:
        return True
    forced = os.environ.get("SPIKEFORGE_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "0"
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr replaced or closed
        return True


def atomic_write_bytes(path: str | Path, writer: Callable) -> None:
    """Write a file through ``writer(fileobj)`` into a temporary file beside ``path``, fsync it, then rename it over
    ``path``: readers see the old file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_default(o):
    """``json.dumps(default=...)`` for tensors (as lists) and paths (as strings)."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    text = json.dumps(data, indent=2, sort_keys=False, default=json_default) + "\n"
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode()))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode()))
