"""Command line: ``spikeforge run | eval | energy | attack | explain | export | schema | doctor | models``.

Each verb lives in its own module under :mod:`spikeforge.app.commands` with an ``add_parser(subparsers)`` function
that registers the verb and its handler (``func``).

:func:`main` is the one error boundary: every failure a user can cause or meet ends in one line on stderr naming the
problem and what to do, with exit status 2 and everything already written left intact (files are replaced
atomically):

* spikeforge's own errors (:class:`~spikeforge.errors.SpikeforgeError`: bad recipe or option, missing or corrupt data,
  corrupt or refused checkpoint, a run directory in use or holding other settings);
* the environment (:class:`OSError`: disk full, read-only or unwritable output, a directory where a file belongs or
  the reverse, unreadable files), text that is not UTF-8, corrupt JSON, a run that diverged
  (:class:`FloatingPointError`, :class:`OverflowError`) and running out of memory;
* a bad command line (argparse): one line and status 2, no usage dump.

Warnings are printed as one line each (``spikeforge: warning: ...``).

Ctrl-C at any time (start-up included) prints one line and exits with status 130. Anything else is a bug in
spikeforge: one line asking for a report, status 1; ``SPIKEFORGE_DEBUG=1`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
import warnings


def _interrupt_hook(kind, value, tb):
    """Ctrl-C while the command is still importing (before :func:`main` runs): one line, status 130."""
    if issubclass(kind, KeyboardInterrupt) and not os.environ.get("SPIKEFORGE_DEBUG"):
        print("spikeforge: interrupted", file=sys.stderr, flush=True)
        os._exit(130)
    _previous_hook(kind, value, tb)


_previous_hook = sys.excepthook
sys.excepthook = _interrupt_hook

from spikeforge.app.commands import attack, doctor, energy, explain, export, models, run, schema  # noqa: E402
from spikeforge.app.commands import eval as eval_  # noqa: E402
from spikeforge.errors import SpikeforgeError  # noqa: E402
from spikeforge.version import __version__  # noqa: E402

VERBS = (run, eval_, energy, attack, explain, export, schema, doctor, models)
EXIT_ERROR = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump): ``spikeforge run: error: ... (see spikeforge run --help)``."""

    def error(self, message: str):
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="spikeforge", description="Train, convert and evaluate spiking neural networks.")
    p.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        verb.add_parser(sub)
    return p


def _where(exc: OSError) -> str:
    """The path an OSError is about: for a rename, the destination; for the temporary file of an atomic write
    (``DIR/.NAME.XXXX.tmp``), the file it was to become (``DIR/NAME``)."""
    name = str(exc.filename2 or exc.filename or "")
    tmp = re.fullmatch(r"(.*/)?\.(.+)\.[^./]+\.tmp", name)
    return f"{tmp.group(1) or ''}{tmp.group(2)}" if tmp else name


def os_error_message(exc: OSError) -> str:
    """One line for an :class:`OSError`: what happened where, and what to do."""
    where = _where(exc)
    at = f" (writing {where})" if where else ""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device{at}; free some space (or write elsewhere, e.g. another --out) and "
                "rerun the same command: what was already written is kept, a run resumes")
    if code == errno.EROFS:
        return f"{where or 'the output'} is on a read-only file system; write somewhere writable (e.g. another --out)"
    if code in (errno.EACCES, errno.EPERM):
        return (f"permission denied: {where or 'a file or directory'}; fix its permissions or use another path "
                "(e.g. another --out)")
    if code == errno.EISDIR:
        return f"{where or 'a path'} is a directory, but a file is needed there; give a file path"
    if code == errno.ENOTDIR:
        return (f"{where or 'a path'}: a part of this path is a file, not a directory; check --out and the other "
                "paths given")
    if code == errno.EEXIST:
        return f"{where or 'a path'} already exists and is in the way (a file where a directory is needed?)"
    if code == errno.ENOENT:
        return f"no such file or directory: {where or '(unknown)'}"
    if code == errno.ENAMETOOLONG:
        return f"file name too long: {where}"
    if code == errno.EIO:
        return f"input/output error{at}: {exc.strerror or exc}; the disk may be full or failing"
    if code in (errno.EMFILE, errno.ENFILE):
        return "too many open files; raise the limit (ulimit -n) or lower data.workers"
    return f"{exc.strerror or exc}{f': {where}' if where else ''}"


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def error_message(exc: BaseException) -> tuple[str, int]:
    """The one line and the exit status for an exception raised by a command."""
    if isinstance(exc, SpikeforgeError):
        return str(exc), EXIT_ERROR
    if isinstance(exc, OSError):
        return os_error_message(exc), EXIT_ERROR
    if isinstance(exc, UnicodeError):
        return (f"a file that should be UTF-8 text is not ({exc}); save it as UTF-8", EXIT_ERROR)
    if isinstance(exc, json.JSONDecodeError):
        return f"a JSON file is corrupt ({exc}); restore it or rerun the command that wrote it", EXIT_ERROR
    if isinstance(exc, (FloatingPointError, OverflowError)):
        return (f"the computation diverged ({' '.join(str(exc).split()) or type(exc).__name__}); lower the learning "
                "rate or the input values", EXIT_ERROR)
    if _out_of_memory(exc):
        return ("out of memory: the model or batch is too large for this machine; lower data.batch_size (or "
                "--batch-size) or model.width, or use a device with more memory", EXIT_ERROR)
    text = " ".join(str(exc).split())[:300]
    return (f"internal error ({type(exc).__name__}: {text}); this is a bug in spikeforge: please report it with "
            "the command (SPIKEFORGE_DEBUG=1 shows the traceback)", EXIT_BUG)


def _silence_stdout() -> None:
    """After a broken pipe (``spikeforge ... | head``), stop Python from failing again when it flushes stdout."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the command line: one line each, without the source line."""
    text = " ".join(str(message).split())
    try:
        print(f"spikeforge: warning: {text} ({category.__name__})", file=file or sys.stderr)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Run one ``spikeforge`` command; returns the exit status (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    verb = None
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version (0) or a bad command line (2, one line printed)
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_ERROR)
        verb = args.command
        return args.func(args)
    except KeyboardInterrupt:
        hint = "; rerun the same command to resume" if verb == "run" else ""
        print(f"spikeforge: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_ERROR
    except Exception as exc:  # MemoryError included
        if os.environ.get("SPIKEFORGE_DEBUG"):
            raise
        message, status = error_message(exc)
        print(f"spikeforge: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
