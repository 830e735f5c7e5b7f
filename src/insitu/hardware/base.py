"""The estimator interface, its result type and the registry of hardware models.

Every hardware model is an :class:`Estimator` subclass with a config class (a validated
:class:`~insitu.config.Config`) and one method, :meth:`Estimator.estimate_layers`, returning
per-layer time and energy by component. The base class adds areas, totals, operations and the
derived figures of merit, so all models report the same :class:`Estimate`.

Models are found by name in a registry (:func:`register_estimator`, :func:`get_estimator`), so
that a model written elsewhere plugs in (as the edge-processing sparse accelerator does in
:mod:`insitu.hardware.edge`) with::

    @register_estimator("edge")
    class EdgeEstimator(Estimator):
        config_class = EdgeConfig
        def estimate_layers(self, network): ...
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import ClassVar

from ..config import Config, ConfigError
from .shapes import NetworkShape

__all__ = [
    "PENDING_ESTIMATORS",
    "Estimate",
    "Estimator",
    "LayerEstimate",
    "estimator_names",
    "get_estimator",
    "ops_per_example",
    "register_estimator",
]

#: Estimators announced but not written yet: name -> why (shown by get_estimator and the CLI).
#: Empty now that the edge-processing model is registered (insitu.hardware.edge).
PENDING_ESTIMATORS: dict[str, str] = {}

_ESTIMATORS: dict[str, type[Estimator]] = {}


def register_estimator(name: str):
    """Class decorator: make an :class:`Estimator` subclass available as ``name``."""

    def wrap(cls):
        cls.name = name
        _ESTIMATORS[name] = cls
        PENDING_ESTIMATORS.pop(name, None)
        return cls

    return wrap


def estimator_names() -> list[str]:
    return sorted(_ESTIMATORS)


def get_estimator(name: str, config: Config | dict | None = None) -> Estimator:
    """The estimator registered as ``name`` with ``config`` (default: its config's defaults).

    ``config`` may be a config object of the estimator's config class or a dict of field
    overrides (``{"bl": 20}``; nested configs as dicts).
    """
    if name not in _ESTIMATORS:
        if name in PENDING_ESTIMATORS:
            raise ConfigError(f"Hardware '{name}': {PENDING_ESTIMATORS[name]}")
        match = difflib.get_close_matches(name, list(_ESTIMATORS), n=1)
        hint = f" Did you mean '{match[0]}'?" if match else ""
        raise ConfigError(f"Unknown hardware '{name}'.{hint} Known: {estimator_names()}.")
    cls = _ESTIMATORS[name]
    return cls(config)


def ops_per_example(network: NetworkShape, first_backward: bool = False) -> dict[str, float]:
    """Operations of one SGD training example, counting a multiply-accumulate as 2 operations.

    Forward ``2·MAC``, backward ``2·MAC`` (not for the first layer unless ``first_backward``: the
    error of the input is not needed), update ``2·MAC`` (one multiply and one add per weight and
    vector, the rank-1 outer product ``W += η δ xᵀ``). This is the convention under which analog
    arrays are credited with ``2·N²`` operations per ``N×N`` product (papers.md §1.1 [D]).
    """
    forward = backward = update = 0.0
    for i, layer in enumerate(network.layers):
        ops = 2.0 * layer.macs_per_vector * layer.vectors
        forward += ops
        update += ops
        if i > 0 or first_backward:
            backward += ops
    return {"forward": forward, "backward": backward, "update": update}


@dataclasses.dataclass
class LayerEstimate:
    """Time (s), energy (J) and area (mm²) of one layer for one training example, by component.

    ``tiles`` is how many arrays hold the layer (0 for digital hardware).
    """

    name: str
    tiles: int
    time_s: dict[str, float]
    energy_j: dict[str, float]
    area_mm2: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def total_time_s(self) -> float:
        return sum(self.time_s.values())

    @property
    def total_energy_j(self) -> float:
        return sum(self.energy_j.values())

    @property
    def total_area_mm2(self) -> float:
        return sum(self.area_mm2.values())

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "tiles": self.tiles,
            "time_s": dict(self.time_s),
            "energy_j": dict(self.energy_j),
            "area_mm2": dict(self.area_mm2),
            "total_time_s": self.total_time_s,
            "total_energy_j": self.total_energy_j,
            "total_area_mm2": self.total_area_mm2,
        }


@dataclasses.dataclass
class Estimate:
    """The cost of training ``network`` on one piece of hardware.

    Attributes:
        hardware: registry name of the estimator.
        network: the network's ``to_dict``.
        config: the estimator's config as a dict (every assumption that produced the numbers).
        layers: per-layer estimates, forward order (plus a ``"digital"`` pseudo-layer for the
            parameter-free layers when the model counts them separately).
        time_per_example_s: time between two training examples in steady state (the sum over
            layers, or the slowest layer when the hardware pipelines layers).
        ops_per_example: forward/backward/update operations (2 per MAC) of one example.
        examples_per_epoch: training examples in one epoch.
        extra: model-specific notes (e.g. whether layers are pipelined).
    """

    hardware: str
    network: dict
    config: dict
    layers: list[LayerEstimate]
    time_per_example_s: float
    ops_per_example: dict[str, float]
    examples_per_epoch: int
    extra: dict = dataclasses.field(default_factory=dict)

    # -- totals -----------------------------------------------------------------------------
    @property
    def energy_per_example_j(self) -> float:
        return sum(layer.total_energy_j for layer in self.layers)

    @property
    def area_mm2(self) -> float:
        return sum(layer.total_area_mm2 for layer in self.layers)

    @property
    def tiles(self) -> int:
        return sum(layer.tiles for layer in self.layers)

    def time_by_component(self) -> dict[str, float]:
        """Summed over layers (a latency breakdown; with pipelining the layers overlap)."""
        return _sum_dicts(layer.time_s for layer in self.layers)

    def energy_by_component(self) -> dict[str, float]:
        return _sum_dicts(layer.energy_j for layer in self.layers)

    def area_by_component(self) -> dict[str, float]:
        return _sum_dicts(layer.area_mm2 for layer in self.layers)

    @property
    def total_ops_per_example(self) -> float:
        return sum(self.ops_per_example.values())

    # -- figures of merit ------------------------------------------------------------------
    @property
    def ops_per_s(self) -> float:
        return self.total_ops_per_example / self.time_per_example_s

    @property
    def ops_per_s_per_w(self) -> float:
        """Operations per joule: ``(ops/s) / W`` with ``W = energy per example / time per example``."""
        return self.total_ops_per_example / self.energy_per_example_j

    @property
    def ops_per_s_per_mm2(self) -> float:
        return self.ops_per_s / self.area_mm2 if self.area_mm2 > 0 else float("nan")

    @property
    def power_w(self) -> float:
        return self.energy_per_example_j / self.time_per_example_s

    @property
    def time_per_epoch_s(self) -> float:
        return self.time_per_example_s * self.examples_per_epoch

    @property
    def energy_per_epoch_j(self) -> float:
        return self.energy_per_example_j * self.examples_per_epoch

    def summary(self) -> dict[str, float]:
        return {
            "time_per_example_s": self.time_per_example_s,
            "energy_per_example_j": self.energy_per_example_j,
            "time_per_epoch_s": self.time_per_epoch_s,
            "energy_per_epoch_j": self.energy_per_epoch_j,
            "area_mm2": self.area_mm2,
            "tiles": self.tiles,
            "power_w": self.power_w,
            "ops_per_example": self.total_ops_per_example,
            "ops_per_s": self.ops_per_s,
            "gops_per_s_per_w": self.ops_per_s_per_w / 1e9,
            "tops_per_s_per_mm2": self.ops_per_s_per_mm2 / 1e12,
        }

    def to_dict(self) -> dict:
        return {
            "hardware": self.hardware,
            "summary": self.summary(),
            "time_by_component_s": self.time_by_component(),
            "energy_by_component_j": self.energy_by_component(),
            "area_by_component_mm2": self.area_by_component(),
            "ops_per_example": dict(self.ops_per_example),
            "examples_per_epoch": self.examples_per_epoch,
            "layers": [layer.to_dict() for layer in self.layers],
            "network": self.network,
            "config": self.config,
            "extra": dict(self.extra),
        }


def _sum_dicts(dicts) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:
        for key, value in d.items():
            out[key] = out.get(key, 0.0) + value
    return out


class Estimator:
    """Base of every hardware model.

    Subclasses set ``config_class`` and implement :meth:`estimate_layers`; they may override
    :meth:`time_per_example` (e.g. for pipelining) and :meth:`first_backward`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[Config]] = Config

    def __init__(self, config: Config | dict | None = None):
        if config is None:
            config = self.config_class()
        elif isinstance(config, dict):
            config = self.config_class.from_dict(config)
        if not isinstance(config, self.config_class):
            raise ConfigError(
                f"Hardware '{self.name}' needs a {self.config_class.__name__}, got {type(config).__name__}."
            )
        self.config = config

    def estimate_layers(self, network: NetworkShape) -> list[LayerEstimate]:  # pragma: no cover
        raise NotImplementedError

    def first_backward(self) -> bool:
        """Whether the first layer's backward product (the input's error) is computed."""
        return False

    def time_per_example(self, layers: list[LayerEstimate]) -> float:
        """Default: layers one after the other (batch-1 SGD, no pipelining)."""
        return sum(layer.total_time_s for layer in layers)

    def extra(self) -> dict:
        return {}

    def estimate(self, network: NetworkShape, examples_per_epoch: int = 60000) -> Estimate:
        """Time, energy and area of training ``network`` for one example and one epoch.

        Args:
            network: the layer shapes (:func:`~insitu.hardware.network_from_model`,
                :func:`~insitu.hardware.network_from_mlp` or a named network).
            examples_per_epoch: training examples per epoch (60,000 for MNIST).
        """
        if isinstance(examples_per_epoch, bool) or not isinstance(examples_per_epoch, int) or examples_per_epoch < 1:
            raise ConfigError(
                f"examples_per_epoch = {examples_per_epoch!r}: must be an integer >= 1 (60000 for MNIST)."
            )
        layers = self.estimate_layers(network)
        return Estimate(
            hardware=self.name,
            network=network.to_dict(),
            config=self.config.to_dict(),
            layers=layers,
            time_per_example_s=self.time_per_example(layers),
            ops_per_example=ops_per_example(network, self.first_backward()),
            examples_per_epoch=examples_per_epoch,
            extra=self.extra(),
        )
