"""spikeforge: accurate, low-latency, energy-efficient spiking neural networks on one engine.

Python workflow (every name below is importable from ``spikeforge`` itself; the submodule is loaded on first use,
so ``import spikeforge`` stays light)::

    import spikeforge as sf

    data = sf.build_data(sf.DataConfig(dataset="mnist"))                    # loaders and dataset facts
    ann = sf.create_model("vgg5", num_classes=10, in_channels=1, input_size=28)
    # ... train the ANN (or load one: model, header = sf.load_checkpoint(path)) ...
    snn = sf.ann_to_snn(ann, sf.SNNConfig(timesteps=32))                      # BN folded, weights copied
    sf.balance_thresholds(snn, calib_images, percentile=99.7)                 # Sengupta et al. 2019
    logits = snn(images)                                                      # images in [0, 1]
    with snn.at_timesteps(8):                                                 # evaluate at another T
        logits8 = snn(images)
    with sf.SpikeMonitor(snn) as mon:                                         # spike rates per layer
        snn(images)
    report = sf.energy_report(snn, data.test)                                 # operations and energy
    sf.save_checkpoint(path, snn, {"kind": "converted"})

An SNN is built directly with ``sf.create_model("vgg5", spiking=True, timesteps=5, neuron="lif", ...)``
(:class:`SNNConfig` fields as keywords). Robustness and explanations: :class:`PGD`, :class:`FGSM`, :class:`SAM`,
:class:`GradCAM`. Errors are :class:`SpikeforgeError` subclasses (:class:`ConfigError`, :class:`DataError`,
:class:`CheckpointError`, :class:`ConversionError`, :class:`ShapeError`). The ``spikeforge`` command runs recipes
(``spikeforge run recipe.yaml``; :mod:`spikeforge.app.cli`).
"""

from __future__ import annotations

import importlib

#: Public name -> the module that defines it (PEP 562 lazy attributes).
_API = {
    "__version__": "spikeforge.version",
    "SpikeforgeError": "spikeforge.errors",
    "ConfigError": "spikeforge.errors",
    "DataError": "spikeforge.errors",
    "CheckpointError": "spikeforge.errors",
    "ConversionError": "spikeforge.errors",
    "ShapeError": "spikeforge.errors",
    "NEURONS": "spikeforge.neuron",
    "SpikingNeuron": "spikeforge.neuron",
    "ModelSpec": "spikeforge.models",
    "SNNConfig": "spikeforge.models",
    "create_model": "spikeforge.models",
    "build_data": "spikeforge.data",
    "DataConfig": "spikeforge.data",
    "ann_to_snn": "spikeforge.methods.convert",
    "balance_thresholds": "spikeforge.methods.convert",
    "SpikeMonitor": "spikeforge.analysis.monitor",
    "energy_report": "spikeforge.analysis.energy",
    "PGD": "spikeforge.analysis.attacks",
    "FGSM": "spikeforge.analysis.attacks",
    "SAM": "spikeforge.analysis.explain",
    "GradCAM": "spikeforge.analysis.explain",
    "load_checkpoint": "spikeforge.engine.checkpoint",
    "save_checkpoint": "spikeforge.engine.checkpoint",
}

__all__ = sorted(name for name in _API if name != "__version__")


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'spikeforge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
