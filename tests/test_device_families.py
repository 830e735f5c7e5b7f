"""The device families of issue 16: step against the equation, symmetry points, zero shifting.

The equations are written out here from ``../shared/reference/algorithms.md`` §1.1-1.5 and §2,
independently of the device code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from insitu.config import ConfigError
from insitu.devices import (
    ExpStepDevice,
    PiecewiseStepDevice,
    PowStepReferenceDevice,
    SoftBoundsDevice,
    SoftBoundsReferenceDevice,
)
from insitu.devices.symmetry import analytic_symmetry_point, measure_symmetry_point, zero_shift
from insitu.tile import AnalogTile, TileConfig

POINTS = 20


def _one_device(config, seed=0):
    """The drawn parameters of one device as floats by name, and the model."""
    model = config.model()
    params = config.draw_parameters((1,), torch.Generator().manual_seed(seed)).double()
    values = {name: float(model.plane(params, name)[0]) for name in model.param_names}
    return model, params, values


def _steps(model, params, w):
    up, down = model.steps_at(w, params.expand(-1, len(w)).contiguous())
    return up.numpy(), down.numpy()


def _grid(v):
    return torch.linspace(v["w_min"], v["w_max"], POINTS, dtype=torch.float64)


def test_exp_step_equals_the_equation_at_20_points():
    for config in (ExpStepDevice(), ExpStepDevice(a=-0.5, b=-0.5, gamma_up=5, gamma_down=5, A_up=-1.18445, A_down=-0.081404)):
        model, params, v = _one_device(config, seed=1)
        w = _grid(v)
        up, down = _steps(model, params, w)
        b_min, b_max = v["w_min"], v["w_max"]
        for k, wk in enumerate(w.tolist()):
            z = 2 * config.a * wk / (b_max - b_min) + config.b
            assert up[k] == pytest.approx(v["dw_up"] * max(1 - config.A_up * math.exp(config.gamma_up * z), 0), rel=1e-6, abs=1e-12)
            assert down[k] == pytest.approx(v["dw_down"] * max(1 - config.A_down * math.exp(-config.gamma_down * z), 0), rel=1e-6, abs=1e-12)


def test_exp_step_nominal_step_is_the_down_step_at_zero():
    config = ExpStepDevice(up_down=0.1)
    expected = 0.001 * 0.9 * (1 - 0.36833 * math.exp(-12.78785 * 0.2425))
    assert config.nominal_step == pytest.approx(expected)


def test_piecewise_step_equals_the_equation_at_20_points():
    up_table, down_table = (1.6, 1.2, 1.0, 0.7, 0.2), (0.3, 0.8, 1.0, 1.1, 1.5)
    config = PiecewiseStepDevice(piecewise_up=up_table, piecewise_down=down_table)
    assert config.nominal_step == pytest.approx(0.001 * 1.0)
    model, params, v = _one_device(config, seed=2)
    w = _grid(v)
    up, down = _steps(model, params, w)
    # Nodes equally spaced from w_min to w_max (first and last at the bounds), linear in between.
    nodes = np.linspace(v["w_min"], v["w_max"], len(up_table))
    assert np.allclose(up, v["dw_up"] * np.interp(w.numpy(), nodes, up_table), rtol=1e-6)
    assert np.allclose(down, v["dw_down"] * np.interp(w.numpy(), nodes, down_table), rtol=1e-6)


def test_piecewise_tables_are_validated():
    with pytest.raises(ConfigError, match="piecewise_down"):
        PiecewiseStepDevice(piecewise_up=(1.0, 1.0), piecewise_down=(1.0,))
    with pytest.raises(ConfigError, match="piecewise_up"):
        PiecewiseStepDevice(piecewise_up=(), piecewise_down=())
    assert PiecewiseStepDevice(piecewise_up=[1, 2], piecewise_down=[2, 1]).piecewise_up == (1, 2)


def test_soft_bounds_reference_equals_the_equation_at_20_points():
    config = SoftBoundsReferenceDevice(reference_mean=0.1, reference_std=0.05, up_down=0.1)
    model, params, v = _one_device(config, seed=3)
    w = _grid(v)
    up, down = _steps(model, params, w)
    r = v["reference"]
    b_min, b_max = v["w_min"] + r, v["w_max"] + r  # device bounds; the weight is G - r
    for k, wk in enumerate(w.tolist()):
        g = wk + r
        assert up[k] == pytest.approx(v["dw_up"] * (1 - g / b_max), abs=1e-12)
        assert down[k] == pytest.approx(v["dw_down"] * (1 - g / b_min), abs=1e-12)


def test_pow_step_reference_equals_the_equation_at_20_points():
    config = PowStepReferenceDevice(reference_mean=-0.1, reference_std=0.05, pow_gamma=1.7)
    model, params, v = _one_device(config, seed=4)
    w = _grid(v)
    up, down = _steps(model, params, w)
    r = v["reference"]
    b_min, b_max = v["w_min"] + r, v["w_max"] + r
    for k, wk in enumerate(w.tolist()):
        omega = (b_max - (wk + r)) / (b_max - b_min)
        assert up[k] == pytest.approx(v["dw_up"] * omega ** v["gamma_up"], abs=1e-12)
        assert down[k] == pytest.approx(v["dw_down"] * (1 - omega) ** v["gamma_down"], abs=1e-12)


# -- symmetry points ---------------------------------------------------------------------------


SHAPE = (6, 5)


@pytest.mark.parametrize(
    "config",
    [
        SoftBoundsDevice(up_down=0.2, dw_min_dtod=0.1, up_down_dtod=0.03),
        SoftBoundsReferenceDevice(up_down=-0.2, dw_min_dtod=0.1, up_down_dtod=0.03, reference_mean=0.05, reference_std=0.02),
    ],
    ids=["soft-bounds", "soft-bounds-reference"],
)
def test_symmetry_point_by_alternating_pulses_matches_the_analytic_one(config):
    analytic = analytic_symmetry_point(config, shape=SHAPE)
    assert analytic.abs().min() > 0.02  # away from 0, so that 2 % is a real check
    measured = measure_symmetry_point(config, pairs=3000, average=200, shape=SHAPE, noise=False)
    assert torch.all((measured - analytic).abs() <= 0.02 * analytic.abs()), float(((measured - analytic) / analytic).abs().max())
    # With cycle-to-cycle noise the weight wanders around w*; a long average finds it (looser).
    noisy = measure_symmetry_point(config, pairs=6000, average=4000, shape=SHAPE, noise=True)
    assert float((noisy - analytic).abs().mean()) <= 0.05 * float(analytic.abs().mean())


def test_soft_bounds_symmetry_point_of_the_mean_device_is_zero_even_with_asymmetric_bounds():
    config = SoftBoundsDevice(w_max=1.25, w_min=-0.75, dw_min_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0, up_down_dtod=0.0)
    assert torch.allclose(analytic_symmetry_point(config), torch.zeros(1, 1))
    assert abs(float(measure_symmetry_point(config, noise=False))) < 1e-3


@pytest.mark.parametrize(
    "config",
    [
        SoftBoundsReferenceDevice(subtract_symmetry_point=True, up_down=0.2, up_down_dtod=0.05, dw_min_dtod=0.1),
        PowStepReferenceDevice(subtract_symmetry_point=True, up_down=0.2, up_down_dtod=0.05, dw_min_dtod=0.1, pow_gamma=1.5),
    ],
    ids=["soft-bounds-reference", "pow-step-reference"],
)
def test_subtracting_the_symmetry_point_maps_it_to_weight_zero(config):
    without = config.replace(subtract_symmetry_point=False)
    shifted = measure_symmetry_point(without, pairs=3000, shape=SHAPE, noise=False)
    assert float(shifted.abs().mean()) > 0.05  # the devices have a symmetry point away from 0 ...
    measured = measure_symmetry_point(config, pairs=3000, shape=SHAPE, noise=False)
    assert float(measured.abs().max()) < 0.002  # ... which the reference maps to weight 0


def test_zero_shift_programs_the_reference_at_the_symmetry_point():
    config = SoftBoundsReferenceDevice(up_down=0.2, up_down_dtod=0.05, dw_min_dtod=0.1)
    tile = AnalogTile(*SHAPE, TileConfig(device=config), seed=5)
    tile.set_weights(torch.full(SHAPE, 0.05))
    before = analytic_symmetry_point(config, shape=SHAPE, seed=0)  # (other devices; only the sign matters)
    assert float(before.mean()) > 0.05
    reference = tile.device_model.plane(tile.device_params, "reference").clone()
    state = (tile.weight.detach() + reference).clone()  # the device states G = w + r
    sp = zero_shift(tile, pairs=3000, noise=False)
    new_reference = tile.device_model.plane(tile.device_params, "reference")
    assert torch.allclose(new_reference, reference + sp)
    # The device states did not change: only how they read.
    assert torch.allclose(tile.weight.detach() + new_reference, state, atol=1e-6)
    # Now the symmetry point reads as 0, measured and in closed form.
    assert float(analytic_symmetry_point(tile).abs().max()) < 0.002
    assert float(measure_symmetry_point(tile, pairs=3000, noise=False).abs().max()) < 0.002


def test_zero_shift_needs_a_reference_device():
    tile = AnalogTile(3, 2, TileConfig(device=SoftBoundsDevice()), seed=0)
    with pytest.raises(ConfigError, match="reference"):
        zero_shift(tile)


def test_measure_symmetry_point_leaves_the_tile_alone():
    tile = AnalogTile(3, 2, TileConfig(device=SoftBoundsDevice(up_down=0.2)), seed=0)
    tile.set_weights(torch.full((3, 2), 0.1))
    weights = tile.weight.detach().clone()
    measure_symmetry_point(tile, pairs=50, average=10)
    assert torch.equal(tile.weight.detach(), weights)


def test_soft_bounds_from_states():
    device = SoftBoundsDevice.from_states(1000, dw_max=0.004)
    assert device.dw_min == pytest.approx(0.002) and device.w_max == pytest.approx(1.0) and device.w_min == pytest.approx(-1.0)
    assert (device.w_max - device.w_min) / device.dw_min == pytest.approx(1000)
    # Asymmetric range kept: ReRAM-SB-like 1.25 / -0.75.
    asym = SoftBoundsDevice.from_states(1000, dw_max=0.0032, w_max=1.25, w_min=-0.75)
    assert asym.w_max / -asym.w_min == pytest.approx(1.25 / 0.75)
    assert asym.dw_min * (1 - asym.w_min / asym.w_max) == pytest.approx(0.0032)  # largest step
    assert (asym.w_max - asym.w_min) / asym.dw_min == pytest.approx(1000)
    plain = SoftBoundsDevice.from_states(600, dw_min_std=0.1)
    assert plain.dw_min == pytest.approx(1.2 / 600) and plain.dw_min_std == 0.1
    with pytest.raises(ConfigError, match="n_states"):
        SoftBoundsDevice.from_states(1)


def test_a_stuck_reference_device_with_a_bound_at_zero_does_not_move():
    """A device whose drawn steps are 0 may have a bound at 0 (bounds are kept 2 steps out):
    the soft-bounds-reference response must leave it alone (no 0/0), torch and compiled alike."""
    config = SoftBoundsReferenceDevice()
    model = config.model()
    params = config.draw_parameters((2, 2), torch.Generator().manual_seed(0))
    for name, value in (("dw_up", 0.0), ("dw_down", 0.0), ("w_min", 0.0), ("reference", 0.0)):
        model.plane(params, name)[0, 0] = value
    w = torch.zeros(2, 2)
    for counts in (torch.full((2, 2), 3.0), torch.full((2, 2), -3.0)):
        out = model.apply_signed_pulses(w, counts, params, torch.Generator().manual_seed(1))
        assert torch.isfinite(out).all() and out[0, 0] == 0
    pytest.importorskip("numba")
    from insitu.update.kernels.compiled_devices import soft_bounds_reference_response

    packed = model.pack_for_kernel(params.unsqueeze(-1)).double().numpy()
    for n in (3, -3):
        assert soft_bounds_reference_response(0.0, n, packed, 0, 0, 0, 0.3, 1.0) == 0.0


def test_pow_step_reference_bisection_finds_the_fixed_point_of_the_peers_iteration():
    base = PowStepReferenceDevice(dw_min=0.01, up_down=0.2, up_down_dtod=0.05, pow_gamma=1.5, subtract_symmetry_point=True)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    bisection = base.model().plane(base.draw_parameters((4, 4), g()), "reference")
    iterated = base.replace(n_estimation_steps=5000)
    peer = iterated.model().plane(iterated.draw_parameters((4, 4), g()), "reference")
    assert torch.allclose(bisection, peer, atol=1e-4)
