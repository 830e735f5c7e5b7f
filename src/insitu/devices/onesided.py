"""The one-sided pair: two pulsed devices that only ever step up, with refresh (the peer's PCM preset).

aihwkit's ``OneSidedUnitCell`` (``../shared/reference/algorithms.md`` §8, ``PCMPreset``) holds a
signed weight as the difference of two *one-sided* devices: every potentiating coincidence steps
the first device up, every depressing one steps the second device up (``copy_inverted`` False:
the "up" half of the second device, never a "down" step), and

    w = (g⁺ − g⁻) / g_scale,        g_scale = (g_max − g_min) / w_max

with ``g⁺``, ``g⁻`` the two devices' own weights in ``[0, g_max]`` (a pulsed device with
``w_min = 0``: constant, exponential or power step) and ``g_scale = 1`` when ``w_max`` is the
member's range (the peer's preset). As the devices only grow, the pair saturates; the cell
**refreshes** it (peer's criterion):

* every ``refresh_every`` updates (optimizer steps: the peer's ``units_in_mbatch``) both devices
  of every pair are read, each with Gaussian read noise ``refresh_read_noise`` (the peer reads them
  with a forward pass of its ``refresh_forward`` IO; here the read of a single device, in the
  member's units; an ADC is not modelled);
* a pair is refreshed where the larger read, over the member's nominal ``w_max``, exceeds
  ``refresh_upper`` and the smaller one exceeds ``refresh_lower`` (a pair with one device low
  still has range: refreshing it would only add error);
* both devices are reset (``g ← clip(b_ij + reset_std ξ)``, ``b_ij = reset + reset_dtod ξ`` drawn
  once per device: the member's reset fields), and the read difference is rewritten open loop onto
  the device of its sign: ``round(|Δ| / nominal_step)`` up pulses, at most ``refresh_max_pulses``
  (the peer writes it with a stochastic pulse update of ``refresh_update``, BL 31; this takes that
  update's expected pulses, whole). The device's nonlinear response decides where the rewrite
  lands: the error of an open-loop refresh is part of what this cell models.

The pair is a :class:`~insitu.devices.conductance_pair.ConductancePairModel` whose conductance
device is the member pulsed device's up response (:class:`PulsedConductance`): the same state
planes (``g_plus``, ``g_minus``, pulse counters that stay 0, ``refreshes``), the same engine paths
(sequential and ``summed`` on the torch backend, the compiled stateful kernel for exponential-step
members), only the refresh differs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import torch

from ..config import register_config
from .conductance_pair import ConductancePairModel, _PairConfig
from .expstep import ExpStepDevice
from .pcm import ConductanceDevice
from .pulsed import _PulsedDevice

__all__ = ["OneSidedPairDevice", "OneSidedPairModel", "PulsedConductance"]


@dataclasses.dataclass
class PulsedConductance(ConductanceDevice):
    """A one-sided pulsed device seen as a SET-only conductance: a SET pulse is its up step.

    Not a tile device itself (the pair's member, built by :class:`OneSidedPairDevice`). Planes:
    the pulsed model's parameters, then ``reset_bias`` (the device's own reset value ``b_ij``).
    """

    device: _PulsedDevice = dataclasses.field(default_factory=lambda: ExpStepDevice(w_min=0.0, w_max=2.0, dw_min=0.01))

    def validate(self) -> None:
        if not isinstance(self.device, _PulsedDevice):
            self._fail("device", f"must be a pulsed device (ConstantStep, ExpStep, PowStep), got {type(self.device).__name__}.")
        if self.device.w_min != 0:
            self._fail("device", f"must be one-sided: w_min = 0 (its weight is a conductance in [0, w_max]), got w_min={self.device.w_min}.")

    @property
    def PARAM_NAMES(self) -> tuple[str, ...]:  # noqa: N802 (the ConductanceDevice interface's name)
        return (*self.device.model().param_names, "reset_bias")

    @property
    def reset_conductance(self) -> float:
        return 0.0

    @property
    def nominal_step(self) -> float:
        return float(self.device.nominal_step)

    @property
    def nominal_g_max(self) -> float:
        return float(self.device.w_max)

    def g_max_plane(self, params: torch.Tensor) -> torch.Tensor:
        return params[self.device.model().param_names.index("w_max")]

    def draw_parameters(self, shape, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        member = self.device.draw_parameters(shape, generator, device, dtype)
        bias = self.device.reset + self.device.reset_dtod * torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return torch.cat([member, bias.unsqueeze(0)])

    def noise_free(self) -> "PulsedConductance":
        return self.replace(device=self.device.replace(dw_min_std=0.0))

    @functools.cached_property
    def member_model(self):
        """The member device's model (its up response is the SET pulse)."""
        return self.device.model()

    def set_pulse(self, g, pulses_since_reset, params, generator) -> torch.Tensor:
        """One up step of the member device from ``g`` (its noise as the model draws it)."""
        up = torch.ones_like(g, dtype=torch.bool)
        return self.member_model.apply_pulses(g, torch.ones_like(g), up, params[:-1], generator)

    def reset_values(self, params: torch.Tensor, generator) -> torch.Tensor:
        """The conductances a reset leaves: ``clip(b_ij + reset_std ξ, 0, g_max_ij)``."""
        bias = params[-1]
        if self.device.reset_std > 0 and generator is not None:
            bias = bias + self.device.reset_std * torch.randn(bias.shape, generator=generator, device=bias.device, dtype=bias.dtype)
        return torch.minimum(bias.clamp_min(0), self.g_max_plane(params))


@register_config
@dataclasses.dataclass
class OneSidedPairDevice(_PairConfig):
    """Two one-sided pulsed devices, up steps only, ``w = (g⁺ − g⁻) / g_scale``, refreshed when
    both are high (the peer's ``OneSidedUnitCell``; module docstring).

    Attributes:
        device: the member device, a pulsed device with ``w_min = 0`` (constant, exponential or
            power step); both members are drawn from it independently.
        w_max: the weight of a pair with one member at its nominal ``w_max`` and the other at 0
            (sets ``g_scale``; the member's ``w_max`` gives ``g_scale = 1``).
        refresh_every: updates (optimizer steps) between refresh checks; 0: never.
        refresh_upper, refresh_lower: a pair is refreshed where its larger read exceeds
            ``refresh_upper`` and its smaller read exceeds ``refresh_lower`` (fractions of the
            member's nominal ``w_max``; the peer's 0.75 and 0.25).
        refresh_read_noise: std of each device's read during a refresh, in the member's units.
        refresh_max_pulses: most up pulses of one open-loop rewrite.
    """

    capabilities: ClassVar = _PairConfig.capabilities

    device: _PulsedDevice = dataclasses.field(
        default_factory=lambda: ExpStepDevice(w_min=0.0, w_max=2.0, w_min_dtod=0.0, dw_min=0.01)
    )
    w_max: float = 2.0
    refresh_every: int = 1
    refresh_upper: float = 0.75
    refresh_lower: float = 0.25
    refresh_read_noise: float = 0.0
    refresh_max_pulses: int = 31

    def validate(self) -> None:
        PulsedConductance(self.device)  # the member's own checks (one-sided, pulsed)
        self._check_positive("w_max")
        self._check_non_negative("refresh_read_noise")
        for field in ("refresh_every", "refresh_max_pulses"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                self._fail(field, "must be an integer >= 0.")
        if not 0 <= self.refresh_lower < self.refresh_upper <= 1:
            self._fail("refresh_lower", f"and refresh_upper must satisfy 0 <= lower < upper <= 1 (got {self.refresh_lower}, {self.refresh_upper}).")

    def conductance(self) -> PulsedConductance:
        return PulsedConductance(self.device)

    def model(self) -> "OneSidedPairModel":
        return OneSidedPairModel(self)


class OneSidedPairModel(ConductancePairModel):
    """The pair response of :class:`ConductancePairModel` with the one-sided refresh."""

    def _rewrite(self, g, counts, planes, generator):
        """``counts`` up pulses on members at ``g`` (1-d) with planes ``planes`` (member layout).

        Pulse by pulse, each with its own noise. Exponential-step members on the compiled
        backend run in one numba call (:func:`~insitu.update.kernels.compiled_pairs.exp_step_up_pulses`,
        the normals drawn from ``generator``); otherwise the member's torch response, one round of
        pulses at a time (:meth:`PulsedConductance.set_pulse`, the reference)."""
        from ..update.kernels import select_backend

        n = int(counts.max()) if counts.numel() else 0
        if n == 0:
            return g
        member = self.device.device
        if type(member) is ExpStepDevice and select_backend(g.device) == "compiled":
            from ..update.kernels.compiled_pairs import exp_step_up_pulses

            normals = torch.zeros((g.numel(), n), dtype=torch.float64)
            if generator is not None and member.dw_min_std > 0:
                normals = torch.randn((g.numel(), n), generator=generator, device=g.device, dtype=g.dtype).double()
            out = g.detach().double().contiguous()
            exp_step_up_pulses(
                out.numpy(), counts.double().numpy(), planes.double().contiguous().numpy(), float(member.dw_min_std),
                float(member.dw_min_std_add), float(member.dw_min_std_slope), normals.numpy(),
            )
            return out.to(g.dtype)
        device = self.device if generator is not None else self.quiet
        for k in range(n):
            g = torch.where(counts > k, device.set_pulse(g, None, planes, generator), g)
        return g

    def compiled_state_response(self):
        from ..update.kernels import compiled_available

        if not compiled_available() or type(self.device.device) is not ExpStepDevice:
            return None
        from ..update.kernels import compiled_pairs

        return compiled_pairs.exp_step_conductance_pair_response(self.device.device)

    def _refresh(self, flat: torch.Tensor, generator) -> torch.Tensor:
        """The one-sided refresh (module docstring) on the flattened planes ``(P, N)``; returns
        the indices of the refreshed pairs (:meth:`ConductancePairModel.after_update` runs it on
        schedule, counts them and sets the weights to the read of the state).

        Read noise is drawn only for the candidates, the pairs within six standard deviations of
        both thresholds (the rest cannot pass: a read error beyond 6σ has probability < 1e-9), so
        the check costs a few passes over the array at every update rather than two normals per
        device."""
        config = self.config
        g_plus, g_minus = self.plane(flat, "g_plus"), self.plane(flat, "g_minus")
        full = self.device.nominal_g_max
        noisy = config.refresh_read_noise > 0 and generator is not None
        margin = 6 * config.refresh_read_noise if noisy else 0.0
        upper, lower = config.refresh_upper * full, config.refresh_lower * full
        candidates = ((torch.maximum(g_plus, g_minus) > upper - margin) & (torch.minimum(g_plus, g_minus) > lower - margin))
        candidates = candidates.nonzero().squeeze(1)
        if candidates.numel() == 0:
            return candidates
        read_plus, read_minus = g_plus[candidates], g_minus[candidates]
        if noisy:
            noise = torch.randn((2, candidates.numel()), generator=generator, device=g_plus.device, dtype=g_plus.dtype)
            read_plus = read_plus + config.refresh_read_noise * noise[0]
            read_minus = read_minus + config.refresh_read_noise * noise[1]
        chosen = (torch.maximum(read_plus, read_minus) > upper) & (torch.minimum(read_plus, read_minus) > lower)
        idx = candidates[chosen]
        if idx.numel() == 0:
            return idx
        target = (read_plus - read_minus)[chosen]
        plus, minus = flat[self._plus][:, idx], flat[self._minus][:, idx]
        new_plus = self.device.reset_values(plus, generator)
        new_minus = self.device.reset_values(minus, generator)
        # The open-loop rewrite: the expected pulses of the difference, whole, on its device.
        pulses = (target.abs() / self.device.nominal_step).round().clamp_max(config.refresh_max_pulses)
        new_plus = self._rewrite(new_plus, torch.where(target > 0, pulses, 0.0), plus, generator)
        new_minus = self._rewrite(new_minus, torch.where(target < 0, pulses, 0.0), minus, generator)
        g_plus[idx], g_minus[idx] = new_plus, new_minus
        return idx
