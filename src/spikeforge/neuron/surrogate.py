"""Surrogate gradients for the spike non-linearity (Neftci, Mostafa & Zenke 2019, "Surrogate gradient learning in
spiking neural networks", IEEE Signal Processing Magazine).

The spike is ``s = H(z)`` with the normalized distance to threshold ``z = U / V_th - 1`` (as in Rathi & Roy 2020,
DIET-SNN). Its derivative is replaced in the backward pass by a surrogate ``ds/dz = g(z, dt)``; ``dt`` is the
number of steps since the neuron's previous spike (only STDB uses it). Because ``z`` is normalized, the gradient
w.r.t. ``U`` carries an extra ``1 / V_th`` and the gradient w.r.t. ``V_th`` is ``-U / V_th**2`` times ``g``; the
neuron code applies those factors, a surrogate only returns ``g``.

Surrogates are small frozen dataclasses so they can be stored in a model spec and compared. Each registers itself in
:data:`SURROGATES` under its config name. One that the compiled kernels implement declares the kernel function's id
(``kernel_id``, an entry of :data:`spikeforge.kernels.SURROGATE_KERNELS`) and its two parameters
(:meth:`Surrogate.kernel_params`); ``kernel_id = None`` (the default, and what a subclass that does not declare its
own gets) keeps the surrogate on the PyTorch path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

from spikeforge.errors import ConfigError
from spikeforge.kernels import SURROGATE_KERNELS
from spikeforge.registry import Registry

#: Last-spike time given to a neuron that has not spiked yet. The hybrid reference code (Rathi et al. 2020) stores
#: -1000 but stamps the spike emitted at step ``t`` as ``t - 1``, so its never-spiked neuron sees ``dt = t + 999``
#: while one that spiked the step before sees ``dt = 1``; with spikes stamped at their own step, -999 gives both.
NEVER_SPIKED = -999.0

#: Surrogate name -> class (``get_surrogate`` builds from it).
SURROGATES: Registry[type["Surrogate"]] = Registry("surrogate")


@dataclass(frozen=True)
class Surrogate:
    """Base class: ``grad(z, dt)`` returns ds/dz. ``needs_spike_time`` says whether ``dt`` is used.

    ``kernel_id`` names the same function in the compiled kernels (None: no kernel implements it). It is not
    inherited: a subclass (which may change :meth:`grad`) runs on a kernel only if it declares ``kernel_id`` itself.
    """

    needs_spike_time: ClassVar[bool] = False
    kernel_id: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kernel_id" not in cls.__dict__:
            cls.kernel_id = None

    def grad(self, z: torch.Tensor, dt: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def to_config(self) -> dict:
        name = next((n for n, cls in SURROGATES.items() if cls is type(self)), None)
        if name is None:
            raise ConfigError(f"surrogate {type(self).__name__} is not registered in SURROGATES")
        return {"name": name, **asdict(self)}

    def kernel_params(self) -> tuple[float, float]:
        """The kernel function's parameters ``(p1, p2)`` (see :data:`spikeforge.kernels.SURROGATE_KERNELS`)."""
        return (0.0, 0.0)

    def kernel_spec(self) -> tuple[int, float, float] | None:
        """``(kernel_id, p1, p2)`` for the compiled kernels, or None when they do not implement this surrogate."""
        if self.kernel_id is None:
            return None
        p1, p2 = self.kernel_params()
        return (self.kernel_id, float(p1), float(p2))


@SURROGATES.register("linear")
@dataclass(frozen=True)
class PiecewiseLinear(Surrogate):
    """``g(z) = gamma * max(0, 1 - |z|)`` (Bellec et al. 2018; DIET/IIR/BNTT use gamma = 0.3)."""

    gamma: float = 0.3
    kernel_id = SURROGATE_KERNELS["piecewise_linear"]

    def kernel_params(self):
        return (self.gamma, 0.0)

    def grad(self, z, dt=None):
        return self.gamma * (1.0 - z.abs()).clamp_min(0.0)


@SURROGATES.register("stdb")
@dataclass(frozen=True)
class STDB(Surrogate):
    """Spike-timing-dependent backprop (Rathi et al. 2020): ``g = alpha * exp(-beta * dt)``.

    ``dt = t - t_last`` counts steps since the neuron's most recent *previous* spike; a neuron that never spiked has
    ``dt = t + 999`` as in the reference code (so ``g`` is about ``0.3 e^-10``). The value does not depend on ``z``.
    """

    alpha: float = 0.3
    beta: float = 0.01
    needs_spike_time = True
    kernel_id = SURROGATE_KERNELS["spike_time_exponential"]

    def kernel_params(self):
        return (self.alpha, self.beta)

    def grad(self, z, dt=None):
        if dt is None:
            raise ValueError("the STDB surrogate needs the time since the last spike (dt)")
        return self.alpha * torch.exp(-self.beta * dt)


@SURROGATES.register("fast_sigmoid")
@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """SuperSpike / fast sigmoid (Zenke & Ganguli 2018): ``g(z) = 1 / (1 + slope * |z|)**2``."""

    slope: float = 25.0
    kernel_id = SURROGATE_KERNELS["fast_sigmoid"]

    def kernel_params(self):
        return (self.slope, 0.0)

    def grad(self, z, dt=None):
        return 1.0 / (1.0 + self.slope * z.abs()) ** 2


@SURROGATES.register("atan")
@dataclass(frozen=True)
class ATan(Surrogate):
    """Arctangent (Fang et al. 2021): ``g(z) = (alpha / 2) / (1 + (pi / 2 * alpha * z)**2)``."""

    alpha: float = 2.0
    kernel_id = SURROGATE_KERNELS["atan"]

    def kernel_params(self):
        return (self.alpha, 0.0)

    def grad(self, z, dt=None):
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * z) ** 2)


@SURROGATES.register("exp")
@dataclass(frozen=True)
class Exponential(Surrogate):
    """Shrestha & Orchard (SLAYER-style), used in the Sharmin repo: ``g(z) = scale * exp(-decay * |z|)``."""

    scale: float = 0.3
    decay: float = 1.0
    kernel_id = SURROGATE_KERNELS["exponential"]

    def kernel_params(self):
        return (self.scale, self.decay)

    def grad(self, z, dt=None):
        return self.scale * torch.exp(-self.decay * z.abs())


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
    cls = SURROGATES.get(name)
    try:
        return cls(**{k: float(v) for k, v in spec.items()})
    except TypeError as exc:
        raise ConfigError(f"bad parameters for surrogate {name!r}: {exc}") from None
