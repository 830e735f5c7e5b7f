"""The one-sided pair (aihwkit's PCM preset, ``devices/onesided.py``) and the exponential step's
complex noise (``devices/expstep.py``)."""

from __future__ import annotations

import math

import pytest
import torch

from insitu.config import ConfigError
from insitu.devices import ExpStepDevice, LinearStepDevice, OneSidedPairDevice, PowStepDevice
from insitu.presets import get_preset
from insitu.tile import AnalogTile, TileConfig
from insitu.update import PulseUpdateConfig
from insitu.update.kernels import compiled_available, use_backend


def test_only_families_defined_at_zero_may_be_one_sided():
    ExpStepDevice(w_min=0.0, w_max=2.0, dw_min=0.01)
    PowStepDevice(w_min=0.0, w_max=1.0, dw_min=0.01)
    with pytest.raises(ConfigError, match="w_min"):
        LinearStepDevice(w_min=0.0)  # its slope divides by w_min
    with pytest.raises(ConfigError, match="one-sided"):
        OneSidedPairDevice(device=ExpStepDevice())  # a bipolar member
    with pytest.raises(ConfigError, match="refresh_lower"):
        OneSidedPairDevice(refresh_lower=0.8, refresh_upper=0.75)


def test_a_one_sided_device_draws_its_lower_bound_at_zero():
    device = ExpStepDevice(w_min=0.0, w_max=2.0, dw_min=0.01, w_min_dtod=0.3, w_max_dtod=0.1)
    params = device.draw_parameters((50, 40), torch.Generator().manual_seed(0))
    model = device.model()
    assert torch.all(model.plane(params, "w_min") == 0)
    assert torch.all(model.plane(params, "w_max") > 1.0)


def test_the_complex_noise_of_the_summed_mode():
    # n_up pulses of the mean device with no count variance: the spread is c2c sqrt(n) (Δ + add + slope |w|).
    c2c, add, slope, n, draws = 0.5, 0.01, 0.05, 4, 20000
    device = ExpStepDevice(dw_min=0.002, dw_min_std=c2c, dw_min_std_add=add, dw_min_std_slope=slope, dw_min_dtod=0.0,
                           up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)
    model = device.model()
    params = device.draw_parameters((draws,), torch.Generator().manual_seed(1))
    w = torch.full((draws,), 0.3)
    half_total, half_signed = torch.full((draws,), n / 2), torch.full((draws,), -n / 2)  # n_up = n, n_down = 0
    out = model.apply_mixed(w, half_total, half_signed, params, torch.Generator().manual_seed(2), count_variance=0.0)
    step_up, _ = model.steps_at(w, params)
    expected_mean = 0.3 + n * float(step_up[0])
    expected_std = c2c * math.sqrt(n) * (float(step_up[0]) + add + slope * 0.3)
    assert abs(float(out.mean()) - expected_mean) < 4 * expected_std / math.sqrt(draws)
    assert abs(float(out.std()) / expected_std - 1) < 0.03
    plain = ExpStepDevice(dw_min=0.002, dw_min_std=c2c, dw_min_dtod=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)
    quiet = plain.model().apply_mixed(w, half_total, half_signed, params, torch.Generator().manual_seed(2), count_variance=0.0)
    assert float(quiet.std()) < 0.5 * float(out.std())  # the floor and slope terms add noise


def _tile(refresh_read_noise=0.0, backend="torch", **pair):
    config = get_preset("pcm-2016-io")
    config = config.replace(device=config.device.replace(refresh_read_noise=refresh_read_noise, **pair))
    with use_backend(backend):
        return AnalogTile(3, 1, config, seed=4)


def _set_state(tile, g_plus, g_minus):
    model, params = tile.device_model, tile.device_params
    model.plane(params, "g_plus").copy_(torch.tensor(g_plus).reshape(3, 1))
    model.plane(params, "g_minus").copy_(torch.tensor(g_minus).reshape(3, 1))
    tile.weight.data.copy_(model.read(params))


def test_the_refresh_takes_exactly_the_pairs_with_both_devices_high():
    tile = _tile()
    model, params = tile.device_model, tile.device_params
    # Range 2: refresh where max > 1.5 and min > 0.5. Pair 0 qualifies; pair 1 has one device low
    # (range left on it); pair 2 has neither device high.
    _set_state(tile, [1.8, 1.8, 1.0], [1.0, 0.2, 1.0])
    before = tile.weight.detach().clone()
    refreshed = model.after_update(tile.weight.data, params, tile.generator, step=1)
    assert refreshed == 1
    assert model.plane(params, "refreshes").reshape(-1).tolist() == [1.0, 0.0, 0.0]
    assert torch.equal(tile.weight.detach()[1:], before[1:])  # the others untouched
    assert torch.equal(tile.weight.detach(), model.read(params))
    # Pair 0: both devices reset (G⁻ back near its reset value 0.01 ± 0.02 ± 0.01), the difference
    # 0.8 rewritten open loop on G⁺ (round(0.8 / 0.03235) = 25 pulses, within the 31 allowed).
    g_plus, g_minus = float(model.plane(params, "g_plus")[0, 0]), float(model.plane(params, "g_minus")[0, 0])
    assert g_minus < 0.1 and g_plus > 0.2
    assert float(tile.weight.detach()[0, 0]) > 0.2  # the sign kept (the noisy open-loop rewrite lands near 0.8 ± 0.3)


def test_the_refresh_runs_every_refresh_every_updates_only():
    tile = _tile(refresh_every=3)
    _set_state(tile, [1.8, 1.8, 1.8], [1.0, 1.0, 1.0])
    model = tile.device_model
    assert model.after_update(tile.weight.data, tile.device_params, tile.generator, step=2) == 0
    assert model.after_update(tile.weight.data, tile.device_params, tile.generator, step=3) == 3


def test_read_noise_makes_the_refresh_decision_noisy_near_the_threshold():
    decisions = []
    for seed in range(40):
        tile = _tile(refresh_read_noise=0.1)
        tile.manual_seed(seed)
        _set_state(tile, [1.5, 1.5, 1.5], [1.0, 1.0, 1.0])  # exactly at the upper threshold
        decisions.append(tile.device_model.after_update(tile.weight.data, tile.device_params, tile.generator, step=1))
    assert 0 < sum(decisions) < 3 * 40  # some reads above the threshold, some below


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_members_grow_between_refreshes_and_the_weight_is_their_difference(backend):
    # Up steps only, but a single noisy step may come out negative (the peer's noise has no floor
    # at 0: σ (|Δ| + add + slope |g|) ξ exceeds Δ with some probability): the members grow on
    # average, stay within [0, g_max], and the weight stays the read g⁺ − g⁻.
    if backend == "compiled" and not compiled_available():
        pytest.skip("numba not installed")
    config = get_preset("pcm-2016-io").replace(update=PulseUpdateConfig(bl=10))
    g = torch.Generator().manual_seed(0)
    with use_backend(backend):
        tile = AnalogTile(6, 5, config, seed=1)
        model = tile.device_model
        total_refreshes, growth = 0, 0.0
        for _ in range(60):
            plus, minus = (model.plane(tile.device_params, n).clone() for n in ("g_plus", "g_minus"))
            refreshes = model.plane(tile.device_params, "refreshes").clone()
            tile.stash(torch.rand(2, 5, generator=g), torch.randn(2, 6, generator=g) * 0.5)
            tile.update(0.05)
            kept = model.plane(tile.device_params, "refreshes") == refreshes
            total_refreshes += int((~kept).sum())
            for name, before in (("g_plus", plus), ("g_minus", minus)):
                after = model.plane(tile.device_params, name)
                growth += float((after[kept] - before[kept]).sum())
                g_max = tile.device_params[model.param_names.index(name.replace("g_", "") + "_w_max")]
                assert torch.all(after >= 0) and torch.all(after <= g_max)
            assert torch.equal(tile.weight.detach(), model.read(tile.device_params))
    assert growth > 0
    assert total_refreshes > 0  # the large steps saturate pairs within these updates
    if backend == "compiled":
        assert "stateful" in tile._kernel_cache


def test_a_one_sided_pair_tile_learns_a_target():
    # A 1-input array trained towards w* by the pulsed update of the peer's PCM preset: the error
    # falls well below the distance it started from (saturation handled by the refresh).
    config = get_preset("pcm-2016-io")
    target = torch.tensor([[0.6], [-0.4], [0.2], [-0.8]])
    tile = AnalogTile(4, 1, config, seed=2)
    start = float((tile.weight.detach() - target).abs().mean())
    x = torch.ones(1, 1)
    errors = []
    for step in range(400):
        d = tile.weight.detach() - target  # ∂(½|w x − w* x|²)/∂y with x = 1
        tile.stash(x, d.t())
        tile.update(0.05)
        errors.append(float((tile.weight.detach() - target).abs().mean()))
    assert sum(errors[-50:]) / 50 < 0.5 * start


def test_the_peer_pcm_preset_round_trips_and_names_its_numbers():
    config = get_preset("pcm-peer-io")
    assert TileConfig.from_dict(config.to_dict()) == config
    member = config.device.device
    assert (member.w_min, member.w_max, member.dw_min, member.dw_min_std) == (0.0, 2.0, 0.01, 0.6)
    assert (member.dw_min_std_add, member.dw_min_std_slope) == (0.042, 0.108)
    assert config.update.bl == 31 and config.forward.out_bits == 9
    assert math.isclose(config.device.nominal_step, 0.01 * (1 + 2.235))


def test_the_compiled_rewrite_has_the_distribution_of_the_torch_rewrite():
    pytest.importorskip("numba")
    results = {}
    for backend in ("torch", "compiled"):
        with use_backend(backend):
            tile = AnalogTile(2000, 1, get_preset("pcm-2016-io"), seed=5)
            model, params = tile.device_model, tile.device_params
            model.plane(params, "g_plus").fill_(1.8)
            model.plane(params, "g_minus").fill_(1.0)
            # All but a few (a read of 1.8 falls below the threshold 1.5 at 3 σ of the read noise).
            assert model.after_update(tile.weight.data, params, tile.generator, step=1) > 1980
            results[backend] = model.plane(params, "g_plus").reshape(-1).double()
            assert torch.equal(tile.weight.detach(), model.read(params))
    torch_g, compiled_g = results["torch"], results["compiled"]
    spread = float(torch_g.std())
    assert spread > 0.05  # the rewrite is noisy (pulse noise, reset spread, read noise)
    assert abs(float(compiled_g.mean()) - float(torch_g.mean())) < 4 * spread * math.sqrt(2 / 2000)
    assert abs(float(compiled_g.std()) / spread - 1) < 0.1
