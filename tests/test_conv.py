"""AnalogConv1d/AnalogConv2d: equivalence with torch on ideal hardware, the paper's mapping, errors, state."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from insitu import AnalogSGD, ConstantStepDevice, IdealDevice, IOConfig, TileConfig
from insitu.nn import AnalogConv1d, AnalogConv2d
from insitu.presets import get_preset

IDEAL = TileConfig(device=IdealDevice(), forward=IOConfig.perfect(), backward=IOConfig.perfect())


def _copy_weights(analog, digital):
    w, b = analog.get_weights()
    with torch.no_grad():
        digital.weight.copy_(w)
        if b is not None:
            digital.bias.copy_(b)


def _check_against_torch(analog, digital, shape, steps=3):
    """Outputs, input gradients and SGD trajectories agree; returns the output spatial size."""
    _copy_weights(analog, digital)
    w0 = digital.weight.detach().clone()
    opt_a = AnalogSGD(analog.parameters(), lr=0.01)
    opt_d = torch.optim.SGD(digital.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(*shape, generator=gen)
        xa, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yd = analog(xa), digital(xd)
        assert ya.shape == yd.shape
        torch.testing.assert_close(ya, yd)
        target = torch.randn(yd.shape, generator=gen)
        for y, opt in ((ya, opt_a), (yd, opt_d)):
            opt.zero_grad()
            ((y - target) ** 2).sum().backward()
            opt.step()
        torch.testing.assert_close(xa.grad, xd.grad)
    w, b = analog.get_weights()
    torch.testing.assert_close(w, digital.weight.detach())
    assert (w - w0).abs().max() > 0.05  # the steps did move the weights
    if digital.bias is None:
        assert b is None
    else:
        torch.testing.assert_close(b, digital.bias.detach())
    return yd.shape[2:]


CONV2D_CASES = {
    "plain": {"kernel_size": 3},
    "stride2-pad1": {"kernel_size": 3, "stride": 2, "padding": 1},
    "dilation2": {"kernel_size": 3, "dilation": 2},
    "groups2": {"kernel_size": 3, "groups": 2, "padding": 1},
    "digital-bias": {"kernel_size": 3, "bias_on_array": False},
    "no-bias": {"kernel_size": 3, "bias": False},
    "non-square": {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0), "dilation": (2, 1)},
    "same": {"kernel_size": (2, 3), "padding": "same"},
    "valid-groups4-digital-bias": {"kernel_size": 1, "padding": "valid", "groups": 4, "bias_on_array": False},
}


@pytest.mark.parametrize("case", CONV2D_CASES)
@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's own note on even kernels
def test_ideal_conv2d_matches_torch_outputs_gradients_and_sgd(case):
    kwargs = dict(CONV2D_CASES[case])
    torch_kwargs = {k: v for k, v in kwargs.items() if k != "bias_on_array"}
    analog = AnalogConv2d(4, 8, config=IDEAL, seed=3, **kwargs)
    digital = nn.Conv2d(4, 8, **torch_kwargs)
    out = _check_against_torch(analog, digital, (2, 4, 7, 6))
    # The paper's mapping: every output pixel of every image is one rank-1 update, on every tile.
    assert len(analog.tiles) == kwargs.get("groups", 1)
    for tile in analog.tiles:
        assert tile.counters.rank1_updates == 3 * 2 * out[0] * out[1]


CONV1D_CASES = {
    "plain": {"kernel_size": 3},
    "stride2-pad2-dilation2": {"kernel_size": 3, "stride": 2, "padding": 2, "dilation": 2},
    "groups2-digital-bias": {"kernel_size": 2, "groups": 2, "bias_on_array": False},
    "no-bias-same": {"kernel_size": 4, "bias": False, "padding": "same"},
}


@pytest.mark.parametrize("case", CONV1D_CASES)
@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's own note on even kernels
def test_ideal_conv1d_matches_torch_outputs_gradients_and_sgd(case):
    kwargs = dict(CONV1D_CASES[case])
    torch_kwargs = {k: v for k, v in kwargs.items() if k != "bias_on_array"}
    analog = AnalogConv1d(4, 6, config=IDEAL, seed=3, **kwargs)
    digital = nn.Conv1d(4, 6, **torch_kwargs)
    (length,) = _check_against_torch(analog, digital, (3, 4, 11))
    for tile in analog.tiles:
        assert tile.counters.rank1_updates == 3 * 3 * length


def test_array_shape_is_the_papers_kernel_matrix():
    layer = AnalogConv2d(3, 8, 5, seed=0)
    assert layer.tile.weight.shape == (8, 5 * 5 * 3 + 1)  # M × (k²d + 1)
    grouped = AnalogConv2d(4, 6, 3, groups=2, bias_on_array=False, seed=0)
    assert [t.weight.shape for t in grouped.tiles] == [(3, 9 * 2)] * 2
    assert grouped.bias.shape == (6,)
    assert AnalogConv1d(2, 4, 3, seed=0).tile.weight.shape == (4, 3 * 2 + 1)


def test_unbatched_inputs_are_accepted_like_torch():
    analog = AnalogConv2d(2, 3, 3, config=IDEAL, seed=1)
    digital = nn.Conv2d(2, 3, 3)
    _copy_weights(analog, digital)
    x = torch.randn(2, 5, 5)
    torch.testing.assert_close(analog(x), digital(x))
    analog1 = AnalogConv1d(2, 3, 3, config=IDEAL, seed=1)
    digital1 = nn.Conv1d(2, 3, 3)
    _copy_weights(analog1, digital1)
    x1 = torch.randn(2, 7)
    torch.testing.assert_close(analog1(x1), digital1(x1))


def test_one_step_gives_one_rank1_update_per_patch_on_a_pulsed_array():
    layer = AnalogConv2d(2, 4, 3, stride=2, padding=1, groups=2, config=get_preset("gokmen-vlasov-2016"), seed=0)
    opt = AnalogSGD(layer.parameters(), lr=0.01)
    x = torch.rand(3, 2, 9, 8, generator=torch.Generator().manual_seed(0))
    y = layer(x)
    assert y.shape == (3, 4, 5, 4)
    y.pow(2).sum().backward()
    opt.step()
    assert [t.counters.rank1_updates for t in layer.tiles] == [3 * 5 * 4] * 2


def test_seed_fixes_initial_weights_and_init_matches_torch_bounds():
    a = AnalogConv2d(4, 6, (3, 2), groups=2, config=IDEAL, seed=7)
    b = AnalogConv2d(4, 6, (3, 2), groups=2, config=IDEAL, seed=7)
    c = AnalogConv2d(4, 6, (3, 2), groups=2, config=IDEAL, seed=8)
    assert torch.equal(a.get_weights()[0], b.get_weights()[0])
    assert not torch.equal(a.get_weights()[0], c.get_weights()[0])
    assert a.tiles[0].seed != a.tiles[1].seed
    w, bias = a.get_weights()
    bound = 1 / (2 * 3 * 2) ** 0.5  # fan_in = in_channels/groups · k_h · k_w
    assert w.abs().max() <= bound and bias.abs().max() <= bound
    assert w.abs().max() > 0.8 * bound


def test_set_weights_programs_each_group_and_keeps_array_bias():
    layer = AnalogConv2d(4, 6, 3, groups=2, config=IDEAL, seed=0)
    _, bias = layer.get_weights()
    weight = torch.randn(6, 2, 3, 3)
    layer.set_weights(weight)
    w, b = layer.get_weights()
    assert torch.equal(w, weight) and torch.equal(b, bias)
    layer.set_weights(weight, torch.arange(6.0))
    assert torch.equal(layer.get_weights()[1], torch.arange(6.0))
    with pytest.raises(ValueError, match=r"shape \(6, 2, 3, 3\)"):
        layer.set_weights(torch.zeros(6, 4, 3, 3))
    with pytest.raises(ValueError, match="no bias"):
        AnalogConv1d(2, 2, 3, bias=False).set_weights(torch.zeros(2, 2, 3), torch.zeros(2))


def test_pulsed_conv_layer_learns_a_convolution():
    """A constant-step RPU conv layer (2016 preset) fits a fixed teacher convolution."""
    layer = AnalogConv2d(2, 3, 3, config=get_preset("gokmen-vlasov-2016"), seed=4)
    gen = torch.Generator().manual_seed(1)
    teacher_w = torch.randn(3, 2, 3, 3, generator=gen) * 0.2
    teacher_b = torch.randn(3, generator=gen) * 0.1
    x_test = torch.rand(64, 2, 6, 6, generator=gen)

    def error():
        with torch.no_grad():
            return float(((layer(x_test) - F.conv2d(x_test, teacher_w, teacher_b)) ** 2).mean())

    opt = AnalogSGD(layer.parameters(), lr=0.02)
    before = error()
    for _ in range(300):
        x = torch.rand(1, 2, 6, 6, generator=gen)
        opt.zero_grad()
        (0.5 * ((layer(x) - F.conv2d(x, teacher_w, teacher_b)) ** 2).sum()).backward()
        opt.step()
    assert error() < 0.1 * before
    assert layer.tile.counters.rank1_updates == 300 * 16  # (6 − 3 + 1)² patches per image


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"in_channels": 3, "out_channels": 4, "kernel_size": 3, "groups": 2}, "in_channels=3 is not divisible by groups=2"),
        ({"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 4}, "out_channels=6 is not divisible by groups=4"),
        ({"in_channels": 2, "out_channels": 2, "kernel_size": (3, 0)}, "kernel_size must be integers >= 1"),
        ({"in_channels": 2, "out_channels": 2, "kernel_size": 3, "stride": 0}, "stride must be integers >= 1"),
        ({"in_channels": 2, "out_channels": 2, "kernel_size": 3, "dilation": (1, 0)}, "dilation must be integers >= 1"),
        ({"in_channels": 2, "out_channels": 2, "kernel_size": 3, "padding": -1}, "padding cannot be negative"),
        ({"in_channels": 2, "out_channels": 2, "kernel_size": (3, 3, 3)}, "tuple of 2 integers"),
        ({"in_channels": 2, "out_channels": 2, "kernel_size": 3, "padding": "full"}, "'same' or 'valid'"),
        ({"in_channels": 2, "out_channels": 2, "kernel_size": 3, "padding": "same", "stride": 2}, "needs stride 1"),
        ({"in_channels": 2, "out_channels": 2, "kernel_size": 3, "padding_mode": "reflect"}, "only 'zeros'"),
        ({"in_channels": 0, "out_channels": 2, "kernel_size": 3}, "in_channels must be an integer >= 1"),
    ],
)
def test_bad_arguments_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AnalogConv2d(**kwargs)


def test_bad_inputs_name_the_expected_shape():
    layer = AnalogConv2d(3, 4, 3, padding=1, dilation=2)
    with pytest.raises(ValueError, match=r"expected input with 3 channels .*got 2"):
        layer(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"expected a 4-d input \(N, C, H, W\).*got a 2-d input"):
        layer(torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"kernel of size \(5, 5\) is larger than the padded input of size \(4, 10\)"):
        layer(torch.randn(1, 3, 2, 8))
    layer1 = AnalogConv1d(2, 4, 5)
    with pytest.raises(ValueError, match=r"expected a 3-d input \(N, C, L\).*got a 4-d input"):
        layer1(torch.randn(1, 2, 3, 8))
    with pytest.raises(ValueError, match="expected input with 2 channels"):
        layer1(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match=r"kernel of size \(5,\) is larger than the padded input of size \(4,\)"):
        layer1(torch.randn(1, 2, 4))


def test_state_dict_round_trip_restores_outputs_and_devices():
    config = TileConfig(device=ConstantStepDevice(), forward=IOConfig.perfect(), backward=IOConfig.perfect())
    layer = AnalogConv2d(4, 6, 3, padding=1, groups=2, config=config, seed=11)
    opt = AnalogSGD(layer.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.rand(2, 4, 5, 5, generator=gen)).pow(2).sum().backward()
        opt.step()
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    restored = AnalogConv2d(4, 6, 3, padding=1, groups=2, config=config, seed=999)
    x = torch.rand(2, 4, 5, 5, generator=gen)
    assert not torch.equal(restored(x), layer(x))
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert torch.equal(restored(x), layer(x))
    for mine, theirs in zip(restored.tiles, layer.tiles):
        assert torch.equal(mine.device_params, theirs.device_params)
        assert mine.counters.to_dict() == theirs.counters.to_dict()


def test_extra_repr_lists_hyper_parameters():
    text = repr(AnalogConv2d(4, 8, 3, stride=2, padding=1, groups=2, bias_on_array=False))
    assert "4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=2, bias=digital" in text
    assert "bias=array" in repr(AnalogConv1d(1, 2, 3))
    assert "bias=False" in repr(AnalogConv1d(1, 2, 3, bias=False))


def test_deep_copy_keeps_training_on_its_own_tiles():
    layer = AnalogConv2d(2, 2, 2, groups=2, config=get_preset("gokmen-vlasov-2016"), seed=2)
    twin = copy.deepcopy(layer)
    x = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for model in (layer, twin):
        opt = AnalogSGD(model.parameters(), lr=0.05)
        model(x).sum().backward()
        opt.step()
    assert torch.equal(layer.get_weights()[0], twin.get_weights()[0])
    assert twin.tiles[1].counters.rank1_updates == 9
    assert layer(torch.zeros(0, 2, 4, 4)).shape == (0, 2, 3, 3)  # an empty batch, as torch allows
