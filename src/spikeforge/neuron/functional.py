"""Integrate-and-fire / leaky integrate-and-fire dynamics as pure functions (methods.md §1.1-1.3).

Symbols (as in the DIET-SNN / IIR-SNN papers): input current ``I[t] = W * s_prev[t]``, membrane ``U``, threshold
``V_th`` (``threshold``), multiplicative leak ``lambda`` (``leak``; 1.0 = IF), spike ``s``.

Two update orderings exist in the reference code:

* ``"integrate-fire"`` (ordering B, the default; DIET HEAD, IIR, BNTT HEAD)::

      U'[t] = lambda * U[t-1] + I[t];   z[t] = U'[t] / V_th - 1;   s[t] = H(z[t]);   U[t] = U'[t] - V_th * s[t]

* ``"fire-integrate"`` (ordering A, one step of delay per layer; hybrid, Sharmin, SAM)::

      z[t] = U[t-1] / V_th - 1;   s[t] = H(z[t]);   U[t] = lambda * U[t-1] + I[t] - V_th * s[t]

``H(z) = 1`` for ``z >= 0``, decided as ``U >= V_th`` (so a membrane exactly at threshold fires, and with IF + soft reset + constant current ``I`` the spike
count after ``T`` steps is ``floor(T * I / V_th)`` clipped to ``[0, T]``). Reset is ``"soft"`` (subtract ``V_th``)
or ``"hard"`` (to zero). The reset path is detached (no gradient into ``U`` through ``s``) except the threshold's
own term ``-s`` of the soft reset (§1.2).

The *pre-fire potential* ``P[t]`` is the membrane the spike decision looks at (``U'[t]`` in ordering B, ``U[t-1]``
in ordering A). The fused path saves only ``P`` for backward; spikes, surrogate values and earlier membranes are
recomputed from it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..surrogate import NEVER_SPIKED, Surrogate

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
    """Plain per-step loop over ``currents`` ``[T, B, ...]`` starting from zero state; returns spikes ``[T, B, ...]``."""
    state = initial_state(currents[0], surrogate)
    out = []
    for t in range(currents.shape[0]):
        s, state = step(currents[t], state, threshold, leak, t, surrogate=surrogate, order=order, reset=reset)
        out.append(s)
    return torch.stack(out)


def time_since_last_spike(spikes: torch.Tensor) -> torch.Tensor:
    """``dt[t] = t - (time of the most recent spike strictly before t)``; ``t + 1000`` if there was none."""
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
    stays on step-sized tensors (cache friendly, no large temporaries).
    """

    @staticmethod
    def forward(ctx, currents, threshold, leak, surrogate, order, reset):
        spikes, pre_all, _ = forward_loop(currents, threshold, leak, order, reset)
        ctx.surrogate, ctx.order, ctx.reset = surrogate, order, reset
        ctx.in_dtype = currents.dtype
        ctx.save_for_backward(pre_all, threshold, leak)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        pre_all, threshold, leak = ctx.saved_tensors
        surrogate, soft = ctx.surrogate, ctx.reset == "soft"
        integrate_first = ctx.order == "integrate-fire"
        need_th, need_lk = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        steps = pre_all.shape[0]
        grad_in = torch.empty(pre_all.shape, dtype=ctx.in_dtype, device=pre_all.device)
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
            if q_next is None:
                q = a
            else:
                q = torch.addcmul(a, q_next, leak * (1.0 - s) if not soft else leak)
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
        return grad_in, grad_threshold, grad_leak, None, None, None


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
        return FusedMultiStep.apply(currents, threshold, leak, surrogate, order, reset)
    return multistep_reference(currents, threshold, leak, surrogate=surrogate, order=order, reset=reset)
