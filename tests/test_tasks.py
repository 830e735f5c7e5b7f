"""Tasks (insitu.tasks) and the one training loop (train_task): image classification unchanged,
sequence classification and character-level prediction, resume, the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner

from insitu.cli import main
from insitu.config import ConfigError
from insitu.data import load_dataset
from insitu.optim import AnalogSGD
from insitu.sequence_data import BUNDLED_TEXT, char_corpus, load_sequential_mnist
from insitu.tasks import CharPrediction, ImageClassification, ReplicaClassification, SequenceClassification, make_task
from insitu.training import TrainConfig, build_model, evaluate, run_training, train_task

QUIET = dict(progress=False, log=lambda s: None)

# Plain prose written for these tests (no other text is copied here).
TEXT = (
    "the array stores the weights as conductances. every pulse moves a device a small step up or down. "
    "a network learns when the steps follow the gradient, and forgets when they do not. "
) * 6


def _strip(results):
    return [{k: v for k, v in e.items() if "seconds" not in k} for e in results["epochs"]]


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return dataclasses.replace(data, train_x=data.train_x[:100], train_y=data.train_y[:100])


def _image_config(**changes):
    base = dict(dataset="digits", hidden=(12,), epochs=2, lr=0.05, lr_milestones=(1,), seed=5, batch_size=4)
    base.update(changes)
    return TrainConfig(**base)


def test_image_task_gives_the_numbers_of_a_plain_loop(tmp_path, digits):
    """run_training (through train_task) draws as the loop before tasks did: seed, model, then
    the data order from its own generator; checked against that loop written out here."""
    config = _image_config()
    results = run_training(config, tmp_path / "run", data=digits, **QUIET)

    torch.manual_seed(config.seed)
    model = build_model(config, digits.image_shape, digits.num_classes)
    opt = AnalogSGD(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(config.lr_milestones), gamma=config.lr_gamma)
    gen = torch.Generator().manual_seed(config.seed)
    reference = []
    for _ in range(config.epochs):
        order = torch.randperm(digits.train_x.shape[0], generator=gen)
        xs, ys = digits.train_x[order], digits.train_y[order]
        loss_sum = 0.0
        for start in range(0, xs.shape[0], config.batch_size):
            xb, yb = xs[start : start + config.batch_size], ys[start : start + config.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss_sum += loss.item() * xb.shape[0]
            loss.backward()
            opt.step()
        error, test_loss = evaluate(model, digits.test_x, digits.test_y, config.eval_batch_size)
        sched.step()
        reference.append((loss_sum / xs.shape[0], error, test_loss))
    assert [(e["train_loss"], e["test_error"], e["test_loss"]) for e in results["epochs"]] == reference
    assert "task" not in results and "task" not in results["config"]  # an image run reads as before

    # The same task handed to train_task directly: the same run.
    direct = train_task(ImageClassification(digits), None, None, config, tmp_path / "direct", **QUIET)
    assert _strip(direct) == _strip(results)


def test_replica_task_gives_each_replica_the_batches_and_loss_of_its_separate_run():
    """Replicas in lockstep: replica r's batches (its subset, in the order of its seed's
    generator) are those the image task of the separate run cuts, and its loss is its own
    batch mean."""
    configs = [_image_config(seed=s, subset=30) for s in (0, 1, 2)]
    datasets = [load_dataset("digits", subset=30, seed=c.seed) for c in configs]
    task = ReplicaClassification(datasets, configs)
    assert task.replicas == 3 and task.n_train == 30 and not task.shared
    orders = [torch.randperm(30, generator=torch.Generator().manual_seed(c.seed)) for c in configs]
    xs, ys = task.shuffle(orders)
    for start in range(0, 30, 8):  # the last batch holds 6
        xb, yb = task.batch(xs, ys, start, 8)
        assert xb.shape == (3, min(8, 30 - start), 64) and yb.shape == xb.shape[:2]
        for r, data in enumerate(datasets):
            alone = ImageClassification(data)
            ax, ay = alone.batch(*alone.shuffle([orders[r]]), start, 8)
            assert torch.equal(xb[r], ax) and torch.equal(yb[r], ay)
    logits = torch.randn(3, 5, 10, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [1, 1, 1, 1, 1]])
    separate = torch.stack([torch.nn.functional.cross_entropy(logits[r], targets[r]) for r in range(3)])
    assert torch.allclose(task.loss(logits, targets), separate)
    # Without a subset the replicas share one training set, each still in its own order.
    full = load_dataset("digits")
    whole = ReplicaClassification([full, full], [_image_config(seed=s) for s in (0, 1)])
    assert whole.shared and whole.train_x is full.train_x
    forward, backward = torch.arange(full.n_train), torch.arange(full.n_train).flip(0)
    xb, _ = whole.batch(*whole.shuffle([forward, backward]), 0, 2)
    assert torch.equal(xb[0], full.train_x[:2]) and torch.equal(xb[1], full.train_x[[-1, -2]])


def test_train_task_takes_one_config_and_folder_per_replica_of_a_replica_task(tmp_path, digits):
    configs = [_image_config(seed=s, epochs=1) for s in (0, 1)]
    replicas = ReplicaClassification([digits, digits], configs)
    with pytest.raises(ValueError, match="one config and one run folder per replica"):
        train_task(replicas, None, None, configs[0], tmp_path / "a", **QUIET)
    with pytest.raises(ValueError, match="the task trains None replicas"):
        train_task(ImageClassification(digits), None, None, configs, [tmp_path / "b", tmp_path / "c"], **QUIET)
    with pytest.raises(ValueError, match="one folder per replica"):
        train_task(replicas, None, None, configs, [tmp_path / "d"], **QUIET)
    results = train_task(replicas, None, None, configs, [tmp_path / "r0", tmp_path / "r1"], **QUIET)
    assert [r["lockstep"]["replica"] for r in results] == [0, 1] and [r["config"]["seed"] for r in results] == [0, 1]
    for r, result in enumerate(results):
        assert result["status"] == "completed" and len(result["epochs"]) == 1
        assert json.loads((tmp_path / f"r{r}" / "results.json").read_text()) == json.loads(json.dumps(result))
    assert (tmp_path / "r0" / "lockstep.pt").exists() and not (tmp_path / "r1" / "lockstep.pt").exists()


def _seq_data():
    return load_sequential_mnist(name="digits", subset=40, test_subset=30, seed=1)


def _seq_config(**changes):
    base = dict(task="seq-mnist", dataset="digits", model="lstm", hidden=(6,), epochs=2, lr=0.1, batch_size=8, seed=2)
    base.update(changes)
    return TrainConfig(**base)


def test_sequence_task_resumes_bit_identically(tmp_path):
    data = _seq_data()
    task = SequenceClassification(data, "seq-mnist")
    config = _seq_config()
    full = train_task(task, None, None, config, tmp_path / "full", **QUIET)
    assert full["task"] == "seq-mnist" and full["config"]["task"] == "seq-mnist"
    assert full["dataset"]["steps"] == 8 and full["dataset"]["features"] == 8
    assert full["status"] == "completed" and len(full["epochs"]) == 2

    def stop_after_epoch_one(line):
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(config, tmp_path / "cut", data=data, progress=False, log=stop_after_epoch_one)
    assert json.loads((tmp_path / "cut" / "results.json").read_text())["status"] == "interrupted"
    resumed = run_training(config, tmp_path / "cut", data=data, resume=True, **QUIET)
    assert _strip(resumed) == _strip(full)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    with pytest.raises(ConfigError, match="different config"):
        run_training(_seq_config(layers=2), tmp_path / "cut", data=data, resume=True, **QUIET)


def test_permuted_task_builds_steps_of_several_pixels(tmp_path):
    config = _seq_config(task="permuted-mnist", pixels_per_step=4, epochs=1)
    data = load_sequential_mnist(name="digits", permuted=True, pixels_per_step=4, subset=16, test_subset=10)
    results = run_training(config, tmp_path, data=data, **QUIET)
    assert results["task"] == "permuted-mnist" and results["dataset"]["steps"] == 16
    assert 0 <= results["epochs"][0]["test_error"] <= 1


def test_char_lm_task_measures_bits_per_character(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    config = TrainConfig(task="char-lm", model="lstm", hidden=(8,), seq_len=12, batch_size=4, epochs=1, lr=0.1,
                         subset=12, text=str(path))
    task = make_task(config)
    assert isinstance(task, CharPrediction)
    results = train_task(task, None, None, config, tmp_path / "run", **QUIET)
    last = results["epochs"][-1]
    assert results["task"] == "char-lm" and results["dataset"]["vocab_size"] == len(set(TEXT))
    assert last["bits_per_char"] == pytest.approx(last["test_loss"] / math.log(2))
    assert last["accuracy"] == pytest.approx(1 - last["test_error"])
    assert 0 < last["bits_per_char"] < 2 * math.log2(len(set(TEXT)))
    # one rank-1 write per character per array: the LSTM's and the readout's
    assert last["rank1_writes"] == 2 * 12 * 12
    assert (tmp_path / "run" / "test_error.png").read_bytes()[:4] == b"\x89PNG"


def test_char_corpus_of_the_bundled_text():
    corpus = char_corpus(seq_len=50)
    assert corpus.source == str(BUNDLED_TEXT) and corpus.name == "char-pride_and_prejudice"
    assert corpus.decode(corpus.train_x[0][:19]) == "PRIDE AND PREJUDICE"
    assert torch.equal(corpus.train_x[0, 1:], corpus.train_y[0, :-1])  # targets: the next characters
    assert torch.equal(corpus.train_x[1, 0], corpus.train_y[0, -1])  # windows follow each other
    assert corpus.test_chars == pytest.approx(0.1 * (corpus.train_chars + corpus.test_chars), abs=1)
    assert corpus.vocab_size == 75 and corpus.train_x.dtype == torch.int64
    small = char_corpus(seq_len=50, subset=7, seed=3)
    assert small.train_x.shape == (7, 50) and torch.equal(small.train_x, char_corpus(seq_len=50, subset=7, seed=3).train_x)


def test_task_config_fields_are_checked_and_left_out_at_their_defaults():
    assert set(TrainConfig().to_dict()).isdisjoint({"task", "layers", "seq_len", "pixels_per_step", "text"})
    assert TrainConfig(task="char-lm", model="lstm", hidden=(8,)).to_dict()["task"] == "char-lm"
    with pytest.raises(ConfigError, match="model"):
        TrainConfig(task="seq-mnist")  # mlp is no sequence model
    with pytest.raises(ConfigError, match="hidden"):
        TrainConfig(task="char-lm", model="lstm", hidden=(8, 8))
    with pytest.raises(ConfigError, match="lstm|model"):
        TrainConfig(model="lstm", hidden=(8,))  # image task: mlp or cnn-2017


def test_cli_char_lm_run(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--task", "char-lm", "--text", str(path), "--hidden", "6", "--layers", "2", "--seq-len", "10",
        "--subset", "6", "--batch-size", "3", "--epochs", "1", "--lr", "0.1", "--out", str(out), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    assert "bits/char" in result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["task"] == "char-lm" and saved["config"]["layers"] == 2 and saved["config"]["model"] == "lstm"
    bad = CliRunner().invoke(main, ["train", "--task", "seq-mnist", "--model", "mlp", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "lstm" in bad.output


def test_a_subset_applies_to_data_handed_in_as_it_does_to_data_loaded_by_name(digits):
    # A script that loads the data once and trains several configs on it must get the subset
    # the config asks for (before session 20 it silently trained on the whole set).
    config = _image_config(subset=300, seed=3)
    task = make_task(config, data=load_dataset("digits"))
    by_name = load_dataset("digits", subset=300, seed=3)
    assert task.data.n_train == 300
    assert torch.equal(task.data.train_x, by_name.train_x) and torch.equal(task.data.train_y, by_name.train_y)
    assert make_task(_image_config(), data=digits).data is digits  # no subset: the data as given
    with pytest.raises(ConfigError, match="subset 50 with data passed in"):
        make_task(_seq_config(subset=50), data=_seq_data())
