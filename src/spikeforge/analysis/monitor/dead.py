"""Dead-layer warnings: a spiking layer that emits no spikes over a window of batches is named, with the usual fixes.

A silent layer passes nothing on: every layer after it is silent too (unless biases drive it) and the readout's
logits no longer depend on the input. :class:`DeadLayerWatch` counts each layer's spikes with forward hooks (device
tensors, one synchronisation per window) and warns once per silent layer with
:class:`~spikeforge.models.SilentLayerWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from spikeforge.analysis.monitor.recorder import neuron_layers
from spikeforge.errors import ConfigError
from spikeforge.models.health import SilentLayerWarning, silent_layer_message, silent_layers

__all__ = ["DeadLayerWatch"]


class DeadLayerWatch:
    """Warn when a spiking layer emits no spikes over ``window`` forward passes (batches) of ``model``::

        with DeadLayerWatch(model, window=20):
            for x, y in loader:
                ...                                   # train or evaluate as usual

    The check runs after every ``window``-th forward pass and once more on exit for a partial window. Each warning
    (:class:`~spikeforge.models.SilentLayerWarning`) names the first silent layer, how many follow it and the
    usual fixes (input normalisation, thresholds, conversion scaling); a layer is named at most once per watch.
    :attr:`silent` lists every layer found silent. ``partial=False`` checks only complete windows (a window may span
    several blocks, e.g. the epochs of a training run). ``layers`` restricts the watch to some spiking layers.
    :meth:`attach`/:meth:`detach` do what entering and leaving the block do. Attaching turns off the model's own
    first-pass check (the watch covers it).
    """

    def __init__(self, model: nn.Module, window: int = 20, *, layers: Sequence[str] | None = None,
                 partial: bool = True):
        if int(window) < 1:
            raise ConfigError(f"DeadLayerWatch: window must be a positive number of batches, got {window}")
        self.model = model
        self.window = int(window)
        self.partial = partial  # False: leaving the block keeps a partial window open (training: epoch after epoch)
        self.layers = neuron_layers(model, layers)
        self.silent: list[str] = []
        self.warned = 0
        self._counts: dict[str, torch.Tensor] = {}
        self._passes = 0
        self._handles: list = []

    def _count(self, name: str):
        def hook(module, args, output):
            n = output.detach().sum(dtype=torch.float32)
            self._counts[name] = self._counts[name] + n if name in self._counts else n
        return hook

    def _after_pass(self, module, args, output) -> None:
        self._passes += 1
        if self._passes >= self.window:
            self.check()

    def check(self) -> list[str]:
        """Check the current window now (then start a new one); returns the silent layers found in it."""
        passes, counts = self._passes, self._counts
        self._passes, self._counts = 0, {}
        if not passes or not counts:
            return []
        names = list(self.layers)
        silent = silent_layers(counts, names)
        new = [n for n in silent if n not in self.silent]
        self.silent += new
        if new:
            mode = "training" if self.model.training else "evaluation"
            where = f"over the last {passes} batch{'es' if passes > 1 else ''} ({mode})"
            warnings.warn(silent_layer_message(self.model, silent, names, where), SilentLayerWarning, stacklevel=2)
            self.warned += 1
        return silent

    def attach(self) -> DeadLayerWatch:
        if self._handles:
            return self
        if hasattr(self.model, "_silence_check_pending"):
            self.model._silence_check_pending = False
        for name, m in self.layers.items():
            self._handles.append(m.register_forward_hook(self._count(name)))
        self._handles.append(self.model.register_forward_hook(self._after_pass))
        return self

    def detach(self) -> None:
        """Check the partial window (unless ``partial=False``), then remove the hooks."""
        if self._handles and self.partial:
            self.check()
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> DeadLayerWatch:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()
