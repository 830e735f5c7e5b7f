"""Misuse that used to fail silently or with an unclear error (issue 19)."""

from __future__ import annotations

import pytest
import torch

from insitu import AnalogLinear, AnalogSGD
from insitu.optim import ForeignOptimizerError


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1), lambda p: torch.optim.Adam(p)], ids=["SGD", "Adam"])
def test_a_torch_optimizer_refuses_analog_weights_at_its_first_step(make):
    model = torch.nn.Sequential(AnalogLinear(4, 3, seed=0), torch.nn.Linear(3, 2))
    optimizer = make(model.parameters())
    before = model[0].tile.get_weights()
    model(torch.rand(2, 4)).sum().backward()
    with pytest.raises(ForeignOptimizerError, match="AnalogSGD"):
        optimizer.step()
    assert torch.equal(model[0].tile.get_weights(), before)


def test_a_torch_optimizer_of_the_digital_parameters_only_works():
    model = torch.nn.Sequential(AnalogLinear(4, 3, seed=0), torch.nn.Linear(3, 2))
    digital = [p for p in model.parameters() if not hasattr(p, "_insitu_tile")]
    optimizer = torch.optim.SGD(digital, lr=0.1)
    before = model[1].weight.detach().clone()
    model(torch.rand(2, 4)).sum().backward()
    optimizer.step()
    assert not torch.equal(model[1].weight, before)


def test_analog_sgd_still_accumulates_several_backward_passes():
    layer = AnalogLinear(4, 3, seed=0)
    optimizer = AnalogSGD(layer.parameters(), lr=0.1)
    for _ in range(3):
        layer(torch.rand(1, 4)).sum().backward()
    assert len(layer.tile._pending) == 3
    optimizer.step()
    assert layer.tile.counters.rank1_updates == 3


def test_a_refused_load_state_dict_leaves_the_layer_unchanged():
    from insitu.config import ConfigError
    from insitu.devices import ConstantStepDevice
    from insitu.tile import TileConfig

    source = AnalogLinear(4, 3, seed=1, config=TileConfig(device=ConstantStepDevice(dw_min=0.002)))
    target = AnalogLinear(4, 3, seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(ConfigError, match="different config"):
        target.load_state_dict(source.state_dict())
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # before the fix: weight and device_params overwritten


@pytest.mark.parametrize("args", [(0, 4), (-3, 4), (4, 0), (True, 4)])
def test_analog_linear_reports_the_size_it_was_given(args):
    with pytest.raises(ValueError, match=f"must be a positive integer, got {[a for a in args if a is True or a < 1][0]!r}"):
        AnalogLinear(*args)


def test_a_config_field_changed_after_construction_is_validated():
    from insitu.config import ConfigError
    from insitu.devices import ConstantStepDevice
    from insitu.training import TrainConfig

    device = ConstantStepDevice()
    with pytest.raises(ConfigError, match="dw_min = -5"):
        device.dw_min = -5
    assert device.dw_min > 0  # a refused value leaves the config as it was
    device.dw_min = 0.002
    assert device.dw_min == 0.002
    config = TrainConfig()
    with pytest.raises(ConfigError, match="seed"):
        config.seed = "zero"


def test_a_custom_pulsed_device_without_dw_min_is_refused_when_the_tile_is_built():
    import dataclasses

    from insitu.config import ConfigError
    from insitu.devices import ConstantStepDevice, DeviceConfig
    from insitu.tile import TileConfig

    @dataclasses.dataclass
    class MyDevice(DeviceConfig):
        def draw_parameters(self, shape, generator, device="cpu", dtype=torch.float32):
            return ConstantStepDevice().draw_parameters(shape, generator, device, dtype)

    with pytest.raises(ConfigError, match="MyDevice states no nominal step.*'dw_min' field.*'nominal_step' property"):
        AnalogLinear(3, 2, config=TileConfig(device=MyDevice()))


def test_python_dash_m_insitu_runs_the_cli():
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "insitu", "--help"], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0 and "Usage: insitu" in result.stdout


def test_result_files_honour_the_umask(tmp_path):
    import os

    from insitu.training import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "results.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644  # was 0600


@pytest.mark.parametrize("args", [["--lockstep", "0"], ["--dataset", "imagenet"]])
def test_bad_sweep_options_leave_no_store_behind(tmp_path, args):
    from click.testing import CliRunner

    from insitu.cli import main

    out = tmp_path / "study"
    result = CliRunner().invoke(main, ["sweep", "run", "--param", "lr", "--values", "0.1", "--out", str(out), *args])
    assert result.exit_code == 2 and ("lockstep" in result.output or "dataset" in result.output), result.output
    assert not out.exists()


@pytest.mark.parametrize("name", ["..", "."])
def test_a_study_named_dot_dot_is_refused(name):
    from insitu.config import ConfigError
    from insitu.sweep import StudyConfig

    with pytest.raises(ConfigError, match="StudyConfig.name"):
        StudyConfig.from_dict({"name": name, "base": {"dataset": "digits"}, "axes": [{"field": "lr", "values": [0.1]}]})


@pytest.mark.parametrize(
    "filename, text, match",
    [
        ("tile.yaml", "device: [unclosed\n", "not valid YAML"),
        ("tile.json", "{'device': ", "not valid JSON"),
        ("tile.txt", "{}", "unknown config file type '.txt'"),
    ],
)
def test_config_file_errors_are_config_errors_naming_the_file(tmp_path, filename, text, match):
    from insitu.config import ConfigError
    from insitu.tile import TileConfig

    (tmp_path / filename).write_text(text)
    with pytest.raises(ConfigError, match=match):
        TileConfig.from_file(tmp_path / filename)


def test_a_config_file_suffix_is_case_insensitive(tmp_path):
    from insitu.tile import TileConfig

    (tmp_path / "tile.YAML").write_text(TileConfig().to_yaml())
    assert TileConfig.from_file(tmp_path / "tile.YAML") == TileConfig()


@pytest.mark.parametrize("changes, field", [({"seed": 1.5}, "seed"), ({"seed": "0"}, "seed"), ({"subset": True}, "subset")])
def test_train_config_checks_types(changes, field):
    from insitu.config import ConfigError
    from insitu.training import TrainConfig

    with pytest.raises(ConfigError, match=f"TrainConfig.{field}"):
        TrainConfig(**changes)


def test_an_absurd_learning_rate_is_a_config_error():
    from click.testing import CliRunner

    from insitu.cli import main

    result = CliRunner().invoke(main, ["train", "--preset", "floating-point", "--dataset", "digits", "--lr", "1e300"])
    assert result.exit_code == 2 and "TrainConfig.lr" in result.output and "float32" in result.output


@pytest.mark.parametrize(
    "args, match",
    [
        (["--plot", "x.xyz"], "--plot x.xyz"),
        (["--baseline", "tpu"], "--baseline tpu is not among"),
        (["--model", "cnn-2017", "--inputs", "10"], "--inputs applies to --model mlp"),
    ],
)
def test_hardware_estimate_reports_bad_options_clearly(tmp_path, args, match):
    from click.testing import CliRunner

    from insitu.cli import main

    result = CliRunner().invoke(main, ["hardware", "estimate", *args])
    assert result.exit_code == 2 and match in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_masking_a_pcm_tile_is_a_clear_error():
    from insitu.config import ConfigError
    from insitu.presets import get_preset
    from insitu.sparse.analog import mask_analog_linear

    layer = AnalogLinear(4, 3, config=get_preset("cristiano-2018-two-pair"))
    with pytest.raises(ConfigError, match="not supported with the cell TwoPairPCMCell"):
        mask_analog_linear(layer, torch.ones(3, 4, dtype=torch.bool))
