"""Pre-defined structured sparsity and the edge-processing training accelerator (Dey et al. 2017).

* :mod:`~insitu.sparse.patterns`: connection patterns of a junction (structured random,
  clash-free for ``z`` memory banks, unstructured random) and their densities;
* :class:`~insitu.sparse.linear.SparseLinear`: a layer storing only the edges;
* :mod:`~insitu.sparse.fixed_point`: fixed-point training emulation;
* :mod:`~insitu.sparse.hardware`: the edge-processing hardware model (clocks, throughput,
  multipliers, memory);
* :func:`~insitu.sparse.analog.mask_analog_linear`: a sparse crossbar on an analog tile.
"""

from .analog import mask_analog_linear
from .fixed_point import FixedPointConfig, FixedPointFormat, FixedPointSGD, quantize, quantize_stochastic
from .hardware import EdgeEstimate, EdgeHardwareConfig
from .linear import SparseLinear
from .patterns import (
    PATTERN_KINDS,
    ConnectionPattern,
    PatternConfig,
    in_degree,
    make_pattern,
    network_density,
)

__all__ = [
    "PATTERN_KINDS",
    "ConnectionPattern",
    "EdgeEstimate",
    "EdgeHardwareConfig",
    "FixedPointConfig",
    "FixedPointFormat",
    "FixedPointSGD",
    "PatternConfig",
    "SparseLinear",
    "in_degree",
    "make_pattern",
    "mask_analog_linear",
    "network_density",
    "quantize",
    "quantize_stochastic",
]
