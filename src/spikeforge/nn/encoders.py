"""Input encoders: image batch ``[B, ...]`` -> time-first input ``[T, B, ...]``.

An encoder is called ``encoder(x, steps)``: it stores no run length; the model passes its ``timesteps`` (or a chunk
length) at every call. Encoders register themselves in :data:`ENCODERS` under the name that ``snn.encoding`` uses.

* :class:`DirectEncoder` (``"direct"``; Rathi & Roy 2020, DIET-SNN): the analog image itself, returned as
  ``[1, B, ...]``. The first layer then runs once and the first neuron layer applies that current at every one of
  the ``steps`` steps.
* :class:`PoissonEncoder` (``"poisson"``): signed Bernoulli spikes ``sign(x) * Bernoulli(p)`` drawn independently at
  every step, in two conventions: ``"rate"`` (``p = min(|x| * rate, 1)``, rate 1.0 or 0.9; Rathi et al. 2020,
  hybrid conversion + STDB) and ``"half"`` (``p = min(|x| / 2, 1)``; Kim & Panda 2021, BNTT). ``x`` is the
  *normalized* image, so negative values give -1 spikes. The backward pass is straight-through:
  ``d s / d x = d E[s] / d x`` (``rate`` or ``1/2`` where ``p < 1``, else 0), which lets attacks differentiate
  through the encoder.
* :class:`EventsEncoder` (``"events"``): input that is already a sequence -- binned event frames ``[B, T_in, ...]``
  (:mod:`spikeforge.data.events`) -- passed through as ``[steps, B, ...]`` (its first ``steps`` frames): frame ``t``
  enters the first layer at step ``t``, no current is reused.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.registry import Registry

CONVENTIONS = ("rate", "half")

#: Encoder name -> encoder class. Each class is built as ``cls(convention=..., rate=..., seed=...)`` by
#: :func:`make_encoder` and called as ``encoder(x, steps)``.
ENCODERS: Registry[type[nn.Module]] = Registry("encoder")


@ENCODERS.register("direct")
class DirectEncoder(nn.Module):
    """Direct (analog) input: ``[B, ...] -> [1, B, ...]`` (broadcast over the ``steps`` steps by the first neuron
    layer). Direct coding has no options; the Poisson ones passed by :func:`make_encoder` (``convention``, ``rate``,
    ``seed``) are accepted and unused, as ``snn.poisson_*`` are with ``encoding: direct``."""

    time_aware = True

    def __init__(self, **poisson_options):
        super().__init__()

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return x.unsqueeze(0)


class _PoissonSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, steps, generator):
        prob = (x.abs() * scale).clamp(max=1.0)
        rand = torch.rand((steps, *x.shape), device=x.device, dtype=x.dtype, generator=generator)
        spikes = torch.sign(x) * (rand < prob).to(x.dtype)
        ctx.save_for_backward(prob)
        ctx.scale = scale
        return spikes

    @staticmethod
    def backward(ctx, grad):
        (prob,) = ctx.saved_tensors
        return grad.sum(0) * ctx.scale * (prob < 1.0).to(grad.dtype), None, None, None


@ENCODERS.register("poisson")
class PoissonEncoder(nn.Module):
    """Signed Poisson (Bernoulli) rate coding; ``encoder(x, steps)`` draws ``steps`` steps. ``seed`` makes the draws
    reproducible (a private generator per device; None: the global RNG)."""

    time_aware = True

    def __init__(self, convention: str = "rate", rate: float = 1.0, seed: int | None = None):
        super().__init__()
        if convention not in CONVENTIONS:
            raise ConfigError(f"poisson convention must be one of {CONVENTIONS}, got {convention!r}")
        if rate <= 0:
            raise ConfigError(f"poisson rate must be positive, got {rate}")
        self.convention = convention
        self.rate = rate
        self.seed = seed
        self._generator: torch.Generator | None = None

    @property
    def scale(self) -> float:
        return self.rate if self.convention == "rate" else 0.5

    def reseed(self, seed: int | None) -> None:
        """Restart the private random stream (``None``: use the global RNG)."""
        self.seed = seed
        self._generator = None

    def generator(self, device) -> torch.Generator | None:
        """The private random stream on ``device`` (None when unseeded: draws come from the global RNG)."""
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    _gen = generator  # older name

    def forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"PoissonEncoder needs a positive number of steps, got {steps!r}")
        return _PoissonSample.apply(x, self.scale, steps, self.generator(x.device))

    def extra_repr(self) -> str:
        return f"convention={self.convention}, rate={self.rate}, seed={self.seed}"


@ENCODERS.register("events")
class EventsEncoder(nn.Module):
    """Pass-through of event frames: ``[B, T_in, ...] -> [steps, B, ...]`` (the first ``steps`` frames, time first).
    Takes the Poisson options of :func:`make_encoder` and ignores them, as :class:`DirectEncoder` does."""

    time_aware = True

    def __init__(self, **poisson_options):
        super().__init__()

    def forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        if x.dim() < 3:
            raise ConfigError(f"the events encoder needs frames [B, T, ...], got shape {tuple(x.shape)}")
        if not isinstance(steps, int) or not 1 <= steps <= x.shape[1]:
            raise ConfigError(f"the events encoder got {x.shape[1]} frames per sample and cannot run {steps!r} steps "
                              f"(at most {x.shape[1]})")
        return x[:, :steps].transpose(0, 1)


def make_encoder(encoding: str, *, convention: str = "rate", rate: float = 1.0, seed: int | None = None) -> nn.Module:
    """Encoder registered as ``encoding`` in :data:`ENCODERS` (``"direct"``, ``"poisson"`` or a user's)."""
    return ENCODERS.get(encoding)(convention=convention, rate=rate, seed=seed)
