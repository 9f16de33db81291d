"""Encoders: one interface, one factory, a JSON registry of bundled models."""

from .base import MODALITIES, Encoded, Model, ModelError, Tower, l2_normalize
from .registry import DEFAULT_MODEL, canonical_name, create_model, create_reranker, list_models

__all__ = [
    "MODALITIES", "DEFAULT_MODEL", "canonical_name", "Encoded", "Model", "ModelError", "Tower",
    "create_model", "create_reranker", "l2_normalize", "list_models",
]
