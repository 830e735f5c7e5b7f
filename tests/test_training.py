"""The training loop and CLI: results files, resume, determinism, bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from insitu.cli import main
from insitu.config import ConfigError
from insitu.data import load_dataset
from insitu.nn import AnalogLinear
from insitu.training import TrainConfig, TrainingDiverged, build_model, run_training


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return dataclasses.replace(data, train_x=data.train_x[:300], train_y=data.train_y[:300])


def _config(**changes):
    base = dict(dataset="digits", hidden=(16,), epochs=2, lr=0.05, lr_milestones=(1,), seed=7)
    base.update(changes)
    return TrainConfig(**base)


def test_run_writes_results_checkpoint_and_plot(tmp_path, digits):
    results = run_training(_config(), tmp_path, data=digits, progress=False, log=lambda s: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["status"] == "completed"
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2]
    assert [e["lr"] for e in saved["epochs"]] == [0.05, 0.025]  # halved after epoch 1
    assert all(0 <= e["test_error"] <= 1 for e in saved["epochs"])
    assert saved["counters"]["0.tile"]["rank1_updates"] == 2 * 300
    assert (tmp_path / "checkpoint.pt").stat().st_size > 0
    assert (tmp_path / "test_error.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(_config(), tmp_path, data=digits, progress=False, log=lambda s: None)


def test_same_seed_gives_identical_runs(tmp_path, digits):
    a = run_training(_config(epochs=1), tmp_path / "a", data=digits, progress=False, log=lambda s: None)
    b = run_training(_config(epochs=1), tmp_path / "b", data=digits, progress=False, log=lambda s: None)
    strip = lambda r: [{k: v for k, v in e.items() if "seconds" not in k} for e in r["epochs"]]  # noqa: E731
    assert strip(a) == strip(b)
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa if isinstance(wa[k], torch.Tensor))


def test_interrupted_run_resumes_bit_identically(tmp_path, digits):
    full = run_training(_config(), tmp_path / "full", data=digits, progress=False, log=lambda s: None)

    def stop_in_epoch_two(line):
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(_config(), tmp_path / "cut", data=digits, progress=False, log=stop_in_epoch_two)
    partial = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert partial["status"] == "interrupted" and len(partial["epochs"]) == 1
    resumed = run_training(_config(), tmp_path / "cut", data=digits, resume=True, progress=False, log=lambda s: None)
    assert [e["test_error"] for e in resumed["epochs"]] == [e["test_error"] for e in full["epochs"]]
    assert [e["train_loss"] for e in resumed["epochs"]] == [e["train_loss"] for e in full["epochs"]]
    with pytest.raises(ConfigError, match="different config"):
        run_training(_config(lr=0.1), tmp_path / "cut", data=digits, resume=True, progress=False, log=lambda s: None)


def test_nan_in_training_stops_with_a_clear_error_and_keeps_good_results(tmp_path, digits):
    run_training(_config(epochs=1), tmp_path, data=digits, progress=False, log=lambda s: None)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    bad_x = digits.train_x.clone()
    bad_x[150] = float("nan")
    bad = dataclasses.replace(digits, train_x=bad_x)
    with pytest.raises(TrainingDiverged, match="Lower the learning rate"):
        run_training(_config(epochs=2), tmp_path / "nan", data=bad, progress=False, log=lambda s: None)
    saved = json.loads((tmp_path / "nan" / "results.json").read_text())
    assert saved["status"] == "failed" and "TrainingDiverged" in saved["error"] and saved["epochs"] == []
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # other runs untouched
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()


def test_bad_config_values_name_the_field():
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ConfigError, match="Did you mean 'gokmen-vlasov-2016'"):
        TrainConfig(preset="gokmen-vlasov")
    with pytest.raises(ConfigError, match="hidden"):
        TrainConfig(hidden=(0,))


def test_cli_train_and_errors(tmp_path, shared_datasets):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(
        main, ["train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--subset", "100", "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "test error" in result.output and (out / "results.json").exists()

    result = runner.invoke(main, ["train", "--lr", "-1", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "lr" in result.output

    result = runner.invoke(main, ["train", "--preset", "gokmen-vlasov", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "Did you mean" in result.output

    result = runner.invoke(main, ["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y"), "--no-progress"])
    assert result.exit_code == 2 and "nowhere" in result.output
    assert not (tmp_path / "y" / "results.json").exists()

    result = runner.invoke(main, ["presets", "gokmen-vlasov-2016"])
    assert result.exit_code == 0 and "dw_min: 0.001" in result.output and "out_noise: 0.06" in result.output


def test_mnist_subset_run_through_the_cli(tmp_path, shared_datasets):
    """The real MNIST files from shared/ through the whole CLI path (a small subset)."""
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["train", "--dataset", "mnist", "--data-dir", str(shared_datasets), "--subset", "500", "--hidden", "32",
         "--epochs", "1", "--lr", "0.05", "--out", str(tmp_path / "m"), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "m" / "results.json").read_text())
    assert saved["dataset"] == {"name": "mnist", "source": saved["dataset"]["source"], "train": 500, "test": 10000}
    assert saved["epochs"][0]["test_error"] < 0.9  # learned something from 500 samples


def test_cli_tile_config_file_replaces_the_preset(tmp_path):
    from insitu.presets import get_preset

    custom = get_preset("gokmen-vlasov-2016")
    custom = custom.replace(update=custom.update.replace(bl=31))
    path = tmp_path / "tile.yaml"
    custom.to_yaml(path)
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(
        main, ["train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--subset", "50",
               "--tile-config", str(path), "--out", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["tile_config"]["update"]["bl"] == 31
    # One file per layer (input side first) with --layer-tile-config.
    coarse = tmp_path / "coarse.yaml"
    custom.replace(device=custom.device.replace(dw_min=0.004)).to_yaml(coarse)
    result = runner.invoke(
        main, ["train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--subset", "50",
               "--layer-tile-config", str(path), "--layer-tile-config", str(coarse), "--out", str(tmp_path / "layers"), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "layers" / "results.json").read_text())
    assert [t["device"]["dw_min"] for t in saved["layer_tile_configs"]] == [0.001, 0.004]
    result = runner.invoke(main, ["train", "--dataset", "digits", "--hidden", "8", "--layer-tile-config", str(path),
                                  "--out", str(tmp_path / "one")])
    assert result.exit_code == 2 and "has 1 configs for an mlp of 2 layers" in result.output
    path.write_text("device:\n  type: ConstantStepDevice\n  dw_min: -1\n")
    result = runner.invoke(main, ["train", "--tile-config", str(path), "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "dw_min" in result.output


def test_cli_compare_plots_runs_and_prints_a_table(tmp_path, digits):
    run_training(_config(epochs=1), tmp_path / "a", data=digits, progress=False, log=lambda s: None)
    run_training(_config(epochs=1, seed=8), tmp_path / "b", data=digits, progress=False, log=lambda s: None)
    runner = CliRunner()
    out = tmp_path / "cmp.png"
    result = runner.invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--label", "A", "--label", "B", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| A") or line.startswith("| B")]
    assert len(rows) == 2 and out.read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(main, ["compare", str(tmp_path / "a"), "--label", "A", "--label", "B"])
    assert result.exit_code == 2 and "one --label per run" in result.output


def test_cnn_2017_model_shapes_and_a_short_run(tmp_path, shared_datasets):
    from insitu.models import cnn_2017
    from insitu.nn import AnalogConv2d

    analog = cnn_2017(config=TrainConfig().tile_config())
    assert sum(isinstance(m, AnalogConv2d) for m in analog.modules()) == 2
    assert analog(torch.rand(3, 784)).shape == (3, 10)
    with pytest.raises(ValueError, match="at least 16"):
        cnn_2017((1, 8, 8))
    result = CliRunner().invoke(
        main,
        ["train", "--model", "cnn-2017", "--activation", "tanh", "--dataset", "mnist", "--data-dir", str(shared_datasets),
         "--subset", "20", "--epochs", "1", "--update-mode", "batched", "--conv-preset", "gokmen-2017-cnn-nm-bm-um-4d",
         "--out", str(tmp_path / "cnn"), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "cnn" / "results.json").read_text())
    assert saved["counters"]["1.tiles.0"]["rank1_updates"] == 20 * 24 * 24  # one per patch, as mapped in the paper
    assert saved["conv_tile_config"]["devices_per_weight"] == 4 and saved["tile_config"]["devices_per_weight"] == 1
    with pytest.raises(ConfigError, match="cnn-2017 only"):
        TrainConfig(conv_preset="gokmen-2017-cnn-nm-bm")


def test_each_convolution_takes_its_own_preset():
    from insitu.nn import AnalogConv2d

    config = TrainConfig(
        model="cnn-2017", activation="tanh", preset="gokmen-2017-cnn-nm-bm-um",
        conv_preset="gokmen-2017-cnn-nm-bm-um-13d,gokmen-2017-cnn-nm-bm-um-4d",
    )
    model = build_model(config, (1, 28, 28), 10)
    convs = [m for m in model.modules() if isinstance(m, AnalogConv2d)]
    assert [c.tile.config.devices_per_weight for c in convs] == [13, 4]
    linears = [m for m in model.modules() if isinstance(m, AnalogLinear)]
    assert {m.tile.config.devices_per_weight for m in linears} == {1}
    # K1 (16 maps x 5*5+1 inputs) holds 13 devices per weight, K2 (32 x 16*25+1) 4.
    assert convs[0].tile.weight.shape == (16, 26, 13) and convs[1].tile.weight.shape == (32, 401, 4)
    # One name applies to both convolutions; the results record one config then, else one per convolution.
    both = TrainConfig(model="cnn-2017", conv_preset="gokmen-2017-cnn-nm-bm-um-4d")
    assert [c.devices_per_weight for c in both.conv_tile_configs()] == [4, 4]
    with pytest.raises(ConfigError, match="one per convolution"):
        TrainConfig(model="cnn-2017", conv_preset="gokmen-2017-cnn-nm-bm,gokmen-2017-cnn-nm-bm,gokmen-2017-cnn-nm-bm")
    with pytest.raises(ConfigError, match="unknown preset 'gokmen-2017-cnn-nm-bm-um-12d'"):
        TrainConfig(model="cnn-2017", conv_preset="gokmen-2017-cnn-nm-bm-um-13d,gokmen-2017-cnn-nm-bm-um-12d")


def test_a_finished_run_extends_to_more_epochs_as_if_run_in_one_go(tmp_path, digits):
    quiet = dict(data=digits, progress=False, log=lambda s: None)
    straight = run_training(_config(epochs=3), tmp_path / "straight", **quiet)
    run_training(_config(epochs=2), tmp_path / "grown", **quiet)
    grown = run_training(_config(epochs=3), tmp_path / "grown", resume=True, **quiet)
    assert grown["status"] == "completed" and grown["config"]["epochs"] == 3
    assert [e["test_error"] for e in grown["epochs"]] == [e["test_error"] for e in straight["epochs"]]
    with pytest.raises(ConfigError, match="only --epochs may grow"):
        run_training(_config(epochs=4, lr=0.1), tmp_path / "grown", resume=True, **quiet)
    with pytest.raises(ConfigError, match="already holds 3 epochs"):
        run_training(_config(epochs=1), tmp_path / "grown", resume=True, **quiet)


def test_cli_update_algorithm_sbe_counts_writes_in_the_results(tmp_path):
    runner = CliRunner()
    out = tmp_path / "sbe"
    result = runner.invoke(
        main,
        ["train", "--dataset", "digits", "--hidden", "16", "--activation", "relu", "--preset", "floating-point",
         "--update", "sbe", "--rank", "1", "--batch-size", "32", "--epochs", "2", "--lr", "0.1", "--out", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["tile_config"]["algorithm"] == {"method": "sbe", "rank": 1, "full_write": True}
    steps = -(-saved["dataset"]["train"] // 32)  # batches per epoch
    for layer in saved["counters"].values():
        assert layer["steps"] == 2 * steps and layer["rank1_updates"] == 2 * steps
    assert saved["epochs"][-1]["rank1_writes"] == 2 * 2 * steps  # two layers
    assert saved["counters"]["0.tile"]["extra_memory"] == 16 + 64 + 1 + 1  # a + b (bias column) + σ

    result = runner.invoke(main, ["train", "--dataset", "digits", "--update", "sbe", "--rank", "4", "--batch-size", "2", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "batch_size" in result.output and "rank" in result.output
    result = runner.invoke(main, ["train", "--dataset", "digits", "--rank", "2", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--update" in result.output


def test_a_checkpoint_from_before_a_new_config_field_still_resumes(tmp_path, digits):
    import torch

    quiet = dict(data=digits, progress=False, log=lambda s: None)
    run_training(_config(epochs=1), tmp_path, **quiet)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    for newer_field in ("update_algorithm", "rank"):
        del checkpoint["config"][newer_field]
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    resumed = run_training(_config(epochs=2), tmp_path, resume=True, **quiet)
    assert len(resumed["epochs"]) == 2


def test_per_tile_update_path_is_recorded_and_reproduces_tile_by_tile_training(tmp_path, digits):
    """--per-tile-update (run_training(fused_update=False)) updates every tile on its own, as runs
    before the fused update did: its draws equal a model stepped by AnalogSGD(fused=False).
    Fusion is a layout of the torch backend (the compiled backend updates each tile on its own)."""
    from insitu.update.kernels import use_backend

    with use_backend("torch"):
        fused = run_training(_config(epochs=1), tmp_path / "fused", data=digits, progress=False, log=lambda s: None)
        per_tile = run_training(_config(epochs=1), tmp_path / "tile", data=digits, progress=False, log=lambda s: None, fused_update=False)
        again = run_training(_config(epochs=1), tmp_path / "again", data=digits, progress=False, log=lambda s: None, fused_update=False)
    assert fused["fused_update"] is True and per_tile["fused_update"] is False
    assert fused["update_backend"] == per_tile["update_backend"] == "torch"
    def outcome(r):
        return [(e["test_error"], e["train_loss"]) for e in r["epochs"]]

    assert outcome(per_tile) == outcome(again)  # deterministic
    assert outcome(fused) != outcome(per_tile)  # another random stream (same update in distribution)
    result = CliRunner().invoke(
        main, ["train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--subset", "60", "--per-tile-update",
               "--backend", "torch", "--out", str(tmp_path / "cli"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert saved["fused_update"] is False and saved["update_backend"] == "torch"


def test_cli_train_without_backend_keeps_the_chosen_backend(tmp_path):
    """`INSITU_BACKEND=torch insitu train ...` once ran compiled: the option's default "auto"
    overrode the variable's choice. Without `--backend` the choice made before (here by
    `use_backend`, as the variable does at import) now stands; `--backend` still overrides it."""
    pytest.importorskip("numba")
    from insitu.update.kernels import use_backend

    def backend_of(run, *options):
        with use_backend("torch"):
            result = CliRunner().invoke(main, ["train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--subset", "40",
                                               *options, "--out", str(tmp_path / run), "--no-progress"])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / run / "results.json").read_text())["update_backend"]

    assert backend_of("kept") == "torch"
    assert backend_of("given", "--backend", "compiled") == "compiled"


def test_each_mlp_layer_takes_its_own_tile_config(tmp_path, digits):
    from insitu.presets import get_preset

    base = get_preset("gokmen-vlasov-2016")
    coarse = base.replace(device=base.device.replace(dw_min=0.004))
    # The same config on every layer builds the same network as the common config, draw for draw.
    common = run_training(_config(epochs=1, tile=base), tmp_path / "common", data=digits, progress=False, log=lambda s: None)
    same = run_training(
        _config(epochs=1, tile=base, layer_tiles=(base, base)), tmp_path / "same", data=digits, progress=False, log=lambda s: None
    )
    assert [e["test_error"] for e in same["epochs"]] == [e["test_error"] for e in common["epochs"]]
    assert [e["train_loss"] for e in same["epochs"]] == [e["train_loss"] for e in common["epochs"]]
    assert "layer_tile_configs" not in common and "layer_tiles" not in common["config"]
    # Different configs land on their layers, are recorded per layer and round-trip through the file.
    config = _config(epochs=1, layer_tiles=(base, coarse), update_mode="summed")
    model = build_model(config, (1, 8, 8), 10)
    layers = [m for m in model.modules() if isinstance(m, AnalogLinear)]
    assert [m.tile.config.device.dw_min for m in layers] == [0.001, 0.004]
    assert {m.tile.config.update.mode for m in layers} == {"summed"}  # the run's overrides apply to each
    mixed = run_training(config, tmp_path / "mixed", data=digits, progress=False, log=lambda s: None)
    saved = json.loads((tmp_path / "mixed" / "results.json").read_text())
    assert [t["device"]["dw_min"] for t in saved["layer_tile_configs"]] == [0.001, 0.004]
    assert TrainConfig.from_dict(saved["config"]) == config
    resumed = run_training(_config(epochs=2, layer_tiles=(base, coarse), update_mode="summed"), tmp_path / "mixed",
                           data=digits, resume=True, progress=False, log=lambda s: None)
    assert resumed["epochs"][0] == mixed["epochs"][0] and len(resumed["epochs"]) == 2
    with pytest.raises(ConfigError, match="has 3 configs for an mlp of 2 layers"):
        _config(layer_tiles=(base, base, base))
    with pytest.raises(ConfigError, match="applies to model 'mlp'"):
        TrainConfig(model="cnn-2017", layer_tiles=(base,) * 4)
    with pytest.raises(ConfigError, match="sequence of TileConfig"):
        _config(layer_tiles=(base, "gokmen-vlasov-2016"))
    # Such a point trains on its own in a sweep, not as a lockstep replica.
    from insitu.sweep.lockstep import lockstep_group_key

    assert lockstep_group_key(_config(layer_tiles=(base, coarse))) is None and lockstep_group_key(_config()) is not None
    # The checks that follow it in validate() still run.
    with pytest.raises(ConfigError, match="must be true or false"):
        _config(layer_tiles=(base, base), pipeline="yes")
    with pytest.raises(ConfigError, match="applies to the feed-forward image networks"):
        TrainConfig(task="seq-mnist", model="lstm", hidden=(16,), pipeline=True)
