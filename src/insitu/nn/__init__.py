"""Layers: ``torch.nn`` modules whose weights live on analog tiles."""

from .conv import AnalogConv1d, AnalogConv2d
from .convert import convert_to_analog, convert_to_digital
from .linear import AnalogLinear

__all__ = ["AnalogConv1d", "AnalogConv2d", "AnalogLinear", "convert_to_analog", "convert_to_digital"]
