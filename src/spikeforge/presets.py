"""Dataset-aware model construction: the one place where models meet the dataset registry.

``create_model("vgg9", dataset="cifar10", spiking=True, timesteps=5)`` takes the input channels, image size, number of
classes and the input normalisation (per-channel mean and std) from :data:`spikeforge.data.DATASETS`, so the model
normalises its ``[0, 1]`` input exactly as the recipes' models do. Explicit keywords win over the dataset's values.

Layering: :mod:`spikeforge.models` and :mod:`spikeforge.data` are siblings that never import each other; this module
sits just above both (below :mod:`spikeforge.methods`).
"""

from __future__ import annotations

from typing import Any

from spikeforge.data import DATASETS
from spikeforge.data.registry import canonical_name
from spikeforge.errors import ConfigError
from spikeforge.models import SNNConfig, TwinNet
from spikeforge.models import create_model as create_explicit

__all__ = ["create_model", "model_defaults"]


def model_defaults(dataset: str, image_size: int | None = None) -> dict[str, Any]:
    """The :class:`~spikeforge.models.ModelSpec` values a dataset implies: ``in_channels``, ``input_size``
    (``image_size`` if given, e.g. a resized dataset), ``mean``, ``std`` and ``num_classes`` (left out when the
    dataset does not know it, as for ``imagefolder`` before its folder is read)."""
    info = DATASETS[canonical_name(dataset, what="dataset")]
    out: dict[str, Any] = {"in_channels": info.in_channels, "input_size": int(image_size or info.image_size),
                           "mean": list(info.mean), "std": list(info.std)}
    if info.num_classes:
        out["num_classes"] = info.num_classes
    if info.kind == "events":
        out["input"] = "events"
    return out


def _event_snn(dataset: str, spiking: bool, snn: SNNConfig | dict | None, kwargs: dict) -> None:
    """An event dataset's SNN reads its frames (``encoding: events``) for its default number of frames, unless the
    caller says otherwise (an explicit other encoding is refused by the model with one line)."""
    info = DATASETS[canonical_name(dataset, what="dataset")]
    if info.kind != "events" or not spiking:
        return
    given = snn.to_dict() if isinstance(snn, SNNConfig) else dict(snn or {})
    if "encoding" not in kwargs and "encoding" not in given:
        kwargs["encoding"] = "events"
    if "timesteps" not in kwargs and "timesteps" not in given:
        kwargs["timesteps"] = info.timesteps


def create_model(name: str, *, dataset: str | None = None, spiking: bool = False,
                 snn: SNNConfig | dict | None = None, **kwargs: Any) -> TwinNet:
    """Build the ANN (``spiking=False``) or SNN twin of architecture ``name``.

    ``dataset`` (``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"cifar100"``, ``"imagefolder"`` ... any name in
    :data:`~spikeforge.data.DATASETS`) fills ``in_channels``, ``input_size``, ``num_classes``, ``mean`` and ``std``;
    keywords given explicitly win. Other keywords are :class:`~spikeforge.models.ModelSpec` fields (``width``,
    ``hidden``, ``batch_norm`` ...) or, with ``spiking=True`` only, :class:`~spikeforge.models.SNNConfig` fields
    (``timesteps``, ``encoding``, ``threshold``, ``leak``, ``learn_threshold``, ``learn_leak``, ``neuron`` ...)::

        snn = create_model("vgg9", dataset="cifar10", spiking=True, timesteps=5, learn_threshold=True)

    An event dataset (``nmnist``, ``shd`` ...) also sets ``input="events"`` and, for the SNN, ``encoding="events"``
    and its default number of frames as ``timesteps`` (explicit values win; the data must be binned into as many
    frames: ``data.timesteps``).

    Without ``dataset`` every size is explicit (as :func:`spikeforge.models.create_model`); a spiking model without
    input normalisation rarely spikes at initialisation, and its first forward pass says so.
    """
    if dataset is None:
        return create_explicit(name, spiking=spiking, snn=snn, **kwargs)
    defaults = model_defaults(dataset, kwargs.get("input_size"))
    _event_snn(dataset, spiking, snn, kwargs)
    if "num_classes" not in defaults and "num_classes" not in kwargs:
        raise ConfigError(f"create_model({name!r}, dataset={dataset!r}): this dataset does not know its number of "
                          "classes before its folder is read; pass num_classes=")
    return create_explicit(name, spiking=spiking, snn=snn, **{**defaults, **kwargs})
