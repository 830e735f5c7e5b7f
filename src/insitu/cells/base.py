"""What every unit cell shares: its config base, its module base, and the two ways to write.

A *cell* says how the devices of one cross-point make a weight (``docs/cells.md``). The tile
(:class:`insitu.tile.AnalogTile`) owns the IO, the generators, the stash of ``(x, δ)`` and the
counters; a tile whose config has a ``cell`` delegates four things to it:

* :meth:`Cell.effective_weights` — the weight the forward and backward products see;
* :meth:`Cell.program` — what ``set_weights`` does (programming a target);
* :meth:`Cell.apply_writes` — what an optimizer step's rank-1 writes ``-lr δ xᵀ`` do
  (pulses into an array, a digital accumulator, transfers between arrays);
* :meth:`Cell.extra_state` / :meth:`Cell.load_extra_state` and :meth:`Cell.counter_report`.

The tile's own ``weight`` parameter is always the array the gradient writes reach first (the fast
array ``A`` of Tiki-Taka, the single array of mixed precision); a cell keeps every other array
and digital buffer as buffers of its own module, so they are saved, loaded and moved with the tile.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from ..config import Config, ConfigError
from ..devices import DeviceConfig
from ..update import PulseUpdateConfig, UpdateCounters, exact_update, pulsed_update

__all__ = ["CellConfig", "Cell", "write_rank1", "write_pulses"]


@dataclasses.dataclass
class CellConfig(Config):
    """Base of the unit-cell configs (polymorphic: serialised with a ``type`` key)."""

    polymorphic = True
    #: False for a cell whose devices are fields of its own (the PCM pairs of
    #: :class:`~insitu.cells.TwoPairPCMCell`): the tile then ignores its ``device``, draws no
    #: parameters for it (``tile.device_params`` is ``None``) and does not check it.
    uses_tile_device: ClassVar[bool] = True

    def build(self, tile) -> "Cell":  # pragma: no cover - every registered cell overrides it
        raise NotImplementedError

    def weight_shape(self, out_features: int, in_features: int) -> tuple[int, ...]:
        """Shape of the tile's ``weight``, the array the gradient's writes reach first."""
        return (out_features, in_features)

    def check_tile(self, config) -> None:
        """Raise :class:`ConfigError` if the tile config (a :class:`~insitu.tile.TileConfig`)
        cannot serve this cell. By default: its ``device`` (:meth:`check_device`), without
        device effects."""
        self.check_device(config.device)
        effects = config.device.effects()
        if effects is not None and effects.active:
            config._fail("cell", "device effects (write noise, decay, diffusion, stuck devices) are not available in learning-rule cells yet; switch them off or use cell=None.")

    def check_device(self, device: DeviceConfig) -> None:
        """Raise :class:`ConfigError` if the tile's ``device`` cannot serve this cell."""


class Cell(nn.Module):
    """Base of the unit cells: holds its config; subclasses hold their arrays and buffers."""

    def __init__(self, config: CellConfig):
        super().__init__()
        self.config = config

    def effective_weights(self, tile) -> torch.Tensor:
        """The weights ``(out, in)`` the products see, from the cell's buffers and ``tile.weight``.
        Written to broadcast over leading axes: replicas in lockstep
        (:class:`~insitu.replicas.ReplicatedTile`) call it once with every buffer and the weights
        stacked on a leading replica axis and expect ``(R, out, in)``."""
        raise NotImplementedError

    def program(self, tile, target: torch.Tensor) -> None:
        raise NotImplementedError

    def apply_writes(self, tile, x: torch.Tensor, d: torch.Tensor, lr: float) -> None:
        raise NotImplementedError

    def forget_statistics(self) -> None:
        """Drop running statistics of the data (e.g. auto-scaling means), as for a fresh start;
        used when a diverged replica is silenced. Nothing by default."""

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def counter_report(self) -> dict:
        return {}

    def convert_saved_state(self, state_dict: dict, prefix: str) -> None:
        """Rewrite, in place, a tile state saved in an older layout into this cell's (the tile
        calls it before loading; ``prefix`` is the tile's). Nothing by default."""


class KernelCache(dict):
    """What the compiled update keeps between calls for one array (numpy views of its tensors,
    the jitted kernel). A copy or a pickle starts empty: the views must point into the copy's
    own tensors, and jitted functions do not pickle."""

    def __reduce__(self):
        return (KernelCache, ())

    def __deepcopy__(self, memo):
        return KernelCache()


def write_rank1(
    weight: torch.Tensor,
    params: torch.Tensor | None,
    model,
    x: torch.Tensor,
    d: torch.Tensor,
    lr: float,
    device: DeviceConfig,
    update: PulseUpdateConfig,
    tile,
    counters: UpdateCounters,
    cache: dict | None,
) -> None:
    """``weight += -lr Σ_b δ_b x_bᵀ`` the way the array does it: exactly for an ideal device,
    else by stochastic pulses through the engine (:func:`insitu.update.pulsed_update`; compiled on
    CPU), with the tile's generators."""
    if params is None:
        exact_update(weight, x, d, lr)
        counters.rank1_updates += x.shape[0]
        return
    pulsed_update(weight, params, model, x, d, lr, device.nominal_step, update, tile.generator, counters, tile.pulse_rng, cache)


def write_pulses(
    weight: torch.Tensor,
    params: torch.Tensor | None,
    model,
    signed_counts: torch.Tensor,
    generator: torch.Generator,
    counters: UpdateCounters,
) -> torch.Tensor:
    """New values of ``weight`` after exactly ``|n|`` pulses of sign ``n`` per device
    (``signed_counts`` shaped like ``weight``): the closed-loop-free, whole-pulse write that the
    buffered transfers and mixed precision issue (each element gets exactly its pulses, with the
    device's cycle-to-cycle noise and bounds). ``params`` is the devices' parameters, ``(P, *S)``
    (a pulsed device: whole pulses need a step, see :func:`require_pulses`)."""
    counters.add_pulses(signed_counts.abs().sum())
    return model.apply_signed_pulses(weight, signed_counts, params, generator, counters)


def require_positive_int(config: Config, field: str, allow: tuple[int, ...] = ()) -> None:
    value = getattr(config, field)
    if value in allow and not isinstance(value, bool):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = f" (or {', '.join(map(str, allow))})" if allow else ""
        config._fail(field, f"must be an integer >= 1{extra}.")


def require_probability(config: Config, *fields: str) -> None:
    config._check_finite(*fields)
    for field in fields:
        if not 0 <= getattr(config, field) <= 1:
            config._fail(field, "must be a probability in [0, 1].")


def require_bool(config: Config, *fields: str) -> None:
    for field in fields:
        if not isinstance(getattr(config, field), bool):
            config._fail(field, "must be true or false.")


def draw_array(device: DeviceConfig, shape, tile) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A fresh array of ``device`` devices (weights 0 clipped to their bounds, parameters drawn
    from the tile's generator, in a fixed order so the seed fixes it)."""
    w = tile.weight
    params = device.draw_parameters(tuple(shape), tile.generator, w.device, w.dtype)
    weights = torch.zeros(shape, device=w.device, dtype=w.dtype)
    if params is not None:
        weights = device.model().clip(weights, params)
    return weights, params


def require_pulses(cell_name: str, device: DeviceConfig, role: str) -> None:
    """Refuse devices that cannot take whole-pulse writes: an ideal device (it has no step) and a
    device with per-device state (a conductance pair: its writes go through its own state
    planes). A family without the closed form of ``n`` pulses (``closed_form`` capability: the
    power and exponential steps, the piecewise table) is written pulse by pulse
    (:meth:`~insitu.devices.DeviceModel.apply_signed_pulses`), exact and slower."""
    if device.is_ideal:
        raise ConfigError(
            f"{cell_name}: the {role} device is an IdealDevice, which has no pulse step; whole-pulse writes need a "
            "pulsed device (e.g. ConstantStepDevice with dw_min_std=0 and no variation for a noiseless one)."
        )
    if device.capabilities.per_device_state:
        raise ConfigError(
            f"{cell_name}: the {role} device {type(device).__name__} has per-device state ('per_device_state' "
            "capability: a conductance pair), which whole-pulse writes of a learning-rule cell do not update; "
            "choose a pulsed device."
        )
