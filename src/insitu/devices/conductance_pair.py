"""Conductance pairs as ordinary tile devices: one signed weight from two SET-only conductances.

The conductance devices of :mod:`.pcm` (:class:`~insitu.devices.PCMDevice`) and :mod:`.jump_table`
(:class:`~insitu.devices.JumpTableDevice`) describe one conductance ``G`` that SET pulses can only
raise (PCM is depressed only by an abrupt RESET). A weight of either sign is the difference of a
*pair* of them (Burr et al. 2015; the single-pair baseline of Cristiano et al. 2018):

    w = (G⁺ − G⁻) / g_scale,        g_scale = (g_max − g_reset) / w_max

``g_max`` and ``g_reset`` are the conductance device's nominal maximum and RESET level, so a pair
with one device at its nominal ``g_max`` and the other at RESET reads ``±w_max``; each device's
own drawn ``g_max`` sets that device's bound (``w_max_ij = (g_max⁺_ij − g_reset) / g_scale``,
``w_min_ij = −(g_max⁻_ij − g_reset) / g_scale``). A potentiating coincidence fires one SET pulse on
``G⁺``, a depressing one a SET pulse on ``G⁻``, through the conductance device's own
``set_pulse`` (:func:`~insitu.devices.pcm.apply_set_pulses`, pulse by pulse: the response depends
on the pulses since the last RESET and on the present ``G``). ``G⁻`` never falls, so the weight
goes down only as fast as ``G⁻`` can still grow.

**Per-device state.** ``G⁺``, ``G⁻``, the SET pulses of each since its last RESET (capped where
the response stops depending on them) and the number of refreshes are planes of the tile's
device-parameter tensor, updated in place by the model (``capabilities.per_device_state``). The
tile's weight is their read, ``(G⁺ − G⁻) / g_scale``, kept equal to it by every path that takes
the device; :meth:`ConductancePairModel.program` (``set_weights``) writes the conductances exactly
(the difference on one device, the other at RESET), an idealised program-and-verify.

**Refresh** (``refresh_every`` > 0): after every ``refresh_every``-th update (optimizer step) of
the tile, a pair whose larger conductance is above ``refresh_threshold`` of its range while the
other is above its RESET level (so that a refresh frees range) is refreshed: both devices are
RESET and the pair's difference is programmed back by closed-loop tuning
(:func:`~insitu.devices.pcm.closed_loop_tune`: one SET pulse a verify step on the device whose
growth reduces the error, until within ``refresh_tolerance`` or after ``refresh_max_pulses``
steps). Each refresh is counted per device (the ``refreshes`` plane). Without refresh
(``refresh_every = 0``) a saturated device simply stops at its ``g_max``.

Engine paths: the torch sequential and ``summed`` updates (both exact: the pair's two devices
take their own pulses, so the order of up and down pulses within a batch does not matter), any
update algorithm, unit cells of several devices, both readouts, grids of tiles, sparse crossbars,
and replicas in lockstep (:class:`~insitu.replicas.ReplicatedTile`: the state planes stacked as
``(P, R, out, in)`` like the drawn ones, updated in place through the same model methods; the
replicas must share one pair config, their devices differing by seed). On CPU the ``sequential``
mode of the PCM and jump-table pairs runs in the compiled stateful kernel
(:meth:`ConductancePairModel.compiled_state_response`, :mod:`insitu.update.kernels.compiled_pairs`:
SET pulse by SET pulse, each with its own noise from the tile's compiled stream, the state planes
written in place; the same update in distribution, about 3x faster than the torch path at batch
1; replicas run it once per replica, each on its own stream,
:func:`~insitu.update.kernels.compiled.stacked_stateful_kernel`); the ``summed`` mode and the
refresh stay on the torch side, and the fused update leaves the device to the per-tile path.
Learning-rule cells, the ``batched`` mode and ``expected`` pulses (fractional counts, which a SET
pulse has no meaning for) are refused with a :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..config import ConfigError, register_config
from .base import DeviceCapabilities, DeviceConfig, DeviceModel
from .jump_table import JumpTableDevice
from .pcm import ConductanceDevice, PCMDevice, apply_set_pulses, closed_loop_tune

__all__ = ["PCMPairDevice", "JumpTablePairDevice", "ConductancePairModel", "STATE_PLANES"]

#: The state planes of a pair, after its drawn parameters.
STATE_PLANES = ("g_plus", "g_minus", "since_plus", "since_minus", "refreshes")


class _PairConfig(DeviceConfig):
    """What every pair config shares: the weight scale, the nominal step and the draws of a pair
    of the conductance device :meth:`conductance` returns. Subclasses are dataclasses with a
    ``w_max`` field and the refresh fields of their :meth:`model`."""

    capabilities: ClassVar[DeviceCapabilities] = DeviceCapabilities(closed_form=False, lockstep=True, per_device_state=True)

    def conductance(self) -> ConductanceDevice:
        """The conductance device of both members of the pair."""
        raise NotImplementedError

    @property
    def g_scale(self) -> float:
        """Conductance per unit of weight: ``(g_max − g_reset) / w_max``."""
        device = self.conductance()
        return (device.nominal_g_max - device.reset_conductance) / self.w_max

    @property
    def nominal_step(self) -> float:
        """The conductance device's gradual step near RESET, in weight units."""
        return float(self.conductance().nominal_step) / self.g_scale

    def draw_parameters(self, shape, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        # Fixed order: the G⁺ devices, then the G⁻ devices; the state starts at RESET (w = 0).
        member = self.conductance()
        plus = member.draw_parameters(shape, generator, device, dtype)
        minus = member.draw_parameters(shape, generator, device, dtype)
        reset, scale = member.reset_conductance, self.g_scale
        w_max = (member.g_max_plane(plus) - reset) / scale
        w_min = -(member.g_max_plane(minus) - reset) / scale
        g = torch.full(shape, float(reset), device=device, dtype=dtype)
        zeros = torch.zeros(shape, device=device, dtype=dtype)
        return torch.cat([torch.stack([w_min, w_max]), plus, minus, torch.stack([g, g.clone(), zeros, zeros.clone(), zeros.clone()])])


@dataclasses.dataclass
class _ConductancePairDevice(_PairConfig):
    """A signed weight from a differential pair of SET-only conductance devices (module docstring).

    Attributes:
        device: the conductance device of both members of the pair (drawn independently).
        w_max: the weight of a pair with one device at its nominal ``g_max`` and the other at
            RESET; sets ``g_scale = (g_max − g_reset) / w_max``.
        refresh_every: updates (optimizer steps) between refresh checks; 0: never refresh.
        refresh_threshold: a device above this fraction of its conductance range counts as
            saturated.
        refresh_tolerance: closed-loop tuning of a refresh stops within this many weight units of
            the pair's weight before the refresh.
        refresh_max_pulses: verify steps (one SET pulse each) a refresh may take.
    """

    # Replicas in lockstep stack the state planes like the drawn ones ((P, R, out, in)); the model's
    # methods are elementwise over any leading axes, so they update every replica's planes in place.
    capabilities: ClassVar[DeviceCapabilities] = DeviceCapabilities(closed_form=False, lockstep=True, per_device_state=True)

    device: ConductanceDevice = dataclasses.field(default_factory=PCMDevice)
    w_max: float = 1.0
    refresh_every: int = 0
    refresh_threshold: float = 0.9
    refresh_tolerance: float = 0.02
    refresh_max_pulses: int = 1000

    #: The conductance device class the field ``device`` must hold.
    device_class: ClassVar[type] = ConductanceDevice

    def validate(self) -> None:
        if not isinstance(self.device, self.device_class):
            self._fail("device", f"must be a {self.device_class.__name__}, got {type(self.device).__name__}.")
        self._check_positive("w_max", "refresh_tolerance")
        for field in ("refresh_every", "refresh_max_pulses"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                self._fail(field, "must be an integer >= 0.")
        if not 0 < self.refresh_threshold <= 1:
            self._fail("refresh_threshold", "must lie in (0, 1]: the fraction of the conductance range at which a device counts as saturated.")

    def conductance(self) -> ConductanceDevice:
        return self.device

    def model(self) -> "ConductancePairModel":
        return ConductancePairModel(self)


@register_config
@dataclasses.dataclass
class PCMPairDevice(_ConductancePairDevice):
    """A differential pair of :class:`~insitu.devices.PCMDevice` (SET-only, saturating, initial
    jump): ``w = (G⁺ − G⁻) / g_scale``. Fields: those of every conductance pair (module docstring).

    The default device: the :class:`PCMDevice` defaults (100 gradual levels, linear, no jump) with
    10 % device-to-device spread of ``g_max``, 20 % of the step and 30 % pulse-to-pulse spread.
    """

    device: PCMDevice = dataclasses.field(default_factory=lambda: PCMDevice(g_max_dtod=0.1, dg_dtod=0.2, dg_std=0.3))
    device_class: ClassVar[type] = PCMDevice


@register_config
@dataclasses.dataclass
class JumpTablePairDevice(_ConductancePairDevice):
    """A differential pair of :class:`~insitu.devices.JumpTableDevice` (``ΔG`` per SET pulse drawn
    from a per-bin table): ``w = (G⁺ − G⁻) / g_scale``. Only the SET table is used (a depression
    table, if any, is ignored: the pair depresses by growing ``G⁻``).

    The default device: the :class:`JumpTableDevice` default table with a 10 % device-to-device
    spread of its gain.
    """

    device: JumpTableDevice = dataclasses.field(default_factory=lambda: JumpTableDevice(gain_dtod=0.1))
    device_class: ClassVar[type] = JumpTableDevice


class ConductancePairModel(DeviceModel):
    """The pulse response of a conductance pair; the state planes are updated in place.

    Parameter layout: ``w_min``, ``w_max``, the conductance device's planes for ``G⁺``
    (``plus_<name>``) and for ``G⁻`` (``minus_<name>``), then :data:`STATE_PLANES`.
    """

    per_device_state = True

    def __init__(self, config: _PairConfig):
        super().__init__(c2c=0.0, has_slope=True)
        self.config = config
        self.device = config.conductance()
        self.quiet = self.device.noise_free()  # the response when no generator is given
        self.g_scale = config.g_scale
        self.reset = float(self.device.reset_conductance)
        self.settled = int(self.device.settled_count)
        names = self.device.PARAM_NAMES
        self.param_names = ("w_min", "w_max", *(f"plus_{n}" for n in names), *(f"minus_{n}" for n in names), *STATE_PLANES)
        n = len(names)
        self._plus = slice(2, 2 + n)
        self._minus = slice(2 + n, 2 + 2 * n)

    def compiled_response(self):
        return None  # stateless kernels do not take it: see compiled_state_response

    def compiled_state_response(self):
        """The jitted stateful response for the compiled sequential kernel
        (:func:`insitu.update.kernels.compiled.stateful_sequential_kernel`; signature in
        :mod:`insitu.update.kernels.compiled_pairs`), or ``None`` (no numba, or a conductance
        device without one): then the torch path runs the device."""
        from ..update.kernels import compiled_available

        if not compiled_available():
            return None
        from ..update.kernels import compiled_pairs

        if type(self.device) is PCMDevice:
            return compiled_pairs.pcm_pair_response(self.device)
        if type(self.device) is JumpTableDevice:
            return compiled_pairs.jump_table_pair_response(self.device)
        return None

    # -- state ------------------------------------------------------------------------------
    def read(self, params: torch.Tensor) -> torch.Tensor:
        """The weights the pairs hold, ``(G⁺ − G⁻) / g_scale``."""
        return (self.plane(params, "g_plus") - self.plane(params, "g_minus")) / self.g_scale

    def program(self, weights, params):
        """Write the conductances exactly: ``|w| · g_scale`` above RESET on the device of the
        weight's sign, the other at RESET (bounded by each device's ``g_max``)."""
        if params is None:
            return weights
        w = self.clip(weights, params)
        g_plus = self.reset + w.clamp_min(0) * self.g_scale
        g_minus = self.reset - w.clamp_max(0) * self.g_scale
        for name, g in (("plus", g_plus), ("minus", g_minus)):
            self.plane(params, f"g_{name}").copy_(g)
            # A programmed device is past its initial jump; one at RESET has just been RESET.
            self.plane(params, f"since_{name}").copy_((g > self.reset).to(g.dtype) * self.settled)
        return self.read(params)

    # -- pulses -----------------------------------------------------------------------------
    def _fire(self, params, counts_plus, counts_minus, generator) -> None:
        device = self.device if generator is not None else self.quiet
        for side, counts, planes in (("plus", counts_plus, self._plus), ("minus", counts_minus, self._minus)):
            g, since = self.plane(params, f"g_{side}"), self.plane(params, f"since_{side}")
            new_g, new_since = apply_set_pulses(device, g, since, counts, params[planes], generator)
            g.copy_(new_g)
            since.copy_(new_since.clamp_max_(self.settled))

    def apply_signed_pulses(self, weights, signed_counts, params, generator, counters=None, overwrite=False):
        """``signed_counts > 0`` SET pulses on ``G⁺``, ``< 0`` on ``G⁻``; returns the new read.
        The state planes of ``params`` are updated in place; ``weights`` is not read (it is the
        read of that state)."""
        if counters is not None:
            counters.add_coincidences(signed_counts.abs().sum())
        self._fire(params, signed_counts.clamp_min(0), signed_counts.neg().clamp_min(0), generator)
        return self.read(params)

    def apply_pulses(self, weights, counts, up, params, generator):
        return self.apply_signed_pulses(weights, torch.where(up, counts, -counts), params, generator)

    def apply_mixed(self, weights, half_total, half_signed, params, generator, count_variance=1.0):
        """The ``summed`` mode: exact integer counts of up and down coincidences over a batch,
        ``n_up = T/2 − S/2`` SET pulses on ``G⁺`` and ``n_down = T/2 + S/2`` on ``G⁻`` (exact: the
        two devices are independent). The ``batched`` mode's Gaussian counts are refused."""
        if torch.is_tensor(count_variance) or count_variance != 0.0:
            raise ConfigError(
                f"{type(self.config).__name__} has per-device state ('per_device_state' capability): it takes whole "
                "SET pulses, not the Gaussian counts of the 'batched' mode; use 'sequential' or 'summed'."
            )
        self._fire(params, (half_total - half_signed).round(), (half_total + half_signed).round(), generator)
        return self.read(params)

    def steps_at(self, weights, params):
        """The expected weight change of one up (``G⁺``) and one down (``G⁻``) SET pulse from the
        present state (``weights`` is not read)."""
        steps = []
        for side, planes in (("plus", self._plus), ("minus", self._minus)):
            g, since = self.plane(params, f"g_{side}"), self.plane(params, f"since_{side}")
            steps.append((self.quiet.set_pulse(g, since, params[planes], None) - g) / self.g_scale)
        return steps[0], steps[1]

    # -- refresh ----------------------------------------------------------------------------
    def after_update(self, weights, params, generator, step) -> int:
        """Refresh pairs after every ``refresh_every``-th update (optimizer step): the pairs
        :meth:`_refresh` chooses get their state rewritten and are counted in the ``refreshes``
        plane, and the weights are set to the read of the state. Returns the number refreshed."""
        every = self.config.refresh_every
        if every == 0 or step % every != 0:
            return 0
        flat = params.view(params.shape[0], -1)
        idx = self._refresh(flat, generator)
        if idx.numel() == 0:
            return 0
        self.plane(flat, "refreshes")[idx] += 1
        weights.copy_(self.read(params).view_as(weights))
        return int(idx.numel())

    def _refresh(self, flat: torch.Tensor, generator) -> torch.Tensor:
        """The closed-loop refresh (module docstring) on the flattened planes ``(P, N)``: the
        saturated pairs are RESET and tuned back to their weight; returns their indices."""
        config = self.config
        g_plus, g_minus = self.plane(flat, "g_plus"), self.plane(flat, "g_minus")
        plus, minus = flat[self._plus], flat[self._minus]
        span_plus = self.device.g_max_plane(plus) - self.reset
        span_minus = self.device.g_max_plane(minus) - self.reset
        fill_plus, fill_minus = (g_plus - self.reset) / span_plus, (g_minus - self.reset) / span_minus
        saturated = (torch.maximum(fill_plus, fill_minus) >= config.refresh_threshold) & (torch.minimum(g_plus, g_minus) > self.reset)
        idx = saturated.nonzero().squeeze(1)
        if idx.numel() == 0:
            return idx
        target = g_plus[idx] - g_minus[idx]
        reset = torch.full_like(target, self.reset)
        zero = torch.zeros_like(target)
        result = closed_loop_tune(
            self.device, reset, reset, zero, zero, plus[:, idx], minus[:, idx], target,
            config.refresh_tolerance * self.g_scale, config.refresh_max_pulses, generator,
        )
        g_plus[idx], g_minus[idx] = result["g_plus"], result["g_minus"]
        since_plus, since_minus = self.plane(flat, "since_plus"), self.plane(flat, "since_minus")
        since_plus[idx] = result["since_plus"].clamp_max(self.settled)
        since_minus[idx] = result["since_minus"].clamp_max(self.settled)
        return idx
