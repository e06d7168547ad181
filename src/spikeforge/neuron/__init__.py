"""Neuron dynamics: pure functions (:mod:`.functional`) and the module shell (:mod:`.modules`)."""

from spikeforge.neuron.functional import FusedMultiStep, NeuronState, initial_state, multistep, multistep_reference, spike, step
from spikeforge.neuron.modules import SpikingNeuron

__all__ = [
    "FusedMultiStep",
    "NeuronState",
    "SpikingNeuron",
    "initial_state",
    "multistep",
    "multistep_reference",
    "spike",
    "step",
]
