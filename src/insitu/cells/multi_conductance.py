"""Multiple conductances of varying significance: the two-pair PCM unit cell with transfer.

Cristiano, Giordano, Ambrogio, …, Burr 2018 (J. Appl. Phys. 124, 151901) and the experiment behind
it (Ambrogio et al., Nature 558, 60, 2018) store each weight in four devices:

    W = F · p · (G⁺ − G⁻) + (g⁺ − g⁻)                                              (1)

a most significant pair (MSP, ``G``) scaled by the gain ``F > 1`` and a least significant pair
(LSP, ``g``); ``p = ±1`` is the polarity of the MSP (below). The variant with one shared reference
per column replaces ``g⁻`` by ``g_shared`` of the weight's column line (Ambrogio 2018).

:class:`TwoPairPCMCell` is the cell config, used as ``TileConfig(cell=TwoPairPCMCell(...))`` on an
ordinary :class:`~insitu.tile.AnalogTile`; :class:`TwoPairPCM` is the cell module the tile builds.

* **Forward / backward** use the full ``W`` through :func:`insitu.io.analog_mvm`, as any tile.
* **Update (open-loop tuning, after every example)** goes to the LSP only. The stochastic pulse
  trains of Gokmen & Vlasov 2016 are drawn by :func:`insitu.update.pulse.pulsed_update` (the same
  code as the RPU tile); each device's coincidences are split by sign: positive ones fire SET
  pulses on ``g⁺``, negative ones on ``g⁻``, because a PCM device can only be potentiated. With a
  shared reference the single ``g`` must be bidirectional.
* **Transfer (every ``transfer_every`` examples)**: read ``W``, RESET the LSP, and program the MSP
  by closed-loop tuning (program and verify: one SET pulse on the device whose growth reduces the
  error, until ``|error| <= clt_tolerance`` or ``clt_max_iterations``) so that eq. (1) holds again.
  Pairs that cannot reach the target (a saturated device, or too many iterations) are RESET and
  programmed again from the bottom (a *refresh*); those that still fail are counted as failures.
  ``transfer_mode="array"`` (default) transfers the whole array at once; ``"columns"`` spreads it
  over the training, ``transfer_columns`` columns ``W[:, i]`` at a time in sequence, each column
  once per ``transfer_every`` examples on average (Ambrogio 2018 transfers column by column,
  interleaved with training). ``clt_read_noise`` makes every verify read noisy (Gaussian, from
  the tile's generator), so tuning stops on what it reads, not on the truth. With
  ``residual_tolerance > 0`` the just-RESET LSP is then tuned to what the MSP missed (an option
  beyond the paper: a deterministic MSP rounds every drift smaller than its tolerance away).
* **Polarity inversion** (Ambrogio 2018): at every transfer ``p`` flips, so the MSP device that
  held the positive part now holds the negative part. Each device of the pair thus alternately
  carries either sign of the weight, which spreads wear evenly over both (and, in Ambrogio's
  hardware, cancels fixed offsets of the LSP).
* **LSP saturation**: every ``saturation_check_every`` examples, weights whose LSP device is above
  ``refresh_threshold · g_max`` are transferred (those pairs alone), as an occasional RESET would
  be on hardware. Between checks a saturated device simply stops at its ``G_max``.
* **Simplifications**: the read of ``W`` that sets a transfer's target, and the check for a
  saturated device before tuning, are exact (only the verify reads carry ``clt_read_noise``); a
  RESET lands exactly at ``g_min``; each program-and-verify iteration fires one pulse; there is no
  drift.
* **Single pair** (``msp=None``): ``W = g⁺ − g⁻``, the classic PCM synapse (Burr et al. 2015);
  a saturated pair is refreshed: RESET both and program the weight back by closed-loop tuning.

**Endurance**: every SET pulse and RESET is counted per device (:meth:`TwoPairPCM.endurance` gives
maximum and mean per pair and the projected lifetime for a workload).

The cell owns its devices (``lsp``, ``msp``: conductance devices, not pulsed ``DeviceConfig``s):
the tile's ``device`` is not used and the tile draws no parameters for it (``tile.device_params``
is ``None``; the tile hands every update to the cell before any device logic of its own). The
tile's ``weight`` is the LSP pair, ``(2, out, in)`` = (``g⁺``, ``g⁻`` or ``g_shared``), the array
the gradient's pulses reach; the MSP pair and all counters are buffers of the cell.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..config import ConfigError, register_config
from ..devices.pcm import ConductanceDevice, PCMDevice, apply_depress_pulses, apply_set_pulses, closed_loop_tune
from ..update.kernels import select_backend
from ..update.pulse import pulsed_update
from .base import Cell, CellConfig

__all__ = ["TwoPairPCMCell", "TwoPairPCM", "closed_loop_tune", "PLANES", "MSP_P", "MSP_M", "LSP_P", "LSP_M"]

#: Planes of the per-device counters (4, out, in) (``pulses_since_reset``, ``set_pulses``,
#: ``resets``): MSP G⁺, MSP G⁻, LSP g⁺, LSP g⁻ (or g_shared). The tile's ``weight`` holds the two
#: LSP planes, the cell's ``msp_conductance`` the two MSP planes.
PLANES = ("msp_plus", "msp_minus", "lsp_plus", "lsp_minus")
MSP_P, MSP_M, LSP_P, LSP_M = range(4)
# The compiled LSP kernel's stand-in for the MSP planes of a single pair (never read there).
_NO_MSP = np.zeros((2, 1, 1), dtype=np.float32)

#: The fields of :class:`TwoPairPCMCell` (the rest of a legacy ``MultiConductanceConfig`` dict
#: belongs to the tile config).
CELL_FIELDS = (
    "lsp", "msp", "gain_factor", "lsp_reference", "transfer_every", "polarity_inversion", "clt_tolerance",
    "clt_max_iterations", "refresh_threshold", "saturation_check_every", "transfer_mode", "transfer_columns",
    "clt_read_noise", "lsp_pair_matched", "weight_scaling_omega", "residual_tolerance",
)

#: Values of :attr:`TwoPairPCMCell.transfer_mode`.
TRANSFER_MODES = ("array", "columns")


def _default_lsp() -> PCMDevice:
    return PCMDevice(g_max=0.5, dg=0.005, nonlinearity=0.0)


def _default_msp() -> PCMDevice:
    return PCMDevice(g_max=1.0, dg=0.02, nonlinearity=1.0)


@register_config
@dataclasses.dataclass
class TwoPairPCMCell(CellConfig):
    """A unit cell of two conductance pairs of different significance, eq. (1) of the module.

    Used as ``TileConfig(cell=TwoPairPCMCell(...), update=...)``: the tile's ``forward`` and
    ``backward`` (IO) and ``update`` (pulse trains of the LSP's open-loop writes) apply; its
    ``device`` is not used (the devices are ``lsp`` and ``msp``).

    Attributes:
        lsp: device of the least significant pair (a :class:`~insitu.devices.PCMDevice` or
            :class:`~insitu.devices.JumpTableDevice`); receives the open-loop updates.
        msp: device of the most significant pair, programmed by closed-loop tuning at transfers;
            ``None`` for a single-pair cell ``W = g⁺ − g⁻``.
        gain_factor: ``F`` of eq. (1), the significance of the MSP relative to the LSP (> 0;
            3 in Ambrogio et al. 2018).
        lsp_reference: ``"pair"`` (``g⁺ − g⁻``) or ``"shared"`` (``g − g_shared``, one reference
            per column line, at the middle of the LSP range; needs a bidirectional LSP).
        transfer_every: examples (rank-1 updates) between transfers into the MSP.
        polarity_inversion: flip the MSP sign convention at every transfer (Ambrogio 2018).
        clt_tolerance: closed-loop tuning stops when ``|W_target − W_programmed|`` is at most this
            (weight units).
        clt_max_iterations: program-and-verify iterations (one pulse each) before a pair counts as
            failed (it is then refreshed once, and reported if it fails again).
        refresh_threshold: a device above this fraction of its ``g_max`` counts as saturated.
        saturation_check_every: examples between checks of the LSP for saturated pairs; those
            found are transferred at once (single pair: refreshed).
        transfer_mode: how the periodic transfer is scheduled. ``"array"`` (default): the whole
            array at once, every ``transfer_every`` examples. ``"columns"``: column by column,
            interleaved with training as in Ambrogio et al. 2018: ``transfer_columns`` columns at a
            time, in sequence (wrapping around), one such step every
            ``transfer_columns · transfer_every / in_features`` examples on average, so that each
            column is transferred once every ``transfer_every`` examples (see
            :meth:`TwoPairPCM._due_columns`). A *column* is column ``i`` of the weight matrix
            ``(out, in)``, ``W[:, i]``: the ``out`` devices driven by input ``i`` (a "row line" in
            :class:`~insitu.tile.AnalogTile`'s wording). Why that one: a forward read of the
            one-hot input ``e_i`` gives the whole column at once, every output line integrating in
            parallel, so one read (and one verify step) covers a column; it is also how the peer's
            transfer and this library's Tiki-Taka cells read a column.
        transfer_columns: columns per step in ``"columns"`` mode (>= 1; more than the tile's
            ``in_features`` counts as all of them). Leave it at 1 in ``"array"`` mode.
        clt_read_noise: std of the Gaussian noise of every verify read of closed-loop tuning, in
            weight units like ``clt_tolerance`` (0: exact reads, the default). Tuning then stops
            on noisy reads, early or late, so a pair can end further from its target than the
            tolerance (counted as ``clt_accepted_out_of_tolerance``). Drawn from the tile's
            generator; for the MSP the read of ``F p (G⁺ − G⁻)`` carries this noise, i.e.
            ``clt_read_noise / F`` on the pair's conductance difference.
        lsp_pair_matched: give the two LSP devices of a weight the same drawn parameters (step,
            ``g_max``, jump): the device-to-device spread stays across weights but no weight's
            ``g⁺`` steps differently from its ``g⁻``, so the open-loop updates of a weight are
            symmetric up to pulse noise (False, the default: the two devices are drawn
            independently). An experiment's knob, not a device: it separates the pair's mismatch,
            an up/down imbalance per weight, from the spread itself (the imbalance is the critical
            spec of Gokmen & Vlasov 2016).
        weight_scaling_omega: map the network's weights onto the devices with a digital gain per
            array (the name and rule of aihwkit's mapping parameter). 0 (the default): none, the
            network's weight is eq. (1) in device units. ``ω > 0``: when weights are programmed
            (the layer's initial weights), the array's gain becomes ``s = max|W_target| / ω``, so
            the largest initial weight sits at ``ω`` in device units, and the network computes
            with ``s · W`` (eq. 1 times ``s``). The open-loop update writes ``ΔW / s`` in device
            units (the pulse trains use ``lr / s``), so the network's learning rule is unchanged;
            the transfer, closed-loop tuning and its tolerance work in device units, where they
            act on hardware. Why: a layer with many inputs has small weights (784 inputs:
            ``|W| ≲ 0.04`` at initialisation), below the MSP's programming step (``F · dg``) and
            the tuning tolerance unless the periphery scales them up. The gain is folded into
            the weights the products see, which is exact only with noise-free, unbounded outputs,
            so it needs them (``forward`` and ``backward`` without ``out_noise``, ``out_bound``,
            ``out_bits``, ``w_noise`` or ``ir_drop``).
        residual_tolerance: 0 (the default): a transfer leaves the LSP at RESET, as the paper's
            does. ``> 0``: after the MSP is tuned, the just-RESET LSP pair is tuned by closed loop
            to the part of the target the MSP missed (``W_target − W``), until it is within this
            tolerance (weight units; the same iteration cap and read noise). Why: closed-loop
            tuning stops anywhere within its tolerance, so whatever the LSP gathered since the
            last transfer that is smaller than the tolerance is lost, unless the MSP's pulses
            are noisy enough to land at a random point of the window (measured: a noise-free
            linear MSP keeps none of a drift below a third of its step, the preset's noisy one
            about 30 %, ``docs/reproductions/cristiano-2018-pcm.md``). The same holds for this
            second tuning, so the tolerance should be small against the drift between two
            transfers, and for a noise-free LSP at least half its step ``dg`` (or the tuning
            cycles). Not part of Cristiano et al. 2018 or Ambrogio et al. 2018; needs an ``msp``
            and ``lsp_reference='pair'``.
    """

    uses_tile_device = False  # the cell's own conductance devices, not the tile's `device`

    lsp: ConductanceDevice = dataclasses.field(default_factory=_default_lsp)
    msp: ConductanceDevice | None = dataclasses.field(default_factory=_default_msp)
    gain_factor: float = 3.0
    lsp_reference: str = "pair"
    transfer_every: int = 1000
    polarity_inversion: bool = True
    clt_tolerance: float = 0.02
    clt_max_iterations: int = 100
    refresh_threshold: float = 0.9
    saturation_check_every: int = 100
    transfer_mode: str = "array"
    transfer_columns: int = 1
    clt_read_noise: float = 0.0
    lsp_pair_matched: bool = False
    weight_scaling_omega: float = 0.0
    residual_tolerance: float = 0.0

    def validate(self) -> None:
        if not isinstance(self.lsp, ConductanceDevice):
            self._fail("lsp", f"must be a conductance device (PCMDevice or JumpTableDevice), got {type(self.lsp).__name__}.")
        if self.msp is not None and not isinstance(self.msp, ConductanceDevice):
            self._fail("msp", f"must be a conductance device (PCMDevice or JumpTableDevice) or None, got {type(self.msp).__name__}.")
        self._check_finite("gain_factor")
        if self.gain_factor <= 0:
            self._fail("gain_factor", "F must be > 0: it is the significance of the high pair relative to the low pair (e.g. 3).")
        self._check_choice("lsp_reference", ("pair", "shared"))
        if self.lsp_reference == "shared":
            if not self.lsp.bidirectional:
                self._fail(
                    "lsp_reference",
                    f"'shared' needs a bidirectional LSP device (a JumpTableDevice with mean_down/std_down): "
                    f"{type(self.lsp).__name__} is SET-only, so g − g_shared could never decrease. Use 'pair'.",
                )
            if self.msp is None:
                self._fail("lsp_reference", "'shared' needs an msp (the single-pair cell is g⁺ − g⁻).")
        n = self.transfer_every
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            self._fail("transfer_every", "must be an integer >= 1: the number of training examples between transfers (e.g. 1000).")
        if not isinstance(self.polarity_inversion, bool):
            self._fail("polarity_inversion", "must be true or false.")
        self._check_positive("clt_tolerance")
        n = self.clt_max_iterations
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            self._fail("clt_max_iterations", "must be an integer >= 1 (program-and-verify pulses per transfer, e.g. 100).")
        self._check_finite("refresh_threshold")
        if not 0 < self.refresh_threshold <= 1:
            self._fail("refresh_threshold", "must lie in (0, 1]: the fraction of g_max at which a device counts as saturated.")
        n = self.saturation_check_every
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            self._fail("saturation_check_every", "must be an integer >= 1 (examples between saturation checks, e.g. 100).")
        self._validate_transfer_schedule()
        self._check_non_negative("clt_read_noise")
        if not isinstance(self.lsp_pair_matched, bool):
            self._fail("lsp_pair_matched", "must be true or false.")
        self._check_non_negative("weight_scaling_omega")
        self._check_non_negative("residual_tolerance")
        if self.residual_tolerance > 0 and (self.msp is None or self.lsp_reference != "pair"):
            self._fail(
                "residual_tolerance",
                "needs an msp and lsp_reference='pair': the residual of the MSP's tuning goes onto the low pair "
                "g⁺ − g⁻ (a single pair has no MSP; with a shared reference the LSP is not reset to zero).",
            )

    def _validate_transfer_schedule(self) -> None:
        self._check_choice("transfer_mode", TRANSFER_MODES)
        n = self.transfer_columns
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            self._fail("transfer_columns", "must be an integer >= 1: the columns transferred per step in transfer_mode='columns'.")
        if self.transfer_mode == "array" and n != 1:
            self._fail("transfer_columns", "applies only with transfer_mode='columns' (the 'array' mode transfers every column at once); leave it at 1 or set transfer_mode='columns'.")
        if self.transfer_mode == "columns" and self.msp is None:
            self._fail("transfer_mode", "'columns' needs an msp: a single pair (msp=None) has nothing to transfer into (it is only refreshed when saturated).")

    def check_tile(self, config) -> None:
        """The tile fields this cell relies on: one rank-1 write per example, exact coincidences."""
        if config.algorithm.method != "sgd":
            config._fail(
                "algorithm",
                "must be the default UpdateAlgorithmConfig(method='sgd') with a TwoPairPCMCell: the low pair is written "
                "once per example and the transfer interval counts examples; low-rank updates are not modelled for this cell.",
            )
        update = config.update
        if update.pulse_type != "stochastic" or update.mode not in ("sequential", "summed"):
            config._fail(
                "update",
                f"needs pulse_type='stochastic' with mode 'sequential' or 'summed' with a TwoPairPCMCell (got "
                f"{update.pulse_type!r}, {update.mode!r}): PCM devices take whole SET pulses, so the exact coincidence "
                "counts are needed.",
            )
        if self.weight_scaling_omega > 0:
            for role in ("forward", "backward"):
                io = getattr(config, role)
                if io.out_noise or io.out_bound is not None or io.out_bits is not None or io.w_noise or io.ir_drop:
                    config._fail(
                        role,
                        f"must have noise-free, unbounded outputs (out_noise=0, out_bound=None, out_bits=None, "
                        f"w_noise=0, ir_drop=0) with weight_scaling_omega={self.weight_scaling_omega}: the cell folds "
                        "its digital gain into the weights the products see, which would scale the output noise and "
                        "bounds with it. Set weight_scaling_omega=0 to keep these IO effects.",
                    )

    def weight_shape(self, out_features: int, in_features: int) -> tuple[int, ...]:
        return (2, out_features, in_features)

    def build(self, tile) -> "TwoPairPCM":
        return TwoPairPCM(self, tile)


class _CoincidenceCounter:
    """Stands in for a device model in :func:`pulsed_update`: records coincidences, moves nothing.

    ``pulsed_update`` is given, as its "weights", a ``(out, in, 1)`` tensor holding each
    cross-point's flat index. Where it would step devices it hands this model a block of those
    indices with the signed coincidence counts (sequential mode: :meth:`apply_signed_pulses`, once
    per example) or the whole array with the up and down counts (summed mode:
    :meth:`apply_mixed`). The model records ``(flat indices, n_up, n_down)`` of the devices that
    received coincidences, in the order the array would apply them, and returns the block unchanged.
    """

    def __init__(self):
        self.records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def apply_signed_pulses(self, index_block, signed_counts, params, generator, counters=None):
        if counters is not None:
            counters.add_coincidences(signed_counts.abs().sum())
        hit = signed_counts != 0
        counts = signed_counts[hit]
        self.records.append((index_block[hit].long(), counts.clamp_min(0), counts.neg().clamp_min(0)))
        return index_block

    def apply_mixed(self, index_block, half_total, half_signed, params, generator, count_variance=1.0):
        # Summed mode: T = n_up + n_down = 2·half_total and n_down − n_up = 2·half_signed, exact integers.
        hit = half_total > 0
        total, signed = half_total[hit], half_signed[hit]
        self.records.append((index_block[hit].long(), (total - signed).round_(), (total + signed).round_()))
        return index_block


class TwoPairPCM(Cell):
    """The module of :class:`TwoPairPCMCell`, eq. (1) of the module.

    State (buffers, saved in the tile's ``state_dict`` under ``cell.``), beside the tile's
    ``weight`` (the LSP conductances ``(2, out, in)``: ``g⁺``, ``g⁻``):
        msp_conductance: the MSP conductances ``(2, out, in)`` (``G⁺``, ``G⁻``); ``None`` for a
            single pair.
        msp_params, lsp_params: device-to-device parameters ``(P, 2, out, in)`` (drawn from the
            tile's generator when the tile is built, MSP first).
        pulses_since_reset: SET pulses per device since its last RESET ``(4, out, in)`` (:data:`PLANES`).
        polarity: sign ``p`` of the MSP per cross-point ``(out, in)``.
        set_pulses, resets: endurance counters per device ``(4, out, in)`` (:data:`PLANES`).

    ``weight_scale`` (a float, in the tile's extra state) is the array's digital gain ``s``
    (``weight_scaling_omega``; 1 without it).
    """

    def __init__(self, config: TwoPairPCMCell, tile):
        super().__init__(config)
        weight = tile.weight
        device, dtype = weight.device, weight.dtype
        shape = (tile.out_features, tile.in_features)
        pair_shape = (2, *shape)
        # Draw order fixed (MSP, then LSP) so that a seed fixes the devices.
        msp_params = None if config.msp is None else config.msp.draw_parameters(pair_shape, tile.generator, device, dtype)
        self.register_buffer("msp_params", msp_params)
        lsp_params = config.lsp.draw_parameters(pair_shape, tile.generator, device, dtype)
        if config.lsp_pair_matched:  # after the draws, so that everything else keeps its draws
            lsp_params[:, 1] = lsp_params[:, 0]
        self.register_buffer("lsp_params", lsp_params)
        msp = None
        if config.msp is not None:
            msp = torch.full(pair_shape, config.msp.reset_conductance, device=device, dtype=dtype)
        self.register_buffer("msp_conductance", msp)
        self.register_buffer("pulses_since_reset", torch.zeros((4, *shape), device=device, dtype=dtype))
        self.register_buffer("polarity", torch.ones(shape, device=device, dtype=dtype))
        self.register_buffer("set_pulses", torch.zeros((4, *shape), device=device, dtype=torch.float64))
        self.register_buffer("resets", torch.zeros((4, *shape), device=device, dtype=torch.float64))
        # Each cross-point's flat index, exact in the float type (see _CoincidenceCounter).
        index_dtype = torch.float32 if shape[0] * shape[1] < 2**24 else torch.float64
        flat_index = torch.arange(shape[0] * shape[1], device=device, dtype=index_dtype)
        self.register_buffer("_flat_index", flat_index.view(*shape, 1), persistent=False)
        with torch.no_grad():
            level = self._shared_level() if config.lsp_reference == "shared" else config.lsp.reset_conductance
            weight.fill_(level)
        self.stats = _fresh_stats()
        self.examples = 0  # rank-1 updates (examples) the LSP has taken: the endurance report's unit
        self.examples_since_transfer = 0  # "array" mode only
        self.examples_since_check = 0
        # "columns" mode: the next column to transfer, and the credit towards the next step (in
        # units of columns · examples, see _due_columns). Both saved, so a resume is bit-identical.
        self.next_column = 0
        self.column_credit = 0
        self.weight_scale = 1.0  # the array's digital gain s (weight_scaling_omega), set by program()
        self._cached_weights: torch.Tensor | None = None  # eq. (1) in device units
        self._lsp_constants = None  # the compiled LSP response's constants (built at its first use)

    def _shared_level(self) -> float:
        lsp = self.config.lsp
        return 0.5 * (lsp.reset_conductance + lsp.nominal_g_max)

    def _planes(self, tile) -> tuple:
        """Flat views ``(out·in,)`` of the four conductance planes in :data:`PLANES` order (the
        MSP ones ``None`` for a single pair); writing through them writes the state."""
        lsp = tile.weight.data.view(2, -1)
        if self.msp_conductance is None:
            return (None, None, lsp[0], lsp[1])
        msp = self.msp_conductance.view(2, -1)
        return (msp[0], msp[1], lsp[0], lsp[1])

    def conductances(self, tile) -> torch.Tensor:
        """A copy of all four conductance planes, ``(4, out, in)`` in :data:`PLANES` order (the
        MSP planes zero for a single pair): the layout the former ``MultiConductanceTile.weight`` had."""
        lsp = tile.weight.detach()
        msp = self.msp_conductance if self.msp_conductance is not None else torch.zeros_like(lsp)
        return torch.cat([msp, lsp])

    def invalidate(self) -> None:
        """Forget the cached ``W`` (after writing the conductances from outside the cell)."""
        self._cached_weights = None

    # -- weights ------------------------------------------------------------------------------
    def effective_weights(self, tile) -> torch.Tensor:
        """The network's weights ``s · W``, shape ``(out, in)``: eq. (1) times the array's gain
        ``s`` (``weight_scaling_omega``; without it ``s = 1`` and this is :meth:`device_weights`)."""
        w = self.device_weights(tile)
        return w if self.weight_scale == 1.0 else w * self.weight_scale

    def device_weights(self, tile) -> torch.Tensor:
        """``W = F p (G⁺ − G⁻) + (g⁺ − g⁻)`` in device units, shape ``(out, in)`` (cached until
        the devices change): what a read of the array gives, and the target of a transfer."""
        if self._cached_weights is None:
            g = tile.weight.detach()
            w = g[0] - g[1]
            if self.config.msp is not None:
                msp = self.msp_conductance
                # The arithmetic of _refresh_cached (and of the compiled LSP kernel), not addcmul (which
                # may fuse the multiply-add): a W refreshed cross-point by cross-point equals this one
                # bit for bit, so a tile restored from a checkpoint computes the same W.
                w = w + self.config.gain_factor * self.polarity * (msp[0] - msp[1])
            self._cached_weights = w
        return self._cached_weights

    def _refresh_cached(self, tile, idx: torch.Tensor) -> None:
        """Recompute the cached ``W`` at flat cross-points ``idx`` only (after an LSP update)."""
        if self._cached_weights is None:
            return
        g = self._planes(tile)
        w = g[LSP_P][idx] - g[LSP_M][idx]
        if self.config.msp is not None:
            w = w + self.config.gain_factor * self.polarity.view(-1)[idx] * (g[MSP_P][idx] - g[MSP_M][idx])
        self._cached_weights.view(-1)[idx] = w

    @torch.no_grad()
    def program(self, tile, target: torch.Tensor) -> None:
        """Program target weights ``(out, in)``: every device RESET, then a transfer of the target.

        With an MSP the weights go there by closed-loop tuning (the LSP stays at its reset level);
        a single pair is tuned directly. Targets out of range leave failed pairs (``stats``). With
        ``weight_scaling_omega`` the array's gain is set first, ``s = max|target| / ω`` (1 for an
        all-zero target), and the devices are programmed to ``target / s``.
        """
        omega = self.config.weight_scaling_omega
        if omega > 0:
            largest = float(target.abs().max()) if target.numel() else 0.0
            self.weight_scale = largest / omega if largest > 0 else 1.0
            target = target / self.weight_scale
        self._cached_weights = None
        everything = torch.arange(self._flat_index.numel(), device=self._flat_index.device)
        self._reset_devices(tile, everything, (MSP_P, MSP_M) if self.config.msp is not None else ())
        self.transfer(tile, everything, target=target.reshape(-1), flip_polarity=False)

    # -- update -------------------------------------------------------------------------------
    @torch.no_grad()
    def apply_writes(self, tile, x: torch.Tensor, d: torch.Tensor, lr: float) -> None:
        """Open-loop update of the LSP from the rank-1 writes ``(x, δ)``; transfers when due."""
        config, lsp = self.config, self.config.lsp
        # The pulse trains and coincidences of Gokmen & Vlasov 2016 (one LSP SET pulse per
        # coincidence): in the compiled kernel on the compiled backend, else drawn by the RPU tile's
        # torch engine from the tile's generator, a counter recording them per device.
        # With a gain s the network's ΔW is written as ΔW / s in device units (weight_scaling_omega).
        lr_devices = lr if self.weight_scale == 1.0 else lr / self.weight_scale
        if not self._compiled_lsp_writes(tile, x, d, lr_devices):
            counter = _CoincidenceCounter()
            pulsed_update(self._flat_index, None, counter, x, d, lr_devices, lsp.nominal_step, tile.config.update, tile.generator, tile.counters)
            for idx, n_up, n_down in counter.records:
                if idx.numel():
                    self._pulse_lsp(tile, idx, n_up, n_down)
        examples = x.shape[0]
        self.examples += examples
        self.examples_since_check += examples
        if self.examples_since_check >= config.saturation_check_every:
            self.examples_since_check = 0
            self.transfer_saturated(tile)
        if config.transfer_mode == "columns":
            steps, columns = self._due_columns(examples)
            if steps:
                self._transfer_next_columns(tile, columns)
                self.stats["transfers"] += steps
        else:
            self.examples_since_transfer += examples
            if self.examples_since_transfer >= config.transfer_every:
                self.examples_since_transfer = 0
                if config.msp is not None:  # a single pair has nothing to transfer into
                    self.transfer(tile, torch.arange(self._flat_index.numel(), device=self._flat_index.device))
                    self.stats["transfers"] += 1
                    self.stats["columns_transferred"] += self._flat_index.shape[1]

    def _compiled_lsp_writes(self, tile, x: torch.Tensor, d: torch.Tensor, lr: float) -> bool:
        """The open-loop LSP writes of ``x``, ``δ`` in the compiled sequential kernel (True if they
        ran there): on the compiled backend, for the stochastic ``sequential`` mode, a pair of
        :class:`PCMDevice` LSP devices (``lsp_reference="pair"``) and float32 state. Everything
        else takes the torch path below (the reference). The trains and the SET pulses' noise then
        come from the tile's kernel stream (``tile.pulse_rng``) instead of its torch generator: the
        same distribution, other draws (``tests/test_pcm_cell.py`` compares the two paths). The
        kernel keeps the cached ``W`` current at each cross-point it moves."""
        config, update = self.config, tile.config.update
        if update.pulse_type != "stochastic" or update.mode != "sequential" or config.lsp_reference != "pair":
            return False
        if type(config.lsp) is not PCMDevice or not tile.weight.is_cpu or select_backend(tile.weight.device) != "compiled":
            return False
        msp = self.msp_conductance
        state = (tile.weight, self.pulses_since_reset, self.lsp_params, self.polarity) + (() if msp is None else (msp,))
        if any(t.dtype != torch.float32 for t in state):
            return False
        from ..update.kernels.compiled_pairs import pcm_cell_constants, pcm_cell_lsp_response
        from ..update.pulse import compiled_state_update

        if self._lsp_constants is None:
            self._lsp_constants = pcm_cell_constants(config.lsp, config.gain_factor, msp is not None)
        weights = self.device_weights(tile)  # the cached W: the kernel writes each moved cross-point's new value
        views = (
            tile.weight.detach().numpy(), self.pulses_since_reset.numpy(), self.set_pulses.numpy(), self.lsp_params.numpy(),
            _NO_MSP if msp is None else msp.numpy(), self.polarity.numpy(), self._lsp_constants,
        )
        compiled_state_update(
            weights.unsqueeze(-1).numpy(), views, pcm_cell_lsp_response, x, d, lr, config.lsp.nominal_step, update,
            tile.counters, tile.pulse_rng, tile._kernel_cache,
        )
        return True

    def _pulse_lsp(self, tile, idx: torch.Tensor, n_up: torch.Tensor, n_down: torch.Tensor) -> None:
        """Fire the SET pulses of one example on the LSP devices at flat cross-points ``idx``.

        ``n_up`` potentiates ``g⁺`` (the weight grows), ``n_down`` potentiates ``g⁻``; with a shared
        reference ``g`` is potentiated ``n_up`` times and depressed ``n_down`` times.
        """
        lsp = self.config.lsp
        if self.config.lsp_reference == "shared":
            g = self._planes(tile)[LSP_P]
            since = self.pulses_since_reset.view(4, -1)[LSP_P]
            p = self.lsp_params.view(self.lsp_params.shape[0], 2, -1)[:, 0, idx]
            new = apply_set_pulses(lsp, g[idx], since[idx], n_up, p, tile.generator)[0]
            g[idx] = apply_depress_pulses(lsp, new, n_down, p, tile.generator)
            self.set_pulses.view(4, -1)[LSP_P].index_add_(0, idx, (n_up + n_down).to(self.set_pulses.dtype))
        else:
            # Within one example a device's coincidences all have one sign (sequential mode), so
            # each cross-point pulses one device: g⁺ for n_up, g⁻ for n_down. Summed mode may give
            # a cross-point both; then its g⁻ pulses are applied in a second pass.
            n_devices = idx.new_tensor(self._flat_index.numel())
            minus = n_down > n_up
            device_index = torch.where(minus, idx + n_devices, idx)  # into the (2·N) flattened LSP planes
            count = torch.where(minus, n_down, n_up)
            self._set_lsp_devices(tile, device_index, count)
            both = ((n_up > 0) & (n_down > 0)).nonzero().squeeze(1)
            if both.numel():
                second = torch.where(minus[both], idx[both], idx[both] + n_devices)
                self._set_lsp_devices(tile, second, torch.where(minus[both], n_up[both], n_down[both]))
        self._refresh_cached(tile, idx)

    def _set_lsp_devices(self, tile, device_index: torch.Tensor, count: torch.Tensor) -> None:
        """``count`` SET pulses on LSP devices given by index into the flattened (g⁺, g⁻) planes."""
        lsp = self.config.lsp
        g = tile.weight.data.view(-1)
        # The LSP planes of the counters are contiguous in memory, so the reshaped views write through.
        since = self.pulses_since_reset.view(4, -1)[LSP_P:LSP_M + 1].reshape(-1)
        sets = self.set_pulses.view(4, -1)[LSP_P:LSP_M + 1].reshape(-1)
        params = self.lsp_params.view(self.lsp_params.shape[0], -1)
        new, new_since = apply_set_pulses(lsp, g[device_index], since[device_index], count, params[:, device_index], tile.generator)
        g[device_index] = new
        since[device_index] = new_since
        sets.index_add_(0, device_index, count.to(sets.dtype))

    @torch.no_grad()
    def transfer_saturated(self, tile) -> None:
        """Transfer (or, for a single pair, refresh) every weight whose LSP has saturated.

        A pair counts as saturated when a device is above ``refresh_threshold · g_max`` (with a
        shared reference: when ``g`` is that close to either end of its range). Checked every
        ``saturation_check_every`` examples, as a periodic read of the array would.
        """
        config, lsp = self.config, self.config.lsp
        g = self._planes(tile)
        params = self.lsp_params.view(self.lsp_params.shape[0], 2, -1)
        threshold = config.refresh_threshold
        top = lsp.g_max_plane(params[:, 0]) * threshold
        if config.lsp_reference == "shared":
            bottom = lsp.reset_conductance + (1 - threshold) * (lsp.g_max_plane(params[:, 0]) - lsp.reset_conductance)
            saturated = (g[LSP_P] >= top) | (g[LSP_P] <= bottom)
        else:
            saturated = (g[LSP_P] >= top) | (g[LSP_M] >= lsp.g_max_plane(params[:, 1]) * threshold)
        full = saturated.nonzero().squeeze(1)
        if full.numel():
            self.stats["lsp_saturations"] += int(full.numel())
            self.transfer(tile, full)

    # -- the column-by-column schedule ("columns" mode) ------------------------------------------
    def _due_columns(self, examples: int) -> tuple[int, int]:
        """``(steps, columns)`` of the column transfer that fall due after ``examples`` more examples.

        Every example earns ``in_features`` credits and a step of ``k = transfer_columns`` columns
        costs ``k · transfer_every`` of them, so a step falls due every ``k · transfer_every /
        in_features`` examples on average. The count is kept in integers (``column_credit``): it
        never drifts, and over any run of ``transfer_every`` examples each column is transferred
        once, give or take one step at either end. With ``in_features > k · transfer_every`` more
        than one step falls due per example; they are done together.
        """
        n_in = self._flat_index.shape[1]
        k = min(self.config.transfer_columns, n_in)
        cost = k * self.config.transfer_every
        self.column_credit += examples * n_in
        steps = self.column_credit // cost
        self.column_credit -= steps * cost
        return steps, steps * k

    def _column_indices(self, columns: torch.Tensor) -> torch.Tensor:
        """Flat cross-point indices ``(out · len(columns),)`` of the columns ``W[:, columns]``,
        output-major (the order of a whole-array transfer when ``columns`` is ``0, 1, …``)."""
        n_out, n_in = self._flat_index.shape[:2]
        rows = torch.arange(n_out, device=columns.device).unsqueeze(1)
        return (rows * n_in + columns.unsqueeze(0)).reshape(-1)

    def _transfer_next_columns(self, tile, count: int) -> None:
        """Transfer the next ``count`` columns in sequence, wrapping around; advances ``next_column``.

        A call moves at most every column once (more than ``in_features`` due columns are done
        in passes), so the transfer never sees one cross-point twice.
        """
        n_in = self._flat_index.shape[1]
        device = self._flat_index.device
        while count > 0:
            chunk = min(count, n_in)
            columns = (self.next_column + torch.arange(chunk, device=device)) % n_in
            self.transfer(tile, self._column_indices(columns))
            self.next_column = (self.next_column + chunk) % n_in
            self.stats["columns_transferred"] += chunk
            count -= chunk

    # -- transfer and closed-loop tuning --------------------------------------------------------
    def _reset_devices(self, tile, idx: torch.Tensor, planes) -> None:
        """RESET the given planes at flat cross-points ``idx`` (counted where a device was not at reset)."""
        g = self._planes(tile)
        since = self.pulses_since_reset.view(4, -1)
        resets = self.resets.view(4, -1)
        for plane in planes:
            device = self.config.msp if plane in (MSP_P, MSP_M) else self.config.lsp
            level = device.reset_conductance
            if plane == LSP_P and self.config.lsp_reference == "shared":
                # Equalising g with the column's reference (a capacitor is discharged to it).
                level_t = g[LSP_M][idx]
                moved = g[plane][idx] != level_t
                g[plane][idx] = level_t
            else:
                moved = (g[plane][idx] != level) | (since[plane, idx] > 0)
                g[plane][idx] = level
            since[plane, idx] = 0
            resets[plane].index_add_(0, idx, moved.to(resets.dtype))

    @torch.no_grad()
    def transfer(self, tile, idx: torch.Tensor, target: torch.Tensor | None = None, flip_polarity: bool | None = None) -> None:
        """Move the weights at flat cross-points ``idx`` into the MSP (or refresh a single pair).

        ``target`` (weights at ``idx``, device units) defaults to the present ``W``
        (:meth:`device_weights`). The LSP is RESET, then the MSP is programmed by
        :func:`closed_loop_tune` from its present state; pairs whose growing device is saturated,
        or that fail, are RESET and tuned again from the bottom (refresh).
        """
        config = self.config
        if target is None:
            target = self.device_weights(tile).reshape(-1)[idx].clone()
        lsp_planes = (LSP_P,) if config.lsp_reference == "shared" else (LSP_P, LSP_M)
        self._reset_devices(tile, idx, lsp_planes)
        if config.msp is None:
            # Single pair: the weight goes back onto the same (now RESET) pair.
            self._tune(tile, idx, target, (LSP_P, LSP_M), config.lsp, self.lsp_params, config.clt_tolerance, config.clt_read_noise)
        else:
            if flip_polarity is None:
                flip_polarity = config.polarity_inversion
            polarity = self.polarity.view(-1)
            if flip_polarity:
                polarity[idx] = -polarity[idx]
            lsp_offset = torch.zeros_like(target)
            if config.lsp_reference == "shared":
                g = self._planes(tile)
                lsp_offset = g[LSP_P][idx] - g[LSP_M][idx]
            diff_target = polarity[idx] * (target - lsp_offset) / config.gain_factor
            # MSP units: W = F p (G⁺ − G⁻) + …, so a weight tolerance (and read noise) of t is t / F on G⁺ − G⁻.
            F = config.gain_factor
            self._tune(tile, idx, diff_target, (MSP_P, MSP_M), config.msp, self.msp_params, config.clt_tolerance / F, config.clt_read_noise / F)
            if config.residual_tolerance > 0:
                # What the MSP missed, onto the RESET low pair (exact read of W, as the target's).
                self._cached_weights = None
                residual = target - self.device_weights(tile).reshape(-1)[idx]
                self._tune(tile, idx, residual, (LSP_P, LSP_M), config.lsp, self.lsp_params, config.residual_tolerance, config.clt_read_noise)
        self._cached_weights = None

    def _tune(self, tile, idx, diff_target, planes, device, params, tolerance, read_noise=0.0) -> None:
        """Closed-loop tuning of the pair ``planes`` at ``idx`` to ``diff_target``, with one refresh.

        ``tolerance`` and ``read_noise`` (std of each verify read) are in the pair's conductance
        units. The check for a saturated growing device before tuning reads exactly (a
        simplification: only the verify reads of the tuning carry ``read_noise``); the decision to
        refresh a failed pair uses the noisy reads, as the hardware's controller would.
        """
        config = self.config
        g = self._planes(tile)
        since = self.pulses_since_reset.view(4, -1)
        sets = self.set_pulses.view(4, -1)
        pair_params = params.view(params.shape[0], 2, -1)
        plus, minus = planes
        # A pair whose device must grow but sits near saturation is refreshed before tuning.
        need = diff_target - (g[plus][idx] - g[minus][idx])
        grower_g = torch.where(need > 0, g[plus][idx], g[minus][idx])
        grower_max = torch.where(need > 0, device.g_max_plane(pair_params[:, 0, idx]), device.g_max_plane(pair_params[:, 1, idx]))
        stale = idx[(grower_g >= config.refresh_threshold * grower_max) & (need.abs() > tolerance)]
        if stale.numel():
            self._reset_devices(tile, stale, planes)
            self.stats["refreshes"] += int(stale.numel())
        failed_positions = None
        for attempt in range(2):
            where = idx if failed_positions is None else idx[failed_positions]
            goal = diff_target if failed_positions is None else diff_target[failed_positions]
            result = closed_loop_tune(
                device, g[plus][where], g[minus][where], since[plus, where], since[minus, where],
                pair_params[:, 0, where], pair_params[:, 1, where], goal, tolerance, config.clt_max_iterations, tile.generator,
                read_noise=read_noise, rng_state=tile.pulse_rng,
            )
            g[plus][where], g[minus][where] = result["g_plus"], result["g_minus"]
            since[plus, where], since[minus, where] = result["since_plus"], result["since_minus"]
            sets[plus].index_add_(0, where, result["pulses_plus"].to(sets.dtype))
            sets[minus].index_add_(0, where, result["pulses_minus"].to(sets.dtype))
            self.stats["clt_pulses"] += float(result["pulses_plus"].sum() + result["pulses_minus"].sum())
            self.stats["clt_iterations_max"] = max(self.stats["clt_iterations_max"], result["iterations"])
            self.stats["clt_verify_reads"] += result["reads"]
            if read_noise > 0:  # exact reads never accept a pair outside the tolerance
                accepted_wrongly = result["converged"] & ~result["within_tolerance"]
                self.stats["clt_accepted_out_of_tolerance"] += int(accepted_wrongly.sum())
            bad = (~result["converged"]).nonzero().squeeze(1)
            if bad.numel() == 0:
                break
            if attempt == 0:
                # Refresh: RESET both devices and program again from the bottom of the range.
                failed_positions = bad
                self._reset_devices(tile, where[bad], planes)
                self.stats["refreshes"] += int(bad.numel())
            else:
                self.stats["clt_failures"] += int(bad.numel())
        self.stats["programmed_pairs"] += int(idx.numel())

    # -- endurance -------------------------------------------------------------------------------
    def endurance(self, examples_per_day: float | None = None, endurance_cycles: float = 1e8) -> dict:
        """Writes per device so far, per pair, and the projected lifetime.

        Args:
            examples_per_day: training examples this tile sees per day; with it the lifetime is
                projected as ``endurance_cycles / (max writes per device per example · examples_per_day)``.
            endurance_cycles: SET/RESET cycles a device survives (PCM: 1e6–1e9 reported; the
                default 1e8 is this project's placeholder, not a number from the paper).

        Returns:
            ``{"examples": n, "msp": {...}, "lsp": {...}}`` where each pair has max/mean SET pulses
            and RESETs per device, writes (SET + RESET) per device per example (max and mean), and,
            if ``examples_per_day`` is given, ``lifetime_days_reset_limited`` (RESETs limit a PCM
            cell's life) and ``lifetime_days_pulse_limited`` (every write counted).
        """
        examples = max(self.examples, 1)
        out: dict = {"examples": self.examples, "endurance_cycles": endurance_cycles}
        pairs = {"lsp": (LSP_P, LSP_M) if self.config.lsp_reference == "pair" else (LSP_P,)}
        if self.config.msp is not None:
            pairs["msp"] = (MSP_P, MSP_M)
        for name, planes in pairs.items():
            sets = self.set_pulses[list(planes)]
            resets = self.resets[list(planes)]
            writes = sets + resets
            entry = {
                "set_pulses_max": float(sets.max()), "set_pulses_mean": float(sets.mean()),
                "resets_max": float(resets.max()), "resets_mean": float(resets.mean()),
                "writes_per_example_max": float(writes.max()) / examples,
                "writes_per_example_mean": float(writes.mean()) / examples,
                "resets_per_example_max": float(resets.max()) / examples,
            }
            if examples_per_day is not None:
                per_day_resets = entry["resets_per_example_max"] * examples_per_day
                per_day_writes = entry["writes_per_example_max"] * examples_per_day
                entry["lifetime_days_reset_limited"] = endurance_cycles / per_day_resets if per_day_resets > 0 else math.inf
                entry["lifetime_days_pulse_limited"] = endurance_cycles / per_day_writes if per_day_writes > 0 else math.inf
            out[name] = entry
        return out

    def counter_report(self) -> dict:
        """Transfer statistics and endurance summary (added to the training results)."""
        return {"transfer": dict(self.stats), "endurance": self.endurance()}

    # -- state ----------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {
            "stats": dict(self.stats),
            "examples": self.examples,
            "examples_since_transfer": self.examples_since_transfer,
            "examples_since_check": self.examples_since_check,
            "next_column": self.next_column,
            "column_credit": self.column_credit,
            "weight_scale": self.weight_scale,
        }

    def load_extra_state(self, state: dict) -> None:
        # A state saved before a counter existed starts that counter at 0.
        self.stats = {**_fresh_stats(), **state["stats"]}
        self.examples = int(state["examples"])
        self.examples_since_transfer = int(state["examples_since_transfer"])
        self.examples_since_check = int(state["examples_since_check"])
        self.next_column = int(state.get("next_column", 0))
        self.column_credit = int(state.get("column_credit", 0))
        self.weight_scale = float(state.get("weight_scale", 1.0))
        self._cached_weights = None

    def convert_saved_state(self, state_dict: dict, prefix: str) -> None:
        """Rewrite, in place, a state saved by the former ``MultiConductanceTile`` into this layout.

        That tile kept all four conductance planes in its ``weight`` ``(4, out, in)`` and its
        buffers and counters at the tile's level; the LSP planes are now the tile's ``weight``,
        the rest the cell's. ``prefix`` is the tile's.
        """
        if prefix + "lsp_params" not in state_dict:
            return
        weight = state_dict.pop(prefix + "weight")
        state_dict[prefix + "weight"] = weight[LSP_P:LSP_M + 1].clone()
        if self.config.msp is not None:
            state_dict[prefix + "cell.msp_conductance"] = weight[MSP_P:MSP_M + 1].clone()
        for name in ("msp_params", "lsp_params", "pulses_since_reset", "polarity", "set_pulses", "resets"):
            if prefix + name in state_dict:
                state_dict[prefix + "cell." + name] = state_dict.pop(prefix + name)
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict) and "cell" not in extra:
            extra = dict(extra)
            cell = {name: extra.pop(name) for name in ("stats", "examples_since_transfer", "examples_since_check")}
            cell["examples"] = int(extra["counters"]["rank1_updates"])
            extra["cell"] = cell
            state_dict[prefix + "_extra_state"] = extra

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._cached_weights = None

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._cached_weights = None
        return self

    def extra_repr(self) -> str:
        config = self.config
        msp = "none" if config.msp is None else type(config.msp).__name__
        text = f"msp={msp}, lsp={type(config.lsp).__name__}, F={config.gain_factor}, transfer_every={config.transfer_every}"
        if config.transfer_mode == "columns":
            text += f", transfer_mode=columns, transfer_columns={config.transfer_columns}"
        if config.clt_read_noise:
            text += f", clt_read_noise={config.clt_read_noise}"
        if config.residual_tolerance:
            text += f", residual_tolerance={config.residual_tolerance}"
        return text


def _fresh_stats() -> dict:
    """The transfer counters of :meth:`TwoPairPCM.counter_report`.

    ``transfers``: scheduled transfer steps (a whole array, or ``transfer_columns`` columns);
    ``columns_transferred``: columns moved by them; ``programmed_pairs``: pairs tuned (scheduled,
    saturation-triggered and ``program``); ``refreshes``, ``clt_failures``: pairs RESET and tuned
    again, and those that still missed; ``clt_pulses``, ``clt_iterations_max``: tuning pulses, and
    the longest tuning; ``clt_verify_reads``: verify reads of the tuning (one per pair to start,
    one after every pulse); ``clt_accepted_out_of_tolerance``: pairs whose noisy last read was
    within the tolerance while the pair was not (0 without ``clt_read_noise``); ``lsp_saturations``.
    """
    return {
        "transfers": 0, "programmed_pairs": 0, "refreshes": 0, "clt_failures": 0, "clt_pulses": 0.0,
        "clt_iterations_max": 0, "lsp_saturations": 0, "columns_transferred": 0, "clt_verify_reads": 0,
        "clt_accepted_out_of_tolerance": 0,
    }


def legacy_tile_dict(data: dict) -> dict:
    """A ``TileConfig`` dict from one saved as the former ``MultiConductanceConfig`` (its cell
    fields were the tile config's own; they now belong to ``cell: {type: TwoPairPCMCell}``)."""
    data = {k: v for k, v in data.items() if k != "type"}
    if data.get("cell") is not None:
        raise ConfigError(
            "MultiConductanceConfig with a 'cell': the PCM pairs are now the cell itself. Write the config as a "
            "TileConfig whose cell is {type: TwoPairPCMCell, lsp: ..., msp: ..., gain_factor: ..., ...}."
        )
    cell = {"type": "TwoPairPCMCell"}
    for name in CELL_FIELDS:
        if name in data:
            cell[name] = data.pop(name)
    data["cell"] = cell
    return data
