"""Edge-processing hardware model, and the sparse analog crossbar."""

from __future__ import annotations

import json

import pytest
import torch

from insitu.config import ConfigError
from insitu.nn import AnalogLinear
from insitu.optim import AnalogSGD
from insitu.sparse import make_pattern, mask_analog_linear
from insitu.sparse.hardware import (
    EdgeHardwareConfig,
    _multipliers,
    estimate,
    measure_torch_step,
)


def test_rtl_configuration_gives_its_clock_count_and_resources():
    # DNN.sv defaults: 1024-64-16, fo 8 and 8, z 512 and 32, cpc = 1024·8/512 = 16.
    est = estimate((1024, 64, 16), (8, 8), z=(512, 32))
    assert est.clocks_per_cycle == 16
    j1, j2 = est.junctions
    assert (j1.in_degree, j2.in_degree) == (128, 32)
    assert (j1.ff_multipliers, j1.ff_adders, j1.bp_multipliers, j1.up_multipliers) == (512, 128, 0, 512 + 4)
    assert (j2.ff_multipliers, j2.ff_adders, j2.bp_multipliers, j2.bp_adders, j2.up_adders) == (32, 32, 64, 32, 33)
    assert est.network_density == pytest.approx((8192 + 512) / (1024 * 64 + 64 * 16))
    assert est.complexity_reduction == pytest.approx(1 / est.network_density)
    cfg = EdgeHardwareConfig()
    assert est.examples_per_second == pytest.approx(cfg.clock_hz / (16 + cfg.overhead_clocks))
    assert est.junctions[0].weight_words == (512 + 4) * 16


def test_clocks_per_cycle_sets_equalised_z():
    est = estimate((800, 100, 10), (50, 10), clocks_per_cycle=200)
    assert [j.z for j in est.junctions] == [200, 5]
    assert {j.clocks_per_cycle for j in est.junctions} == {200}


def test_dense_comparison_uses_no_more_multipliers_and_is_the_fastest_that_fits():
    est = estimate((800, 100, 10), (10, 2), clocks_per_cycle=40)
    assert est.dense_multipliers <= est.multipliers
    faster = tuple(-(-e // (est.dense_clocks_per_cycle - 1)) for e in (80_000, 1_000))
    assert _multipliers((800, 100, 10), (100, 10), faster) > est.multipliers
    # dense work / sparse work with the same multipliers: about the complexity reduction
    assert est.speedup_vs_dense == pytest.approx(est.complexity_reduction, rel=0.15)
    json.dumps(est.to_dict())  # JSON-ready


def test_unequal_cycles_and_bad_z_are_rejected():
    with pytest.raises(ConfigError, match="differ"):
        estimate((800, 100, 10), (50, 10), z=(200, 10))
    with pytest.raises(ConfigError, match="does not fit the memory banks"):
        estimate((800, 100, 10), (50, 10), z=(400 * 100 // 125, 8))  # 320 does not divide 800
    with pytest.raises(ConfigError, match="either z .* or clocks_per_cycle"):
        estimate((800, 100, 10), (50, 10))
    with pytest.raises(ConfigError, match="must divide every junction"):
        estimate((800, 100, 10), (50, 10), clocks_per_cycle=3)
    with pytest.raises(ConfigError, match="does not divide"):
        estimate((10, 4, 2), (3, 2), clocks_per_cycle=1)
    with pytest.raises(ConfigError, match="clock_hz"):
        EdgeHardwareConfig(clock_hz=0)


def test_measured_torch_step_reports_positive_times():
    result = measure_torch_step((64, 16, 10), (4, 5), batch_size=8, steps=5, warmup=1)
    assert result["seconds_per_step"] > 0
    assert result["examples_per_second"] == pytest.approx(8 / result["seconds_per_step"])


def test_absent_crosspoints_stay_exactly_zero_through_pulsed_updates():
    torch.manual_seed(0)
    layer = AnalogLinear(20, 10, seed=3)  # default tile: constant-step device, stochastic pulses
    mask = make_pattern(20, 10, 3, seed=1).to_mask()
    before = layer.get_weights()[0]
    mask_analog_linear(layer, mask)
    opt = AnalogSGD(layer.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        opt.zero_grad()
        layer(torch.rand(4, 20, generator=gen)).pow(2).sum().backward()
        opt.step()
    weight, _ = layer.get_weights()
    assert torch.equal(weight[~mask], torch.zeros(int((~mask).sum())))
    assert (weight[mask] != before[mask]).float().mean() > 0.5  # present devices were pulsed
    assert layer.tile.counters.to_dict()  # pulses were counted
    layer.set_weights(torch.ones(10, 20))  # programming respects the mask too
    assert torch.equal(layer.get_weights()[0][~mask], torch.zeros(int((~mask).sum())))


def test_mask_shape_errors():
    layer = AnalogLinear(20, 10, seed=0)
    with pytest.raises(ValueError, match="pattern is 10 -> 20"):
        mask_analog_linear(layer, make_pattern(10, 20, 2))
    with pytest.raises(ValueError, match="bool mask of shape"):
        mask_analog_linear(layer, torch.ones(20, 10, dtype=torch.bool))
