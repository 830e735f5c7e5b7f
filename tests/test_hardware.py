"""insitu.hardware: units and limits of the cost models, mapping, registry, bad input, CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from torch import nn

from insitu import AnalogConv2d, AnalogLinear, ConfigError
from insitu.cli import main
from insitu.hardware import (
    Estimator,
    HardwareMappingError,
    LayerEstimate,
    LayerShape,
    NetworkShape,
    PCMSystemConfig,
    RPUSystemConfig,
    get_estimator,
    named_network,
    network_from_mlp,
    network_from_model,
    ops_per_example,
    register_estimator,
    required_value,
    sensitivity,
    with_parameter,
)
from insitu.hardware import base as hardware_base
from insitu.hardware.digital import DigitalConfig, GPUConfig
from insitu.hardware.edge import EdgeSystemConfig
from insitu.sparse import PatternConfig, SparseLinear, make_pattern
from insitu.sparse.hardware import EdgeHardwareConfig
from insitu.sparse.hardware import estimate as sparse_estimate


def one_layer(rows=4096, cols=4096, vectors=1, name="l"):
    return NetworkShape(name, (LayerShape("0", "linear", rows, cols, vectors=vectors),))


# -- units and limits --------------------------------------------------------------------------------
def test_update_time_scales_with_bl_and_pulse_duration():
    network = network_from_mlp((784, 256, 128, 10))
    times = {}
    for bl in (5, 10, 40):
        est = get_estimator("rpu", RPUSystemConfig(bl=bl, pulse_duration_s=2e-9)).estimate(network)
        times[bl] = est.time_by_component()["update"]
    # Three layers, one vector each, all devices pulsed in parallel: 3 · BL · pulse duration.
    for bl, t in times.items():
        assert t == pytest.approx(3 * bl * 2e-9)
    # The update time does not depend on the array size (papers.md §1.2: all cross-points at once).
    small = get_estimator("rpu", RPUSystemConfig(array_rows=64, array_cols=64)).estimate(network)
    large = get_estimator("rpu").estimate(network)
    assert small.layers[0].time_s["update"] == pytest.approx(large.layers[0].time_s["update"])


def test_time_scales_with_the_sequential_vectors_of_a_conv_layer():
    def conv_net(image):
        model = nn.Sequential(AnalogConv2d(3, 8, 5, seed=0), nn.Tanh())
        return network_from_model(model, (3, image, image))

    small, large = conv_net(12), conv_net(20)
    assert small.layers[0].vectors == (12 - 5 + 1) ** 2
    assert large.layers[0].vectors == (20 - 5 + 1) ** 2
    assert (small.layers[0].rows, small.layers[0].cols) == (8, 5 * 5 * 3 + 1)
    rpu = get_estimator("rpu")
    t_small, t_large = (rpu.estimate(n).layers[0] for n in (small, large))
    ratio = large.layers[0].vectors / small.layers[0].vectors
    for phase in ("forward", "update"):
        assert t_large.time_s[phase] == pytest.approx(ratio * t_small.time_s[phase])
    assert t_large.energy_j["ADC"] == pytest.approx(ratio * t_small.energy_j["ADC"])


def test_the_2017_cnn_maps_to_the_arrays_of_the_paper():
    # Gokmen, Onen & Haensch 2017 (papers.md §2.2): K1 16 × 26 with 24² patches, K2 32 × 401
    # with 8² patches, W3 128 × 513, W4 10 × 129, one vector each.
    network = named_network("cnn-2017")
    got = [(layer.rows, layer.cols, layer.vectors) for layer in network.layers]
    k = 5
    assert got == [(16, k * k + 1, (28 - k + 1) ** 2), (32, k * k * 16 + 1, (12 - k + 1) ** 2), (128, 513, 1), (10, 129, 1)]


def test_energy_and_time_sum_over_components_and_layers():
    for hardware in ("rpu", "pcm", "gpu", "cpu"):
        est = get_estimator(hardware).estimate(named_network("cnn-2017"), examples_per_epoch=1000)
        by_component = sum(est.energy_by_component().values())
        by_layer = sum(layer.total_energy_j for layer in est.layers)
        assert by_component == pytest.approx(by_layer, rel=1e-12)
        assert est.energy_per_example_j == pytest.approx(by_layer, rel=1e-12)
        assert sum(est.time_by_component().values()) == pytest.approx(est.time_per_example_s, rel=1e-12)
        assert est.energy_per_epoch_j == pytest.approx(1000 * est.energy_per_example_j)
        assert est.ops_per_s_per_w == pytest.approx(est.ops_per_s / est.power_w)
        assert all(v >= 0 for layer in est.layers for v in (*layer.time_s.values(), *layer.energy_j.values()))


def test_energy_terms_follow_their_parameters():
    network = network_from_mlp((784, 256, 128, 10))
    base = get_estimator("rpu").estimate(network).energy_by_component()
    doubled = get_estimator("rpu", RPUSystemConfig().replace(
        periphery=RPUSystemConfig().periphery.replace(adc_energy_j=20e-12))).estimate(network).energy_by_component()
    assert doubled["ADC"] == pytest.approx(2 * base["ADC"])
    assert doubled["array read"] == pytest.approx(base["array read"])
    # Array read energy V²/R·t per device: halving R doubles it.
    half_r = get_estimator("rpu", RPUSystemConfig(device_resistance_ohm=12e6)).estimate(network).energy_by_component()
    assert half_r["array read"] == pytest.approx(2 * base["array read"])


def test_rpu_array_throughput_reproduces_the_derived_420_tops_per_pass():
    # papers.md §1.1 [D]: 2 · 4096² operations per 80 ns integration ≈ 4.2e14 Op/s per array and
    # pass, from the paper's 4096 × 4096 arrays and 80 ns [R]. Recomputed by the model's forward
    # phase of one full tile.
    est = get_estimator("rpu").estimate(one_layer())
    forward_rate = est.ops_per_example["forward"] / est.layers[0].time_s["forward"]
    assert forward_rate == pytest.approx(4.2e14, rel=0.10)


def test_layers_larger_than_an_array_use_several_tiles_and_partial_sums():
    rpu = get_estimator("rpu", RPUSystemConfig(array_rows=100, array_cols=100))
    est = rpu.estimate(one_layer(rows=250, cols=150))
    assert est.layers[0].tiles == 3 * 2
    no_split = get_estimator("rpu", RPUSystemConfig(array_rows=1000, array_cols=1000)).estimate(one_layer(250, 150))
    # Each output is converted once per tile column: two tile columns, twice the ADC energy.
    assert est.layers[0].energy_j["ADC"] == pytest.approx(2 * no_split.layers[0].energy_j["ADC"])
    assert est.layers[0].energy_j["digital"] > no_split.layers[0].energy_j["digital"] == 0


def test_pipelining_gives_the_slowest_layer():
    network = named_network("mlp-2016")
    serial = get_estimator("rpu").estimate(network)
    piped = get_estimator("rpu", RPUSystemConfig(pipeline_layers=True)).estimate(network)
    assert piped.time_per_example_s == pytest.approx(max(layer.total_time_s for layer in serial.layers))
    assert serial.time_per_example_s == pytest.approx(sum(layer.total_time_s for layer in serial.layers))
    assert piped.energy_per_example_j == pytest.approx(serial.energy_per_example_j)


def test_pcm_transfer_is_amortised_over_transfer_every():
    network = named_network("mlp-2018")
    a = get_estimator("pcm", PCMSystemConfig(transfer_every=100)).estimate(network)
    b = get_estimator("pcm", PCMSystemConfig(transfer_every=400)).estimate(network)
    assert a.time_by_component()["transfer"] == pytest.approx(4 * b.time_by_component()["transfer"])
    assert a.energy_by_component()["transfer program"] == pytest.approx(4 * b.energy_by_component()["transfer program"])
    assert a.energy_by_component()["array read"] == pytest.approx(b.energy_by_component()["array read"])


def test_digital_reference_time_from_peak_utilisation_or_measurement():
    network = named_network("mlp-2016")
    ops = sum(ops_per_example(network).values()) + 2 * network.digital_ops_per_example
    full = get_estimator("gpu").estimate(network)
    assert full.time_per_example_s == pytest.approx(ops / GPUConfig().peak_flops)
    tenth = get_estimator("gpu", GPUConfig(utilization=0.1)).estimate(network)
    assert tenth.time_per_example_s == pytest.approx(10 * full.time_per_example_s)
    assert tenth.power_w == pytest.approx(GPUConfig().power_w)
    measured = get_estimator("cpu", {"measured_time_per_example_s": 1e-3}).estimate(network)
    assert measured.time_per_example_s == pytest.approx(1e-3)


def test_fc_1b_is_described_without_allocating_it():
    network = named_network("fc-1b")
    assert 0.9e9 < network.weights < 1.1e9
    est = get_estimator("rpu").estimate(network)
    assert est.tiles == 60


# -- mapping -----------------------------------------------------------------------------------------
def test_analog_and_digital_layers_map_to_the_same_arrays():
    analog = nn.Sequential(AnalogLinear(20, 7, seed=0), nn.ReLU(), AnalogLinear(7, 3, seed=1))
    digital = nn.Sequential(nn.Linear(20, 7), nn.ReLU(), nn.Linear(7, 3))
    a, d = network_from_model(analog, (20,)), network_from_model(digital, (20,))
    assert [(l.rows, l.cols, l.vectors) for l in a.layers] == [(l.rows, l.cols, l.vectors) for l in d.layers] == [(7, 21, 1), (3, 8, 1)]
    assert a.digital_ops_per_example == 7  # the ReLU
    c_analog = network_from_model(nn.Sequential(AnalogConv2d(2, 4, 3, seed=0)), (2, 6, 6))
    c_digital = network_from_model(nn.Sequential(nn.Conv2d(2, 4, 3)), (2, 6, 6))
    assert c_analog.layers[0] == c_digital.layers[0]
    assert (c_analog.layers[0].rows, c_analog.layers[0].cols, c_analog.layers[0].vectors) == (4, 19, 16)


def test_unmappable_layer_is_a_clear_error():
    model = nn.Sequential(nn.Linear(10, 10), nn.BatchNorm1d(10), nn.Linear(10, 2))
    with pytest.raises(HardwareMappingError, match=r"'1' \(BatchNorm1d\).*register_layer_mapper"):
        network_from_model(model, (10,))
    with pytest.raises(HardwareMappingError, match="no weight layer"):
        network_from_model(nn.Sequential(nn.ReLU()), (4,))


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,message", [
    ("integration_time_s", 0.0, "must be > 0"),
    ("integration_time_s", -80e-9, "must be > 0"),
    ("pulse_duration_s", -1e-9, "must be > 0"),
    ("array_rows", 0, "integer >= 1"),
    ("bl", 0, "integer >= 1"),
    ("pulse_energy_j", -1e-15, ">= 0"),
    ("device_resistance_ohm", float("nan"), "finite"),
    ("coincidence_probability", 2.0, r"\[0, 1\]"),
])
def test_rpu_config_rejects_bad_values(field, value, message):
    with pytest.raises(ConfigError, match=rf"RPUSystemConfig\.{field} = .*{message}"):
        RPUSystemConfig(**{field: value})


def test_nested_and_other_configs_reject_bad_values():
    with pytest.raises(ConfigError, match=r"PeripheryConfig\.adc_energy_j"):
        with_parameter(RPUSystemConfig(), "periphery.adc_energy_j", -1.0)
    with pytest.raises(ConfigError, match=r"PCMSystemConfig\.transfer_every"):
        PCMSystemConfig(transfer_every=0)
    with pytest.raises(ConfigError, match=r"DigitalConfig\.power_w"):
        DigitalConfig(power_w=0)
    with pytest.raises(ConfigError, match=r"utilization.*\(0, 1\]"):
        GPUConfig(utilization=1.5)
    with pytest.raises(HardwareMappingError, match="integer >= 1"):
        LayerShape("x", "linear", 0, 10)
    with pytest.raises(HardwareMappingError, match="positive integers"):
        network_from_mlp((784, 0, 10))
    with pytest.raises(ConfigError, match="examples_per_epoch"):
        get_estimator("rpu").estimate(one_layer(), examples_per_epoch=0)


def test_registry_names_pending_and_unknown_hardware():
    assert "edge" in hardware_base.estimator_names() and "edge" not in hardware_base.PENDING_ESTIMATORS
    hardware_base.PENDING_ESTIMATORS["test-pending"] = "comes later."
    try:
        with pytest.raises(ConfigError, match="'test-pending': comes later"):
            get_estimator("test-pending")
    finally:
        hardware_base.PENDING_ESTIMATORS.pop("test-pending")
    with pytest.raises(ConfigError, match="Did you mean 'rpu'"):
        get_estimator("rpuu")


def test_a_new_estimator_plugs_into_the_registry():
    @register_estimator("test-constant")
    class Constant(Estimator):
        config_class = DigitalConfig

        def estimate_layers(self, network):
            return [LayerEstimate(layer.name, 1, {"all": 1e-6}, {"all": 1e-6}, {"chip": 1.0}) for layer in network.layers]

    try:
        est = get_estimator("test-constant").estimate(named_network("mlp-2016"))
        assert est.time_per_example_s == pytest.approx(3e-6) and est.area_mm2 == 3.0
    finally:
        hardware_base._ESTIMATORS.pop("test-constant")


def test_config_round_trip():
    config = RPUSystemConfig(bl=20, pipeline_layers=True).replace(
        periphery=RPUSystemConfig().periphery.replace(adc_energy_j=3e-12))
    assert RPUSystemConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# -- analysis ----------------------------------------------------------------------------------------
def test_sensitivity_ranks_the_forward_integration_time_for_a_conv_net():
    rows = sensitivity("rpu", RPUSystemConfig(), named_network("cnn-2017"), "time_per_example_s")
    top = rows[0]
    assert top["parameter"] == "integration_time_s"
    assert top["ratio_high"] > 1.5 and top["ratio_low"] < 0.7


def test_required_value_hits_its_target():
    network = one_layer()
    config = RPUSystemConfig()
    target = 0.5 * get_estimator("rpu", config).estimate(network).summary()["gops_per_s_per_w"]
    value = required_value("rpu", config, network, "periphery.adc_energy_j", "gops_per_s_per_w", target, 1e-15, 1e-9)
    got = get_estimator("rpu", with_parameter(config, "periphery.adc_energy_j", value)).estimate(network)
    assert got.summary()["gops_per_s_per_w"] == pytest.approx(target, rel=1e-6)
    assert value > config.periphery.adc_energy_j
    assert required_value("rpu", config, network, "periphery.adc_energy_j", "gops_per_s_per_w", 1e30, 1e-15, 1e-9) is None


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_estimate_writes_table_json_and_png(tmp_path):
    out_json, out_png = tmp_path / "e.json", tmp_path / "e.png"
    result = CliRunner().invoke(main, ["hardware", "estimate", "--model", "mlp", "--hidden", "100", "--compare",
                                       "--baseline", "gpu", "--set", "rpu.bl=20", "--json", str(out_json),
                                       "--plot", str(out_png)])
    assert result.exit_code == 0, result.output
    assert "speed-up vs gpu" in result.output
    data = json.loads(out_json.read_text())
    assert set(data) == {"rpu", "pcm", "gpu", "cpu"}
    assert data["rpu"]["config"]["bl"] == 20
    assert data["rpu"]["network"]["layers"][0]["cols"] == 785
    assert out_png.stat().st_size > 1000


def test_cli_errors_are_usage_errors():
    runner = CliRunner()
    edge = runner.invoke(main, ["hardware", "estimate", "--hardware", "edge", "--hidden", "100", "--set", "edge.out_degrees=[33,10]"])
    assert edge.exit_code == 2 and "does not divide" in edge.output and "[25, 50, 75, 100]" in edge.output
    bad = runner.invoke(main, ["hardware", "estimate", "--set", "rpu.integration_time_s=0"])
    assert bad.exit_code == 2 and "must be > 0" in bad.output
    wrong = runner.invoke(main, ["hardware", "estimate", "--set", "pcm.bl=3"])
    assert wrong.exit_code == 2 and "not among" in wrong.output


def test_import_insitu_stays_light():
    import subprocess
    import sys

    code = "import insitu, insitu.hardware, sys; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_measure_uses_a_step_time_timed_here(tmp_path):
    out_json = tmp_path / "m.json"
    result = CliRunner().invoke(main, ["hardware", "estimate", "--model", "mlp", "--hidden", "8", "--hardware", "cpu",
                                       "--measure", "--threads", "1", "--json", str(out_json)])
    assert result.exit_code == 0, result.output
    cpu = json.loads(out_json.read_text())["cpu"]
    assert cpu["extra"]["measured"] is True
    assert cpu["summary"]["time_per_example_s"] == pytest.approx(cpu["config"]["measured_time_per_example_s"])
    assert cpu["summary"]["time_per_example_s"] > 0
    missing = CliRunner().invoke(main, ["hardware", "estimate", "--hardware", "rpu", "--measure"])
    assert missing.exit_code == 2 and "--measure times a step" in missing.output


# -- edge-processing accelerator (Dey et al. 2017) ---------------------------------------------------


def test_edge_time_is_the_sparse_models_clocks_over_the_clock():
    network = network_from_mlp((800, 100, 10))
    config = EdgeSystemConfig(out_degrees=(50, 10), clocks_per_cycle=100, clock_hz=60e6, overhead_clocks=12)
    est = get_estimator("edge", config).estimate(network)
    model = sparse_estimate((800, 100, 10), (50, 10), EdgeHardwareConfig(clock_hz=60e6, overhead_clocks=12), clocks_per_cycle=100)
    assert est.time_per_example_s == pytest.approx(model.clocks_per_example / 60e6)
    assert est.time_per_example_s == pytest.approx(1 / model.examples_per_second)
    # Pipelined junctions: each is busy the whole cycle, whatever the depth.
    assert all(layer.total_time_s == pytest.approx(est.time_per_example_s) for layer in est.layers)
    assert est.extra["z"] == [j.z for j in model.junctions] and est.extra["multipliers"] == model.multipliers
    # Operations count only the edges (+ biases), as the accelerator does them.
    assert est.ops_per_example["forward"] == 2 * (800 * 50 + 100 + 100 * 10 + 10)


def test_edge_chooses_the_fastest_cycle_that_fits_the_multipliers():
    network = network_from_mlp((784, 100, 10))
    for budget in (900, 2000):
        est = get_estimator("edge", EdgeSystemConfig(max_multipliers=budget)).estimate(network)
        assert est.extra["multipliers"] <= budget
        # Valid cycles for 784-100-10 dense are C = 100 (1610 multipliers) and C = 200 (806).
        assert est.extra["clocks_per_cycle"] == (200 if budget < 1610 else 100)
    with pytest.raises(ConfigError, match="max_multipliers"):
        get_estimator("edge", EdgeSystemConfig(max_multipliers=100)).estimate(network)


def test_edge_energy_and_area_sum_over_components_and_follow_their_counts():
    network = network_from_mlp((800, 100, 10))
    config = EdgeSystemConfig(out_degrees=(50, 10), clocks_per_cycle=100, static_power_w=0.5)
    est = get_estimator("edge", config).estimate(network)
    by_component = est.energy_by_component()
    assert set(by_component) == {"multiply", "add", "memory", "static"}
    assert est.energy_per_example_j == pytest.approx(sum(by_component.values()))
    assert est.area_mm2 == pytest.approx(sum(est.area_by_component().values()))
    # First junction (no BP): E multiplies in FF and E in UP, at 12 bits = (12/8)² × 0.2 pJ.
    first = est.layers[0]
    assert first.energy_j["multiply"] == pytest.approx(2 * 40000 * 0.2e-12 * (12 / 8) ** 2)
    assert first.energy_j["static"] == pytest.approx(0.5 * est.time_per_example_s)
    # Second junction has BP: E + N_in more multiplies.
    assert est.layers[1].energy_j["multiply"] == pytest.approx((3 * 1000 + 100) * 0.2e-12 * (12 / 8) ** 2)
    model = sparse_estimate((800, 100, 10), (50, 10), config.accelerator(), clocks_per_cycle=100)
    assert est.area_by_component()["multipliers"] == pytest.approx(model.multipliers * 282.0 * (12 / 8) ** 2 * 1e-6)
    assert est.area_by_component()["memory"] == pytest.approx(model.memory_bits * 0.5e-6)
    # Each energy term scales with its own parameter only.
    doubled = get_estimator("edge", config.replace(memory_energy_per_bit_j=2 * config.memory_energy_per_bit_j)).estimate(network)
    assert doubled.energy_by_component()["memory"] == pytest.approx(2 * by_component["memory"])
    assert doubled.energy_by_component()["multiply"] == pytest.approx(by_component["multiply"])


def test_edge_sparser_network_is_faster_and_cheaper_on_the_same_multipliers():
    network = network_from_mlp((800, 100, 10))
    dense = get_estimator("edge", EdgeSystemConfig(max_multipliers=1000)).estimate(network)
    sparse = get_estimator("edge", EdgeSystemConfig(out_degrees=(10, 10), max_multipliers=1000)).estimate(network)
    assert sparse.extra["complexity_reduction"] == pytest.approx(81000 / (8000 + 1000))
    assert sparse.time_per_example_s < dense.time_per_example_s
    assert sparse.energy_per_example_j < dense.energy_per_example_j


def test_sparse_linear_maps_with_its_edges_and_out_degree():
    model = nn.Sequential(SparseLinear(make_pattern(800, 100, 50, seed=1), seed=0), nn.ReLU(),
                          SparseLinear(make_pattern(100, 10, 10, seed=2), seed=0))
    network = network_from_model(model, (800,))
    first = network.layers[0]
    assert (first.kind, first.rows, first.cols, first.edges, first.out_degree) == ("sparse", 100, 801, 40000, 50)
    assert first.weights == 40000 + 100 and first.inputs == 800
    from_model = get_estimator("edge").estimate(network)
    from_config = get_estimator("edge", EdgeSystemConfig(out_degrees=(50, 10))).estimate(network_from_mlp((800, 100, 10)))
    assert from_model.summary() == pytest.approx(from_config.summary())
    # The digital reference counts the sparse layer's edges too.
    assert get_estimator("gpu").estimate(network).ops_per_example["forward"] == 2 * (40100 + 1010)


def test_edge_bad_degrees_and_unmappable_networks_are_clear_errors():
    mlp = network_from_mlp((784, 100, 10))
    with pytest.raises(ConfigError, match=r"junction 1 \(784 -> 100\).*does not divide.*\[25, 50, 75, 100\]"):
        get_estimator("edge", EdgeSystemConfig(out_degrees=(33, 10))).estimate(mlp)
    with pytest.raises(ConfigError, match="one out-degree per junction, 2"):
        get_estimator("edge", EdgeSystemConfig(out_degrees=(50,))).estimate(mlp)
    with pytest.raises(ConfigError, match="not a whole number"):
        get_estimator("edge", EdgeSystemConfig(density=0.37)).estimate(mlp)
    with pytest.raises(ConfigError, match="no junction cycle C fits"):  # z = 5 cannot divide 128 banks
        get_estimator("edge").estimate(network_from_mlp((784, 256, 128, 10)))
    with pytest.raises(ConfigError, match="must divide every junction"):
        get_estimator("edge", EdgeSystemConfig(clocks_per_cycle=7)).estimate(mlp)
    for field, value, message in (("density", 0.0, "must be > 0"), ("density", 1.5, "in \\(0, 1\\]"),
                                  ("out_degrees", (0, 10), "positive integers"), ("clock_hz", -1.0, "must be > 0"),
                                  ("memory_energy_per_bit_j", -1e-12, ">= 0")):
        with pytest.raises(ConfigError, match=f"EdgeSystemConfig.{field}.*{message}"):
            EdgeSystemConfig(**{field: value})
    with pytest.raises(HardwareMappingError, match="trains MLPs"):
        get_estimator("edge").estimate(named_network("cnn-2017"))
    random_layer = SparseLinear(make_pattern(100, 10, 5, PatternConfig(kind="random"), seed=0), seed=0)
    assert not bool((random_layer.col_indices.bincount(minlength=100) == 5).all())  # unequal out-degrees
    with pytest.raises(HardwareMappingError, match="without a fixed out-degree"):
        get_estimator("edge").estimate(network_from_model(random_layer, (100,)))


def test_edge_config_round_trip():
    config = EdgeSystemConfig(out_degrees=(50, 10), density=0.5, word_bits=10)
    assert EdgeSystemConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_cli_compare_includes_edge(tmp_path):
    out_json, out_png = tmp_path / "c.json", tmp_path / "c.png"
    result = CliRunner().invoke(main, ["hardware", "estimate", "--model", "mlp", "--hidden", "100",
                                       "--compare", "rpu,pcm,gpu,edge", "--baseline", "gpu",
                                       "--set", "edge.out_degrees=[25,10]", "--set", "edge.multiply_energy_j=4e-13",
                                       "--json", str(out_json), "--plot", str(out_png)])
    assert result.exit_code == 0, result.output
    assert "| | rpu | pcm | gpu | edge |" in result.output
    data = json.loads(out_json.read_text())
    assert list(data) == ["rpu", "pcm", "gpu", "edge"]
    edge = data["edge"]
    assert edge["config"]["out_degrees"] == [25, 10] and edge["config"]["multiply_energy_j"] == 4e-13
    assert edge["extra"]["out_degrees"] == [25, 10] and edge["extra"]["network_density"] == pytest.approx(20600 / 79400)
    assert edge["summary"]["time_per_example_s"] == pytest.approx(edge["extra"]["clocks_per_example"] / 100e6)
    assert out_png.stat().st_size > 1000
    single = CliRunner().invoke(main, ["hardware", "estimate", "--hidden", "100", "--hardware", "edge", "--set", "edge.density=0.5"])
    assert single.exit_code == 0 and "junction cycle" in single.output
