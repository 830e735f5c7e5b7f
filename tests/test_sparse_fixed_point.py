"""Fixed-point emulation: exact rounding and saturation on known values, SGD in fixed point, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from insitu.config import ConfigError
from insitu.sparse import FixedPointConfig, FixedPointFormat, FixedPointSGD, quantize
from insitu.sparse.fixed_point import FixedPointQuantizer, insert_quantizers

# 8:3 = sign + 3 integer + 4 fraction bits: step 1/16, range [-8, 8 - 1/16].
Q8_3 = FixedPointFormat(integer_bits=3, fraction_bits=4)


def test_format_parse_and_range():
    fmt = FixedPointFormat.parse("12:3")
    assert (fmt.integer_bits, fmt.fraction_bits, fmt.total_bits) == (3, 8, 12)
    assert str(fmt) == "12:3"
    assert (Q8_3.step, Q8_3.min_value, Q8_3.max_value) == (0.0625, -8.0, 7.9375)


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.1, 0.125),  # 1.6 steps -> 2 steps
        (-0.1, -0.125),
        (0.03125, 0.0625),  # exactly half a step: ties go up (+∞)
        (-0.03125, 0.0),
        (0.09375, 0.125),  # 1.5 steps -> 2
        (-0.09375, -0.0625),  # -1.5 steps -> -1
        (7.9375, 7.9375),
        (7.97, 7.9375),  # rounds to 8, saturates to the largest word
        (100.0, 7.9375),
        (-8.0, -8.0),
        (-100.0, -8.0),
        (0.0, 0.0),
    ],
)
def test_rounding_and_saturation_on_known_values(value, expected):
    assert quantize(torch.tensor([value]), Q8_3).item() == expected


def test_quantize_none_is_identity_and_every_output_is_a_word():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 5
    assert torch.equal(quantize(x, None), x)
    q = quantize(x, Q8_3)
    assert torch.equal(q * 16, (q * 16).round())
    assert q.min() >= -8 and q.max() <= 7.9375


def test_quantizer_rounds_values_forward_and_errors_backward():
    coarse = FixedPointFormat(integer_bits=1, fraction_bits=1)  # step 0.5, range [-2, 1.5]
    layer = FixedPointQuantizer(Q8_3, coarse)
    x = torch.tensor([0.1, 3.3], requires_grad=True)
    y = layer(x)
    assert y.tolist() == [0.125, 3.3125]
    y.backward(torch.tensor([0.3, -7.0]))
    assert x.grad.tolist() == [0.5, -2.0]


def test_fixed_point_sgd_step_exact():
    p = nn.Parameter(torch.tensor([0.5, 7.9, -0.2]))
    opt = FixedPointSGD([p], FixedPointConfig.uniform(Q8_3, learning_rate_exponent=2))
    assert p.tolist() == [0.5, 7.875, -0.1875]  # rounded to the weight format when built
    p.grad = torch.tensor([0.3, -40.0, 0.01])
    opt.step()
    # 0.25·0.3 = 0.075 -> 0.0625; 0.25·(-40) = -10 saturates to -8, 7.875 + 8 saturates;
    # 0.25·0.01 = 0.0025 -> 0 (below half a step: the update is lost)
    assert p.tolist() == [0.4375, 7.9375, -0.1875]


def test_learning_rate_too_small_for_the_width_is_an_error():
    with pytest.raises(ConfigError, match="cannot hold the learning rate.*learning_rate_exponent <= 4"):
        FixedPointConfig.uniform("8:3", learning_rate_exponent=5)
    FixedPointConfig.uniform("8:3", learning_rate_exponent=4)  # 2^-4 is one step: allowed


def test_bad_formats():
    with pytest.raises(ConfigError, match="cannot hold a sign bit and 3 integer bits"):
        FixedPointFormat.parse("3:3")
    with pytest.raises(ConfigError, match="TOTAL:INTEGER"):
        FixedPointFormat.parse("twelve")
    with pytest.raises(ConfigError, match="integer >= 0"):
        FixedPointFormat(integer_bits=-1)
    with pytest.raises(ConfigError, match="exceeds 24"):
        FixedPointFormat(integer_bits=8, fraction_bits=20)


def test_fixed_point_training_learns_a_linear_rule():
    # A small regression in 16-bit fixed point reaches the float solution's neighbourhood.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(256, 4, generator=gen)
    y = x @ torch.tensor([[0.5], [-0.25], [0.75], [0.125]])
    model = insert_quantizers(nn.Sequential(nn.Linear(4, 1)), FixedPointConfig.uniform("16:3", 2))
    opt = FixedPointSGD(model.parameters(), FixedPointConfig.uniform("16:3", 2))
    for _ in range(300):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    assert ((model(x) - y) ** 2).mean().item() < 1e-3
    assert torch.equal(model[1].weight * 2**12, (model[1].weight * 2**12).round())
