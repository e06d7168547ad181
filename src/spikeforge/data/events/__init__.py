"""Event-camera and spike-train datasets, binned into frames for the same engine as the image sets.

Layout: ``stream`` (:class:`EventStream`: the events of many samples as flat arrays), ``binning`` (events -> ``T``
frames by time or by event count, polarity as channels; denoising; down-sampling), ``options``
(:class:`EventOptions`, the recipe's ``data.events``), ``augment`` + ``loader`` (:class:`EventLoader`, on-device
batches with crop/flip, time jitter and event dropping), ``build`` (:class:`EventSource`, the binned-frame cache,
:func:`register_event_dataset`), ``readers`` (``nmnist``, ``dvs-gesture``, ``cifar10-dvs``, ``shd`` from their
original release files through Tonic's readers) and ``saccade`` (``mnist-saccade``, a simulated event-camera MNIST).
"""

from spikeforge.data.events import readers, saccade  # noqa: F401  (their datasets register themselves)
from spikeforge.data.events.binning import bin_events, denoise, downsample, frame_shape
from spikeforge.data.events.build import EVENT_SOURCES, EventSource, event_info, event_split, register_event_dataset
from spikeforge.data.events.loader import EventLoader
from spikeforge.data.events.options import EventOptions, SaccadeOptions
from spikeforge.data.events.saccade import saccade_path, simulate_saccades
from spikeforge.data.events.stream import EventStream, Sensor

__all__ = ["EVENT_SOURCES", "EventLoader", "EventOptions", "EventSource", "EventStream", "SaccadeOptions", "Sensor",
           "bin_events", "denoise", "downsample", "event_info", "event_split", "frame_shape", "register_event_dataset",
           "saccade_path", "simulate_saccades"]
