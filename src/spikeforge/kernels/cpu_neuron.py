"""The compiled CPU neuron kernel (``neuron_cpu.cpp``) and the torch custom ops that expose it to ``torch.compile``.

The kernel runs the fused multi-step IF/LIF neuron of Rathi & Roy 2020 (DIET-SNN) with its hand-derived BPTT
backward; the equations are those of :mod:`spikeforge.neuron.functional`. :func:`load_cpu_kernel` JIT-compiles it on
first use through :func:`.build.load_extension` (None when it cannot be built or ``SPIKEFORGE_NO_CPP=1``).

``spikeforge::neuron_cpu_fwd`` and ``spikeforge::neuron_cpu_bwd`` wrap its two functions as custom ops with fake
(shape-only) implementations, the same signatures as the Triton ops of :mod:`.triton_neuron`, so ``torch.compile``
traces the neuron into its graph (no graph break at the pybind call; symbolic batch sizes work). They carry no
autograd formula of their own: the autograd node is ``FusedMultiStep`` (one BPTT for every backend), which calls them
with gradients off. In eager mode the dispatcher calls the module directly (an op call adds about 15 us of Python
dispatch per layer and step direction).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from spikeforge.kernels.build import load_extension

#: Name of the built extension (bump the suffix when the C++ interface changes).
EXTENSION = "spikeforge_neuron_cpu_v3"
SOURCE = Path(__file__).with_name("neuron_cpu.cpp")


def load_cpu_kernel():
    """The compiled CPU neuron module (built on first use), or None when it cannot be built or is disabled."""
    return load_extension(EXTENSION, SOURCE, ["neuron_forward", "neuron_backward"], what="compiled CPU neuron")


def _module():
    mod = load_cpu_kernel()
    if mod is None:
        raise RuntimeError("spikeforge: the compiled CPU neuron kernel is unavailable (no compiler, or "
                           "SPIKEFORGE_NO_CPP=1)")
    return mod


def _defined(t: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The kernel returns None for an output it did not compute; a custom op returns an empty tensor instead."""
    return like.new_empty(0) if t is None else t


@torch.library.custom_op("spikeforge::neuron_cpu_fwd", mutates_args=(), device_types="cpu")
def neuron_cpu_fwd(currents: torch.Tensor, threshold: torch.Tensor, leak: torch.Tensor, inner: int,
                   integrate_first: bool, soft: bool, keep_pre: bool,
                   u0: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward over ``currents [T, ...]`` (float32/float64); threshold/leak flat ``[C]`` of the same dtype.

    Returns ``(spikes, P, U[T-1])``; ``P`` (the pre-fire potentials) is empty unless ``keep_pre``; ``u0`` is the
    initial membrane (zero if None).
    """
    if not currents[0].is_contiguous():
        currents = currents.contiguous()
    spikes, pre, u = _module().neuron_forward(currents, threshold, leak, inner, integrate_first, soft, keep_pre, u0)
    return spikes, _defined(pre, currents), u


@neuron_cpu_fwd.register_fake
def _(currents, threshold, leak, inner, integrate_first, soft, keep_pre, u0=None):
    return (currents.new_empty(currents.shape), currents.new_empty(currents.shape if keep_pre else (0,)),
            currents.new_empty(currents.shape[1:]))


@torch.library.custom_op("spikeforge::neuron_cpu_bwd", mutates_args=(), device_types="cpu")
def neuron_cpu_bwd(grad_spikes: torch.Tensor, pre: torch.Tensor, threshold: torch.Tensor, leak: torch.Tensor,
                   inner: int, integrate_first: bool, soft: bool, code: int, p1: float, p2: float, need_th: bool,
                   need_lk: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BPTT from the saved ``P``: ``(grad_in, per-element threshold grad, per-element leak grad)``.

    The last two have one step's shape (summed over time) or are empty when not needed. ``code, p1, p2`` are the
    surrogate's ``kernel_spec()`` (``code``: an id of ``spikeforge.kernels.SURROGATE_KERNELS``).
    """
    gin, gth, glk = _module().neuron_backward(grad_spikes, pre, threshold, leak, inner, integrate_first, soft, code,
                                              p1, p2, need_th, need_lk)
    return gin, _defined(gth, pre), _defined(glk, pre)


@neuron_cpu_bwd.register_fake
def _(grad_spikes, pre, threshold, leak, inner, integrate_first, soft, code, p1, p2, need_th, need_lk):
    return (pre.new_empty(pre.shape), pre.new_empty(pre.shape[1:] if need_th else (0,)),
            pre.new_empty(pre.shape[1:] if need_lk else (0,)))
