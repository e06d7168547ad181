"""The neuron-model registry: name -> ``nn.Module`` class with the common constructor

``(threshold=1.0, leak=1.0, *, channels=None, learn_threshold=False, learn_leak=False, surrogate="linear",
order="integrate-fire", reset="soft", fused=True, **params)``

where ``params`` are the model's own keywords (ALIF: ``beta``, ``adapt_decay``); a model refuses keywords it does not
know with a :class:`~spikeforge.errors.ConfigError`. Every registered module runs on time-first input ``[T, B, ...]``
as ``neuron(x, steps=T)``. Each model registers itself in its own file (``"lif"``: :mod:`.modules`, ``"alif"``:
:mod:`.alif`); :mod:`spikeforge.neuron` imports them.
"""

from __future__ import annotations

from spikeforge.registry import Registry

NEURONS: Registry = Registry("neuron model")
