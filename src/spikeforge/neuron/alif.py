"""Adaptive-threshold LIF (ALIF): the adaptive neuron of Bellec, Salaj, Subramoney, Legenstein & Maass 2018 ("Long
short-term memory and learning-to-learn in networks of spiking neurons", NeurIPS), integrate-then-fire::

    a[t] = rho * a[t-1] + s[t-1]                 adaptation (a[0] = 0), rho = exp(-dt / tau_a) in [0, 1]
    A[t] = V_th + beta * a[t]                    effective threshold, beta >= 0
    P[t] = lambda * U[t-1] + I[t]                pre-fire potential
    s[t] = H(P[t] / A[t] - 1)                    decided as P[t] >= A[t]
    U[t] = P[t] - A[t] s[t]  (soft)  or  P[t] (1 - s[t])  (hard)

Every spike raises the neuron's threshold by ``beta``, decaying by ``rho`` per step. Bellec et al. scale each spike's
increment by ``(1 - rho)`` (their ``beta = 1.8`` with ``tau_a`` of hundreds of steps); that factor is folded into
``beta`` here: theirs corresponds to ``beta = 1.8 * (1 - rho)``. The defaults, ``beta = 0.07`` and ``rho = 0.95``
(``tau_a`` about 20 steps), adapt mildly over the short simulations (T of 1 to 30) of the image classifiers.

Gradients use the surrogate in ``z = P / A - 1`` (Neftci, Mostafa & Zenke 2019). As for the LIF (Rathi & Roy 2020,
DIET-SNN), spikes enter the state detached: the reset and the adaptation carry no gradient, except the threshold's
own term ``-s`` of the soft reset. So the BPTT is the LIF's with a per-element, per-step threshold ``A[t]``, and the
fused path (:class:`FusedALIF`) saves only ``P`` and ``A`` and runs it by hand; :func:`alif_multistep_reference`
is the per-step reference with ordinary autograd.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from spikeforge.errors import ConfigError
from spikeforge.neuron import functional as F
from spikeforge.neuron.modules import SpikingNeuron
from spikeforge.neuron.registry import NEURONS
from spikeforge.neuron.surrogate import NEVER_SPIKED, Surrogate


class ALIFState(NamedTuple):
    """Membrane ``u`` (``U[t-1]``), adaptation ``a`` for the next step, last spike time (STDB surrogate only)."""

    u: torch.Tensor
    a: torch.Tensor
    last_spike: torch.Tensor | None = None


def alif_initial_state(like: torch.Tensor, threshold: torch.Tensor, surrogate: Surrogate | None = None) -> ALIFState:
    """Zero membrane and adaptation (in the dtype the dynamics compute in); no neuron has spiked."""
    zeros = torch.zeros(like.shape, dtype=torch.promote_types(like.dtype, threshold.dtype), device=like.device)
    last = torch.full_like(zeros, NEVER_SPIKED) if surrogate is not None and surrogate.needs_spike_time else None
    return ALIFState(zeros, zeros.clone(), last)


def alif_step(current, state: ALIFState, threshold, leak, t: int, *, beta: float, adapt_decay: float,
              surrogate: Surrogate, reset: str = "soft") -> tuple[torch.Tensor, ALIFState]:
    """One step of the ALIF neuron (the reference, ordinary autograd): ``(s[t], state after step t)``."""
    pre = leak * state.u + current
    eff = threshold + beta * state.a
    dt = t - state.last_spike if surrogate.needs_spike_time else None
    s = F.spike(pre, eff, surrogate, dt)
    sd = s.detach()
    u = pre - eff * sd if reset == "soft" else pre * (1.0 - sd)
    a = adapt_decay * state.a + sd
    last = None
    if surrogate.needs_spike_time:
        last = torch.where(sd.bool(), torch.full_like(state.last_spike, float(t)), state.last_spike)
    return s, ALIFState(u, a, last)


def alif_multistep_reference(currents, threshold, leak, *, beta: float, adapt_decay: float, surrogate: Surrogate,
                             reset: str = "soft") -> torch.Tensor:
    """Per-step loop of :func:`alif_step` over ``currents`` ``[T, B, ...]`` from the zero state; spikes out."""
    state = alif_initial_state(currents[0], threshold, surrogate)
    out = []
    for t in range(currents.shape[0]):
        s, state = alif_step(currents[t], state, threshold, leak, t, beta=beta, adapt_decay=adapt_decay,
                             surrogate=surrogate, reset=reset)
        out.append(s)
    return torch.stack(out)


def alif_forward_loop(currents, threshold, leak, *, beta: float, adapt_decay: float, reset: str = "soft",
                      state: tuple | None = None, keep: bool = True):
    """Forward over ``currents`` ``[T, B, ...]`` without autograd: ``(spikes, P, A, (U[T-1], a[T]))``.

    Starts from ``state = (u, a)`` (zero if None); ``P`` and ``A`` are None unless ``keep``. Same arithmetic as
    :func:`alif_step`, so the spikes are bit-identical to the reference.
    """
    with torch.no_grad():
        u, a = state if state is not None else alif_initial_state(currents[0], threshold)[:2]
        spikes = torch.empty(currents.shape, dtype=u.dtype, device=currents.device)
        pre_all = torch.empty_like(spikes) if keep else None
        eff_all = torch.empty_like(spikes) if keep else None
        for t in range(currents.shape[0]):
            pre = leak * u + currents[t]
            eff = threshold + beta * a
            s = torch.ge(pre, eff, out=spikes[t])
            u = pre - eff * s if reset == "soft" else pre * (1.0 - s)
            a = adapt_decay * a + s
            if keep:
                pre_all[t] = pre
                eff_all[t] = eff
    return spikes, pre_all, eff_all, (u, a)


class FusedALIF(torch.autograd.Function):
    """All ``T`` steps as one autograd node; backward is the hand-derived BPTT (see the module docstring).

    With ``g[t] = dL/ds[t] * g(z[t]) / A[t]``: ``q[t] = c[t] q[t+1] + g[t]``, ``c = lambda`` (soft) or
    ``lambda (1 - s)`` (hard), ``dL/dI[t] = q[t]``; ``dL/dlambda = sum q[t+1] U[t]``;
    ``dL/dV_th = sum (-g[t] P[t] / A[t] - lambda q[t+1] s[t] [soft])``.
    """

    @staticmethod
    def forward(ctx, currents, threshold, leak, beta, adapt_decay, surrogate, reset):
        spikes, pre, eff, _ = alif_forward_loop(currents, threshold, leak, beta=beta, adapt_decay=adapt_decay,
                                                reset=reset)
        ctx.surrogate, ctx.soft, ctx.in_dtype = surrogate, reset == "soft", currents.dtype
        ctx.save_for_backward(pre, eff, threshold, leak)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        pre_all, eff_all, threshold, leak = ctx.saved_tensors
        need_th, need_lk = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_in = torch.empty(pre_all.shape, dtype=ctx.in_dtype, device=pre_all.device)
        g_th = g_lk = torch.zeros((), dtype=pre_all.dtype, device=pre_all.device)
        dt_all = None
        if ctx.surrogate.needs_spike_time:
            dt_all = F.time_since_last_spike(torch.ge(pre_all, eff_all).to(pre_all.dtype))
        q_next = None  # q[t+1]
        for t in range(pre_all.shape[0] - 1, -1, -1):
            pre, eff = pre_all[t], eff_all[t]
            s = (pre >= eff).to(pre.dtype)
            a = grad_spikes[t] * ctx.surrogate.grad(pre / eff - 1.0, None if dt_all is None else dt_all[t]) / eff
            if need_th:
                g_th = g_th - F._sum_to(a * pre / eff, threshold)
            q = a if q_next is None else torch.addcmul(a, q_next, leak if ctx.soft else leak * (1.0 - s))
            grad_in[t] = q
            if q_next is not None:
                if need_lk:
                    g_lk = g_lk + F._sum_to(q_next * (pre - eff * s if ctx.soft else pre * (1.0 - s)), leak)
                if need_th and ctx.soft:
                    g_th = g_th - F._sum_to(q_next * s, threshold) * leak
            q_next = q
        grad_th = F._sum_to(g_th.expand(threshold.shape) if g_th.dim() == 0 else g_th, threshold) if need_th else None
        grad_lk = F._sum_to(g_lk.expand(leak.shape) if g_lk.dim() == 0 else g_lk, leak) if need_lk else None
        return grad_in, grad_th, grad_lk, None, None, None, None


def alif_multistep(currents, threshold, leak, *, beta: float, adapt_decay: float, surrogate: Surrogate,
                   reset: str = "soft", fused: bool = True) -> torch.Tensor:
    """ALIF spikes for ``currents`` ``[T, B, ...]`` from the zero state; ``threshold`` and ``leak`` broadcast to one
    step. ``fused=True``: :class:`FusedALIF` (or the plain loop when no gradient is needed); ``False``: the
    per-step reference. Both give the same spikes and gradients."""
    if reset not in F.RESETS:
        raise ValueError(f"reset must be one of {F.RESETS}, got {reset!r}")
    if not fused:
        return alif_multistep_reference(currents, threshold, leak, beta=beta, adapt_decay=adapt_decay,
                                        surrogate=surrogate, reset=reset)
    if torch.is_grad_enabled() and (currents.requires_grad or threshold.requires_grad or leak.requires_grad):
        return FusedALIF.apply(currents, threshold, leak, beta, adapt_decay, surrogate, reset)
    return alif_forward_loop(currents, threshold, leak, beta=beta, adapt_decay=adapt_decay, reset=reset,
                             keep=False)[0]


def _bounded(name: str, value, low: float, high: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"alif {name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and low <= v <= high):
        raise ConfigError(f"alif {name} must lie in [{low}, {high}], got {value!r}")
    return v


@NEURONS.register("alif")
class ALIFNeuron(SpikingNeuron):
    """A layer of adaptive-threshold LIF neurons (Bellec et al. 2018; module docstring): the LIF layer's threshold,
    leak, per-channel and learnable options, plus ``beta`` (threshold increase per spike, >= 0) and ``adapt_decay``
    (``rho`` in [0, 1], ``exp(-dt / tau_a)``), fixed. Integrate-then-fire only; streaming evaluation carries
    ``(U, a)``, the differentiable carry (checkpoint_chunk) is not supported."""

    def __init__(self, threshold: float = 1.0, leak: float = 1.0, *, beta: float = 0.07, adapt_decay: float = 0.95,
                 **kwargs):
        super().__init__(threshold, leak, **kwargs)
        if self.order != "integrate-fire":
            raise ConfigError(f"the alif neuron integrates then fires; order {self.order!r} is not supported")
        self.beta = _bounded("beta", beta, 0.0, math.inf)
        self.adapt_decay = _bounded("adapt_decay", adapt_decay, 0.0, 1.0)

    def _dynamics(self, x, th, lk):
        return alif_multistep(x, th, lk, beta=self.beta, adapt_decay=self.adapt_decay, surrogate=self.surrogate,
                              reset=self.reset, fused=self.fused)

    def _stream_run(self, x, th, lk, state):
        spikes, _, _, state = alif_forward_loop(x, th, lk, beta=self.beta, adapt_decay=self.adapt_decay,
                                                reset=self.reset, state=state, keep=False)
        return spikes, state

    def start_carry(self, u0=None, keep_last=True):
        raise ConfigError("differentiable state carry (checkpoint_chunk) is not implemented for the alif neuron")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta:.4g}, adapt_decay={self.adapt_decay:.4g}"
