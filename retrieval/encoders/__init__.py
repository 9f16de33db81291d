"""Encoders: one interface, one factory, a JSON registry of bundled models."""

from .base import MODALITIES, Encoded, Model, ModelError, Tower, l2_normalize
from .registry import DEFAULT_MODEL, canonical_name, create_model, list_models, model_part

__all__ = [
    "MODALITIES", "DEFAULT_MODEL", "canonical_name", "Encoded", "Model", "ModelError", "Tower",
    "create_model", "l2_normalize", "list_models", "model_part",
]
