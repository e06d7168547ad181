"""``nn.Module`` shell around the functional neuron: holds threshold and leak as parameters, calls the core."""

from __future__ import annotations

import torch
from torch import nn

from spikeforge.errors import ConfigError, ShapeError
from spikeforge.neuron import functional as F
from spikeforge.neuron.functional import ORDERS, RESETS
from spikeforge.neuron.registry import NEURONS
from spikeforge.neuron.surrogate import Surrogate, get_surrogate


@NEURONS.register("lif")
class SpikingNeuron(nn.Module):
    """A layer of IF/LIF neurons on time-first input ``[T, B, ...]`` (spikes out, same shape).

    The leaky integrate-and-fire neuron with learnable threshold and leak of Rathi & Roy 2020 (DIET-SNN); IF is the
    special case ``leak = 1``. Parameters ``threshold`` (V_th) and ``leak`` (lambda) are ``nn.Parameter`` s, scalar
    per layer or one per channel (``channels``), trainable or frozen (``learn_threshold``, ``learn_leak``).
    :meth:`constrain_` keeps the leak in ``[0, 1]`` and the threshold positive; the engine calls it after every
    optimizer step. ``params`` are the model-specific keywords of subclasses (the LIF has none).

    ``forward(x, steps)``: if the input has one timestep and ``steps > 1`` (direct encoding: the first layer's
    current is computed once), that current is applied at every step; ``steps=None`` means ``x.shape[0]``.

    Two ways to carry the membrane between calls: :meth:`start_stream` (no gradients; chunked evaluation) and
    :meth:`start_carry` (differentiable; activation checkpointing over time chunks, integrate-then-fire only).
    """

    time_aware = True  # receives [T, B, ...]; stateless layers run folded on [T*B, ...]

    def __init__(
        self,
        threshold: float = 1.0,
        leak: float = 1.0,
        *,
        channels: int | None = None,
        learn_threshold: bool = False,
        learn_leak: bool = False,
        surrogate: str | dict | Surrogate | None = "linear",
        order: str = "integrate-fire",
        reset: str = "soft",
        fused: bool = True,
        **params,
    ):
        super().__init__()
        if "timesteps" in params:
            raise ConfigError("neurons have no timesteps: the model holds them (model.timesteps); a neuron runs "
                              "as neuron(x, steps=T)")
        if params:
            raise ConfigError(f"neuron model {type(self).__name__} has no parameter(s) {sorted(params)}")
        if order not in ORDERS:
            raise ConfigError(f"neuron order must be one of {ORDERS}, got {order!r}")
        if reset not in RESETS:
            raise ConfigError(f"neuron reset must be one of {RESETS}, got {reset!r}")
        if not 0.0 <= float(leak) <= 1.0:
            raise ConfigError(f"leak must lie in [0, 1], got {leak}")
        if float(threshold) <= 0:
            raise ConfigError(f"threshold must be positive, got {threshold}")
        shape = (channels,) if channels else ()
        self.channels = channels
        self.threshold = nn.Parameter(torch.full(shape, float(threshold)), requires_grad=learn_threshold)
        self.leak = nn.Parameter(torch.full(shape, float(leak)), requires_grad=learn_leak)
        self._init_values = {"threshold": float(threshold), "leak": float(leak)}
        self.surrogate = get_surrogate(surrogate)
        self.order = order
        self.reset = reset
        self.fused = fused
        self._stream: dict | None = None
        self._carry: dict | None = None

    def _apply(self, fn, recurse=True):
        """``.double()`` and other dtype moves keep the exact constructor values (0.8 stays 0.8, not the float32
        0.800000011920929) for a threshold or leak still at its initial value; trained values convert as usual."""
        before = {k: getattr(self, k).detach().clone() for k in self._init_values}
        result = super()._apply(fn, recurse)
        for name, value in self._init_values.items():
            p, old = getattr(self, name), before[name]
            untouched = bool((old == torch.tensor(value, dtype=old.dtype)).all())
            if p.dtype != old.dtype and p.is_floating_point() and untouched:
                with torch.no_grad():
                    p.fill_(value)
        return result

    def start_stream(self) -> None:
        """Keep the membrane state between calls (for chunked evaluation of long ``T``) until :meth:`stop_stream`."""
        self._stream = {"state": None, "t": 0}

    def stop_stream(self) -> None:
        self._stream = None

    def start_carry(self, u0: torch.Tensor | None = None, keep_last: bool = True) -> None:
        """Differentiable state carry for the next call: start from membrane ``u0`` (None = zeros; may require grad)
        and keep the final membrane ``U[T-1]`` as :attr:`carried_membrane` (differentiable w.r.t. the input
        currents, ``u0``, threshold and leak, with the reset path detached exactly as in the fused BPTT);
        ``keep_last=False`` skips it (last chunk).

        Integrate-then-fire only: ``u0`` is folded into the first current, ``P[0] = lambda * u0 + I[0]``, so the
        spikes come from the unchanged multi-step core.
        """
        if self.order != "integrate-fire":
            raise ConfigError(f"differentiable state carry (checkpoint_chunk) needs order 'integrate-fire', this "
                              f"layer uses {self.order!r}")
        if self.surrogate.needs_spike_time:
            raise ConfigError(f"differentiable state carry (checkpoint_chunk) cannot be used with the spike-time "
                              f"dependent surrogate {self.surrogate}: spike times are not carried between calls")
        if self._stream is not None:
            raise RuntimeError("start_carry inside a streaming context (start_stream); use one or the other")
        self._carry = {"u0": u0, "u_last": None, "keep_last": keep_last}

    def stop_carry(self) -> None:
        self._carry = None

    @property
    def carried_membrane(self) -> torch.Tensor | None:
        """Final membrane of the last call in carry mode (None outside carry mode or before a call)."""
        return None if self._carry is None else self._carry["u_last"]

    def _per_step(self, p: torch.Tensor, step_dims: int) -> torch.Tensor:
        """Reshape a per-channel parameter ``[C]`` to broadcast over one step ``[B, C, *spatial]``."""
        if p.dim() == 0:
            return p
        return p.view(-1, *([1] * (step_dims - 2)))

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Spikes ``[T, B, ...]`` for currents ``x`` ``[T, B, ...]`` (or ``[1, B, ...]`` repeated over ``steps``)."""
        x = self._over_time(x, steps)
        th = self._per_step(self.threshold, x.dim() - 1)
        lk = self._per_step(self.leak, x.dim() - 1)
        if self._stream is not None:
            return self._forward_stream(x, th, lk)
        if self._carry is not None:
            return self._forward_carry(x, th, lk)
        return self._dynamics(x, th, lk)

    def _over_time(self, x: torch.Tensor, steps: int | None) -> torch.Tensor:
        """Check the input's shape; expand a one-step input ``[1, B, ...]`` to ``steps`` steps (a view)."""
        if x.dim() < 3:
            raise ShapeError(f"{type(self).__name__} expects time-first input [T, B, ...]; got shape {tuple(x.shape)}")
        if self.channels and x.shape[2] != self.channels:
            raise ShapeError(f"neuron layer has {self.channels} channels but its input has {x.shape[2]} (dim 2)")
        if steps is None or steps == x.shape[0]:
            return x
        if x.shape[0] != 1 or int(steps) < 1:
            raise ShapeError(f"{type(self).__name__} got {x.shape[0]} timesteps of input for steps={steps} "
                             f"(the input must have the given number of steps, or one step to repeat)")
        return x.expand(int(steps), *x.shape[1:])

    def _dynamics(self, x: torch.Tensor, th: torch.Tensor, lk: torch.Tensor) -> torch.Tensor:
        """The neuron model over all steps of ``x`` from the zero state (subclasses replace it)."""
        return F.multistep(x, th, lk, surrogate=self.surrogate, order=self.order, reset=self.reset, fused=self.fused)

    def _stream_run(self, x, th, lk, state):
        """``(spikes, state after the last step)`` from ``state`` (None: zero state), without autograd."""
        return F.run_steps(x, th, lk, surrogate=self.surrogate, order=self.order, reset=self.reset, u0=state)

    def _forward_stream(self, x, th, lk):
        if torch.is_grad_enabled() and (x.requires_grad or th.requires_grad or lk.requires_grad):
            raise RuntimeError("streaming (chunked) evaluation carries state without gradients; "
                               "run it under torch.no_grad()")
        st = self._stream
        spikes, st["state"] = self._stream_run(x, th, lk, st["state"])
        return spikes

    def _forward_carry(self, x, th, lk):
        u0 = self._carry["u0"]
        if u0 is not None:  # P[0] = lambda * u0 + I[0]; None stands for the zero membrane
            x = torch.cat([x[:1] + lk * u0, x[1:]])
        spikes = F.multistep(x, th, lk, surrogate=self.surrogate, order=self.order, reset=self.reset, fused=self.fused)
        if not self._carry["keep_last"]:
            return spikes
        s = spikes.detach()  # the reset path carries no gradient (as in the fused BPTT)
        steps = x.shape[0]
        if self.reset == "soft":
            # U[T-1] = sum_t lambda^(T-1-t) * (I'[t] - V_th * s[t])
            expo = torch.arange(steps - 1, -1, -1, device=x.device, dtype=lk.dtype)
            if lk.dim() == 0 and th.dim() == 0 and x.dtype == s.dtype == lk.dtype:
                w = torch.pow(lk, expo)  # [T]: two reductions over time, no [T, B, ...] temporaries
                u_last = torch.tensordot(w, x, dims=1) - th * torch.tensordot(w, s, dims=1)
            else:
                expo = expo.view(-1, *([1] * (x.dim() - 1)))
                u_last = (torch.pow(lk.unsqueeze(0), expo) * (x - th * s)).sum(0)
        else:
            # U[t] = (lambda * U[t-1] + I'[t]) * (1 - s[t]), U[-1] = 0
            u_last = x[0] * (1.0 - s[0])
            for t in range(1, steps):
                u_last = (lk * u_last + x[t]) * (1.0 - s[t])
        self._carry["u_last"] = u_last
        return spikes

    @torch.no_grad()
    def constrain_(self, min_threshold: float = 1e-3) -> None:
        """Clamp leak to [0, 1] and threshold to at least ``min_threshold`` (in place)."""
        self.leak.clamp_(0.0, 1.0)
        self.threshold.clamp_(min=min_threshold)

    def extra_repr(self) -> str:
        th = self.threshold.detach()
        lk = self.leak.detach()
        th_s = f"{th.item():.4g}" if th.dim() == 0 else f"[{th.numel()} ch, mean {th.mean():.4g}]"
        lk_s = f"{lk.item():.4g}" if lk.dim() == 0 else f"[{lk.numel()} ch, mean {lk.mean():.4g}]"
        return (
            f"threshold={th_s}{'*' if self.threshold.requires_grad else ''}, "
            f"leak={lk_s}{'*' if self.leak.requires_grad else ''}, surrogate={self.surrogate}, order={self.order}, "
            f"reset={self.reset}, fused={self.fused}"
        )
