"""Analog matrix-vector products: exactness, output noise, saturation, DAC/ADC quantisation,
noise management, bound management, validation.

Statistical checks use fixed seeds and tolerances of ``Z`` standard errors of the estimate.
"""

from __future__ import annotations

import math

import pytest
import torch

from insitu import ConfigError, IOConfig
from insitu.io import analog_mvm

Z = 5.0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(batch: int, n: int, seed: int, scale: float = 0.5) -> torch.Tensor:
    return (scale * torch.randn(batch, n, generator=gen(seed))).clamp(-1, 1)


def matrix(n_in: int, n_out: int, seed: int, scale: float = 0.3) -> torch.Tensor:
    return scale * torch.randn(n_in, n_out, generator=gen(seed))


IDENTITY = torch.ones(1, 1)


# ---------------------------------------------------------------------------------------------
# Exactness
# ---------------------------------------------------------------------------------------------


def test_perfect_io_is_exactly_x_at_m():
    x = 3 * torch.randn(17, 9, generator=gen(0))  # beyond any bound: perfect IO has none
    m = matrix(9, 5, 1, scale=4.0)
    y = analog_mvm(x, m, IOConfig.perfect(), gen(2))
    assert torch.equal(y, x @ m)
    assert y.shape == (17, 5)


def test_default_io_without_noise_is_exact_inside_the_input_range():
    x, m = inputs(20, 8, 0), matrix(8, 3, 1)
    assert x.abs().max() <= 1
    io = IOConfig()  # input bound 1, no noise, no output bound, no quantisation
    assert torch.equal(analog_mvm(x, m, io, gen(2)), x @ m)


# ---------------------------------------------------------------------------------------------
# Output noise
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_output_noise_is_zero_mean_with_std_out_noise(sigma):
    x, m = inputs(5000, 8, 0), matrix(8, 4, 1)
    y = analog_mvm(x, m, IOConfig(out_noise=sigma), gen(2))
    err = (y - x @ m).double()
    n = err.numel()
    assert abs(err.mean().item()) <= Z * sigma / math.sqrt(n)
    assert abs(err.std().item() - sigma) <= Z * sigma / math.sqrt(2 * n)
    # Independent across outputs of the same vector: correlation within sampling error.
    corr = torch.corrcoef(err.t())
    off = corr[~torch.eye(4, dtype=torch.bool)]
    assert off.abs().max() <= Z / math.sqrt(err.shape[0])
    # The noise does not depend on the input: the same std for a zero input.
    y0 = analog_mvm(torch.zeros(5000, 8), m, IOConfig(out_noise=sigma), gen(3)).double()
    assert abs(y0.std().item() - sigma) <= Z * sigma / math.sqrt(2 * y0.numel())


def test_output_noise_is_drawn_from_the_generator():
    x, m = inputs(10, 8, 0), matrix(8, 4, 1)
    io = IOConfig(out_noise=0.1)
    assert torch.equal(analog_mvm(x, m, io, gen(5)), analog_mvm(x, m, io, gen(5)))
    assert not torch.equal(analog_mvm(x, m, io, gen(5)), analog_mvm(x, m, io, gen(6)))


# ---------------------------------------------------------------------------------------------
# Saturation and input bound
# ---------------------------------------------------------------------------------------------


def test_output_saturation_clips_to_out_bound():
    x, m = inputs(500, 10, 0, scale=1.0), matrix(10, 6, 1, scale=1.0)
    exact = x @ m
    assert (exact.abs() > 2.0).any(), "precondition: some outputs beyond the bound"
    y = analog_mvm(x, m, IOConfig(out_bound=2.0), gen(2))
    assert torch.equal(y, exact.clamp(-2.0, 2.0))
    # With noise: never beyond the bound; far beyond it, exactly at it.
    y = analog_mvm(x, m, IOConfig(out_bound=2.0, out_noise=0.1), gen(3))
    assert (y.abs() <= 2.0).all()
    far = exact.abs() > 2.0 + 8 * 0.1
    assert far.any()
    assert torch.equal(y[far], 2.0 * exact[far].sign())


def test_input_bound_clips_inputs():
    x = torch.tensor([[-3.0], [-0.5], [0.25], [1.0], [2.5]])
    y = analog_mvm(x, IDENTITY, IOConfig(inp_bound=1.0), gen(0))
    assert y.flatten().tolist() == [-1.0, -0.5, 0.25, 1.0, 1.0]
    y = analog_mvm(x, IDENTITY, IOConfig(inp_bound=2.0), gen(0))
    assert y.flatten().tolist() == [-2.0, -0.5, 0.25, 1.0, 2.0]
    # No input bound: no clipping.
    y = analog_mvm(x, IDENTITY, IOConfig(inp_bound=None), gen(0))
    assert torch.equal(y, x)


# ---------------------------------------------------------------------------------------------
# DAC and ADC quantisation
# ---------------------------------------------------------------------------------------------


def _grid(lo: float, hi: float, step: float) -> torch.Tensor:
    """Points over [lo, hi], keeping away from the rounding ties (half-way between two levels)."""
    x = torch.linspace(lo, hi, 4001, dtype=torch.float64)
    frac = (x / step) - torch.floor(x / step)
    return x[(frac - 0.5).abs() > 1e-3].float().unsqueeze(1)


@pytest.mark.parametrize("bits, bound", [(2, 1.0), (3, 1.0), (4, 1.0), (5, 2.0), (8, 0.5)])
def test_dac_quantisation(bits, bound):
    step = bound / (2 ** (bits - 1) - 1)
    x = _grid(-1.5 * bound, 1.5 * bound, step)
    y = analog_mvm(x, IDENTITY, IOConfig(inp_bound=bound, inp_bits=bits), gen(0))
    level = torch.round(x.double().clamp(-bound, bound) / step)
    torch.testing.assert_close(y.double(), level * step, rtol=0, atol=1e-6 * bound)
    assert y.unique().numel() == 2**bits - 1
    assert torch.equal(level.unique(), torch.arange(-(2 ** (bits - 1) - 1), 2 ** (bits - 1), dtype=torch.float64))
    # The input is quantised before the product: a matrix scales the levels.
    y3 = analog_mvm(x, 3 * IDENTITY, IOConfig(inp_bound=bound, inp_bits=bits), gen(0))
    torch.testing.assert_close(y3.double(), 3 * level * step, rtol=1e-6, atol=1e-6 * bound)


@pytest.mark.parametrize("bits, bound", [(2, 1.0), (4, 1.0), (5, 2.0), (8, 12.0)])
def test_adc_quantisation(bits, bound):
    step = bound / (2 ** (bits - 1) - 1)
    x = _grid(-1.0, 1.0, step / (1.5 * bound))
    m = 1.5 * bound * IDENTITY  # outputs span ±1.5 bound
    y = analog_mvm(x, m, IOConfig(inp_bound=1.0, out_bound=bound, out_bits=bits), gen(0))
    exact = (x @ m).double()
    level = torch.round(exact.clamp(-bound, bound) / step)
    torch.testing.assert_close(y.double(), level * step, rtol=0, atol=1e-6 * bound)
    assert y.unique().numel() == 2**bits - 1
    assert (y.abs() <= bound).all()


@pytest.mark.parametrize("bits, bound", [(5, 1.0), (8, 12.0), (6, 0.7), (9, 0.6), (13, 0.1)])
def test_adc_full_scale_level_is_the_saturation_level(bits, bound):
    """A saturated output reads as exactly ±out_bound: not one float above it (beyond the range
    the ADC can represent) and not one below it (bound management would miss the saturation)."""
    x = torch.tensor([[1.0], [-1.0]])
    y = analog_mvm(x, 10 * bound * IDENTITY, IOConfig(inp_bound=1.0, out_bound=bound, out_bits=bits), gen(0))
    full_scale = torch.tensor(bound, dtype=torch.float32)
    assert y.flatten().tolist() == [full_scale.item(), -full_scale.item()], (
        f"out_bound={bound}, out_bits={bits}: saturated outputs read {y.flatten().tolist()}"
    )


# ---------------------------------------------------------------------------------------------
# Noise management
# ---------------------------------------------------------------------------------------------


def test_noise_management_scales_the_noise_with_max_abs_input():
    sigma = 0.02
    x = 1e-4 * torch.randn(4000, 16, generator=gen(0))
    m = matrix(16, 4, 1)
    exact = x @ m
    x_max = x.abs().amax(dim=1, keepdim=True)
    y_none = analog_mvm(x, m, IOConfig(out_noise=sigma), gen(2))
    y_nm = analog_mvm(x, m, IOConfig(out_noise=sigma, noise_management="abs_max"), gen(2))
    n = exact.numel()
    # Without noise management the noise is absolute: std sigma, much larger than the signal.
    err_none = (y_none - exact).double()
    assert abs(err_none.std().item() - sigma) <= Z * sigma / math.sqrt(2 * n)
    # With it the noise is sigma * max|x| for each vector.
    scaled = ((y_nm - exact) / x_max).double()
    assert abs(scaled.mean().item()) <= Z * sigma / math.sqrt(n)
    assert abs(scaled.std().item() - sigma) <= Z * sigma / math.sqrt(2 * n)
    # Relative error: ~ sigma max|x| / |y| with, ~ sigma / |y| without.
    rel_none = ((y_none - exact).abs() / exact.abs()).median()
    rel_nm = ((y_nm - exact).abs() / exact.abs()).median()
    assert rel_none > 100  # the output is noise
    assert rel_nm < 1e-3 * rel_none
    expected_ratio = x_max.median().item()  # rel_nm / rel_none ~ max|x|
    assert 0.5 * expected_ratio < (rel_nm / rel_none).item() < 2 * expected_ratio


def test_noise_management_is_exact_without_noise_and_handles_zero_vectors():
    x = 1e-3 * torch.randn(50, 8, generator=gen(0))
    x[3] = 0
    m = matrix(8, 5, 1)
    y = analog_mvm(x, m, IOConfig(noise_management="abs_max"), gen(2))
    torch.testing.assert_close(y, x @ m, rtol=1e-5, atol=1e-9)
    assert torch.equal(y[3], torch.zeros(5))
    # Large inputs are brought into the input range instead of being clipped.
    big = 5 * torch.randn(50, 8, generator=gen(3))
    y = analog_mvm(big, m, IOConfig(inp_bound=1.0, noise_management="abs_max"), gen(2))
    torch.testing.assert_close(y, big @ m, rtol=1e-5, atol=1e-5)
    y_clipped = analog_mvm(big, m, IOConfig(inp_bound=1.0), gen(2))
    torch.testing.assert_close(y_clipped, big.clamp(-1, 1) @ m)


def test_noise_management_uses_the_full_dac_range():
    """A tiny input quantises to zero on a 6-bit DAC; scaled by max|x| it keeps its shape."""
    x = 1e-3 * torch.tensor([[1.0, -0.5, 0.25, 0.75]])
    m = torch.eye(4)
    io = IOConfig(inp_bound=1.0, inp_bits=6)
    assert torch.equal(analog_mvm(x, m, io, gen(0)), torch.zeros(1, 4))
    y = analog_mvm(x, m, io.replace(noise_management="abs_max"), gen(0))
    step = 1 / 31
    torch.testing.assert_close(y, torch.round(x / 1e-3 / step) * step * 1e-3)


# ---------------------------------------------------------------------------------------------
# Bound management
# ---------------------------------------------------------------------------------------------


def test_bound_management_recovers_saturated_outputs_within_noise():
    sigma, bound = 0.01, 1.0
    x, m = inputs(1000, 10, 0, scale=1.0), matrix(10, 4, 1, scale=0.5)
    exact = x @ m
    row_max = exact.abs().amax(dim=1, keepdim=True)
    assert (row_max > 2.5 * bound).sum() > 50, "precondition: many vectors saturate by far"
    io = IOConfig(out_noise=sigma, out_bound=bound)
    y_plain = analog_mvm(x, m, io, gen(2))
    y_bm = analog_mvm(x, m, io.replace(bound_management="iterative"), gen(2))
    saturated = (row_max > bound + 0.2).squeeze(1)
    # Without BM the saturated vectors are wrong by much more than the noise ...
    assert (y_plain[saturated] - exact[saturated]).abs().amax(dim=1).min() > 10 * sigma
    # ... with BM every vector is within the noise, amplified by the halving factor 2**k
    # (k: halvings needed, one more if the noise pushed the last try onto the bound).
    k = torch.ceil(torch.log2((row_max / (bound - 6 * sigma)).clamp_min(1.0)))
    tolerance = Z * sigma * 2 ** k
    assert ((y_bm - exact).abs() <= tolerance).all()
    # The error of the unsaturated vectors stays sigma, unamplified.
    quiet_rows = (row_max < bound - 6 * sigma).squeeze(1)
    assert quiet_rows.sum() > 50
    err = (y_bm - exact)[quiet_rows].double()
    assert abs(err.std().item() - sigma) <= Z * sigma / math.sqrt(2 * err.numel())


@pytest.mark.parametrize("iterations", [1, 3, 5])
def test_bound_management_without_noise_is_exact_up_to_its_range(iterations):
    """Noise-free BM returns x @ M for outputs below 2**iterations * out_bound, and saturates at
    that level beyond it: the result is clamp(x @ M, ±2**iterations * out_bound)."""
    bound = 0.5
    reach = 2**iterations * bound
    x = inputs(300, 10, 0, scale=1.0)
    m = matrix(10, 4, 1, scale=reach / 3)  # vector maxima spread around the reach
    exact = x @ m
    assert (exact.abs() > reach).any() and (exact.abs().amax(dim=1) < reach).sum() > 10
    io = IOConfig(out_bound=bound, bound_management="iterative", max_bm_iterations=iterations)
    y = analog_mvm(x, m, io, gen(2))
    torch.testing.assert_close(y, exact.clamp(-reach, reach), rtol=1e-6, atol=1e-6)


def test_bound_management_with_noise_management():
    x, m = 7 * inputs(200, 10, 0, scale=1.0), matrix(10, 4, 1, scale=1.0)
    io = IOConfig(out_bound=1.0, noise_management="abs_max", bound_management="iterative")
    y = analog_mvm(x, m, io, gen(2))
    torch.testing.assert_close(y, x @ m, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits, bound", [(8, 1.0), (9, 0.6), (5, 0.3), (13, 0.1)])
def test_bound_management_detects_saturation_after_the_adc(bits, bound):
    """With an ADC, a saturated output must still be seen as saturated and recomputed."""
    x = torch.tensor([[1.0]])
    io = IOConfig(inp_bound=1.0, out_bound=bound, out_bits=bits, bound_management="iterative")
    y = analog_mvm(x, IDENTITY, io, gen(0)).item()
    # The true output 1.0 lies in (bound, 2**10 bound): BM reaches it within one ADC step,
    # scaled by the halving factor (at most 2 * 1.0 / bound).
    step = bound / (2 ** (bits - 1) - 1)
    assert abs(y - 1.0) <= step * 2 / bound, f"out_bound={bound}, out_bits={bits}: BM returned {y}, expected ~1.0"


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"out_bits": 8}, r"IOConfig\.out_bits = 8: .*out_bound"),
        ({"inp_bound": None, "inp_bits": 8}, r"IOConfig\.inp_bits = 8: .*inp_bound"),
        ({"out_bound": 1.0, "out_bits": 1}, r"IOConfig\.out_bits"),
        ({"out_bound": 1.0, "out_bits": 8.0}, r"IOConfig\.out_bits"),
        ({"noise_management": "abs_mx"}, r"IOConfig\.noise_management = 'abs_mx'.*Did you mean 'abs_max'"),
        ({"noise_management": "AbsMax"}, r"IOConfig\.noise_management.*'abs_max'"),
        ({"out_bound": 1.0, "bound_management": "iterativ"}, r"IOConfig\.bound_management.*Did you mean 'iterative'"),
        ({"bound_management": "iterative"}, r"IOConfig\.bound_management.*out_bound"),
        ({"out_noise": -0.1}, r"IOConfig\.out_noise = -0\.1"),
        ({"out_noise": float("inf")}, r"IOConfig\.out_noise"),
        ({"inp_bound": 0.0}, r"IOConfig\.inp_bound"),
        ({"out_bound": -1.0}, r"IOConfig\.out_bound"),
        ({"max_bm_iterations": 0}, r"IOConfig\.max_bm_iterations"),
    ],
)
def test_bad_io_values_raise_config_error(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        IOConfig(**changes)


def test_io_config_round_trips():
    io = IOConfig(inp_bound=1.0, inp_bits=7, out_noise=0.06, out_bound=12.0, out_bits=9,
                  noise_management="abs_max", bound_management="iterative", max_bm_iterations=5)
    assert IOConfig.from_dict(io.to_dict()) == io
    assert IOConfig.perfect().is_perfect and IOConfig.perfect().inp_bound is None
