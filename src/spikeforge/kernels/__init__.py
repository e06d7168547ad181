"""Compiled fast paths for the fused neuron.

``cpu_kernel()`` JIT-compiles ``neuron_cpu.cpp`` (C++ with ATen's thread pool) on first use and caches the build
under ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``). If no compiler is available the build fails
once, a warning says so, and the pure-PyTorch fused path is used instead (same results). Set
``SPIKEFORGE_NO_CPP=1`` to skip the compiled path.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

_STATE: dict = {}


def native_arch() -> tuple[str, list[str]]:
    """``(name suffix, flags)`` to build for this CPU's vector units (AVX2/AVX-512: about 3x faster neuron loops).

    On Linux x86-64 the build uses ``-march=native`` and its cache name carries a hash of the CPU's feature flags, so
    a cache shared with another kind of CPU is never loaded there; elsewhere the portable build is used.
    """
    import hashlib
    import platform

    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return "", []
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "", []
    return "_" + hashlib.sha1(flags.encode()).hexdigest()[:10], ["-march=native"]


def cpu_kernel():
    """The compiled CPU neuron module, or None when it cannot be built (or is disabled)."""
    if _STATE.get("disabled"):
        return None
    if "module" in _STATE:
        return _STATE["module"]
    module = None
    if os.environ.get("SPIKEFORGE_NO_CPP", "") not in ("1", "true", "yes"):
        try:
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # no "CUDA not found" noise
            from torch.utils.cpp_extension import load_inline

            src = (Path(__file__).with_name("neuron_cpu.cpp")).read_text()
            tag, arch = native_arch()
            module = load_inline(
                name=f"spikeforge_neuron_cpu_v3{tag}",
                cpp_sources=[src],
                functions=["neuron_forward", "neuron_backward"],
                extra_cflags=["-O3", "-ffp-contract=off", "-fopenmp", *arch],
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as exc:  # no compiler, no ninja, read-only cache ...
            warnings.warn(f"spikeforge: compiled CPU neuron unavailable ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); using the PyTorch fused path",
                          RuntimeWarning, stacklevel=2)
            module = None
    _STATE["module"] = module
    return module


class compiled_kernels:
    """Context manager to switch the compiled path off (or on) temporarily: ``with compiled_kernels(False): ...``."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self._old = _STATE.get("disabled", False)
        _STATE["disabled"] = not self.enabled
        return self

    def __exit__(self, *exc):
        _STATE["disabled"] = self._old
