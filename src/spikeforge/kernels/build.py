"""Compile-on-first-use loader for spikeforge's C++ extensions (the CPU neuron kernel, the STDP presentation loop).

:func:`load_extension` JIT-compiles one C++ source with ``torch.utils.cpp_extension.load_inline`` the first time it is
asked for, caches the built module for the process (and torch caches the build on disk under
``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``). When the build fails (no compiler, no ninja, a
read-only cache ...) one warning says so and the caller falls back to its PyTorch code; ``SPIKEFORGE_NO_CPP=1``
skips every compiled path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import warnings
from pathlib import Path
from typing import Sequence

#: Default compiler flags: optimized, no FMA contraction (so the arithmetic rounds like the PyTorch reference), OpenMP.
CFLAGS = ("-O3", "-ffp-contract=off", "-fopenmp")
LDFLAGS = ("-fopenmp",)

_BUILT: dict[str, object] = {}  # extension name -> module, or None when its build failed
_ARCH: list = []  # the cached result of native_arch() (it reads /proc/cpuinfo once per process)


def cpp_disabled() -> bool:
    """True when ``SPIKEFORGE_NO_CPP`` is set (``1``, ``true`` or ``yes``): use the PyTorch paths only."""
    return os.environ.get("SPIKEFORGE_NO_CPP", "") in ("1", "true", "yes")


def native_arch() -> tuple[str, list[str]]:
    """``(name suffix, flags)`` to build for this CPU's vector units (AVX2/AVX-512: about 3x faster neuron loops).

    On Linux x86-64 the build uses ``-march=native`` and its cache name carries a hash of the CPU's feature flags, so
    a cache shared with another kind of CPU is never loaded there; elsewhere the portable build is used. Computed
    once per process.
    """
    if not _ARCH:
        _ARCH.append(_detect_arch())
    tag, flags = _ARCH[0]
    return tag, list(flags)


def _detect_arch() -> tuple[str, list[str]]:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return "", []
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "", []
    return "_" + hashlib.sha1(flags.encode()).hexdigest()[:10], ["-march=native"]


def load_extension(
    name: str,
    source_path: str | Path,
    functions: Sequence[str],
    *,
    extra_cflags: Sequence[str] = CFLAGS,
    extra_ldflags: Sequence[str] = LDFLAGS,
    native: bool = True,
    what: str = "compiled kernel",
):
    """The extension module built from ``source_path`` exposing ``functions``, or None (disabled or unbuildable).

    ``native=True`` adds ``-march=native`` and the CPU tag of :func:`native_arch` to ``name`` (the on-disk cache name).
    The first call builds (or loads the cached build); later calls return the same module, or None without
    retrying after a failed build, which warned once naming ``what``.
    """
    if cpp_disabled():
        return None
    tag, arch = native_arch() if native else ("", [])
    key = f"{name}{tag}"
    if key not in _BUILT:
        _BUILT[key] = _build(key, Path(source_path), functions, [*extra_cflags, *arch], list(extra_ldflags), what)
    return _BUILT[key]


def _build(name, source_path, functions, cflags, ldflags, what):
    try:
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # no "CUDA not found" noise
        from torch.utils.cpp_extension import load_inline

        return load_inline(name=name, cpp_sources=[source_path.read_text()], functions=list(functions),
                           extra_cflags=cflags, extra_ldflags=ldflags, verbose=False)
    except Exception as exc:  # no compiler, no ninja, read-only cache ...
        detail = str(exc).splitlines()[0][:160] if str(exc) else ""
        warnings.warn(f"spikeforge: {what} unavailable ({type(exc).__name__}: {detail}); using the PyTorch path",
                      RuntimeWarning, stacklevel=4)
        return None
