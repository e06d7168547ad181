"""Architectures: one spec builds the ANN and its SNN twin.

:func:`create_model` (or :func:`build_model` from a :class:`ModelSpec` and an :class:`SNNConfig`) builds a
:class:`TwinNet`; architectures live in the :data:`MODELS` registry (the VGG and ResNet modules register theirs when
imported here; add your own with :func:`register_model`). Sizes and input normalisation are explicit here; the
dataset-aware :func:`spikeforge.create_model` (``dataset="mnist"``) fills them from the dataset registry.

Training helpers for a plain PyTorch loop: :func:`param_groups` (optimizer groups ``weights``/``threshold``/``leak``
with their own learning rates) and :func:`auto_constrain` (thresholds stay positive and leaks in ``[0, 1]`` after
every optimizer step; a model from :func:`create_model` has it already). :class:`SilentLayerWarning` is what a model
warns with when its first forward pass sends no spikes to the readout.
"""

from spikeforge.models import mlp, resnet, vgg  # noqa: F401  (their architectures register in MODELS)
from spikeforge.models.base import TwinNet
from spikeforge.models.constraints import GROUPS, auto_constrain, param_groups, parameter_group
from spikeforge.models.health import SilentLayerWarning
from spikeforge.models.registry import MODELS, build_model, create_model, list_models, register_model
from spikeforge.models.spec import ModelSpec, SNNConfig

__all__ = ["GROUPS", "MODELS", "ModelSpec", "SNNConfig", "SilentLayerWarning", "TwinNet", "auto_constrain",
           "build_model", "create_model", "list_models", "param_groups", "parameter_group", "register_model"]
