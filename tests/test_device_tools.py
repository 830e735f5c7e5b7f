"""insitu device plot / fit (insitu.devices.response, insitu.devices.fit).

The fit is checked on synthetic data made by each family's own model (the mean device driven
from its lower bound by 2 cycles of 600 up then 600 down single pulses): without cycle-to-cycle
noise the identifiable parameters come back within 2 % and the step curve within 2 % of its
largest value; with 30 % cycle-to-cycle noise the step curve comes back within 5 % of its largest
value for the linear families and 15 % for the others (power, exponential, piecewise: more
parameters from the same data), and the spread itself within 0.05.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from insitu.cli import main
from insitu.config import ConfigError
from insitu.devices import (
    ConstantStepDevice,
    ExpStepDevice,
    LinearStepDevice,
    PiecewiseStepDevice,
    PowStepDevice,
    SoftBoundsDevice,
    fit_device,
)
from insitu.devices.fit import predicted_increments
from insitu.devices.response import mean_device, simulate_response, step_curves, symmetry_point
from insitu.tile import TileConfig

CASES = {
    "constant-step": (ConstantStepDevice(dw_min=0.004, up_down=0.05, w_max=0.8, w_min=-0.7), ("dw_min", "up_down", "w_max", "w_min")),
    "soft-bounds": (SoftBoundsDevice(dw_min=0.004, up_down=-0.05, w_max=1.2, w_min=-0.9), ("dw_min", "up_down", "w_max", "w_min")),
    "linear-step": (
        LinearStepDevice(dw_min=0.004, up_down=0.05, w_max=1.1, w_min=-0.9, gamma_up=0.3, gamma_down=0.6),
        ("dw_min", "up_down", "gamma_up", "gamma_down", "w_max", "w_min"),
    ),
    "pow-step": (
        PowStepDevice(dw_min=0.006, up_down=0.05, w_max=1.0, w_min=-1.0, pow_gamma=1.5, pow_up_down=0.1),
        ("dw_min", "up_down", "pow_gamma", "pow_up_down", "w_max", "w_min"),
    ),
    # a, b, A, γ are not separately identifiable: the step curve is what must come back.
    "exp-step": (
        ExpStepDevice(dw_min=0.004, up_down=0.1, w_max=1, w_min=-1, a=-0.5, b=-0.5, gamma_up=5, gamma_down=5, A_up=-1.18445, A_down=-0.081404),
        ("dw_min", "up_down", "w_max", "w_min"),
    ),
    "piecewise": (
        PiecewiseStepDevice(dw_min=0.004, w_max=1, w_min=-1, piecewise_up=(1.5, 1.3, 1.0, 0.7, 0.4), piecewise_down=(0.5, 0.8, 1.0, 1.1, 1.4)),
        ("dw_min", "w_max", "w_min"),
    ),
}
NOISY_CURVE_TOLERANCE = {"constant-step": 0.05, "soft-bounds": 0.05, "linear-step": 0.05, "pow-step": 0.15, "exp-step": 0.15, "piecewise": 0.15}


def _synthetic(device, c2c, seed=3):
    sim = simulate_response(mean_device(device).replace(dw_min_std=c2c), pulses=600, cycles=2, noise=c2c > 0, dtype=torch.float64, seed=seed)
    return sim["pulse"].numpy(), sim["weight"][:, 0].numpy(), sim["direction"].numpy()


def _curve_error(truth, fitted):
    """Largest deviation of the fitted step curves from the true ones, over the largest true step."""
    w, up, down = step_curves(truth, points=60)
    w = w.numpy()
    fit_up = predicted_increments(fitted, w, np.ones_like(w))
    fit_down = -predicted_increments(fitted, w, -np.ones_like(w))
    top = max(float(up.max()), float(down.max()))
    return max(np.abs(fit_up - up.numpy()).max(), np.abs(fit_down - down.numpy()).max()) / top


@pytest.mark.parametrize("family", list(CASES))
def test_fit_recovers_the_parameters_without_noise(family):
    device, names = CASES[family]
    pulse, weight, _ = _synthetic(device, 0.0)
    # Directions inferred from the increments (no direction column).
    fit = fit_device(pulse, weight, family, is_weight=True, nodes=5)
    for name in names:
        assert getattr(fit.device, name) == pytest.approx(getattr(device, name), rel=0.02, abs=0.02 * abs(device.up_down) + 1e-9), name
    if family == "piecewise":
        assert fit.device.dw_min * np.array(fit.device.piecewise_up) == pytest.approx(0.004 * np.array(device.piecewise_up), rel=0.02)
        assert fit.device.dw_min * np.array(fit.device.piecewise_down) == pytest.approx(0.004 * np.array(device.piecewise_down), rel=0.02)
    assert _curve_error(device, fit.device) < 0.02
    assert fit.relative_rms < 1e-4 and fit.c2c < 1e-4


@pytest.mark.parametrize("family", list(CASES))
def test_fit_with_cycle_to_cycle_noise(family):
    device, _ = CASES[family]
    pulse, weight, direction = _synthetic(device, 0.3)
    fit = fit_device(pulse, weight, family, direction=direction, is_weight=True, nodes=5)
    assert _curve_error(device, fit.device) < NOISY_CURVE_TOLERANCE[family]
    assert fit.c2c == pytest.approx(0.3, abs=0.05)


@pytest.mark.parametrize("family", ["constant-step", "soft-bounds", "linear-step"])
def test_auto_picks_the_family_of_the_data(family):
    device, _ = CASES[family]
    pulse, weight, _ = _synthetic(device, 0.3)
    fit = fit_device(pulse, weight, "auto", is_weight=True)
    assert fit.family == family
    assert [f.family for f in fit.candidates] == ["constant-step", "soft-bounds", "linear-step", "pow-step", "exp-step", "piecewise"]


def test_conductance_maps_linearly_to_the_weight_range():
    device, _ = CASES["soft-bounds"]
    pulse, weight, direction = _synthetic(device, 0.0)
    conductance = 20 + 8 * weight  # µS; w = -1 is 12, w = 1 is 28
    fit = fit_device(pulse, conductance, "soft-bounds", direction=direction, g_range=(12, 28))
    assert fit.device.w_max == pytest.approx(1.2, rel=1e-6) and fit.device.dw_min == pytest.approx(0.004, rel=1e-6)
    # Default: the observed range onto [-1, 1].
    fit = fit_device(pulse, conductance, "soft-bounds", direction=direction)
    lo, hi = weight.min(), weight.max()
    scale = 2 / (hi - lo)
    assert fit.device.w_max == pytest.approx(-1 + (1.2 - lo) * scale, rel=1e-6)
    mapped = np.linspace(-0.9, 0.9, 7)  # the steps scale with the map: Δw' = s Δw at w = lo + (w' + 1) / s
    for sign in (1.0, -1.0):
        truth = predicted_increments(device, lo + (mapped + 1) / scale, np.full(7, sign))
        assert predicted_increments(fit.device, mapped, np.full(7, sign)) == pytest.approx(scale * truth, rel=1e-6)


def _write_csv(path, rows, header="pulse,conductance,direction"):
    path.write_text((header + "\n" if header else "") + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def test_cli_fit_writes_a_loadable_tile_config(tmp_path):
    device, _ = CASES["soft-bounds"]
    pulse, weight, direction = _synthetic(device, 0.2)
    data = _write_csv(tmp_path / "d.csv", [(int(p), f"{20 + 8 * w:.7f}", int(d) if i else "") for i, (p, w, d) in enumerate(zip(pulse, weight, direction))])
    out = tmp_path / "tile.yaml"
    result = CliRunner().invoke(main, ["device", "fit", str(data), "--g-range", "12,28", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "soft-bounds (chosen)" in result.output and "fit error: RMS of increments" in result.output
    tile = TileConfig.from_file(out)
    assert isinstance(tile.device, SoftBoundsDevice)
    assert tile.device.dw_min == pytest.approx(0.004, rel=0.05) and tile.device.dw_min_std == pytest.approx(0.2, abs=0.03)
    assert tile.forward.out_noise == 0.06 and tile.update.bl == 10  # the 2016 preset's IO and update


@pytest.mark.parametrize(
    "header, rows, message",
    [
        ("pulse,weight_noise", [(i, i) for i in range(30)], "missing column 'conductance'"),
        ("conductance,direction", [(i, 1) for i in range(30)], "missing column 'pulse'"),
        ("pulse,conductance", [(i, 0.1 * i) for i in range(10)], "only 10 pulses"),
        ("pulse,conductance", [(i, 0.1 * i) for i in range(15)] + [(15, "abc")] + [(i, 0.1 * i) for i in range(16, 30)], "row 17, column 'conductance': 'abc' is not a number"),
        ("pulse,conductance", [(i, 0.1 * i) for i in range(30)], "0 down increments"),
        ("pulse,conductance", [(i, 5.0) for i in range(30)], "is constant"),
    ],
)
def test_cli_fit_bad_csv_names_the_problem(tmp_path, header, rows, message):
    data = _write_csv(tmp_path / "bad.csv", rows, header)
    result = CliRunner().invoke(main, ["device", "fit", str(data), "--out", str(tmp_path / "t.yaml")])
    assert result.exit_code == 2
    assert message in result.output, result.output
    assert not (tmp_path / "t.yaml").exists()


def test_csv_without_header_is_pulse_conductance_direction(tmp_path):
    device, _ = CASES["linear-step"]
    pulse, weight, direction = _synthetic(device, 0.0)
    data = _write_csv(tmp_path / "d.csv", [(int(p), f"{w:.12f}", int(d) if i else 1) for i, (p, w, d) in enumerate(zip(pulse, weight, direction))], header="")
    from insitu.devices.fit import read_pulse_csv

    read = read_pulse_csv(data)
    assert read.direction is not None and not read.is_weight and len(read.pulse) == len(pulse)


def test_plot_command_writes_a_png(tmp_path):
    out = tmp_path / "r.png"
    result = CliRunner().invoke(main, ["device", "plot", "ecram-2016-io", "--out", str(out), "--devices", "3", "--pulses", "200"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert "symmetry point 0" in result.output


def test_plot_reads_a_device_config_file_and_refuses_what_has_no_pulses(tmp_path):
    path = tmp_path / "dev.yaml"
    SoftBoundsDevice(dw_min=0.01).to_yaml(path)
    out = tmp_path / "r.png"
    result = CliRunner().invoke(main, ["device", "plot", str(path), "--out", str(out), "--pulses", "50", "--cycles", "1"])
    assert result.exit_code == 0 and out.stat().st_size > 0, result.output
    for spec in ("floating-point", "cristiano-2018-two-pair", "no-such-preset"):
        result = CliRunner().invoke(main, ["device", "plot", spec, "--out", str(tmp_path / "x.png")])
        assert result.exit_code == 2 and not (tmp_path / "x.png").exists(), result.output


def test_simulated_trajectory_is_the_model_pulse_by_pulse():
    device = ConstantStepDevice(dw_min=0.01, dw_min_std=0.0)
    sim = simulate_response(device, pulses=20, cycles=1, n_devices=4, noise=False)
    params, model = sim["params"], sim["model"]
    w = model.clip(torch.full((1, 4), -math.inf), params)
    assert torch.equal(sim["weight"][0], w[0])
    for k in range(1, 41):
        w = model.apply_signed_pulses(w, torch.full((1, 4), float(sim["direction"][k])), params, None)
        assert torch.equal(sim["weight"][k], w[0])


def test_symmetry_point_of_the_mean_device():
    # Soft bounds: (dw_up - dw_down) / (dw_up / w_max - dw_down / w_min) in closed form.
    device = SoftBoundsDevice(dw_min=0.004, up_down=0.1, w_max=1.0, w_min=-1.0)
    up, down = 0.0044, 0.0036
    assert symmetry_point(device) == pytest.approx((up - down) / (up / 1.0 + down / 1.0), rel=1e-5)
    # Power step γ = 1 with a symmetric range: the middle, from the grid.
    assert symmetry_point(PowStepDevice(w_max=0.6, w_min=-0.6)) == pytest.approx(0.0, abs=1e-3)
    assert symmetry_point(ConstantStepDevice()) is None


def test_table_command_measures_a_pair_preset_into_a_loadable_jump_table(tmp_path):
    from insitu.devices import JumpTableDevice
    from insitu.devices.jump_table import jump_table_from_device
    from insitu.presets import _peer_pcm_device

    out = tmp_path / "table.csv"
    result = CliRunner().invoke(main, ["device", "table", "pcm-peer-io", "--out", str(out), "--bins", "4", "--g-max", "2"])
    assert result.exit_code == 0, result.output
    assert "member ExpStepDevice" in result.output
    loaded = JumpTableDevice.from_file(out)
    direct = jump_table_from_device(_peer_pcm_device(), bins=4, g_scale=2.0)
    assert loaded.bin_edges == direct.bin_edges and loaded.mean == direct.mean and loaded.std == direct.std
    # A preset whose devices are a cell's own (PCM pairs of varying significance) has no single device.
    result = CliRunner().invoke(main, ["device", "table", "cristiano-2018-two-pair", "--out", str(out)])
    assert result.exit_code != 0 and "no single tile device" in result.output
