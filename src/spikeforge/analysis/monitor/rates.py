"""Spike counting by forward hooks on the neuron layers.

The spike rate of layer ``l`` is ``zeta_l = N_spikes,l / N_neurons,l`` counted over the whole inference (all ``T``
steps) and averaged over samples, so it can exceed 1 when ``T > 1`` (the spike rate of Kim & Panda, BNTT,
Frontiers in Neuroscience 2021, and of the energy estimates of :mod:`spikeforge.analysis.energy`).
"""

from __future__ import annotations

import torch
from torch import nn

from spikeforge.neuron import SpikingNeuron


class SpikeMonitor:
    """Context manager: ``with SpikeMonitor(model) as mon: model(x)``; then ``mon.rates()``.

    Counts stay on the device (no synchronisation per batch) until :meth:`rates` is called.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers: dict[str, SpikingNeuron] = {
            name: m for name, m in model.named_modules() if isinstance(m, SpikingNeuron)
        }
        self._handles: list = []
        self.reset()

    def reset(self) -> None:
        self.spikes: dict[str, torch.Tensor] = {}
        self.neurons: dict[str, int] = {}
        self.sample_steps: dict[str, int] = {}

    def _hook(self, name: str):
        def hook(module, inputs, output):
            out = output.detach()
            total = out.sum() if out.dtype != torch.bool else out.sum(dtype=torch.float32)
            self.spikes[name] = self.spikes.get(name, 0) + total.float()
            self.neurons[name] = int(out[0, 0].numel())
            self.sample_steps[name] = self.sample_steps.get(name, 0) + int(out.shape[0] * out.shape[1])

        return hook

    def __enter__(self) -> SpikeMonitor:
        for name, m in self.layers.items():
            self._handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _steps(self) -> int:
        return int(getattr(self.model, "timesteps", None) or 1)

    def rates(self, per_step: bool = False) -> dict[str, float]:
        """Spikes per neuron per inference (``per_step=True``: per timestep), by layer name in forward order.

        Chunked (streaming) evaluation is handled: counts are per sample-step, scaled by the model's ``T``.
        """
        scale = 1 if per_step else self._steps()
        out = {}
        for name in self.layers:
            if self.sample_steps.get(name):
                out[name] = float(self.spikes[name]) / (self.neurons[name] * self.sample_steps[name]) * scale
        return out

    def mean_rate(self, per_step: bool = False) -> float:
        """Neuron-weighted mean over layers (total spikes / total neurons, per inference or per step)."""
        rates = self.rates(per_step)
        tot_n = sum(self.neurons[n] for n in rates)
        return sum(rates[n] * self.neurons[n] for n in rates) / tot_n if tot_n else 0.0
