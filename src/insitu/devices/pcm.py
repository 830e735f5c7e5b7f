"""Conductance devices for multi-conductance unit cells: PCM-like response, SET-only.

These devices are described by a *conductance* ``G`` in ``[g_min, g_max]`` rather than by a signed
weight: a weight is a difference of conductances (``g⁺ − g⁻``), assembled by the unit cell of
:mod:`insitu.multi_conductance`. Conductances are expressed in weight units (one unit of
conductance difference in the low-significance pair is one unit of weight; the periphery's fixed
gain from µS to weight is folded in).

Phase-change memory (PCM) can be potentiated gradually by partial-SET pulses but depressed only by
an abrupt RESET to the minimum conductance (Burr et al. 2015; Cristiano et al. 2018, J. Appl. Phys.
124, 151901). Cristiano et al. model the response as saturating, with "either an immediate or a
delayed steep initial jump" after a RESET; the size of that jump sets the dynamic range left for
gradual steps. :class:`PCMDevice` is that model:

    pulse k after a RESET (k = 0, 1, ...):
        k <  jump_delay :  ΔG = 0                                  (delayed jump: nothing happens yet)
        k == jump_delay :  ΔG = initial_jump · G_max_ij · ξ_k       (the steep initial jump)
        k >  jump_delay :  ΔG = dG_ij · (1 − G / G_max_ij)^nonlinearity · ξ_k   (saturating steps)
    with ξ_k = max(0, 1 + dg_std · N(0, 1)) (pulse-to-pulse stochasticity), then G ≤ G_max_ij.

``nonlinearity = 0`` is a constant step up to a hard bound (a linear device), ``1`` an exponential
approach to ``G_max`` (soft bound), larger values saturate more strongly. ``G_max_ij`` and ``dG_ij``
carry device-to-device spread (``g_max_dtod``, ``dg_dtod``), drawn once when the tile is built.

Every conductance device has the interface of :class:`ConductanceDevice`: ``draw_parameters``
(device-to-device draws, a tensor of planes), ``set_pulse`` (one SET pulse on each given device)
and, for bidirectional devices, ``depress_pulse``. :func:`apply_set_pulses` fires ``n_ij`` SET
pulses per device, one pulse at a time, because the response depends on the pulse index after
RESET and on the present conductance.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..config import Config, register_config

__all__ = ["ConductanceDevice", "PCMDevice", "apply_set_pulses", "apply_depress_pulses", "closed_loop_tune", "verify_read"]


@dataclasses.dataclass
class ConductanceDevice(Config):
    """Base class of conductance devices (one device of a conductance pair).

    Subclasses set :attr:`PARAM_NAMES` (the per-device planes drawn by :meth:`draw_parameters`,
    always including ``"g_max"``) and implement :meth:`set_pulse`.
    """

    polymorphic: ClassVar[bool] = True
    #: Planes of the per-device parameter tensor ``(len(PARAM_NAMES), *shape)``.
    PARAM_NAMES: ClassVar[tuple[str, ...]] = ("g_max",)
    #: Whether the device can also be depressed gradually (a capacitor-like LSP, see
    #: :class:`~insitu.devices.jump_table.JumpTableDevice` with a depression table). PCM cannot.
    bidirectional: ClassVar[bool] = False

    # -- to be provided by subclasses ------------------------------------------------------------
    @property
    def reset_conductance(self) -> float:
        """The conductance after a RESET (the minimum)."""
        raise NotImplementedError

    @property
    def nominal_step(self) -> float:
        """Mean conductance change of one gradual SET pulse near the bottom of the range.

        The pulsed update sets ``Cx Cd`` from it (the ``dw_min`` of Gokmen & Vlasov 2016).
        """
        raise NotImplementedError

    @property
    def nominal_g_max(self) -> float:
        raise NotImplementedError

    def draw_parameters(self, shape, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        """Per-device parameters ``(len(PARAM_NAMES), *shape)``, drawn once (device-to-device)."""
        raise NotImplementedError

    def set_pulse(self, g, pulses_since_reset, params, generator) -> torch.Tensor:
        """Conductance after one SET pulse on every given device.

        Args:
            g: present conductances, shape ``S``.
            pulses_since_reset: SET pulses each device received since its last RESET, shape ``S``.
            params: per-device planes ``(len(PARAM_NAMES), *S)``.
            generator: draws the pulse-to-pulse noise.
        """
        raise NotImplementedError

    def depress_pulse(self, g, params, generator) -> torch.Tensor:
        """Conductance after one gradual depression pulse (bidirectional devices only)."""
        raise TypeError(f"{type(self).__name__} cannot be depressed gradually (SET-only device).")

    def g_max_plane(self, params: torch.Tensor) -> torch.Tensor:
        """The per-device maximum conductance plane."""
        return params[self.PARAM_NAMES.index("g_max")]

    @property
    def settled_count(self) -> int:
        """SET pulses after a RESET beyond which the response no longer depends on their number
        (PCM: past the initial jump); 0 when it never does. A pulse counter may be capped there."""
        return 0

    def noise_free(self) -> "ConductanceDevice":
        """This device without pulse-to-pulse noise (the expected step of every pulse)."""
        raise NotImplementedError

    def compiled_tune_kernel(self):
        """The compiled closed-loop tuning of pairs of this device (a kernel of
        :mod:`insitu.update.kernels.compiled_pairs` with :meth:`set_pulse`'s arithmetic, see
        :func:`closed_loop_tune`), or ``None``: then the PyTorch loop tunes them. A subclass that
        changes :meth:`set_pulse` must change this too."""
        return None


@register_config
@dataclasses.dataclass
class PCMDevice(ConductanceDevice):
    """A PCM-like device: SET-only, saturating, with an immediate or delayed steep initial jump.

    See the module docstring for the response. Defaults describe a fairly linear device with 100
    gradual levels and no jump; the ``cristiano-2018-*`` presets set the paper's conditions.

    Attributes:
        g_max: mean maximum conductance (weight units).
        g_max_dtod: device-to-device spread of ``g_max``, relative.
        dg: mean gradual step at ``G = 0`` (weight units).
        dg_dtod: device-to-device spread of ``dg``, relative.
        dg_std: pulse-to-pulse spread of every step and of the jump, relative.
        nonlinearity: exponent of the saturation ``(1 − G/G_max)^nonlinearity``; 0 is linear.
        initial_jump: size of the steep initial jump after a RESET, as a fraction of the device's
            ``G_max`` (0: none). The larger it is, the less range is left for gradual steps.
        jump_delay: SET pulses after a RESET that leave the device unchanged before the jump
            (0: immediate jump).
        g_min: conductance after a RESET.
    """

    PARAM_NAMES: ClassVar[tuple[str, ...]] = ("g_max", "dg", "jump")

    g_max: float = 1.0
    g_max_dtod: float = 0.0
    dg: float = 0.01
    dg_dtod: float = 0.0
    dg_std: float = 0.0
    nonlinearity: float = 0.0
    initial_jump: float = 0.0
    jump_delay: int = 0
    g_min: float = 0.0

    def validate(self) -> None:
        self._check_positive("g_max", "dg")
        self._check_non_negative("g_max_dtod", "dg_dtod", "dg_std", "nonlinearity", "initial_jump", "g_min")
        if self.g_min >= self.g_max:
            self._fail("g_min", f"must be below g_max={self.g_max} (it is the conductance after a RESET).")
        if self.dg >= self.g_max - self.g_min:
            self._fail("dg", f"must be smaller than the conductance range g_max - g_min = {self.g_max - self.g_min}.")
        if not self.initial_jump < 1:
            self._fail("initial_jump", "must be < 1: it is the jump as a fraction of g_max (e.g. 0.2).")
        if isinstance(self.jump_delay, bool) or not isinstance(self.jump_delay, int) or self.jump_delay < 0:
            self._fail("jump_delay", "must be an integer >= 0 (SET pulses before the jump; 0 = immediate).")
        if self.jump_delay > 0 and self.initial_jump == 0:
            self._fail("jump_delay", "needs initial_jump > 0 (a delay of a jump that does not exist).")

    @property
    def reset_conductance(self) -> float:
        return self.g_min

    @property
    def nominal_step(self) -> float:
        return self.dg

    @property
    def nominal_g_max(self) -> float:
        return self.g_max

    def draw_parameters(self, shape, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        def normal():
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)

        # Fixed draw order: the same seed gives the same devices. A device must keep at least two
        # gradual steps of range above its reset level, or it would be stuck at the bound.
        dg = (self.dg * (1 + self.dg_dtod * normal())).clamp_min(0)
        g_max = torch.maximum(self.g_max * (1 + self.g_max_dtod * normal()), self.g_min + 2 * dg + 1e-6)
        jump = self.initial_jump * (g_max - self.g_min)
        return torch.stack([g_max, dg, jump])

    @property
    def settled_count(self) -> int:
        return self.jump_delay + 1 if self.initial_jump > 0 else 0

    def noise_free(self) -> "PCMDevice":
        return self.replace(dg_std=0.0)

    def compiled_tune_kernel(self):
        from ..update.kernels.compiled_pairs import pcm_closed_loop_tune

        return pcm_closed_loop_tune(self)

    def set_pulse(self, g, pulses_since_reset, params, generator) -> torch.Tensor:
        g_max, dg, jump = params[0], params[1], params[2]
        if self.nonlinearity == 0:
            gradual = dg
        else:
            fraction_left = (g_max - g).div_(g_max - self.g_min).clamp_min_(0)
            gradual = dg * (fraction_left if self.nonlinearity == 1 else fraction_left.pow_(self.nonlinearity))
        if self.initial_jump > 0:
            step = torch.where(pulses_since_reset == self.jump_delay, jump, gradual)
            if self.jump_delay > 0:
                step = torch.where(pulses_since_reset < self.jump_delay, torch.zeros_like(step), step)
        else:
            step = gradual
        if self.dg_std > 0:
            noise = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
            # A SET pulse never lowers the conductance: the noisy factor is floored at 0.
            step = step * noise.mul_(self.dg_std).add_(1).clamp_min_(0)
        return torch.minimum(g + step, g_max)


def apply_set_pulses(
    device: ConductanceDevice,
    g: torch.Tensor,
    pulses_since_reset: torch.Tensor,
    counts: torch.Tensor,
    params: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fire ``counts`` SET pulses on each device, one pulse at a time.

    Args:
        device: the device config.
        g, pulses_since_reset, counts: shape ``S`` (counts are non-negative integers, as floats).
        params: ``(len(device.PARAM_NAMES), *S)``.
        generator: pulse-to-pulse noise.

    Returns:
        ``(g, pulses_since_reset)`` after the pulses, shape ``S``.

    Pulses are applied in rounds: round ``k`` pulses the devices with ``counts > k``. Batch-1
    updates give a few coincidences per device, so there are few rounds.

    A :class:`PCMDevice` on float32 CPU tensors runs the rounds in one compiled call on the
    compiled backend (:func:`~insitu.update.kernels.compiled_pairs.pcm_set_pulses`), with the
    same normals drawn from ``generator`` in the same order (one per device and round, as
    :meth:`PCMDevice.set_pulse` draws them): the same results but for the last bit of the power
    of the nonlinear step.
    """
    rounds = int(counts.max()) if counts.numel() else 0
    if rounds and _compiled_set_pulses(device, g, pulses_since_reset, counts, params):
        # The reference's draws: one randn per round over all devices of the block.
        normals = (
            torch.stack([torch.randn(g.shape, generator=generator, dtype=g.dtype) for _ in range(rounds)])
            if device.dg_std > 0
            else g.new_zeros((rounds, *g.shape))
        )
        from ..update.kernels.compiled_pairs import pcm_set_pulses

        g, pulses_since_reset = g.contiguous().clone(), pulses_since_reset.contiguous().clone()
        pcm_set_pulses(
            g.view(-1).numpy(), pulses_since_reset.view(-1).numpy(), counts.contiguous().view(-1).numpy(),
            params.contiguous().view(params.shape[0], -1).numpy(), normals.view(rounds, -1).numpy(),
            float(device.nonlinearity), float(device.g_min), device.initial_jump > 0, float(device.jump_delay),
            float(device.dg_std),
        )
        return g, pulses_since_reset
    for k in range(rounds):
        fire = counts > k
        pulsed = device.set_pulse(g, pulses_since_reset, params, generator)
        g = torch.where(fire, pulsed, g)
        pulses_since_reset = pulses_since_reset + fire.to(pulses_since_reset.dtype)
    return g, pulses_since_reset


def _compiled_set_pulses(device, g, pulses_since_reset, counts, params) -> bool:
    """Whether :func:`apply_set_pulses` runs compiled: a :class:`PCMDevice` on float32 CPU tensors
    of one shape, on the compiled backend."""
    if type(device) is not PCMDevice:
        return False
    tensors = (g, pulses_since_reset, counts, params)
    if any(t.dtype != torch.float32 or not t.is_cpu or t.requires_grad for t in tensors):
        return False
    if pulses_since_reset.shape != g.shape or counts.shape != g.shape or params.shape[1:] != g.shape:
        return False
    from ..update.kernels import select_backend

    return select_backend(g.device) == "compiled"


def apply_depress_pulses(device, g, counts, params, generator) -> torch.Tensor:
    """Fire ``counts`` gradual depression pulses on each device of a bidirectional device."""
    rounds = int(counts.max()) if counts.numel() else 0
    for k in range(rounds):
        g = torch.where(counts > k, device.depress_pulse(g, params, generator), g)
    return g


def verify_read(difference: torch.Tensor, read_noise: float, generator: torch.Generator) -> torch.Tensor:
    """One verify read of each pair: its ``g⁺ − g⁻`` plus Gaussian read noise of std ``read_noise``.

    ``difference`` has shape ``(n,)``; the noise (one draw per pair, both devices' noise together) is
    drawn from ``generator``. ``read_noise == 0`` draws nothing and returns ``difference`` itself.
    """
    if read_noise == 0:
        return difference
    noise = torch.randn(difference.shape, generator=generator, device=difference.device, dtype=difference.dtype)
    return difference + read_noise * noise


def closed_loop_tune(
    device: ConductanceDevice,
    g_plus: torch.Tensor,
    g_minus: torch.Tensor,
    since_plus: torch.Tensor,
    since_minus: torch.Tensor,
    params_plus: torch.Tensor,
    params_minus: torch.Tensor,
    target: torch.Tensor,
    tolerance: float,
    max_iterations: int,
    generator: torch.Generator,
    read_noise: float = 0.0,
    rng_state: torch.Tensor | None = None,
) -> dict:
    """Program ``g_plus − g_minus`` to ``target`` by program-and-verify with SET pulses only.

    Every pair is read first (:func:`verify_read`); then, while its last read is more than
    ``tolerance`` from the target, it gets one SET pulse, on ``g⁺`` where that read was too low
    and on ``g⁻`` where it was too high, and is read again. An overshoot is corrected by growing
    the other device, since PCM cannot be depressed gradually (Cristiano et al. 2018, closed-loop
    tuning of the MSP).

    With ``read_noise > 0`` every read is noisy, as a real verify read is: tuning may stop on a
    read that is within the tolerance while the pair is not (stopping early), or keep pulsing a
    pair that already is (stopping late, or overshooting). ``converged`` is what the controller
    believes (its last read within the tolerance); ``within_tolerance`` is the truth. With
    ``read_noise == 0`` the two agree and no random number is drawn for the reads.

    Args:
        device: the device config of both devices.
        g_plus, g_minus, since_plus, since_minus: 1-d, one entry per pair (not modified).
        params_plus, params_minus: ``(len(device.PARAM_NAMES), n)``.
        target: desired difference, shape ``(n,)``.
        tolerance: acceptable ``|target − (g⁺ − g⁻)|``.
        max_iterations: program-and-verify iterations (one pulse each) at most.
        generator: pulse-to-pulse noise and read noise.
        read_noise: std of the Gaussian noise of each verify read, in the units of ``target``
            (0: exact reads).
        rng_state: a tile's compiled-kernel generator state (``tile.pulse_rng``). Given it, a
            device with a compiled tuning (:meth:`ConductanceDevice.compiled_tune_kernel`:
            :class:`PCMDevice`, :class:`~insitu.devices.JumpTableDevice`) on float32 CPU tensors is
            tuned in one compiled call on the compiled backend
            (:mod:`insitu.update.kernels.compiled_pairs`: pair by pair, pulse noise and read noise
            from that stream instead of ``generator``; the same tuning in distribution, other
            draws). Without it (or where it does not apply) the PyTorch loop below runs: the
            reference, and the path on CUDA.

    Returns:
        dict with the new ``g_plus``, ``g_minus``, ``since_plus``, ``since_minus``, the SET pulses
        fired per device ``pulses_plus``, ``pulses_minus``, ``converged`` (bool per pair: the last
        read was within the tolerance), ``within_tolerance`` (bool per pair: the true difference
        is), ``iterations`` (iterations used by the slowest pair) and ``reads`` (verify reads
        done, all pairs together: ``n`` initial reads plus one per pulse).
    """
    kernel = None if rng_state is None else _compiled_tune_kernel(
        device, (g_plus, g_minus, since_plus, since_minus, params_plus, params_minus, target)
    )
    if kernel is not None:
        return _compiled_closed_loop_tune(
            kernel, g_plus, g_minus, since_plus, since_minus, params_plus, params_minus, target, tolerance, max_iterations,
            read_noise, rng_state,
        )
    g_plus, g_minus = g_plus.clone(), g_minus.clone()
    since_plus, since_minus = since_plus.clone(), since_minus.clone()
    pulses_plus = torch.zeros_like(g_plus)
    pulses_minus = torch.zeros_like(g_minus)
    # The controller knows the pairs only through its reads: `read` holds each pair's last one.
    read = verify_read(g_plus - g_minus, read_noise, generator)  # a fresh tensor, written per pair below
    reads = target.numel()
    active = ((target - read).abs() > tolerance).nonzero().squeeze(1)
    iterations = 0
    while active.numel() and iterations < max_iterations:
        iterations += 1
        error = target[active] - read[active]
        raise_plus = error > 0
        # One SET pulse on each active pair, on the device whose growth shrinks the error.
        gp, gm = g_plus[active], g_minus[active]
        sp, sm = since_plus[active], since_minus[active]
        new_p = device.set_pulse(gp, sp, params_plus[:, active], generator)
        new_m = device.set_pulse(gm, sm, params_minus[:, active], generator)
        g_plus[active] = torch.where(raise_plus, new_p, gp)
        g_minus[active] = torch.where(raise_plus, gm, new_m)
        fired_p, fired_m = raise_plus.to(g_plus.dtype), (~raise_plus).to(g_plus.dtype)
        since_plus[active] = sp + fired_p
        since_minus[active] = sm + fired_m
        pulses_plus[active] += fired_p
        pulses_minus[active] += fired_m
        # Verify: read the pulsed pairs again.
        now = verify_read(g_plus[active] - g_minus[active], read_noise, generator)
        read[active] = now
        reads += active.numel()
        still = (target[active] - now).abs() > tolerance
        active = active[still]
    converged = (target - read).abs() <= tolerance
    within = converged if read_noise == 0 else (target - (g_plus - g_minus)).abs() <= tolerance
    return {
        "g_plus": g_plus, "g_minus": g_minus, "since_plus": since_plus, "since_minus": since_minus,
        "pulses_plus": pulses_plus, "pulses_minus": pulses_minus, "converged": converged,
        "within_tolerance": within, "iterations": iterations, "reads": reads,
    }


def _compiled_tune_kernel(device, tensors):
    """The compiled kernel :func:`closed_loop_tune` runs (the device's
    :meth:`~ConductanceDevice.compiled_tune_kernel`), or ``None`` where the PyTorch loop runs: a
    device without one, tensors other than float32 on the CPU, or a backend other than compiled."""
    if any(t.dtype != torch.float32 or not t.is_cpu or t.requires_grad for t in tensors):
        return None
    from ..update.kernels import select_backend

    if select_backend(tensors[0].device) != "compiled":
        return None
    return device.compiled_tune_kernel()


def _compiled_closed_loop_tune(kernel, g_plus, g_minus, since_plus, since_minus, params_plus, params_minus, target, tolerance,
                               max_iterations, read_noise, rng_state) -> dict:
    """:func:`closed_loop_tune` in the compiled ``kernel`` (its caller has checked that it applies)."""
    from ..update.kernels.rng_state import as_views

    g_plus, g_minus = g_plus.contiguous().clone(), g_minus.contiguous().clone()
    since_plus, since_minus = since_plus.contiguous().clone(), since_minus.contiguous().clone()
    pulses_plus, pulses_minus = torch.zeros_like(g_plus), torch.zeros_like(g_minus)
    converged = torch.zeros(g_plus.shape, dtype=torch.bool)
    within = torch.zeros(g_plus.shape, dtype=torch.bool)
    words, spare = as_views(rng_state)
    iterations, reads = kernel(
        g_plus.numpy(), g_minus.numpy(), since_plus.numpy(), since_minus.numpy(),
        params_plus.contiguous().numpy(), params_minus.contiguous().numpy(), target.contiguous().numpy(),
        float(tolerance), int(max_iterations), float(read_noise),
        pulses_plus.numpy(), pulses_minus.numpy(), converged.numpy(), within.numpy(), words, spare,
    )
    return {
        "g_plus": g_plus, "g_minus": g_minus, "since_plus": since_plus, "since_minus": since_minus,
        "pulses_plus": pulses_plus, "pulses_minus": pulses_minus, "converged": converged,
        "within_tolerance": within, "iterations": int(iterations), "reads": int(reads),
    }
