"""insitu: simulate, evaluate and speed up the training of neural networks on analog hardware.

The main objects:

* :mod:`insitu.devices`: device models (constant step, linear step, soft bounds, ideal);
* :class:`insitu.io.IOConfig`: forward/backward non-idealities of the periphery;
* :class:`insitu.update.PulseUpdateConfig`: the stochastic pulse update;
* :class:`insitu.tile.TileConfig` and :class:`insitu.tile.AnalogTile`: one array;
* :class:`insitu.nn.AnalogLinear`, :class:`~insitu.nn.AnalogConv2d` (and 1d),
  :func:`~insitu.nn.convert_to_analog` and :class:`insitu.optim.AnalogSGD`: the user's view;
* :mod:`insitu.presets`: named configurations of the papers.
"""

from .config import ConfigError
from .devices import ConstantStepDevice, IdealDevice, LinearStepDevice, SoftBoundsDevice
from .io import IOConfig
from .nn import AnalogConv1d, AnalogConv2d, AnalogLinear, convert_to_analog, convert_to_digital
from .optim import AnalogSGD
from .tile import AnalogTile, TileConfig
from .update import PulseUpdateConfig

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConstantStepDevice",
    "IdealDevice",
    "LinearStepDevice",
    "SoftBoundsDevice",
    "IOConfig",
    "PulseUpdateConfig",
    "TileConfig",
    "AnalogTile",
    "AnalogLinear",
    "AnalogConv1d",
    "AnalogConv2d",
    "convert_to_analog",
    "convert_to_digital",
    "AnalogSGD",
    "__version__",
]
