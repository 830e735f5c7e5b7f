"""Generic pulsed-device effects: write noise, decay, diffusion, stuck devices and reset.

Every pulsed family (:class:`~insitu.devices.pulsed._PulsedDevice` and its subclasses) has the
fields; all are off by default, and then nothing here runs and nothing is drawn. The tile asks its
config for :meth:`DeviceConfig.effects` once and keeps the :class:`DeviceEffects` only when one of
them is on. The equations (``docs/devices.md``, "Device effects"; the peer's reading in
``../shared/reference/algorithms.md`` §1.6), with ``ξ`` a standard normal:

* **write noise**: the array computes with ``w + σ_wn ξ_ij`` (``σ_wn = write_noise_std · dw_min``)
  while pulses act on the true weight ``w``; ``ξ`` is re-drawn for a device when an update changed
  its weight, and for every device after decay, diffusion, a reset or programming.
* **decay**: ``w <- b + (w - b) s_ij`` once per update, ``s_ij = 1 - 1/ℓ_ij`` (0 if ``ℓ_ij <= 1``),
  ``ℓ_ij = lifetime (1 + lifetime_dtod ξ)``, ``b_ij = reset + reset_dtod ξ``; then the clip.
* **diffusion**: ``w <- w + ρ_ij ξ`` once per update (before the decay), ``ρ_ij = |diffusion (1 +
  diffusion_dtod ξ)|``; then the clip.
* **stuck devices**: with probability ``corrupt_prob`` a device is stuck, at a value drawn uniformly
  in ``[max(w_min_ij, -corrupt_range), min(w_max_ij, corrupt_range)]``; it never moves (pulses,
  decay, diffusion, reset and programming leave it there).
* **reset** (on request, :meth:`AnalogTile.reset_devices`): ``w <- clip(b_ij + reset_std ξ)``.

The per-device numbers that are drawn (``s_ij``, ``b_ij``, ``ρ_ij``, the stuck mask and values)
are the planes of one tensor (:meth:`DeviceEffects.plane_names`), a buffer of the tile saved in its
state; a number without device-to-device spread is a scalar and has no plane.
"""

from __future__ import annotations

import dataclasses
import math

import torch

__all__ = ["DeviceEffects", "EFFECT_FIELDS"]

#: The config fields of the effects, in the order of :class:`DeviceEffects`.
EFFECT_FIELDS = (
    "write_noise_std", "lifetime", "lifetime_dtod", "diffusion", "diffusion_dtod",
    "reset", "reset_dtod", "reset_std", "corrupt_prob", "corrupt_range",
)


@dataclasses.dataclass(frozen=True)
class DeviceEffects:
    """The effects of one device config, and the math that applies them to an array.

    Attributes:
        write_noise: absolute std of the write noise (``write_noise_std · dw_min``).
        lifetime, lifetime_dtod: decay time constant in updates (0: no decay) and its relative spread.
        diffusion, diffusion_dtod: std of the random walk per update and its relative spread.
        reset, reset_dtod, reset_std: the reset value (also the decay target), its device-to-device
            spread (absolute) and the spread of every reset (absolute).
        corrupt_prob, corrupt_range: probability that a device is stuck, and the range of the
            stuck values.
    """

    write_noise: float = 0.0
    lifetime: float = 0.0
    lifetime_dtod: float = 0.0
    diffusion: float = 0.0
    diffusion_dtod: float = 0.0
    reset: float = 0.0
    reset_dtod: float = 0.0
    reset_std: float = 0.0
    corrupt_prob: float = 0.0
    corrupt_range: float = 0.0

    # -- what is on --------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether the tile must keep this object: an effect acts at every update or when
        programming, or a per-device number must be drawn at construction."""
        return bool(self.write_noise > 0 or self.lifetime > 0 or self.diffusion > 0 or self.reset_dtod > 0 or self.corrupt_prob > 0)

    @property
    def per_step(self) -> bool:
        """Whether decay or diffusion run at every update (they re-draw all write noise)."""
        return self.lifetime > 0 or self.diffusion > 0

    @property
    def needs_snapshot(self) -> bool:
        """Whether the update must remember the weights before its pulses: write noise is then
        re-drawn only for the devices the pulses changed."""
        return self.write_noise > 0 and not self.per_step

    def plane_names(self) -> tuple[str, ...]:
        """The planes of the per-device effect tensor, in draw order (only numbers with a spread)."""
        names = []
        if self.lifetime > 0 and self.lifetime_dtod > 0:
            names.append("decay")
        if self.reset_dtod > 0:
            names.append("reset_bias")
        if self.diffusion > 0 and self.diffusion_dtod > 0:
            names.append("diffusion")
        if self.corrupt_prob > 0:
            names += ["stuck", "stuck_value"]
        return tuple(names)

    # -- construction ------------------------------------------------------------------------
    def draw(self, params: torch.Tensor, model, generator: torch.Generator) -> torch.Tensor | None:
        """The per-device planes ``(K, *shape)`` for devices with parameters ``params``
        (``(P, *shape)``, laid out as ``model.param_names``), or ``None`` if there are none.
        Drawn in :meth:`plane_names` order from ``generator``."""
        names = self.plane_names()
        if not names:
            return None
        w_min, w_max = model.plane(params, "w_min"), model.plane(params, "w_max")
        shape, device, dtype = w_min.shape, w_min.device, w_min.dtype

        def normal():
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)

        def uniform():
            return torch.rand(shape, generator=generator, device=device, dtype=dtype)

        planes = []
        if "decay" in names:
            life = self.lifetime * (1 + self.lifetime_dtod * normal())
            planes.append(torch.where(life > 1, 1 - 1 / life.clamp_min(1), torch.zeros_like(life)))
        if "reset_bias" in names:
            planes.append(self.reset + self.reset_dtod * normal())
        if "diffusion" in names:
            planes.append((self.diffusion * (1 + self.diffusion_dtod * normal())).abs())
        if "stuck" in names:
            stuck = uniform() < self.corrupt_prob
            low = torch.clamp(w_min, min=-self.corrupt_range)
            high = torch.clamp(w_max, max=self.corrupt_range)
            planes += [stuck.to(dtype), low + (high - low) * uniform()]
        return torch.stack(planes)

    def _plane(self, state: torch.Tensor | None, name: str):
        return state[self.plane_names().index(name)] if state is not None and name in self.plane_names() else None

    def decay_factor(self, state: torch.Tensor | None):
        """``s_ij`` (a plane) or ``s`` (a float): the share of ``w - b`` kept per update."""
        plane = self._plane(state, "decay")
        if plane is not None:
            return plane
        return 1 - 1 / self.lifetime if self.lifetime > 1 else 0.0

    def reset_bias(self, state: torch.Tensor | None):
        """``b_ij`` (a plane) or ``reset`` (a float): the reset value and decay target."""
        plane = self._plane(state, "reset_bias")
        return self.reset if plane is None else plane

    # -- what happens to an array ------------------------------------------------------------
    def hold_stuck(self, weights: torch.Tensor, state: torch.Tensor | None) -> None:
        """Put the stuck devices back at their values (in place)."""
        stuck = self._plane(state, "stuck")
        if stuck is not None:
            torch.where(stuck > 0.5, self._plane(state, "stuck_value"), weights, out=weights)

    def draw_write_noise(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A fresh write noise ``σ_wn ξ`` shaped like ``like``."""
        noise = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return noise.mul_(self.write_noise)

    def after_update(
        self,
        weights: torch.Tensor,
        params: torch.Tensor,
        model,
        state: torch.Tensor | None,
        write_noise: torch.Tensor | None,
        before: torch.Tensor | None,
        generator: torch.Generator,
    ) -> None:
        """One update's effects, in place, after its pulses: diffusion, decay, the clip to the
        bounds, the stuck devices, then the write noise (re-drawn where ``weights`` differ from
        ``before``, the weights before the pulses; for every device if ``before`` is None or
        decay or diffusion ran). The peer's order (§1.6: diffusion, then decay)."""
        if self.diffusion > 0:
            rho = self._plane(state, "diffusion")
            noise = torch.randn(weights.shape, generator=generator, device=weights.device, dtype=weights.dtype)
            weights.add_(noise.mul_(self.diffusion if rho is None else rho))
        if self.lifetime > 0:
            target = self.reset_bias(state)
            weights.sub_(target).mul_(self.decay_factor(state)).add_(target)
        if self.per_step:
            weights.copy_(model.clip(weights, params))
        self.hold_stuck(weights, state)
        if write_noise is not None:
            fresh = self.draw_write_noise(weights, generator)
            if before is None or self.per_step:
                write_noise.copy_(fresh)
            else:
                torch.where(weights != before, fresh, write_noise, out=write_noise)

    def programmed(self, weights, state, write_noise, generator) -> None:
        """After programming (``set_weights``): stuck devices stay, write noise is re-drawn."""
        self.hold_stuck(weights, state)
        if write_noise is not None:
            write_noise.copy_(self.draw_write_noise(weights, generator))

    def reset_devices(self, weights, params, model, state, write_noise, mask, generator) -> None:
        """Reset the devices where ``mask`` (broadcast to ``weights``) is True, in place:
        ``w <- clip(b_ij + reset_std ξ)`` (the spread drawn for every device, used where reset)."""
        target = self.reset_bias(state)
        value = torch.zeros_like(weights).add_(target)
        if self.reset_std > 0:
            value.add_(torch.randn(weights.shape, generator=generator, device=weights.device, dtype=weights.dtype), alpha=self.reset_std)
        value = model.clip(value, params) if params is not None else value
        torch.where(mask, value, weights, out=weights)
        self.programmed(weights, state, write_noise, generator)

    def half_life(self) -> float:
        """Updates until ``w - b`` halves for the mean lifetime: ``ln 2 / -ln(1 - 1/lifetime)``
        (≈ ``lifetime · ln 2``); ``inf`` without decay."""
        if not self.lifetime > 0:
            return math.inf
        if self.lifetime <= 1:
            return 0.0
        return math.log(2) / -math.log1p(-1 / self.lifetime)
