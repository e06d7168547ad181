"""Options of the event datasets (recipe section ``data.events``): binning, denoising, down-sampling, augmentation
and the settings of the ``mnist-saccade`` simulator.

The number of frames per sample is ``data.timesteps`` (one level up, next to ``dataset``), so that
``data: {dataset: nmnist, timesteps: 10}`` is a complete event-data section.
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from spikeforge.config import NonNegFloat, NonNegInt, PosFloat, PosInt, config, from_dict

__all__ = ["EventOptions", "SaccadeOptions", "event_options_field"]

#: Probability of dropping an event: in [0, 1).
DropP = Annotated[NonNegFloat, Field(lt=1)]


@config
class SaccadeOptions:
    """The simulated sensor of ``mnist-saccade`` (:mod:`spikeforge.data.events.saccade`).

    ``contrast``: the ON/OFF threshold on the change of log intensity since a pixel's last event;
    ``contrast_sigma``: pixel-to-pixel spread (standard deviation) of that threshold, fixed per sensor;
    ``refractory_us``: after an event a pixel is blind for this long; ``noise_hz``: background events per pixel
    per second (random polarity; 0 = noise-free); ``saccade_ms``: duration of each of the three saccades;
    ``steps_per_saccade``: simulation steps per saccade; ``amplitude_px``: size of the triangular eye movement;
    ``dark``: luminance of a black pixel relative to white (log of 0 is avoided); ``seed``: the sensor's random
    streams (threshold mismatch, noise)."""

    contrast: PosFloat = 0.5
    contrast_sigma: NonNegFloat = 0.03
    refractory_us: NonNegFloat = 1000.0
    noise_hz: NonNegFloat = 0.0
    saccade_ms: PosFloat = 100.0
    steps_per_saccade: PosInt = 10
    amplitude_px: Annotated[PosFloat, Field(le=6)] = 6.0
    dark: Annotated[PosFloat, Field(le=1)] = 0.1
    seed: NonNegInt = 0


def _saccade(value: Any) -> Any:
    return from_dict(SaccadeOptions, value, "data.events.saccade") if isinstance(value, dict) else value


@config
class EventOptions:
    """How an event dataset becomes frames ``[T, C, H, W]`` (``[T, C]`` for a 1-D sensor).

    ``bin_by``: ``time`` (T equal time windows spanning each recording, first to last event), ``count`` (T bins
    holding equal numbers of events) or ``window`` (T windows of ``window_us`` each from the recording's first
    event; later events are dropped). ``denoise_us``: drop an event unless one of its 4 neighbouring pixels fired
    within this time before it (the filter of Tonic's ``Denoise``). ``downsample``: integer spatial down-sampling
    (``x // f``, ``y // f``; counts add up). ``merge_polarity``: one channel for ON and OFF events (else two,
    OFF then ON). Augmentation (training only; ``data.augment`` switches it): ``crop_padding`` (random crop from
    the zero-padded frames, None: the dataset's default), ``flip`` (random horizontal flip, None: the dataset's
    default), ``time_jitter`` (probability that an event moves to the previous or next frame), ``drop_events``
    (probability that an event is dropped). ``saccade``: the ``mnist-saccade`` simulator."""

    bin_by: Literal["time", "count", "window"] = "time"
    window_us: PosFloat | None = None
    denoise_us: PosFloat | None = None
    downsample: PosInt = 1
    merge_polarity: bool = False
    crop_padding: NonNegInt | None = None
    flip: bool | None = None
    time_jitter: Annotated[NonNegFloat, Field(le=1)] = 0.0
    drop_events: DropP = 0.0
    saccade: Annotated[SaccadeOptions, BeforeValidator(_saccade)] = field(default_factory=SaccadeOptions)

    def __post_init__(self) -> None:
        if self.bin_by == "window" and self.window_us is None:
            raise ValueError("data.events.bin_by 'window' needs window_us (the length of one frame in microseconds)")
        if self.bin_by != "window" and self.window_us is not None:
            raise ValueError(f"data.events.window_us is used only with bin_by 'window' (bin_by is {self.bin_by!r})")

    def binning_key(self) -> dict[str, Any]:
        """The options that change the binned frames (the cache key; augmentation is applied later)."""
        return {"bin_by": self.bin_by, "window_us": self.window_us, "denoise_us": self.denoise_us,
                "downsample": self.downsample, "merge_polarity": self.merge_polarity}


def _events(value: Any) -> Any:
    return from_dict(EventOptions, value, "data.events") if isinstance(value, dict) else value


#: The type of ``DataConfig.events``: a mapping in a recipe, validated into :class:`EventOptions`.
event_options_field = Annotated[EventOptions, BeforeValidator(_events)]
