"""Input encoders: image batch ``[B, ...]`` -> time-first input ``[T, B, ...]`` (methods.md §1.4).

* :class:`DirectEncoder` (DIET-SNN, IIR-SNN): the analog image itself, returned as ``[1, B, ...]``. The first layer
  then runs once and the first neuron layer applies that current at every one of the ``T`` steps.
* :class:`PoissonEncoder`: signed Bernoulli spikes ``sign(x) * Bernoulli(p)`` drawn independently at every step, in
  the two conventions of the reference code: ``"rate"`` (Purdue: ``p = min(|x| * rate, 1)``, rate 1.0 or 0.9) and
  ``"half"`` (Yale BNTT/SAM: ``p = min(|x| / 2, 1)``). ``x`` is the *normalized* image, so negative values give -1
  spikes. The backward pass is straight-through: ``d s / d x = d E[s] / d x`` (``rate`` or ``1/2`` where ``p < 1``,
  else 0), which lets attacks differentiate through the encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeforge.errors import ConfigError

CONVENTIONS = ("rate", "half")


class DirectEncoder(nn.Module):
    """Direct (analog) input: ``[B, ...] -> [1, B, ...]`` (broadcast over time by the first neuron layer)."""

    time_aware = True

    def __init__(self, timesteps: int = 1):
        super().__init__()
        self.timesteps = timesteps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


class PoissonEncoder(nn.Module):
    """Signed Poisson (Bernoulli) rate coding over ``timesteps`` steps. ``seed`` makes the draws reproducible."""

    time_aware = True

    def __init__(self, timesteps: int = 1, convention: str = "rate", rate: float = 1.0, seed: int | None = None):
        super().__init__()
        if convention not in CONVENTIONS:
            raise ConfigError(f"poisson convention must be one of {CONVENTIONS}, got {convention!r}")
        if rate <= 0:
            raise ConfigError(f"poisson rate must be positive, got {rate}")
        self.timesteps = timesteps
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

    def _gen(self, device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _PoissonSample.apply(x, self.scale, self.timesteps, self._gen(x.device))

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}, convention={self.convention}, rate={self.rate}, seed={self.seed}"


def make_encoder(encoding: str, timesteps: int, *, convention: str = "rate", rate: float = 1.0,
                 seed: int | None = None) -> nn.Module:
    """Encoder by name: ``"direct"`` or ``"poisson"``."""
    if encoding == "direct":
        return DirectEncoder(timesteps)
    if encoding == "poisson":
        return PoissonEncoder(timesteps, convention, rate, seed)
    raise ConfigError(f"encoding must be 'direct' or 'poisson', got {encoding!r}")
