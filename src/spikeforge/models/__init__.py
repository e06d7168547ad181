"""Architectures: one spec builds the ANN and its SNN twin."""

from .base import TwinNet
from .registry import MODELS, build_model, create_model, list_models, register_model
from .spec import ModelSpec, SNNConfig

__all__ = ["MODELS", "ModelSpec", "SNNConfig", "TwinNet", "build_model", "create_model", "list_models",
           "register_model"]
