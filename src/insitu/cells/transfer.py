"""Tiki-Taka and its successors: two arrays per weight, a fast one that learns and a slow one that
holds the weight (``docs/cells.md``; facts in ``shared/reference/algorithms.md`` §3-§5).

* :class:`TikiTakaCell` (TTv1, Gokmen & Haensch 2020): the gradient's pulses go to the fast array
  ``A``; every ``transfer_every`` updates one column of ``A`` is read by an analog forward pass of
  a one-hot vector and written into the slow array ``C`` by a pulsed rank-1 update; the weight is
  ``W = γ A + C``.
* :class:`TikiTakaV2Cell` (TTv2, Gokmen 2021): the column read goes into a digital buffer ``H``
  first; only where ``|H|`` crosses a threshold does ``C`` get whole pulses (and ``H`` forgets).
* :class:`ChoppedTikiTakaCell` (c-TTv2, Rasch et al. 2024): ``A`` learns through choppers, signs
  ``c_in`` (per input) and ``c_out`` (per output) that flip now and then, so that ``A``'s
  device-dependent drift (towards its symmetry point) averages out of ``H`` while the gradient,
  de-chopped, accumulates.
* :class:`AGADCell` (Rasch et al. 2024): chopped, with a reference estimated on the fly (the mean
  of ``A``'s reads before the last chopper flip) subtracted from each read, so ``A``'s symmetry
  point need not be programmed into a reference array.

The tile's ``weight`` is ``A`` (the array the optimizer's writes reach); the cell keeps ``C``, its
device parameters, ``H``, the choppers and the AGAD means as buffers (saved with the tile).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..config import register_config
from ..devices import DeviceConfig
from ..io import IOConfig, analog_mvm
from ..update import PulseUpdateConfig, UpdateCounters
from .base import (
    Cell, CellConfig, KernelCache, draw_array, require_pulses, require_bool, require_positive_int,
    require_probability, write_pulses, write_rank1,
)

__all__ = ["TikiTakaCell", "TikiTakaV2Cell", "ChoppedTikiTakaCell", "AGADCell", "TransferCell"]

TRANSFER_UNITS = ("batch", "sample")
COLUMN_ORDERS = ("sequential", "random")


def _transfer_read_io() -> IOConfig:
    # aihwkit's default transfer read (IOParameters: 7-bit DAC, 9-bit ADC, out_noise 0.06,
    # out_bound 12; algorithms.md §3), with noise and bound management off as the peer forces.
    return IOConfig(inp_bits=7, out_noise=0.06, out_bound=12.0, out_bits=9)


@register_config
@dataclasses.dataclass
class TikiTakaCell(CellConfig):
    """Tiki-Taka v1 (Gokmen & Haensch 2020): ``W = gamma A + C``.

    Attributes:
        gamma: weight of the fast array in the visible weight (0: ``A`` is hidden, ``W = C``).
        transfer_every: a transfer after every this many units of ``transfer_unit``.
        transfer_unit: ``"batch"`` (optimizer steps that reached the tile) or ``"sample"``
            (rank-1 updates: samples, or image patches of a convolution).
        columns_per_transfer: columns of ``A`` read (and written to ``C``) per transfer.
        column_order: ``"sequential"`` (cycling, wrapping) or ``"random"`` (a random start each
            transfer).
        fast_lr: learning rate of ``A``; times the optimizer's rate if ``scale_fast_lr``.
        scale_fast_lr: multiply ``fast_lr`` by the optimizer's learning rate.
        transfer_lr: rate of the transfer write ``C[:, j] += transfer_lr · A[:, j]``; times the
            optimizer's rate if ``scale_transfer_lr``.
        scale_transfer_lr: multiply ``transfer_lr`` by the optimizer's learning rate.
        reset_prob: probability that a column of ``A`` is reset to zero right after it was read.
        transfer_io: IO of the column read (a forward pass of a one-hot vector). Noise and bound
            management are refused here: the read of one column must not be rescaled.
        transfer_update: pulse settings of the write into ``C``.
        slow_device: the device of ``C``; ``None``: the tile's ``device`` (which is ``A``'s).
    """

    gamma: float = 0.0
    transfer_every: int = 1
    transfer_unit: str = "batch"
    columns_per_transfer: int = 1
    column_order: str = "sequential"
    fast_lr: float = 1.0
    scale_fast_lr: bool = True
    transfer_lr: float = 1.0
    scale_transfer_lr: bool = True
    reset_prob: float = 0.0
    transfer_io: IOConfig = dataclasses.field(default_factory=_transfer_read_io)
    transfer_update: PulseUpdateConfig = dataclasses.field(
        default_factory=lambda: PulseUpdateConfig(bl=31, update_management=True, dynamic_bl=True)
    )
    slow_device: DeviceConfig | None = None

    def validate(self) -> None:
        self._check_non_negative("gamma")
        self._check_positive("fast_lr", "transfer_lr")
        require_positive_int(self, "transfer_every")
        require_positive_int(self, "columns_per_transfer")
        self._check_choice("transfer_unit", TRANSFER_UNITS)
        self._check_choice("column_order", COLUMN_ORDERS)
        require_bool(self, "scale_fast_lr", "scale_transfer_lr")
        require_probability(self, "reset_prob")
        if not isinstance(self.transfer_io, IOConfig):
            self._fail("transfer_io", "must be an IOConfig.")
        if self.transfer_io.noise_management != "none" or self.transfer_io.bound_management != "none":
            self._fail(
                "transfer_io",
                "the column read runs with noise and bound management off (a one-hot read must not be "
                "rescaled); set noise_management='none' and bound_management='none'.",
            )
        if not isinstance(self.transfer_update, PulseUpdateConfig):
            self._fail("transfer_update", "must be a PulseUpdateConfig.")
        if self.slow_device is not None and not isinstance(self.slow_device, DeviceConfig):
            self._fail("slow_device", "must be a DeviceConfig or None (the tile's device).")

    def build(self, tile) -> "TransferCell":
        return TransferCell(self, tile)


@register_config
@dataclasses.dataclass
class TikiTakaV2Cell(TikiTakaCell):
    """TTv2 (Gokmen 2021): a digital buffer ``H`` between the column read and ``C``.

    Each read ``v = A[:, j]`` adds ``λ v`` to ``H[:, j]`` with ``λ = transfer rate / granularity``;
    where ``|H| >= 1`` the slow array gets ``n = trunc(H)`` (at most ``max_pulses``) whole pulses
    and the buffer forgets. Defaults follow the peer's TTv2 (``algorithms.md`` §4b, §5.1 with the
    choppers off).

    Attributes:
        buffer_granularity: the threshold, in steps of ``A``'s device (``H`` counts in units of
            ``buffer_granularity · dw_min(A)``).
        auto_granularity: if > 0, the granularity is multiplied by
            ``auto_granularity / (in_features · transfer_every)`` (the peer's ``auto_granularity``).
        momentum: what a buffer element keeps after it fired (``forget_buffer``), or the share of
            the written pulses it keeps (otherwise).
        forget_buffer: ``H ← momentum · H`` where it fired (True), else ``H ← H − (1 − momentum) n``.
        max_pulses: the most pulses one element of ``C`` gets per transfer (the peer's transfer BL).
        auto_scale: ``A``'s rate becomes ``fast_lr · BL · dw_min(A) / (m_x m_d)`` with running means
            of ``max|x|`` and ``max|δ|`` (momentum ``auto_momentum``), times the optimizer's rate if
            ``scale_fast_lr``: the gradient's largest product writes ``fast_lr · BL`` pulses.
        auto_momentum: momentum of those running means.
    """

    transfer_unit: str = "sample"
    scale_fast_lr: bool = False
    fast_lr: float = 0.5
    buffer_granularity: float = 1.0
    auto_granularity: float = 0.0
    momentum: float = 0.0
    forget_buffer: bool = True
    max_pulses: int = 1
    auto_scale: bool = True
    auto_momentum: float = 0.99

    def validate(self) -> None:
        super().validate()
        self._check_positive("buffer_granularity")
        self._check_non_negative("auto_granularity")
        require_probability(self, "momentum", "auto_momentum")
        require_bool(self, "forget_buffer", "auto_scale")
        require_positive_int(self, "max_pulses")

    def build(self, tile) -> "TransferCell":
        require_pulses(type(self).__name__, self.slow_device or tile.config.device, "slow")
        require_pulses(type(self).__name__, tile.config.device, "fast (the tile's)")
        return TransferCell(self, tile)


@register_config
@dataclasses.dataclass
class ChoppedTikiTakaCell(TikiTakaV2Cell):
    """Chopped TTv2 (Rasch et al. 2024): TTv2 with sign choppers on ``A``'s inputs and outputs.

    The peer reads one column per transfer here; ``columns_per_transfer > 1`` (read in order,
    each column with its own chopper) is allowed as an extension: a wide layer otherwise visits
    each column only once every ``in_features`` transfers.

    Attributes:
        in_chop_prob: per column read, the probability that its input chopper flips
            (``in_chop_random``); or, regularly, a flip every ``max(ceil(1 / p), 2)`` passes.
        in_chop_random: random (True) or regular (False) input chopper flips.
        out_chop_prob: after each full pass over the columns, each output chopper flips with this
            probability.
    """

    in_chop_prob: float = 0.1
    in_chop_random: bool = True
    out_chop_prob: float = 0.0

    def validate(self) -> None:
        super().validate()
        require_probability(self, "in_chop_prob", "out_chop_prob")
        require_bool(self, "in_chop_random")
        for field, ok, why in (
            ("column_order", self.column_order == "sequential", "must be 'sequential' (choppers count passes)"),
            ("reset_prob", self.reset_prob == 0, "must be 0 (a chopped fast array is never reset)"),
        ):
            if not ok:
                self._fail(field, f"{why} for {type(self).__name__}.")

    @property
    def chopper_period(self) -> int:
        """Passes per regular chopper period ``N = max(ceil(1 / in_chop_prob), 2)``."""
        return max(math.ceil(1.0 / self.in_chop_prob), 2) if self.in_chop_prob > 0 else 0


@register_config
@dataclasses.dataclass
class AGADCell(ChoppedTikiTakaCell):
    """AGAD (Rasch et al. 2024): chopped TTv2 whose reads are taken relative to a reference
    estimated on the fly: per element a running mean ``m`` of the reads and a reference ``p``, set
    to ``m`` when the column's chopper has just flipped; ``H`` accumulates ``c (v − p)``. ``C`` is
    first written after one chopper period (a warm-up). The peer documents a running-std gate that
    its code does not compute (``algorithms.md`` §5.2); it is not modelled here either.

    Attributes:
        tail_weighting: the running mean's rate is ``β = min(tail_weighting / N, 1)``.
        buffer_cap: without ``forget_buffer``, ``|H|`` is capped at ``buffer_cap · max_pulses``
            (0: no cap).
    """

    in_chop_random: bool = False
    tail_weighting: float = 5.0
    buffer_cap: float = 0.0

    def validate(self) -> None:
        super().validate()
        self._check_positive("tail_weighting")
        self._check_non_negative("buffer_cap")
        if self.in_chop_prob == 0:
            self._fail("in_chop_prob", "must be > 0 for AGAD: the reference is re-estimated at each chopper flip.")


class TransferCell(Cell):
    """The module of every Tiki-Taka cell (one class: the variants differ by a few lines each,
    marked with the config they belong to)."""

    def __init__(self, config: TikiTakaCell, tile):
        super().__init__(config)
        out_f, in_f = tile.out_features, tile.in_features
        self.buffered = isinstance(config, TikiTakaV2Cell)
        self.chopped = isinstance(config, ChoppedTikiTakaCell)
        self.agad = isinstance(config, AGADCell)
        slow = config.slow_device or tile.config.device
        self.slow_device = slow
        self.slow_model = slow.model()
        weight, params = draw_array(slow, (out_f, in_f), tile)
        self.register_buffer("slow_weight", weight)
        self.register_buffer("slow_params", params)
        like = tile.weight.detach()
        if self.buffered:
            self.register_buffer("buffer", torch.zeros_like(like))
        if self.chopped:
            self.register_buffer("in_chopper", torch.ones(in_f, dtype=like.dtype, device=like.device))
            self.register_buffer("out_chopper", torch.ones(out_f, dtype=like.dtype, device=like.device))
        if self.agad:
            self.register_buffer("running_mean", torch.zeros_like(like))
            self.register_buffer("reference", torch.zeros_like(like))
            self.register_buffer("flipped", torch.zeros(in_f, dtype=torch.bool, device=like.device))
        self.transfer_counters = UpdateCounters()
        self._cache_slow = KernelCache()
        self.since = 0  # units since the last transfer
        self.column = 0  # next column to read
        self.passes = 0  # full passes over the columns
        self.reads = 0  # columns read
        self.running_x: float | None = None  # auto_scale's running means of max|x|, max|δ|
        self.running_d: float | None = None

    #: Plain numbers of the schedule, set without nn.Module's attribute checks (several a rank-1
    #: write: at batch 1 and for convolutions, one per image patch, those checks were a tenth of the step).
    _PLAIN = frozenset({"since", "column", "passes", "reads", "running_x", "running_d", "_wrapped"})

    def __setattr__(self, name, value):
        if name in TransferCell._PLAIN:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- what the tile delegates -----------------------------------------------------------
    def effective_weights(self, tile) -> torch.Tensor:
        gamma = self.config.gamma
        if gamma == 0:
            return self.slow_weight
        fast = tile.weight.detach()
        if self.chopped:  # A holds c_out c_in × gradient: de-chop it (over any leading replica axis)
            fast = fast * self.out_chopper.unsqueeze(-1) * self.in_chopper.unsqueeze(-2)
        return self.slow_weight + gamma * fast

    @torch.no_grad()
    def program(self, tile, target: torch.Tensor) -> None:
        """``C`` takes the target (clipped to its devices), ``A`` its zero, the buffers are emptied."""
        self.slow_weight.copy_(self.slow_model.clip(target, self.slow_params))
        tile.weight.copy_(tile.device_model.clip(torch.zeros_like(target), tile.device_params))
        for name in ("buffer", "running_mean", "reference"):
            if hasattr(self, name):
                getattr(self, name).zero_()

    @torch.no_grad()
    def apply_writes(self, tile, x: torch.Tensor, d: torch.Tensor, lr: float) -> None:
        config = self.config
        fast_lr = self._fast_lr(tile, x, d, lr)
        every = config.transfer_every
        if config.transfer_unit == "batch":
            self._write_fast(tile, x, d, fast_lr)
            self.since += 1
            if self.since >= every:
                self.since = 0
                self._transfer(tile, lr)
            return
        start, rows = 0, x.shape[0]
        while start < rows:  # A's rank-1 writes in order, a transfer at each scheduled one
            take = min(rows - start, every - self.since)
            self._write_fast(tile, x[start:start + take], d[start:start + take], fast_lr)
            start += take
            self.since += take
            if self.since >= every:
                self.since = 0
                self._transfer(tile, lr)

    # -- the fast array -----------------------------------------------------------------------
    def _fast_lr(self, tile, x, d, lr) -> float:
        config = self.config
        rate = config.fast_lr * lr if config.scale_fast_lr else config.fast_lr
        if not (self.buffered and config.auto_scale):
            return rate
        # Running means of max|x| and max|δ| (τ = 1 − momentum per update; the first seeds them).
        tau = 1.0 - config.auto_momentum
        for name, values in (("running_x", x), ("running_d", d)):
            new = float(values.abs().amax(dim=1).mean())
            if new > 0:
                old = getattr(self, name)
                setattr(self, name, new if old is None else old + tau * (new - old))
        if not self.running_x or not self.running_d:
            return rate
        bl = tile.config.update.bl
        return rate * bl * tile.config.device.nominal_step / (self.running_x * self.running_d)

    def _write_fast(self, tile, x, d, lr) -> None:
        if self.chopped:
            buffers = self._buffers
            x = x * buffers["in_chopper"]
            d = d * buffers["out_chopper"]
        write_rank1(
            tile.weight, tile.device_params, tile.device_model, x, d, lr, tile.config.device, tile.config.update, tile, tile.counters, tile._kernel_cache,
        )

    # -- transfers ------------------------------------------------------------------------------
    def _next_columns(self, tile) -> torch.Tensor:
        config, n_in = self.config, tile.in_features
        n = min(config.columns_per_transfer, n_in)
        if config.column_order == "random":
            start = int(torch.randint(0, n_in, (1,), generator=tile.generator, device=tile.generator.device))
        else:
            start = self.column
        table = self.__dict__.get("_column_table")
        if table is None or table.shape != (n_in, n):
            # Row ``s``: the ``n`` columns read from start ``s`` (made once, indexed every transfer).
            table = (torch.arange(n).unsqueeze(0) + torch.arange(n_in).unsqueeze(1)) % n_in
            object.__setattr__(self, "_column_table", table)
        columns = table[start]
        self.column = (start + n) % n_in
        if config.column_order == "random":  # a "pass" is in_features columns read
            self._wrapped = (self.reads + n) // n_in > self.reads // n_in
        else:
            self._wrapped = start + n >= n_in
        return columns

    @torch.no_grad()
    def _transfer(self, tile, lr: float) -> None:
        config = self.config
        columns = self._next_columns(tile)
        self.reads += len(columns)
        if self.buffered and self._compiled_transfer(tile, columns, lr):
            self._finish_transfer(tile)
            return
        weight = tile.weight.detach()
        onehot = torch.zeros(len(columns), tile.in_features, dtype=weight.dtype, device=weight.device)
        onehot[torch.arange(len(columns)), columns.to(weight.device)] = 1.0
        # The read: an analog forward pass of e_j gives column j of A, with the read's own IO.
        reads = analog_mvm(onehot, weight.t(), config.transfer_io, tile.generator)  # (n, out)
        rate = config.transfer_lr * lr if config.scale_transfer_lr else config.transfer_lr
        if not self.buffered:
            # C[:, j] += rate · v_j as a pulsed rank-1 write (x = e_j, δ = −v_j: the engine writes −lr δ xᵀ).
            write_rank1(
                self.slow_weight, self.slow_params, self.slow_model, onehot, -reads, rate, self.slow_device,
                config.transfer_update, tile, self.transfer_counters, self._cache_slow,
            )
            if config.reset_prob > 0:
                self._reset_columns(tile, columns)
        else:
            for k, j in enumerate(columns.tolist()):
                self._buffered_column(tile, j, reads[k], rate)
        self._finish_transfer(tile)

    def _finish_transfer(self, tile) -> None:
        if self._wrapped:
            self._end_of_pass(tile)

    def _compiled_transfer(self, tile, columns: torch.Tensor, lr: float) -> bool:
        """The buffered transfer in the compiled CPU kernel
        (:mod:`insitu.update.kernels.compiled_transfer`); False (nothing done) where it does not
        apply: another backend, a slow device without a compiled response, or a read with IO
        effects the kernel does not model (anything beyond output noise, bound and ADC)."""
        from ..update.kernels import select_backend

        if select_backend(tile.weight.device) != "compiled" or self.slow_params is None:
            return False
        plan = self._cache_slow.get("transfer")
        key = (self.slow_params.data_ptr(), self.slow_params._version, self.slow_model)
        if plan is None or plan[0] != key:
            plan = _transfer_plan(key, self.config.transfer_io, self.slow_model, self.slow_params, tile.weight.dtype)
            self._cache_slow["transfer"] = plan
        _, kernel, packed, x_read, io = plan
        if kernel is None:
            return False
        chopped, agad = self.chopped, self.agad
        views = self._state_views(tile)
        config = self.config
        rate = config.transfer_lr * lr if config.scale_transfer_lr else config.transfer_lr
        period = config.chopper_period if chopped else 0
        cap = config.buffer_cap * config.max_pulses if agad else 0.0
        fast, slow, buffer, in_chopper, out_chopper, running_mean, reference, flipped, words, spare = views
        pulses = kernel(
            fast, slow, packed, buffer, columns.numpy(), in_chopper, out_chopper, running_mean, reference, flipped,
            x_read, io[0], io[1], io[2], rate / self._granularity(tile), config.max_pulses, config.momentum,
            config.forget_buffer, chopped, agad,
            min(config.tail_weighting / period, 1.0) if agad else 0.0, cap,
            not agad or self.passes > period,
            config.in_chop_prob if chopped else 0.0, config.in_chop_random if chopped else False,
            chopped and period > 0 and (self.passes + 1) % period == 0,
            float(self.slow_model.c2c), words, spare,
        )
        self.transfer_counters.add_pulses(pulses)
        self.transfer_counters.add_coincidences(pulses)
        return True

    def _state_views(self, tile) -> tuple:
        """Numpy views of the state the compiled transfer reads and writes, kept while the tensors
        stay where they are (a transfer per image patch: rebuilding a dozen views each time cost
        more than the kernel)."""
        from ..update.kernels.rng_state import as_views

        buffers = self._buffers  # a dict lookup each (nn.Module's attribute lookup costs a microsecond)
        key = (tile.weight.data_ptr(), tile.pulse_rng.data_ptr()) + tuple(
            t.data_ptr() for t in buffers.values() if t is not None
        )
        cached = self._cache_slow.get("views")
        if cached is not None and cached[0] == key:
            return cached[1]
        dtype = tile.weight.dtype
        empty2 = torch.zeros(0, 0, dtype=dtype).numpy()
        empty1 = torch.zeros(0, dtype=dtype).numpy()
        empty_flags = torch.zeros(0, dtype=torch.bool).numpy()
        chopped, agad = self.chopped, self.agad
        views = (
            tile.weight.detach().numpy(), self.slow_weight.numpy(), self.buffer.numpy(),
            self.in_chopper.numpy() if chopped else empty1, self.out_chopper.numpy() if chopped else empty1,
            self.running_mean.numpy() if agad else empty2, self.reference.numpy() if agad else empty2,
            self.flipped.numpy() if agad else empty_flags, *as_views(tile.pulse_rng),
        )
        self._cache_slow["views"] = (key, views)
        return views

    def _reset_columns(self, tile, columns) -> None:
        chosen = torch.rand(len(columns), generator=tile.generator, device=tile.generator.device) < self.config.reset_prob
        if chosen.any():
            cols = columns[chosen.cpu()].to(tile.weight.device)
            zero = torch.zeros_like(tile.weight[:, cols])
            params = None if tile.device_params is None else tile.device_params[:, :, cols]
            tile.weight.data[:, cols] = tile.device_model.clip(zero, params)

    def _granularity(self, tile) -> float:
        """One unit of ``H``, in weight units of ``A``."""
        config = self.config
        unit = config.buffer_granularity * tile.config.device.nominal_step
        if config.auto_granularity > 0:
            unit *= config.auto_granularity / (tile.in_features * config.transfer_every)
        return unit

    def _buffered_column(self, tile, j: int, read: torch.Tensor, rate: float) -> None:
        config = self.config
        if self.agad:
            if bool(self.flipped[j]):  # the chopper flipped at the previous read: a new reference
                self.reference[:, j] = self.running_mean[:, j]
            delta = read - self.reference[:, j]
        else:
            delta = read
        if self.chopped:  # de-chop: H accumulates the gradient's sign, A's drift alternates
            delta = delta * (self.in_chopper[j] * self.out_chopper)
        h = self.buffer[:, j] + (rate / self._granularity(tile)) * delta
        pulses = h.trunc().clamp_(-config.max_pulses, config.max_pulses)
        fired = pulses != 0
        if config.forget_buffer:
            h = torch.where(fired, config.momentum * h, h)
        else:
            h = h - (1.0 - config.momentum) * pulses
            if self.agad and config.buffer_cap > 0:
                cap = config.buffer_cap * config.max_pulses
                h = h.clamp(-cap, cap)
        self.buffer[:, j] = h
        if self.agad:
            beta = min(config.tail_weighting / config.chopper_period, 1.0)
            self.running_mean[:, j] = (1 - beta) * self.running_mean[:, j] + beta * read
        warm = not self.agad or self.passes > config.chopper_period
        if warm and bool(fired.any()):
            params = None if self.slow_params is None else self.slow_params[:, :, j]
            self.slow_weight[:, j] = write_pulses(
                self.slow_weight[:, j], params, self.slow_model, pulses, tile.generator, self.transfer_counters,
            )
        if self.chopped and config.in_chop_prob > 0:
            if config.in_chop_random:
                flip = float(torch.rand((), generator=tile.generator, device=tile.generator.device)) < config.in_chop_prob
            else:
                flip = (self.passes + 1) % config.chopper_period == 0
            if flip:
                self.in_chopper[j] = -self.in_chopper[j]
            if self.agad:
                self.flipped[j] = flip

    def _end_of_pass(self, tile) -> None:
        self.passes += 1
        if self.chopped and self.config.out_chop_prob > 0:
            flips = torch.rand(tile.out_features, generator=tile.generator, device=tile.generator.device) < self.config.out_chop_prob
            self.out_chopper[flips.to(self.out_chopper.device)] *= -1

    # -- state and counters ------------------------------------------------------------------------
    def forget_statistics(self) -> None:
        self.running_x = self.running_d = None

    def extra_state(self) -> dict:
        return {
            "since": self.since, "column": self.column, "passes": self.passes, "reads": self.reads,
            "running_x": self.running_x, "running_d": self.running_d,
            "transfer_counters": self.transfer_counters.to_dict(),
        }

    def load_extra_state(self, state: dict) -> None:
        for name in ("since", "column", "passes", "reads", "running_x", "running_d"):
            setattr(self, name, state[name])
        self.transfer_counters = UpdateCounters(**state["transfer_counters"])
        self._cache_slow = KernelCache()

    def counter_report(self) -> dict:
        c = self.transfer_counters
        return {
            "transfer_reads": self.reads,
            "transfer_pulses": c.pulses,
            "transfer_coincidences": c.coincidences,
            "transfer_rank1_updates": c.rank1_updates,
        }

    def extra_repr(self) -> str:
        return f"{type(self.config).__name__}, slow_device={type(self.slow_device).__name__}"


def _transfer_plan(key, io: IOConfig, slow_model, slow_params: torch.Tensor, dtype: torch.dtype):
    """What the compiled transfer needs beyond the state: the kernel (None if it does not apply),
    the slow device's packed parameters, the one-hot input after the DAC, and the output stage
    ``(σ, bound or 0, ADC levels or 0)``."""
    respond = slow_model.compiled_response()
    simple_read = io.is_perfect or (
        io.inp_noise == 0 and io.w_noise == 0 and io.out_noise_asymmetry == 0 and io.ir_drop == 0
        and not io.inp_sto_round and not io.out_sto_round
    )
    if respond is None or not simple_read:
        return (key, None, None, None, None)
    from ..io import _quantize
    from ..update.kernels.compiled_transfer import transfer_kernel

    one = torch.ones(1, dtype=dtype)
    if io.is_perfect:
        stage = (0.0, 0.0, 0)
    else:
        if io.inp_bound is not None:
            one = one.clamp(-io.inp_bound, io.inp_bound)
            if io.inp_bits is not None:
                one = _quantize(one, io.inp_bound, io.inp_bits)
        levels = 2 ** (io.out_bits - 1) - 1 if io.out_bits is not None else 0
        stage = (float(io.out_noise), float(io.out_bound or 0.0), levels)
    packed = slow_model.pack_for_kernel(slow_params.unsqueeze(-1), dtype).numpy()
    return (key, transfer_kernel(respond), packed, float(one), stage)
