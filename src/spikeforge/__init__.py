"""spikeforge: accurate, low-latency, energy-efficient spiking neural networks on one engine.

Python workflow (every name below is importable from ``spikeforge`` itself; the submodule is loaded on first use,
so ``import spikeforge`` stays light)::

    import spikeforge as sf

    snn = sf.create_model("vgg4", dataset="mnist", spiking=True, timesteps=4,       # sizes, classes and input
                          learn_threshold=True, learn_leak=True)                    # normalisation from the dataset
    opt = torch.optim.Adam(sf.param_groups(snn, 1e-3, threshold_lr=1e-2))           # weights / threshold / leak
    for images, labels in loader:                                                   # images in [0, 1]
        loss = F.cross_entropy(snn(images), labels)                                 # BPTT through all T steps
        opt.zero_grad(); loss.backward(); opt.step()                                # thresholds > 0, leaks in
                                                                                    # [0, 1]: kept by themselves
    with snn.at_timesteps(1):                                                       # evaluate at another T
        logits = snn(images)
    with sf.SpikeRecorder(snn, samples=4, membrane=True) as rec:                    # spikes/membranes per step
        snn(images)
    sf.plot_raster(rec.spikes["features.1"])

    data = sf.build_data(sf.DataConfig(dataset="mnist", batch_size=128))           # the recipes' data loaders
    ann = sf.create_model("vgg4", dataset="mnist")                                  # ANN twin; after training:
    snn = sf.ann_to_snn(ann, sf.SNNConfig(timesteps=32))                            # BN folded, weights copied
    sf.balance_thresholds(snn, data.calibration_batch(), percentile=99.7)           # Sengupta et al. 2019
    report = sf.energy_report(snn, data.test)                                       # operations and energy
    sf.write_nir(snn, "model.nir")                                                  # NIR graph (+ model card)

Robustness and explanations: :class:`PGD`, :class:`FGSM`, :class:`SAM`, :class:`GradCAM`. :class:`DeadLayerWatch`
names silent layers during training. Errors are :class:`SpikeforgeError` subclasses (:class:`ConfigError`,
:class:`DataError`, :class:`CheckpointError`, :class:`ConversionError`, :class:`ShapeError`). The ``spikeforge``
command runs recipes (``spikeforge run recipe.yaml``; :mod:`spikeforge.app.cli`).
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
    "TwinNet": "spikeforge.models",
    "list_models": "spikeforge.models",
    "param_groups": "spikeforge.models",
    "auto_constrain": "spikeforge.models",
    "SilentLayerWarning": "spikeforge.models",
    "create_model": "spikeforge.presets",
    "model_defaults": "spikeforge.presets",
    "build_data": "spikeforge.data",
    "DataConfig": "spikeforge.data",
    "DATASETS": "spikeforge.data",
    "ann_to_snn": "spikeforge.methods.convert",
    "balance_thresholds": "spikeforge.methods.convert",
    "SpikeMonitor": "spikeforge.analysis.monitor",
    "SpikeRecorder": "spikeforge.analysis.monitor",
    "DeadLayerWatch": "spikeforge.analysis.monitor",
    "plot_raster": "spikeforge.analysis.monitor",
    "plot_rate_heatmap": "spikeforge.analysis.monitor",
    "plot_rate_histogram": "spikeforge.analysis.monitor",
    "energy_report": "spikeforge.analysis.energy",
    "PGD": "spikeforge.analysis.attacks",
    "FGSM": "spikeforge.analysis.attacks",
    "SAM": "spikeforge.analysis.explain",
    "GradCAM": "spikeforge.analysis.explain",
    "to_nir": "spikeforge.export",
    "write_nir": "spikeforge.export",
    "to_onnx": "spikeforge.export",
    "load_snntorch": "spikeforge.export",
    "load_sinabs": "spikeforge.export",
    "load_norse": "spikeforge.export",
    "run_exported": "spikeforge.export",
    "check_dynapcnn": "spikeforge.export",
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
