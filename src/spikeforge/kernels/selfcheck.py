"""Kernel self-check: a compiled neuron path is trusted only after it agreed with the PyTorch path in this process.

The first time a process is about to use a compiled kernel (Triton on CUDA, the C++ kernel on CPU) for a
configuration (:class:`KernelConfig`: backend, device, ordering, reset, surrogate kernel spec, dtypes, scalar or
per-channel parameters), the neuron dispatcher runs that kernel and the PyTorch fused path on a small random input
(:func:`inputs`) on the same device and compares forward spikes (exactly) and the input, threshold and leak
gradients (:func:`compare`). On a mismatch, or when the kernel fails to compile or launch, ONE warning names the
configuration and it takes the PyTorch path for the rest of the process. Results are cached per process
(:func:`results`, shown by ``spikeforge doctor``); ``SPIKEFORGE_NO_SELFCHECK=1`` trusts every kernel unchecked.

This module holds the bookkeeping, the test input and the comparison; the dispatcher
(:mod:`spikeforge.neuron.functional`) supplies the function that runs both paths, since the reference lives there.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Callable, NamedTuple, Optional

import torch

ENV = "SPIKEFORGE_NO_SELFCHECK"
#: The check's input: ``T`` steps of ``[B, C, L]`` (per-channel parameters ``[C, 1]``).
SHAPE = (3, 2, 3, 5)
#: Relative tolerance of the gradients (to the largest reference entry), by the dtype the kernel returns.
RTOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}


class KernelConfig(NamedTuple):
    """What a compiled neuron kernel is specialised on; one self-check per distinct value."""

    backend: str  # "cpp" or "triton"
    device: str  # "cpu", "cuda:0", ...
    order: str
    reset: str
    surrogate: tuple  # the surrogate's kernel_spec(): (kernel id, p1, p2)
    dtype: torch.dtype  # of the currents
    param_dtype: torch.dtype  # of threshold and leak
    per_channel: bool

    def describe(self) -> str:
        code, p1, p2 = self.surrogate
        dtypes = str(self.dtype).replace("torch.", "")
        if self.param_dtype != self.dtype:
            dtypes += f"/{str(self.param_dtype).replace('torch.', '')} parameters"
        return (f"{self.backend} on {self.device} ({self.order}, {self.reset} reset, surrogate kernel {code} "
                f"({p1:g}, {p2:g}), {dtypes}, {'per-channel' if self.per_channel else 'scalar'} threshold/leak)")


class Outcome(NamedTuple):
    ok: bool
    detail: str  # "ok", or what went wrong
    seconds: float  # time the check took


_RESULTS: dict[KernelConfig, Outcome] = {}


def disabled() -> bool:
    """True when ``SPIKEFORGE_NO_SELFCHECK`` is set (``1``, ``true`` or ``yes``): kernels are trusted unchecked."""
    return os.environ.get(ENV, "") in ("1", "true", "yes")


def verified(config: KernelConfig, check: Callable[[], Optional[str]]) -> bool:
    """Whether ``config`` may use its kernel: runs ``check()`` (None = agreement, else the problem) the first time.

    An exception from ``check`` (compile or launch error) counts as a failure. A failure warns once.
    """
    if disabled():
        return True
    outcome = _RESULTS.get(config)
    if outcome is None:
        outcome = _run(config, check)
    return outcome.ok


def _run(config: KernelConfig, check: Callable[[], Optional[str]]) -> Outcome:
    t0 = time.perf_counter()
    try:
        problem = check()
    except Exception as exc:  # the kernel did not compile or launch
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        problem = f"{type(exc).__name__}: {first}"
    outcome = Outcome(problem is None, problem or "ok", time.perf_counter() - t0)
    _RESULTS[config] = outcome
    if not outcome.ok:
        warnings.warn(f"spikeforge: kernel self-check failed for {config.describe()}: {problem}; this configuration "
                      f"uses the PyTorch path for the rest of the process", RuntimeWarning, stacklevel=2)
    return outcome


def results() -> dict[KernelConfig, Outcome]:
    """Every configuration checked so far in this process and its outcome."""
    return dict(_RESULTS)


def compute_dtype(config: KernelConfig) -> torch.dtype:
    """The dtype the kernels compute in (float64 if the promoted dtype is, else float32); the reference runs in it."""
    return torch.float64 if torch.promote_types(config.dtype, config.param_dtype) == torch.float64 else torch.float32


def inputs(config: KernelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(currents, threshold, leak, grad of the spikes)`` for the check, on the config's device and dtypes.

    Fixed seed; currents ``N(0.5, 0.8^2)``, thresholds in ``[0.5, 1.5)``, leaks in ``[0.5, 1)``: many spikes, and
    many membranes inside the surrogates' support.
    """
    g = torch.Generator().manual_seed(1234)
    steps, batch, channels, length = SHAPE
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64) * 0.8 + 0.5
    shape = (channels, 1) if config.per_channel else ()
    th = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
    lk = torch.rand(shape, generator=g, dtype=torch.float64) * 0.5 + 0.5
    gout = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    dev = torch.device(config.device)
    out_dtype = torch.promote_types(config.dtype, config.param_dtype)
    return x.to(dev, config.dtype), th.to(dev, config.param_dtype), lk.to(dev, config.param_dtype), \
        gout.to(dev, out_dtype)


def compare(got: tuple, want: tuple, config: KernelConfig) -> Optional[str]:
    """None if ``got = (spikes, grad_in, grad_threshold, grad_leak)`` of the kernel agrees with ``want`` (the
    PyTorch path): spikes equal, gradients within :data:`RTOL` of the largest entry; else what differs."""
    spikes, ref = got[0].double(), want[0].double()
    if spikes.shape != ref.shape or not torch.equal(spikes, ref):
        bad = (spikes != ref).sum().item() if spikes.shape == ref.shape else "all"
        return f"forward spikes differ in {bad} of {ref.numel()} places"
    rtol = RTOL.get(config.dtype, 2e-2)
    for name, a, b in zip(("input", "threshold", "leak"), got[1:], want[1:]):
        a, b = a.double(), b.double()
        if a.shape != b.shape:
            return f"{name} gradient has shape {tuple(a.shape)}, expected {tuple(b.shape)}"
        err = (a - b).abs().max().item() if b.numel() else 0.0
        if not err <= rtol * max(b.abs().max().item(), 1e-12):  # NaN fails too
            return f"{name} gradient differs (max abs difference {err:.3g})"
    return None
