"""PCM and jump-table conductance devices: SET-only response, jumps, table statistics, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from insitu import ConfigError
from insitu.devices import JumpTableDevice, PCMDevice
from insitu.devices.pcm import apply_set_pulses


def _pulse_train(device, n_devices=2000, pulses=150, seed=0):
    """Conductance of ``n_devices`` devices after 0..pulses SET pulses from RESET, ``(pulses+1, n)``."""
    gen = torch.Generator().manual_seed(seed)
    params = device.draw_parameters((n_devices,), gen)
    g = torch.full((n_devices,), device.reset_conductance)
    since = torch.zeros(n_devices)
    trace = [g]
    for _ in range(pulses):
        g, since = apply_set_pulses(device, g, since, torch.ones(n_devices), params, gen)
        trace.append(g)
    return torch.stack(trace), params


def test_pcm_set_pulses_only_ever_raise_the_conductance_and_stay_below_each_device_g_max():
    device = PCMDevice(g_max=1.0, g_max_dtod=0.2, dg=0.02, dg_dtod=0.3, dg_std=0.8, nonlinearity=1.5, initial_jump=0.1)
    trace, params = _pulse_train(device)
    steps = trace[1:] - trace[:-1]
    assert (steps >= 0).all(), "a SET pulse lowered a PCM conductance"
    assert (trace <= device.g_max_plane(params) + 1e-7).all()
    assert (trace >= device.g_min).all()
    # Saturation: the mean gradual step shrinks as the conductance grows (pulse 2 vs pulse 60).
    assert steps[60].mean() < 0.5 * steps[2].mean()


def test_linear_pcm_step_is_constant_until_the_hard_bound():
    device = PCMDevice(g_max=1.0, dg=0.01, nonlinearity=0.0)
    trace, _ = _pulse_train(device, n_devices=3, pulses=120)
    steps = trace[1:] - trace[:-1]
    torch.testing.assert_close(steps[:99], torch.full((99, 3), 0.01), atol=1e-6, rtol=0)
    assert (trace[-1] == 1.0).all()  # stopped at g_max, the 100th step and beyond do nothing more


def test_immediate_and_delayed_initial_jump():
    immediate = PCMDevice(g_max=1.0, dg=0.01, initial_jump=0.3)
    trace, _ = _pulse_train(immediate, n_devices=4, pulses=3)
    torch.testing.assert_close(trace[1], torch.full((4,), 0.3))  # first pulse after RESET: the jump
    torch.testing.assert_close(trace[2] - trace[1], torch.full((4,), 0.01), atol=1e-6, rtol=0)  # then gradual steps
    delayed = PCMDevice(g_max=1.0, dg=0.01, initial_jump=0.3, jump_delay=2)
    trace, _ = _pulse_train(delayed, n_devices=4, pulses=4)
    assert (trace[1] == 0).all() and (trace[2] == 0).all()  # nothing for two pulses
    torch.testing.assert_close(trace[3], torch.full((4,), 0.3))  # then the jump
    assert (trace[4] > trace[3]).all()


def test_device_to_device_spread_of_g_max_and_step_has_the_configured_size():
    device = PCMDevice(g_max=1.0, g_max_dtod=0.1, dg=0.01, dg_dtod=0.2)
    params = device.draw_parameters((20000,), torch.Generator().manual_seed(1))
    g_max, dg = params[0], params[1]
    assert abs(g_max.std() / g_max.mean() - 0.1) < 0.01
    assert abs(dg.std() / dg.mean() - 0.2) < 0.015
    # Same seed, same devices.
    torch.testing.assert_close(params, device.draw_parameters((20000,), torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("bin_index", [0, 2, 3])
def test_jump_table_sampling_matches_the_table_statistics(bin_index):
    table = JumpTableDevice(
        bin_edges=(0.0, 0.2, 0.5, 0.8, 1.0), mean=(0.05, 0.03, 0.01, -0.002), std=(0.01, 0.008, 0.004, 0.002)
    )
    n = 40000
    gen = torch.Generator().manual_seed(3)
    params = table.draw_parameters((n,), gen)
    # Devices spread over the bin, well inside it so that no step leaves [0, 1].
    low, high = table.bin_edges[bin_index], table.bin_edges[bin_index + 1]
    g = low + 0.05 + (high - low - 0.1) * torch.rand(n, generator=gen)
    dg = table.set_pulse(g, torch.zeros(n), params, gen) - g
    mean, std = table.mean[bin_index], table.std[bin_index]
    # Sample mean within 5 standard errors; sample std within 3% (n = 40000).
    assert abs(float(dg.mean()) - mean) < 5 * std / math.sqrt(n)
    assert abs(float(dg.std()) / std - 1) < 0.03


def test_jump_table_from_measurements_recovers_its_generating_table():
    truth = JumpTableDevice(bin_edges=(0.0, 0.5, 1.0), mean=(0.04, 0.01), std=(0.01, 0.005))
    gen = torch.Generator().manual_seed(0)
    n = 20000
    g = 0.05 + 0.85 * torch.rand(n, generator=gen)
    dg = truth.set_pulse(g, torch.zeros(n), truth.draw_parameters((n,), gen), gen) - g
    fitted = JumpTableDevice.from_measurements(g, dg, truth.bin_edges)
    assert fitted.mean == pytest.approx(truth.mean, abs=5e-4)
    assert fitted.std == pytest.approx(truth.std, rel=0.05)


def test_a_device_model_measured_into_a_jump_table():
    from insitu.devices import SoftBoundsDevice
    from insitu.devices.jump_table import jump_table_from_device

    # A soft-bounds device on [-1, 1] steps dw_min (1 - w) up: a table on [0, 2] (g = w + 1) must
    # hold mean steps dw_min (2 - g) at its bin centres and, with 30 % pulse-to-pulse noise, spreads
    # near 0.3 of them (the top bin is left out: the device creeps towards its bound there, so its
    # samples crowd near g = 2 where the step vanishes).
    device = SoftBoundsDevice(dw_min=0.01, w_max=1.0, w_min=-1.0, dw_min_std=0.3, dw_min_dtod=0.1)
    table = jump_table_from_device(device, bins=4, g_scale=2.0, trains=40, pulses=600, seed=1)
    centres = torch.tensor([0.25, 0.75, 1.25])
    expected = 0.01 * (2 - centres)
    assert torch.allclose(torch.tensor(table.mean[:3]), expected, rtol=0.05)
    ratio = torch.tensor(table.std[:3]) / torch.tensor(table.mean[:3])
    assert torch.all((ratio > 0.2) & (ratio < 0.4)), ratio
    assert table.gain_dtod == 0.1 and table.bin_edges == (0.0, 0.5, 1.0, 1.5, 2.0)
    with pytest.raises(ConfigError, match="bins and trains"):
        jump_table_from_device(device, bins=0)


def test_the_peer_pcm_table_preset_holds_the_measured_table():
    from insitu.devices.jump_table import jump_table_from_device
    from insitu.presets import PEER_PCM_TABLE_MEAN, PEER_PCM_TABLE_STD, _peer_pcm_device, get_preset

    table = jump_table_from_device(_peer_pcm_device(), bins=8, g_scale=1.0)
    assert [round(m, 5) for m in table.mean] == list(PEER_PCM_TABLE_MEAN)
    assert [round(v, 5) for v in table.std] == list(PEER_PCM_TABLE_STD)
    cell = get_preset("cristiano-2018-peer-pcm-table").cell
    assert cell.lsp.bin_edges[-1] == 0.5 and cell.msp.bin_edges[-1] == 1.0
    assert cell.lsp.mean[0] == pytest.approx(0.5 * PEER_PCM_TABLE_MEAN[0])


def test_jump_table_from_csv_and_json_files(tmp_path):
    csv_path = tmp_path / "table.csv"
    csv_path.write_text("g_low,g_high,mean,std\n0.0,0.5,0.02,0.005\n0.5,1.0,0.01,0.002\n")
    table = JumpTableDevice.from_file(csv_path, gain_dtod=0.1)
    assert table.bin_edges == (0.0, 0.5, 1.0)
    assert table.mean == (0.02, 0.01) and table.std == (0.005, 0.002) and table.gain_dtod == 0.1
    json_path = tmp_path / "table.json"
    json_path.write_text(json.dumps(table.to_dict()))
    assert JumpTableDevice.from_file(json_path) == table
    gap = tmp_path / "gap.csv"
    gap.write_text("g_low,g_high,mean,std\n0.0,0.4,0.02,0.005\n0.5,1.0,0.01,0.002\n")
    with pytest.raises(ConfigError, match="row 2 starts at g_low=0.5"):
        JumpTableDevice.from_file(gap)


def test_bidirectional_jump_table_depresses():
    table = JumpTableDevice(bin_edges=(0.0, 1.0), mean=(0.01,), std=(0.0,), mean_down=(-0.01,), std_down=(0.0,))
    assert table.bidirectional and not PCMDevice().bidirectional
    params = table.draw_parameters((3,), torch.Generator().manual_seed(0))
    g = torch.full((3,), 0.5)
    torch.testing.assert_close(table.depress_pulse(g, params, None), torch.full((3,), 0.49))
    with pytest.raises(TypeError, match="SET-only"):
        PCMDevice().depress_pulse(g, params, None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(bin_edges=(0.0, 0.5, 0.5, 1.0), mean=(0.01,) * 3, std=(0.0,) * 3), "must increase strictly: edge 2"),
        (dict(bin_edges=(0.0, 0.6, 0.4, 1.0), mean=(0.01,) * 3, std=(0.0,) * 3), "must increase strictly"),
        (dict(bin_edges=(0.0, 0.5, 1.0), mean=(0.01, 0.01), std=(0.001, -0.001)), "spreads must be >= 0; bin 1"),
        (dict(bin_edges=(0.0, 0.5, 1.0), mean=(0.01,), std=(0.001, 0.001)), "one entry per bin"),
        (dict(bin_edges=(0.0, 1.0), mean=(0.01,), std=(0.0,), mean_down=(-0.01,)), "give both mean_down and std_down"),
    ],
)
def test_bad_jump_tables_are_rejected_with_the_fix(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        JumpTableDevice(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(g_max=0.0), "g_max.*must be > 0"),
        (dict(dg=-0.1), "dg.*must be > 0"),
        (dict(initial_jump=1.0), "fraction of g_max"),
        (dict(jump_delay=2), "needs initial_jump > 0"),
        (dict(dg_std=-0.1), "dg_std.*>= 0"),
    ],
)
def test_bad_pcm_parameters_are_rejected(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PCMDevice(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(nonlinearity=0.2, initial_jump=0.02, dg_std=0.3),  # the Cristiano LSP
        dict(nonlinearity=2.0, initial_jump=0.1, dg_std=0.3, jump_delay=2),
        dict(nonlinearity=1.0, initial_jump=0.0, dg_std=0.0),
        dict(nonlinearity=0.0, initial_jump=0.3, dg_std=0.8),
    ],
)
def test_compiled_set_pulses_are_the_reference_rounds_with_the_same_draws(kwargs):
    pytest.importorskip("numba")
    from insitu.update.kernels import use_backend

    device = PCMDevice(g_max=0.5, g_max_dtod=0.1, dg=0.005, dg_dtod=0.2, **kwargs)
    gen = torch.Generator().manual_seed(3)
    n = 997
    params = device.draw_parameters((n,), gen)
    # Devices part way up their range, some at their jump, and 0-12 pulses each (0 pulses: untouched).
    g = torch.rand(n, generator=gen) * 0.4
    since = torch.randint(0, 4, (n,), generator=gen).float()
    counts = torch.randint(0, 13, (n,), generator=gen).float()
    out = {}
    for backend in ("torch", "compiled"):
        draws = torch.Generator().manual_seed(11)
        with use_backend(backend):
            new_g, new_since = apply_set_pulses(device, g, since, counts, params, draws)
        out[backend] = (new_g, new_since, torch.randn(3, generator=draws))  # the generator's state after
    ref, fast = out["torch"], out["compiled"]
    assert torch.equal(fast[1], ref[1]) and torch.equal(fast[2], ref[2])  # same pulses, same number of draws
    exact = kwargs["nonlinearity"] in (0.0, 1.0)  # no power: the same float32 arithmetic bit for bit
    torch.testing.assert_close(fast[0], ref[0], rtol=0 if exact else 1e-6, atol=0 if exact else 1e-7)
    assert torch.equal(g, g.clone()) and (fast[0][counts == 0] == g[counts == 0]).all()  # inputs untouched
