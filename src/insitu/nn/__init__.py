"""Layers: ``torch.nn`` modules whose weights live on analog tiles.

:mod:`insitu.nn.functional` holds the autograd bridge they all compute through
(:func:`~insitu.nn.functional.analog_linear`).
"""

from . import functional
from .conv import AnalogConv1d, AnalogConv2d
from .convert import convert_to_analog, convert_to_digital
from .functional import analog_linear
from .linear import AnalogLinear
from .recurrent import AnalogGRU, AnalogGRUCell, AnalogLSTM, AnalogLSTMCell, AnalogRNN, AnalogRNNCell

__all__ = [
    "AnalogConv1d", "AnalogConv2d", "AnalogLinear", "AnalogRNN", "AnalogRNNCell", "AnalogLSTM", "AnalogLSTMCell",
    "AnalogGRU", "AnalogGRUCell", "analog_linear", "convert_to_analog", "convert_to_digital", "functional",
]
