"""The compiled sequential update of the conductance pairs (``update/kernels/compiled_pairs.py``).

The stateful kernel must be the torch update (the reference, ``ConductancePairModel``) in
distribution, keep the weight equal to the read of the state planes it writes in place, never
lower a PCM conductance or a pulse counter between resets, be deterministic per seed, and
continue bit for bit after ``load_state_dict``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from insitu.devices import JumpTableDevice, JumpTablePairDevice, PCMDevice, PCMPairDevice
from insitu.presets import get_preset
from insitu.tile import AnalogTile
from insitu.update import PulseUpdateConfig
from insitu.update.kernels import use_backend

pytest.importorskip("numba")

from _distribution import assert_same_counts, assert_same_distribution  # noqa: E402

OUT, IN = 7, 11
NONLINEAR = PCMDevice(nonlinearity=1.0, initial_jump=0.05, g_max_dtod=0.1, dg_dtod=0.2, dg_std=0.3)
DEVICES = {
    "pcm default": PCMPairDevice(),
    "pcm nonlinear, jump": PCMPairDevice(device=NONLINEAR),
    "pcm delayed jump": PCMPairDevice(device=PCMDevice(initial_jump=0.1, jump_delay=2, dg_std=0.3, g_max_dtod=0.1), w_max=0.5),
    "jump table": JumpTablePairDevice(
        device=JumpTableDevice(bin_edges=(0.0, 0.1, 0.5, 1.0), mean=(0.02, 0.01, 0.005), std=(0.01, 0.005, 0.002), gain_dtod=0.1)
    ),
    # The peer's PCM preset: one-sided exponential-step members with complex noise and refresh.
    "one-sided pcm": get_preset("pcm-peer-io").device,
}


def _config(device, cell: int = 1, readout: str = "mean", **update):
    config = get_preset("gokmen-vlasov-2016").replace(device=device, update=PulseUpdateConfig(**update))
    return config.replace(devices_per_weight=cell, cell_readout=readout)


def _inputs(batch: int, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, IN, generator=g) * 2 - 1
    x[:, ::4] = 0.0  # lines that never fire
    d = (torch.rand(batch, OUT, generator=g) * 2 - 1) * 0.5
    return x, d


def _start():
    # Both signs and zero: G⁺ and G⁻ above RESET (past their jump) and devices at RESET (the first
    # SET pulse is the jump).
    return torch.linspace(-0.12, 0.12, OUT * IN).reshape(OUT, IN).round(decimals=2)


def _saturated_inputs(batch: int):
    """Inputs and errors of magnitude 1 and mixed signs: with a large learning rate every slot of
    every train fires (probability 1, nothing drawn), so every device gets exactly BL coincidences
    and the changes vary by the pulse-to-pulse noise of the device alone."""
    x, d = _inputs(batch)
    return torch.where(x >= 0, 1.0, -1.0), torch.where(d >= 0, 1.0, -1.0)


def _changes(backend: str, config, draws: int, batch: int, lr: float = 0.05, inputs=_inputs):
    """``draws`` updates of the same devices from the same start: the changes of the weight and of
    both conductances, and the pulse and coincidence counts."""
    x, d = inputs(batch)
    changes, pulses, coincidences = [], [], []
    with use_backend(backend):
        for k in range(draws):
            tile = AnalogTile(OUT, IN, config, seed=3)
            tile.set_weights(_start())
            model = tile.device_model
            before = torch.cat([tile.weight.detach().reshape(-1), model.plane(tile.device_params, "g_plus").reshape(-1),
                                model.plane(tile.device_params, "g_minus").reshape(-1)]).clone()
            tile.manual_seed(100 + k)
            tile.stash(x, d)
            tile.update(lr)
            after = torch.cat([tile.weight.detach().reshape(-1), model.plane(tile.device_params, "g_plus").reshape(-1),
                               model.plane(tile.device_params, "g_minus").reshape(-1)])
            changes.append((after - before).double())
            pulses.append(tile.counters.pulses)
            coincidences.append(tile.counters.coincidences)
            if backend == "compiled":
                assert "stateful" in tile._kernel_cache  # the compiled kernel ran
    return torch.stack(changes), np.array(pulses), np.array(coincidences)


LAYOUTS = {
    "pcm default, batch 1": ("pcm default", dict(), 1),
    "pcm default, batch 4": ("pcm default", dict(), 4),
    "pcm nonlinear, batch 4": ("pcm nonlinear, jump", dict(), 4),
    "pcm nonlinear, update management, dynamic BL": ("pcm nonlinear, jump", dict(update_management=True, dynamic_bl=True, bl=31), 3),
    "pcm nonlinear, 2 devices per weight": ("pcm nonlinear, jump", dict(cell=2), 2),
    "pcm delayed jump, batch 3": ("pcm delayed jump", dict(), 3),
    "jump table, batch 4": ("jump table", dict(), 4),
    "one-sided pcm, batch 1": ("one-sided pcm", dict(), 1),
    "one-sided pcm, update management, dynamic BL": ("one-sided pcm", dict(update_management=True, dynamic_bl=True, bl=31), 3),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_compiled_pair_update_has_the_distribution_of_the_torch_update(layout):
    name, options, batch = LAYOUTS[layout]
    update = {k: v for k, v in options.items() if k in ("update_management", "dynamic_bl", "bl")}
    config = _config(DEVICES[name], options.get("cell", 1), **update)
    # 400 draws: the weight and both conductances of a device move together, so the mean of the
    # z-scores is not an average of independent numbers and 200 draws leave it too loose.
    draws = 400
    compiled, c_pulses, c_coinc = _changes("compiled", config, draws, batch)
    reference, t_pulses, t_coinc = _changes("torch", config, draws, batch)
    moved = reference.var(0) + compiled.var(0) > 0
    assert int(moved.sum()) > 20  # enough devices move to compare
    assert_same_distribution(compiled, reference, draws, moved=moved)
    assert_same_counts(c_pulses, t_pulses, c_coinc, t_coinc, draws)


@pytest.mark.parametrize("name", ["pcm default", "pcm nonlinear, jump", "jump table", "one-sided pcm"])
def test_the_pulse_noise_alone_has_the_spread_of_the_torch_response(name):
    # Every device takes exactly BL = 3 SET pulses (all slots fire): the coincidences agree
    # exactly and the spread of the changes is the per-pulse noise (clamped per pulse) alone.
    config = _config(DEVICES[name], bl=3)
    draws = 150
    compiled, _, c_coinc = _changes("compiled", config, draws, 2, lr=1.0, inputs=_saturated_inputs)
    reference, _, t_coinc = _changes("torch", config, draws, 2, lr=1.0, inputs=_saturated_inputs)
    assert np.all(c_coinc == t_coinc) and c_coinc[0] == 2 * 3 * OUT * IN
    moved = reference.var(0) > 0
    assert int(moved.sum()) > 50
    assert_same_distribution(compiled, reference, draws, ratio=(0.88, 1.14), moved=moved)


def _state(tile):
    model, params = tile.device_model, tile.device_params
    return {name: model.plane(params, name).clone() for name in ("g_plus", "g_minus", "since_plus", "since_minus", "refreshes")}


@pytest.mark.parametrize("name", ["pcm nonlinear, jump", "pcm delayed jump", "jump table"])
@pytest.mark.parametrize("refresh", [0, 4])
def test_the_weight_stays_the_read_of_the_state_and_pcm_never_moves_back(name, refresh):
    device = DEVICES[name].replace(refresh_every=refresh, refresh_threshold=0.3)
    tile = AnalogTile(OUT, IN, _config(device, cell=2), seed=7)
    tile.set_weights(_start())
    model = tile.device_model
    settled = model.settled
    g = torch.Generator().manual_seed(11)
    pcm = isinstance(device, PCMPairDevice)
    refreshed = 0
    with use_backend("compiled"):
        for step in range(40):
            before = _state(tile)
            x = torch.rand(3, IN, generator=g) * 2 - 1
            d = (torch.rand(3, OUT, generator=g) * 2 - 1) * 0.5
            tile.stash(x, d)
            tile.update(0.2)
            after = _state(tile)
            assert torch.equal(tile.weight.detach(), model.read(tile.device_params))
            kept = after["refreshes"] == before["refreshes"]  # pairs not refreshed this step
            refreshed += int((~kept).sum())
            for side in ("plus", "minus"):
                since = after[f"since_{side}"]
                assert torch.all(since >= 0) and torch.all(since <= settled)
                assert torch.all(since[kept] >= before[f"since_{side}"][kept])
                if pcm:  # a PCM SET pulse never lowers G; only a refresh RESETs it
                    assert torch.all(after[f"g_{side}"][kept] >= before[f"g_{side}"][kept])
                assert torch.all(after[f"g_{side}"] >= device.device.reset_conductance)
            g_max_plus = tile.device_params[model.param_names.index("plus_g_max")]
            assert torch.all(after["g_plus"] <= g_max_plus)
    assert "stateful" in tile._kernel_cache
    assert tile.counters.coincidences > 0
    if refresh and pcm:
        assert refreshed > 0  # the torch refresh ran between compiled updates


def _run(tile, steps, seed=21, batch=2):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.rand(batch, IN, generator=g) * 2 - 1
        d = (torch.rand(batch, OUT, generator=g) * 2 - 1) * 0.5
        tile.stash(x, d)
        tile.update(0.1)


@pytest.mark.parametrize("name", ["pcm nonlinear, jump", "jump table"])
def test_the_compiled_pair_update_is_deterministic_per_seed(name):
    config = _config(DEVICES[name].replace(refresh_every=3, refresh_threshold=0.3))
    with use_backend("compiled"):
        a, b, c = (AnalogTile(OUT, IN, config, seed=s) for s in (4, 4, 5))
        for tile in (a, b, c):
            tile.set_weights(_start())
            _run(tile, 15)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.device_params, b.device_params)
    assert torch.equal(a.pulse_rng, b.pulse_rng)
    assert not torch.equal(a.device_params, c.device_params)


@pytest.mark.parametrize("name", ["pcm nonlinear, jump", "jump table"])
def test_a_restored_pair_tile_continues_bit_identically(name):
    config = _config(DEVICES[name].replace(refresh_every=3, refresh_threshold=0.3))
    with use_backend("compiled"):
        original = AnalogTile(OUT, IN, config, seed=8)
        original.set_weights(_start())
        _run(original, 10)
        restored = AnalogTile(OUT, IN, config, seed=99)  # other devices and streams, replaced by the load
        _run(restored, 2)  # its kernel views exist before the load
        restored.load_state_dict(original.state_dict())
        assert torch.equal(restored.device_params, original.device_params)
        _run(original, 10, seed=22)
        _run(restored, 10, seed=22)
    assert torch.equal(restored.weight, original.weight)
    assert torch.equal(restored.device_params, original.device_params)
    assert torch.equal(restored.pulse_rng, original.pulse_rng)
    assert restored.counters.coincidences == original.counters.coincidences


def test_the_summed_mode_and_the_torch_backend_leave_the_pair_to_the_torch_path():
    device = DEVICES["pcm nonlinear, jump"]
    for backend, mode in (("compiled", "summed"), ("torch", "sequential")):
        with use_backend(backend):
            tile = AnalogTile(OUT, IN, _config(device, mode=mode), seed=2)
            tile.set_weights(_start())
            stream = tile.pulse_rng.clone()
            _run(tile, 3)
            assert "stateful" not in tile._kernel_cache
            assert torch.equal(tile.pulse_rng, stream)  # the compiled stream untouched
            assert torch.equal(tile.weight.detach(), tile.device_model.read(tile.device_params))
            assert tile.counters.coincidences > 0


def test_refreshes_do_not_rebuild_the_compiled_plan():
    # The stateful kernel works on views of the tile's tensors: a refresh writing the state planes
    # in place keeps them valid, so the plan (and the tally attached to the counters) stays one.
    config = _config(DEVICES["pcm nonlinear, jump"].replace(refresh_every=1, refresh_threshold=0.3))
    with use_backend("compiled"):
        tile = AnalogTile(OUT, IN, config, seed=4)
        tile.set_weights(_start())
        _run(tile, 2)
        plan = tile._kernel_cache["stateful"]
        refreshes = tile.device_model.plane(tile.device_params, "refreshes").sum()
        _run(tile, 20)
    assert tile.device_model.plane(tile.device_params, "refreshes").sum() > refreshes  # refreshes ran
    assert tile._kernel_cache["stateful"] is plan
    assert len(tile._kernel_cache["attached"]) == 1
