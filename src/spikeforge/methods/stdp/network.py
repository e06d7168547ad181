"""The Diehl & Cook (2015) two-layer network, batched and vectorized (Diehl & Cook, "Unsupervised learning of digit
recognition using spike-timing-dependent plasticity", Front. Comput. Neurosci. 9:99, 2015, Methods; and their Brian
code).

Layers: ``n_input`` Poisson inputs -> ``n_neurons`` excitatory LIF neurons with adaptive thresholds (all-to-all,
plastic weights ``W [n_input, n_neurons]``) -> as many inhibitory neurons (one-to-one excitation, weight ``w_ei``)
-> every excitatory neuron but the matching one (lateral inhibition, weight ``w_ie``): a soft winner-take-all.

Two neuron models (``NetConfig.model``):

* ``conductance`` (default; the paper and its Brian code): ``tau_m dv/dt = (v_rest - v) + g_e (E_exc - v) +
  g_i (E_inh - v)``; an input spike adds its weight to ``g_e``; conductances decay exponentially.
* ``current`` (faster option; BindsNET's ``DiehlAndCook2015`` simplification): an input spike adds its weight (mV)
  straight to ``v``; an inhibitory spike subtracts ``w_ie`` mV from the other excitatory neurons.

Discretization (documented in docs/stdp.md): the conductance membrane is integrated with exponential Euler (exact
for conductances held over a step; plain Euler is unstable when many inhibitory spikes arrive together), the
current-based one with its exact decay; a conductance
enters each step with its exact average over the step, ``g * tau/dt * (1 - exp(-dt/tau))``, so the total charge a
spike delivers (``w * tau``) does not depend on ``dt`` (with tau_ge = 1 ms and dt = 1 ms plain Euler would not be
usable). Within one step, input spikes act first, then excitatory neurons fire, then inhibitory neurons integrate
those spikes and fire; their inhibition reaches the excitatory layer one step later (a 1-step synaptic delay).

Batching (a deviation, docs/stdp.md): ``present`` simulates a batch of images at once, each with its own neuron state,
all with the same weights; the input->excitatory weights stay fixed during one presentation and the STDP updates of
all the batch's images are added to the weights after it (see :mod:`spikeforge.methods.stdp.rules`). Adaptive thresholds
rise per image during the presentation and the sum of all images' rises is added to ``theta`` afterwards.

Rest phase: instead of simulating 150 ms without input, every presentation starts from the resting state (v at
rest, conductances, traces and refractory timers at zero), i.e. the rest phase is taken as long enough to relax
completely (with tau_m = 100 ms, 150 ms would leave exp(-1.5) = 22 % of the membrane's deviation); the rest time
still counts for the slow decay of ``theta``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import torch

from spikeforge.config import Finite, NonNegFloat, NonNegInt, PosFloat, PosInt, config, from_dict
from spikeforge.kernels.build import load_extension

# Defaults of the current-based variant (BindsNET DiehlAndCook2015), used where the config leaves a field None.
_CURRENT = {"w_ei": 22.5, "w_ie": 17.5, "theta_init": 0.0, "offset": 0.0, "v_reset_e": -60.0, "norm": 78.4}
_CONDUCTANCE = {"w_ei": 10.4, "w_ie": 17.0, "theta_init": 20.0, "offset": 20.0, "v_reset_e": -65.0, "norm": 78.0}


@config
class NetConfig:
    """Network, input and learning-rule parameters (defaults: Diehl & Cook 2015 and their code).

    Times in ms, voltages in mV, rates in Hz. ``t_present``: presentation per image; ``rest``: rest after it
    (only used for theta's decay, see the module docstring). ``max_rate``: rate of a white pixel (255/8 * 2 Hz);
    ``rate_step``: added to it on each re-presentation of an image that made fewer than ``min_spikes`` excitatory
    spikes (at most ``max_retries`` times). Fields left ``None`` take the neuron model's defaults
    (conductance: w_ei 10.4, w_ie 17, theta_init 20, offset 20, v_reset_e -65, norm 78; current: 22.5, 17.5, 0, 0,
    -60, 78.4). ``rule``: ``trace`` (the reference code's rule) or ``powerlaw`` (see :mod:`.rules`).
    """

    n_input: PosInt = 784
    n_neurons: PosInt = 100
    model: Literal["conductance", "current"] = "conductance"
    dt: PosFloat = 1.0
    t_present: PosFloat = 250.0
    rest: NonNegFloat = 150.0
    max_rate: NonNegFloat = 63.75
    rate_step: NonNegFloat = 31.875
    min_spikes: NonNegInt = 5
    max_retries: NonNegInt = 5
    # excitatory layer
    tau_m_e: PosFloat = 100.0
    v_rest_e: Finite = -65.0
    v_reset_e: Finite | None = None
    v_thresh_e: Finite = -52.0
    offset: Finite | None = None
    refrac_e: NonNegFloat = 5.0
    e_exc: Finite = 0.0
    e_inh_e: Finite = -100.0
    tau_ge: PosFloat = 1.0
    tau_gi: PosFloat = 2.0
    theta_init: Finite | None = None
    theta_plus: NonNegFloat = 0.05
    tau_theta: PosFloat = 1e7
    # inhibitory layer
    tau_m_i: PosFloat = 10.0
    v_rest_i: Finite = -60.0
    v_reset_i: Finite = -45.0
    v_thresh_i: Finite = -40.0
    refrac_i: NonNegFloat = 2.0
    e_inh_i: Finite = -85.0
    w_ei: NonNegFloat | None = None
    w_ie: NonNegFloat | None = None
    # input weights
    w_max: PosFloat = 1.0
    w_init: NonNegFloat = 0.3
    norm: PosFloat | None = None
    # learning
    rule: Literal["trace", "powerlaw"] = "trace"
    nu_pre: NonNegFloat = 1e-4
    nu_post: NonNegFloat = 1e-2
    tau_pre: PosFloat = 20.0
    tau_post1: PosFloat = 20.0
    tau_post2: PosFloat = 40.0
    eta: NonNegFloat = 1e-2
    x_tar: Finite = 0.4
    mu: NonNegFloat = 0.2
    powerlaw_trace: Literal["additive", "nearest"] = "additive"
    batch_reduce: Literal["sum", "mean"] = "sum"
    input_chunk: PosInt = 50

    def __post_init__(self) -> None:
        defaults = _CURRENT if self.model == "current" else _CONDUCTANCE
        for k, v in defaults.items():
            if getattr(self, k) is None:
                setattr(self, k, v)

    @property
    def steps(self) -> int:
        return max(1, int(round(self.t_present / self.dt)))

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "net") -> "NetConfig":
        return from_dict(cls, d, where)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_KERNEL: dict = {}


def cpu_kernel():
    """The compiled presentation loop (``dc_cpu.cpp``, built on first use by
    :func:`spikeforge.kernels.build.load_extension`), or None when it cannot be built, ``SPIKEFORGE_NO_CPP=1`` or
    ``_KERNEL["disabled"]`` (tests); then the PyTorch loop of :meth:`DiehlCook.present` runs instead."""
    if _KERNEL.get("disabled"):
        return None
    return load_extension("spikeforge_stdp_dc_cpu_v2", Path(__file__).with_name("dc_cpu.cpp"), ["dc_present"],
                          native=False, what="STDP compiled simulation loop")


def _step_average(tau: float, dt: float) -> float:
    """Mean over one step of an exponential kernel that starts at 1: ``tau/dt * (1 - exp(-dt/tau))``."""
    return tau / dt * (1.0 - math.exp(-dt / tau))


class DiehlCook(torch.nn.Module):
    """Weights (``W``), adaptive thresholds (``theta``) and the pruning mask (``mask``) of the network.

    ``present`` simulates a batch of images; ``normalize`` rescales each neuron's surviving input weights to sum
    ``norm``. Everything is a buffer so ``state_dict`` holds the whole learned state.
    """

    def __init__(self, cfg: NetConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        w = (torch.rand(cfg.n_input, cfg.n_neurons, generator=generator) + 0.01) * cfg.w_init
        self.register_buffer("W", w.clamp_(0, cfg.w_max))
        self.register_buffer("theta", torch.full((cfg.n_neurons,), float(cfg.theta_init)))
        self.register_buffer("mask", torch.ones(cfg.n_input, cfg.n_neurons, dtype=torch.bool))
        # each neuron's weight-sum target: ``norm``, times the weight fraction its synapses kept at each pruning
        self.register_buffer("norm_target", torch.full((cfg.n_neurons,), float(cfg.norm)))

    # ------------------------------------------------------------------ weights
    @torch.no_grad()
    def normalize(self) -> None:
        """Scale each neuron's (surviving) input weights to sum ``norm_target`` (Diehl & Cook, before each image:
        ``norm``; after pruning, ``norm`` times the weight fraction the neuron kept, see :meth:`prune_to`)."""
        self.W.mul_(self.mask)
        s = self.W.sum(0, keepdim=True)
        self.W.mul_(torch.where(s > 0, self.norm_target[None, :] / s.clamp_min(1e-12), torch.ones_like(s)))

    @torch.no_grad()
    def prune_to(self, mask: torch.Tensor) -> None:
        """Apply a (smaller) mask; each neuron's normalization target shrinks by the weight fraction it kept, so
        pruning removes input instead of redistributing the pruned weight over the survivors."""
        before = self.W.sum(0)
        self.mask.copy_(mask & self.mask)
        self.W.mul_(self.mask)
        after = self.W.sum(0)
        self.norm_target.mul_(torch.where(before > 0, after / before.clamp_min(1e-12), torch.ones_like(before)))

    # ------------------------------------------------------------------ simulation
    @torch.no_grad()
    def present(self, x: torch.Tensor, *, learn: bool, generator: torch.Generator | None = None,
                retry: torch.Tensor | None = None, record_v: bool = False) -> dict:
        """Present images ``x [B, n_input]`` (intensities in [0, 1]) once, for ``t_present`` ms.

        Returns ``{"counts": [B, N] excitatory spike counts}``, plus with ``learn=True`` ``"spikes_in"`` (bool
        ``[T, B, n_input]``) and ``"spikes_out"`` (float ``[T, B, N]``) for the STDP rule, and ``"theta_rise"``
        ([B, N] threshold increments). ``retry`` ([B] ints) raises each image's input rate by ``rate_step`` per
        retry. ``record_v``: also return the excitatory membrane potential after each step (``"v" [T, B, N]``,
        PyTorch loop only). Does not change any parameter.
        """
        cfg = self.cfg
        B, n_in = x.shape
        rate = cfg.max_rate if retry is None else cfg.max_rate + cfg.rate_step * retry.to(x.dtype)[:, None]
        p = (x * rate * (cfg.dt / 1000.0)).clamp_(0, 1)  # spike probability per step
        # Poisson input, drawn only for the (image, pixel) pairs with a non-zero rate, as sparse events; the input
        # of a chunk of steps is one sparse [steps*B, n_input] x dense [n_input, N] product.
        pair_b, pair_i = (p > 0).nonzero(as_tuple=True)
        inputs = _Inputs(pair_b, pair_i, p[pair_b, pair_i], B, n_in, self.W, generator)
        thr = (self.theta + (cfg.v_thresh_e - cfg.offset)).expand(B, cfg.n_neurons).clone()
        thr0 = thr.clone() if learn else None
        in_hist = torch.zeros(cfg.steps, B, n_in, dtype=torch.bool, device=x.device) if learn else None
        kern = cpu_kernel() if x.device.type == "cpu" and x.dtype == torch.float32 and not record_v else None
        if kern is not None:  # compiled loop (same arithmetic as the PyTorch loop)
            res = self._present_compiled(kern, inputs, thr, in_hist, learn)
        else:
            res = self._present_loop(inputs, thr, in_hist, learn, record_v, x.device)
        if learn:
            res["spikes_in"] = in_hist
            res["theta_rise"] = thr - thr0
        return res

    def _constants(self) -> SimpleNamespace:
        """Per-step factors of the discretized dynamics (see the module docstring)."""
        cfg, dt = self.cfg, self.cfg.dt
        return SimpleNamespace(
            a_e=dt / cfg.tau_m_e, a_i=dt / cfg.tau_m_i, d_ge=math.exp(-dt / cfg.tau_ge),
            d_gi=math.exp(-dt / cfg.tau_gi), k_ge=_step_average(cfg.tau_ge, dt), k_gi=_step_average(cfg.tau_gi, dt),
            ref_e=round(cfg.refrac_e / dt), ref_i=round(cfg.refrac_i / dt), d_m_e=math.exp(-dt / cfg.tau_m_e),
            d_m_i=math.exp(-dt / cfg.tau_m_i), conductance=cfg.model == "conductance")

    def _present_compiled(self, kern, inputs: "_Inputs", thr, in_hist, learn: bool) -> dict:
        cfg, k = self.cfg, self._constants()
        T, chunk = cfg.steps, max(1, int(cfg.input_chunk))
        I = torch.cat([inputs.chunk(min(chunk, T - t), in_hist[t:t + chunk] if learn else None)
                       for t in range(0, T, chunk)])
        params = [1.0 if k.conductance else 0.0, cfg.v_rest_e, cfg.v_reset_e, k.a_e, k.d_ge, k.d_gi, k.k_ge, k.k_gi,
                  cfg.e_exc, cfg.e_inh_e, float(k.ref_e), k.d_m_e, cfg.v_rest_i, cfg.v_reset_i, cfg.v_thresh_i, k.a_i,
                  float(k.ref_i), k.d_m_i, cfg.w_ei, cfg.w_ie, cfg.theta_plus, 1.0 if learn else 0.0]
        spikes = kern.dc_present(I.contiguous(), thr, params).to(torch.float32)
        res = {"counts": spikes.sum(0)}
        if learn:
            res["spikes_out"] = spikes
        return res

    def _present_loop(self, inputs: "_Inputs", thr, in_hist, learn: bool, record_v: bool, dev) -> dict:
        cfg, k = self.cfg, self._constants()
        T, B, N, chunk = cfg.steps, inputs.B, cfg.n_neurons, max(1, int(cfg.input_chunk))
        s = _initial_state(cfg, B, N, dev)
        out_hist = torch.zeros(T, B, N, device=dev) if learn else None
        v_hist = torch.zeros(T, B, N, device=dev) if record_v else None
        I = None
        for t in range(T):
            c = t % chunk
            if c == 0:
                n = min(chunk, T - t)
                I = inputs.chunk(n, in_hist[t:t + n] if learn else None)
            sf = _excitatory_step(cfg, k, s, I[c], thr)
            if record_v:
                v_hist[t].copy_(s.v)
            if learn:
                thr.add_(sf, alpha=cfg.theta_plus)
                out_hist[t].copy_(sf)
            _inhibitory_step(cfg, k, s, sf)
        res = {"counts": s.counts}
        if record_v:
            res["v"] = v_hist
        if learn:
            res["spikes_out"] = out_hist
        return res


def _initial_state(cfg: NetConfig, B: int, N: int, dev) -> SimpleNamespace:
    """Every presentation starts from rest: v at rest, conductances, refractory timers and inhibition at zero."""
    def zeros():
        return torch.zeros(B, N, device=dev)

    return SimpleNamespace(v=torch.full((B, N), cfg.v_rest_e, device=dev), ref=zeros(), ge=zeros(), gi=zeros(),
                           vi=torch.full((B, N), cfg.v_rest_i, device=dev), gei=zeros(), refi=zeros(),
                           inh=zeros(), counts=zeros(), tmp=torch.empty(B, N, device=dev),
                           tmp2=torch.empty(B, N, device=dev))


def _excitatory_step(cfg: NetConfig, k: SimpleNamespace, s: SimpleNamespace, I_t: torch.Tensor,
                     thr: torch.Tensor) -> torch.Tensor:
    """One step of the excitatory layer (input, membrane, threshold, reset, refractory); returns its spikes."""
    v, tmp, tmp2 = s.v, s.tmp, s.tmp2
    active = s.ref <= 0
    if k.conductance:
        s.ge.mul_(k.d_ge).add_(I_t)
        s.gi.mul_(k.d_gi).add_(s.inh)
        # exponential Euler: v -> v_inf + (v - v_inf) exp(-a G), G = 1 + k_ge ge + k_gi gi,
        # v_inf = (v_rest + k_ge ge E_exc + k_gi gi E_inh) / G
        torch.mul(s.ge, k.k_ge, out=tmp)
        tmp.add_(s.gi, alpha=k.k_gi).add_(1.0)                               # G
        torch.mul(s.ge, k.k_ge * cfg.e_exc, out=tmp2)
        tmp2.add_(s.gi, alpha=k.k_gi * cfg.e_inh_e).add_(cfg.v_rest_e).div_(tmp)  # v_inf
        tmp.mul_(-k.a_e).exp_()                                              # exp(-a G)
        v_new = (v - tmp2).mul_(tmp).add_(tmp2)
        v.copy_(torch.where(active, v_new, v))
    else:
        # v = v_rest + (v - v_rest) exp(-dt/tau) + input (not while refractory) - inhibition
        v.sub_(cfg.v_rest_e).mul_(k.d_m_e).add_(cfg.v_rest_e)
        torch.sub(I_t, s.inh, out=tmp)
        v.addcmul_(tmp, active)
    spk = v > thr
    v.masked_fill_(spk, cfg.v_reset_e)
    s.ref.sub_(1.0).masked_fill_(spk, float(k.ref_e))
    sf = spk.to(v.dtype)
    s.counts.add_(sf)
    return sf


def _inhibitory_step(cfg: NetConfig, k: SimpleNamespace, s: SimpleNamespace, sf: torch.Tensor) -> None:
    """One step of the inhibitory layer driven by the excitatory spikes ``sf``; sets the lateral inhibition that
    reaches the excitatory layer at the next step."""
    tmp, tmp2 = s.tmp, s.tmp2
    active_i = s.refi <= 0
    if k.conductance:
        s.gei.mul_(k.d_ge).add_(sf, alpha=cfg.w_ei)
        torch.mul(s.gei, k.k_ge, out=tmp).add_(1.0)
        torch.mul(s.gei, k.k_ge * cfg.e_exc, out=tmp2).add_(cfg.v_rest_i).div_(tmp)
        tmp.mul_(-k.a_i).exp_()
        vi_new = (s.vi - tmp2).mul_(tmp).add_(tmp2)
        s.vi.copy_(torch.where(active_i, vi_new, s.vi))
    else:
        s.vi.sub_(cfg.v_rest_i).mul_(k.d_m_i).add_(cfg.v_rest_i)
        s.vi.addcmul_(sf, active_i, value=cfg.w_ei)
    spi = s.vi > cfg.v_thresh_i
    s.vi.masked_fill_(spi, cfg.v_reset_i)
    s.refi.sub_(1.0).masked_fill_(spi, float(k.ref_i))
    sfi = spi.to(sf.dtype)
    # lateral inhibition: every excitatory neuron but the matching one
    torch.sub(sfi.sum(1, keepdim=True), sfi, out=s.inh).mul_(cfg.w_ie)


@dataclass
class _Inputs:
    """The Poisson input of one presentation: the (image, pixel) pairs with a non-zero rate and their spike
    probability per step; :meth:`chunk` draws the next steps and returns their input currents."""

    pair_b: torch.Tensor
    pair_i: torch.Tensor
    pair_p: torch.Tensor
    B: int
    n_in: int
    W: torch.Tensor
    generator: torch.Generator | None

    def chunk(self, n: int, hist: torch.Tensor | None) -> torch.Tensor:
        return _input_chunk(self.pair_b, self.pair_i, self.pair_p, n, self.B, self.n_in, self.W, self.generator,
                            hist)


def _input_chunk(pair_b, pair_i, pair_p, n, B, n_in, W, generator, hist):
    """Input conductances ``[n, B, N]`` of ``n`` steps: Bernoulli spikes of the listed (image, pixel) pairs."""
    N = W.shape[1]
    if pair_p.numel() == 0:
        return torch.zeros(n, B, N, device=W.device, dtype=W.dtype)
    s = torch.rand(n, pair_p.numel(), generator=generator, device=W.device) < pair_p
    t, j = s.nonzero(as_tuple=True)
    b, cols = pair_b[j], pair_i[j]
    rows = t * B + b  # sorted: nonzero() is row-major and the pairs are sorted by image
    if hist is not None:
        hist[t, b, cols] = True
    crow = torch.zeros(n * B + 1, dtype=torch.int64, device=W.device)
    crow[1:] = torch.bincount(rows, minlength=n * B).cumsum(0)
    S = csr(crow, cols, torch.ones(cols.numel(), dtype=W.dtype, device=W.device), (n * B, n_in))
    return (S @ W).view(n, B, N)


def csr(crow, cols, values, size):
    """A sparse CSR matrix (without torch's 'beta' warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, values, size=size, check_invariants=False)


def images_to_rates_input(x: torch.Tensor) -> torch.Tensor:
    """Flatten images ``[B, C, H, W]`` (or ``[B, D]``) in [0, 1] to ``[B, D]`` float32."""
    return x.reshape(x.shape[0], -1).float()


__all__ = ["DiehlCook", "NetConfig", "images_to_rates_input"]
