"""Update algorithms: how a tile turns the stashed ``x`` and ``δ`` into a weight change.

:mod:`.lowrank` decides which rank-1 writes a batch becomes (SGD, MBGD, SVD, SBE);
:mod:`.pulse` turns rank-1 writes into device pulses; :mod:`.fused` computes the sequential
pulse updates of several tiles at once (what :class:`~insitu.optim.AnalogSGD` uses).
"""

from .lowrank import UpdateAlgorithm, UpdateAlgorithmConfig
from .pulse import PulseUpdateConfig, UpdateCounters, exact_update, pulsed_update

__all__ = ["PulseUpdateConfig", "UpdateAlgorithm", "UpdateAlgorithmConfig", "UpdateCounters", "exact_update", "pulsed_update"]
