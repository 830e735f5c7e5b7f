"""`insitu sparse ...` commands and the sparse training loop on real MNIST (small subsets)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from insitu.cli import main
from insitu.data import load_dataset
from insitu.sparse.training import SparseTrainConfig, train_sparse


def test_hardware_table_and_json():
    runner = CliRunner()
    result = runner.invoke(main, ["sparse", "hardware", "--sizes", "800,100,10", "--out-degree", "50,10", "--z", "200,5"])
    assert result.exit_code == 0, result.output
    assert "| 1 | 800 -> 100 | 50 | 400 | 40000 | 50.0% | 200 | 200 |" in result.output
    assert "modelled speed-up" in result.output
    result = runner.invoke(main, ["sparse", "hardware", "--clocks", "200", "--json"])
    data = json.loads(result.output)
    assert [j["z"] for j in data["junctions"]] == [200, 5]


def test_hardware_bad_z_is_a_usage_error():
    result = CliRunner().invoke(main, ["sparse", "hardware", "--z", "200,10"])
    assert result.exit_code == 2
    assert "differ" in result.output


def test_train_fixed_point_on_mnist_subset(shared_datasets, tmp_path):
    out = tmp_path / "r.json"
    args = ["sparse", "train", "--data-dir", str(shared_datasets), "--subset", "300", "--epochs", "1", "--sizes", "800,20,10",
            "--out-degree", "4,2", "--pattern", "clash-free", "--z", "40,4", "--fixed-point", "12:4", "--batch-size", "1", "--output", "sigmoid",
            "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["edges"] == [3200, 40] and data["config"]["fixed_point"] == "12:4"
    assert 0.0 <= data["final_test_accuracy"] <= 1.0 and data["test_samples"] == 10000


def test_train_rejects_a_width_that_cannot_hold_the_learning_rate(shared_datasets):
    result = CliRunner().invoke(main, ["sparse", "train", "--data-dir", str(shared_datasets), "--fixed-point", "8:2", "--lr-exponent", "6"])
    assert result.exit_code == 2
    assert "cannot hold the learning rate" in result.output


def test_same_seed_same_training(shared_datasets):
    data = load_dataset("mnist", path=shared_datasets, subset=500, seed=0)
    config = SparseTrainConfig(sizes=(800, 32, 10), out_degrees=(8, 5), pattern="random", epochs=2, batch_size=50)
    a, b = train_sparse(config, data), train_sparse(config, data)
    assert [e["train_loss"] for e in a["epochs"]] == [e["train_loss"] for e in b["epochs"]]
    assert a["epochs"][-1]["train_loss"] < a["epochs"][0]["train_loss"]  # it learns


def test_hardware_edge_is_the_same_command_under_insitu_hardware():
    runner = CliRunner()
    args = ["--sizes", "800,100,10", "--out-degree", "50,10", "--clocks", "200", "--json"]
    via_hardware = runner.invoke(main, ["hardware", "edge", *args])
    via_sparse = runner.invoke(main, ["sparse", "hardware", *args])
    assert via_hardware.exit_code == 0, via_hardware.output
    assert json.loads(via_hardware.output) == json.loads(via_sparse.output)


def test_train_takes_stochastic_rounding_and_per_quantity_formats(shared_datasets, tmp_path):
    out = tmp_path / "r.json"
    args = ["sparse", "train", "--data-dir", str(shared_datasets), "--subset", "200", "--epochs", "1", "--sizes", "800,20,10",
            "--out-degree", "4,2", "--fixed-point", "10:3", "--weight-format", "10:1", "--error-format", "10:0",
            "--update-rounding", "stochastic", "--batch-size", "1", "--output", "sigmoid", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    config = json.loads(out.read_text())["config"]
    assert (config["update_rounding"], config["weight_format"], config["error_format"]) == ("stochastic", "10:1", "10:0")


def test_insitu_train_with_out_degree_trains_the_sparse_mlp(shared_datasets, tmp_path):
    """The issue's spelling, `insitu train --sizes ... --out-degree ...`, is `insitu sparse train`."""
    args = ["--data-dir", str(shared_datasets), "--subset", "300", "--epochs", "1", "--sizes", "800,20,10", "--out-degree", "4,2",
            "--pattern", "clash-free", "--z", "40,4", "--fixed-point", "12:4", "--batch-size", "1", "--lr", "0.01"]
    result = CliRunner().invoke(main, ["train", "--model", "mlp", *args, "--out", str(tmp_path / "via-train")])
    assert result.exit_code == 0, result.output
    direct = CliRunner().invoke(main, ["sparse", "train", *args, "--out", str(tmp_path / "direct.json")])
    assert direct.exit_code == 0, direct.output
    via_train = json.loads((tmp_path / "via-train" / "results.json").read_text())
    assert via_train["config"] == json.loads((tmp_path / "direct.json").read_text())["config"]
    assert via_train["final_test_accuracy"] == json.loads((tmp_path / "direct.json").read_text())["final_test_accuracy"]
    refused = CliRunner().invoke(main, ["train", "--out-degree", "4,2", "--preset", "floating-point"])
    assert refused.exit_code == 2 and "--preset" in refused.output and "insitu sparse train" in refused.output


def test_the_sparse_trainer_runs_through_the_common_loop_and_resumes_bit_identically(tmp_path):
    # Issue 20: one training loop. The sparse MLP (fixed point with stochastic update rounding,
    # whose generator state the optimizer now saves) trains through train_task's run folder.
    data = load_dataset("digits")
    config = SparseTrainConfig(
        dataset="digits", sizes=(64, 20, 10), out_degrees=(10, 5), epochs=2, batch_size=4,
        fixed_point="12:3", update_rounding="stochastic",
    )
    straight = train_sparse(config, data, out_dir=tmp_path / "a")
    train_sparse(config.replace(epochs=1), data, out_dir=tmp_path / "b")
    resumed = train_sparse(config, data, out_dir=tmp_path / "b", resume=True)
    assert [e["test_accuracy"] for e in straight["epochs"]] == [e["test_accuracy"] for e in resumed["epochs"]]
    assert straight["epochs"][-1]["train_loss"] == resumed["epochs"][-1]["train_loss"]
    assert straight["task"] == "sparse-mlp" and straight["status"] == "completed"
    assert (tmp_path / "a" / "checkpoint.pt").exists()
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["final_test_accuracy"] == straight["final_test_accuracy"] and saved["edges"] == straight["edges"]
