"""Replicas in lockstep: ``R`` independent arrays that train together as one batched computation.

A device-requirement study trains the same network many times with other seeds or other device
and IO numbers (Gokmen & Vlasov 2016 derive every spec that way). At batch 1 each training step
is hundreds of small tensor operations whose cost is mostly dispatch, not arithmetic; stacking
``R`` replicas along a leading dimension pays that cost once for all of them.

:class:`ReplicatedTile` is an :class:`~insitu.tile.AnalogTile` whose state has a leading replica
axis: weights ``(R, out, in)``, per-device parameters ``device_params`` ``(P, R, out, in)`` in the
device model's plane layout (:meth:`parameter_planes`); ``forward`` takes ``(R, batch, in)``.
Replica ``r`` has its own :class:`~insitu.tile.TileConfig` and seed. Its devices and (through
:class:`~insitu.nn.AnalogLinear`) its initial weights are drawn from a generator seeded with its seed exactly as an ``AnalogTile`` with that seed draws them, so replica
``r`` starts where the separate run would. During training each replica draws from a stream of
its own: on the compiled CPU backend its pulses and the output noise of its products come from
its kernel stream (``pulse_rng[r]``; the products of all replicas run in one compiled call,
:func:`insitu.io_compiled.stacked_mvm`, each replica's exactly as a separate tile's compiled
product), on the torch backend from one shared generator. The streams are seeded from the
group's seed and the replica's place, so a replica's run equals the separate run in
distribution, not draw for draw (with deterministic settings, e.g. ``pulse_type="expected"`` and
noise-free IO, they agree to rounding).

What replicas may set differently: every number of the device config (the same device class),
``update.bl``, and the IO numbers ``inp_bound``, ``out_noise``, ``out_bound``, ``inp_noise``,
``w_noise`` (:data:`insitu.io.REPLICA_IO_FIELDS`). Everything else (switches, bit widths, modes) must agree;
:func:`lockstep_conflict` names the first field that does not. Not available with replicas:
update algorithms other than ``sgd``, multi-device cells, the multi-conductance (PCM) cell,
sparse connection masks and device effects (write noise, decay, diffusion, stuck devices:
:mod:`insitu.devices.effects`). Every update mode runs (the engine's stacked layout,
:mod:`insitu.update.engine`).

Learning-rule cells (:mod:`insitu.cells`: Tiki-Taka v1/v2, chopped TTv2, AGAD, mixed precision)
train in lockstep when every replica has the same cell config (their devices, ``update.bl`` and
IO numbers may differ as above). Each replica then has a cell of its own, built on a view of the
stack (:class:`_ReplicaView`: its weights ``weight[r]``, parameters ``device_params[:, r]``, its
pulse stream, its config and counters), whose arrays and buffers are drawn from the replica's
seed exactly as a separate tile's cell draws them and then live in stacked buffers
(``cell_state.<name>``, a leading replica axis) that the replica's cell sees as views. The forward
and backward products run once for all replicas on the stacked effective weights (the cells'
:meth:`~insitu.cells.Cell.effective_weights` broadcast over the leading axis); the writes and
transfers run per replica through the same cell code as a separate run (the compiled kernels
on CPU), each replica on its own pulse stream; IO noise of the transfer reads comes from the
shared generator.

Devices with per-device state (the conductance pairs of :mod:`insitu.devices.conductance_pair`)
stack their state planes with the drawn ones, ``(P, R, out, in)``: the pulses (torch: the
engine's stacked layout; compiled: the stateful kernel once per replica) and the refresh after
each update write every replica's planes in place, and every replica's weight stays the read of
its state. Such replicas share one device config (the model holds its numbers as scalars); their
devices differ by seed. The modes a pair refuses alone (``batched``, ``expected`` pulses) it
refuses here too.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .config import ConfigError
from .io import REPLICA_IO_FIELDS, ReplicaIO, analog_mvm
from .io_compiled import MAX_BATCH, replica_io_numbers, stacked_mvm
from .tile import AnalogTile, TileConfig
from .update.kernels import rng_state, select_backend
from .cells.base import KernelCache
from .update import UpdateCounters
from .update.replicas import ReplicaCounters, replica_exact_update, replica_pulsed_update

__all__ = ["ReplicatedTile", "lockstep_conflict", "replica_key", "runtime_seed"]


def _plane_indices(model, names) -> list[int]:
    """Indices of the named planes in ``model``'s parameter layout."""
    return [model.param_names.index(name) for name in names]


def lockstep_conflict(configs: Sequence[TileConfig]) -> str | None:
    """Why these tile configs cannot train as replicas of one :class:`ReplicatedTile`, or ``None``.

    The message names the first field that differs where it must not (or the feature that
    replicas do not support).
    """
    configs = list(configs)
    if not configs:
        return "no replicas: give at least one tile config."
    for r, config in enumerate(configs):
        if type(config) is not TileConfig:
            return f"replica {r}: a {type(config).__name__} has no lockstep form; only plain TileConfig (RPU arrays) have."
        if config.algorithm.method != "sgd":
            return f"replica {r}: tile.algorithm.method '{config.algorithm.method}': replicas use 'sgd' (one rank-1 write per sample)."
        if not config.device.capabilities.lockstep:
            return f"replica {r}: tile.device {type(config.device).__name__} has no lockstep form (its capabilities declare lockstep=False)."
        effects = config.device.effects()
        if effects is not None and effects.active:
            return (
                f"replica {r}: tile.device has device effects on (write noise, decay, diffusion, reset_dtod or stuck "
                "devices): they have no lockstep form yet; run the replicas one after another (insitu sweep without --lockstep)."
            )
        if config.cell is not None and not config.cell.uses_tile_device:
            return (
                f"replica {r}: tile.cell {type(config.cell).__name__} has devices of its own (a PCM cell) and no lockstep "
                "form; run the replicas one after another (insitu sweep without --lockstep)."
            )
        if config.devices_per_weight != 1:
            return f"replica {r}: tile.devices_per_weight {config.devices_per_weight}: replicas need single-device cells."
    first = configs[0]
    for r, config in enumerate(configs[1:], start=1):
        if config.cell != first.cell:
            return (
                f"tile.cell: replica {r}'s learning-rule cell config differs from replica 0's; replicas in lockstep share "
                "one cell config (their devices, update.bl and IO numbers may differ). Run the other cells in groups of their own."
            )
        if type(config.device) is not type(first.device):
            return f"tile.device: replica {r} is a {type(config.device).__name__}, replica 0 a {type(first.device).__name__}."
        if config.device.capabilities.per_device_state and config.device != first.device:
            return _state_device_conflict(r, config.device, first.device)
        if config.device.model().structure() != first.device.model().structure():
            return (
                f"tile.device: replica {r}'s device model differs from replica 0's in more than its numbers "
                "(e.g. the number of nodes of a piecewise table): replicas need one parameter layout."
            )
        update, reference = dataclasses.replace(config.update, bl=first.update.bl), first.update
        if update != reference:
            field = next(f.name for f in dataclasses.fields(reference) if getattr(update, f.name) != getattr(reference, f.name))
            return f"tile.update.{field}: replicas must share it (only tile.update.bl may differ)."
    for direction in ("forward", "backward"):
        try:
            ReplicaIO.stack([getattr(c, direction) for c in configs], where=f"tile.{direction}")
        except ConfigError as exc:
            return str(exc)
    return None


def _state_device_conflict(r: int, device, reference) -> str:
    """Why replica ``r``'s device with per-device state (a conductance pair) cannot stack with
    replica 0's: its model holds the config's numbers as scalars (``g_scale``, the conductance
    device's response), so stacked replicas share one config; only the seeds tell them apart."""
    field = next((f.name for f in dataclasses.fields(reference) if getattr(device, f.name) != getattr(reference, f.name)), "device")
    return (
        f"tile.device.{field}: replica {r}'s {type(device).__name__} differs from replica 0's; a device with per-device "
        "state ('per_device_state' capability: a conductance pair) trains in lockstep only with the same device config "
        "for every replica (their devices still differ by seed). Run the other settings in groups of their own."
    )


def replica_key(config: TileConfig) -> dict:
    """What must be equal for two tile configs to be replicas of one group: the config with the
    numbers replicas may hold apart removed (device numbers, ``update.bl``, IO numbers of
    :data:`~insitu.io.REPLICA_IO_FIELDS`, of which only whether they are set is kept)."""
    data = config.to_dict()
    # The device's class and its model's structure (e.g. the number of nodes of a piecewise
    # table) must agree; its numbers may differ.
    structure = None if config.device.is_ideal else repr(config.device.model().structure()[1:])
    data["device"] = {"type": data["device"].get("type"), "structure": structure}
    data["update"] = {k: v for k, v in data["update"].items() if k != "bl"}
    for direction in ("forward", "backward"):
        data[direction] = {k: (v is not None if k in REPLICA_IO_FIELDS else v) for k, v in data[direction].items()}
    return data


def runtime_seed(seeds: Sequence[int]) -> int:
    """The seed of the generator the replicas share during training, fixed by their seeds."""
    digest = hashlib.sha256(repr([int(s) for s in seeds]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


#: The parameter planes kept in ``device_params`` before it held the model's whole layout
#: (checkpoints of that time: steps and bounds per device, and slopes where the device has them).
_STEP_AND_BOUNDS = ("dw_up", "dw_down", "w_min", "w_max")
_SLOPES = ("slope_up", "slope_down")


class _ReplicaView:
    """What a learning-rule cell sees of replica ``r`` of a :class:`ReplicatedTile`: the
    attributes of :class:`~insitu.tile.AnalogTile` that cells use (:mod:`insitu.cells.base`),
    with the replica's own config, device model, counters and kernel cache, and its state as
    views into the stack (weights ``weight[r]``, parameters ``device_params[:, r]``, compiled
    stream ``pulse_rng[r]``): what the cell writes there is the stack's."""

    __slots__ = (
        "config", "out_features", "in_features", "device_model", "generator", "counters", "_kernel_cache",
        "weight", "device_params", "pulse_rng",
    )

    def __init__(self, config: TileConfig, out_features: int, in_features: int, generator: torch.Generator):
        self.config = config
        self.out_features, self.in_features = out_features, in_features
        self.device_model = config.device.model()
        self.generator = generator
        self.counters = UpdateCounters()
        self._kernel_cache = KernelCache()

    def link(self, stack: "ReplicatedTile", r: int) -> None:
        self.weight = stack.weight.data[r]
        self.device_params = None if stack.device_params is None else stack.device_params[:, r]
        self.pulse_rng = stack.pulse_rng[r]


class _StackedCell:
    """Replica 0's cell with its buffers replaced by the stacked ones (a leading replica axis),
    so that the cell's own :meth:`~insitu.cells.Cell.effective_weights` (written to broadcast
    over leading axes) gives every replica's weights ``(R, out, in)`` at once."""

    def __init__(self, cell, stacked: dict):
        self._cell, self._stacked = cell, stacked

    def __getattr__(self, name):
        stacked = self.__dict__["_stacked"]
        return stacked[name] if name in stacked else getattr(self.__dict__["_cell"], name)


class _StackedTile:
    """The tile as :class:`_StackedCell` sees it: the stacked weights ``(R, out, in)``."""

    __slots__ = ("weight",)

    def __init__(self, weight: torch.Tensor):
        self.weight = weight


class ReplicatedTile(AnalogTile):
    """``R`` simulated arrays of ``out_features × in_features`` devices in lockstep.

    Args:
        out_features, in_features: the shape of every replica's array.
        configs: one :class:`~insitu.tile.TileConfig` per replica (see the module docstring for
            what may differ).
        seeds: one seed per replica (``None``: drawn from torch's global generator). Replica
            ``r``'s devices are drawn from a generator seeded with ``seeds[r]``, as an
            :class:`~insitu.tile.AnalogTile` with that seed draws them.
        device, dtype: where and how the state is stored.

    Shapes: ``forward`` takes ``(R, batch, in_features)`` and returns ``(R, batch, out_features)``;
    ``backward`` the reverse; weights are ``(R, out_features, in_features)``.
    """

    _batch_dim = 1  # stashed pairs are (R, batch, n): join them along the batch

    def __init__(
        self,
        out_features: int,
        in_features: int,
        configs: Sequence[TileConfig],
        seeds: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        nn.Module.__init__(self)
        configs = list(configs)
        conflict = lockstep_conflict(configs)
        if conflict is not None:
            raise ConfigError(f"These configs cannot train as replicas in lockstep: {conflict}")
        n_rep = len(configs)
        if seeds is None:
            seeds = [int(torch.randint(0, 2**62, (1,)).item()) for _ in range(n_rep)]
        seeds = [int(s) for s in seeds]
        if len(seeds) != n_rep:
            raise ValueError(f"ReplicatedTile: {n_rep} configs but {len(seeds)} seeds; give one seed per replica.")
        device = self._init_common(out_features, in_features, configs[0], TileConfig, runtime_seed(seeds), device)
        self.configs = configs
        self.seeds = seeds
        self.replicas = n_rep
        shape = (out_features, in_features)
        # Each replica's generator draws its devices now and (AnalogLinear) its initial weights,
        # in the order an AnalogTile with that seed would.
        self.init_generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        params = [c.device.draw_parameters(shape, g, device, dtype) for c, g in zip(configs, self.init_generators)]
        self.weight = nn.Parameter(torch.zeros((n_rep, *shape), device=device, dtype=dtype))
        # (P, R, out, in) in the device model's plane layout: the engine's stacked layout.
        self.register_buffer("device_params", None if params[0] is None else torch.stack(params, dim=1))
        self.register_buffer("connection_mask", None)
        # One compiled-kernel stream per replica (from the group's seed and the replica's place),
        # so that replicas with equal seeds still draw independent pulses, as on the torch path.
        self.pulse_rng = self._replica_streams(self.seed)
        self._build_replica_constants()
        self.counters = ReplicaCounters(n_rep, device)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._cells: list | None = None
        if configs[0].cell is not None:
            self._build_cells()
        self._link_parameter()

    # -- learning-rule cells ------------------------------------------------------------------
    def _build_cells(self) -> None:
        """One cell per replica, each built on a view of its replica and drawing its arrays from
        the replica's generator right after the replica's devices (as an AnalogTile builds its
        cell); then their buffers move into stacked buffers of ``cell_state`` that the cells see as views."""
        out_f, in_f = self.out_features, self.in_features
        views = [_ReplicaView(c, out_f, in_f, g) for c, g in zip(self.configs, self.init_generators)]
        cells = []
        for r, (config, view) in enumerate(zip(self.configs, views)):
            view.link(self, r)
            cells.append(config.cell.build(view))
            view.generator = self.generator  # training draws (read noise, choppers) come from the shared generator
        if any(True for _ in cells[0].children()):  # pragma: no cover - no registered cell has submodules
            raise ConfigError(f"{type(cells[0]).__name__} has submodules; replicas in lockstep stack only a cell's buffers.")
        state = nn.Module()
        for name, value in cells[0]._buffers.items():
            state.register_buffer(name, None if value is None else torch.stack([cell._buffers[name] for cell in cells]))
        self.cell_state = state
        self._cells, self._views = cells, views
        self._link_cells()
        self.counters.follow([view.counters for view in views])

    def _link_cells(self) -> None:
        """Point every replica's view and cell buffers at its slice of the stacked state (again
        after a move or dtype change replaced the stacked tensors)."""
        if getattr(self, "_cells", None) is None:
            return
        stacked = self.cell_state._buffers
        for r, (cell, view) in enumerate(zip(self._cells, self._views)):
            view.link(self, r)
            for name, value in stacked.items():
                cell._buffers[name] = None if value is None else value[r]
        self._stacked_cell = (_StackedCell(self._cells[0], stacked), _StackedTile(self.weight))

    def replica_cell(self, r: int):
        """Replica ``r``'s learning-rule cell (its buffers are views into ``cell_state``), or ``None``."""
        return None if self._cells is None else self._cells[r]

    def replica_counter_report(self, r: int) -> dict:
        """What replica ``r``'s cell counted beyond the counters (transfers, their pulses,
        digital operations); empty without a cell."""
        return {} if self._cells is None else self._cells[r].counter_report()

    @torch.no_grad()
    def zero_replica(self, r: int) -> None:
        """Set replica ``r``'s weights to zero (with a cell: its buffers zeroed, its arrays
        programmed to zero, its running statistics dropped): a diverged replica then sends no NaN
        into the shared computations."""
        self.weight[r] = 0.0
        if self._cells is not None:
            for value in self.cell_state._buffers.values():
                if value is not None and value.is_floating_point():
                    value[r] = 0.0
            cell, view = self._cells[r], self._views[r]
            cell.program(view, torch.zeros_like(view.weight))
            cell.forget_statistics()

    def _replica_streams(self, seed: int) -> torch.Tensor:
        return torch.stack([rng_state.new_state(seed, stream=1 + r) for r in range(self.replicas)])

    def manual_seed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))
        self.pulse_rng.copy_(self._replica_streams(int(seed)))

    def _build_replica_constants(self) -> None:
        """Per-replica numbers as tensors on the tile's device: IO settings, the device's
        cycle-to-cycle spread and nominal step (which sets ``Cx Cd``), and ``BL``."""
        configs, device, dtype = self.configs, self.weight.device, self.weight.dtype
        self.forward_io = ReplicaIO.stack([c.forward for c in configs], device, dtype, where="tile.forward")
        self.backward_io = ReplicaIO.stack([c.backward for c in configs], device, dtype, where="tile.backward")

        def per_replica(values):
            return torch.tensor(values, device=device, dtype=dtype).view(-1, 1, 1)

        # The first replica's model (a float spread) serves the compiled kernel, which takes the
        # spreads per replica as numbers; the torch engine gets one spread per replica.
        self._kernel_model = self.device_model = configs[0].device.model()
        if not configs[0].device.is_ideal:
            c2c = [float(c.device.model().c2c) for c in configs]
            if len(set(c2c)) > 1:
                # One spread per replica, against the engine's stacked weights (R, out, in, 1).
                self.device_model = self.device_model.with_c2c(per_replica(c2c).view(-1, 1, 1, 1))
            steps = [c.device.nominal_step for c in configs]
            self.dw_min = per_replica(steps)
            # The compiled kernel's per-replica numbers (float64 numpy arrays).
            self._kernel_numbers = (np.array(steps), np.array([c.update.bl for c in configs], dtype=np.int64), np.array(c2c))
        self.bl = per_replica([float(c.update.bl) for c in configs])
        self._kernel_cache.clear()  # its plans hold the old model's response

    # -- weights ------------------------------------------------------------------------------
    def _check_stacked(self, what: str, tensor: torch.Tensor) -> None:
        expected = (self.replicas, self.out_features, self.in_features)
        if tuple(tensor.shape) != expected:
            raise ValueError(f"{what}: expected shape {expected} (replicas, out_features, in_features), got {tuple(tensor.shape)}.")

    @torch.no_grad()
    def set_weights(self, weights: torch.Tensor) -> None:
        """Program target weights ``(R, out, in)``, clipped to each device's bounds (a device with
        per-device state also writes that state: :meth:`~insitu.devices.DeviceModel.program`)."""
        self._check_stacked("set_weights", weights)
        if self._cells is not None:  # each replica's cell programs its own arrays
            for r, (cell, view) in enumerate(zip(self._cells, self._views)):
                cell.program(view, weights[r].to(self.weight))
            return
        self.weight.copy_(self.device_model.program(weights.to(self.weight), self.parameter_planes()))

    def parameter_planes(self) -> torch.Tensor | None:
        """The per-device parameters ``(P, R, out, in)`` in the device model's layout
        (:attr:`~insitu.devices.DeviceModel.param_names`; the buffer itself), or ``None`` for ideal devices."""
        return self.device_params

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints saved before the parameters were kept as planes hold them interleaved per
        # device: ``device_params`` (R, out, in, 4) = dw_up, dw_down, w_min, w_max and
        # ``device_slopes`` (R, out, in, 2) or None. Rebuild the planes (slopes 0 when absent).
        old, slopes = state_dict.get(prefix + "device_params"), state_dict.pop(prefix + "device_slopes", None)
        if old is not None and self.device_params is not None and old.dim() == 4 and old.shape[-1] == len(_STEP_AND_BOUNDS):
            model = self.device_model
            planes = torch.zeros_like(self.device_params)
            planes[_plane_indices(model, _STEP_AND_BOUNDS)] = old.movedim(-1, 0).to(planes)
            if slopes is not None:
                planes[_plane_indices(model, _SLOPES)] = slopes.movedim(-1, 0).to(planes)
            state_dict[prefix + "device_params"] = planes
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_connection_mask(self, mask) -> None:
        raise ConfigError("Sparse connection masks are not available for replicas in lockstep; run these points separately.")

    def effective_weights(self) -> torch.Tensor:
        """The weights the arrays compute with, ``(R, out, in)`` (with a cell: every replica's
        cell's weights, computed once on the stacked state)."""
        if self._cells is None:
            return self.weight.detach()
        cell, tile = self._stacked_cell
        return type(self._cells[0]).effective_weights(cell, tile)

    def replica_weights(self, r: int) -> torch.Tensor:
        """A copy of replica ``r``'s weights, ``(out, in)``."""
        return self.effective_weights()[r].clone()

    # -- the three cycles ---------------------------------------------------------------------
    def _check_input(self, what: str, tensor: torch.Tensor, width: int) -> None:
        if tensor.dim() != 3 or tensor.shape[0] != self.replicas or tensor.shape[2] != width:
            raise ValueError(
                f"ReplicatedTile.{what}: expected a tensor (replicas={self.replicas}, batch, {width}), got {tuple(tensor.shape)}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``y_r = W_r x_r`` for every replica: ``(R, batch, in)`` -> ``(R, batch, out)``."""
        self._check_input("forward", x, self.in_features)
        y = self._compiled_product(x, self.forward_io, False)
        if y is not None:
            return y
        return analog_mvm(x, self.effective_weights().transpose(1, 2), self.forward_io, self.generator)

    def backward(self, d: torch.Tensor) -> torch.Tensor:
        """``z_r = W_rᵀ δ_r`` for every replica: ``(R, batch, out)`` -> ``(R, batch, in)``."""
        self._check_input("backward", d, self.out_features)
        z = self._compiled_product(d, self.backward_io, True)
        if z is not None:
            return z
        return analog_mvm(d, self.effective_weights(), self.backward_io, self.generator)

    def _compiled_product(self, x: torch.Tensor, io, transposed: bool) -> torch.Tensor | None:
        """The products of every replica in one compiled call (:func:`insitu.io_compiled.stacked_mvm`),
        each on the replica's own kernel stream as a separate tile's compiled product; ``None``
        where the reference (:func:`~insitu.io.analog_mvm`, the shared torch generator) runs: the
        torch backend, cells, a periphery the kernels do not cover, more than
        :data:`~insitu.io_compiled.MAX_BATCH` vectors, other than float32 CPU tensors."""
        if self._cells is not None or x.shape[1] > MAX_BATCH or x.dtype != torch.float32:
            return None
        weight = self._parameters["weight"]
        plan = self._kernel_cache.get("replica_product")
        key = (weight.data_ptr(), self.pulse_rng.data_ptr())
        if plan is None or plan[0] != key:
            if weight.dtype != torch.float32 or not weight.is_cpu or not weight.is_contiguous():
                return None
            # The views hold their tensors, so an equal address is always the same memory.
            plan = self._kernel_cache["replica_product"] = (key, weight.detach().numpy(), rng_state.as_views(self.pulse_rng), {})
        _, view, stream, numbers_by_io = plan
        known = numbers_by_io.get(id(io))
        if known is None or known[0] is not io:  # the config object is kept: a reused id never answers for another
            known = numbers_by_io[id(io)] = (io, replica_io_numbers(io, self.replicas))
        numbers = known[1]
        if numbers is None or not x.is_cpu or select_backend(weight.device) != "compiled":
            return None
        return stacked_mvm(x, view, numbers, transposed, stream)

    @torch.no_grad()
    def pending_gradient(self) -> torch.Tensor | None:
        """``G_r = Σ_b δ_rb x_rbᵀ`` ``(R, out, in)`` of the stashed pairs, or ``None``."""
        if not self._pending:
            return None
        return sum(torch.bmm(d.transpose(1, 2), x) for x, d in self._pending)

    @torch.no_grad()
    def update(self, lr: float) -> None:
        """Apply the stashed ``(x, δ)`` pairs of every replica with learning rate ``lr``."""
        if not self._pending:
            return
        x, d = self.take_pending()  # (R, batch, in), (R, batch, out)
        self.counters.steps += 1
        if self._cells is not None:
            # Each replica's cell writes its replica, as the cell of a separate tile does.
            for r, (cell, view) in enumerate(zip(self._cells, self._views)):
                view.counters.steps += 1
                cell.apply_writes(view, x[r], d[r], lr)
            self.counters.rank1_updates += x.shape[1]
            return
        if self.device_params is None:
            replica_exact_update(self.weight, x, d, lr)
            self.counters.rank1_updates += x.shape[1]
            return
        if not self._compiled_update(x, d, lr):
            replica_pulsed_update(
                self.weight, self.device_params, self.device_model, x, d, lr,
                self.dw_min, self.bl, self.config.update, self.generator, self.counters,
            )
        if self.device_model.per_device_state:  # e.g. refresh saturated conductance pairs
            self._after_update()

    def _after_update(self) -> None:
        """The device model's maintenance after an update (the refresh of saturated conductance
        pairs), for every replica, with each replica's weights rewritten to the read of its state.

        One call over the stacked tensors (weights ``(R, out, in)``, parameters ``(P, R, out,
        in)``) is the per-replica call for every replica at once: the model's maintenance is
        per device (a refresh tunes each pair on its own), the replicas share the config that
        sets its period, and they share the training generator that draws its noise (only the
        initial draws come from per-replica generators), so the stacked call only orders those
        draws differently."""
        self.device_model.after_update(self.weight.data, self.device_params, self.generator, self.counters.steps)

    def _compiled_update(self, x: torch.Tensor, d: torch.Tensor, lr: float) -> bool:
        """The sequential stochastic update of every replica in the compiled kernel (stacked
        layout), each replica drawing from its own stream; False where the torch path must run."""
        update = self.config.update
        if update.pulse_type != "stochastic" or update.mode != "sequential":
            return False
        if select_backend(self.weight.device) != "compiled":
            return False
        if self._kernel_model.per_device_state:
            return self._compiled_stateful_update(x, d, lr)
        key = (self.weight.data_ptr(), self.device_params.data_ptr(), self.device_params._version, self.pulse_rng.data_ptr())
        plan = self._kernel_cache.get("stacked")
        if plan is None or plan[0] != key:
            # The response is looked up with the plan, not every step (a lookup costs as much as
            # a small layer's kernel call).
            respond = self._kernel_model.compiled_response()
            if respond is None:
                return False
            from .update.kernels.compiled import prefetch_pays, stacked_kernel

            # (R, out, in, 1, P): interleaved per device, as the kernel reads them.
            packed = self._kernel_model.pack_for_kernel(self.parameter_planes().unsqueeze(-1)).numpy()
            weights = self.weight.detach().unsqueeze(-1).numpy()
            words, spare = rng_state.as_views(self.pulse_rng)
            prefetch = prefetch_pays(weights, packed)
            plan = (key, stacked_kernel(respond, prefetch), weights, packed, words, spare, prefetch)
            self._kernel_cache["stacked"] = plan
        _, kernel, weights, packed, words, spare, _ = plan
        steps, bls, c2cs = self._kernel_numbers
        dtype = self.weight.dtype
        x = x.detach().to(dtype).contiguous().numpy()
        d = d.detach().to(dtype).contiguous().numpy()
        # The kernel adds each replica's pulses and coincidences to the counters' tally.
        tally = self.counters.kernel_tally()
        kernel(weights, packed, x, d, float(lr), steps, bls, update.update_management, update.dynamic_bl, c2cs, words, spare, tally)
        self.counters.rank1_updates += x.shape[1]
        return True

    def _compiled_stateful_update(self, x: torch.Tensor, d: torch.Tensor, lr: float) -> bool:
        """The sequential update of replicas of a device with per-device state (a conductance
        pair) in the compiled stateful kernel, once per replica on its own views and stream
        (:func:`~insitu.update.kernels.compiled.stacked_stateful_kernel`); False where the model
        has no stateful compiled response (then the torch path runs).

        The kernel reads and writes the tile's parameter tensor through a numpy view (nothing
        packed, nothing copied back) and sets each moved weight to the read of its state."""
        plan = self._stateful_plan()
        if plan is None:
            return False
        _, kernel, weights, planes, scale, words, spare = plan
        steps, bls, _ = self._kernel_numbers
        update = self.config.update
        dtype = self.weight.dtype
        x = x.detach().to(dtype).contiguous().numpy()
        d = d.detach().to(dtype).contiguous().numpy()
        tally = self.counters.kernel_tally()
        kernel(weights, planes, scale, x, d, float(lr), steps, bls, update.update_management, update.dynamic_bl, words, spare, tally)
        self.counters.rank1_updates += x.shape[1]
        return True

    def _stateful_plan(self):
        """What :meth:`_compiled_stateful_update` keeps between calls (the kernel and numpy views
        of weights ``(R, out, in, 1)``, planes ``(P, R, out, in, 1)`` and the replicas' streams),
        or None when the model has no stateful compiled response or the tensors cannot be viewed."""
        params = self.device_params
        # Views only: valid while no tensor moves (in-place writes, e.g. a refresh, keep them).
        key = (self.weight.data_ptr(), params.data_ptr(), self.pulse_rng.data_ptr())
        plan = self._kernel_cache.get("stacked_stateful")
        if plan is not None and plan[0] == key:
            return plan
        respond = self._kernel_model.compiled_state_response()
        if respond is None or params.dtype != self.weight.dtype:
            return None
        from .update.kernels.compiled import stacked_stateful_kernel

        weights = self.weight.detach().unsqueeze(-1).numpy()
        words, spare = rng_state.as_views(self.pulse_rng)
        # g_scale in the weights' dtype, so that the kernel's read is ConductancePairModel.read's.
        scale = np.array([self._kernel_model.g_scale], dtype=weights.dtype)
        plan = (key, stacked_stateful_kernel(respond), weights, params.unsqueeze(-1).numpy(), scale, words, spare)
        self._kernel_cache["stacked_stateful"] = plan
        return plan

    # -- state ----------------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {
            "configs": [c.to_dict() for c in self.configs],
            "seeds": self.seeds,
            "generator": self.generator.get_state(),
            "pulse_rng": self.pulse_rng.clone(),
            "counters": self.counters.to_dict(),
            **({} if self._cells is None else {
                "cells": [cell.extra_state() for cell in self._cells],
                "cell_counters": [view.counters.to_dict() for view in self._views],
            }),
        }

    def _check_saved_state(self, state: dict) -> None:
        saved = [TileConfig.from_dict(c) for c in state["configs"]]
        if saved != self.configs or list(state["seeds"]) != self.seeds:
            raise ConfigError(
                "This checkpoint was saved from replicas with other configs or seeds; build the layers with "
                "the saved ones before loading."
            )

    def set_extra_state(self, state: dict) -> None:
        self._check_saved_state(state)
        self.generator.set_state(state["generator"])
        if "pulse_rng" in state:  # checkpoints made before the compiled engine have none
            self.pulse_rng.copy_(rng_state.upgrade(state["pulse_rng"]))
        self.counters = ReplicaCounters.from_dict(state["counters"], self.weight.device)
        if self._cells is not None:
            for cell, view, saved, counts in zip(self._cells, self._views, state["cells"], state["cell_counters"]):
                cell.load_extra_state(saved)
                view.counters = UpdateCounters(**counts)
                view._kernel_cache = KernelCache()
            self.counters.follow([view.counters for view in self._views])

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._link_cells()
        self._build_replica_constants()
        counters = self.counters
        counters.pulses, counters.coincidences = (t.to(self.weight.device) for t in (counters.pulses, counters.coincidences))
        return self

    def extra_repr(self) -> str:
        return (
            f"replicas={self.replicas}, out_features={self.out_features}, in_features={self.in_features}, "
            f"device={type(self.config.device).__name__}"
        )
