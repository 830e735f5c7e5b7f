"""Fixed-point emulation: exact rounding and saturation on known values, SGD in fixed point, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from insitu.config import ConfigError
from insitu.sparse import FixedPointConfig, FixedPointFormat, FixedPointSGD, quantize
from insitu.sparse.fixed_point import (
    FixedPointQuantizer,
    insert_quantizers,
    quantize_stochastic,
)
from insitu.sparse.training import SparseTrainConfig

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


# --- stochastic rounding of updates and per-quantity formats -----------------------------------


@pytest.mark.parametrize(
    "value, uniform, expected",
    [
        # 8:3 has step 1/16 (values exact in binary). 0.078125 = 1.25 steps: floor(1.25 + u) is
        # 2 for u >= 0.75, else 1.
        (0.078125, 0.74, 0.0625),
        (0.078125, 0.75, 0.125),
        # -0.09375 = -1.5 steps: floor(-1.5 + u) is -1 for u >= 0.5, else -2.
        (-0.09375, 0.49, -0.125),
        (-0.09375, 0.5, -0.0625),
        (0.0625, 0.999, 0.0625),  # values on the grid never move
        (-8.0, 0.999, -8.0),
        (100.0, 0.0, 7.9375),  # saturates like rounding to nearest
        (-100.0, 0.5, -8.0),
    ],
)
def test_stochastic_rounding_on_known_draws(value, uniform, expected):
    result = quantize_stochastic(torch.tensor([value]), Q8_3, uniform=torch.tensor([uniform], dtype=torch.float64))
    assert result.item() == expected


def test_stochastic_rounding_is_unbiased_on_known_values():
    # 0.3 steps (0.01875) rounds up with probability 0.3; -2.75 steps with probability 0.25 to -2.
    n = 200_000
    gen = torch.Generator().manual_seed(1)
    for steps, p_up in ((0.3, 0.3), (-2.75, 0.25), (5.5, 0.5)):
        x = torch.full((n,), steps / 16)
        q = quantize_stochastic(x, Q8_3, generator=gen) * 16
        low = float(torch.floor(torch.tensor(steps)))
        assert set(q.unique().tolist()) == {low, low + 1}  # only the two neighbouring words
        frac_up = float((q == low + 1).double().mean())
        # binomial standard deviation sqrt(p(1-p)/n) <= 0.0012; allow 5 of them
        assert abs(frac_up - p_up) < 5 * (p_up * (1 - p_up) / n) ** 0.5
        assert abs(float(q.double().mean()) - steps) < 0.01


def test_stochastic_rounding_is_deterministic_with_a_seed():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 0.05
    a = quantize_stochastic(x, Q8_3, generator=torch.Generator().manual_seed(7))
    b = quantize_stochastic(x, Q8_3, generator=torch.Generator().manual_seed(7))
    c = quantize_stochastic(x, Q8_3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(quantize_stochastic(x, None), x)
    with pytest.raises(ValueError, match="one draw per element"):
        quantize_stochastic(x, Q8_3, uniform=torch.rand(3, dtype=torch.float64))


def test_stochastic_sgd_keeps_updates_that_nearest_rounding_loses():
    # η·∂w = 0.25·0.05 = 0.0125 is 0.2 of a step: rounding to nearest never moves w, stochastic
    # rounding moves it by one step in about 20% of the steps, so on average by the exact update.
    config = FixedPointConfig.uniform(Q8_3, learning_rate_exponent=2, update_rounding="stochastic")
    nearest = nn.Parameter(torch.zeros(10_000))
    stochastic = nn.Parameter(torch.zeros(10_000))
    opt_nearest = FixedPointSGD([nearest], FixedPointConfig.uniform(Q8_3, learning_rate_exponent=2))
    opt_stochastic = FixedPointSGD([stochastic], config, seed=3)
    for p, opt in ((nearest, opt_nearest), (stochastic, opt_stochastic)):
        p.grad = torch.full_like(p, -0.05)  # w ← w − η·∂w moves w up
        opt.step()
    assert torch.count_nonzero(nearest) == 0
    assert set(stochastic.unique().tolist()) == {0.0, 0.0625}
    assert abs(float(stochastic.detach().mean()) - 0.0125) < 5 * 0.0625 * (0.2 * 0.8 / 10_000) ** 0.5


def test_stochastic_sgd_repeats_with_the_same_seed_and_needs_one():
    config = FixedPointConfig.uniform(Q8_3, learning_rate_exponent=2, update_rounding="stochastic")
    runs = []
    for seed in (5, 5, 6):
        p = nn.Parameter(torch.zeros(1000))
        opt = FixedPointSGD([p], config, seed=seed)
        for _ in range(3):
            p.grad = torch.linspace(-0.2, 0.2, 1000)
            opt.step()
        runs.append(p.detach().clone())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    with pytest.raises(ConfigError, match="seed"):
        FixedPointSGD([nn.Parameter(torch.zeros(2))], config)
    with pytest.raises(ConfigError, match="update_rounding"):
        FixedPointConfig.uniform(Q8_3, learning_rate_exponent=2, update_rounding="floor")


def test_sparse_train_config_per_quantity_formats():
    config = SparseTrainConfig(fixed_point="10:4", weight_format="10:1", error_format="10:0", update_format="10:1",
                               learning_rate_exponent=6, update_rounding="stochastic")
    fixed = config.fixed_point_config()
    assert [str(f) for f in (fixed.weights, fixed.activations, fixed.errors, fixed.updates)] == ["10:1", "10:4", "10:0", "10:1"]
    assert fixed.update_rounding == "stochastic"
    # A learning rate the per-quantity weight format cannot hold is still refused.
    with pytest.raises(ConfigError, match="weights"):
        SparseTrainConfig(fixed_point="12:4", weight_format="8:3", learning_rate_exponent=6)
    with pytest.raises(ConfigError, match="needs fixed_point"):
        SparseTrainConfig(weight_format="10:1")


def test_fixed_point_weight_decay_is_part_of_the_rounded_update():
    # w = 4, ∂w = 0, λ = 0.5, η = 0.25: the update η λ w = 0.5 moves w to 3.5 (exact in 8:3); with
    # ∂w = 1 as well, η (1 + 2) = 0.75. λ = 0 leaves the plain update.
    for decay, grad, expected in ((0.5, 0.0, 3.5), (0.5, 1.0, 3.25), (0.0, 1.0, 3.75)):
        p = nn.Parameter(torch.tensor([4.0]))
        config = FixedPointConfig.uniform(Q8_3, learning_rate_exponent=2).replace(weight_decay=decay)
        opt = FixedPointSGD([p], config)
        p.grad = torch.tensor([grad])
        opt.step()
        assert p.item() == expected
    with pytest.raises(ConfigError, match="weight_decay"):
        FixedPointConfig(weight_decay=-1.0)
    # The sparse trainer's weight_decay reaches the fixed-point optimizer.
    assert SparseTrainConfig(fixed_point="16:5", weight_decay=1e-3).fixed_point_config().weight_decay == 1e-3
