"""Device models: device-to-device draws, cycle-to-cycle noise, bounds, step shapes, validation.

Every statistical check uses a fixed seed and a tolerance of a few standard errors derived from
the sample size, so the tests are deterministic and would catch a wrong formula (a wrong mean or
spread moves the statistic by many standard errors).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from insitu import (
    ConfigError, ConstantStepDevice, IdealDevice, LinearStepDevice, PulseUpdateConfig, SoftBoundsDevice,
)
from insitu.devices import PARAM_NAMES, DeviceModel
from insitu.tile import AnalogTile, TileConfig


def _param_axis() -> int:
    """Axis of the per-device parameter tensor that holds the PARAM_NAMES (first or last).

    The layout is an implementation detail (``(out, in, 6)`` or ``(6, out, in)``); the tests read
    parameters through :func:`plane` so they check the physics, not the memory layout.
    """
    probe = ConstantStepDevice().draw_parameters((2, 3), torch.Generator().manual_seed(0))
    if tuple(probe.shape) == (len(PARAM_NAMES), 2, 3):
        return 0
    assert tuple(probe.shape) == (2, 3, len(PARAM_NAMES)), f"unexpected parameter layout {tuple(probe.shape)}"
    return -1


AXIS = _param_axis()


def plane(params: torch.Tensor, name: str) -> torch.Tensor:
    """The per-device values of parameter ``name``, shape (out, in)."""
    return params.select(AXIS, PARAM_NAMES.index(name))


def make_params(**planes: torch.Tensor) -> torch.Tensor:
    """A per-device parameter tensor in the library's layout from one tensor per name."""
    return torch.stack([planes[name] for name in PARAM_NAMES], dim=AXIS)


#: z-score used for every statistical tolerance.
Z = 5.0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def quiet(cls=ConstantStepDevice, **changes):
    """A device without any spread (no d2d, no c2c, symmetric), wide bounds; ``changes`` override."""
    fields = dict(
        dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down=0.0, up_down_dtod=0.0,
        w_max=1.0, w_min=-1.0, w_max_dtod=0.0, w_min_dtod=0.0,
    )
    fields.update(changes)
    return cls(**fields)


def assert_mean(sample: torch.Tensor, mean: float, std: float, what: str) -> None:
    """|sample mean - mean| within Z standard errors of the mean (std = population std)."""
    n = sample.numel()
    se = std / math.sqrt(n)
    got = sample.double().mean().item()
    assert abs(got - mean) <= Z * se, f"{what}: mean {got:.6g}, expected {mean:.6g} ± {Z * se:.3g}"


def assert_std(sample: torch.Tensor, std: float, what: str) -> None:
    """Sample std within Z standard errors of ``std`` (SE of a Gaussian std: std / sqrt(2n))."""
    n = sample.numel()
    se = std / math.sqrt(2 * n)
    got = sample.double().std().item()
    assert abs(got - std) <= Z * se, f"{what}: std {got:.6g}, expected {std:.6g} ± {Z * se:.3g}"


# ---------------------------------------------------------------------------------------------
# Device-to-device draws
# ---------------------------------------------------------------------------------------------


def test_param_layout_names():
    assert PARAM_NAMES == ("dw_up", "dw_down", "slope_up", "slope_down", "w_min", "w_max")


def test_constant_step_draw_statistics():
    cfg = ConstantStepDevice(
        dw_min=0.01, dw_min_dtod=0.2, dw_min_std=0.0, up_down=0.0, up_down_dtod=0.0,
        w_max=0.8, w_min=-0.5, w_max_dtod=0.1, w_min_dtod=0.15,
    )
    params = cfg.draw_parameters((200, 200), gen(0))
    expected_shape = (6, 200, 200) if AXIS == 0 else (200, 200, 6)
    assert tuple(params.shape) == expected_shape
    assert params.dtype == torch.float32
    dw_up, dw_down = plane(params, "dw_up"), plane(params, "dw_down")
    # No imbalance at all: the up and down steps of a device are the same number.
    assert torch.equal(dw_up, dw_down)
    assert_mean(dw_up, 0.01, 0.01 * 0.2, "dw_up")
    assert_std(dw_up / 0.01, 0.2, "relative spread of dw_up")
    # Constant step: no dependence on the weight.
    assert torch.count_nonzero(plane(params, "slope_up")) == 0
    assert torch.count_nonzero(plane(params, "slope_down")) == 0
    w_max, w_min = plane(params, "w_max"), plane(params, "w_min")
    assert_mean(w_max, 0.8, 0.8 * 0.1, "w_max")
    assert_std(w_max / 0.8, 0.1, "relative spread of w_max")
    assert_mean(w_min, -0.5, 0.5 * 0.15, "w_min")
    assert_std(w_min / -0.5, 0.15, "relative spread of w_min")
    # The two bounds are drawn independently of each other and of the step.
    corr = torch.corrcoef(torch.stack([w_max.flatten(), w_min.flatten(), dw_up.flatten()]))
    off_diagonal = corr[~torch.eye(3, dtype=torch.bool)]
    assert off_diagonal.abs().max() <= Z / math.sqrt(w_max.numel())
    assert (w_min < 0).all() and (w_max > 0).all()


def test_up_down_asymmetry_statistics_without_gain_spread():
    """With no gain spread, (dw_up - dw_down) / (dw_up + dw_down) is exactly the drawn imbalance:

    dw_up ± dw_down = dw_min (gain + imb) ± dw_min (gain - imb)  ->  ratio = imb / gain = imb,
    so its mean is ``up_down`` and its std ``up_down_dtod``.
    """
    cfg = quiet(dw_min=0.001, up_down=0.05, up_down_dtod=0.02)
    params = cfg.draw_parameters((200, 200), gen(1), dtype=torch.float64)
    up, down = plane(params, "dw_up"), plane(params, "dw_down")
    ratio = (up - down) / (up + down)
    assert_mean(ratio, 0.05, 0.02, "asymmetry ratio")
    assert_std(ratio, 0.02, "asymmetry ratio")
    # The sum carries only the gain, which has no spread here.
    torch.testing.assert_close(up + down, torch.full_like(up, 2 * 0.001), rtol=1e-12, atol=0)


def test_up_down_asymmetry_with_gain_spread():
    """With gain spread the sum 2 dw_min gain carries the gain and the difference 2 dw_min imb the
    imbalance, independently: mean/std of both follow the config."""
    cfg = quiet(dw_min=0.001, dw_min_dtod=0.1, up_down=-0.04, up_down_dtod=0.03)
    params = cfg.draw_parameters((200, 200), gen(2), dtype=torch.float64)
    up, down = plane(params, "dw_up"), plane(params, "dw_down")
    gain = (up + down) / (2 * 0.001)
    imb = (up - down) / (2 * 0.001)
    assert_mean(gain, 1.0, 0.1, "gain")
    assert_std(gain, 0.1, "gain")
    assert_mean(imb, -0.04, 0.03, "imbalance")
    assert_std(imb, 0.03, "imbalance")
    corr = torch.corrcoef(torch.stack([gain.flatten(), imb.flatten()]))[0, 1]
    assert abs(corr.item()) <= Z / math.sqrt(gain.numel())
    # Global imbalance is dw_up = dw_min (1 + up_down) on average.
    assert_mean(up, 0.001 * (1 - 0.04), 0.001 * math.hypot(0.1, 0.03), "dw_up")
    assert_mean(down, 0.001 * (1 + 0.04), 0.001 * math.hypot(0.1, 0.03), "dw_down")


def test_steps_are_never_negative():
    # A huge spread makes gain - imbalance < 0 for many devices: those are stuck (step 0).
    cfg = ConstantStepDevice(dw_min=0.01, dw_min_dtod=1.0, up_down_dtod=1.0)
    params = cfg.draw_parameters((100, 100), gen(3))
    assert (plane(params, "dw_up") >= 0).all() and (plane(params, "dw_down") >= 0).all()
    assert (plane(params, "dw_up") == 0).any()


@pytest.mark.parametrize("cls", [ConstantStepDevice, LinearStepDevice, SoftBoundsDevice])
def test_same_seed_same_devices_different_seed_different(cls):
    cfg = cls()
    a = cfg.draw_parameters((30, 40), gen(7))
    b = cfg.draw_parameters((30, 40), gen(7))
    c = cfg.draw_parameters((30, 40), gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(plane(a, "dw_up"), plane(c, "dw_up"))
    assert not torch.equal(plane(a, "w_max"), plane(c, "w_max"))
    # And through the tile: the seed fixes the device parameters.
    t1 = AnalogTile(5, 4, TileConfig(device=cfg), seed=11)
    t2 = AnalogTile(5, 4, TileConfig(device=cfg), seed=11)
    t3 = AnalogTile(5, 4, TileConfig(device=cfg), seed=12)
    assert torch.equal(t1.device_params, t2.device_params)
    assert not torch.equal(t1.device_params, t3.device_params)


def test_soft_bounds_and_linear_step_slopes():
    w = SoftBoundsDevice(w_max_dtod=0.2, w_min_dtod=0.2).draw_parameters((20, 20), gen(4), dtype=torch.float64)
    torch.testing.assert_close(plane(w, "slope_up"), -1 / plane(w, "w_max"))
    torch.testing.assert_close(plane(w, "slope_down"), -1 / plane(w, "w_min"))
    lin = LinearStepDevice(gamma_up=0.3, gamma_down=0.7, w_max_dtod=0.2, w_min_dtod=0.2)
    p = lin.draw_parameters((20, 20), gen(5), dtype=torch.float64)
    torch.testing.assert_close(plane(p, "slope_up"), -0.3 / plane(p, "w_max"))
    torch.testing.assert_close(plane(p, "slope_down"), -0.7 / plane(p, "w_min"))


def test_linear_step_gamma_spread():
    lin = quiet(LinearStepDevice, gamma_up=0.5, gamma_down=0.5, gamma_dtod=0.1)
    p = lin.draw_parameters((200, 200), gen(6), dtype=torch.float64)
    gamma_up = -plane(p, "slope_up") * plane(p, "w_max")
    gamma_down = -plane(p, "slope_down") * plane(p, "w_min")
    for g in (gamma_up, gamma_down):
        assert_mean(g, 0.5, 0.1, "gamma")
        assert_std(g, 0.1, "gamma")
        assert (g >= 0).all()


def test_ideal_device_draws_nothing():
    cfg = IdealDevice()
    assert cfg.draw_parameters((4, 3), gen(0)) is None
    assert cfg.is_ideal
    model = cfg.model()
    assert model.c2c == 0.0 and not model.has_slope
    assert model.clip(torch.tensor([5.0, -5.0]), None).tolist() == [5.0, -5.0]
    tile = AnalogTile(4, 3, TileConfig(device=cfg), seed=0)
    assert tile.device_params is None
    w = torch.tensor([[3.0, -7.0, 0.5]] * 4)
    tile.set_weights(w)  # unbounded: nothing is clipped
    assert torch.equal(tile.get_weights(), w)


# ---------------------------------------------------------------------------------------------
# Cycle-to-cycle noise
# ---------------------------------------------------------------------------------------------

SHAPE = (200, 250)  # 50,000 devices


@pytest.mark.parametrize("n", [1, 16])
@pytest.mark.parametrize("up", [True, False])
@pytest.mark.parametrize("method", ["apply_pulses", "apply_signed_pulses"])
def test_cycle_to_cycle_noise_of_n_constant_steps(n, up, method):
    dw, c2c = 0.01, 0.3
    cfg = quiet(dw_min=dw, dw_min_std=c2c, w_max=10.0, w_min=-10.0)
    params = cfg.draw_parameters(SHAPE, gen(0))
    model = cfg.model()
    assert model.c2c == c2c and not model.has_slope
    w0 = torch.zeros(SHAPE)
    counts = torch.full(SHAPE, float(n))
    if method == "apply_pulses":
        new = model.apply_pulses(w0, counts, torch.full(SHAPE, up), params, gen(1))
    else:
        new = model.apply_signed_pulses(w0, counts if up else -counts, params, gen(1))
    sign = 1.0 if up else -1.0
    change = new * sign
    assert_mean(change, n * dw, c2c * dw * math.sqrt(n), "n-pulse change")
    assert_std(change, c2c * dw * math.sqrt(n), "n-pulse change")
    if n == 1:
        # One pulse: relative spread std/mean = dw_min_std.
        rel = change / dw
        assert_std(rel, c2c, "relative c2c spread of one step")


@pytest.mark.parametrize("cls", [SoftBoundsDevice, LinearStepDevice])
def test_cycle_to_cycle_noise_of_one_sloped_step(cls):
    """At w = 0 a sloped device steps by dw_up (dw_down), with relative spread dw_min_std."""
    dw, c2c = 0.01, 0.2
    cfg = quiet(cls, dw_min=dw, dw_min_std=c2c)
    params = cfg.draw_parameters(SHAPE, gen(0))
    model = cfg.model()
    assert model.has_slope
    ones = torch.ones(SHAPE)
    up = model.apply_pulses(torch.zeros(SHAPE), ones, torch.ones(SHAPE, dtype=torch.bool), params, gen(1))
    down = model.apply_signed_pulses(torch.zeros(SHAPE), -ones, params, gen(2))
    for change in (up, -down):
        assert_mean(change, dw, c2c * dw, "one sloped step")
        assert_std(change, c2c * dw, "one sloped step")


def test_no_generator_means_no_noise():
    cfg = quiet(dw_min=0.01, dw_min_std=0.5)
    params = cfg.draw_parameters((10, 10), gen(0))
    model = cfg.model()
    counts = torch.full((10, 10), 3.0)
    new = model.apply_pulses(torch.zeros(10, 10), counts, torch.ones(10, 10, dtype=torch.bool), params, None)
    torch.testing.assert_close(new, torch.full((10, 10), 0.03))
    new = model.apply_signed_pulses(torch.zeros(10, 10), -counts, params, None)
    torch.testing.assert_close(new, torch.full((10, 10), -0.03))


# ---------------------------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ConstantStepDevice, LinearStepDevice, SoftBoundsDevice])
def test_pulses_never_leave_each_devices_own_bounds(cls):
    cfg = cls(dw_min=0.01, dw_min_dtod=0.3, dw_min_std=0.5, w_max_dtod=0.3, w_min_dtod=0.3)
    params = cfg.draw_parameters((100, 100), gen(0))
    model = cfg.model()
    w_min, w_max = plane(params, "w_min"), plane(params, "w_max")
    g = gen(1)
    w = torch.rand((100, 100), generator=g) * (w_max - w_min) + w_min
    for _ in range(30):  # many up pulses, some devices receive thousands in one call
        counts = torch.randint(0, 400, (100, 100), generator=g).float()
        w = model.apply_pulses(w, counts, torch.ones_like(w, dtype=torch.bool), params, g)
        assert torch.isfinite(w).all(), f"{int((~torch.isfinite(w)).sum())} weights became NaN/inf"
        assert (w <= w_max).all(), "a device went above its own w_max"
        assert (w >= w_min).all()
    if cls is not SoftBoundsDevice:  # hard bounds are reached, soft ones only approached
        assert (w == w_max).float().mean() > 0.9
    for _ in range(30):
        counts = torch.randint(0, 400, (100, 100), generator=g).float()
        w = model.apply_signed_pulses(w, -counts, params, g)
        assert torch.isfinite(w).all(), f"{int((~torch.isfinite(w)).sum())} weights became NaN/inf"
        assert (w >= w_min).all(), "a device went below its own w_min"
        assert (w <= w_max).all()
    if cls is not SoftBoundsDevice:
        assert (w == w_min).float().mean() > 0.9
    # The device bounds differ from device to device (so the check above is per device).
    assert w_max.std() > 0.1 * w_max.mean()


@pytest.mark.parametrize("n", [0.0, 1.0, 3.0])
def test_sloped_device_whose_step_exceeds_its_range_stays_finite(n):
    """A device whose bound the draw clamped to ``dw_min`` (a -3.3 sigma bound at 30% spread)
    can have a step larger than the distance from 0 to its bound: ``a = -dw/w_max < -1``.

    Pulse by pulse the weight simply hits the bound and stays there; zero pulses change nothing.
    The closed form must not produce NaN (``log1p(a)`` is undefined for ``a < -1``).
    """
    one = torch.ones(2, dtype=torch.float64)
    params = make_params(
        dw_up=0.011 * one, dw_down=0.011 * one, slope_up=-one / 0.01, slope_down=one / 0.01,
        w_min=-0.01 * one, w_max=0.01 * one,
    )
    model = SoftBoundsDevice(dw_min=0.01).model()
    w0 = torch.zeros(2, dtype=torch.float64)
    counts = n * one
    p = {name: plane(params, name) for name in PARAM_NAMES}
    cfg = SoftBoundsDevice(dw_min=0.01)
    for up in (True, False):
        expected = one_by_one(cfg, p, w0, int(n), up)
        got = model.apply_pulses(w0, counts, torch.full((2,), up), params, None)
        assert torch.allclose(got, expected), f"apply_pulses(up={up}, n={n}): {got.tolist()} != {expected.tolist()}"
        got = model.apply_signed_pulses(w0, counts if up else -counts, params, None)
        assert torch.allclose(got, expected), f"apply_signed_pulses(up={up}, n={n}): {got.tolist()} != {expected.tolist()}"


def test_soft_bounds_tile_with_default_spreads_keeps_finite_weights():
    """The default 30% bound spread draws a few bounds closer to zero than two device steps in a
    100x100 array (they are pulled out to two steps); updating such an array (sequential pulses
    and the expected update) must keep every weight finite."""
    for pulse_type in ("stochastic", "expected"):
        cfg = TileConfig(device=SoftBoundsDevice(), update=PulseUpdateConfig(pulse_type=pulse_type))
        tile = AnalogTile(100, 100, cfg, seed=0)
        params = tile.device_params
        clamped = (plane(params, "w_max") == 2 * plane(params, "dw_up")) | (
            plane(params, "w_min") == -2 * plane(params, "dw_down")
        )
        assert clamped.any(), "precondition: some bound was pulled out to two steps"
        g = gen(0)
        for _ in range(3):
            tile.stash(torch.rand(4, 100, generator=g), 0.2 * torch.randn(4, 100, generator=g))
            tile.update(0.01)
        w = tile.get_weights()
        assert torch.isfinite(w).all(), f"{pulse_type}: {int(torch.isnan(w).sum())} weights are NaN"
        assert torch.isfinite(tile.forward(torch.rand(2, 100, generator=g))).all()


def test_tile_updates_stay_within_device_bounds():
    cfg = TileConfig(device=ConstantStepDevice(dw_min=0.01))  # 30% spreads, 30% c2c
    tile = AnalogTile(6, 5, cfg, seed=3)
    params = tile.device_params
    x = torch.tensor([[1.0, 0.5, 1.0, 0.8, 0.3]])
    d = torch.tensor([[-1.0, -0.7, -1.0, -0.2, -1.0, -0.5]])  # sign(x) != sign(d): weights grow
    for _ in range(40):
        tile.stash(x, d)
        tile.update(0.1)
        assert (tile.get_weights() <= plane(params, "w_max")).all()
    assert (tile.get_weights() == plane(params, "w_max")).any()
    for _ in range(40):
        tile.stash(-x, d)
        tile.update(0.1)
        assert (tile.get_weights() >= plane(params, "w_min")).all()
    assert (tile.get_weights() == plane(params, "w_min")).any()
    # Programming a target also clips to each device's own bounds.
    tile.set_weights(torch.full((6, 5), 5.0))
    assert torch.equal(tile.get_weights(), plane(params, "w_max"))


# ---------------------------------------------------------------------------------------------
# Step shapes: closed form against pulse-by-pulse recursion
# ---------------------------------------------------------------------------------------------


def step_up(cfg, p, w):
    """One potentiating step from weight w, written from the device's documented response."""
    if isinstance(cfg, SoftBoundsDevice):
        return p["dw_up"] * (1 - w / p["w_max"])
    if isinstance(cfg, LinearStepDevice):
        return p["dw_up"] * (1 - cfg.gamma_up * w / p["w_max"])
    return p["dw_up"]


def step_down(cfg, p, w):
    if isinstance(cfg, SoftBoundsDevice):
        return p["dw_down"] * (1 - w / p["w_min"])
    if isinstance(cfg, LinearStepDevice):
        return p["dw_down"] * (1 - cfg.gamma_down * w / p["w_min"])
    return p["dw_down"]


def one_by_one(cfg, p, w, n, up):
    for _ in range(n):
        w = w + step_up(cfg, p, w) if up else w - step_down(cfg, p, w)
        w = torch.minimum(torch.maximum(w, p["w_min"]), p["w_max"])
    return w


def test_soft_bounds_step_shrinks_towards_the_bound():
    cfg = quiet(SoftBoundsDevice, dw_min=0.05, w_max=0.8, w_min=-0.4)
    model = cfg.model()
    ws = torch.linspace(-0.4, 0.8, 13, dtype=torch.float64)
    params = cfg.draw_parameters((13,), gen(0), dtype=torch.float64)
    ones = torch.ones(13, dtype=torch.float64)
    up = model.apply_pulses(ws, ones, torch.ones(13, dtype=torch.bool), params, None) - ws
    down = ws - model.apply_pulses(ws, ones, torch.zeros(13, dtype=torch.bool), params, None)
    torch.testing.assert_close(up, 0.05 * (1 - ws / 0.8))
    torch.testing.assert_close(down, 0.05 * (1 - ws / -0.4))
    assert (up.diff() < 0).all() and (down.diff() > 0).all()
    # No step at the bound being approached.
    assert abs(up[-1].item()) < 1e-15 and abs(down[0].item()) < 1e-15
    # The symmetry point (up step = down step) is where 1 - w/0.8 = 1 + w/0.4, i.e. w = 0 (ws[4]).
    assert abs(ws[4].item()) < 1e-12 and torch.isclose(up[4], down[4])


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    kind=st.sampled_from(["constant", "linear", "soft"]),
    n=st.integers(0, 250),
    up=st.booleans(),
    frac=st.floats(0.0, 1.0),
    dw_min=st.floats(1e-4, 0.05),
    gamma=st.floats(0.0, 1.0),
    up_down=st.floats(-0.5, 0.5),
)
def test_closed_form_equals_pulse_by_pulse(kind, n, up, frac, dw_min, gamma, up_down):
    cls = {"constant": ConstantStepDevice, "linear": LinearStepDevice, "soft": SoftBoundsDevice}[kind]
    extra = {"gamma_up": gamma, "gamma_down": 1 - gamma} if kind == "linear" else {}
    cfg = cls(
        dw_min=dw_min, dw_min_dtod=0.3, dw_min_std=0.0, up_down=up_down, up_down_dtod=0.05,
        w_max=0.7, w_min=-0.5, w_max_dtod=0.2, w_min_dtod=0.2, **extra,
    )
    params = cfg.draw_parameters((3, 4), gen(n), dtype=torch.float64)
    p = {name: plane(params, name) for name in PARAM_NAMES}
    w0 = p["w_min"] + frac * (p["w_max"] - p["w_min"])
    model = cfg.model()
    counts = torch.full((3, 4), float(n), dtype=torch.float64)
    closed = model.apply_pulses(w0, counts, torch.full((3, 4), up), params, None)
    signed = model.apply_signed_pulses(w0, counts if up else -counts, params, None)
    loop = one_by_one(cfg, p, w0, n, up)
    torch.testing.assert_close(closed, loop, rtol=0, atol=1e-10)
    torch.testing.assert_close(signed, loop, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Up/down asymmetry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ConstantStepDevice, SoftBoundsDevice])
def test_up_then_down_pulse_drifts_by_the_imbalance(cls):
    dw = 0.001
    cfg = quiet(cls, dw_min=dw, up_down=0.1)
    params = cfg.draw_parameters((4, 4), gen(0), dtype=torch.float64)
    model = cfg.model()
    w = torch.zeros(4, 4, dtype=torch.float64)
    one = torch.ones(4, 4, dtype=torch.float64)
    w = model.apply_signed_pulses(w, one, params, None)
    w = model.apply_signed_pulses(w, -one, params, None)
    if cls is ConstantStepDevice:
        expected = dw * (1.1 - 0.9)  # 0.2 dw_min
    else:  # soft bounds: the down step is taken at w = 1.1 dw, where it is dw_down (1 + w)
        expected = dw * 1.1 - dw * 0.9 * (1 + dw * 1.1)
    torch.testing.assert_close(w, torch.full_like(w, expected), rtol=1e-9, atol=0)
    # Ten up/down cycles of a constant-step device drift ten times as far.
    if cls is ConstantStepDevice:
        for _ in range(9):
            w = model.apply_pulses(w, one, one > 0, params, None)
            w = model.apply_pulses(w, one, one < 0, params, None)
        torch.testing.assert_close(w, torch.full_like(w, 10 * 0.2 * dw), rtol=1e-9, atol=0)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, changes, field",
    [
        (ConstantStepDevice, {"dw_min": -0.001}, "dw_min"),
        (ConstantStepDevice, {"dw_min": 0.0}, "dw_min"),
        (ConstantStepDevice, {"dw_min": 0.7}, "dw_min"),  # larger than the weight range
        (LinearStepDevice, {"w_min": 0.0}, "w_min"),  # one-sided only where the step allows it
        (SoftBoundsDevice, {"w_min": 0.0}, "w_min"),
        (ConstantStepDevice, {"w_min": 0.3}, "w_min"),
        (ConstantStepDevice, {"w_max": -0.1}, "w_max"),
        (ConstantStepDevice, {"up_down": 1.0}, "up_down"),
        (ConstantStepDevice, {"up_down": -1.0}, "up_down"),
        (ConstantStepDevice, {"dw_min_dtod": -0.1}, "dw_min_dtod"),
        (ConstantStepDevice, {"dw_min_std": -0.1}, "dw_min_std"),
        (ConstantStepDevice, {"up_down_dtod": -0.01}, "up_down_dtod"),
        (ConstantStepDevice, {"w_max_dtod": -0.3}, "w_max_dtod"),
        (ConstantStepDevice, {"w_min_dtod": -0.3}, "w_min_dtod"),
        (ConstantStepDevice, {"dw_min": float("nan")}, "dw_min"),
        (ConstantStepDevice, {"dw_min": "0.001"}, "dw_min"),
        (SoftBoundsDevice, {"w_min": 0.1}, "w_min"),
        (LinearStepDevice, {"gamma_up": -0.5}, "gamma_up"),
        (LinearStepDevice, {"gamma_dtod": -0.5}, "gamma_dtod"),
    ],
)
def test_bad_device_values_raise_config_error_naming_the_field(cls, changes, field):
    with pytest.raises(ConfigError, match=rf"{cls.__name__}\.{field}\b"):
        cls(**changes)
    # replace() validates as well.
    with pytest.raises(ConfigError, match=rf"\.{field}\b"):
        cls().replace(**changes)


def test_valid_defaults_construct():
    for cls in (ConstantStepDevice, LinearStepDevice, SoftBoundsDevice, IdealDevice):
        cfg = cls()
        assert cls.from_dict(cfg.to_dict()) == cfg
    assert ConstantStepDevice().dw_min == 0.001
