"""Architectures: one spec builds the ANN and its SNN twin."""

from spikeforge.models.base import TwinNet
from spikeforge.models.registry import MODELS, build_model, create_model, list_models, register_model
from spikeforge.models.spec import ModelSpec, SNNConfig

__all__ = ["MODELS", "ModelSpec", "SNNConfig", "TwinNet", "build_model", "create_model", "list_models",
           "register_model"]
