"""Architecture registry: ``create_model(name, spiking=..., ...)`` builds the ANN or its SNN twin from one spec.

:data:`MODELS` maps an architecture name to a builder ``builder(spec, snn_config_or_None) -> TwinNet``; the VGG and
ResNet variants register themselves in :mod:`~spikeforge.models.vgg` and :mod:`~spikeforge.models.resnet`, a user's
own with :func:`register_model`. The twins' state dicts use the same names for every weight; the SNN adds
``threshold`` and ``leak`` of each neuron layer, so ``snn.load_state_dict(ann.state_dict(), strict=False)`` loads
the ANN weights directly.
"""

from __future__ import annotations

from typing import Callable

from spikeforge.errors import ConfigError
from spikeforge.models.base import TwinNet
from spikeforge.models.spec import ModelSpec, SNNConfig
from spikeforge.registry import Registry

Builder = Callable[..., TwinNet]

#: Architecture name -> builder ``(spec, snn_config_or_None) -> TwinNet``.
MODELS: Registry[Builder] = Registry("architecture")


def register_model(name: str, builder: Builder) -> None:
    """Add (or replace) an architecture: ``builder(spec, snn_config_or_None)`` must return a :class:`TwinNet`."""
    MODELS.register(name, builder, overwrite=True)


def list_models() -> list[str]:
    """Names of the registered architectures (``spikeforge models`` prints them)."""
    return MODELS.names()


def build_model(spec: ModelSpec, snn: SNNConfig | None = None) -> TwinNet:
    """Build from a :class:`ModelSpec` (ANN if ``snn`` is None, else its SNN twin)."""
    return MODELS.get(spec.arch)(spec, snn)


def create_model(name: str, *, spiking: bool = False, snn: SNNConfig | dict | None = None, **spec_kwargs) -> TwinNet:
    """``create_model("vgg16", num_classes=10, in_channels=3, input_size=32, mean=[...], std=[...], spiking=True,
    timesteps=5)`` with every size explicit (:func:`spikeforge.create_model` fills them from ``dataset=``).

    Keyword arguments that are :class:`SNNConfig` fields (``timesteps``, ``encoding``, ``leak`` ...) and ``snn``
    configure the spiking twin and need ``spiking=True``; the rest are :class:`ModelSpec` fields.
    """
    if "dataset" in spec_kwargs:
        raise ConfigError(f"create_model({name!r}, dataset=...): the dataset-aware factory is spikeforge.create_model "
                          "(from spikeforge import create_model); spikeforge.models.create_model takes explicit "
                          "num_classes, in_channels, input_size, mean and std")
    snn_fields = set(SNNConfig.__dataclass_fields__)
    snn_kwargs = {k: spec_kwargs.pop(k) for k in list(spec_kwargs) if k in snn_fields}
    if not spiking and (snn is not None or snn_kwargs):
        given = ", ".join(sorted(snn_kwargs) + (["snn"] if snn is not None else []))
        raise ConfigError(f"create_model({name!r}): {given} configure the spiking twin, but spiking is False; pass "
                          "spiking=True for the SNN, or leave them out for the ANN")
    spec = ModelSpec.from_dict({"arch": name, **spec_kwargs}, where="create_model arguments")
    if not spiking:
        return build_model(spec)
    base = snn if isinstance(snn, SNNConfig) else SNNConfig.from_dict(dict(snn or {}), where="create_model snn")
    return build_model(spec, base.updated(**snn_kwargs) if snn_kwargs else base)
