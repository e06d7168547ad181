"""Compiled fast paths for the fused neuron: a C++ kernel for the CPU (``neuron_cpu.cpp``) and Triton kernels for
CUDA (:mod:`.triton_neuron`).

``cpu_kernel()`` JIT-compiles ``neuron_cpu.cpp`` (C++ with ATen's thread pool) on first use through
:func:`.build.load_extension` (:mod:`.cpu_neuron`, which also registers it as torch custom ops for
``torch.compile``); without a compiler one warning says so and the pure-PyTorch fused path is used instead (same
results). ``SPIKEFORGE_NO_CPP=1`` skips the compiled CPU path, ``SPIKEFORGE_NO_TRITON=1`` the Triton one, and
``with compiled_kernels(False): ...`` both, temporarily. Before a compiled path is used for a configuration it is
checked against the PyTorch path once per process (:mod:`.selfcheck`; ``SPIKEFORGE_NO_SELFCHECK=1`` skips that).

The kernels know surrogate *functions*, not surrogate classes: :data:`SURROGATE_KERNELS` names the functions
``g(z, dt; p1, p2)`` they implement and the id each one has in the kernels; a surrogate that matches one declares
that id and its two parameters.
"""

from __future__ import annotations

from spikeforge.kernels import selfcheck
from spikeforge.kernels.build import cpp_disabled, load_extension, native_arch
from spikeforge.kernels.cpu_neuron import load_cpu_kernel
from spikeforge.kernels.triton_neuron import triton_available, unavailable_reason

#: Surrogate functions implemented by both compiled kernels, by id (the ``CODE`` template/constexpr argument):
#: ``0`` piecewise linear ``p1 * max(0, 1 - |z|)``; ``1`` spike-time exponential ``p1 * exp(-p2 * dt)``;
#: ``2`` fast sigmoid ``1 / (1 + p1 |z|)^2``; ``3`` arctangent ``(p1 / 2) / (1 + (pi/2 p1 z)^2)``;
#: ``4`` exponential ``p1 * exp(-p2 |z|)``.
SURROGATE_KERNELS = {"piecewise_linear": 0, "spike_time_exponential": 1, "fast_sigmoid": 2, "atan": 3,
                     "exponential": 4}

_STATE: dict = {"disabled": False}

__all__ = ["SURROGATE_KERNELS", "compiled_enabled", "compiled_kernels", "cpp_disabled", "cpu_kernel",
           "load_cpu_kernel", "load_extension", "native_arch", "selfcheck", "triton_available", "unavailable_reason"]


def compiled_enabled() -> bool:
    """False inside ``with compiled_kernels(False)``: every fused call then takes the pure-PyTorch path."""
    return not _STATE["disabled"]


def cpu_kernel():
    """The compiled CPU neuron module, or None when it cannot be built (or is disabled)."""
    if not compiled_enabled():
        return None
    return load_cpu_kernel()


class compiled_kernels:
    """Context manager to switch the compiled paths off (or on) temporarily: ``with compiled_kernels(False): ...``."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self._old = _STATE["disabled"]
        _STATE["disabled"] = not self.enabled
        return self

    def __exit__(self, *exc):
        _STATE["disabled"] = self._old
