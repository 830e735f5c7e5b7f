"""Time, energy and area of training a network on analog, PCM or digital hardware.

Analytic models, every assumption a named, validated config field citing its source:

* ``"rpu"``: the RPU accelerator of Gokmen & Vlasov 2016 (:class:`RPUSystemConfig`);
* ``"pcm"``: PCM multi-conductance training, Ambrogio et al. 2018 / Cristiano et al. 2018
  (:class:`PCMSystemConfig`);
* ``"edge"``: the edge-processing sparse training accelerator of Dey et al. 2017, timed by
  :mod:`insitu.sparse.hardware` (:class:`EdgeSystemConfig`);
* ``"gpu"``, ``"cpu"``: a digital reference by peak rate, utilisation and power, or a step time
  measured with PyTorch (:class:`DigitalConfig`, :func:`measure_time_per_example`).

Typical use::

    from insitu.hardware import get_estimator, named_network, network_from_model
    network = named_network("fc-1b")                 # or network_from_model(model, (784,))
    estimate = get_estimator("rpu").estimate(network, examples_per_epoch=60000)
    estimate.summary()                               # time, energy, area, GOps/s/W, ...

More estimators plug in with :func:`register_estimator`.
"""

from . import report
from .analysis import numeric_parameters, required_value, sensitivity, with_parameter
from .base import (
    PENDING_ESTIMATORS,
    Estimate,
    Estimator,
    LayerEstimate,
    estimator_names,
    get_estimator,
    ops_per_example,
    register_estimator,
)
from .crossbar import (
    CrossbarEstimator,
    DataMovementConfig,
    DigitalUnitConfig,
    PeripheryConfig,
)
from .digital import CPUConfig, DigitalConfig, GPUConfig, measure_time_per_example
from .edge import EdgeEstimator, EdgeSystemConfig
from .pcm import PCMEstimator, PCMSystemConfig
from .rpu import RPUEstimator, RPUSystemConfig
from .shapes import (
    NAMED_NETWORKS,
    HardwareMappingError,
    LayerShape,
    NetworkShape,
    named_network,
    network_from_mlp,
    network_from_model,
    register_layer_mapper,
)

__all__ = [
    "NAMED_NETWORKS",
    "PENDING_ESTIMATORS",
    "CPUConfig",
    "CrossbarEstimator",
    "DataMovementConfig",
    "DigitalConfig",
    "DigitalUnitConfig",
    "EdgeEstimator",
    "EdgeSystemConfig",
    "Estimate",
    "Estimator",
    "GPUConfig",
    "HardwareMappingError",
    "LayerEstimate",
    "LayerShape",
    "NetworkShape",
    "PCMEstimator",
    "PCMSystemConfig",
    "PeripheryConfig",
    "RPUEstimator",
    "RPUSystemConfig",
    "estimator_names",
    "get_estimator",
    "measure_time_per_example",
    "named_network",
    "network_from_mlp",
    "network_from_model",
    "numeric_parameters",
    "ops_per_example",
    "register_estimator",
    "register_layer_mapper",
    "report",
    "required_value",
    "sensitivity",
    "with_parameter",
]
