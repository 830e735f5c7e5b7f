"""AnalogLinear + AnalogSGD: equivalence with torch.nn on ideal hardware, state, errors."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import insitu.tile
from insitu import AnalogLinear, AnalogSGD, ConfigError, IdealDevice, IOConfig, TileConfig
from insitu.presets import get_preset

IDEAL = TileConfig(device=IdealDevice(), forward=IOConfig.perfect(), backward=IOConfig.perfect())


def _pair(bias_on_array: bool):
    torch.manual_seed(3)
    analog = AnalogLinear(7, 5, config=IDEAL, bias_on_array=bias_on_array)
    digital = nn.Linear(7, 5)
    w, b = analog.get_weights()
    with torch.no_grad():
        digital.weight.copy_(w)
        digital.bias.copy_(b)
    return analog, digital


@pytest.mark.parametrize("bias_on_array", [True, False])
def test_ideal_layer_matches_torch_linear_outputs_gradients_and_sgd(bias_on_array):
    analog, digital = _pair(bias_on_array)
    opt_a = AnalogSGD(analog.parameters(), lr=0.05)
    opt_d = torch.optim.SGD(digital.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(4, 7, generator=gen)
        target = torch.randn(4, 5, generator=gen)
        xa, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yd = analog(xa), digital(xd)
        torch.testing.assert_close(ya, yd)
        for y, xx, opt in ((ya, xa, opt_a), (yd, xd, opt_d)):
            opt.zero_grad()
            ((y - target) ** 2).sum().backward()
            opt.step()
        torch.testing.assert_close(xa.grad, xd.grad)
    w, b = analog.get_weights()
    torch.testing.assert_close(w, digital.weight.detach())
    torch.testing.assert_close(b, digital.bias.detach())
    assert analog.tile.counters.rank1_updates == 20


def test_leading_dimensions_are_flattened_and_restored():
    analog, digital = _pair(True)
    x = torch.randn(2, 3, 7)
    torch.testing.assert_close(analog(x), digital(x))
    assert analog(x).shape == (2, 3, 5)


def test_shape_mismatch_names_the_expected_size():
    layer = AnalogLinear(7, 5)
    with pytest.raises(ValueError, match="expected inputs with 7 features"):
        layer(torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"shape \(5, 7\)"):
        layer.set_weights(torch.zeros(7, 5))


def test_weights_are_programmed_within_device_bounds():
    layer = AnalogLinear(20, 10, config=get_preset("gokmen-vlasov-2016"), seed=1)
    layer.set_weights(torch.full((10, 20), 5.0))
    w, _ = layer.get_weights()
    params = layer.tile.device_params
    assert torch.equal(w, params[5, :, :20])  # every weight sits at its own upper bound


def _train(layer, steps, seed):
    opt = AnalogSGD(layer.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.rand(1, layer.in_features, generator=gen)
        opt.zero_grad()
        (layer(x) ** 2).sum().backward()
        opt.step()


def test_state_dict_restores_devices_weights_and_generator_bit_identically():
    config = get_preset("gokmen-vlasov-2016")
    layer = AnalogLinear(12, 6, config=config, seed=11)
    _train(layer, 20, seed=0)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    restored = AnalogLinear(12, 6, config=config, seed=999)  # different devices until loaded
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert torch.equal(restored.tile.device_params, layer.tile.device_params)
    assert restored.tile.counters.to_dict() == layer.tile.counters.to_dict()
    _train(layer, 20, seed=1)
    _train(restored, 20, seed=1)
    assert torch.equal(restored.get_weights()[0], layer.get_weights()[0])


def test_loading_into_a_layer_with_another_config_is_refused():
    layer = AnalogLinear(4, 3, config=get_preset("gokmen-vlasov-2016"))
    other = AnalogLinear(4, 3, config=get_preset("gokmen-vlasov-2016").replace(update=get_preset("gokmen-vlasov-2016").update.replace(bl=20)))
    with pytest.raises(ConfigError, match="different config"):
        other.load_state_dict(layer.state_dict())


def test_same_seed_gives_bit_identical_training_and_deepcopy_keeps_training():
    config = get_preset("gokmen-vlasov-2016")
    a = AnalogLinear(10, 4, config=config, seed=5)
    b = AnalogLinear(10, 4, config=config, seed=5)
    _train(a, 30, seed=2)
    _train(b, 30, seed=2)
    assert torch.equal(a.get_weights()[0], b.get_weights()[0])
    c = copy.deepcopy(a)
    _train(a, 10, seed=3)
    _train(c, 10, seed=3)
    assert torch.equal(a.get_weights()[0], c.get_weights()[0])
    assert c.tile.counters.rank1_updates == a.tile.counters.rank1_updates


def test_backward_passes_without_any_update_warn(monkeypatch):
    # A torch optimizer given analog weights now refuses at its first step (tests/test_misuse.py);
    # a loop that never steps at all is still caught by the stash.
    monkeypatch.setattr(insitu.tile, "_PENDING_WARN", 3)
    layer = AnalogLinear(3, 2)
    with pytest.warns(UserWarning, match="AnalogSGD"):
        for _ in range(3):
            layer(torch.rand(1, 3)).sum().backward()


def test_analog_sgd_rejects_bad_learning_rate():
    with pytest.raises(ValueError, match="lr must be a positive number"):
        AnalogSGD(AnalogLinear(3, 2).parameters(), lr=-0.1)


def test_pulsed_layer_learns_a_linear_map():
    """A constant-step RPU layer fits y = A x well below the initial error."""
    torch.manual_seed(0)
    config = get_preset("gokmen-vlasov-2016")
    layer = AnalogLinear(8, 3, config=config, seed=4)
    target = torch.randn(3, 8, generator=torch.Generator().manual_seed(1)) * 0.2
    opt = AnalogSGD(layer.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(2)
    x_test = torch.rand(256, 8, generator=gen)

    def error():
        with torch.no_grad():
            return float(((layer(x_test) - x_test @ target.t()) ** 2).mean())

    before = error()
    for _ in range(3000):
        x = torch.rand(1, 8, generator=gen)
        opt.zero_grad()
        (0.5 * ((layer(x) - x @ target.t()) ** 2).sum()).backward()
        opt.step()
    assert error() < 0.1 * before


def test_analog_linear_with_a_bias_column_appends_the_constant_input_inside_the_product():
    from insitu.nn.functional import analog_linear
    from insitu.tile import AnalogTile

    tile = AnalogTile(3, 5, TileConfig(device=IdealDevice()), seed=0)
    w = torch.linspace(-1, 1, 15).reshape(3, 5)
    tile.set_weights(w)
    x = (torch.rand(2, 4) * 2 - 1).requires_grad_()  # inside the default input bound 1
    y = analog_linear(x, tile, bias_column=True)
    torch.testing.assert_close(y, x.detach() @ w[:, :4].t() + w[:, 4])
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(2, 3) @ w[:, :4])  # the bias column gets no gradient
    stashed, _ = tile.take_pending()
    assert stashed.shape == (2, 5) and bool((stashed[:, 4] == 1).all())  # the update trains the bias column
    with pytest.raises(ValueError, match="4 inputs and a bias column"):
        analog_linear(torch.randn(2, 5), tile, bias_column=True)
