"""The Diehl & Cook (2015) two-layer network, batched and vectorized (methods.md §6.2).

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
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from spikeforge.errors import ConfigError

# Defaults of the current-based variant (BindsNET DiehlAndCook2015), used where the config leaves a field None.
_CURRENT = {"w_ei": 22.5, "w_ie": 17.5, "theta_init": 0.0, "offset": 0.0, "v_reset_e": -60.0, "norm": 78.4}
_CONDUCTANCE = {"w_ei": 10.4, "w_ie": 17.0, "theta_init": 20.0, "offset": 20.0, "v_reset_e": -65.0, "norm": 78.0}


@dataclass
class NetConfig:
    """Network, input and learning-rule parameters (defaults: Diehl & Cook's code, methods.md §6.2).

    Times in ms, voltages in mV, rates in Hz. ``t_present``: presentation per image; ``rest``: rest after it
    (only used for theta's decay, see the module docstring). ``max_rate``: rate of a white pixel (255/8 * 2 Hz);
    ``rate_step``: added to it on each re-presentation of an image that made fewer than ``min_spikes`` excitatory
    spikes (at most ``max_retries`` times). Fields left ``None`` take the neuron model's defaults
    (conductance: w_ei 10.4, w_ie 17, theta_init 20, offset 20, v_reset_e -65, norm 78; current: 22.5, 17.5, 0, 0,
    -60, 78.4). ``rule``: ``trace`` (the reference code's rule) or ``powerlaw`` (see :mod:`.rules`).
    """

    n_input: int = 784
    n_neurons: int = 100
    model: str = "conductance"
    dt: float = 1.0
    t_present: float = 250.0
    rest: float = 150.0
    max_rate: float = 63.75
    rate_step: float = 31.875
    min_spikes: int = 5
    max_retries: int = 5
    # excitatory layer
    tau_m_e: float = 100.0
    v_rest_e: float = -65.0
    v_reset_e: float | None = None
    v_thresh_e: float = -52.0
    offset: float | None = None
    refrac_e: float = 5.0
    e_exc: float = 0.0
    e_inh_e: float = -100.0
    tau_ge: float = 1.0
    tau_gi: float = 2.0
    theta_init: float | None = None
    theta_plus: float = 0.05
    tau_theta: float = 1e7
    # inhibitory layer
    tau_m_i: float = 10.0
    v_rest_i: float = -60.0
    v_reset_i: float = -45.0
    v_thresh_i: float = -40.0
    refrac_i: float = 2.0
    e_inh_i: float = -85.0
    w_ei: float | None = None
    w_ie: float | None = None
    # input weights
    w_max: float = 1.0
    w_init: float = 0.3
    norm: float | None = None
    # learning
    rule: str = "trace"
    nu_pre: float = 1e-4
    nu_post: float = 1e-2
    tau_pre: float = 20.0
    tau_post1: float = 20.0
    tau_post2: float = 40.0
    eta: float = 1e-2
    x_tar: float = 0.4
    mu: float = 0.2
    powerlaw_trace: str = "additive"
    batch_reduce: str = "sum"
    input_chunk: int = 50

    def __post_init__(self) -> None:
        if self.model not in ("conductance", "current"):
            raise ConfigError(f"net.model must be 'conductance' or 'current', got {self.model!r}")
        if self.rule not in ("trace", "powerlaw"):
            raise ConfigError(f"net.rule must be 'trace' or 'powerlaw', got {self.rule!r}")
        if self.powerlaw_trace not in ("additive", "nearest"):
            raise ConfigError(f"net.powerlaw_trace must be 'additive' or 'nearest', got {self.powerlaw_trace!r}")
        if self.batch_reduce not in ("sum", "mean"):
            raise ConfigError(f"net.batch_reduce must be 'sum' or 'mean', got {self.batch_reduce!r}")
        defaults = _CURRENT if self.model == "current" else _CONDUCTANCE
        for k, v in defaults.items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        for k in ("dt", "t_present", "tau_m_e", "tau_m_i", "tau_ge", "tau_gi", "tau_pre", "tau_post1", "tau_post2",
                  "tau_theta", "w_max", "norm"):
            if not float(getattr(self, k)) > 0:
                raise ConfigError(f"net.{k} must be positive, got {getattr(self, k)!r}")
        if self.n_input < 1 or self.n_neurons < 1:
            raise ConfigError("net.n_input and net.n_neurons must be positive")

    @property
    def steps(self) -> int:
        return max(1, int(round(self.t_present / self.dt)))

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "net") -> "NetConfig":
        from spikeforge.engine.recipe import config_from_dict

        return config_from_dict(cls, d, where)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_KERNEL: dict = {}


def cpu_kernel():
    """The compiled presentation loop (``dc_cpu.cpp``, built on first use and cached by torch), or None when it
    cannot be built or ``SPIKEFORGE_NO_CPP=1``; then the PyTorch loop of :meth:`DiehlCook.present` runs instead."""
    if os.environ.get("SPIKEFORGE_NO_CPP", "") in ("1", "true", "yes") or _KERNEL.get("disabled"):
        return None
    if "module" not in _KERNEL:
        module = None
        try:
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            from torch.utils.cpp_extension import load_inline

            src = Path(__file__).with_name("dc_cpu.cpp").read_text()
            module = load_inline(name="spikeforge_stdp_dc_cpu_v2", cpp_sources=[src], functions=["dc_present"],
                                 extra_cflags=["-O3", "-ffp-contract=off", "-fopenmp"],
                                 extra_ldflags=["-fopenmp"], verbose=False)
        except Exception as exc:  # no compiler, no ninja, read-only cache ...
            warnings.warn(f"spikeforge.methods.stdp: compiled simulation loop unavailable ({type(exc).__name__}); "
                          "using the PyTorch loop", RuntimeWarning, stacklevel=2)
        _KERNEL["module"] = module
    return _KERNEL["module"]


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
        N = cfg.n_neurons
        T = cfg.steps
        dt = cfg.dt
        dev = x.device
        rate = cfg.max_rate if retry is None else cfg.max_rate + cfg.rate_step * retry.to(x.dtype)[:, None]
        p = (x * rate * (dt / 1000.0)).clamp_(0, 1)  # spike probability per step
        W = self.W
        conductance = cfg.model == "conductance"

        v = torch.full((B, N), cfg.v_rest_e, device=dev)
        thr = (self.theta + (cfg.v_thresh_e - cfg.offset)).expand(B, N).clone()
        thr0 = thr.clone() if learn else None
        ref = torch.zeros(B, N, device=dev)
        ge = torch.zeros(B, N, device=dev)
        gi = torch.zeros(B, N, device=dev)
        vi = torch.full((B, N), cfg.v_rest_i, device=dev)
        gei = torch.zeros(B, N, device=dev)
        refi = torch.zeros(B, N, device=dev)
        inh = torch.zeros(B, N, device=dev)  # inhibition arriving at the next step
        counts = torch.zeros(B, N, device=dev)
        tmp = torch.empty(B, N, device=dev)
        tmp2 = torch.empty(B, N, device=dev)
        out_hist = torch.zeros(T, B, N, device=dev) if learn else None
        in_hist = torch.zeros(T, B, n_in, dtype=torch.bool, device=dev) if learn else None
        v_hist = torch.zeros(T, B, N, device=dev) if record_v else None

        a_e, a_i = dt / cfg.tau_m_e, dt / cfg.tau_m_i
        d_ge, d_gi = math.exp(-dt / cfg.tau_ge), math.exp(-dt / cfg.tau_gi)
        k_ge, k_gi = _step_average(cfg.tau_ge, dt), _step_average(cfg.tau_gi, dt)
        ref_e, ref_i = round(cfg.refrac_e / dt), round(cfg.refrac_i / dt)
        d_m_e, d_m_i = math.exp(-dt / cfg.tau_m_e), math.exp(-dt / cfg.tau_m_i)
        chunk = max(1, int(cfg.input_chunk))
        kern = cpu_kernel() if dev.type == "cpu" and x.dtype == torch.float32 and not record_v else None
        # Poisson input, drawn only for the (image, pixel) pairs with a non-zero rate, as sparse events; the input
        # of a chunk of steps is one sparse [steps*B, n_input] x dense [n_input, N] product.
        pair_b, pair_i = (p > 0).nonzero(as_tuple=True)
        pair_p = p[pair_b, pair_i]
        if kern is not None:  # compiled loop (same arithmetic as the loop below)
            I = torch.cat([_input_chunk(pair_b, pair_i, pair_p, min(chunk, T - t), B, n_in, W, generator,
                                        in_hist[t:t + chunk] if learn else None) for t in range(0, T, chunk)])
            params = [1.0 if conductance else 0.0, cfg.v_rest_e, cfg.v_reset_e, a_e, d_ge, d_gi, k_ge, k_gi,
                      cfg.e_exc, cfg.e_inh_e, float(ref_e), d_m_e, cfg.v_rest_i, cfg.v_reset_i, cfg.v_thresh_i, a_i,
                      float(ref_i), d_m_i, cfg.w_ei, cfg.w_ie, cfg.theta_plus, 1.0 if learn else 0.0]
            spikes = kern.dc_present(I.contiguous(), thr, params).to(torch.float32)
            res = {"counts": spikes.sum(0)}
            if learn:
                res["spikes_in"] = in_hist
                res["spikes_out"] = spikes
                res["theta_rise"] = thr - thr0
            return res
        I = None
        for t in range(T):
            c = t % chunk
            if c == 0:
                n = min(chunk, T - t)
                I = _input_chunk(pair_b, pair_i, pair_p, n, B, n_in, W, generator,
                                 in_hist[t:t + n] if learn else None)
            # ---- excitatory layer
            active = ref <= 0
            if conductance:
                ge.mul_(d_ge).add_(I[c])
                gi.mul_(d_gi).add_(inh)
                # exponential Euler: v -> v_inf + (v - v_inf) exp(-a G), G = 1 + k_ge ge + k_gi gi,
                # v_inf = (v_rest + k_ge ge E_exc + k_gi gi E_inh) / G
                torch.mul(ge, k_ge, out=tmp)
                tmp.add_(gi, alpha=k_gi).add_(1.0)                               # G
                torch.mul(ge, k_ge * cfg.e_exc, out=tmp2)
                tmp2.add_(gi, alpha=k_gi * cfg.e_inh_e).add_(cfg.v_rest_e).div_(tmp)  # v_inf
                tmp.mul_(-a_e).exp_()                                            # exp(-a G)
                v_new = (v - tmp2).mul_(tmp).add_(tmp2)
                v.copy_(torch.where(active, v_new, v))
            else:
                # v = v_rest + (v - v_rest) exp(-dt/tau) + input (not while refractory) - inhibition
                v.sub_(cfg.v_rest_e).mul_(d_m_e).add_(cfg.v_rest_e)
                torch.sub(I[c], inh, out=tmp)
                v.addcmul_(tmp, active)
            spk = v > thr
            v.masked_fill_(spk, cfg.v_reset_e)
            if record_v:
                v_hist[t].copy_(v)
            ref.sub_(1.0).masked_fill_(spk, float(ref_e))
            sf = spk.to(v.dtype)
            counts.add_(sf)
            if learn:
                thr.add_(sf, alpha=cfg.theta_plus)
                out_hist[t].copy_(sf)
            # ---- inhibitory layer
            active_i = refi <= 0
            if conductance:
                gei.mul_(d_ge).add_(sf, alpha=cfg.w_ei)
                torch.mul(gei, k_ge, out=tmp).add_(1.0)
                torch.mul(gei, k_ge * cfg.e_exc, out=tmp2).add_(cfg.v_rest_i).div_(tmp)
                tmp.mul_(-a_i).exp_()
                vi_new = (vi - tmp2).mul_(tmp).add_(tmp2)
                vi.copy_(torch.where(active_i, vi_new, vi))
            else:
                vi.sub_(cfg.v_rest_i).mul_(d_m_i).add_(cfg.v_rest_i)
                vi.addcmul_(sf, active_i, value=cfg.w_ei)
            spi = vi > cfg.v_thresh_i
            vi.masked_fill_(spi, cfg.v_reset_i)
            refi.sub_(1.0).masked_fill_(spi, float(ref_i))
            sfi = spi.to(v.dtype)
            # lateral inhibition: every excitatory neuron but the matching one
            torch.sub(sfi.sum(1, keepdim=True), sfi, out=inh).mul_(cfg.w_ie)
        res = {"counts": counts}
        if record_v:
            res["v"] = v_hist
        if learn:
            res["spikes_in"] = in_hist
            res["spikes_out"] = out_hist
            res["theta_rise"] = thr - thr0
        return res


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
