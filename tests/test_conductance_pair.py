"""Conductance pairs (PCM, jump table) as ordinary tile devices (``devices/conductance_pair.py``)."""

from __future__ import annotations

import re

import pytest
import torch

from insitu import AnalogLinear, AnalogSGD
from insitu.config import ConfigError
from insitu.devices import JumpTableDevice, JumpTablePairDevice, PCMDevice, PCMPairDevice
from insitu.io import IOConfig
from insitu.presets import PRESETS, get_preset
from insitu.tile import AnalogTile, TileConfig
from insitu.update import PulseUpdateConfig
from insitu.update.fused import can_fuse
from insitu.update.kernels import use_backend

SHAPE = (20, 15)
PCM = PCMDevice(g_max=1.0, g_max_dtod=0.1, dg=0.01, dg_dtod=0.2, dg_std=0.3, nonlinearity=1.0, initial_jump=0.05)
PAIRS = {
    "pcm": PCMPairDevice(device=PCM, w_max=0.5),
    "jump-table": JumpTablePairDevice(
        device=JumpTableDevice(bin_edges=(0.0, 0.5, 1.0), mean=(0.02, 0.01), std=(0.01, 0.005), gain_dtod=0.1)
    ),
}


def _state(device, seed=0):
    model = device.model()
    params = device.draw_parameters(SHAPE, torch.Generator().manual_seed(seed))
    return model, params


def _g(model, params):
    return model.plane(params, "g_plus").clone(), model.plane(params, "g_minus").clone()


@pytest.mark.parametrize("kind", PAIRS)
def test_a_potentiating_pulse_raises_w_and_never_lowers_g_minus(kind):
    model, params = _state(PAIRS[kind])
    gen = torch.Generator().manual_seed(1)
    w = model.program(torch.rand(SHAPE, generator=gen) * 0.6 - 0.3, params)
    for _ in range(20):
        g_plus, g_minus = _g(model, params)
        new = model.apply_signed_pulses(w, torch.randint(0, 3, SHAPE, generator=gen).float(), params, gen)
        after_plus, after_minus = _g(model, params)
        assert torch.equal(after_minus, g_minus)  # G⁻ untouched by potentiation
        if kind == "pcm":  # a PCM SET pulse never lowers G (the table's noisy steps may)
            assert torch.all(after_plus >= g_plus) and torch.all(new >= w)
        w = new
    assert torch.allclose(w, model.read(params))
    assert float((w - model.program(torch.zeros(SHAPE), params.clone())).mean()) > 0


@pytest.mark.parametrize("kind", PAIRS)
def test_depressing_pulses_lower_w_through_g_minus(kind):
    model, params = _state(PAIRS[kind])
    w0 = model.program(torch.full(SHAPE, 0.2), params)
    g_plus, g_minus = _g(model, params)
    w = model.apply_signed_pulses(w0, torch.full(SHAPE, -5.0), params, torch.Generator().manual_seed(2))
    after_plus, after_minus = _g(model, params)
    assert torch.equal(after_plus, g_plus)  # G⁺ untouched: PCM cannot be depressed gradually
    assert float((after_minus - g_minus).mean()) > 0
    assert float((w - w0).mean()) < 0
    # Noise-free: every device moved down.
    model2, params2 = _state(PAIRS[kind])
    w0 = model2.program(torch.full(SHAPE, 0.2), params2)
    assert torch.all(model2.apply_signed_pulses(w0, torch.full(SHAPE, -5.0), params2, None) < w0)


def test_scale_maps_the_range_to_w_max_and_sets_the_nominal_step():
    pair = PCMPairDevice(device=PCMDevice(g_max=2.0, g_min=0.5, dg=0.03), w_max=0.6)
    assert pair.g_scale == pytest.approx(1.5 / 0.6)
    assert pair.nominal_step == pytest.approx(0.03 / pair.g_scale)
    model, params = _state(pair)
    assert torch.allclose(model.plane(params, "w_max"), torch.full(SHAPE, 0.6))
    assert torch.allclose(model.plane(params, "w_min"), torch.full(SHAPE, -0.6))
    w = model.program(torch.full(SHAPE, 0.3), params)
    assert torch.allclose(model.plane(params, "g_plus"), torch.full(SHAPE, 0.5 + 0.3 * pair.g_scale))
    assert torch.all(model.plane(params, "g_minus") == 0.5) and torch.allclose(w, torch.full(SHAPE, 0.3))


def test_a_saturated_device_stops_at_its_bound_without_refresh():
    pair = PAIRS["pcm"]
    tile = AnalogTile(*SHAPE, TileConfig(device=pair), seed=0)
    model, params = tile.device_model, tile.device_params
    for _ in range(100):  # 1000 SET pulses on G⁺: the saturating steps approach g_max
        model.apply_signed_pulses(tile.weight.data, torch.full(SHAPE, 10.0), params, tile.generator)
        tile.weight.data.copy_(model.read(params))
    w_max = model.plane(params, "w_max")
    assert torch.all(tile.weight <= w_max + 1e-6) and torch.all(tile.weight >= 0.99 * w_max)
    assert torch.all(model.plane(params, "g_plus") <= model.plane(params, "plus_g_max"))
    assert model.after_update(tile.weight.data, params, tile.generator, 1) == 0  # refresh is off


def _saturated_tile(**fields):
    """A tile whose pairs hold both devices high: G⁺ near g_max, G⁻ 0.3 below it."""
    pair = PAIRS["pcm"].replace(**fields)
    tile = AnalogTile(*SHAPE, TileConfig(device=pair), seed=0)
    model, params = tile.device_model, tile.device_params
    top = model.plane(params, "plus_g_max").clone()
    model.plane(params, "g_plus").copy_(0.95 * top)
    model.plane(params, "g_minus").copy_(torch.minimum(0.95 * top - 0.3 * pair.g_scale, 0.9 * model.plane(params, "minus_g_max")))
    model.plane(params, "since_plus").fill_(1)
    model.plane(params, "since_minus").fill_(1)
    tile.weight.data.copy_(model.read(params))
    return tile, model, params


def test_refresh_resets_both_devices_and_programs_the_difference_back():
    tile, model, params = _saturated_tile(refresh_every=3, refresh_tolerance=0.01)
    before = tile.weight.detach().clone()
    g_plus = model.plane(params, "g_plus").clone()
    gen = tile.generator
    # Timing: only every refresh_every-th update (optimizer step).
    assert model.after_update(tile.weight.data, params, gen, 1) == 0
    assert model.after_update(tile.weight.data, params, gen, 2) == 0
    assert model.after_update(tile.weight.data, params, gen, 3) == SHAPE[0] * SHAPE[1]
    assert torch.all(model.plane(params, "refreshes") == 1)
    assert torch.allclose(tile.weight, before, atol=0.01 + 1e-6)  # within the tolerance
    assert torch.allclose(tile.weight, model.read(params))
    # The range is freed: the larger device sits far below where it was; the other near RESET.
    assert torch.all(model.plane(params, "g_plus") < g_plus - 0.1)
    assert float(model.plane(params, "g_minus").max()) < 0.1
    # Nothing left to refresh.
    assert model.after_update(tile.weight.data, params, gen, 6) == 0


def test_refresh_runs_in_training_at_its_period():
    tile, model, params = _saturated_tile(refresh_every=2)
    tile.stash(torch.zeros(1, SHAPE[1]), torch.zeros(1, SHAPE[0]))
    tile.update(0.01)  # step 1: no check
    assert float(model.plane(params, "refreshes").sum()) == 0
    tile.stash(torch.zeros(1, SHAPE[1]), torch.zeros(1, SHAPE[0]))
    tile.update(0.01)  # step 2: every pair refreshed
    assert torch.all(model.plane(params, "refreshes") == 1)


@pytest.mark.parametrize("kind", PAIRS)
def test_state_round_trip_continues_identically(kind):
    config = TileConfig(device=PAIRS[kind].replace(refresh_every=2))
    tile = AnalogTile(5, 4, config, seed=3)
    tile.set_weights(torch.rand(5, 4) * 0.4 - 0.2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        tile.stash(torch.rand(2, 4, generator=gen), torch.randn(2, 5, generator=gen))
        tile.update(0.2)
    other = AnalogTile(5, 4, config, seed=99)
    other.load_state_dict(tile.state_dict())
    assert torch.equal(other.device_params, tile.device_params) and torch.equal(other.weight, tile.weight)
    for t in (tile, other):
        t.stash(torch.ones(2, 4), torch.ones(2, 5))
        t.update(0.2)
    assert torch.equal(tile.weight, other.weight) and torch.equal(tile.device_params, other.device_params)


@pytest.mark.parametrize("kind", PAIRS)
@pytest.mark.parametrize("fields", [{}, {"devices_per_weight": 3}, {"devices_per_weight": 2, "cell_readout": "sum"}])
@pytest.mark.parametrize("mode", ["sequential", "summed"])
def test_the_weights_stay_the_read_of_the_state(kind, fields, mode):
    config = TileConfig(device=PAIRS[kind].replace(refresh_every=3), update=PulseUpdateConfig(mode=mode), **fields)
    tile = AnalogTile(6, 5, config, seed=1)
    tile.set_weights(torch.rand(6, 5) * 0.4 - 0.2)
    mask = torch.rand(6, 5, generator=torch.Generator().manual_seed(4)) > 0.3
    tile.set_connection_mask(mask)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        tile.stash((torch.rand(3, 5, generator=gen) > 0.4).float(), torch.randn(3, 6, generator=gen))
        tile.update(0.3)
    read = tile.device_model.read(tile.device_params)
    present = mask if tile.weight.dim() == 2 else mask.unsqueeze(-1).expand_as(tile.weight)
    assert torch.allclose(tile.weight[present], read[present])
    assert torch.all(tile.weight[~present] == 0)


def test_the_compiled_backend_runs_its_stateful_kernel_and_the_fused_path_leaves_it_to_the_tile():
    # The compiled sequential kernel takes the pair (tests/test_pair_kernel.py compares it with
    # the torch update in distribution); the torch fused update does not take it.
    pytest.importorskip("numba")
    config = get_preset("pcm-pair-2016-io")
    for backend in ("compiled", "torch"):
        layer = AnalogLinear(5, 3, config=config, seed=2)
        opt = AnalogSGD(layer.parameters(), lr=0.1)
        assert not can_fuse(layer.tile)
        stream = layer.tile.pulse_rng.clone()
        gen = torch.Generator().manual_seed(0)
        with use_backend(backend):
            for _ in range(10):
                layer(torch.rand(1, 5, generator=gen)).pow(2).sum().backward()
                opt.step()
                opt.zero_grad()
        tile = layer.tile
        assert ("stateful" in tile._kernel_cache) == (backend == "compiled")
        assert torch.equal(tile.pulse_rng, stream) == (backend == "torch")  # the compiled stream drew the pulses
        assert torch.equal(tile.weight.detach(), tile.device_model.read(tile.device_params))
        assert tile.counters.coincidences > 0


@pytest.mark.parametrize(
    "change,capability",
    [
        ({"update": PulseUpdateConfig(mode="batched")}, "per_device_state"),
        ({"update": PulseUpdateConfig(pulse_type="expected")}, "per_device_state"),
    ],
)
def test_paths_that_cannot_hold_the_state_refuse_it_by_capability(change, capability):
    with pytest.raises(ConfigError, match=capability):
        TileConfig(device=PCMPairDevice(), **change)


def test_cells_refuse_it_and_replicas_need_one_pair_config():
    # Replicas in lockstep take the pairs (tests/test_replicas.py), all with the same pair config.
    from insitu.cells.transfer import TikiTakaV2Cell
    from insitu.replicas import ReplicatedTile

    with pytest.raises(ConfigError, match="per_device_state"):
        TileConfig(device=PCMPairDevice(), cell=TikiTakaV2Cell())
    assert ReplicatedTile(3, 2, [TileConfig(device=JumpTablePairDevice())] * 2).replicas == 2
    with pytest.raises(ConfigError, match="refresh_every"):
        ReplicatedTile(3, 2, [TileConfig(device=JumpTablePairDevice()), TileConfig(device=JumpTablePairDevice(refresh_every=5))])


def test_bad_fields_are_refused():
    with pytest.raises(ConfigError, match="device"):
        PCMPairDevice(device=JumpTableDevice())
    with pytest.raises(ConfigError, match="refresh_threshold"):
        PCMPairDevice(refresh_threshold=1.5)
    with pytest.raises(ConfigError, match="refresh_every"):
        JumpTablePairDevice(refresh_every=-1)


@pytest.mark.parametrize("name", ["pcm-pair-2016-io", "jump-table-pair-2016-io"])
def test_presets_build_round_trip_and_state_source_and_states(name):
    config = get_preset(name)
    assert TileConfig.from_dict(config.to_dict()) == config
    doc = PRESETS[name].__doc__
    assert "Cristiano" in doc and re.search(r"States", doc)
    assert config.device.capabilities.per_device_state
    if name == "pcm-pair-2016-io":
        assert config.device.device == get_preset("cristiano-2018-single-pair").cell.lsp


@pytest.mark.parametrize("name", ["pcm-pair-2016-io", "jump-table-pair-2016-io"])
def test_analog_linear_trains_on_a_toy_problem(name):
    """A plain AnalogLinear with the pair device learns a linear map: the loss falls."""
    torch.manual_seed(0)
    config = get_preset(name).replace(forward=IOConfig.perfect(), backward=IOConfig.perfect())
    target = torch.tensor([[0.4, -0.3, 0.2, 0.0], [-0.2, 0.1, 0.3, -0.4]])
    layer = AnalogLinear(4, 2, bias=False, config=config, seed=5)
    opt = AnalogSGD(layer.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    test_x = torch.rand(200, 4, generator=gen) * 2 - 1

    def loss():
        with torch.no_grad():
            return float((layer(test_x) - test_x @ target.t()).pow(2).mean())

    start = loss()
    for _ in range(600):
        x = torch.rand(1, 4, generator=gen) * 2 - 1
        (0.5 * (layer(x) - x @ target.t()).pow(2).sum()).backward()
        opt.step()
        opt.zero_grad()
    assert loss() < 0.3 * start, (start, loss())


@pytest.mark.parametrize("change", [{"algorithm": "mbgd"}, {"algorithm": "svd"}, {"algorithm": "sbe"}, {"max_tile_size": (3, 4)}])
def test_update_algorithms_and_tile_grids_keep_the_read(change):
    from insitu.update import UpdateAlgorithmConfig

    config = get_preset("pcm-pair-2016-io")
    if "algorithm" in change:
        config = config.replace(algorithm=UpdateAlgorithmConfig(method=change["algorithm"]))
    else:
        config = config.replace(**change)
    layer = AnalogLinear(6, 5, config=config, seed=0)
    opt = AnalogSGD(layer.parameters(), lr=0.1)
    before = layer.tile.get_weights()
    for _ in range(5):
        layer(torch.rand(4, 6, generator=torch.Generator().manual_seed(3))).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    tiles = getattr(layer.tile, "tiles", [layer.tile])
    assert len(tiles) == (4 if "max_tile_size" in change else 1)
    for tile in tiles:
        assert torch.allclose(tile.weight, tile.device_model.read(tile.device_params))
    assert not torch.equal(layer.tile.get_weights(), before)


@pytest.mark.parametrize("policy", ["single", "sequential", "random"])
@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_one_device_update_policies_keep_the_pairs_state_and_weight_together(policy, backend):
    # With cell_update other than "all" one device of each cell takes the pulses through a copy of
    # its parameter slice; a pair's state planes in that copy must come back to the tile.
    if backend == "compiled":
        pytest.importorskip("numba")
    config = TileConfig(device=PCMPairDevice(), devices_per_weight=2, cell_update=policy)
    tile = AnalogTile(4, 5, config, seed=1)
    g = torch.Generator().manual_seed(0)
    with use_backend(backend):
        for _ in range(5):
            tile.stash(torch.rand(2, 5, generator=g), torch.randn(2, 4, generator=g) * 0.5)
            tile.update(0.1)
    read = tile.device_model.read(tile.device_params)
    assert tile.counters.coincidences > 0
    torch.testing.assert_close(tile.weight.detach(), read, rtol=0, atol=1e-6)
