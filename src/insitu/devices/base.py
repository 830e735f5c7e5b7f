"""Device models: the response of one cross-point to update pulses.

A *device config* (a validated dataclass, e.g. :class:`~insitu.devices.ConstantStepDevice`)
describes a device family and its statistics. ``config.draw_parameters(shape, generator)`` draws
the per-device parameters once (device-to-device variation); the tile keeps them as a buffer.
``config.model()`` gives the :class:`DeviceModel` that applies pulses to weights with those
parameters (cycle-to-cycle variation is drawn at every update).

All pulsed families share one response, linear in the present weight (Gokmen & Vlasov 2016 use
the constant-step special case; soft bounds and linear steps are the usual shapes of real devices):

    step_up(w)   = dw_up   * (1 + slope_up   * w)      (potentiation, w grows)
    step_down(w) = dw_down * (1 + slope_down * w)      (depression, w shrinks)

then a hard clip to the device's own bounds [w_min_ij, w_max_ij]. ``n`` pulses of one sign have
the closed form of that recursion (see :func:`apply_pulses`), so a device receiving many
coincidences in one update costs the same as one receiving a single one.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import ClassVar

import torch

from ..config import Config

__all__ = ["DeviceCapabilities", "DeviceConfig", "DeviceModel", "PARAM_NAMES"]

# Layout of the first axis of the per-device parameter tensor (len(PARAM_NAMES), out, in): each
# parameter is a contiguous plane, so elementwise device math streams through memory.
PARAM_NAMES = ("dw_up", "dw_down", "slope_up", "slope_down", "w_min", "w_max")
DW_UP, DW_DOWN, SLOPE_UP, SLOPE_DOWN, W_MIN, W_MAX = range(len(PARAM_NAMES))


@dataclasses.dataclass(frozen=True)
class DeviceCapabilities:
    """What the update engine may do with a device family (declared, never guessed from types).

    Attributes:
        fusable: the torch backend may update several tiles of this device in one set of tensor
            operations (:mod:`insitu.update.fused`).
        lockstep: replicas of this device can be stacked on a leading axis
            (:class:`~insitu.replicas.ReplicatedTile`).
        closed_form: ``n`` pulses of one sign have a closed form (``apply_signed_pulses`` costs the
            same for any ``n``), checked against pulse-by-pulse application by the conformance tests.
        compiled: the model supplies a jitted response (:meth:`DeviceModel.compiled_response`), so
            the compiled CPU kernels can update it.
        per_device_state: the device keeps state beyond its weight (the conductance pairs of
            :mod:`.conductance_pair`). The state lives in planes of the per-device parameter
            tensor that the model updates in place (:attr:`DeviceModel.per_device_state`); the
            weight is a read of that state. Engine paths that copy or approximate the parameters
            (fused, the stateless compiled kernels, the ``batched`` mode, ``expected`` pulses,
            learning-rule cells) do not take such a device; replicas in lockstep stack its
            state planes and update them in place (with ``lockstep``).
    """

    fusable: bool = False
    lockstep: bool = False
    closed_form: bool = False
    compiled: bool = False
    per_device_state: bool = False

    def require(self, capability: str, device_name: str, what: str) -> None:
        """Raise :class:`ConfigError` if ``capability`` is missing (``what`` says what needed it)."""
        if not getattr(self, capability):
            from ..config import ConfigError

            raise ConfigError(f"{what} needs a device with the '{capability}' capability; {device_name} does not have it.")


@dataclasses.dataclass
class DeviceConfig(Config):
    """Base class of all device configs.

    The contract of a device family (see ``docs/engine.md``): a validated config that states its
    :attr:`nominal_step` (which sets ``Cx``, ``Cd`` and ``BL``) and its :attr:`capabilities`, draws
    its per-device parameters (:meth:`draw_parameters`), and gives the :class:`DeviceModel` that
    owns their layout and responds to coincidence counts (:meth:`model`).
    """

    polymorphic: ClassVar[bool] = True
    #: True for the floating-point reference device: the tile then updates weights exactly.
    is_ideal: ClassVar[bool] = False
    #: What the update engine may do with this family.
    capabilities: ClassVar[DeviceCapabilities] = DeviceCapabilities()

    @property
    def nominal_step(self) -> float:
        """The mean weight change of one coincidence near w = 0 (``Δw_min`` of Gokmen & Vlasov
        2016): the pulsed update chooses ``Cx Cd = lr / (BL · nominal_step)`` from it."""
        value = getattr(self, "dw_min", None)
        if value is None:
            from ..config import ConfigError

            raise ConfigError(
                f"{type(self).__name__} states no nominal step: a pulsed device config must define a "
                "'dw_min' field or override the 'nominal_step' property (the weight change of one pulse)."
            )
        return float(value)

    def draw_parameters(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor | None:
        """Draw the per-device parameters of an array of ``shape`` = (out, in).

        Returns a tensor of shape ``(6, *shape)`` laid out as :data:`PARAM_NAMES`, or ``None``
        for an ideal device. The draws are made once, when the tile is built
        (device-to-device variation), in a fixed order so that a seed fixes the devices.
        """
        return None

    def effects(self):
        """The device effects of this config (:class:`~insitu.devices.effects.DeviceEffects`:
        write noise, decay, diffusion, stuck devices, reset), or ``None`` for a family without
        them. The tile keeps them only when one is on (``effects().active``)."""
        return None

    def model(self) -> "DeviceModel":
        """The pulse response of this device family (stateless; parameters are passed in)."""
        return DeviceModel(c2c=0.0, has_slope=False)


class DeviceModel:
    """The pulse response shared by the pulsed device families.

    The per-device parameters live on the tile (a buffer saved with its state) and are passed to
    every call, so the model itself holds only scalars.

    Attributes:
        c2c: relative cycle-to-cycle spread of a single step (Gaussian, per pulse): a float, or
            for replicas in lockstep a tensor that broadcasts against the weights, e.g.
            ``(R, 1, 1)`` for weights ``(R, out, in)`` (one spread per replica).
        has_slope: whether steps depend on the weight (selects the closed-form path).
    """

    #: Names of the planes of the per-device parameter tensor ``(len(param_names), *shape)``;
    #: nothing outside :mod:`insitu.devices` indexes planes by number.
    param_names: tuple[str, ...] = PARAM_NAMES
    #: True for a model whose parameter tensor also holds per-device state (see
    #: :attr:`DeviceCapabilities.per_device_state`): its ``apply_*`` methods update those planes
    #: of the ``params`` they are given in place, so a caller that passes a gathered copy of the
    #: parameters must write the copy back.
    per_device_state: bool = False

    def __init__(self, c2c: float | torch.Tensor, has_slope: bool):
        self.c2c = c2c if torch.is_tensor(c2c) else float(c2c)
        #: Whether any device draws cycle-to-cycle noise (decided once, not at every pulse).
        self.noisy = bool((c2c > 0).any()) if torch.is_tensor(c2c) else self.c2c > 0
        self.has_slope = bool(has_slope)

    def structure(self) -> tuple:
        """What two models must share to be updated together (the fused layout, replicas in
        lockstep): the model class, the parameter layout and every setting but the
        cycle-to-cycle spread, which may be one per array (:meth:`with_c2c`)."""
        settings = tuple(sorted((k, v) for k, v in vars(self).items() if k not in ("c2c", "noisy", "param_names")))
        return (type(self), tuple(self.param_names), settings)

    def with_c2c(self, c2c: float | torch.Tensor) -> "DeviceModel":
        """A copy of this model with another cycle-to-cycle spread, e.g. one per replica, a
        tensor ``(R, 1, 1, 1)`` against the engine's stacked weights ``(R, out, in, n)``."""
        model = copy.copy(self)
        model.c2c = c2c if torch.is_tensor(c2c) else float(c2c)
        model.noisy = bool((c2c > 0).any()) if torch.is_tensor(c2c) else model.c2c > 0
        return model

    def _scaled_noise(self, counts: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``counts + c2c · noise · scale`` for a scalar or a per-replica ``c2c``."""
        if torch.is_tensor(self.c2c):
            return counts + noise * scale * self.c2c
        return torch.addcmul(counts, noise, scale, value=self.c2c)

    def plane(self, params: torch.Tensor, name: str) -> torch.Tensor:
        """The plane ``name`` of a parameter tensor laid out as :attr:`param_names`."""
        return params[self.param_names.index(name)]

    def pack_interleaved(self, params: torch.Tensor, names: tuple[str, ...] | None = None) -> torch.Tensor:
        """``(n_devices, len(names))``: the named planes side by side per device (one gather reads
        a device's parameters); all planes in layout order when ``names`` is None."""
        if names is None:
            return params.reshape(params.shape[0], -1).t().contiguous()
        return torch.stack([self.plane(params, n).reshape(-1) for n in names], dim=1)

    def compiled_planes(self) -> tuple[str, ...]:
        """The parameter planes the compiled response reads, in the order it reads them
        (``params[j, i, k, 0]`` is the first). Only these are packed for the kernel: the update
        is bound by reading the parameters of scattered devices, so fewer bytes a device is
        faster. Constant steps need four, weight-dependent steps all six."""
        if self.has_slope:
            return self.param_names
        return ("dw_up", "dw_down", "w_min", "w_max")

    def pack_for_kernel(self, params: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``params`` ``(P, *S)`` as ``(*S, len(compiled_planes()))``, interleaved per device."""
        names = self.compiled_planes()
        planes = params[[self.param_names.index(n) for n in names]]
        packed = planes.movedim(0, -1)
        return packed.to(dtype).contiguous() if dtype is not None else packed.contiguous()

    def compiled_response(self):
        """The jitted response of one device to ``n`` signed coincidences, for the compiled CPU
        kernels (:mod:`insitu.update.kernels.compiled`), or ``None`` if this model has none.

        Signature ``respond(w, signed_n, params, j, i, k, c2c, xi) -> new w``: device ``k`` of
        cross-point ``(j, i)`` receives ``signed_n`` coincidences (> 0 potentiate), ``params`` is
        the ``(out, in, n, P)`` interleaved copy of the planes :meth:`compiled_planes` names, in
        that order (:meth:`pack_for_kernel`), and ``xi`` one standard normal for the
        cycle-to-cycle noise of these pulses."""
        if torch.is_tensor(self.c2c):
            return None  # per-replica spreads: the replica path (torch) handles them
        from ..update.kernels import compiled_available

        if not compiled_available():
            return None
        from ..update.kernels import compiled

        return compiled.linear_step_response if self.has_slope else compiled.constant_step_response

    def compiled_mixed_response(self):
        """The jitted response of one device to ``n_up`` up and ``n_down`` down pulses whose order
        is not simulated, as :meth:`apply_mixed` without count variance (the compiled ``summed``
        mode), or ``None``: then the summed mode runs on the torch backend.

        Signature ``mixed(w, n_up, n_down, params, j, i, k, c2c, xi) -> new w``, ``params`` as
        for :meth:`compiled_response`. Given for the families whose steps are this class's
        :meth:`steps_at` (constant step, linear step, soft bounds); the other families keep their
        summed mode on the torch backend."""
        if torch.is_tensor(self.c2c) or type(self).steps_at is not DeviceModel.steps_at:
            return None
        if tuple(self.param_names) != PARAM_NAMES:
            return None
        from ..update.kernels import compiled_available

        if not compiled_available():
            return None
        from ..update.kernels import compiled

        return compiled.linear_step_mixed if self.has_slope else compiled.constant_step_mixed

    def clip(self, weights: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """Clip weights to each device's bounds (what programming a target value achieves)."""
        if params is None:
            return weights
        return torch.clamp(weights, self.plane(params, "w_min"), self.plane(params, "w_max"))

    def program(self, weights: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """Program target ``weights`` (what :meth:`AnalogTile.set_weights` does): returns the
        weights the devices then hold. A stateless device is clipped to its bounds; a model with
        per-device state also writes that state into ``params`` in place."""
        return self.clip(weights, params)

    def after_update(self, weights: torch.Tensor, params: torch.Tensor, generator: torch.Generator | None, step: int) -> int:
        """Maintenance after the pulses of one update (optimizer step) ``step`` (counted from
        1): a model with per-device state may change its state and ``weights`` in place (e.g.
        refresh saturated conductance pairs). Returns the number of devices it changed; the
        stateless families do nothing."""
        return 0

    def apply_pulses(
        self,
        weights: torch.Tensor,
        counts: torch.Tensor,
        up: torch.Tensor,
        params: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """New weights after ``counts`` pulses of one sign per device.

        Args:
            weights: present weights, any shape ``S``.
            counts: number of coincidences per device, shape ``S``, >= 0 (float; an expected count
                may be fractional for the deterministic update).
            up: bool tensor of shape ``S``: True where the pulses potentiate (w grows).
            params: per-device parameters of these devices, shape ``(6, *S)``.
            generator: draws the cycle-to-cycle noise; ``None`` means noise-free (expected value).

        Returns:
            The updated weights, shape ``S``.

        ``n`` steps of ``w <- w + g (1 + s w)`` (``g`` the signed step at w = 0, ``s`` the slope) give
        ``w_n = w_0 r + g (r - 1) / a`` with ``a = g s`` and ``r = (1 + a)^n``; for ``s = 0`` this is
        ``w_0 + n g``. Cycle-to-cycle variation multiplies each step by ``(1 + c2c * xi)``; the sum of
        ``n`` such steps adds a Gaussian of std ``c2c * |step(w_0)| * sqrt(n)`` (exact for constant
        steps, first order in the slope otherwise). The clip to the bounds is applied once at the
        end: pulses of one sign move monotonically, so this equals clipping after every pulse
        except for the rare pulse whose noisy step changes sign.
        """
        p = params
        signed_step = torch.where(up, p[DW_UP], -p[DW_DOWN])
        noisy = generator is not None and self.noisy
        if self.has_slope:
            slope = torch.where(up, p[SLOPE_UP], p[SLOPE_DOWN])
            # a <= -1 would be a step that overshoots the bound it approaches; bounds are drawn
            # to prevent it, the floor only guards the logarithm.
            a = (signed_step * slope).clamp_min(-0.999)
            growth = torch.expm1(counts * torch.log1p(a))
            small = a.abs() < 1e-12
            n_eff = torch.where(small, counts, growth / torch.where(small, torch.ones_like(a), a))
            new = weights + weights * growth + signed_step * n_eff
            if noisy:
                noise = torch.randn(weights.shape, generator=generator, device=weights.device, dtype=weights.dtype)
                new = new + noise * (self.c2c * (signed_step * (1 + slope * weights)).abs() * counts.sqrt())
        elif noisy:
            # n steps s (1 + c2c ξ_k) sum to s (n + c2c sqrt(n) ξ): the sign of s does not matter.
            noise = torch.randn(weights.shape, generator=generator, device=weights.device, dtype=weights.dtype)
            new = torch.addcmul(weights, signed_step, self._scaled_noise(counts, noise, counts.sqrt()))
        else:
            new = torch.addcmul(weights, signed_step, counts)
        return torch.clamp(new, p[W_MIN], p[W_MAX])

    def apply_signed_pulses(
        self,
        weights: torch.Tensor,
        signed_counts: torch.Tensor,
        params: torch.Tensor,
        generator: torch.Generator | None,
        counters=None,
        overwrite: bool = False,
    ) -> torch.Tensor:
        """:meth:`apply_pulses` with the direction carried by the sign of the counts.

        ``signed_counts > 0`` potentiates, ``< 0`` depresses, shape ``S`` like ``weights``.
        ``counters`` (optional) receives the number of coincidences. ``overwrite=True`` lets the
        call reuse ``weights`` and ``signed_counts`` as scratch (the result may be ``weights``
        itself): for callers that pass fresh copies, it saves allocations in the hot path.
        """
        n = signed_counts.abs()
        if counters is not None:
            counters.add_coincidences(n.sum())
        if self.has_slope:
            return self.apply_pulses(weights, n, signed_counts > 0, params, generator)
        # Constant step, fused: w + step (c + c2c sqrt|c| ξ) with step the up or down magnitude.
        planes = params.unbind(0)  # one call for the four planes used
        step = torch.where(signed_counts > 0, planes[DW_UP], planes[DW_DOWN])
        if generator is not None and self.noisy:
            noise = torch.randn(weights.shape, generator=generator, device=weights.device, dtype=weights.dtype)
            if overwrite and not torch.is_tensor(self.c2c) and signed_counts.shape == weights.shape:
                signed_counts = signed_counts.addcmul_(noise, n.sqrt_(), value=self.c2c)
            else:
                signed_counts = self._scaled_noise(signed_counts, noise, n.sqrt())
        if overwrite:
            return weights.addcmul_(step, signed_counts).clamp_(planes[W_MIN], planes[W_MAX])
        return torch.clamp(torch.addcmul(weights, step, signed_counts), planes[W_MIN], planes[W_MAX])

    def steps_at(self, weights: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Magnitudes of one up and one down step at ``weights`` (before cycle-to-cycle noise),
        each shaped like ``weights``: what the approximate (``summed``/``batched``) modes use."""
        step_up, step_down = params[DW_UP], params[DW_DOWN]
        if self.has_slope:
            step_up = step_up * (1 + params[SLOPE_UP] * weights)
            step_down = step_down * (1 + params[SLOPE_DOWN] * weights)
        return step_up, step_down

    def apply_mixed(
        self,
        weights: torch.Tensor,
        half_total: torch.Tensor,
        half_signed: torch.Tensor,
        params: torch.Tensor,
        generator: torch.Generator | None,
        count_variance: torch.Tensor | float = 1.0,
    ) -> torch.Tensor:
        """Approximate response to many up and down pulses whose order is not simulated.

        Used by the batched update. With ``T`` the (conditional) expected number of coincidences
        of a device over the batch and ``S`` = depressing minus potentiating ones, the arguments
        are ``T / 2`` and ``S / 2``, so ``n_up = T/2 - S/2`` and ``n_down = T/2 + S/2``.
        ``count_variance`` is the variance of the counts as a fraction of their mean (1 for
        Poisson counts). Steps are evaluated at the present weight; the count noise and the
        cycle-to-cycle noise (``c2c² · step²`` per coincidence) are drawn as one Gaussian, and
        the bounds are applied once.
        """
        p = params
        step_up, step_down = self.steps_at(weights, p)
        # The arrays are as large as the tile and the batched update is bound by passes over
        # memory: each line below is one pass, reusing its buffers.
        # (Counts may be one per cell, (out, in, 1), against per-device steps (out, in, n).)
        up = (half_total - half_signed).mul(step_up)  # step_up n_up
        down = (half_total + half_signed).mul(step_down)  # step_down n_down
        mean = up - down
        if generator is not None:
            # var = (count_variance + c2c²)(step_up² n_up + step_down² n_down); the clamp only
            # catches rounding (n_up, n_down >= 0).
            var = up.mul_(step_up).addcmul_(down, step_down).clamp_min_(0)
            var.mul_(count_variance + self.c2c * self.c2c)
            noise = torch.randn(weights.shape, generator=generator, device=weights.device, dtype=weights.dtype)
            # sqrt(var) as var / sqrt(max(var, tiny)): exactly 0 where var = 0 (those devices do
            # not move), without sqrt of exact zeros (several times slower on some CPUs).
            mean.addcmul_(noise, var.clamp_min(1e-30).rsqrt_().mul_(var))
        return mean.add_(weights).clamp_(self.plane(p, "w_min"), self.plane(p, "w_max"))
