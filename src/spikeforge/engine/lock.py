"""One process at a time in a run directory: an exclusive lock on ``<run>/.spikeforge.lock``.

The lock is an advisory ``flock`` (Linux/macOS) held for the whole ``spikeforge run``; the kernel drops it when the
holder exits, however it exits (SIGKILL included), so a lock left by a dead process is never in the way: the next
run takes it and overwrites the holder's details. The file holds the holder's PID, host and start time, which a
refused second run names. On file systems without ``flock`` support the PID in the file decides: a live process on
this host holds the directory, a dead one's lock is stale and is taken over. The file is removed on release.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

from spikeforge.errors import SpikeforgeError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the PID check alone
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".spikeforge.lock"


class RunDirBusy(SpikeforgeError):
    """Another process is running in this run directory."""


def _holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _busy(out_dir: Path, holder: dict) -> RunDirBusy:
    pid = holder.get("pid", "unknown")
    host = holder.get("host")
    since = holder.get("started")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    when = f", started {since}" if since else ""
    return RunDirBusy(f"{out_dir} is in use by another spikeforge run (PID {pid}{where}{when}); wait for it to "
                      "finish (or stop it), or use another --out directory")


class RunLock:
    """Context manager: hold the exclusive lock of run directory ``out_dir`` (created if missing).

    Raises :class:`RunDirBusy` naming the holder's PID when another process holds it."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # retried only while another process removes the file under us
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not self._flock(fd):
                    continue
            except BaseException:
                os.close(fd)
                raise
            self.fd = fd
            self._write_holder()
            return self
        raise RunDirBusy(f"could not lock {self.path}: it keeps being replaced by another process")

    def _flock(self, fd: int) -> bool:
        """Lock ``fd``; False (fd closed) when the path no longer names the locked file (retry)."""
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _busy(self.out_dir, _holder(self.path)) from None
            except OSError as exc:  # no flock on this file system: fall back to the PID in the file
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                self._pid_check()
        else:
            self._pid_check()
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
        return same

    def _pid_check(self) -> None:
        holder = _holder(self.path)
        pid = holder.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and holder.get("host") == socket.gethostname() \
                and _alive(pid):
            raise _busy(self.out_dir, holder)

    def _write_holder(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:  # the holder's details are a courtesy (a full disk must not stop the lock)
            pass

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


__all__ = ["LOCK_FILE", "RunDirBusy", "RunLock"]
