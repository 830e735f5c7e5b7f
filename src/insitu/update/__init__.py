"""Update algorithms: how a tile turns the stashed ``x`` and ``δ`` into a weight change."""

from .pulse import PulseUpdateConfig, UpdateCounters, exact_update, pulsed_update

__all__ = ["PulseUpdateConfig", "UpdateCounters", "exact_update", "pulsed_update"]
