"""The PCM cell's transfer as the hardware does it (issue 18, item 3): column-by-column transfer
interleaved with training (``transfer_mode="columns"``), and program-and-verify with noisy verify
reads (``clt_read_noise``)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from insitu import ConfigError
from insitu.cells import TwoPairPCMCell
from insitu.cells.multi_conductance import CELL_FIELDS, LSP_M, LSP_P, MSP_M, MSP_P
from insitu.devices import PCMDevice
from insitu.devices.pcm import ConductanceDevice, closed_loop_tune
from insitu.presets import get_preset
from insitu.tile import AnalogTile, TileConfig
from insitu.update import PulseUpdateConfig
from test_pcm_cell import _random_updates as _updates  # the same random rank-1 updates as the cell tests

LINEAR_LSP = PCMDevice(g_max=0.5, dg=0.005)
NONLINEAR_MSP = PCMDevice(g_max=1.0, g_max_dtod=0.1, dg=0.02, dg_dtod=0.2, dg_std=0.3, nonlinearity=2.0, initial_jump=0.1)


def _cell(**changes) -> TwoPairPCMCell:
    # No saturation checks unless asked: the scheduled transfers are then the only ones.
    base = dict(lsp=LINEAR_LSP, msp=NONLINEAR_MSP, clt_tolerance=0.02, transfer_every=12, saturation_check_every=10**6)
    base.update(changes)
    return TwoPairPCMCell(**base)


def _tile(out, inp, seed=0, **changes) -> AnalogTile:
    return AnalogTile(out, inp, TileConfig(cell=_cell(**changes), update=PulseUpdateConfig(bl=10)), seed=seed)


def _state(tile) -> dict:
    """Everything a run leaves behind: conductances, cell buffers, generator, counters."""
    cell = tile.cell
    out = {"weight": tile.weight.detach().clone(), "generator": tile.generator.get_state()}
    out.update({name: buf.clone() for name, buf in cell.named_buffers() if buf is not None})
    return out


def _assert_same_state(a, b):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    assert a.cell.stats == b.cell.stats
    assert a.counters.to_dict() == b.counters.to_dict()


class _TransferSpy:
    """Records every call of ``tile.cell.transfer``: the columns it moved, the example count, and
    the conductances, polarity and ``W`` just before and after it."""

    def __init__(self, tile):
        self.tile, self.calls = tile, []
        cell = tile.cell
        original = cell.transfer

        def spy(tile_, idx, target=None, flip_polarity=None):
            before = (cell.conductances(tile_), cell.polarity.clone(), cell.effective_weights(tile_).clone())
            original(tile_, idx, target, flip_polarity)
            after = (cell.conductances(tile_), cell.polarity.clone(), cell.effective_weights(tile_).clone())
            # A column transfer lists its columns in order within each output row (row-major idx).
            columns = (idx[: idx.numel() // tile_.out_features] % tile_.in_features).tolist()
            assert idx.numel() == tile_.out_features * len(columns)  # every device of those columns
            self.calls.append({"columns": columns, "examples": cell.examples, "before": before, "after": after})

        cell.transfer = spy  # an instance attribute shadows the method for this cell only


# -- the default: one whole-array transfer, as before ---------------------------------------------
@pytest.mark.parametrize("columns_per_step", [6, 10**6])
def test_column_mode_with_every_column_per_step_is_the_array_transfer_bit_for_bit(columns_per_step):
    # k >= in_features: one step of all columns every transfer_every examples, in the order of a
    # whole-array transfer; so the column schedule reproduces the default mode exactly.
    array = _tile(5, 6, seed=3, transfer_every=10, saturation_check_every=7)
    columns = _tile(5, 6, seed=3, transfer_every=10, saturation_check_every=7, transfer_mode="columns", transfer_columns=columns_per_step)
    for tile in (array, columns):
        tile.set_weights(torch.linspace(-0.7, 0.7, 30).view(5, 6))
        _updates(tile, 45, seed=2)
    assert array.cell.stats["transfers"] == 4 and array.cell.stats["columns_transferred"] == 24
    _assert_same_state(array, columns)


def test_exact_reads_give_the_former_closed_loop_tuning_bit_for_bit():
    n = 3000
    gen = torch.Generator().manual_seed(4)
    params = NONLINEAR_MSP.draw_parameters((2, n), gen)
    start = torch.rand(2, n, generator=gen) * 0.3
    since = torch.randint(0, 3, (2, n), generator=gen).float()
    target = torch.empty(n).uniform_(-0.6, 0.6, generator=gen)
    args = (NONLINEAR_MSP, start[0], start[1], since[0], since[1], params[:, 0], params[:, 1], target, 0.01, 60)
    new_gen, old_gen = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    new = closed_loop_tune(*args, new_gen, read_noise=0.0)
    old = _closed_loop_tune_before_read_noise(*args, old_gen)
    for key in old:
        assert (new[key] == old[key]) if key == "iterations" else torch.equal(new[key], old[key]), key
    assert torch.equal(new_gen.get_state(), old_gen.get_state())  # no extra draws for exact reads
    assert torch.equal(new["within_tolerance"], new["converged"])
    pulses = int(new["pulses_plus"].sum() + new["pulses_minus"].sum())
    assert new["reads"] == n + pulses  # one read per pair to start, one after every pulse


def _closed_loop_tune_before_read_noise(device: ConductanceDevice, g_plus, g_minus, since_plus, since_minus, params_plus,
                                        params_minus, target, tolerance, max_iterations, generator) -> dict:
    """``closed_loop_tune`` as it was before the read noise (commit f79e8e3), the reference."""
    g_plus, g_minus = g_plus.clone(), g_minus.clone()
    since_plus, since_minus = since_plus.clone(), since_minus.clone()
    pulses_plus, pulses_minus = torch.zeros_like(g_plus), torch.zeros_like(g_minus)
    active = ((target - (g_plus - g_minus)).abs() > tolerance).nonzero().squeeze(1)
    iterations = 0
    while active.numel() and iterations < max_iterations:
        iterations += 1
        error = target[active] - (g_plus[active] - g_minus[active])
        raise_plus = error > 0
        gp, gm = g_plus[active], g_minus[active]
        sp, sm = since_plus[active], since_minus[active]
        new_p = device.set_pulse(gp, sp, params_plus[:, active], generator)
        new_m = device.set_pulse(gm, sm, params_minus[:, active], generator)
        g_plus[active] = torch.where(raise_plus, new_p, gp)
        g_minus[active] = torch.where(raise_plus, gm, new_m)
        fired_p, fired_m = raise_plus.to(g_plus.dtype), (~raise_plus).to(g_plus.dtype)
        since_plus[active], since_minus[active] = sp + fired_p, sm + fired_m
        pulses_plus[active] += fired_p
        pulses_minus[active] += fired_m
        still = (target[active] - (g_plus[active] - g_minus[active])).abs() > tolerance
        active = active[still]
    converged = (target - (g_plus - g_minus)).abs() <= tolerance
    return {
        "g_plus": g_plus, "g_minus": g_minus, "since_plus": since_plus, "since_minus": since_minus,
        "pulses_plus": pulses_plus, "pulses_minus": pulses_minus, "converged": converged, "iterations": iterations,
    }


# -- column-by-column transfer --------------------------------------------------------------------
@pytest.mark.parametrize(
    "n_in, every, k, periods",
    [(6, 12, 1, 3), (7, 10, 1, 2), (6, 12, 2, 2), (7, 3, 2, 4), (7, 3, 1, 3), (9, 40, 4, 4)],
)
def test_each_column_is_transferred_once_per_transfer_every_examples(n_in, every, k, periods):
    tile = _tile(3, n_in, seed=1, transfer_every=every, transfer_mode="columns", transfer_columns=k)
    spy = _TransferSpy(tile)
    _updates(tile, periods * every, seed=5)
    moved = [c for call in spy.calls for c in call["columns"]]
    counts = torch.bincount(torch.tensor(moved), minlength=n_in)
    assert counts.tolist() == [periods] * n_in
    assert tile.cell.stats["columns_transferred"] == periods * n_in
    assert tile.cell.stats["transfers"] == periods * n_in // k
    # In sequence, wrapping around: the columns moved, in order, are 0, 1, …, n_in − 1, 0, 1, …
    assert moved == [i % n_in for i in range(periods * n_in)]
    # Spread over the training, not bunched: steps k·every/n_in examples apart on average.
    if k * every >= n_in:
        times = [call["examples"] for call in spy.calls]
        gaps = torch.diff(torch.tensor(times)).float()
        assert gaps.mean() == pytest.approx(k * every / n_in, rel=0.1)
        assert gaps.max() - gaps.min() <= 1


def test_a_column_step_changes_only_its_columns_and_keeps_the_weight():
    # 5 inputs, 2 columns a step: steps move (0, 1), (2, 3), (4, 0), (1, 2), ... every 4 examples.
    tile = _tile(8, 5, seed=2, transfer_every=10, transfer_mode="columns", transfer_columns=2)
    tile.set_weights(torch.empty(8, 5).uniform_(-0.6, 0.6, generator=torch.Generator().manual_seed(0)))
    spy = _TransferSpy(tile)
    _updates(tile, 16, seed=3)
    assert [call["columns"] for call in spy.calls] == [[0, 1], [2, 3], [4, 0], [1, 2]]
    assert [call["examples"] for call in spy.calls] == [4, 8, 12, 16]
    assert tile.cell.stats["clt_failures"] == 0 and tile.cell.stats["clt_accepted_out_of_tolerance"] == 0
    tolerance = tile.config.cell.clt_tolerance
    for call in spy.calls:
        (g0, p0, w0), (g1, p1, w1) = call["before"], call["after"]
        scheduled = torch.zeros(5, dtype=torch.bool)
        scheduled[call["columns"]] = True
        # Nothing outside the scheduled columns moves: conductances and polarity bit for bit (the
        # weight there is then the same; its cached value is recomputed in another order of float
        # operations after a transfer, hence a rounding-level tolerance).
        assert torch.equal(g1[:, :, ~scheduled], g0[:, :, ~scheduled])
        assert torch.equal(p1[:, ~scheduled], p0[:, ~scheduled])
        torch.testing.assert_close(w1[:, ~scheduled], w0[:, ~scheduled], rtol=0, atol=1e-6)
        # In them: the LSP is RESET, the polarity flipped, the weight kept within the tolerance.
        assert (g1[LSP_P][:, scheduled] == 0).all() and (g1[LSP_M][:, scheduled] == 0).all()
        assert torch.equal(p1[:, scheduled], -p0[:, scheduled])
        assert (w1[:, scheduled] - w0[:, scheduled]).abs().max() <= tolerance + 1e-6
        assert (g0[LSP_P:LSP_M + 1][:, :, scheduled] > 0).any()  # there was something to transfer
        assert not torch.equal(g1[MSP_P:MSP_M + 1][:, :, scheduled], g0[MSP_P:MSP_M + 1][:, :, scheduled])


# -- noisy verify reads ---------------------------------------------------------------------------
def test_verify_read_noise_spreads_the_final_error_of_tuned_pairs():
    n, tolerance = 4000, 0.01
    gen = torch.Generator().manual_seed(0)
    params = NONLINEAR_MSP.draw_parameters((2, n), gen)
    target = torch.empty(n).uniform_(-0.5, 0.5, generator=gen)
    zero = torch.zeros(n)
    spreads, outside = [], []
    for noise in (0.0, 0.5 * tolerance, tolerance, 2 * tolerance, 4 * tolerance):
        result = closed_loop_tune(
            NONLINEAR_MSP, zero, zero, zero, zero, params[:, 0], params[:, 1], target, tolerance, 200,
            torch.Generator().manual_seed(1), read_noise=noise,
        )
        error = target - (result["g_plus"] - result["g_minus"])
        accepted = result["converged"]
        spreads.append(float(error[accepted].std()))
        outside.append(float((error[accepted].abs() > tolerance).float().mean()))
        assert torch.equal(result["within_tolerance"], error.abs() <= tolerance)
        pulses = int(result["pulses_plus"].sum() + result["pulses_minus"].sum())
        assert result["reads"] == n + pulses
    assert all(a < b for a, b in zip(spreads, spreads[1:])), spreads
    assert outside[0] == 0 and all(a < b for a, b in zip(outside, outside[1:])), outside
    assert spreads[-1] > 2 * spreads[0]


def test_the_cell_programs_with_noisy_verify_reads_and_counts_them():
    target = torch.empty(20, 30).uniform_(-0.8, 0.8, generator=torch.Generator().manual_seed(3))
    spreads = []
    for noise in (0.0, 0.01, 0.02, 0.04):
        tile = _tile(20, 30, seed=4, clt_read_noise=noise)
        tile.set_weights(target)
        stats = tile.cell.stats
        error = tile.get_weights() - target
        spreads.append(float(error.std()))
        tuned = stats["programmed_pairs"] + stats["refreshes"]  # every tuning reads each pair once to start
        assert stats["clt_verify_reads"] == tuned + stats["clt_pulses"]
        if noise == 0:
            assert stats["clt_accepted_out_of_tolerance"] == 0 and error.abs().max() <= 0.02 + 1e-6
        else:
            assert stats["clt_accepted_out_of_tolerance"] > 0 and error.abs().max() > 0.02
    assert all(a < b for a, b in zip(spreads, spreads[1:])), spreads


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_read_noise_comes_from_the_tile_streams(backend):
    """The torch path draws the verify reads from the tile's torch generator, the compiled tuning
    from its kernel stream (``tile.pulse_rng``); both are reseeded by ``tile.manual_seed``."""
    from insitu.update.kernels import use_backend

    target = torch.linspace(-0.5, 0.5, 24).view(4, 6)
    global_rng = torch.get_rng_state()
    runs = []
    for noise, reseed in ((0.02, None), (0.02, None), (0.02, 123), (0.0, None)):
        with use_backend(backend):
            tile = AnalogTile(4, 6, TileConfig(cell=_cell(clt_read_noise=noise)), seed=7)  # the same devices
            if reseed is not None:
                tile.manual_seed(reseed)
            tile.set_weights(target)
        runs.append(tile.get_weights())
    assert torch.equal(runs[0], runs[1])  # same seed, same reads
    assert not torch.equal(runs[0], runs[2])  # another state of the tile's generator, other reads
    assert not torch.equal(runs[0], runs[3])  # the noise acts
    assert torch.equal(torch.get_rng_state(), global_rng)  # nothing drawn from torch's global generator


# -- state: resume bit for bit in column mode ------------------------------------------------------
def test_column_mode_with_read_noise_resumes_bit_for_bit_from_a_state_dict():
    make = lambda seed: _tile(4, 7, seed=seed, transfer_every=10, transfer_mode="columns", transfer_columns=2, clt_read_noise=0.01)  # noqa: E731
    tile = make(1)
    _updates(tile, 13, seed=1)
    extra = tile.cell.extra_state()
    assert extra["next_column"] != 0 and extra["column_credit"] != 0  # saved mid-pass, between steps
    saved = {k: v.clone() if torch.is_tensor(v) else v for k, v in tile.state_dict().items()}
    other = make(99)
    other.load_state_dict(saved)
    assert other.cell.extra_state() == extra
    for t in (tile, other):
        _updates(t, 25, seed=2)
    _assert_same_state(tile, other)
    assert tile.cell.extra_state() == other.cell.extra_state()


def test_an_interrupted_training_run_in_column_mode_resumes_bit_identically(tmp_path):
    from insitu.data import load_dataset
    from insitu.training import TrainConfig, run_training

    data = load_dataset("digits")
    data = dataclasses.replace(data, train_x=data.train_x[:150], train_y=data.train_y[:150])
    preset = get_preset("cristiano-2018-two-pair")
    # 65 and 17 inputs, a column every 70/65 and 70/17 examples: epoch 1 ends mid-pass.
    tile = preset.replace(cell=preset.cell.replace(transfer_every=70, transfer_mode="columns", clt_read_noise=0.01))
    config = TrainConfig(preset="cristiano-2018-two-pair", tile=tile, dataset="digits", hidden=(16,), epochs=2, lr=0.1, seed=3)
    quiet = dict(data=data, progress=False, log=lambda s: None)
    full = run_training(config, tmp_path / "full", **quiet)

    def stop_in_epoch_two(line):
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(config, tmp_path / "cut", data=data, progress=False, log=stop_in_epoch_two)
    checkpoint = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    cells = [v["cell"] for k, v in checkpoint["model"].items() if k.endswith("_extra_state")]
    assert len(cells) == 2 and all(c["next_column"] != 0 for c in cells)
    resumed = run_training(config, tmp_path / "cut", resume=True, **quiet)
    assert [e["test_error"] for e in resumed["epochs"]] == [e["test_error"] for e in full["epochs"]]
    assert [e["train_loss"] for e in resumed["epochs"]] == [e["train_loss"] for e in full["epochs"]]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))
    # The counters agree exactly, but for the expected pulse count (a float sum): the compiled
    # kernel's running sum restarts at the resume, so its last bits may differ.
    for layer in full["counters"]:
        a_pulses, b_pulses = full["counters"][layer].pop("pulses"), resumed["counters"][layer].pop("pulses")
        assert b_pulses == pytest.approx(a_pulses, rel=1e-12)
    assert json.dumps(resumed["counters"], sort_keys=True) == json.dumps(full["counters"], sort_keys=True)
    transfer = full["counters"]["0.tile"]["transfer"]
    assert transfer["columns_transferred"] == 300 * 65 // 70 and transfer["clt_verify_reads"] > 0


# -- config ---------------------------------------------------------------------------------------
def test_the_new_fields_round_trip_and_default_to_the_former_behaviour(tmp_path):
    cell = TwoPairPCMCell()
    assert (cell.transfer_mode, cell.transfer_columns, cell.clt_read_noise) == ("array", 1, 0.0)
    for name in ("transfer_mode", "transfer_columns", "clt_read_noise"):
        assert name in CELL_FIELDS  # the former MultiConductanceConfig dicts split them off too
    preset = get_preset("cristiano-2018-two-pair")
    config = preset.replace(cell=preset.cell.replace(transfer_mode="columns", transfer_columns=4, clt_read_noise=0.005))
    assert TileConfig.from_dict(config.to_dict()) == config
    config.to_yaml(tmp_path / "c.yaml")
    assert TileConfig.from_file(tmp_path / "c.yaml") == config
    assert "transfer_mode=columns, transfer_columns=4, clt_read_noise=0.005" in repr(AnalogTile(2, 3, config, seed=0).cell)


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(transfer_mode="rows"), r"TwoPairPCMCell\.transfer_mode = 'rows': must be one of"),
        (dict(transfer_mode="column"), r"transfer_mode.*Did you mean 'columns'"),
        (dict(transfer_mode="columns", transfer_columns=0), r"transfer_columns = 0: must be an integer >= 1"),
        (dict(transfer_mode="columns", transfer_columns=1.5), r"transfer_columns = 1.5: must be an integer >= 1"),
        (dict(transfer_mode="columns", transfer_columns=True), r"transfer_columns = True: must be an integer"),
        (dict(transfer_columns=4), r"transfer_columns = 4: applies only with transfer_mode='columns'"),
        (dict(transfer_mode="columns", msp=None), r"transfer_mode = 'columns': 'columns' needs an msp"),
        (dict(clt_read_noise=-0.01), r"clt_read_noise = -0.01: must be >= 0"),
        (dict(clt_read_noise=float("nan")), r"clt_read_noise = nan: must be a finite number"),
        (dict(clt_read_noise="0.01"), r"clt_read_noise = '0.01': must be a number"),
    ],
)
def test_bad_transfer_fields_say_which_field_and_what_to_change(changes, match):
    with pytest.raises(ConfigError, match=match):
        _cell(**changes)
