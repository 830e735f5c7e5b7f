"""The sequential pulse update of several tiles in one set of tensor operations.

At batch 1 the pulse update of one layer is a few dozen small tensor operations whose cost is
dispatch, not arithmetic (``docs/benchmarks.md``). The rank-1 updates of the layers of a network
are independent of each other (each touches its own devices), so :class:`AnalogSGD` hands all
tiles that share a pulse configuration to one :class:`FusedPulseUpdate`, which draws the pulse
trains of every row and column line of all of them at once, finds the lines that fired, counts
coincidences tile by tile (one small product each) and applies the device response to all fired
devices of all tiles in one pass, as ``torch.optim``'s ``foreach`` implementations do for
ordinary parameters.

This is the engine's multi-tensor layout (in the manner of ``torch.optim``'s ``foreach``
implementations): what is computed is exactly the sequential update of
:mod:`insitu.update.engine` (Gokmen & Vlasov 2016, Eq. 2-3), with the engine's pulse scales
(:func:`~insitu.update.engine.pulse_scales`: ``Cx``, ``Cd``, update management) and the device
model's response (:meth:`~insitu.devices.DeviceModel.apply_signed_pulses`); only the bookkeeping
of lines and blocks is this layout's own. Bernoulli trains of ``BL`` slots with probabilities
``Cx|x_i|`` and ``Cd|δ_j|`` clipped to 1, each coincidence one device step (up where
``sign(x_i) ≠ sign(δ_j)``), cycle-to-cycle noise per step, each device's own bounds; samples of a
batch one after another. The random numbers are drawn in a
different order than the per-tile path, so the two agree in distribution, not draw for draw
(tested in ``tests/test_fused_update.py``). All draws of a group come from the generator of its
first tile, so a seed still fixes the run and a restored model continues identically.

Covered: :class:`~insitu.tile.AnalogTile` with a device whose capabilities declare it
``fusable`` (every stateless pulsed family; tiles share an update when their device models have
the same :meth:`~insitu.devices.DeviceModel.structure` and spread), one device per cross-point,
stochastic pulses in ``sequential`` mode, the ``sgd`` update algorithm, with or without update
management (each tile rebalanced by its own ``max|δ| / max|x|``), no
dynamic BL, no connection mask. Device effects (:mod:`insitu.devices.effects`) run after the
pulses of each tile, as in :meth:`AnalogTile.update`. Any other tile takes the per-tile path,
unchanged.
"""

from __future__ import annotations

import torch

from .engine import pulse_scales


__all__ = ["FusedPulseUpdate", "can_fuse", "fusion_key"]


def can_fuse(tile) -> bool:
    """Whether ``tile``'s update can be computed by :class:`FusedPulseUpdate`."""
    from ..tile import AnalogTile

    if type(tile) is not AnalogTile or tile.device_params is None or tile.weight.dim() != 2 or tile.cell is not None:
        return False
    if tile.connection_mask is not None:
        return False
    config = tile.config
    update = config.update
    if update.pulse_type != "stochastic" or update.mode != "sequential":
        return False
    if update.dynamic_bl or config.algorithm.method != "sgd":
        return False
    # The device declares whether its response is the one this path computes; one c2c per tile.
    capabilities = config.device.capabilities
    if capabilities.per_device_state:  # the fused path packs a copy of the parameters
        return False
    return capabilities.fusable and not torch.is_tensor(tile.device_model.c2c)


def fusion_key(tile, rows: int) -> tuple:
    """Tiles with equal keys can share one fused update (``rows``: rank-1 writes pending)."""
    w = tile.weight
    update = tile.config.update
    model = tile.device_model
    return (w.device, w.dtype, update.bl, update.update_management, model.c2c, model.structure(), rows)


class _Tally:
    """The pulses and coincidences a fused update gave one tile since it was attached to the
    tile's counters (:meth:`UpdateCounters.attach`); read when the counters are read. It holds
    the update's running sums only (small tensors), not the update itself."""

    __slots__ = ("probability_sum", "lines", "bl", "coincidence_sums", "index", "base_pulses", "base_coincidences")

    def __init__(self, update: "FusedPulseUpdate", index: int):
        self.probability_sum, self.coincidence_sums = update._probability_sum, update._coincidences
        self.lines, self.bl, self.index = update.segment[index], update.bl, index
        self.base_pulses, self.base_coincidences = 0.0, 0.0
        self.base_pulses, self.base_coincidences = self.pulses, self.coincidences

    @property
    def pulses(self) -> float:
        return self.bl * float(self.lines @ self.probability_sum) - self.base_pulses

    @property
    def coincidences(self) -> float:
        return float(self.coincidence_sums[self.index]) - self.base_coincidences


class FusedPulseUpdate:
    """Sequential stochastic pulse updates of ``tiles`` (all :func:`can_fuse`, equal
    :func:`fusion_key`) computed together.

    The lines of all tiles are laid out in one vector: the row lines (inputs) of every tile, then
    the column lines (errors) of every tile. Built once per set of tiles; :meth:`current` tells
    whether it still describes them (their device parameters may have been reloaded or moved)
    and takes a new learning rate. It keeps a copy of the device parameters interleaved per
    device, so that a block of devices is one gather.
    """

    def __init__(self, tiles, lr: float):
        self.tiles = list(tiles)
        first = self.tiles[0].weight
        self.dtype, self.device = first.dtype, first.device
        self.bl = self.tiles[0].config.update.bl
        self.update_management = self.tiles[0].config.update.update_management
        self.model = self.tiles[0].device_model  # equal c2c and structure across the group
        ins = [t.in_features for t in self.tiles]
        outs = [t.out_features for t in self.tiles]
        n_lines = sum(ins) + sum(outs)
        as_long = dict(device=self.device, dtype=torch.long)
        # Flat device index of (column j, row i) of a tile is key[column] + key[row].
        self.key = torch.cat(
            [torch.arange(n, **as_long) for n in ins] + [torch.arange(o, **as_long) * i for o, i in zip(outs, ins)]
        )
        self.config = self.tiles[0].config.update  # equal BL and update management across the group
        # Each tile's nominal step, which sets its Cx Cd (pulse_scales).
        self.steps = torch.tensor([t.config.device.nominal_step for t in self.tiles], device=self.device, dtype=torch.float64)
        starts = [0]
        for n in ins + outs:
            starts.append(starts[-1] + n)
        self.boundaries = torch.tensor(starts[1:-1], **as_long)  # where each tile's lines begin
        # Segment of every line: t for the rows of tile t, n_tiles + t for its columns.
        self.line_segment = torch.repeat_interleave(
            torch.arange(2 * len(self.tiles), **as_long), torch.tensor(ins + outs, **as_long)
        )
        # segment[t] selects the lines of tile t (its rows and its columns): pulse counters.
        owner = self.line_segment % len(self.tiles)
        self.segment = (owner == torch.arange(len(self.tiles), **as_long).unsqueeze(1)).double()
        # Running sums: firing probability of every line (pulses = BL Σ p) and coincidences per tile.
        self._probability_sum = torch.zeros(n_lines, device=self.device, dtype=torch.float64)
        self._coincidences = torch.zeros(len(self.tiles), device=self.device, dtype=torch.float64)
        self._counted: list = [None] * len(self.tiles)  # the counters each tile's tally is attached to
        self._versions = None
        self._pack()
        self.lr = None
        self._set_lr(lr)

    def _set_lr(self, lr: float) -> None:
        if lr != self.lr:
            self.lr = lr
            if not self.update_management:  # Cx = Cd per tile, the same every sample
                c, _, _ = pulse_scales(None, None, lr, self.steps, self.config)
                self.scale = self._on_lines(c.to(self.dtype).unsqueeze(0), c.to(self.dtype).unsqueeze(0))

    def _on_lines(self, cx: torch.Tensor, cd: torch.Tensor) -> torch.Tensor:
        """Per-tile scales ``(batch, tiles)`` laid out on the lines ``(batch, lines)``: ``Cx`` on a
        tile's rows, ``-Cd`` on its columns (ΔW = -lr δ xᵀ: the minus sign rides on the columns)."""
        per_segment = torch.cat((cx, cd.neg()), dim=1)
        return per_segment.gather(1, self.line_segment.expand(per_segment.shape[0], -1))

    def _pack(self) -> None:
        """Per tile, the device parameters in the model's layout (``param_names``) side by side
        per device, ``(devices, P)``: a block of devices is one gather."""
        self.packed = [self.model.pack_interleaved(t.device_params) for t in self.tiles]
        self._versions = self._state()

    def _state(self) -> list:
        # A move to another device or dtype replaces the parameter tensor (a new data pointer);
        # load_state_dict copies into it (a new version).
        return [(t.device_params.data_ptr(), t.device_params._version) for t in self.tiles]

    def current(self, tiles, lr: float) -> bool:
        """Whether this update still serves ``tiles`` (repacking the device parameters if they
        were changed in place, e.g. by ``load_state_dict``), now at learning rate ``lr``."""
        if tiles != self.tiles:  # list equality of modules is identity
            return False
        if self._state() != self._versions:
            if any(t.weight.device != self.device or t.weight.dtype != self.dtype for t in tiles):
                return False
            self._pack()
        self._set_lr(lr)
        return True

    def apply(self) -> None:
        """Apply the pending ``(x, δ)`` pairs of every tile (the same number of rows each).
        Call under ``torch.no_grad()`` (as ``AnalogSGD.step`` does)."""
        tiles = self.tiles
        xs, ds = zip(*(tile.take_pending() for tile in tiles))
        batch = xs[0].shape[0]
        for t, tile in enumerate(tiles):
            counters = tile.counters
            if self._counted[t] is not counters:  # new counters (e.g. loaded from a checkpoint)
                counters.attach(_Tally(self, t))
                self._counted[t] = counters
            counters.steps += 1
            counters.rank1_updates += batch
            if batch > 1:
                memory = tile.config.algorithm.extra_memory(tile.out_features, tile.in_features, batch)
                counters.extra_memory = max(counters.extra_memory, memory)
        # Signed, scaled lines of every sample: |.| clipped is the firing probability.
        lines = torch.cat((*xs, *ds), dim=1).to(self.dtype)
        lines.mul_(self._management_scales(lines) if self.update_management else self.scale)
        probability = lines.abs().clamp_max_(1)
        signs = lines.sign_()
        # Expected pulses BL Σ p per tile, as the per-tile path counts them.
        self._probability_sum.add_(probability.sum(0))
        before = [tile._effects_snapshot() for tile in tiles]  # None unless write noise needs it
        for b in range(batch):
            self._rank1(probability[b], signs[b])
        # Device effects (write noise, decay, diffusion, stuck devices), each tile from its own
        # generator, after its pulses, as the per-tile path applies them.
        for tile, snapshot in zip(tiles, before):
            tile.apply_device_effects(snapshot)

    def _management_scales(self, lines: torch.Tensor) -> torch.Tensor:
        """Update management (Gokmen, Onen & Haensch 2017) per sample and tile, by
        :func:`~insitu.update.engine.pulse_scales` from each tile's ``max|x|`` and ``max|δ|``.
        Returns the scales ``(batch, lines)`` (:meth:`_on_lines`)."""
        batch, n_tiles = lines.shape[0], len(self.tiles)
        segments = self.line_segment.expand(batch, -1)
        peaks = lines.new_zeros(batch, 2 * n_tiles).scatter_reduce_(1, segments, lines.abs(), "amax")
        cx, cd, _ = pulse_scales(peaks[:, :n_tiles], peaks[:, n_tiles:], self.lr, self.steps.to(self.dtype), self.config)
        return self._on_lines(cx, cd)

    def _rank1(self, probability: torch.Tensor, signs: torch.Tensor) -> None:
        """One rank-1 pulse update of every tile from one sample's lines."""
        tiles, n_tiles = self.tiles, len(self.tiles)
        generator = tiles[0].generator
        # Lines that can fire (MNIST background pixels cannot): draw trains for those only.
        live = probability.nonzero().view(-1)
        if live.numel() == 0:
            return
        uniforms = torch.rand((self.bl, live.numel()), generator=generator, device=self.device, dtype=self.dtype)
        # A line fires at least once iff its smallest uniform is below its probability.
        fired = (uniforms.amin(0) < probability.index_select(0, live)).nonzero().view(-1)
        lines = live.index_select(0, fired)  # sorted ids of the lines that fired
        cut = torch.searchsorted(lines, self.boundaries).tolist()
        cut = [0, *cut, lines.numel()]
        # Signed trains (BL, fired lines): ±1 where the line fires in that slot.
        trains = (uniforms.index_select(1, fired) < probability.index_select(0, lines)).to(self.dtype)
        trains.mul_(signs.index_select(0, lines))
        keys = self.key.index_select(0, lines)
        blocks = []  # (tile, first column, last column, first row, last row, offset, size)
        total = 0
        for t in range(n_tiles):
            r0, r1 = cut[t], cut[t + 1]
            c0, c1 = cut[n_tiles + t], cut[n_tiles + t + 1]
            if r1 > r0 and c1 > c0:
                size = (c1 - c0) * (r1 - r0)
                blocks.append((t, c0, c1, r0, r1, total, size))
                total += size
        if not blocks:
            return
        # The fired columns × fired rows of each tile, side by side in flat buffers.
        counts = torch.empty(total, device=self.device, dtype=self.dtype)
        weights = torch.empty(total, device=self.device, dtype=self.dtype)
        params = torch.empty(total, self.packed[0].shape[1], device=self.device, dtype=self.dtype)
        flats = []
        for t, c0, c1, r0, r1, start, size in blocks:
            torch.mm(trains[:, c0:c1].t(), trains[:, r0:r1], out=counts[start : start + size].view(c1 - c0, r1 - r0))
            flat = torch.add(keys[c0:c1].unsqueeze(1), keys[r0:r1]).view(-1)
            torch.index_select(tiles[t].weight.view(-1), 0, flat, out=weights[start : start + size])
            torch.index_select(self.packed[t], 0, flat, out=params[start : start + size])
            flats.append(flat)
        n = counts.abs()
        sums = torch.stack([n[start : start + size].sum() for *_rest, start, size in blocks])
        if len(blocks) == n_tiles:
            self._coincidences.add_(sums)
        else:
            tiles_hit = torch.tensor([b[0] for b in blocks], device=self.device)
            self._coincidences.index_add_(0, tiles_hit, sums.double())
        # The device model's response, on the fired blocks of every tile at once (scratch buffers).
        weights = self.model.apply_signed_pulses(weights, counts, params.t(), generator, overwrite=True)
        for (t, *_rest, start, size), flat in zip(blocks, flats):
            tiles[t].weight.view(-1).index_copy_(0, flat, weights[start : start + size])
