"""Architectures: one spec builds the ANN and its SNN twin.

:func:`create_model` (or :func:`build_model` from a :class:`ModelSpec` and an :class:`SNNConfig`) builds a
:class:`TwinNet`; architectures live in the :data:`MODELS` registry (the VGG and ResNet modules register theirs when
imported here; add your own with :func:`register_model`).
"""

from spikeforge.models import resnet, vgg  # noqa: F401  (their architectures register in MODELS)
from spikeforge.models.base import TwinNet
from spikeforge.models.registry import MODELS, build_model, create_model, list_models, register_model
from spikeforge.models.spec import ModelSpec, SNNConfig

__all__ = ["MODELS", "ModelSpec", "SNNConfig", "TwinNet", "build_model", "create_model", "list_models",
           "register_model"]
