"""spikeforge: accurate, low-latency, energy-efficient spiking neural networks on one engine.

Main entry points: :func:`spikeforge.models.create_model`, :mod:`spikeforge.methods.convert`, :mod:`spikeforge.neuron`,
the ``spikeforge`` command (:mod:`spikeforge.app.cli`) and recipes run by :func:`spikeforge.engine.stages.run`.
"""

from spikeforge.version import __version__

from spikeforge.errors import CheckpointError, ConfigError, ConversionError, DataError, ShapeError, SpikeforgeError
from spikeforge.models import ModelSpec, SNNConfig, create_model
from spikeforge.neuron import SpikingNeuron

__all__ = ["CheckpointError", "ConfigError", "ConversionError", "DataError", "ModelSpec", "SNNConfig",
           "ShapeError", "SpikeforgeError", "SpikingNeuron", "create_model"]
