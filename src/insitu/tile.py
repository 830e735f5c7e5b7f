"""The analog tile: one resistive cross-point array with its periphery.

A tile holds the weights (the devices' present state), the per-device parameters drawn when it
was built, and its own random generator. It performs the three cycles of backpropagation the way
the array does (Gokmen & Vlasov 2016, Fig. 1):

* forward  ``y = W x``  through :func:`insitu.io.analog_mvm` with the forward IO config;
* backward ``z = Wᵀ δ`` through the same function with the backward IO config;
* update   ``W += -lr δ xᵀ`` in place, by the configured update rule and device model.

The layers (:mod:`insitu.nn`) call ``forward``/``backward`` from autograd and stash ``x`` and
``δ`` on the tile; :class:`insitu.optim.AnalogSGD` calls :meth:`AnalogTile.update`. No weight
gradient is ever materialised, as on the hardware.
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref

import torch
from torch import nn

from .cells import CellConfig
from .config import Config, ConfigError, register_config
from .devices import ConstantStepDevice, DeviceConfig
from .io import IOConfig, analog_mvm
from .io_compiled import ProductPlan, compiled_mvm, covers_io, covers_tensors, io_numbers, takes_batch
from .update.kernels import rng_state as rng
from .update.kernels import select_backend
from .update import PulseUpdateConfig, UpdateAlgorithm, UpdateAlgorithmConfig, UpdateCounters, exact_update, pulsed_update

__all__ = ["TileConfig", "AnalogTile"]

#: Update policies of a cell of several devices (TileConfig.cell_update).
CELL_UPDATES = ("all", "single", "sequential", "random")

# More un-applied (x, δ) pairs than this means no AnalogSGD is stepping this tile.
_PENDING_WARN = 10_000


@register_config
@dataclasses.dataclass
class TileConfig(Config):
    """Everything that defines a simulated array (aihwkit users know it as an ``RPUConfig``).

    Attributes:
        device: the device model of every cross-point.
        forward: IO non-idealities of the forward pass ``y = W x``.
        backward: IO non-idealities of the backward pass ``z = Wᵀ δ``.
        update: how rank-1 writes are turned into pulses.
        algorithm: which rank-1 writes a batch becomes: one per sample (``sgd``, the default),
            the full batch gradient (``mbgd``), its top singular pairs, exact (``svd``) or
            streamed (``sbe``, Hoskins et al. 2019); see :mod:`insitu.update.lowrank`.
        devices_per_weight: devices in each unit cell (``#d`` of Gokmen, Onen & Haensch 2017).
            All devices of a cell receive the same pulses in parallel; each has its own
            device-to-device parameters and cycle-to-cycle noise, so both variations shrink as
            ``1/sqrt(#d)`` in the weight.
        cell_readout: ``"mean"`` (the weight is the devices' average; same weight range) or
            ``"sum"`` (their sum: ``#d`` times the range, and the pulse probabilities are scaled
            so that the expected update stays ``lr δ xᵀ``).
        cell_update: which devices of a ``devices_per_weight`` cell an update writes: ``"all"``
            (the default; every device takes the same pulses), ``"single"`` (always the first),
            ``"sequential"`` (one device per update, in turn), ``"random"`` (one device per update,
            drawn from the tile's generator); the update policies of the peer's vector unit cell.
            With one device written, the pulse scales are set so that the expected change of the
            *weight* stays ``lr δ xᵀ`` (that device moves ``#d`` times more under a mean readout).
        max_tile_size: ``(max_out, max_in)``, the largest array (outputs × inputs, a bias column
            included) one tile may be; a layer larger than it is split into a grid of tiles whose
            partial outputs are summed digitally (:mod:`insitu.mapping`, ``docs/tiles.md``).
            ``None`` (the default): unlimited, one tile per layer.
        cell: a learning-rule unit cell (:mod:`insitu.cells`: Tiki-Taka v1/v2, chopped TTv2,
            AGAD, mixed precision) built from ``device`` arrays and digital buffers, or the two-pair
            PCM cell (``TwoPairPCMCell``, whose conductance devices are its own: ``device`` is then
            not used); ``None`` (the default): the plain array of ``device`` (with
            ``devices_per_weight`` devices per weight).
    """

    device: DeviceConfig = dataclasses.field(default_factory=ConstantStepDevice)
    forward: IOConfig = dataclasses.field(default_factory=IOConfig)
    backward: IOConfig = dataclasses.field(default_factory=IOConfig)
    update: PulseUpdateConfig = dataclasses.field(default_factory=PulseUpdateConfig)
    algorithm: UpdateAlgorithmConfig = dataclasses.field(default_factory=UpdateAlgorithmConfig)
    devices_per_weight: int = 1
    cell_readout: str = "mean"
    cell_update: str = "all"
    max_tile_size: tuple[int, int] | None = None
    cell: CellConfig | None = None

    def validate(self) -> None:
        expected = {
            "device": DeviceConfig,
            "forward": IOConfig,
            "backward": IOConfig,
            "update": PulseUpdateConfig,
            "algorithm": UpdateAlgorithmConfig,
        }
        for field, kind in expected.items():
            if not isinstance(getattr(self, field), kind):
                self._fail(field, f"must be a {kind.__name__}, got {type(getattr(self, field)).__name__}.")
        n = self.devices_per_weight
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            self._fail("devices_per_weight", "must be an integer >= 1 (the number of devices in each unit cell).")
        if n > 1 and self.device.is_ideal:
            self._fail("devices_per_weight", "must be 1 for an IdealDevice (exact weights need no averaging).")
        self._check_choice("cell_readout", ("mean", "sum"))
        self._check_choice("cell_update", CELL_UPDATES)
        if self.cell_update != "all" and n == 1:
            self._fail("cell_update", "chooses among the devices of a cell: it needs devices_per_weight > 1.")
        if self.device.capabilities.per_device_state:
            what = type(self.device).__name__
            if self.update.pulse_type == "expected" or self.update.mode == "batched":
                self._fail(
                    "update",
                    f"{what} has per-device state ('per_device_state' capability: a SET-only conductance pair): it takes "
                    "whole pulses, not the fractional counts of pulse_type 'expected' or mode 'batched'; use "
                    "mode 'sequential' or 'summed' with stochastic pulses.",
                )
            if self.cell is not None:
                self._fail("cell", f"learning-rule cells copy their arrays' device parameters; {what} has per-device state ('per_device_state' capability) and needs cell=None.")
        size = self.max_tile_size
        if size is not None:
            if (
                not isinstance(size, (tuple, list)) or len(size) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)
            ):
                self._fail("max_tile_size", "must be None (unlimited) or two positive integers (max_out, max_in).")
            object.__setattr__(self, "max_tile_size", tuple(size))
        if self.cell is not None:
            if not isinstance(self.cell, CellConfig):
                self._fail("cell", f"must be a CellConfig (insitu.cells) or None, got {type(self.cell).__name__}.")
            if n > 1:
                self._fail("devices_per_weight", "must be 1 with a learning-rule cell (its arrays hold one device per weight each).")
            self.cell.check_tile(self)

    @classmethod
    def from_dict(cls, data):
        if isinstance(data, dict) and data.get("type") == "MultiConductanceConfig":
            # Saved before the PCM pairs became a cell: its fields move into cell: TwoPairPCMCell.
            from .cells.multi_conductance import legacy_tile_dict

            data = legacy_tile_dict(data)
        return super().from_dict(data)


class _KernelCache(dict):
    """What the compiled update keeps between calls (numpy views of the tile's tensors, the
    jitted kernel). Rebuilt on demand, so a copy or a pickle of the tile starts it empty: views
    must point into the copy's own tensors, and jitted functions do not pickle."""

    def __reduce__(self):
        return (_KernelCache, ())

    def __deepcopy__(self, memo):
        return _KernelCache()


class AnalogTile(nn.Module):
    """A simulated cross-point array of ``out_features × in_features`` devices.

    Args:
        out_features: number of column lines (outputs of the forward pass).
        in_features: number of row lines (inputs of the forward pass).
        config: the :class:`TileConfig`.
        seed: seed of the tile's generator; ``None`` draws one from torch's global generator, so
            ``torch.manual_seed`` fixes it.
        device, dtype: where and how the state is stored.

    Shapes: ``forward`` takes ``(batch, in_features)`` and returns ``(batch, out_features)``;
    ``backward`` the reverse.
    """

    # A plain tile is neither a grid of tiles nor a replica stack. Class attributes, since
    # analog_linear asks on every call and a missing nn.Module attribute costs a raised exception.
    grid = None
    replicas = None

    def __init__(
        self,
        out_features: int,
        in_features: int,
        config: TileConfig | None = None,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        config = TileConfig() if config is None else config
        device = self._init_common(out_features, in_features, config, TileConfig, seed, device)
        limit = config.max_tile_size
        if limit is not None and (out_features > limit[0] or in_features > limit[1]):
            raise ConfigError(
                f"An AnalogTile of {out_features}×{in_features} exceeds the config's max_tile_size {limit}: one tile "
                "is one array. Build the layer (AnalogLinear, ...) or insitu.mapping.make_tile, which split it "
                "over a grid of tiles."
            )
        # A unit cell of several devices adds a trailing axis: (out, in, devices_per_weight).
        cell = (config.devices_per_weight,) if config.devices_per_weight > 1 else ()
        shape = (out_features, in_features, *cell)
        if config.cell is not None:
            shape = config.cell.weight_shape(out_features, in_features)
        self.weight = nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))
        params = None
        if config.cell is None or config.cell.uses_tile_device:  # else the cell's own devices
            params = config.device.draw_parameters(shape, self.generator, device, dtype)
        if params is not None:
            # The pulsed update converts lr·δ·x into pulses of the nominal step each: check it now
            # rather than fail inside the first update (the property names what to add).
            step = config.device.nominal_step
            if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
                raise ConfigError(
                    f"{type(config.device).__name__}.nominal_step = {step!r}: a pulsed device (it draws device "
                    "parameters) needs a positive nominal step, the mean weight change of one pulse (the `dw_min` "
                    "field, or its own nominal_step property)."
                )
        self.register_buffer("device_params", params)  # None for an ideal device
        self.device_model = config.device.model()
        self.counters = UpdateCounters()
        # Sparse crossbar (Dey et al. 2017): True where a cross-point exists; None: all exist.
        self.register_buffer("connection_mask", None)
        self.algorithm = UpdateAlgorithm(config.algorithm, out_features, in_features)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._next_device = 0  # cell_update "sequential": the device the next update writes
        if config.cell is not None:
            # Built last: the cell draws its own arrays' devices after the tile's, from the same generator.
            self.cell = config.cell.build(self)
        self._build_device_effects()
        self._link_parameter()

    def _init_common(self, out_features, in_features, config, config_class, seed, device) -> torch.device:
        """Checks and state every tile kind starts with: shape, config, seed and generator.

        Returns the torch device the tile lives on.
        """
        if not isinstance(config, config_class):
            raise ConfigError(f"config must be a {config_class.__name__}, got {type(config).__name__}.")
        for name, value in (("out_features", out_features), ("in_features", in_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.config = config
        self.out_features = out_features
        self.in_features = in_features
        device = torch.device("cpu") if device is None else torch.device(device)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed = int(seed)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self.seed)
        # The compiled kernels' own stream (CPU), seeded from the same seed: the pulse draws of
        # the compiled backend, independent of the torch generator's IO noise.
        self.pulse_rng = rng.new_state(self.seed, stream=1)
        self._kernel_cache = _KernelCache()  # the compiled kernel's views of this tile's state
        self.cell = None  # a learning-rule cell (insitu.cells), set by tiles that have one
        return device

    def _build_device_effects(self) -> None:
        """The device effects (:mod:`insitu.devices.effects`), only when one is on: otherwise no
        buffer and no draw. Their per-device numbers (and the first write noise) come from a
        stream of their own, seeded by the tile's seed, so that switching an effect on leaves a
        seed's devices and a layer's initial weights as they were."""
        self.register_buffer("effect_params", None)  # per-device planes (effects.plane_names())
        self.register_buffer("write_noise", None)  # what the array reads on top of the weights
        effects = self.config.device.effects()
        active = effects is not None and effects.active and self.device_params is not None
        self.device_effects = effects if active else None
        if not active:
            return
        seed = int(rng.new_state(self.seed, stream=2)[0]) & (2**63 - 1)
        generator = torch.Generator(device=self.weight.device).manual_seed(seed)
        self.effect_params = effects.draw(self.device_params, self.device_model, generator)
        if effects.write_noise > 0:
            self.write_noise = effects.draw_write_noise(self.weight, generator)
        effects.hold_stuck(self.weight.data, self.effect_params)

    def _effects_snapshot(self) -> torch.Tensor | None:
        """The weights before an update's pulses, when the write noise needs them."""
        effects = self.device_effects
        return self.weight.detach().clone() if effects is not None and effects.needs_snapshot else None

    @torch.no_grad()
    def apply_device_effects(self, before: torch.Tensor | None = None) -> None:
        """One update's device effects (diffusion, decay, stuck devices, write noise re-drawn),
        after its pulses; :meth:`update` calls it. ``before``: the weights before the pulses
        (write noise is then re-drawn only where they changed). Nothing when all are off."""
        effects = self.device_effects
        if effects is not None:
            effects.after_update(self.weight.data, self.device_params, self.device_model, self.effect_params, self.write_noise, before, self.generator)

    @torch.no_grad()
    def reset_devices(self, selection) -> None:
        """Reset devices as the peer's reset: ``w <- clip(b_ij + reset_std ξ)`` with the device
        config's ``reset``, ``reset_dtod``, ``reset_std`` (``docs/devices.md``, "Device effects").

        ``selection``: a bool mask ``(out, in)`` (True: reset) or the indices of the columns
        (inputs, ``weight[:, i]``) to reset. Stuck devices stay where they are; write noise is
        re-drawn."""
        if type(self) is not AnalogTile or self.cell is not None:
            what = type(self.cell.config).__name__ if self.cell is not None else type(self).__name__
            raise ConfigError(f"reset_devices is available for plain AnalogTile arrays, not for {what}.")
        shape = (self.out_features, self.in_features)
        if torch.is_tensor(selection) and selection.dtype == torch.bool:
            if tuple(selection.shape) != shape:
                raise ValueError(f"reset_devices: a mask must have shape {shape} (out_features, in_features), got {tuple(selection.shape)}.")
            mask = selection.to(self.weight.device)
        else:
            mask = torch.zeros(shape, dtype=torch.bool, device=self.weight.device)
            mask[:, torch.as_tensor(selection, dtype=torch.long, device=self.weight.device)] = True
        if self.weight.dim() == 3:
            mask = mask.unsqueeze(-1)
        effects = self.device_effects or self.config.device.effects()
        if effects is None:  # a device without effect fields (the ideal device): reset to 0
            from .devices.effects import DeviceEffects

            effects = DeviceEffects()
        effects.reset_devices(
            self.weight.data, self.device_params, self.device_model, self.effect_params, self.write_noise, mask, self.generator
        )
        self._zero_absent_crosspoints()

    def manual_seed(self, seed: int) -> None:
        """Reseed the tile's random streams (IO noise and pulses) without changing its devices,
        e.g. to draw another update of the same array."""
        self.generator.manual_seed(int(seed))
        self.pulse_rng.copy_(rng.new_state(int(seed), stream=1))

    # -- linking the weight parameter to its tile (for the optimizer) ------------------------
    def _link_parameter(self) -> None:
        # A Parameter loses custom attributes when deep-copied; forward re-links it.
        self.weight._insitu_tile = weakref.ref(self)

    # -- weights ------------------------------------------------------------------------------
    @torch.no_grad()
    def set_weights(self, weights: torch.Tensor) -> None:
        """Program target weights, clipped to each device's bounds. Shape ``(out, in)``.

        In a multi-device cell every device is programmed to the target (``mean`` readout) or
        to ``target / #d`` (``sum`` readout).
        """
        if tuple(weights.shape) != (self.out_features, self.in_features):
            raise ValueError(
                f"set_weights: expected shape ({self.out_features}, {self.in_features}) (out_features, in_features), "
                f"got {tuple(weights.shape)}."
            )
        target = weights.to(self.weight)
        if self.cell is not None:
            self.cell.program(self, target)
            return
        if self.weight.dim() == 3:
            if self.config.cell_readout == "sum":
                target = target / self.config.devices_per_weight
            target = target.unsqueeze(-1).expand_as(self.weight)
        self.weight.copy_(self.device_model.program(target, self.device_params))
        if self.device_effects is not None:
            self.device_effects.programmed(self.weight.data, self.effect_params, self.write_noise, self.generator)
        self._zero_absent_crosspoints()

    @torch.no_grad()
    def set_connection_mask(self, mask: torch.Tensor | None) -> None:
        """Make a sparse crossbar: cross-points where ``mask`` ``(out, in)`` is False are absent.

        Their weights are set to zero now and after every update, so they never change and never
        contribute (the update is computed for the whole array, as the periphery would drive it,
        then the absent devices are discarded). ``None`` restores a full array.
        """
        if mask is None:
            self.connection_mask = None
            return
        if self.cell is not None:
            raise ConfigError(
                f"A sparse crossbar (connection mask) is not supported with the cell {type(self.cell.config).__name__}; "
                "use cell=None for sparse layers."
            )
        if mask.dtype != torch.bool or tuple(mask.shape) != (self.out_features, self.in_features):
            raise ValueError(
                f"set_connection_mask: expected a bool tensor of shape ({self.out_features}, {self.in_features}) "
                f"(out_features, in_features), got {mask.dtype} {tuple(mask.shape)}."
            )
        self.connection_mask = mask.to(self.weight.device)
        self._zero_absent_crosspoints()

    def _zero_absent_crosspoints(self) -> None:
        if self.connection_mask is None:
            return
        absent = ~self.connection_mask
        if self.weight.dim() == 3:
            absent = absent.unsqueeze(-1)
        self.weight.data.masked_fill_(absent, 0.0)
        if getattr(self, "write_noise", None) is not None:
            self.write_noise.masked_fill_(absent, 0.0)

    def effective_weights(self) -> torch.Tensor:
        """The weights the array computes with, shape ``(out, in)`` (a cell's mean or sum)."""
        if self.cell is not None:
            return self.cell.effective_weights(self)
        w = self.weight.detach()
        if self.write_noise is not None:  # device effects: the read differs from the written state
            w = w + self.write_noise
        if w.dim() == 3:
            return w.mean(-1) if self.config.cell_readout == "mean" else w.sum(-1)
        return w

    def get_weights(self) -> torch.Tensor:
        """A copy of the present weights, shape ``(out, in)``."""
        return self.effective_weights().clone()

    # -- the three cycles ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Analog forward pass ``y = W x`` for each row of ``x`` ``(batch, in)`` -> ``(batch, out)``."""
        return self._product(x, self.config.forward, False)

    def forward_with_bias_column(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass of inputs ``x`` ``(batch, in - 1)`` whose last column, the bias
        column's, is the constant 1: ``(y, inputs)`` with ``y`` ``(batch, out)`` and ``inputs``
        ``(batch, in)`` (``x`` with the 1 appended: what :meth:`stash` takes). At batch 1 of a
        plain tile the appending happens in the product's compiled call."""
        plan = self._kernel_cache.get("product")
        if plan is not None and plan.serves_bias_column(self._parameters["weight"], self.pulse_rng, self.config.forward, x):
            return plan.run_bias_column(x)
        inputs = torch.nn.functional.pad(x, (0, 1), value=1.0)
        return self.forward(inputs), inputs

    def backward(self, d: torch.Tensor) -> torch.Tensor:
        """Analog backward pass ``z = Wᵀ δ`` for each row of ``d`` ``(batch, out)`` -> ``(batch, in)``."""
        return self._product(d, self.config.backward, True)

    def _product(self, x: torch.Tensor, io: IOConfig, transposed: bool) -> torch.Tensor:
        # The plan (io_compiled.ProductPlan) answers most batch-1 calls of a plain tile without the
        # checks below; `_parameters` is read directly because Module.__getattr__ costs as much as
        # the rest of the check.
        plan = self._kernel_cache.get("product")
        if plan is not None and plan.serves(self._parameters["weight"], self.pulse_rng, io, transposed, x):
            return plan.run(x, transposed)
        w = self.effective_weights()
        numbers = self._compiled_io(io, x, w, transposed)
        if numbers is None:
            return analog_mvm(x, w if transposed else w.t(), io, self.generator)
        view, stream = self._weights_view(w), self._io_stream()
        if self.cell is None and self.write_noise is None and w.dim() == 2 and w.is_contiguous():
            weight = self._parameters["weight"]
            if plan is None or not plan.current(weight, self.pulse_rng):
                plan = self._kernel_cache["product"] = ProductPlan(weight, view, self.pulse_rng, stream)
            plan.ios[transposed], plan.numbers[transposed] = io, numbers
        return compiled_mvm(x, view, numbers, transposed, stream)

    def _compiled_io(self, io: IOConfig, x: torch.Tensor, w: torch.Tensor, transposed: bool = False):
        """The kernel numbers (:func:`insitu.io_compiled.io_numbers`) when this product runs in
        compiled calls (:mod:`insitu.io_compiled`: the compiled CPU backend, the periphery it
        covers), else ``None``; the IO part is decided once per config object.
        ``transposed``: the backward product (``x`` has ``out`` features)."""
        if x.dim() != 2 or select_backend(w.device) != "compiled":
            return None
        if x.shape[1] != w.shape[0 if transposed else 1]:
            return None  # the reference product names the mismatch (the kernel would read past x)
        memo = self._kernel_cache.get("io_covers")
        if memo is None:
            memo = self._kernel_cache["io_covers"] = {}
        known = memo.get(id(io))
        if known is None or known[0] is not io:
            # the config object itself is kept, so that a reused id never answers for another
            known = memo[id(io)] = (io, io_numbers(io) if covers_io(io) else None)
        numbers = known[1]
        return numbers if numbers is not None and covers_tensors(x, w) and takes_batch(numbers, x.shape[0], self.training) else None

    def _weights_view(self, w: torch.Tensor):
        """A C-contiguous numpy view of the effective weights ``w``, kept while ``w`` is the same
        memory (the tile's own weights: written in place by the updates); the kept view holds its
        tensor, so an equal address is always the same memory."""
        key = (w.data_ptr(), tuple(w.shape), tuple(w.stride()))
        cached = self._kernel_cache.get("io_weights")
        if cached is not None and cached[0] == key:
            return cached[1]
        view = (w if w.is_contiguous() else w.contiguous()).detach().numpy()
        if w.is_contiguous():
            self._kernel_cache["io_weights"] = (key, view)
        return view

    def _io_stream(self):
        """Numpy views of this tile's compiled-kernel stream (its scalar words and spare)."""
        cached = self._kernel_cache.get("io_stream")
        if cached is None or cached[0] != self.pulse_rng.data_ptr():
            cached = self._kernel_cache["io_stream"] = (self.pulse_rng.data_ptr(), rng.as_views(self.pulse_rng))
        return cached[1]

    def stash(self, x: torch.Tensor, d: torch.Tensor) -> None:
        """Keep ``x`` ``(batch, in)`` and ``δ`` ``(batch, out)`` for the next :meth:`update`."""
        self._pending.append((x, d))
        if len(self._pending) == _PENDING_WARN:
            warnings.warn(
                f"{_PENDING_WARN} backward passes reached this analog tile without an update. Analog "
                "weights are trained by insitu.optim.AnalogSGD (a torch optimizer leaves them unchanged); "
                "call its step() after backward().",
                stacklevel=2,
            )

    @torch.no_grad()
    def pending_gradient(self) -> torch.Tensor | None:
        """``G = Σ_b δ_b x_bᵀ`` ``(out, in)`` of the stashed pairs (what the next update writes
        before the update algorithm compresses it), or ``None`` when nothing is stashed. For
        analysis, e.g. the share of ``G``'s energy in its first singular pair (Hoskins et al. 2019)."""
        if not self._pending:
            return None
        return sum(d.t() @ x for x, d in self._pending)

    def update(self, lr: float) -> None:
        """Apply the stashed ``(x, δ)`` pairs to the weights with learning rate ``lr``."""
        if not self._pending:
            return
        # Entering no_grad costs as much as a batch-1 kernel call; AnalogSGD.step already did.
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self._update(lr)
        return self._update(lr)

    def _update(self, lr: float) -> None:
        # At batch 1 the compiled kernel runs for tens of microseconds, so this path reads each
        # attribute once, and the parameter and buffers from their dicts (Module.__getattr__
        # costs about a microsecond a look-up).
        x, d = self.take_pending()
        config = self.config
        counters = self.counters
        memory = config.algorithm.extra_memory(self.out_features, self.in_features, x.shape[0])
        if memory > counters.extra_memory:
            counters.extra_memory = memory
        counters.steps += 1
        x, d = self.algorithm.writes(x, d)
        if self.cell is not None:
            self.cell.apply_writes(self, x, d, lr)
            return
        weight = self._parameters["weight"]
        params = self._buffers["device_params"]
        if params is None:
            exact_update(weight, x, d, lr)
            counters.rank1_updates += x.shape[0]
            self._zero_absent_crosspoints()
            return
        # With a summed cell every coincidence moves the weight by #d steps: scale the pulses.
        step = config.device.nominal_step
        if config.cell_readout == "sum":
            step *= config.devices_per_weight
        effects = self.device_effects
        before = self._effects_snapshot()
        if config.cell_update != "all":
            self._update_one_device(x, d, lr, step)
        else:
            pulsed_update(
                weight, params, self.device_model, x, d, lr,
                step, config.update, self.generator, counters, self.pulse_rng, self._kernel_cache,
            )
        if self.device_model.per_device_state:  # e.g. refresh saturated conductance pairs
            self.device_model.after_update(weight.data, params, self.generator, counters.steps)
        if effects is not None:
            self.apply_device_effects(before)
        if self._buffers["connection_mask"] is not None:
            self._zero_absent_crosspoints()

    def _update_one_device(self, x, d, lr, cell_step) -> None:
        """The update of a ``cell_update`` policy other than ``"all"``: one device of every cell
        takes the pulses. A coincidence then moves the weight by a device step (sum readout) or
        by ``1/#d`` of it (mean readout), so the pulse scales use that step: the expected change
        of the weight is ``lr δ xᵀ`` as with ``"all"``."""
        n = self.config.devices_per_weight
        policy = self.config.cell_update
        if policy == "single":
            k = 0
        elif policy == "sequential":
            k = self._next_device
            self._next_device = (k + 1) % n
        else:
            k = int(torch.randint(0, n, (1,), generator=self.generator, device=self.generator.device))
        step = cell_step / n  # one device of the cell moves: 1/#d of the cell's step
        weight = self.weight.data[..., k].contiguous()
        params = self.device_params[..., k].contiguous()
        # A fresh contiguous copy each update: no kernel cache (its views would point at the copy).
        pulsed_update(
            weight, params, self.device_model, x, d, lr, step, self.config.update, self.generator,
            self.counters, self.pulse_rng, None,
        )
        self.weight.data[..., k] = weight
        if self.device_model.per_device_state:  # the model updated the copy's state planes
            self.device_params[..., k] = params

    #: The axis of the stashed tensors that counts vectors (replicas stack theirs on axis 1).
    _batch_dim = 0

    def take_pending(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stashed pairs as one ``x`` ``(batch, in)`` and one ``δ`` ``(batch, out)``, in the
        order they were stashed, and an empty stash. Call only when something is stashed."""
        pending = self._pending
        if len(pending) == 1:
            x, d = pending[0]
        else:
            dim = self._batch_dim
            x, d = torch.cat([p[0] for p in pending], dim=dim), torch.cat([p[1] for p in pending], dim=dim)
        pending.clear()
        return x, d

    def discard_pending(self) -> None:
        """Drop stashed ``(x, δ)`` pairs without updating (e.g. after a diverged step)."""
        self._pending.clear()

    # -- state ----------------------------------------------------------------------------------
    def counter_report(self) -> dict:
        """What the cell counted beyond :attr:`counters` (transfers, their pulses, digital
        operations), for results; empty for a plain array."""
        return self.cell.counter_report() if self.cell is not None else {}

    def get_extra_state(self) -> dict:
        state = {**self._base_extra_state(), "algorithm": self.algorithm.state_dict()}
        if self.config.cell_update == "sequential":
            state["next_device"] = self._next_device
        if self.cell is not None:
            state["cell"] = self.cell.extra_state()
        return state

    def set_extra_state(self, state: dict) -> None:
        self._load_base_extra_state(state)
        if "algorithm" in state:
            self.algorithm.load_state_dict(state["algorithm"])
        self._next_device = state.get("next_device", 0)
        if self.cell is not None and "cell" in state:
            self.cell.load_extra_state(state["cell"])

    def _base_extra_state(self) -> dict:
        """What every tile kind saves beside its tensors: config, seed, generator, counters."""
        return {
            "config": self.config.to_dict(),
            "seed": self.seed,
            "generator": self.generator.get_state(),
            "pulse_rng": self.pulse_rng.clone(),
            "counters": self.counters.to_dict(),
        }

    def _check_saved_state(self, state: dict) -> None:
        """Raise :class:`ConfigError` if the extra ``state`` was saved from a tile with another config."""
        config_class = type(self.config)
        saved = config_class.from_dict(state["config"])
        if saved != self.config:
            raise ConfigError(
                "This checkpoint was saved from a tile with a different config; build the layer with "
                f"the saved config ({config_class.__name__}.from_dict(...)) before loading. Saved: {saved}; here: {self.config}."
            )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # torch copies the tensors first and the extra state last: check the config before any
        # copy, so that a refused load leaves the tile exactly as it was (issue 19).
        if self.cell is not None:
            self.cell.convert_saved_state(state_dict, prefix)
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict):
            self._check_saved_state(extra)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _load_base_extra_state(self, state: dict) -> None:
        self._check_saved_state(state)
        self.seed = state["seed"]
        self.generator.set_state(state["generator"])
        if "pulse_rng" in state:  # checkpoints made before the compiled engine have none
            self.pulse_rng.copy_(rng.upgrade(state["pulse_rng"]))
        self.counters = UpdateCounters(**state["counters"])

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.weight.device != self.generator.device:
            # Generator state cannot move across devices: continue from a seed drawn from it.
            new_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator).item())
            self.generator = torch.Generator(device=self.weight.device)
            self.generator.manual_seed(new_seed)
        self._link_parameter()
        return self

    def extra_repr(self) -> str:
        cell = self.config.cell
        what = f"cell={type(cell).__name__}" if cell is not None and not cell.uses_tile_device else f"device={type(self.config.device).__name__}"
        return f"out_features={self.out_features}, in_features={self.in_features}, {what}"
