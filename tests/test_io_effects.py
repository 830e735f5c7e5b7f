"""Periphery effects of IOConfig beyond the original set: defaults unchanged draw for draw, input
noise, weight read noise, stochastic rounding, asymmetric output noise, the extra noise and bound
management kinds, IR drop (first order against the exact network), replicas, validation.

Statistical checks use fixed seeds and tolerances of ``Z`` standard errors of the estimate.
"""

from __future__ import annotations

import math

import pytest
import torch

from insitu import ConfigError, IOConfig
from insitu.io import ReplicaIO, analog_mvm, ir_drop_first_order
from insitu.io_irdrop import ir_drop_exact

Z = 5.0

NEW_FIELDS_OFF = dict(
    inp_sto_round=False, inp_noise=0.0, w_noise=0.0, w_noise_type="additive", ir_drop=0.0,
    out_noise_asymmetry=0.0, out_sto_round=False, nm_thres=0.0,
)


from test_io import IDENTITY, gen, inputs, matrix  # the IO tests' seeded helpers (one copy)


# ---------------------------------------------------------------------------------------------
# Defaults: the original computation, the original draws
# ---------------------------------------------------------------------------------------------


def _original(x, m, io, generator):
    """The computation before the new effects (no bound management), written out."""
    scale = None
    if io.noise_management == "abs_max":
        scale = x.abs().amax(dim=-1, keepdim=True)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        x = x / scale
    x = x.clamp(-io.inp_bound, io.inp_bound)
    if io.inp_bits is not None:
        levels = 2 ** (io.inp_bits - 1) - 1
        x = torch.round(x * (levels / io.inp_bound)) / levels * io.inp_bound
    y = x @ m
    if io.out_noise > 0:
        y = y.add_(torch.randn(y.shape, generator=generator), alpha=io.out_noise)
    if io.out_bound is not None:
        y = y.clamp(-io.out_bound, io.out_bound)
        if io.out_bits is not None:
            levels = 2 ** (io.out_bits - 1) - 1
            y = torch.round(y * (levels / io.out_bound)) / levels * io.out_bound
    return y if scale is None else y * scale


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"out_noise": 0.1},
        {"out_noise": 0.06, "out_bound": 1.0, "out_bits": 9, "inp_bits": 7},
        {"out_noise": 0.06, "out_bound": 2.0, "noise_management": "abs_max"},
    ],
)
def test_defaults_compute_and_draw_exactly_as_before(fields):
    x, m = 2 * inputs(64, 20, 0), matrix(20, 7, 1)
    io = IOConfig(**fields)
    g_new, g_old = gen(3), gen(3)
    y = analog_mvm(x, m, io, g_new)
    assert torch.equal(y, _original(x, m, io, g_old))
    # The generator has advanced by exactly the original draws.
    assert torch.equal(g_new.get_state(), g_old.get_state())
    # Spelling every new field out at its off value changes nothing.
    explicit = IOConfig(**fields, **NEW_FIELDS_OFF)
    assert explicit == io
    g = gen(3)
    assert torch.equal(analog_mvm(x, m, explicit, g), y)
    assert torch.equal(g.get_state(), g_new.get_state())


@pytest.mark.parametrize(
    "fields",
    [
        {"inp_noise": 0.0, "w_noise": 0.0},
        {"noise_management": "max"},
        {"noise_management": "constant", "nm_thres": 2.0},
        {"noise_management": "average_abs_max"},
        {"out_bound": 3.0, "bound_management": "shift"},
        {"ir_drop": 1e-4},
        {"out_noise_asymmetry": 0.3},  # no output noise: nothing to draw
    ],
)
def test_deterministic_effects_draw_nothing(fields):
    x, m = inputs(16, 8, 0), matrix(8, 4, 1)
    g = gen(3)
    analog_mvm(x, m, IOConfig(**fields), g)
    assert torch.equal(g.get_state(), gen(3).get_state())


# ---------------------------------------------------------------------------------------------
# Input noise
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bound", [1.0, 2.0])
def test_input_noise_is_gaussian_relative_to_the_input_bound(bound):
    sigma = 0.05
    x = torch.linspace(-0.5, 0.5, 4000).unsqueeze(1)
    y = analog_mvm(x, IDENTITY, IOConfig(inp_bound=bound, inp_noise=sigma), gen(1))
    err = (y - x).double()
    n = err.numel()
    std = sigma * bound
    assert abs(err.mean().item()) <= Z * std / math.sqrt(n)
    assert abs(err.std().item() - std) <= Z * std / math.sqrt(2 * n)
    # After the DAC: a matrix scales it, independently per input line.
    m = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    x2 = torch.zeros(4000, 2)
    y2 = analog_mvm(x2, m, IOConfig(inp_bound=bound, inp_noise=sigma), gen(2)).double()
    assert abs(y2[:, 0].std().item() - 3 * std) <= Z * 3 * std / math.sqrt(2 * 4000)
    assert abs(y2[:, 1].std().item() - 4 * std) <= Z * 4 * std / math.sqrt(2 * 4000)


# ---------------------------------------------------------------------------------------------
# Weight read noise
# ---------------------------------------------------------------------------------------------


def test_additive_weight_noise_has_std_w_noise_times_input_norm():
    sigma = 0.03
    x = torch.rand(6000, 12, generator=gen(0)) * torch.linspace(0.05, 1.0, 6000).unsqueeze(1)
    m = matrix(12, 5, 1)
    y = analog_mvm(x, m, IOConfig(w_noise=sigma), gen(2))
    norm = x.norm(dim=1, keepdim=True)
    scaled = ((y - x @ m) / (sigma * norm)).double()
    n = scaled.numel()
    assert abs(scaled.mean().item()) <= Z / math.sqrt(n)
    assert abs(scaled.std().item() - 1) <= Z / math.sqrt(2 * n)
    # Fresh per vector: two copies of the same vector in one call get independent noise.
    same = torch.ones(2, 12).repeat(3000, 1)
    err = analog_mvm(same, m, IOConfig(w_noise=sigma), gen(3)) - same @ m
    pairs = err.view(3000, 2, 5)
    corr = torch.corrcoef(torch.stack([pairs[:, 0, 0], pairs[:, 1, 0]]))[0, 1]
    assert abs(corr.item()) <= Z / math.sqrt(3000)


def test_relative_weight_noise_is_proportional_to_the_weight():
    sigma = 0.1
    m = torch.tensor([[0.0, 0.5, -1.0]])
    x = torch.full((8000, 1), 0.8)
    y = analog_mvm(x, m, IOConfig(w_noise=sigma, w_noise_type="relative"), gen(1))
    err = (y - x @ m).double()
    assert torch.equal(err[:, 0], torch.zeros(8000, dtype=torch.float64))  # a zero weight is silent
    for j, w in ((1, 0.5), (2, 1.0)):
        std = sigma * 0.8 * w
        assert abs(err[:, j].std().item() - std) <= Z * std / math.sqrt(2 * 8000)


# ---------------------------------------------------------------------------------------------
# Stochastic rounding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["inp", "out"])
def test_stochastic_rounding_is_unbiased_and_lands_on_the_two_neighbouring_levels(where):
    bits, bound = 4, 1.0
    step = bound / 7
    value = 2.3 * step  # between levels 2 and 3, 30% of the way
    x = torch.full((20000, 1), value)
    if where == "inp":
        io = IOConfig(inp_bound=bound, inp_bits=bits, inp_sto_round=True)
    else:
        io = IOConfig(inp_bound=1.0, out_bound=bound, out_bits=bits, out_sto_round=True)
    y = analog_mvm(x, IDENTITY, io, gen(0)).double()
    levels = torch.round(y / step)
    assert set(levels.unique().tolist()) == {2.0, 3.0}
    p = (levels == 3).double().mean().item()
    assert abs(p - 0.3) <= Z * math.sqrt(0.3 * 0.7 / 20000)
    assert abs(y.mean().item() - value) <= Z * step * math.sqrt(0.3 * 0.7 / 20000)
    # Round to nearest is biased for the same input.
    nearest = analog_mvm(x, IDENTITY, io.replace(**{f"{where}_sto_round": False}), gen(0))
    assert torch.allclose(nearest, torch.full_like(nearest, 2 * step))


def test_stochastic_rounding_stays_within_the_range():
    x = torch.tensor([[-1.0], [1.0], [-5.0], [5.0]]).repeat(500, 1)
    io = IOConfig(inp_bound=1.0, inp_bits=3, inp_sto_round=True, out_bound=0.5, out_bits=3, out_sto_round=True)
    y = analog_mvm(x, IDENTITY, io, gen(0))
    assert torch.equal(y.abs(), torch.full_like(y, 0.5))


# ---------------------------------------------------------------------------------------------
# Asymmetric output noise
# ---------------------------------------------------------------------------------------------


def test_output_noise_asymmetry_sets_the_std_by_the_sign_of_the_output():
    sigma, a = 0.05, 0.4
    x = torch.tensor([[1.0], [-1.0]]).repeat(5000, 1)
    y = analog_mvm(x, 0.5 * IDENTITY, IOConfig(out_noise=sigma, out_noise_asymmetry=a), gen(0)).double()
    for sign, factor in ((1.0, 1 + a), (-1.0, 1 - a)):
        err = y[x[:, 0] == sign] - 0.5 * sign
        std = sigma * factor
        assert abs(err.mean().item()) <= Z * std / math.sqrt(err.numel())
        assert abs(err.std().item() - std) <= Z * std / math.sqrt(2 * err.numel())


# ---------------------------------------------------------------------------------------------
# Noise management
# ---------------------------------------------------------------------------------------------


def test_max_is_an_alias_of_abs_max():
    x, m = 0.01 * inputs(50, 8, 0), matrix(8, 3, 1)
    io = IOConfig(out_noise=0.05, inp_bits=6, noise_management="abs_max")
    assert torch.equal(analog_mvm(x, m, io, gen(2)), analog_mvm(x, m, io.replace(noise_management="max"), gen(2)))


def test_constant_noise_management_divides_by_nm_thres():
    x = torch.tensor([[0.5, -2.0, 3.0]])
    m = torch.eye(3)
    io = IOConfig(inp_bound=1.0, noise_management="constant", nm_thres=2.0)
    # x / 2 = [0.25, -1, 1.5] -> clipped to [0.25, -1, 1] -> times 2
    assert analog_mvm(x, m, io, gen(0)).tolist() == [[0.5, -2.0, 2.0]]
    # The output noise is scaled by the constant.
    noisy = analog_mvm(torch.zeros(8000, 1), IDENTITY, IOConfig(out_noise=0.05, noise_management="constant", nm_thres=3.0), gen(1))
    assert abs(noisy.double().std().item() - 0.15) <= Z * 0.15 / math.sqrt(2 * 8000)


def test_average_abs_max_uses_one_scale_for_the_call():
    x = torch.tensor([[0.1, 0.0], [0.0, 0.3]])  # maxima 0.1 and 0.3: mean 0.2
    io = IOConfig(inp_bound=1.0, inp_bits=3, noise_management="average_abs_max")
    y = analog_mvm(x, torch.eye(2), io, gen(0))
    step = 1 / 3  # x / 0.2 = 0.5 and 1.5 -> 3-bit levels of 1/3, clipped at 1 -> times 0.2
    torch.testing.assert_close(y, torch.tensor([[round(0.5 / step) * step * 0.2, 0.0], [0.0, 0.2]]))
    # With noise the std is sigma * the mean maximum, for every vector (inputs up to 1.5 fit).
    big = torch.zeros(4000, 2)
    big[::2, 0], big[1::2, 1] = 0.1, 0.3
    err = analog_mvm(big, torch.eye(2), IOConfig(inp_bound=2.0, out_noise=0.05, noise_management="average_abs_max"), gen(1)) - big
    assert abs(err.double().std().item() - 0.05 * 0.2) <= Z * 0.01 / math.sqrt(2 * err.numel())


def test_nm_thres_caps_the_abs_max_scale():
    x = torch.tensor([[4.0, 1.0]])
    io = IOConfig(inp_bound=1.0, noise_management="abs_max", nm_thres=2.0)
    # scale min(4, 2) = 2: x / 2 = [2, 0.5] -> clipped [1, 0.5] -> times 2
    assert analog_mvm(x, torch.eye(2), io, gen(0)).tolist() == [[2.0, 1.0]]


# ---------------------------------------------------------------------------------------------
# Shift bound management
# ---------------------------------------------------------------------------------------------


def test_shift_bound_management_puts_the_largest_output_at_the_bound():
    bound = 1.5
    x, m = inputs(300, 10, 0, scale=1.0), matrix(10, 6, 1, scale=0.6)
    exact = x @ m
    assert (exact.amax(dim=1) > bound).sum() > 50, "precondition: many vectors saturate without management"
    y = analog_mvm(x, m, IOConfig(out_bound=bound, bound_management="shift"), gen(2))
    # The largest output of every vector is at the bound, never clipped from above ...
    torch.testing.assert_close(y.amax(dim=1), torch.full((300,), bound))
    # ... and the outputs are the exact ones shifted by one offset per vector, within ±bound.
    shifted = exact + (bound - exact.amax(dim=1, keepdim=True))
    torch.testing.assert_close(y, shifted.clamp(-bound, bound), rtol=1e-6, atol=1e-6)
    # Where the spread fits into 2·bound, a softmax is unchanged.
    fits = (exact.amax(dim=1) - exact.amin(dim=1)) < 2 * bound
    assert fits.sum() > 50
    torch.testing.assert_close(y[fits].softmax(dim=1), exact[fits].softmax(dim=1), rtol=1e-5, atol=1e-6)
    # Without it the same vectors saturate at the bound.
    plain = analog_mvm(x, m, IOConfig(out_bound=bound), gen(2))
    assert ((plain == bound).sum(dim=1) > 1).any()


# ---------------------------------------------------------------------------------------------
# IR drop
# ---------------------------------------------------------------------------------------------


def test_ir_drop_single_device_matches_the_circuit():
    # One device of conductance g behind a driver segment and a ground segment of resistance r:
    # I = x / (1/g + 2r) exactly; to first order g x (1 - 2 r g).
    x, g, r = torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[0.5]], dtype=torch.float64), 0.01
    assert ir_drop_exact(x, g, r).item() == pytest.approx(0.7 / (1 / 0.5 + 2 * r), rel=1e-12)
    assert ir_drop_first_order(x, g, r).item() == pytest.approx(0.7 * 0.5 * (1 - 2 * r * 0.5), rel=1e-12)
    # A negative weight: the other array of the pair.
    assert ir_drop_exact(x, -g, r).item() == pytest.approx(-0.7 / (1 / 0.5 + 2 * r), rel=1e-12)


def _relative_errors(n, r, seed=0):
    generator = gen(seed)
    x = 2 * torch.rand(8, n, generator=generator, dtype=torch.float64) - 1
    w = 2 * torch.rand(n, n, generator=generator, dtype=torch.float64) - 1
    exact = ir_drop_exact(x, w, r)
    first = ir_drop_first_order(x, w, r)
    return (x @ w - exact).norm() / exact.norm(), (first - exact).norm() / exact.norm()


def test_ir_drop_first_order_is_close_to_exact_and_degrades_with_size_and_resistance():
    effect, error = _relative_errors(8, 1e-4)
    assert effect > 1e-4  # the drop is visible ...
    assert error < 1e-2 * effect  # ... and the first-order model captures over 99% of it
    errors = {n: _relative_errors(n, 1e-3)[1] for n in (4, 8, 16)}
    assert errors[4] < errors[8] < errors[16]
    # Second order: ten times the resistance, about a hundred times the error.
    ratio = _relative_errors(8, 1e-3)[1] / _relative_errors(8, 1e-4)[1]
    assert 50 < ratio < 200


def test_ir_drop_reduces_the_outputs_and_depends_on_the_position():
    # Equal weights and inputs: the devices far from the driver (high column) see less voltage.
    x, w = torch.ones(1, 16), torch.full((16, 16), 0.5)
    y = analog_mvm(x, w, IOConfig(inp_bound=None, ir_drop=1e-4), gen(0))[0]
    assert (y < 8.0).all()
    assert (y.diff() < 0).all()
    torch.testing.assert_close(y.double(), ir_drop_exact(x, w, 1e-4)[0], rtol=1e-3, atol=0)


def test_ir_drop_exact_without_resistance_is_the_ideal_product():
    x, w = inputs(4, 5, 0), matrix(5, 3, 1)
    torch.testing.assert_close(ir_drop_exact(x, w, 0.0), (x @ w).double())
    torch.testing.assert_close(ir_drop_exact(x, w, 1e-9), (x @ w).double(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("shape", [(16, 16), (32, 32), (5, 9), (1, 3)])
@pytest.mark.parametrize("r", [1e-5, 1e-3, 1e-2])
def test_ir_drop_cg_solve_matches_the_dense_solve(shape, r):
    n_in, n_out = shape
    generator = gen(3)
    x = 2 * torch.rand(4, n_in, generator=generator, dtype=torch.float64) - 1
    w = 2 * torch.rand(n_in, n_out, generator=generator, dtype=torch.float64) - 1
    dense = ir_drop_exact(x, w, r, method="dense")
    cg = ir_drop_exact(x, w, r, method="cg")
    # The outputs agree, and so does the IR-drop effect itself (their difference from ideal).
    assert (cg - dense).norm() <= 1e-10 * dense.norm()
    assert (cg - dense).norm() <= 1e-7 * (x @ w - dense).norm()


def test_ir_drop_exact_auto_takes_cg_above_32_by_32_and_cg_reports_no_convergence():
    x = torch.ones(2, 3, dtype=torch.float64)
    w = torch.full((3, 4), 0.5, dtype=torch.float64)
    assert torch.equal(ir_drop_exact(x, w, 1e-3), ir_drop_exact(x, w, 1e-3, method="dense"))
    with pytest.raises(RuntimeError, match="did not converge"):
        ir_drop_exact(x, w, 1e-3, method="cg", max_iter=1)
    with pytest.raises(ValueError, match="method"):
        ir_drop_exact(x, w, 1e-3, method="sparse")


# ---------------------------------------------------------------------------------------------
# Replicas in lockstep
# ---------------------------------------------------------------------------------------------


def test_replicas_apply_the_new_effects_per_replica():
    configs = [IOConfig(w_noise=0.0, inp_noise=0.0, ir_drop=1e-4), IOConfig(w_noise=0.05, inp_noise=0.0, ir_drop=1e-4)]
    rio = ReplicaIO.stack(configs)
    x = inputs(4000, 6, 0).expand(2, -1, -1)
    m = matrix(6, 3, 1).expand(2, -1, -1)
    y = analog_mvm(x, m, rio, gen(1))
    reference = ir_drop_first_order(x[0], m[0], 1e-4)
    torch.testing.assert_close(y[0], reference)  # replica 0: no weight noise
    scaled = ((y[1] - reference) / (0.05 * x[0].norm(dim=1, keepdim=True))).double()
    assert abs(scaled.std().item() - 1) <= Z / math.sqrt(2 * scaled.numel())
    with pytest.raises(ConfigError, match=r"tile\.forward\.ir_drop"):
        ReplicaIO.stack([IOConfig(ir_drop=0.0), IOConfig(ir_drop=1e-3)], where="tile.forward")


# ---------------------------------------------------------------------------------------------
# Validation and serialisation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"inp_sto_round": True}, r"IOConfig\.inp_sto_round = True: .*inp_bits"),
        ({"out_bound": 1.0, "out_sto_round": True}, r"IOConfig\.out_sto_round = True: .*out_bits"),
        ({"inp_bits": 8, "inp_sto_round": 1}, r"IOConfig\.inp_sto_round = 1: must be true or false"),
        ({"inp_noise": -0.1}, r"IOConfig\.inp_noise"),
        ({"w_noise": float("nan")}, r"IOConfig\.w_noise"),
        ({"w_noise_type": "aditive"}, r"IOConfig\.w_noise_type.*Did you mean 'additive'"),
        ({"ir_drop": -1e-3}, r"IOConfig\.ir_drop"),
        ({"out_noise_asymmetry": 1.0}, r"IOConfig\.out_noise_asymmetry = 1\.0: must lie in \(-1, 1\)"),
        ({"noise_management": "constant"}, r"IOConfig\.nm_thres = 0\.0: 'constant'"),
        ({"noise_management": "average_abs"}, r"Did you mean 'average_abs_max'"),
        ({"nm_thres": -1.0}, r"IOConfig\.nm_thres"),
        ({"bound_management": "shift"}, r"IOConfig\.bound_management = 'shift': 'shift' needs an output bound"),
    ],
)
def test_bad_values_of_the_new_fields_raise_config_error(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        IOConfig(**changes)


def test_new_fields_round_trip_and_old_dicts_load():
    io = IOConfig(inp_bits=7, inp_sto_round=True, inp_noise=0.01, w_noise=0.02, w_noise_type="relative",
                  ir_drop=1e-4, out_noise=0.06, out_noise_asymmetry=-0.2, out_bound=12.0, out_bits=9,
                  out_sto_round=True, noise_management="constant", nm_thres=1.5, bound_management="shift")
    assert IOConfig.from_dict(io.to_dict()) == io
    old = {"is_perfect": False, "inp_bound": 1.0, "inp_bits": None, "out_noise": 0.06, "out_bound": 12.0,
           "out_bits": None, "noise_management": "abs_max", "bound_management": "iterative", "max_bm_iterations": 10}
    assert IOConfig.from_dict(old) == IOConfig(out_noise=0.06, out_bound=12.0, noise_management="abs_max",
                                               bound_management="iterative")
