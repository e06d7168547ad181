"""Batch Normalization Through Time (BNTT; Kim & Panda 2021, "Revisiting batch normalization for training
low-latency deep spiking neural networks from scratch", Frontiers in Neuroscience).

For layer ``l`` and timestep ``t`` (integrate-then-fire, fixed threshold ``V_th = 1``)::

    U_l[t] = lambda * U_l[t-1] + BN_{l,t}(W_l * s_{l-1}[t])
    BN_{l,t}(x) = gamma_{l,t} * (x - mu_{l,t}) / sqrt(sigma^2_{l,t} + eps)          (no beta by default)

Every timestep has its own ``gamma_{l,t}`` and its own batch statistics (running mean/var for inference), so each
neuron layer can set its firing rate per step. :class:`BatchNormThroughTime` applies all normalizations to
time-first ``[T, B, C, ...]`` input in one native ``batch_norm`` call (time folded into the channel axis), which is
exactly ``T`` separate BatchNorm layers, outputs and gradients alike. The early-exit rule built on the learned
gammas is :mod:`spikeforge.methods.bntt_exit`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spikeforge.errors import ConfigError, ShapeError


class BatchNormThroughTime(nn.Module):
    """One BatchNorm per timestep for ``[T, B, C]`` (1d) or ``[T, B, C, H, W]`` (2d) input.

    ``num_steps`` is structural: the number of per-step normalizations (the ``T`` the layer is trained at), so a run
    may use at most that many steps. ``weight`` (gamma) has shape ``[num_steps, C]`` (initialized to 1); ``bias``
    (beta) only with ``bias=True`` (Kim & Panda 2021 use none). ``running_mean``/``running_var`` are
    ``[num_steps, C]``. A call with ``T' < num_steps`` steps uses the first ``T'`` sets (early exit).

    ``forward(x, steps=None)``: an input with a time axis of 1 (direct encoding: the first conv runs once) stands
    for ``steps`` identical steps and is expanded, since every step has its own normalization. Between
    :meth:`start_stream` and :meth:`stop_stream` (the model's ``streaming()``, used for chunked evaluation)
    successive calls continue from the step where the last one ended.
    """

    time_aware = True

    def __init__(self, num_features: int, num_steps: int, *, eps: float = 1e-4, momentum: float = 0.1,
                 bias: bool = False):
        super().__init__()
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
            raise ConfigError(f"BatchNormThroughTime needs a positive number of timesteps, got {num_steps!r}")
        self.num_features = int(num_features)
        self.num_steps = int(num_steps)
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_steps, num_features))
        self.bias = nn.Parameter(torch.zeros(num_steps, num_features)) if bias else None
        self.register_buffer("running_mean", torch.zeros(num_steps, num_features))
        self.register_buffer("running_var", torch.ones(num_steps, num_features))
        self._offset: int | None = None  # step index of the next call while streaming, else None

    # -- streaming (chunked evaluation carries the step index) ------------------------------------------------
    def start_stream(self) -> None:
        self._offset = 0

    def stop_stream(self) -> None:
        self._offset = None

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        if x.dim() < 3 or x.shape[2] != self.num_features:
            raise ShapeError(f"BatchNormThroughTime({self.num_features}) expects time-first input [T, B, "
                             f"{self.num_features}, ...]; got shape {tuple(x.shape)}")
        if x.shape[0] == 1 and steps is not None and steps > 1:
            x = x.expand(steps, *x.shape[1:])
        steps, batch = x.shape[:2]
        start = self._offset or 0
        if start + steps > self.num_steps:
            raise ShapeError(f"BatchNormThroughTime has statistics for {self.num_steps} timesteps but was asked for "
                             f"steps {start + 1}..{start + steps}; evaluate at T <= {self.num_steps} (BNTT models "
                             "cannot run longer than they were trained)")
        sl = slice(start, start + steps)
        rest = x.shape[3:]
        # [T, B, C, ...] -> [B, T*C, ...]: channel (t, c) of the folded tensor is channel c at step t.
        folded = x.transpose(0, 1).reshape(batch, steps * self.num_features, *rest)
        y = F.batch_norm(folded, self.running_mean[sl].view(-1), self.running_var[sl].view(-1),
                         self.weight[sl].reshape(-1), None if self.bias is None else self.bias[sl].reshape(-1),
                         self.training, self.momentum, self.eps)
        if self._offset is not None:
            self._offset += steps
        return y.reshape(batch, steps, self.num_features, *rest).transpose(0, 1)

    def gammas(self) -> torch.Tensor:
        """Mean ``|gamma_{l,t}|`` over channels, one value per timestep ``[num_steps]``."""
        return self.weight.detach().abs().mean(1)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, num_steps={self.num_steps}, eps={self.eps}, momentum={self.momentum}, "
                f"bias={self.bias is not None}")


def bntt_layers(model: nn.Module) -> list[BatchNormThroughTime]:
    return [m for m in model.modules() if isinstance(m, BatchNormThroughTime)]
