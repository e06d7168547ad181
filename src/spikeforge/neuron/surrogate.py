"""Surrogate gradients for the spike non-linearity.

The spike is ``s = H(z)`` with the normalized distance to threshold ``z = U / V_th - 1`` (methods.md §1.3). Its
derivative is replaced in the backward pass by a surrogate ``ds/dz = g(z, dt)``; ``dt`` is the number of steps since
the neuron's previous spike (only STDB uses it). Because ``z`` is normalized, the gradient w.r.t. ``U`` carries an
extra ``1 / V_th`` and the gradient w.r.t. ``V_th`` is ``-U / V_th**2`` times ``g``; the neuron code applies those
factors, a surrogate only returns ``g``.

Surrogates are small frozen dataclasses so they can be stored in a model spec and compared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from spikeforge.errors import ConfigError

#: Last-spike time given to a neuron that has not spiked yet (hybrid reference code: -1000).
NEVER_SPIKED = -1000.0


@dataclass(frozen=True)
class Surrogate:
    """Base class: ``grad(z, dt)`` returns ds/dz. ``needs_spike_time`` says whether ``dt`` is used."""

    needs_spike_time = False

    def grad(self, z: torch.Tensor, dt: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def to_config(self) -> dict:
        return {"name": _NAME_OF[type(self)], **asdict(self)}

    def cpp_params(self) -> tuple[int, float, float] | None:
        """``(code, p1, p2)`` of the same function in the compiled kernel, or None if it has none."""
        return None


@dataclass(frozen=True)
class PiecewiseLinear(Surrogate):
    """``g(z) = gamma * max(0, 1 - |z|)`` (Bellec et al. 2018; DIET/IIR/BNTT use gamma = 0.3)."""

    gamma: float = 0.3

    def cpp_params(self):
        return (0, self.gamma, 0.0)

    def grad(self, z, dt=None):
        return self.gamma * (1.0 - z.abs()).clamp_min(0.0)


@dataclass(frozen=True)
class STDB(Surrogate):
    """Spike-timing-dependent backprop (Rathi et al. 2020): ``g = alpha * exp(-beta * dt)``.

    ``dt = t - t_last`` counts steps since the neuron's most recent *previous* spike; a neuron that never spiked has
    ``t_last = -1000`` (so ``g`` is about ``0.3 e^-10``). The value does not depend on ``z``.
    """

    alpha: float = 0.3
    beta: float = 0.01
    needs_spike_time = True

    def cpp_params(self):
        return (1, self.alpha, self.beta)

    def grad(self, z, dt=None):
        if dt is None:
            raise ValueError("the STDB surrogate needs the time since the last spike (dt)")
        return self.alpha * torch.exp(-self.beta * dt)


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """SuperSpike / fast sigmoid (Zenke & Ganguli 2018): ``g(z) = 1 / (1 + slope * |z|)**2``."""

    slope: float = 25.0

    def cpp_params(self):
        return (2, self.slope, 0.0)

    def grad(self, z, dt=None):
        return 1.0 / (1.0 + self.slope * z.abs()) ** 2


@dataclass(frozen=True)
class ATan(Surrogate):
    """Arctangent (Fang et al. 2021): ``g(z) = (alpha / 2) / (1 + (pi / 2 * alpha * z)**2)``."""

    alpha: float = 2.0

    def cpp_params(self):
        return (3, self.alpha, 0.0)

    def grad(self, z, dt=None):
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * z) ** 2)


@dataclass(frozen=True)
class Exponential(Surrogate):
    """Shrestha & Orchard (SLAYER-style), used in the Sharmin repo: ``g(z) = scale * exp(-decay * |z|)``."""

    scale: float = 0.3
    decay: float = 1.0

    def cpp_params(self):
        return (4, self.scale, self.decay)

    def grad(self, z, dt=None):
        return self.scale * torch.exp(-self.decay * z.abs())


SURROGATES: dict[str, type[Surrogate]] = {
    "linear": PiecewiseLinear,
    "stdb": STDB,
    "fast_sigmoid": FastSigmoid,
    "atan": ATan,
    "exp": Exponential,
}
_NAME_OF = {cls: name for name, cls in SURROGATES.items()}


def get_surrogate(spec: str | dict | Surrogate | None) -> Surrogate:
    """Build a surrogate from a name (``"linear"``), a dict (``{"name": "stdb", "alpha": 0.3}``) or an instance."""
    if spec is None:
        return PiecewiseLinear()
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"surrogate must be a name or a mapping with 'name'; got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name")
    if name not in SURROGATES:
        raise ConfigError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")
    cls = SURROGATES[name]
    try:
        return cls(**{k: float(v) for k, v in spec.items()})
    except TypeError as exc:
        raise ConfigError(f"bad parameters for surrogate {name!r}: {exc}") from None
