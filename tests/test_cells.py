"""Multi-device unit cells (Gokmen, Onen & Haensch 2017): #d devices per weight, updated together."""

from __future__ import annotations

import io

import pytest
import torch

from insitu import AnalogLinear, AnalogSGD, AnalogTile, ConfigError, ConstantStepDevice, IdealDevice, IOConfig, TileConfig
from insitu.update import PulseUpdateConfig

LR, BL = 0.01, 10


def _tile(devices, readout="mean", dtod=0.3, c2c=0.3, mode="sequential", pulse_type="stochastic", seed=0, size=(60, 60)):
    device = ConstantStepDevice(dw_min=0.001, dw_min_dtod=dtod, dw_min_std=c2c, w_max=10.0, w_min=-10.0, w_max_dtod=0.0, w_min_dtod=0.0)
    config = TileConfig(
        device=device, update=PulseUpdateConfig(bl=BL, mode=mode, pulse_type=pulse_type),
        devices_per_weight=devices, cell_readout=readout,
    )
    tile = AnalogTile(*size, config, seed=seed)
    tile.set_weights(torch.zeros(size))
    return tile


def _full_scale_update(tile):
    """x = δ-like inputs that fire every line in every slot: each cross-point sees exactly BL coincidences."""
    out, n_in = tile.out_features, tile.in_features
    x = torch.ones(1, n_in)
    d = -torch.ones(1, out)  # weights grow
    tile.stash(x, d)
    tile.update(LR)  # C = 1: every probability is 1
    return tile.get_weights()


@pytest.mark.parametrize("dtod, c2c", [(0.3, 0.0), (0.0, 0.3)])
def test_device_and_cycle_variation_of_the_weight_shrink_as_one_over_sqrt_devices(dtod, c2c):
    spreads = {}
    for devices in (1, 4, 16):
        change = _full_scale_update(_tile(devices, dtod=dtod, c2c=c2c))
        assert torch.allclose(change.mean(), torch.tensor(BL * 0.001), rtol=0.02)
        spreads[devices] = float(change.std() / change.mean())
    expected_single = dtod if dtod else c2c / BL**0.5
    n = 3600  # cross-points: relative standard error of a std estimate ~ 1/sqrt(2n)
    tol = 5 / (2 * n) ** 0.5
    for devices, spread in spreads.items():
        assert spread == pytest.approx(expected_single / devices**0.5, rel=tol + 0.02), (devices, spreads)


def test_sum_readout_keeps_the_mean_update_and_multiplies_the_range():
    x = torch.tensor([[0.5, -0.2, 0.9]])
    d = torch.tensor([[0.3, -0.6]])
    for readout in ("mean", "sum"):
        tile = _tile(4, readout=readout, dtod=0.0, c2c=0.0, pulse_type="expected", size=(2, 3))
        tile.stash(x, d)
        tile.update(LR)
        torch.testing.assert_close(tile.get_weights(), -LR * d.t() @ x, rtol=1e-5, atol=1e-9)
    summed = _tile(4, readout="sum", size=(2, 3))
    summed.set_weights(torch.full((2, 3), 100.0))
    assert torch.allclose(summed.get_weights(), torch.full((2, 3), 40.0))  # 4 devices at their bound 10


@pytest.mark.parametrize("mode", ["sequential", "batched"])
def test_multi_device_layers_train_in_both_update_modes_and_restore(mode):
    config = TileConfig(update=PulseUpdateConfig(mode=mode), devices_per_weight=3)
    torch.manual_seed(0)
    layer = AnalogLinear(20, 4, config=config)
    opt = AnalogSGD(layer.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    target = torch.randn(4, 20, generator=gen) * 0.1
    x_test = torch.rand(200, 20, generator=gen)
    x_test[:, :10] = 0  # exercises the sparse-input path of the sequential update

    def error():
        with torch.no_grad():
            return float(((layer(x_test) - x_test @ target.t()) ** 2).mean())

    before = error()
    for _ in range(600):
        x = torch.rand(4, 20, generator=gen)
        x[:, :10] = 0
        opt.zero_grad()
        (0.5 * ((layer(x) - x @ target.t()) ** 2).sum()).backward()
        opt.step()
    assert error() < 0.3 * before
    assert layer.tile.weight.shape == (4, 21, 3) and layer.tile.device_params.shape == (6, 4, 21, 3)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    restored = AnalogLinear(20, 4, config=config, seed=123)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert torch.equal(restored.get_weights()[0], layer.get_weights()[0])


def test_bad_unit_cells_are_refused():
    with pytest.raises(ConfigError, match="devices_per_weight"):
        TileConfig(devices_per_weight=0)
    with pytest.raises(ConfigError, match="IdealDevice"):
        TileConfig(device=IdealDevice(), forward=IOConfig.perfect(), backward=IOConfig.perfect(), devices_per_weight=2)
    with pytest.raises(ConfigError, match="cell_readout"):
        TileConfig(cell_readout="median")
