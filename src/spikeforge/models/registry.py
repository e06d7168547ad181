"""Model registry: ``create_model(name, spiking=..., ...)`` builds the ANN or its SNN twin from one spec.

The twins' state dicts use the same names for every weight; the SNN adds ``threshold`` and ``leak`` of each neuron
layer, so ``snn.load_state_dict(ann.state_dict(), strict=False)`` loads the ANN weights directly.
"""

from __future__ import annotations

from typing import Callable

from spikeforge.errors import ConfigError
from spikeforge.models.base import TwinNet
from spikeforge.models.resnet import BLOCKS, ResNet
from spikeforge.models.spec import ModelSpec, SNNConfig
from spikeforge.models.vgg import CFGS, VGG

MODELS: dict[str, Callable[[ModelSpec, SNNConfig | None], TwinNet]] = {}
for _name in CFGS:
    MODELS[_name] = VGG
for _name in BLOCKS:
    MODELS[_name] = ResNet


def register_model(name: str, builder: Callable[[ModelSpec, SNNConfig | None], TwinNet]) -> None:
    """Add an architecture: ``builder(spec, snn_config_or_None)`` must return a :class:`TwinNet`."""
    MODELS[name] = builder


def list_models() -> list[str]:
    return sorted(MODELS)


def build_model(spec: ModelSpec, snn: SNNConfig | None = None) -> TwinNet:
    """Build from a :class:`ModelSpec` (ANN if ``snn`` is None, else its SNN twin)."""
    if spec.arch not in MODELS:
        raise ConfigError(f"unknown architecture {spec.arch!r}; available: {list_models()}")
    return MODELS[spec.arch](spec, snn)


def create_model(name: str, *, spiking: bool = False, snn: SNNConfig | dict | None = None, **spec_kwargs) -> TwinNet:
    """``create_model("vgg16", num_classes=10, in_channels=3, input_size=32, spiking=True, timesteps=5)``.

    Keyword arguments that are :class:`SNNConfig` fields (``timesteps``, ``encoding``, ``leak`` ...) configure the
    spiking twin; the rest are :class:`ModelSpec` fields.
    """
    snn_fields = set(SNNConfig.__dataclass_fields__)
    snn_kwargs = {k: spec_kwargs.pop(k) for k in list(spec_kwargs) if k in snn_fields}
    spec = ModelSpec.from_dict({"arch": name, **spec_kwargs}, where="create_model arguments")
    if snn is not None or snn_kwargs:
        spiking = True
    if not spiking:
        return build_model(spec)
    base = snn if isinstance(snn, SNNConfig) else SNNConfig.from_dict(dict(snn or {}))
    return build_model(spec, base.updated(**snn_kwargs) if snn_kwargs else base)
