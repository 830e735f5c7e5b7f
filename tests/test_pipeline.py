"""Pipelined training (issue 18): the forward pass of each layer with its weights of d_l updates ago."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from insitu import AnalogLinear, AnalogSGD, ConfigError
from insitu.pipeline import PipelineStaleness, pipeline_delays, weight_layers
from insitu.presets import get_preset
from insitu.training import TrainConfig, run_training


def test_the_delays_of_the_pipeline_model():
    # L = 3 (the 2016 network): the first layer lacks 5 updates, the last one 1.
    assert pipeline_delays(3) == [5, 3, 1]
    assert pipeline_delays(1) == [1]


def _net(analog) -> nn.Sequential:
    torch.manual_seed(0)
    if analog == "sparse":  # two pre-defined sparse junctions of Dey et al. (6 inputs padded to 8)
        from insitu.sparse.training import SparseTrainConfig, build_sparse_mlp

        model, _ = build_sparse_mlp(SparseTrainConfig(sizes=(8, 4, 3), out_degrees=(2, 3), activation="sigmoid"))
        return nn.Sequential(nn.ConstantPad1d((0, 2), 0.0), *model)
    if analog:
        config = get_preset("gokmen-vlasov-2016")
        return nn.Sequential(AnalogLinear(6, 5, config=config, seed=1), nn.Sigmoid(), AnalogLinear(5, 3, config=config, seed=2))
    return nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 3))


@pytest.mark.parametrize("analog", [False, True, "sparse"])
def test_each_forward_pass_uses_the_weights_of_delay_updates_ago_and_the_update_the_current_ones(analog):
    model = _net(analog)
    layers = weight_layers(model)
    staleness = PipelineStaleness(layers, [3, 1])
    seen = {0: [], 1: []}
    for index, layer in enumerate(layers):  # registered after the pipeline's: sees the swapped-in weights
        layer.register_forward_pre_hook(lambda m, i, index=index: seen[index].append([p.detach().clone() for p in m.parameters()]))
    optimizer = AnalogSGD(model.parameters(), lr=0.1) if analog is True else torch.optim.SGD(model.parameters(), lr=0.1)
    after = [[[p.detach().clone() for p in layer.parameters()] for layer in layers]]  # after[k]: after k steps
    g = torch.Generator().manual_seed(3)
    for _ in range(8):
        x = torch.rand(1, 6, generator=g)
        optimizer.zero_grad()
        model(x).square().sum().backward()
        before = [[p.detach().clone() for p in layer.parameters()] for layer in layers]
        optimizer.step()
        staleness.step()
        after.append([[p.detach().clone() for p in layer.parameters()] for layer in layers])
        # The update was applied to the current weights (those after the previous step).
        for layer_before, layer_prev in zip(before, after[-2]):
            for a, b in zip(layer_before, layer_prev):
                assert torch.equal(a, b)
    for index, delay in enumerate([3, 1]):
        for t, used in enumerate(seen[index]):
            expected = after[max(0, t - delay)][index]
            for a, b in zip(used, expected):
                assert torch.equal(a, b), (index, t)
    # Outside training (evaluation) the current weights are used.
    model.eval()
    seen[0].clear()
    model(torch.rand(1, 6))
    assert all(torch.equal(a, b) for a, b in zip(seen[0][0], after[-1][0]))


def test_zero_delays_train_exactly_as_without_a_pipeline():
    results = []
    for pipelined in (False, True):
        model = _net(False)
        staleness = PipelineStaleness(weight_layers(model), [0, 0]) if pipelined else None
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(3)
        for _ in range(5):
            optimizer.zero_grad()
            model(torch.rand(1, 6, generator=g)).square().sum().backward()
            optimizer.step()
            if staleness is not None:
                staleness.step()
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_pipelined_training_resumes_bit_identically(tmp_path):
    def config(epochs):
        return TrainConfig(dataset="digits", hidden=(12,), epochs=epochs, subset=300, lr=0.1, lr_milestones=(), pipeline=True)

    straight = run_training(config(2), tmp_path / "a", progress=False, log=lambda _: None)
    run_training(config(1), tmp_path / "b", progress=False, log=lambda _: None)
    resumed = run_training(config(2), tmp_path / "b", resume=True, progress=False, log=lambda _: None)
    assert [e["test_error"] for e in straight["epochs"]] == [e["test_error"] for e in resumed["epochs"]]
    assert straight["epochs"][-1]["train_loss"] == resumed["epochs"][-1]["train_loss"]
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["config"]["pipeline"] is True
    # Without the option the config dict is as before (point keys and recorded configs unchanged).
    assert "pipeline" not in TrainConfig().to_dict()


def test_the_sparse_mlp_trains_pipelined_and_resumes_bit_identically(tmp_path):
    from insitu.data import load_dataset
    from insitu.sparse.training import SparseTrainConfig, train_sparse

    data = load_dataset("digits", subset=300, seed=0)
    config = SparseTrainConfig(dataset="digits", sizes=(64, 32, 10), out_degrees=(8, 5), epochs=2, batch_size=1, optimizer="sgd", lr=0.05, subset=300, pipeline=True)
    straight = train_sparse(config, data, out_dir=tmp_path / "a")
    train_sparse(config.replace(epochs=1), data, out_dir=tmp_path / "b")
    resumed = train_sparse(config, data, out_dir=tmp_path / "b", resume=True)
    assert [e["test_accuracy"] for e in straight["epochs"]] == [e["test_accuracy"] for e in resumed["epochs"]]
    assert straight["epochs"][-1]["train_loss"] == resumed["epochs"][-1]["train_loss"]
    plain = train_sparse(config.replace(pipeline=False), data)
    assert plain["epochs"][-1]["train_loss"] != straight["epochs"][-1]["train_loss"]  # the staleness changes the run
    assert json.loads((tmp_path / "a" / "results.json").read_text())["config"]["pipeline"] is True
    assert "pipeline" not in config.replace(pipeline=False).to_dict()


def test_pipelined_training_is_refused_where_it_has_no_meaning():
    from insitu.cells import TikiTakaCell

    layer = AnalogLinear(4, 3, config=get_preset("gokmen-vlasov-2016").replace(cell=TikiTakaCell()))
    with pytest.raises(ConfigError, match="learning-rule cell"):
        PipelineStaleness([layer], [1])
    with pytest.raises(ConfigError, match="one delay per layer"):
        PipelineStaleness([nn.Linear(2, 2)], [1, 2])
    with pytest.raises(ConfigError, match="pipeline"):
        TrainConfig(task="char-lm", model="lstm", hidden=(8,), pipeline=True)
