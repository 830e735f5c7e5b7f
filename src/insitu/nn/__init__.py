"""Layers: ``torch.nn`` modules whose weights live on analog tiles."""

from .conv import AnalogConv1d, AnalogConv2d
from .convert import convert_to_analog, convert_to_digital
from .linear import AnalogLinear

__all__ = ["AnalogLinear", "AnalogConv1d", "AnalogConv2d", "convert_to_analog", "convert_to_digital"]
