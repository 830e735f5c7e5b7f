"""Layers over several tiles (issue 20, item 3): the mapping, exactness, the noise of the digital
sum, the hardware estimator's tiles, state, training."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from insitu import AnalogConv2d, AnalogLinear, ConfigError
from insitu.devices import ConstantStepDevice, IdealDevice
from insitu.hardware import RPUEstimator, RPUSystemConfig, network_from_model
from insitu.io import IOConfig
from insitu.mapping import GridTile, TileGrid, balanced_splits, make_tile
from insitu.optim import AnalogSGD
from insitu.tile import AnalogTile, TileConfig


def ideal(max_tile_size=None, **io) -> TileConfig:
    fwd = IOConfig(**io) if io else IOConfig(is_perfect=True)
    return TileConfig(device=IdealDevice(), forward=fwd, backward=IOConfig(is_perfect=True), max_tile_size=max_tile_size)


def dyadic(*shape, scale=8, span=8, generator=None) -> torch.Tensor:
    """Values k/scale with small integers k: every product and sum below is exact in float32."""
    return torch.randint(-span, span + 1, shape, generator=generator).float() / scale


# -- the mapping ------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 500), max_size=st.integers(1, 600))
def test_balanced_splits_cover_respect_the_max_and_are_balanced(size, max_size):
    sizes = balanced_splits(size, max_size)
    assert sum(sizes) == size
    assert len(sizes) == math.ceil(size / max_size)  # the fewest tiles
    assert max(sizes) <= max_size
    assert max(sizes) - min(sizes) <= 1
    assert list(sizes) == sorted(sizes, reverse=True)


def test_grid_blocks_tile_the_matrix_exactly_once():
    grid = TileGrid(7, 11, 3, 4)
    assert grid.row_sizes == (3, 2, 2) and grid.col_sizes == (4, 4, 3)
    assert grid.n_tiles == 9
    seen = torch.zeros(7, 11, dtype=torch.int64)
    for _, _, rs, cs in grid.blocks():
        seen[rs, cs] += 1
    assert bool((seen == 1).all())
    assert TileGrid(7, 11).n_tiles == 1 and TileGrid.for_config(7, 11, TileConfig()).n_tiles == 1
    with pytest.raises(ValueError):
        TileGrid(7, 11, 0, 3)


def test_max_tile_size_config_defaults_round_trips_and_validates():
    assert TileConfig().max_tile_size is None
    assert TileConfig.from_dict(TileConfig().to_dict()) == TileConfig()
    old = TileConfig().to_dict()
    del old["max_tile_size"]  # a config saved before the field existed
    assert TileConfig.from_dict(old) == TileConfig()
    config = TileConfig(max_tile_size=[64, 128])
    assert config.max_tile_size == (64, 128)
    assert TileConfig.from_dict(config.to_dict()) == config
    for bad in ((0, 4), (4,), (4, 4, 4), (2.0, 3), (True, 3), "64x64", 64):
        with pytest.raises(ConfigError, match="max_tile_size"):
            TileConfig(max_tile_size=bad)


def test_one_tile_refuses_a_shape_beyond_its_max_and_make_tile_splits():
    config = TileConfig(max_tile_size=(4, 4))
    with pytest.raises(ConfigError, match="max_tile_size"):
        AnalogTile(5, 4, config)
    assert isinstance(make_tile(4, 4, config, seed=0), AnalogTile)
    grid = make_tile(5, 9, config, seed=0)
    assert isinstance(grid, GridTile) and grid.grid.n_tiles == 2 * 3


def test_sub_tiles_have_their_own_derived_seeds_and_devices():
    config = TileConfig(max_tile_size=(4, 4))
    a, b = AnalogLinear(9, 6, config=config, seed=5), AnalogLinear(9, 6, config=config, seed=5)
    seeds = [t.seed for t in a.tile.tiles]
    assert len(set(seeds)) == len(seeds)  # each tile its own generator
    assert seeds == [t.seed for t in b.tile.tiles]  # derived deterministically from the layer seed
    assert [t.seed for t in AnalogLinear(9, 6, config=config, seed=6).tile.tiles] != seeds
    p0, p1 = a.tile.tiles[0].device_params, a.tile.tiles[1].device_params
    assert not torch.equal(p0[..., : p1.shape[1]], p1[..., : p0.shape[1]])  # own device draws
    for ta, tb in zip(a.tile.tiles, b.tile.tiles):
        assert torch.equal(ta.device_params, tb.device_params)


# -- exactness with ideal devices and perfect IO -----------------------------------------------
@pytest.mark.parametrize("bias_on_array", [True, False])
@pytest.mark.parametrize("max_tile_size", [(3, 4), (7, 5), (2, 12), (4, 1)])
def test_split_layer_equals_the_unsplit_layer_exactly(max_tile_size, bias_on_array):
    gen = torch.Generator().manual_seed(0)
    whole = AnalogLinear(11, 7, config=ideal(), bias_on_array=bias_on_array, seed=1)
    split = AnalogLinear(11, 7, config=ideal(max_tile_size), bias_on_array=bias_on_array, seed=2)
    assert isinstance(split.tile, GridTile) and split.tile.grid.n_tiles > 1
    weight, bias = dyadic(7, 11, generator=gen), dyadic(7, generator=gen)
    for layer in (whole, split):
        layer.set_weights(weight, bias)
    assert torch.equal(split.get_weights()[0], weight) and torch.equal(split.get_weights()[1], bias)

    x = dyadic(5, 11, scale=4, generator=gen)
    upstream = dyadic(5, 7, scale=4, generator=gen)
    outs, grads = [], []
    for layer in (whole, split):
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        (y * upstream).sum().backward()
        AnalogSGD(layer.parameters(), lr=0.5).step()
        outs.append(y.detach())
        grads.append(xi.grad)
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0], grads[1])
    assert torch.equal(whole.get_weights()[0], split.get_weights()[0])
    if bias_on_array:
        assert torch.equal(whole.get_weights()[1], split.get_weights()[1])
    else:
        assert torch.equal(whole.bias, split.bias)
    # Every tile was updated, from its own stash.
    assert all(t.counters.steps == 1 and not t._pending for t in split.tile.tiles)


def test_split_layer_starts_from_the_weights_of_the_unsplit_layer_with_the_same_seed():
    whole = AnalogLinear(11, 7, config=ideal(), seed=3)
    split = AnalogLinear(11, 7, config=ideal((3, 4)), seed=3)
    for a, b in zip(whole.get_weights(), split.get_weights()):
        assert torch.equal(a, b)


def test_bias_column_lives_on_the_last_column_block():
    layer = AnalogLinear(10, 6, config=ideal((4, 4)), seed=0)
    grid = layer.tile.grid
    assert grid.col_sizes == (4, 4, 3)  # 10 inputs + the bias column
    bias = layer.get_weights()[1]
    last = [layer.tile.tile_at(i, grid.n_col_blocks - 1).get_weights()[:, -1] for i in range(grid.n_row_blocks)]
    assert torch.equal(torch.cat(last), bias)


def test_split_convolution_equals_the_unsplit_one():
    gen = torch.Generator().manual_seed(1)
    whole = AnalogConv2d(3, 5, 3, padding=1, config=ideal(), seed=0)
    split = AnalogConv2d(3, 5, 3, padding=1, config=ideal((2, 10)), seed=0)
    assert split.tile.grid.n_tiles == 3 * 3  # 5 kernels × (27 + bias)
    weight, bias = dyadic(5, 3, 3, 3, generator=gen), dyadic(5, generator=gen)
    x = dyadic(2, 3, 6, 6, scale=4, generator=gen)
    results = []
    for layer in (whole, split):
        layer.set_weights(weight, bias)
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        y.pow(2).sum().backward()
        AnalogSGD(layer.parameters(), lr=0.25).step()
        results.append((y.detach(), xi.grad, layer.get_weights()[0]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_split_recurrent_layer_equals_the_unsplit_one(cell):
    from insitu.nn import AnalogGRU, AnalogLSTM

    cls = AnalogLSTM if cell == "lstm" else AnalogGRU
    whole = cls(5, 6, config=ideal(), seed=0)
    split = cls(5, 6, config=ideal((7, 4)), seed=0)
    split.set_weights(whole.get_weights())
    x = torch.rand(4, 3, 5)
    results = []
    for layer in (whole, split):
        xi = x.clone().requires_grad_(True)
        y, _ = layer(xi)
        y.pow(2).sum().backward()
        AnalogSGD(layer.parameters(), lr=0.1).step()
        results.append((y.detach(), xi.grad, *layer.get_weights().values()))
    assert any(isinstance(m, GridTile) for m in split.modules())
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# -- noise of the digital sum -----------------------------------------------------------------
def _output_noise_variance(layer, x, draws=20000) -> torch.Tensor:
    with torch.no_grad():
        w = layer.get_weights()[0]
        y = layer(x.expand(draws, -1))
    return (y - x @ w.t()).var(dim=0)  # per output, over the draws


@pytest.mark.parametrize("col_blocks", [1, 2, 4])
def test_forward_output_noise_variance_grows_with_the_tiles_summed(col_blocks):
    sigma = 0.1
    n_in = 12
    config = ideal((3, n_in // col_blocks), out_noise=sigma)
    layer = AnalogLinear(n_in, 6, bias=False, config=config, seed=0)
    assert layer.tile.grid.n_col_blocks == col_blocks and layer.tile.grid.n_row_blocks == 2
    x = torch.linspace(-1, 1, n_in).unsqueeze(0)
    var = _output_noise_variance(layer, x)
    # Each output sums one partial per column block, each with its own noise σ²: k·σ².
    # 20000 draws: the relative standard error of one variance is sqrt(2/20000) = 1 %.
    expected = col_blocks * sigma**2
    assert var.shape == (6,)
    assert torch.allclose(var, torch.full_like(var, expected), rtol=0.05)
    assert abs(var.mean().item() / expected - 1) < 0.025


def test_backward_output_noise_variance_grows_with_the_row_blocks():
    sigma = 0.1
    config = TileConfig(
        device=IdealDevice(), forward=IOConfig(is_perfect=True), backward=IOConfig(out_noise=sigma), max_tile_size=(3, 8)
    )
    layer = AnalogLinear(8, 9, bias=False, config=config, seed=0)  # 3 row blocks, 1 column block
    draws = 20000
    x = torch.zeros(draws, 8, requires_grad=True)
    d = torch.linspace(-1, 1, 9).expand(draws, -1)
    layer(x).backward(d)
    var = (x.grad - d @ layer.get_weights()[0]).var(dim=0)
    assert torch.allclose(var, torch.full_like(var, 3 * sigma**2), rtol=0.05)
    layer.tile.discard_pending()


# -- the hardware estimator counts the same tiles ---------------------------------------------
def test_hardware_estimator_costs_the_simulated_tiles():
    limit = (100, 300)
    config = TileConfig(max_tile_size=limit)
    model = nn.Sequential(AnalogLinear(784, 256, config=config, seed=0), nn.Sigmoid(),
                          AnalogLinear(256, 10, config=config, seed=1))
    shape = network_from_model(model, (784,))
    estimator = RPUEstimator(RPUSystemConfig(array_rows=limit[0], array_cols=limit[1]))
    estimates = estimator.estimate_layers(shape)
    for layer, layer_shape, estimate in zip((model[0], model[2]), shape.layers, estimates):
        simulated = layer.tile.grid if isinstance(layer.tile, GridTile) else TileGrid(layer.out_features, layer.tile.in_features)
        assert estimator.grid_of(layer_shape) == simulated
        n_simulated = len(layer.tile.tiles) if isinstance(layer.tile, GridTile) else 1
        assert estimate.tiles == n_simulated
    assert [e.tiles for e in estimates[:2]] == [3 * 3, 1]  # 256 = 86+85+85 rows, 785 = 262+262+261 cols


def test_hardware_estimator_grouped_convolution_tiles():
    config = TileConfig(max_tile_size=(4, 10))
    conv = AnalogConv2d(4, 8, 3, groups=2, config=config, seed=0)  # per group 4 × (18 + 1)
    shape = network_from_model(nn.Sequential(conv), (4, 6, 6))
    estimator = RPUEstimator(RPUSystemConfig(array_rows=4, array_cols=10))
    assert estimator.grid_of(shape.layers[0]) == conv.tiles[0].grid == conv.tiles[1].grid
    assert estimator.estimate_layers(shape)[0].tiles == sum(len(t.tiles) for t in conv.tiles) == 2 * 2


# -- state, replicas, training ----------------------------------------------------------------
def test_state_dict_round_trip_of_a_split_layer():
    config = TileConfig(max_tile_size=(3, 4), forward=IOConfig(out_noise=0.05))
    layer = AnalogLinear(9, 7, config=config, seed=0)
    x = torch.rand(4, 9)
    layer(x).sum().backward()
    AnalogSGD(layer.parameters(), lr=0.1).step()
    other = AnalogLinear(9, 7, config=config, seed=123)
    other.load_state_dict(layer.state_dict())
    for a, b in zip(layer.get_weights(), other.get_weights()):
        assert torch.equal(a, b)
    for ta, tb in zip(layer.tile.tiles, other.tile.tiles):
        assert torch.equal(ta.device_params, tb.device_params) and ta.seed == tb.seed
    with torch.no_grad():
        assert torch.equal(layer(x), other(x))  # every tile's generator state came along
    unsplit = AnalogLinear(9, 7, config=TileConfig(forward=IOConfig(out_noise=0.05)), seed=0)
    with pytest.raises(RuntimeError):  # a different tiling is a different set of arrays
        unsplit.load_state_dict(layer.state_dict())


def test_replicas_and_a_split_are_refused_unless_trivial():
    with pytest.raises(ConfigError, match="replicas"):
        AnalogLinear(9, 7, config=TileConfig(max_tile_size=(3, 4)), replicas=2)
    layer = AnalogLinear(9, 7, config=TileConfig(max_tile_size=(7, 10)), replicas=2)  # fits one tile
    assert layer.replicas == 2


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_a_pulsed_split_layer_trains(backend):
    from insitu.update.kernels import set_backend

    set_backend(backend)  # torch: AnalogSGD fuses the sub-tiles' updates
    torch.manual_seed(0)
    config = TileConfig(device=ConstantStepDevice(), max_tile_size=(3, 4))
    layer = AnalogLinear(8, 5, config=config, seed=0)
    assert layer.tile.grid.n_tiles == 2 * 3
    target = nn.Linear(8, 5)
    with torch.no_grad():
        target.weight.uniform_(-0.3, 0.3)
        target.bias.uniform_(-0.1, 0.1)
    start = [t.get_weights() for t in layer.tile.tiles]
    opt = AnalogSGD(layer.parameters(), lr=0.05)
    x_test = torch.rand(256, 8) * 2 - 1

    def loss() -> float:
        with torch.no_grad():
            return nn.functional.mse_loss(layer(x_test), target(x_test)).item()

    before = loss()
    for _ in range(400):
        x = torch.rand(8, 8) * 2 - 1
        opt.zero_grad()
        nn.functional.mse_loss(layer(x), target(x).detach()).backward()
        opt.step()
    after = loss()
    assert after < 0.3 * before
    assert all(not torch.equal(s, t.get_weights()) for s, t in zip(start, layer.tile.tiles))  # every tile learned


def test_a_sparse_connection_mask_is_split_over_the_tiles():
    from insitu.sparse.analog import mask_analog_linear

    layer = AnalogLinear(9, 7, config=ideal((3, 4)), seed=0)
    mask = torch.rand(7, 9, generator=torch.Generator().manual_seed(0)) > 0.5
    mask_analog_linear(layer, mask)
    w = layer.get_weights()[0]
    assert bool((w[~mask] == 0).all()) and bool((w[mask] != 0).all())
