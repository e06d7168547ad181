"""Watching a spiking network run.

* :class:`SpikeMonitor` -- spike *rates* per layer (counts only; used by training, evaluation and energy estimates).
* :class:`SpikeRecorder` -- spike trains and membrane potentials per layer and per timestep for chosen layers and
  samples, memory-bounded (``bool`` spikes, ``float16`` membranes, CPU offload, a byte budget).
* :class:`DeadLayerWatch` -- warns, naming the layer and the usual fixes, when a spiking layer is silent over a window
  of batches.
* :func:`plot_raster`, :func:`plot_rate_heatmap`, :func:`plot_rate_histogram` -- matplotlib views of the records.
"""

from spikeforge.analysis.monitor.dead import DeadLayerWatch
from spikeforge.analysis.monitor.plots import plot_rate_heatmap, plot_rate_histogram, plot_raster
from spikeforge.analysis.monitor.rates import SpikeMonitor
from spikeforge.analysis.monitor.recorder import SpikeRecorder, membrane_trace, neuron_layers

__all__ = ["DeadLayerWatch", "SpikeMonitor", "SpikeRecorder", "membrane_trace", "neuron_layers", "plot_rate_heatmap",
           "plot_rate_histogram", "plot_raster"]
