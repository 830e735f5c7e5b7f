"""Layers: ``torch.nn`` modules whose weights live on analog tiles."""

from .linear import AnalogLinear

__all__ = ["AnalogLinear"]
