"""Integrate-and-fire / leaky integrate-and-fire dynamics as pure functions.

The neuron of Rathi & Roy 2020 ("DIET-SNN: A low-latency spiking neural network with direct input encoding and
leakage and threshold optimization", IEEE TNNLS), trained with surrogate gradients through time (Neftci, Mostafa &
Zenke 2019). Symbols (as in the DIET-SNN / IIR-SNN papers): input current ``I[t] = W * s_prev[t]``, membrane ``U``,
threshold ``V_th`` (``threshold``), multiplicative leak ``lambda`` (``leak``; 1.0 = IF), spike ``s``.

Two update orderings exist in the reference code:

* ``"integrate-fire"`` (ordering B, the default; DIET HEAD, IIR, BNTT HEAD)::

      U'[t] = lambda * U[t-1] + I[t];   z[t] = U'[t] / V_th - 1;   s[t] = H(z[t]);   U[t] = U'[t] - V_th * s[t]

* ``"fire-integrate"`` (ordering A, one step of delay per layer; hybrid, Sharmin, SAM)::

      z[t] = U[t-1] / V_th - 1;   s[t] = H(z[t]);   U[t] = lambda * U[t-1] + I[t] - V_th * s[t]

``H(z) = 1`` for ``z >= 0``, decided as ``U >= V_th`` (so a membrane exactly at threshold fires, and with IF + soft
reset + constant current ``I`` the spike count after ``T`` steps is ``floor(T * I / V_th)`` clipped to ``[0, T]``).
Reset is ``"soft"`` (subtract ``V_th``) or ``"hard"`` (to zero). The reset path is detached (no gradient into ``U``
through ``s``) except the threshold's own term ``-s`` of the soft reset (the threshold gradient of DIET-SNN, Rathi &
Roy 2020).

The *pre-fire potential* ``P[t]`` is the membrane the spike decision looks at (``U'[t]`` in ordering B, ``U[t-1]``
in ordering A). The fused path saves only ``P`` for backward; spikes, surrogate values and earlier membranes are
recomputed from it.

Backends of the fused path (:func:`_kernel_layout` picks one per call): the Triton kernel (CUDA, ``T >= 2``), the
compiled C++ kernel (CPU), else PyTorch (:func:`forward_loop` and the BPTT of :class:`FusedMultiStep`). A compiled
kernel is used for a configuration only after it agreed with the PyTorch path on a small input once in the process
(:mod:`spikeforge.kernels.selfcheck`; :func:`check_kernels` runs those checks for a device). Under ``torch.compile``
the kernels are called as torch custom ops, so the neuron traces into the graph without a break.
"""

from __future__ import annotations

import dataclasses

import os
from typing import NamedTuple

import torch

from spikeforge import kernels
from spikeforge.kernels import selfcheck
from spikeforge.neuron.surrogate import NEVER_SPIKED, PiecewiseLinear, Surrogate

ORDERS = ("integrate-fire", "fire-integrate")
RESETS = ("soft", "hard")


class SpikeFunction(torch.autograd.Function):
    """``s = fired`` (the Heaviside decision ``U >= V_th``) forward; ``ds/dz = g(z, dt)`` backward."""

    @staticmethod
    def forward(ctx, z, fired, dt, surrogate):
        ctx.surrogate = surrogate
        ctx.save_for_backward(z, dt)
        return fired.to(z.dtype)

    @staticmethod
    def backward(ctx, grad_s):
        z, dt = ctx.saved_tensors
        return grad_s * ctx.surrogate.grad(z, dt), None, None, None


def spike(pre: torch.Tensor, threshold: torch.Tensor, surrogate: Surrogate,
          dt: torch.Tensor | None = None) -> torch.Tensor:
    """Spike ``H(pre / V_th - 1)``, decided as ``pre >= V_th``, with a surrogate gradient in ``z = pre / V_th - 1``."""
    if dt is None:
        dt = pre.new_empty(0)
    z = pre / threshold - 1.0
    return SpikeFunction.apply(z, pre.detach() >= threshold.detach(), dt, surrogate)


class NeuronState(NamedTuple):
    """Explicit state of one layer of neurons: membrane ``u`` and time of the last spike (for STDB)."""

    u: torch.Tensor
    last_spike: torch.Tensor | None


def initial_state(like: torch.Tensor, surrogate: Surrogate) -> NeuronState:
    """Zero membrane; every neuron 'never spiked'."""
    last = torch.full_like(like, NEVER_SPIKED) if surrogate.needs_spike_time else None
    return NeuronState(torch.zeros_like(like), last)


def step(
    current: torch.Tensor,
    state: NeuronState,
    threshold: torch.Tensor,
    leak: torch.Tensor,
    t: int,
    *,
    surrogate: Surrogate,
    order: str = "integrate-fire",
    reset: str = "soft",
) -> tuple[torch.Tensor, NeuronState]:
    """One timestep of the neuron (the reference; differentiable with ordinary autograd).

    Returns ``(s[t], new_state)``; ``t`` is the 0-based step index (used for the STDB spike times).
    """
    u = state.u
    if order == "integrate-fire":
        pre = leak * u + current
    else:
        pre = u
    dt = None
    if surrogate.needs_spike_time:
        dt = t - state.last_spike
    s = spike(pre, threshold, surrogate, dt)
    s_detached = s.detach()
    if order == "integrate-fire":
        new_u = pre - threshold * s_detached if reset == "soft" else pre * (1.0 - s_detached)
    else:
        if reset == "soft":
            new_u = leak * u + current - threshold * s_detached  # same arithmetic as forward_loop
        else:
            new_u = leak * u * (1.0 - s_detached) + current
    last = None
    if surrogate.needs_spike_time:
        last = torch.where(s_detached.bool(), torch.full_like(state.last_spike, float(t)), state.last_spike)
    return s, NeuronState(new_u, last)


def multistep_reference(
    currents: torch.Tensor,
    threshold: torch.Tensor,
    leak: torch.Tensor,
    *,
    surrogate: Surrogate,
    order: str = "integrate-fire",
    reset: str = "soft",
) -> torch.Tensor:
    """Plain per-step loop over ``currents`` ``[T, B, ...]`` from zero state; returns spikes ``[T, B, ...]``.

    Inputs the spikes do not depend on (at T = 1 with fire-then-integrate the only spike is fired before any input
    arrives) get a zero gradient, as in the fused path, instead of autograd's "not used in the graph" error."""
    state = initial_state(currents[0], surrogate)
    out = []
    for t in range(currents.shape[0]):
        s, state = step(currents[t], state, threshold, leak, t, surrogate=surrogate, order=order, reset=reset)
        out.append(s)
    spikes = torch.stack(out)
    unused = [x for x in (currents, threshold, leak) if x.requires_grad]
    if unused and torch.is_grad_enabled():
        spikes = spikes + sum(x.sum() for x in unused) * 0.0  # a zero-valued edge to every input
    return spikes


def time_since_last_spike(spikes: torch.Tensor) -> torch.Tensor:
    """``dt[t] = t - (time of the most recent spike strictly before t)``; ``t + 999`` if there was none
    (:data:`~spikeforge.neuron.surrogate.NEVER_SPIKED`)."""
    steps = spikes.shape[0]
    tidx = torch.arange(steps, device=spikes.device, dtype=spikes.dtype).view(-1, *([1] * (spikes.dim() - 1)))
    stamped = torch.where(spikes.bool(), tidx.expand_as(spikes), torch.full_like(spikes, NEVER_SPIKED))
    last_incl = torch.cummax(stamped, dim=0).values
    last_before = torch.cat([torch.full_like(spikes[:1], NEVER_SPIKED), last_incl[:-1]])
    return tidx - last_before


def _sum_to(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum ``grad`` down to the shape of ``like`` (a scalar or per-channel parameter)."""
    if grad.shape == like.shape:
        return grad
    if like.dim() == 0:
        return grad.sum()
    return grad.sum_to_size(like.shape)


def forward_loop(currents, threshold, leak, order="integrate-fire", reset="soft", u0=None, keep_pre=True):
    """Forward dynamics over ``currents`` ``[T, B, ...]`` without autograd; returns ``(spikes, P, U[T-1])``.

    ``u0`` is the initial membrane (zero if None). ``P`` (the pre-fire potentials) is None if ``keep_pre`` is False.
    Uses exactly the arithmetic of :func:`step`, so both paths give bit-identical spikes.
    """
    with torch.no_grad():
        steps = currents.shape[0]
        dtype = torch.promote_types(currents.dtype, threshold.dtype)
        spikes = torch.empty(currents.shape, dtype=dtype, device=currents.device)
        pre_all = torch.empty_like(spikes) if keep_pre else None
        u = torch.zeros(currents.shape[1:], dtype=dtype, device=currents.device) if u0 is None else u0
        integrate_first = order == "integrate-fire"
        soft = reset == "soft"
        for t in range(steps):
            if integrate_first:
                pre = torch.add(leak * u, currents[t], out=pre_all[t]) if keep_pre else leak * u + currents[t]
            else:
                pre = u
                if keep_pre:
                    pre_all[t] = u
            s = spikes[t]
            torch.ge(pre, threshold, out=s)  # H(P / V_th - 1)
            if integrate_first:
                # P - V_th * s: the product is exact (s is 0 or 1), so addcmul rounds like the reference
                u = torch.addcmul(pre, s, threshold, value=-1.0) if soft else pre * (1.0 - s)
            else:
                u = leak * u + currents[t] - threshold * s if soft else leak * u * (1.0 - s) + currents[t]
        return spikes, pre_all, u


class FusedMultiStep(torch.autograd.Function):
    """The whole ``T`` loop as one autograd node: no per-step graph, only ``P[T, ...]`` saved.

    Backward is the hand-derived BPTT of the equations in the module docstring. With ``a[t] = dL/ds[t] * g[t] / V_th``
    the gradient w.r.t. the pre-fire potential obeys the linear recurrence ``q[t] = c[t] * q[t+1] + a[t]`` with
    ``c = lambda`` (soft reset) or ``lambda * (1 - s)`` (hard reset); in ordering B ``q[t] = dL/dI[t]``, in ordering A
    ``dL/dI[t] = q[t+1]``. Spikes and surrogate values are recomputed from ``P`` one step at a time, so the work
    stays on step-sized tensors (cache friendly, no large temporaries). Forward and backward run in the Triton kernel
    on CUDA (``kernels/triton_neuron.py``), in the compiled C++ kernel on CPU, else in PyTorch (this code).
    """

    @staticmethod
    def forward(ctx, currents, threshold, leak, surrogate, order, reset):
        backend, layout = _kernel_layout(currents, threshold, leak, surrogate, order, reset)
        # T = 1, integrate-then-fire, zero initial state: P[0] = I[0], so the input itself is saved for backward
        # instead of a copy of it (one store per element less, no extra memory).
        keep = not (currents.shape[0] == 1 and order == "integrate-fire" and currents.is_contiguous()
                    and currents.dtype in (torch.float32, torch.float64)
                    and torch.promote_types(currents.dtype, threshold.dtype) == currents.dtype)
        if backend == "triton":
            spikes, pre_all, _ = _triton_forward(currents, threshold, leak, layout, order, reset, keep_pre=keep)
        elif backend == "cpp":
            spikes, pre_all, _ = _cpp_forward(currents, threshold, leak, layout, order, reset, keep_pre=keep)
        else:
            spikes, pre_all, _ = forward_loop(currents, threshold, leak, order, reset, keep_pre=keep)
        if not keep:
            pre_all = currents.detach()
        ctx.surrogate, ctx.order, ctx.reset, ctx.backend, ctx.layout = surrogate, order, reset, backend, layout
        ctx.in_dtype = currents.dtype
        ctx.save_for_backward(pre_all, threshold, leak)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        pre_all, threshold, leak = ctx.saved_tensors
        need_th, need_lk = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if ctx.backend is not None:
            grads = _kernel_grads(ctx.backend, ctx.layout, ctx.surrogate, ctx.order, ctx.reset, grad_spikes, pre_all,
                                  threshold, leak, need_th, need_lk, ctx.in_dtype)
        else:
            grads = _torch_grads(grad_spikes, pre_all, threshold, leak, ctx.surrogate, ctx.order, ctx.reset,
                                 need_th, need_lk, ctx.in_dtype)
        return (*grads, None, None, None)


def _torch_grads(grad_spikes, pre_all, threshold, leak, surrogate, order, reset, need_th, need_lk, in_dtype):
    """``(dL/dI, dL/dV_th or None, dL/dlambda or None)`` by the BPTT of :class:`FusedMultiStep`, in PyTorch."""
    soft, integrate_first = reset == "soft", order == "integrate-fire"
    steps = pre_all.shape[0]
    grad_in = torch.empty(pre_all.shape, dtype=in_dtype, device=pre_all.device)
    g_th = torch.zeros((), dtype=pre_all.dtype, device=pre_all.device)
    g_lk = torch.zeros((), dtype=pre_all.dtype, device=pre_all.device)
    dt_all = None
    if surrogate.needs_spike_time:
        dt_all = time_since_last_spike(torch.ge(pre_all, threshold).to(pre_all.dtype))
    q_next = None  # q[t+1]
    for t in range(steps - 1, -1, -1):
        pre = pre_all[t]
        z = pre / threshold - 1.0
        s = (pre >= threshold).to(pre.dtype)
        g = surrogate.grad(z, None if dt_all is None else dt_all[t])
        a = grad_spikes[t] * g / threshold
        if need_th:
            g_th = g_th - _sum_to(a * pre, threshold) / threshold
        # q[t] = c[t] * q[t+1] + a[t]
        q = a if q_next is None else torch.addcmul(a, q_next, leak * (1.0 - s) if not soft else leak)
        if integrate_first:
            grad_in[t] = q
            if q_next is not None:
                # U[t] = P[t] - V_th s[t] (soft) or P[t] (1 - s[t]) (hard) feeds step t+1 as lambda * U[t].
                u_t = pre - s * threshold if soft else pre * (1.0 - s)
                if need_lk:
                    g_lk = g_lk + _sum_to(q_next * u_t, leak)
                if need_th and soft:
                    g_th = g_th - _sum_to(q_next * s, threshold) * leak
        else:
            # dL/dI[t] = dL/dU[t] = q[t+1];  U[t] = lambda P[t] (1 - s_hard) + I[t] - V_th s[t] (soft).
            if q_next is None:
                grad_in[t] = 0.0
            else:
                grad_in[t] = q_next
                if need_lk:
                    g_lk = g_lk + _sum_to(q_next * (pre if soft else pre * (1.0 - s)), leak)
                if need_th and soft:
                    g_th = g_th - _sum_to(q_next * s, threshold)
        q_next = q
    grad_threshold = _sum_to(g_th.expand(threshold.shape) if g_th.dim() == 0 else g_th, threshold) \
        if need_th else None
    grad_leak = _sum_to(g_lk.expand(leak.shape) if g_lk.dim() == 0 else g_lk, leak) if need_lk else None
    return grad_in, grad_threshold, grad_leak


def _param_layout(currents, threshold, leak, surrogate):
    """``(C, inner)`` if a compiled kernel can take these parameters, else None.

    It needs a surrogate the kernels implement (``surrogate.kernel_spec()`` not None) and threshold/leak that are
    scalars or per-channel ``[C, 1, ..., 1]`` along dim 1 of a step.
    """
    if currents.dim() < 2 or surrogate.kernel_spec() is None:
        return None
    step_shape = currents.shape[1:]
    shapes = {tuple(threshold.shape), tuple(leak.shape)} - {()}
    if not shapes:
        return 1, 1
    if len(shapes) != 1 or len(step_shape) < 2:
        return None
    shape = shapes.pop()
    channels = step_shape[1]
    if shape[0] != channels or any(d != 1 for d in shape[1:]) or len(shape) != len(step_shape) - 1:
        return None
    inner = 1
    for d in step_shape[2:]:
        inner *= d
    return channels, inner


def _cpp_layout(currents, threshold, leak, surrogate):
    """``(C, inner)`` if the compiled CPU kernel can run this call, else None.

    It needs CPU float32/float64 tensors of one dtype and the parameters of :func:`_param_layout`.
    """
    if currents.device.type != "cpu" or currents.dtype not in (torch.float32, torch.float64):
        return None
    if threshold.dtype != currents.dtype or leak.dtype != currents.dtype:
        return None
    layout = _param_layout(currents, threshold, leak, surrogate)
    if layout is None or not kernels.compiled_enabled() or not _cpu_kernel_built():
        return None
    return layout


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _triton_layout(currents, threshold, leak, surrogate):
    """``(C, inner)`` if the Triton kernel can run this call, else None.

    It needs ``T >= 2`` steps, CUDA tensors on one device (float16/bfloat16/float32/float64 currents; threshold and
    leak of one float dtype) and the parameters of :func:`_param_layout`. CPU tensors qualify only on the test opt-in
    ``SPIKEFORGE_TRITON_INTERPRET=1`` (with ``TRITON_INTERPRET=1``); ``SPIKEFORGE_NO_TRITON=1`` or
    ``compiled_kernels(False)`` switch the path off.

    At ``T = 1`` the PyTorch fused path is faster on the GPU: the loop has one step, so the kernel's per-element time
    loop gains nothing while its launch and parameter expansion cost more than PyTorch's two elementwise ops (and
    at ``T = 1`` the fused path saves the input itself for backward). Measured on an H200, VGG16, batch 64: training
    step 14.7 ms (Triton) vs 12.9 ms (PyTorch), inference 3.57 ms vs 2.62 ms; at ``T = 5`` Triton is 1.71x faster.
    """
    device = currents.device.type
    if currents.shape[0] < 2:
        return None
    if device != "cuda" and not (device == "cpu" and _env_flag("SPIKEFORGE_TRITON_INTERPRET")):
        return None
    if _env_flag("SPIKEFORGE_NO_TRITON") or not kernels.compiled_enabled():
        return None
    if currents.dtype not in _FLOATS or threshold.dtype not in _FLOATS or leak.dtype != threshold.dtype:
        return None
    if threshold.device != currents.device or leak.device != currents.device:
        return None
    layout = _param_layout(currents, threshold, leak, surrogate)
    if layout is None:
        return None
    return layout if _triton_ready(currents.device) else None


def _kernel_layout(currents, threshold, leak, surrogate, order="integrate-fire", reset="soft"):
    """``(backend, (C, inner))``: ``"triton"`` (CUDA), ``"cpp"`` (compiled CPU kernel) or ``(None, None)`` (PyTorch).

    A kernel is used only once its configuration passed the self-check (:mod:`spikeforge.kernels.selfcheck`).
    """
    backend, layout = "triton", _triton_layout(currents, threshold, leak, surrogate)
    if layout is None:
        backend, layout = "cpp", _cpp_layout(currents, threshold, leak, surrogate)
    if layout is None:
        return None, None
    config = (backend, str(currents.device), order, reset, surrogate.kernel_spec(), currents.dtype, threshold.dtype,
              threshold.dim() > 0 or leak.dim() > 0)
    return (backend, layout) if _trusted(config, _surrogate_key(surrogate)) else (None, None)


def _surrogate_key(surrogate: Surrogate) -> tuple:
    """``(class, field values)``: a surrogate as plain constants. torch.compile cannot pass a frozen-dataclass
    instance into an ``assume_constant_result`` function (torch 2.11 raises "can't reconstruct arbitrary frozen
    dataclass instances"; seen on an H200 run), but it can pass a class and numbers."""
    return (type(surrogate), tuple(getattr(surrogate, f.name) for f in dataclasses.fields(surrogate)))


# The functions below are evaluated once at trace time by torch.compile (their result is a constant of the
# graph): they read the environment, build or launch kernels, none of which belongs in a graph.

@torch.compiler.assume_constant_result
def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") in ("1", "true", "yes")


@torch.compiler.assume_constant_result
def _cpu_kernel_built() -> bool:
    return kernels.load_cpu_kernel() is not None


@torch.compiler.assume_constant_result
def _triton_ready(device: torch.device) -> bool:
    return kernels.triton_available(device)


@torch.compiler.assume_constant_result
def _trusted(config: tuple, surrogate_key: tuple) -> bool:
    """Whether the kernel configuration ``config`` (the fields of :class:`~spikeforge.kernels.selfcheck.KernelConfig`;
    a plain tuple, which torch.compile passes through as a constant) may use its kernel: the self-check ran (now, the
    first time) and passed."""
    key = selfcheck.KernelConfig(*config)
    cls, values = surrogate_key
    return selfcheck.verified(key, lambda: _selfcheck(key, cls(*values)))


def _selfcheck(config: selfcheck.KernelConfig, surrogate: Surrogate) -> str | None:
    """Run the kernel of ``config`` and the PyTorch fused path (forward and BPTT) on the check's input; compare.

    Calls the backends directly (not the dispatcher). The reference runs in the kernel's compute dtype.
    """
    x, th, lk, gout = selfcheck.inputs(config)
    layout = _param_layout(x, th, lk, surrogate)
    forward = _triton_forward if config.backend == "triton" else _cpp_forward
    spikes, pre, _ = forward(x, th, lk, layout, config.order, config.reset, keep_pre=True)
    grads = _kernel_grads(config.backend, layout, surrogate, config.order, config.reset, gout, pre, th, lk, True,
                          True, x.dtype)
    xr, thr, lkr, goutr = (t.to(selfcheck.compute_dtype(config)) for t in (x, th, lk, gout))
    ref, ref_pre, _ = forward_loop(xr, thr, lkr, config.order, config.reset)
    ref_grads = _torch_grads(goutr, ref_pre, thr, lkr, surrogate, config.order, config.reset, True, True, xr.dtype)
    return selfcheck.compare((spikes, *grads), (ref, *ref_grads), config)


def _flat_param(p: torch.Tensor, channels: int) -> torch.Tensor:
    """A scalar or per-channel parameter as the kernels take it: flat ``[C]``, contiguous, detached."""
    flat = p.detach().reshape(-1)
    return flat.expand(channels).contiguous() if p.numel() == 1 else flat.contiguous()


def _cpp_forward(currents, threshold, leak, layout, order, reset, keep_pre, u0=None):
    """The compiled CPU kernel's forward: the module itself in eager mode, its custom op under ``torch.compile``."""
    channels, inner = layout
    args = (_flat_param(threshold, channels), _flat_param(leak, channels), inner, order == "integrate-fire",
            reset == "soft", keep_pre, u0)
    if torch.compiler.is_compiling():
        return torch.ops.spikeforge.neuron_cpu_fwd(currents, *args)
    if not currents[0].is_contiguous():
        currents = currents.contiguous()
    return kernels.cpu_kernel().neuron_forward(currents, *args)


def _triton_forward(currents, threshold, leak, layout, order, reset, keep_pre, u0=None):
    channels, inner = layout
    return torch.ops.spikeforge.neuron_multistep_fwd(currents, _flat_param(threshold, channels),
                                                     _flat_param(leak, channels), inner, order == "integrate-fire",
                                                     reset == "soft", keep_pre, u0)


def _kernel_grads(backend, layout, surrogate, order, reset, grad_spikes, pre_all, threshold, leak, need_th, need_lk,
                  in_dtype):
    """``(dL/dI, dL/dV_th or None, dL/dlambda or None)`` from the kernel ``backend`` ("triton" or "cpp")."""
    channels, inner = layout
    code, p1, p2 = surrogate.kernel_spec()
    args = (pre_all, _flat_param(threshold, channels), _flat_param(leak, channels), inner,
            order == "integrate-fire", reset == "soft", code, p1, p2, need_th, need_lk)
    if backend == "triton":
        gin, gth, glk = torch.ops.spikeforge.neuron_multistep_bwd(grad_spikes, *args)
    elif torch.compiler.is_compiling():
        gin, gth, glk = torch.ops.spikeforge.neuron_cpu_bwd(grad_spikes, *args)
    else:
        gin, gth, glk = kernels.cpu_kernel().neuron_backward(grad_spikes, *args)
    grad_threshold = _sum_to(gth, threshold).to(threshold.dtype) if need_th else None
    grad_leak = _sum_to(glk, leak).to(leak.dtype) if need_lk else None
    return gin.to(in_dtype), grad_threshold, grad_leak


def run_steps(currents, threshold, leak, *, surrogate, order="integrate-fire", reset="soft", u0=None):
    """Inference only (no autograd): ``(spikes, final membrane)`` from initial membrane ``u0`` (zero if None).

    Uses the Triton kernel (CUDA) or the compiled CPU kernel when one applies, else :func:`forward_loop`; all give
    identical spikes (float16/bfloat16 are computed in float32 by the Triton kernel).
    """
    with torch.no_grad():
        backend, layout = _kernel_layout(currents, threshold, leak, surrogate, order, reset)
        if backend == "triton" and (u0 is None or u0.shape == currents.shape[1:]):
            spikes, _, u = _triton_forward(currents, threshold, leak, layout, order, reset, keep_pre=False, u0=u0)
        elif backend == "cpp" and (u0 is None or (u0.dtype == currents.dtype and u0.is_contiguous())):
            spikes, _, u = _cpp_forward(currents, threshold, leak, layout, order, reset, keep_pre=False, u0=u0)
        else:
            spikes, _, u = forward_loop(currents, threshold, leak, order, reset, u0=u0, keep_pre=False)
    return spikes, u


def multistep(
    currents: torch.Tensor,
    threshold: torch.Tensor,
    leak: torch.Tensor,
    *,
    surrogate: Surrogate,
    order: str = "integrate-fire",
    reset: str = "soft",
    fused: bool = True,
) -> torch.Tensor:
    """Run ``T`` steps of the neuron over ``currents`` ``[T, B, ...]`` from zero state; returns spikes.

    ``threshold`` and ``leak`` are tensors broadcastable to one step ``[B, ...]`` (scalar or per channel).
    ``fused=True`` uses :class:`FusedMultiStep`; ``False`` the per-step reference. Both give the same values and
    gradients.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
    if fused:
        if torch.is_grad_enabled() and (currents.requires_grad or threshold.requires_grad or leak.requires_grad):
            return FusedMultiStep.apply(currents, threshold, leak, surrogate, order, reset)
        return run_steps(currents, threshold, leak, surrogate=surrogate, order=order, reset=reset)[0]
    return multistep_reference(currents, threshold, leak, surrogate=surrogate, order=order, reset=reset)


def check_kernels(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  surrogate: Surrogate | None = None) -> dict[selfcheck.KernelConfig, selfcheck.Outcome]:
    """Self-check the compiled kernel that ``device`` would use, for both orderings, both resets, scalar and
    per-channel parameters (``surrogate`` default: piecewise linear): ``{config: outcome}`` of ``device``'s checks
    so far in this process; empty when no compiled kernel applies there (or ``SPIKEFORGE_NO_SELFCHECK=1``)."""
    dev = torch.device(device)
    surrogate = surrogate or PiecewiseLinear()
    for order in ORDERS:
        for reset in RESETS:
            for shape in ((), (2, 1)):
                probe = torch.zeros(3, 1, 2, 1, device=dev, dtype=dtype)
                params = torch.ones(shape, device=dev, dtype=dtype)
                _kernel_layout(probe, params, params, surrogate, order, reset)
    return {k: v for k, v in selfcheck.results().items() if k.device == str(probe.device)}
