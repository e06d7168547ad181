"""Model specs: one description builds the ANN and its SNN twin.

:class:`ModelSpec` is the architecture (what the weights are); :class:`SNNConfig` is how the spiking twin runs
(timesteps, encoding, neuron model and dynamics, readout). Both are validated configs (:func:`spikeforge.config.config`:
types, physical bounds and choices are checked on construction and assignment, one :class:`ConfigError` line naming
the key) that round-trip through JSON, so they live in checkpoint headers and recipes.
"""

from __future__ import annotations

from dataclasses import asdict, field
from typing import Annotated, Any, Literal

from pydantic import Field

from spikeforge.config import Finite, Fraction, NonNegFloat, PosFloat, PosInt, config, from_dict
from spikeforge.errors import ConfigError
from spikeforge.neuron import NEURONS
from spikeforge.neuron.surrogate import get_surrogate
from spikeforge.nn.encoders import ENCODERS

#: Channel multiplier: positive, and at most 16x the paper's widths (larger is a typo, not a network).
Width = Annotated[PosFloat, Field(le=16)]
#: Dropout probability in [0, 1).
DropoutP = Annotated[NonNegFloat, Field(lt=1)]

#: Keywords that :meth:`TwinNet.act <spikeforge.models.base.TwinNet.act>` passes to every neuron model itself;
#: ``snn.neuron_params`` holds only the model's own extra parameters.
NEURON_COMMON_KWARGS = ("threshold", "leak", "channels", "learn_threshold", "learn_leak", "surrogate", "order",
                        "reset", "fused")


@config
class ModelSpec:
    """Architecture description shared by the ANN and SNN twins.

    ``arch``: registered architecture (``vgg5``, ``vgg16``, ``resnet20`` ...). ``input_size``: 28 (MNIST), 32
    (CIFAR), 64 (Tiny-ImageNet) or 224 (ImageNet); the classifier's input size is derived from it. ``width`` scales
    every channel count (1.0 = the paper's; at most 16). ``hidden``: classifier hidden sizes (None = the paper's).
    ``bias``: conv and linear biases (bias-free by default, as in the papers). ``batch_norm``: BN after each conv (ANN
    only; folded away by conversion, which sets ``bn_folded``: BN slots become identities and convs get biases).
    ``bntt``: batch norm through time (Kim & Panda 2021) after every conv and hidden FC of the SNN twin (the ANN twin
    has plain BatchNorm there); set automatically by the ``*_bntt`` architectures. ``dropout``: classifier dropout;
    ``conv_dropout``: dropout after conv layers not followed by a pool. ``mean``/``std``: input normalization inside
    the model (1 or ``in_channels`` values each). ``input``: ``image`` (``[B, C, H, W]`` in [0, 1], encoded by
    ``snn.encoding``) or ``events`` (binned event frames ``[B, T, C, H, W]``, or ``[B, T, C]`` with ``input_size``
    1 for a 1-D sensor such as SHD's 700 channels; event counts, frame ``t`` entering the first layer at step ``t``
    with ``snn.encoding: events``; the ANN twin sees the mean frame).
    """

    arch: str = "vgg5"
    num_classes: PosInt = 10
    in_channels: PosInt = 3
    input_size: PosInt = 32
    width: Width = 1.0
    hidden: list[PosInt] | None = None
    bias: bool = False
    batch_norm: bool = False
    bn_folded: bool = False
    bntt: bool = False
    dropout: DropoutP = 0.2
    conv_dropout: DropoutP = 0.0
    mean: list[Finite] = field(default_factory=lambda: [0.0])
    std: list[PosFloat] = field(default_factory=lambda: [1.0])
    input: Literal["image", "events"] = "image"

    def __post_init__(self):
        if len(self.mean) not in (1, self.in_channels) or len(self.std) != len(self.mean):
            raise ConfigError(f"ModelSpec.mean/std need 1 or in_channels={self.in_channels} values each, got "
                              f"{len(self.mean)} and {len(self.std)}")
        if self.arch.endswith("_bntt") and not self.bntt:
            self.bntt = True
        if self.bntt and self.batch_norm:
            raise ConfigError("ModelSpec.bntt and batch_norm exclude each other (BNTT is the SNN's batch norm); "
                              "set batch_norm: false")

    @property
    def conv_bias(self) -> bool:
        return self.bias or (self.batch_norm and self.bn_folded)

    def channels(self, c: int) -> int:
        return max(1, int(round(c * self.width)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "model") -> ModelSpec:
        """Build from a mapping (recipe section, checkpoint header); errors are prefixed with ``where``."""
        return from_dict(cls, data, where)


@config
class SNNConfig:
    """How the spiking twin runs.

    ``timesteps``: simulation length ``T`` (the model's one home for it: ``model.timesteps``). ``neuron``: the
    neuron model, a name registered in :data:`spikeforge.neuron.NEURONS` (``lif`` = IF/LIF); ``neuron_params``:
    its own extra constructor parameters (e.g. ALIF's ``beta``). ``order``: ``integrate-fire`` (default) or
    ``fire-integrate`` (one-step delay per layer). ``reset``: ``soft`` (subtract threshold) or ``hard``.
    ``threshold``/``leak``: initial values for every layer (conversion overwrites thresholds).
    ``learn_threshold``/``learn_leak``: make them trainable. ``per_channel``: one threshold/leak per channel instead
    of per layer. ``surrogate``: name or mapping (see :mod:`spikeforge.neuron.surrogate`). ``encoding``: a registered
    encoder (:data:`spikeforge.nn.encoders.ENCODERS`: ``direct`` or ``poisson``, the latter with
    ``poisson_convention`` ``rate`` and ``poisson_rate``, or ``half``). ``readout``: ``sum`` or ``mean`` over time.
    ``fused``: fused multi-step neuron (fast path) or the per-step reference. ``time_chunk``: with gradients off,
    run long ``T`` in chunks of this many steps carrying the neuron state (bounded memory). ``checkpoint_chunk``:
    train with activation checkpointing over chunks of this many timesteps: only chunk-boundary neuron states are
    kept, each chunk's activations are recomputed in backward; exact gradients; integrate-fire ordering only (and no
    spike-time surrogate such as STDB); not with batch norm in training mode. Used only in training mode with
    gradients enabled and when it is smaller than ``timesteps``.
    """

    timesteps: PosInt = 5
    encoding: str = "direct"
    poisson_convention: Literal["rate", "half"] = "rate"
    poisson_rate: PosFloat = 1.0
    neuron: str = "lif"
    neuron_params: dict[str, Any] = field(default_factory=dict)
    order: Literal["integrate-fire", "fire-integrate"] = "integrate-fire"
    reset: Literal["soft", "hard"] = "soft"
    threshold: PosFloat = 1.0
    leak: Fraction = 1.0
    learn_threshold: bool = False
    learn_leak: bool = False
    per_channel: bool = False
    surrogate: Any = "linear"
    readout: Literal["sum", "mean"] = "sum"
    fused: bool = True
    time_chunk: PosInt | None = 32
    checkpoint_chunk: PosInt | None = None

    def __post_init__(self):
        if self.encoding not in ENCODERS:
            raise ConfigError(f"SNNConfig.encoding: unknown encoder {self.encoding!r}; available: {ENCODERS.names()}")
        if self.neuron not in NEURONS:
            raise ConfigError(f"SNNConfig.neuron: unknown neuron model {self.neuron!r}; available: {NEURONS.names()}")
        try:
            surrogate = get_surrogate(self.surrogate)
        except ConfigError as exc:
            raise ConfigError(f"SNNConfig.surrogate: {exc}") from None
        _check_neuron(self)
        if self.checkpoint_chunk is not None and self.order != "integrate-fire":
            raise ConfigError("SNNConfig.checkpoint_chunk needs order 'integrate-fire' (the chunk-boundary state of "
                              f"'{self.order}' is not carried differentiably); set checkpoint_chunk: null")
        if self.checkpoint_chunk is not None and surrogate.needs_spike_time:
            raise ConfigError("SNNConfig.checkpoint_chunk cannot be used with a spike-time dependent surrogate "
                              f"({surrogate}): the time since the last spike is not carried across chunks")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "snn") -> SNNConfig:
        """Build from a mapping (recipe section, checkpoint header); errors are prefixed with ``where``."""
        return from_dict(cls, data, where)

    def updated(self, **changes) -> SNNConfig:
        """A copy with ``changes`` applied (validated; unknown keys are an error)."""
        return from_dict(SNNConfig, {**self.to_dict(), **changes}, "snn")


def _check_neuron(c: SNNConfig) -> None:
    """Build one throwaway neuron of the configured model (two scalar parameters), so that bad ``neuron_params``,
    or a setting the model does not support, fail here with the key named rather than when the network is built."""
    common = sorted(set(c.neuron_params) & set(NEURON_COMMON_KWARGS))
    if common:
        raise ConfigError(f"SNNConfig.neuron_params: {common} are set by their own snn keys (snn.{common[0]}), "
                          "not in neuron_params")
    build = NEURONS.get(c.neuron)
    for key, params in (("neuron", {}), ("neuron_params", c.neuron_params)):
        try:
            build(c.threshold, c.leak, surrogate=c.surrogate, order=c.order, reset=c.reset, fused=c.fused, **params)
        except (ConfigError, TypeError, ValueError) as exc:
            raise ConfigError(f"SNNConfig.{key}: neuron model {c.neuron!r} refuses these settings: {exc}") from None
