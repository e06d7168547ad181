"""Model specs: one description builds the ANN and its SNN twin.

:class:`ModelSpec` is the architecture (what the weights are); :class:`SNNConfig` is how the spiking twin runs
(timesteps, encoding, neuron dynamics, readout). Both are plain dataclasses that round-trip through JSON, so they
live in checkpoint headers and recipes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from spikeforge.errors import ConfigError


def _check_keys(cls, data: dict, where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed keys: {sorted(known)}")


@dataclass
class ModelSpec:
    """Architecture description shared by the ANN and SNN twins.

    ``arch``: registry name (``vgg5``, ``vgg16``, ``resnet20`` ...). ``input_size``: 28 (MNIST), 32 (CIFAR), 64
    (Tiny-ImageNet) or 224 (ImageNet); the classifier's input size is derived from it. ``width`` scales every
    channel count (1.0 = the paper's). ``hidden``: classifier hidden sizes (None = the paper's). ``bias``: conv and
    linear biases (bias-free by default, as in the papers). ``batch_norm``: BN after each conv (ANN only; folded away
    by conversion, which sets ``bn_folded``: BN slots become identities and convs get biases). ``bntt``: batch norm
    through time (Kim & Panda) after every conv and hidden FC of the SNN twin (the ANN twin has plain BatchNorm
    there); set automatically by the ``*_bntt`` architectures. ``dropout``: classifier dropout; ``conv_dropout``:
    dropout after conv layers not followed by a pool. ``mean``/``std``: input normalization inside the model.
    """

    arch: str = "vgg5"
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    width: float = 1.0
    hidden: list[int] | None = None
    bias: bool = False
    batch_norm: bool = False
    bn_folded: bool = False
    bntt: bool = False
    dropout: float = 0.2
    conv_dropout: float = 0.0
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self):
        for name in ("num_classes", "in_channels", "input_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (isinstance(self.width, (int, float)) and self.width > 0):
            raise ConfigError(f"model.width must be a positive number, got {self.width!r}")
        for name in ("dropout", "conv_dropout"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v < 1):
                raise ConfigError(f"model.{name} must be in [0, 1), got {v!r}")
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        if len(self.mean) not in (1, self.in_channels) or len(self.std) != len(self.mean):
            raise ConfigError(f"model.mean/std need 1 or in_channels={self.in_channels} values each")
        if any(s <= 0 for s in self.std):
            raise ConfigError("model.std values must be positive")
        if self.arch.endswith("_bntt"):
            self.bntt = True
        if self.bntt and self.batch_norm:
            raise ConfigError("model.bntt and model.batch_norm exclude each other (BNTT is the SNN's batch norm)")

    @property
    def conv_bias(self) -> bool:
        return self.bias or (self.batch_norm and self.bn_folded)

    def channels(self, c: int) -> int:
        return max(1, int(round(c * self.width)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "model") -> ModelSpec:
        _check_keys(cls, data, where)
        return cls(**data)


@dataclass
class SNNConfig:
    """How the spiking twin runs.

    ``order``: ``integrate-fire`` (B, default) or ``fire-integrate`` (A, one-step delay per layer).
    ``reset``: ``soft`` (subtract threshold) or ``hard``. ``threshold``/``leak``: initial values for every layer
    (conversion overwrites thresholds). ``learn_threshold``/``learn_leak``: make them trainable.
    ``per_channel``: one threshold/leak per channel instead of per layer. ``surrogate``: name or mapping (see
    :mod:`spikeforge.neuron.surrogate`). ``encoding``: ``direct`` or ``poisson`` (``poisson_convention`` ``rate`` with
    ``poisson_rate``, or ``half``). ``readout``: ``sum`` or ``mean`` over time. ``fused``: fused multi-step neuron
    (fast path) or the per-step reference. ``time_chunk``: with gradients off, run long ``T`` in chunks of this many
    steps carrying the neuron state (bounded memory). ``checkpoint_chunk``: train with activation checkpointing
    over chunks of this many timesteps: only chunk-boundary neuron states are kept, each chunk's activations are
    recomputed in backward; exact gradients; integrate-fire ordering only (and no spike-time surrogate such as
    STDB); not with batch norm in training mode. Used only in training mode with gradients enabled and when it is
    smaller than ``timesteps``.
    """

    timesteps: int = 5
    encoding: str = "direct"
    poisson_convention: str = "rate"
    poisson_rate: float = 1.0
    order: str = "integrate-fire"
    reset: str = "soft"
    threshold: float = 1.0
    leak: float = 1.0
    learn_threshold: bool = False
    learn_leak: bool = False
    per_channel: bool = False
    surrogate: Any = "linear"
    readout: str = "sum"
    fused: bool = True
    time_chunk: int | None = 32
    checkpoint_chunk: int | None = None

    def __post_init__(self):
        from spikeforge.nn.encoders import CONVENTIONS
        from spikeforge.neuron.functional import ORDERS, RESETS
        from spikeforge.neuron.surrogate import get_surrogate

        if not isinstance(self.timesteps, int) or self.timesteps < 1:
            raise ConfigError(f"snn.timesteps must be a positive integer, got {self.timesteps!r}")
        choices = {"encoding": ("direct", "poisson"), "poisson_convention": CONVENTIONS, "order": ORDERS,
                   "reset": RESETS, "readout": ("sum", "mean")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"snn.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if not 0.0 <= float(self.leak) <= 1.0:
            raise ConfigError(f"snn.leak must be in [0, 1], got {self.leak!r}")
        if float(self.threshold) <= 0:
            raise ConfigError(f"snn.threshold must be positive, got {self.threshold!r}")
        if self.time_chunk is not None and (not isinstance(self.time_chunk, int) or self.time_chunk < 1):
            raise ConfigError(f"snn.time_chunk must be a positive integer or null, got {self.time_chunk!r}")
        ck = self.checkpoint_chunk
        if ck is not None and (not isinstance(ck, int) or isinstance(ck, bool) or ck < 1):
            raise ConfigError(f"snn.checkpoint_chunk must be a positive integer or null, got {ck!r}")
        surrogate = get_surrogate(self.surrogate)  # validates
        if ck is not None and self.order != "integrate-fire":
            raise ConfigError("snn.checkpoint_chunk needs order 'integrate-fire' (the chunk-boundary state of "
                              f"'{self.order}' is not carried differentiably); set checkpoint_chunk: null")
        if ck is not None and surrogate.needs_spike_time:
            raise ConfigError("snn.checkpoint_chunk cannot be used with a spike-time dependent surrogate "
                              f"({surrogate}): the time since the last spike is not carried across chunks")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "snn") -> SNNConfig:
        _check_keys(cls, data, where)
        return cls(**data)

    def updated(self, **changes) -> SNNConfig:
        data = self.to_dict()
        _check_keys(SNNConfig, changes, "snn")
        data.update(changes)
        return SNNConfig(**data)
