"""convert_to_analog / convert_to_digital on small models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from insitu import (
    AnalogLinear,
    AnalogSGD,
    ConfigError,
    IdealDevice,
    IOConfig,
    TileConfig,
)
from insitu.nn import AnalogConv1d, AnalogConv2d, convert_to_analog, convert_to_digital
from insitu.presets import get_preset

IDEAL = TileConfig(device=IdealDevice(), forward=IOConfig.perfect(), backward=IOConfig.perfect())


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),  # 8x8 -> 4x4
        nn.Conv2d(4, 6, 3, groups=2, bias=False),  # -> 2x2
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 5),
    )


def _x() -> torch.Tensor:
    return torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("bias_on_array", [True, False])
def test_ideal_conversion_keeps_outputs_and_leaves_the_original_alone(bias_on_array):
    model = _cnn()
    analog = convert_to_analog(model, IDEAL, bias_on_array=bias_on_array)
    assert isinstance(analog[0][0], AnalogConv2d) and isinstance(analog[1], AnalogConv2d)
    assert isinstance(analog[4], AnalogLinear)
    assert analog[1].groups == 2 and analog[1].get_weights()[1] is None
    assert analog[0][0].padding == (1, 1) and analog[0][0].bias_on_array == bias_on_array
    assert type(model[0][0]) is nn.Conv2d and type(model[4]) is nn.Linear  # a copy was converted
    x = _x()
    torch.testing.assert_close(analog(x), model(x))


def test_per_layer_function_chooses_configs_and_none_keeps_a_layer_digital():
    model = _cnn()
    seen = []

    def choose(name, layer):
        seen.append((name, type(layer).__name__))
        return IDEAL if isinstance(layer, nn.Conv2d) else None

    analog = convert_to_analog(model, choose)
    assert seen == [("0.0", "Conv2d"), ("1", "Conv2d"), ("4", "Linear")]
    assert isinstance(analog[0][0], AnalogConv2d) and isinstance(analog[1], AnalogConv2d)
    assert type(analog[4]) is nn.Linear
    torch.testing.assert_close(analog(_x()), model(_x()))
    # The result trains with AnalogSGD: analog tiles and the digital Linear both move.
    before = [analog[1].get_weights()[0], analog[4].weight.detach().clone()]
    opt = AnalogSGD(analog.parameters(), lr=0.1)
    analog(_x()).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before[0], analog[1].get_weights()[0])
    assert not torch.equal(before[1], analog[4].weight)


def test_bad_config_names_the_layer_and_the_type():
    def bad(name, layer):
        return "floating-point"

    with pytest.raises(ConfigError, match=r"returned a str for layer '0\.0' \(Conv2d\)"):
        convert_to_analog(_cnn(), bad)
    with pytest.raises(ConfigError, match="config must be a TileConfig or a function.*got dict"):
        convert_to_analog(_cnn(), {"device": "ideal"})


def test_weights_are_clipped_to_the_device_bounds():
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.fill_(5.0)
    analog = convert_to_analog(layer, get_preset("gokmen-vlasov-2016"))
    assert isinstance(analog, AnalogLinear)  # a bare layer is replaced, not modified
    w, _ = analog.get_weights()
    assert torch.equal(w, analog.tile.device_params[5, :, :4])  # each at its own upper bound


def test_inplace_conversion_modifies_the_model():
    model = _cnn()
    out = convert_to_analog(model, IDEAL, inplace=True)
    assert out is model and isinstance(model[0][0], AnalogConv2d)
    back = convert_to_digital(model, inplace=True)
    assert back is model and type(model[0][0]) is nn.Conv2d


def test_digital_round_trip_gives_identical_outputs_after_analog_training():
    model = _cnn()
    analog = convert_to_analog(model, IDEAL)
    opt = AnalogSGD(analog.parameters(), lr=0.05)
    analog(_x()).pow(2).sum().backward()
    opt.step()  # the analog weights now differ from the original model's
    digital = convert_to_digital(analog)
    assert [type(m) for m in digital.modules()] == [type(m) for m in model.modules()]
    assert isinstance(analog[0][0], AnalogConv2d)  # the analog model was copied, not changed
    w, b = analog[0][0].get_weights()
    assert torch.equal(digital[0][0].weight, w) and torch.equal(digital[0][0].bias, b)
    assert digital[1].bias is None and digital[1].groups == 2
    x = _x()
    torch.testing.assert_close(digital(x), analog(x))
    assert not torch.allclose(digital(x), model(x))
    again = convert_to_analog(digital, IDEAL)
    assert torch.equal(again(x), analog(x))


def test_conv1d_models_convert_both_ways():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3, stride=2, dilation=2, padding=2), nn.Tanh(), nn.Conv1d(4, 2, 1))
    analog = convert_to_analog(model, IDEAL)
    assert isinstance(analog[0], AnalogConv1d) and analog[0].stride == (2,) and analog[0].dilation == (2,)
    x = torch.randn(2, 2, 9)
    torch.testing.assert_close(analog(x), model(x))
    torch.testing.assert_close(convert_to_digital(analog)(x), model(x))


def test_non_zero_padding_modes_and_linear_subclasses_are_left_to_the_user():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten(), nn.Linear(2 * 16, 2))
    with pytest.raises(ValueError, match="layer '0' uses padding_mode='reflect'"):
        convert_to_analog(model, IDEAL)
    analog = convert_to_analog(model, lambda name, layer: None if name == "0" else IDEAL)
    assert type(analog[0]) is nn.Conv2d and isinstance(analog[2], AnalogLinear)
    # nn.MultiheadAttention reads its out_proj's weight directly: that Linear subclass stays digital.
    attention = convert_to_analog(nn.MultiheadAttention(4, 2), IDEAL)
    assert type(attention.out_proj) is not AnalogLinear
    q = torch.randn(3, 1, 4)
    assert attention(q, q, q)[0].shape == (3, 1, 4)
