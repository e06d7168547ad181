"""Neuron dynamics: pure functions (:mod:`.functional`), surrogate gradients (:mod:`.surrogate`), the module shell
(:mod:`.modules`) and the neuron-model registry (:data:`NEURONS`: ``"lif"``, ``"alif"``)."""

from spikeforge.neuron.functional import (FusedMultiStep, NeuronState, initial_state, multistep, multistep_reference,
                                         spike, step)
from spikeforge.neuron.modules import SpikingNeuron
from spikeforge.neuron.registry import NEURONS
from spikeforge.neuron.surrogate import SURROGATES, Surrogate, get_surrogate
from spikeforge.neuron.alif import ALIFNeuron  # noqa: F401  (registers "alif")

__all__ = [
    "FusedMultiStep",
    "NEURONS",
    "NeuronState",
    "SURROGATES",
    "SpikingNeuron",
    "Surrogate",
    "get_surrogate",
    "initial_state",
    "multistep",
    "multistep_reference",
    "spike",
    "step",
]
