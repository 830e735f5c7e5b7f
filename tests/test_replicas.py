"""Replicas in lockstep (issue 7): the replicated tile and layer, the lockstep trainer, sweeps."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from insitu import AnalogLinear, AnalogSGD, AnalogTile, ConfigError, IdealDevice, IOConfig, TileConfig
from insitu.io import analog_mvm
from insitu.presets import get_preset
from insitu.replicas import ReplicatedTile, lockstep_conflict
from insitu.sweep import ResultsStore, StudyConfig, run_study, store_paths
from insitu.sweep.lockstep import CHECKPOINT_NAME, lockstep_group_key, run_lockstep
from insitu.sweep.runner import group_tasks
from insitu.training import TrainConfig, run_training
from insitu.update import UpdateAlgorithmConfig


def rpu(**update) -> TileConfig:
    config = get_preset("gokmen-vlasov-2016")
    return config.replace(update=config.update.replace(**update)) if update else config


def deterministic(config: TileConfig) -> TileConfig:
    """No random draw during training: expected pulses, noise-free IO."""
    return config.replace(
        update=config.update.replace(pulse_type="expected"),
        forward=config.forward.replace(out_noise=0.0),
        backward=config.backward.replace(out_noise=0.0),
    )


# -- the replicated tile and layer -------------------------------------------------------------
def test_each_replica_starts_with_the_devices_and_weights_of_a_layer_with_its_seed():
    configs = [rpu(), rpu().replace(device=rpu().device.replace(dw_min=0.003, w_max=0.3)), rpu()]
    seeds = [11, 12, 13]
    layer = AnalogLinear(7, 5, config=configs, seed=seeds)
    for r, (config, seed) in enumerate(zip(configs, seeds)):
        alone = AnalogLinear(7, 5, config=config, seed=seed)
        assert torch.equal(layer.tile.weight[r], alone.tile.weight)
        assert torch.equal(layer.tile.parameter_planes()[:, r], alone.tile.device_params)
        copy = layer.replica(r)
        assert torch.equal(copy.tile.weight, alone.tile.weight) and copy.tile.config == config


def test_replicated_forward_is_each_replicas_own_product_with_its_own_io_numbers():
    base = TileConfig(device=IdealDevice(), forward=IOConfig(inp_bound=None, out_noise=0.0, out_bound=None))
    configs = [base.replace(forward=base.forward.replace(out_bound=b)) for b in (0.5, 100.0)]
    configs[1] = configs[1].replace(forward=configs[1].forward.replace(out_noise=0.2))
    layer = AnalogLinear(50, 40, bias=False, config=configs, seed=[0, 1])
    x = torch.rand(2, 400, 50, generator=torch.Generator().manual_seed(0))
    exact = torch.bmm(x, layer.tile.weight.detach().transpose(1, 2))
    y = layer(x).detach()
    assert torch.equal(y[0], exact[0].clamp(-0.5, 0.5))  # replica 0: bound 0.5, no noise
    noise = (y[1] - exact[1]).flatten()
    assert abs(float(noise.std()) - 0.2) < 0.2 * 5 / math.sqrt(2 * noise.numel())  # replica 1: sigma 0.2
    assert abs(float(noise.mean())) < 5 * 0.2 / math.sqrt(noise.numel())


@pytest.mark.parametrize("preset", ["gokmen-vlasov-2016", "gokmen-2017-cnn-nm-bm-um"])
def test_compiled_replica_products_are_each_replicas_compiled_product_on_its_own_stream(preset):
    # On the compiled backend the products of all replicas run in one call (io_compiled.stacked_mvm);
    # replica r's outputs and draws must be those of a separate compiled product (the plain
    # periphery, and noise plus bound management) with its weights, IO numbers and stream.
    from insitu.io_compiled import compiled_mvm, io_numbers
    from insitu.update.kernels import compiled_available, rng_state, use_backend

    if not compiled_available():
        pytest.skip("numba is not installed")
    base = get_preset(preset)
    configs = [
        base,
        base.replace(forward=base.forward.replace(out_noise=0.2, out_bound=3.0)),
        base.replace(backward=base.backward.replace(inp_bound=0.5)),
    ]
    tile = ReplicatedTile(40, 30, configs, seeds=[0, 1, 2])
    tile.weight.data.uniform_(-0.6, 0.6, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    with use_backend("compiled"):
        for transposed, width in ((False, 30), (True, 40)):
            for batch in (1, 3):
                x = torch.randn(3, batch, width, generator=g) * 2
                before = tile.pulse_rng.clone()
                y = tile.backward(x) if transposed else tile.forward(x)
                for r, config in enumerate(configs):
                    io = config.backward if transposed else config.forward
                    stream = before[r].clone()
                    alone = compiled_mvm(x[r], tile.weight.detach()[r].numpy(), io_numbers(io), transposed, rng_state.as_views(stream))
                    assert torch.allclose(y[r], alone, rtol=1e-6, atol=1e-6)
                    assert torch.equal(stream, tile.pulse_rng[r])  # the same draws from the same stream
                    assert not torch.equal(stream, before[r])  # it did draw (output noise)


@pytest.mark.parametrize("preset", ["gokmen-vlasov-2016", "gokmen-2017-cnn-nm-bm-um"])
def test_compiled_replica_products_in_parallel_threads_give_the_same_outputs_and_draws(preset):
    # stacked_mvm runs the replicas in numba's threads: each reads its own weights and stream and
    # writes only its outputs, so one or two threads give the same outputs and streams.
    numba = pytest.importorskip("numba")
    from insitu.update.kernels import set_threads, use_backend

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs a numba pool of two threads")
    base = get_preset(preset)
    configs = [base, base.replace(forward=base.forward.replace(out_noise=0.2, out_bound=3.0)), base, base]
    results = []
    previous = (torch.get_num_threads(), numba.get_num_threads())
    try:
        for threads in (1, 2):  # the serial build, then the parallel one
            set_threads(threads)
            tile = ReplicatedTile(40, 30, configs, seeds=[0, 1, 2, 3])
            tile.weight.data.uniform_(-0.6, 0.6, generator=torch.Generator().manual_seed(0))
            g = torch.Generator().manual_seed(1)
            with use_backend("compiled"):
                outputs = [tile.forward(torch.randn(4, 2, 30, generator=g) * 2), tile.backward(torch.randn(4, 2, 40, generator=g))]
            results.append((outputs, tile.pulse_rng.clone()))
    finally:
        torch.set_num_threads(previous[0])
        numba.set_num_threads(previous[1])
    (first, first_streams), (second, second_streams) = results
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert torch.equal(first_streams, second_streams)
    assert not torch.equal(first[0][0], first[0][2])  # replicas with equal configs drew their own noise


def test_bound_management_of_replicas_equals_the_single_array_version():
    io = IOConfig(inp_bound=1.0, out_noise=0.0, out_bound=1.0, noise_management="abs_max", bound_management="iterative")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 6, 20, generator=g) * 2 - 1
    matrix = torch.randn(3, 20, 4, generator=g)
    from insitu.io import ReplicaIO

    stacked = analog_mvm(x, matrix, ReplicaIO.stack([io] * 3))
    for r in range(3):
        assert torch.allclose(stacked[r], analog_mvm(x[r], matrix[r], io), atol=1e-6)


def _weight_changes(replicated: bool, config: TileConfig, x, d, draws: int) -> torch.Tensor:
    """``draws`` independent updates of the same array (same devices, same start): ΔW each."""
    if replicated:
        tile = ReplicatedTile(6, 8, [config] * draws, seeds=[5] * draws)
        start = torch.full((draws, 6, 8), 0.1)
        tile.set_weights(start)
        tile.stash(x.expand(draws, *x.shape), d.expand(draws, *d.shape))
        tile.update(0.05)
        return tile.weight.detach() - start
    changes = []
    for k in range(draws):
        tile = AnalogTile(6, 8, config, seed=5)
        tile.manual_seed(10_000 + k)
        tile.set_weights(torch.full((6, 8), 0.1))
        tile.stash(x, d)
        tile.update(0.05)
        changes.append(tile.weight.detach() - 0.1)
    return torch.stack(changes)


@pytest.mark.parametrize(
    "mode, backend, device",
    [("sequential", "auto", "2016"), ("sequential", "torch", "2016"), ("sequential", "torch", "soft-bounds"),
     ("summed", "torch", "2016"), ("batched", "torch", "2016"), ("sequential", "torch", "dynamic-bl"),
     ("sequential", "auto", "pow-step"), ("sequential", "torch", "pow-step")],
)
def test_lockstep_updates_have_the_distribution_of_separate_updates(mode, backend, device):
    # Replicas and single tiles run the same engine code (insitu.update.engine) in every mode;
    # on the compiled backend the replicas' stacked kernel against the single-array kernel.
    from insitu.devices import SoftBoundsDevice
    from insitu.update.kernels import use_backend

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 8, generator=g) * 2 - 1
    d = (torch.rand(2, 6, generator=g) * 2 - 1) * 0.5
    config = rpu(mode=mode)
    if device == "soft-bounds":
        config = config.replace(device=SoftBoundsDevice(dw_min=0.01, up_down=0.2, dw_min_std=0.3))
    if device == "pow-step":  # a family with its own parameter layout and response
        from insitu.devices import PowStepDevice

        config = config.replace(device=PowStepDevice(dw_min=0.01, dw_min_std=0.3))
    if device == "dynamic-bl":
        config = rpu(update_management=True, dynamic_bl=True, bl=31)
    draws = 400
    with use_backend(backend):
        lockstep = _weight_changes(True, config, x, d, draws)
        separate = _weight_changes(False, config, x, d, draws)
    # Per device: the difference of the two means in units of its standard error.
    se = torch.sqrt(lockstep.var(0) / draws + separate.var(0) / draws).clamp_min(1e-9)
    z = (lockstep.mean(0) - separate.mean(0)) / se
    assert float(z.abs().max()) < 4.5 and abs(float(z.mean())) < 4 / math.sqrt(z.numel())
    ratio = lockstep.var(0).sum() / separate.var(0).sum()
    assert 0.85 < float(ratio) < 1.15


def test_replicas_may_differ_in_dw_min_and_bl_and_each_gets_its_own_pulse_scale():
    configs = [rpu(), rpu().replace(device=rpu().device.replace(dw_min=0.004)), rpu(bl=40)]
    tile = ReplicatedTile(4, 5, configs, seeds=[1, 1, 1])
    tile.set_weights(torch.zeros(3, 4, 5))
    x, d = torch.full((3, 1, 5), 0.3), torch.full((3, 1, 4), -0.3)
    tile.stash(x, d)
    tile.update(0.01)
    pulses = tile.counters.pulses
    # Expected pulses BL (Σp + Σq) with p = q = 0.3 sqrt(lr / (BL dw_min)).
    for r, (bl, dw) in enumerate([(10, 0.001), (10, 0.004), (40, 0.001)]):
        p = 0.3 * math.sqrt(0.01 / (bl * dw))
        assert float(pulses[r]) == pytest.approx(bl * 9 * p, rel=1e-5)


def test_lockstep_conflicts_name_the_field_and_bad_shapes_are_refused():
    assert lockstep_conflict([rpu(), rpu(bl=20)]) is None
    assert "update_management" in lockstep_conflict([rpu(), rpu(update_management=True)])
    assert lockstep_conflict([rpu(mode="batched")]) is None  # every mode runs stacked (the engine)
    assert "devices_per_weight" in lockstep_conflict([rpu().replace(devices_per_weight=2)])
    assert "sgd" in lockstep_conflict([rpu().replace(algorithm=UpdateAlgorithmConfig(method="sbe", rank=1))])
    noisy_bits = rpu().replace(forward=rpu().forward.replace(out_bits=8))
    assert "out_bits" in lockstep_conflict([rpu(), noisy_bits])
    with pytest.raises(ConfigError, match="update_management"):
        AnalogLinear(3, 2, config=[rpu(), rpu(update_management=True)])
    with pytest.raises(ValueError, match="disagree"):
        AnalogLinear(3, 2, config=[rpu(), rpu()], seed=[1, 2, 3])
    layer = AnalogLinear(3, 2, config=rpu(), replicas=2, seed=[1, 2])
    with pytest.raises(ValueError, match="replicas=2"):
        layer(torch.zeros(3, 1, 3))
    with pytest.raises(ConfigError, match="connection masks"):
        layer.tile.set_connection_mask(torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("preset", ["gokmen-vlasov-2016", "pcm-pair-2016-io"])
def test_replicated_layer_state_dict_round_trip_continues_identically(preset):
    # (A conductance pair's state planes are part of device_params: they round trip with it.)
    base = get_preset(preset)
    configs = [base, base.replace(update=base.update.replace(bl=5))]
    layer = AnalogLinear(6, 3, config=configs, seed=[1, 2])
    x = torch.rand(2, 4, 6, generator=torch.Generator().manual_seed(1))

    def train(model, steps):
        opt = AnalogSGD(model.parameters(), lr=0.1)
        for _ in range(steps):
            model(x).square().sum().backward()
            opt.step()

    train(layer, 3)
    saved = layer.state_dict()
    other = AnalogLinear(6, 3, config=configs, seed=[1, 2])
    other.load_state_dict(saved)
    train(layer, 3)
    train(other, 3)
    assert torch.equal(layer.tile.weight, other.tile.weight)
    assert torch.equal(layer.tile.device_params, other.tile.device_params)
    assert torch.equal(layer.tile.counters.coincidences, other.tile.counters.coincidences)
    wrong = AnalogLinear(6, 3, config=configs, seed=[1, 3])
    with pytest.raises(ConfigError, match="other configs or seeds"):
        wrong.load_state_dict(saved)


def test_replica_checkpoints_with_interleaved_parameters_load_as_planes():
    # Before the engine's stacked layout, ReplicatedTile kept steps and bounds interleaved per
    # device (R, out, in, 4) and the slopes apart (R, out, in, 2); such state dicts still load.
    from insitu.devices import SoftBoundsDevice

    config = rpu().replace(device=SoftBoundsDevice(dw_min=0.01, up_down=0.2))
    tile = ReplicatedTile(4, 5, [config, config], seeds=[1, 2])
    state = tile.state_dict()
    planes = state.pop("device_params")
    names = tile.device_model.param_names
    pick = lambda wanted: planes[[names.index(n) for n in wanted]].movedim(0, -1).contiguous()  # noqa: E731
    state["device_params"] = pick(("dw_up", "dw_down", "w_min", "w_max"))
    state["device_slopes"] = pick(("slope_up", "slope_down"))
    other = ReplicatedTile(4, 5, [config, config], seeds=[1, 2])
    other.device_params.zero_()
    other.load_state_dict(state)
    assert torch.equal(other.device_params, planes)
    assert not torch.equal(planes[names.index("slope_up")], torch.zeros_like(planes[0]))


# -- lockstep training -------------------------------------------------------------------------
def _digits(**changes) -> dict:
    return {"dataset": "digits", "hidden": (12,), "epochs": 2, "lr": 0.1, "lr_milestones": (), "subset": 200, **changes}


def _match_separate_runs(tmp_path, configs, together) -> list[tuple[dict, dict]]:
    """Train each config alone and check that its replica's epochs match it (test error to 0.01,
    train loss to 1e-4); returns the ``(replica's results, separate run's results)`` pairs."""
    pairs = []
    for config, result in zip(configs, together):
        alone = run_training(config, tmp_path / f"alone{config.seed}", progress=False, log=lambda line: None)
        for a, b in zip(result["epochs"], alone["epochs"]):
            assert a["test_error"] == pytest.approx(b["test_error"], abs=0.01)
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        pairs.append((result, alone))
    return pairs


def test_deterministic_lockstep_training_equals_separate_runs(tmp_path):
    base = deterministic(rpu())
    tiles = [
        base,
        base.replace(device=base.device.replace(dw_min=0.002, w_max=0.4)),
        base.replace(forward=base.forward.replace(out_bound=3.0), update=base.update.replace(bl=20)),
    ]
    configs = [TrainConfig(**_digits(), seed=s, tile=t) for s, t in zip((0, 1, 2), tiles)]
    together = run_lockstep(configs, [tmp_path / f"r{k}" for k in range(3)], log=lambda line: None)
    for config, (result, _) in zip(configs, _match_separate_runs(tmp_path, configs, together)):
        assert result["status"] == "completed"
        assert json.loads((tmp_path / f"r{config.seed}" / "results.json").read_text())["epochs"] == result["epochs"]


def test_stochastic_lockstep_training_trains_like_separate_runs(tmp_path):
    configs = [TrainConfig(**_digits(epochs=3, subset=None, hidden=(24,), lr=0.2), seed=s) for s in range(4)]
    together = run_lockstep(configs, [tmp_path / f"r{k}" for k in range(4)], log=lambda line: None)
    alone = [run_training(c, tmp_path / f"a{c.seed}", progress=False, log=lambda line: None) for c in configs]
    lock_err = [r["epochs"][-1]["test_error"] for r in together]
    sep_err = [r["epochs"][-1]["test_error"] for r in alone]
    # Both learn (chance is 90 %), and the mean errors agree within the seed spread (replica r
    # and run r share devices, initial weights and data order: only the pulses and noise differ).
    assert max(lock_err + sep_err) < 0.7
    spread = max(torch.tensor(sep_err).std().item(), 0.02)
    assert abs(sum(lock_err) / 4 - sum(sep_err) / 4) < 2 * spread
    assert max(abs(a - b) for a, b in zip(lock_err, sep_err)) < 0.1


def test_lockstep_resume_after_an_epoch_equals_an_uninterrupted_group(tmp_path):
    configs = [TrainConfig(**_digits(), seed=s) for s in (3, 4)]
    straight = run_lockstep(configs, [tmp_path / "a0", tmp_path / "a1"], log=lambda line: None)
    short = [c.replace(epochs=1) for c in configs]
    run_lockstep(short, [tmp_path / "b0", tmp_path / "b1"], log=lambda line: None)
    with pytest.raises(FileExistsError):
        run_lockstep(configs, [tmp_path / "b0", tmp_path / "b1"], log=lambda line: None)
    resumed = run_lockstep(configs, [tmp_path / "b0", tmp_path / "b1"], resume=True, log=lambda line: None)
    assert [r["epochs"] for r in resumed] == [
        [dict(e, train_seconds=f["train_seconds"], seconds_per_sample=f["seconds_per_sample"]) for e, f in zip(s["epochs"], r["epochs"])]
        for s, r in zip(straight, resumed)
    ]


def _without_seconds(results: dict) -> dict:
    return dict(results, epochs=[{k: v for k, v in e.items() if "seconds" not in k} for e in results["epochs"]])


def test_an_interrupted_group_resumes_bit_identically_and_a_diverged_replica_stays_stopped(tmp_path):
    import dataclasses

    from insitu.data import load_dataset

    configs = [TrainConfig(**_digits(epochs=3), seed=s) for s in (0, 1, 2)]
    datasets = [load_dataset("digits", subset=200, seed=s) for s in (0, 1, 2)]
    poisoned = datasets[1].train_x.clone()
    poisoned[57] = float("nan")  # replica 1 meets it in its first epoch and stops
    datasets[1] = dataclasses.replace(datasets[1], train_x=poisoned)

    def folders(name):
        return [tmp_path / f"{name}{r}" for r in range(3)]

    straight = run_lockstep(configs, folders("a"), datasets=datasets, log=lambda line: None)

    def stop_after_epoch_two(line):
        if line.startswith("epoch 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_lockstep(configs, folders("b"), datasets=datasets, log=stop_after_epoch_two)
    partial = [json.loads((d / "results.json").read_text()) for d in folders("b")]
    assert [p["status"] for p in partial] == ["interrupted", "diverged", "interrupted"]
    assert [len(p["epochs"]) for p in partial] == [2, 0, 2] and "KeyboardInterrupt" in partial[0]["error"]
    resumed = run_lockstep(configs, folders("b"), datasets=datasets, resume=True, log=lambda line: None)
    assert [r["status"] for r in resumed] == ["completed", "diverged", "completed"]
    members = lambda results: [{k: v for k, v in r.items() if k != "lockstep"} for r in results]  # noqa: E731
    assert [_without_seconds(r) for r in members(resumed)] == [_without_seconds(r) for r in members(straight)]
    a, b = (torch.load(d[0] / CHECKPOINT_NAME, weights_only=False) for d in (folders("a"), folders("b")))
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"] if isinstance(a["model"][k], torch.Tensor))
    assert all(torch.equal(x, y) for x, y in zip(a["order_generators"], b["order_generators"]))
    assert torch.equal(a["alive"], b["alive"]) and a["alive"].tolist() == [True, False, True]


def test_a_group_whose_member_folder_is_in_use_is_refused_and_leaves_no_marker(tmp_path):
    from insitu.checkpoint import FolderLock, LockedError
    from insitu.sweep.lockstep import GROUP_FILE
    from insitu.training import LOCK_FILE

    configs = [TrainConfig(**_digits(), seed=s) for s in (0, 1)]
    folders = [tmp_path / "r0", tmp_path / "r1"]
    with FolderLock(folders[1] / LOCK_FILE, "held by this test"):
        with pytest.raises(LockedError, match=r"Another .* is running in .*r1"):
            run_lockstep(configs, folders, log=lambda line: None)
    assert not any((d / GROUP_FILE).exists() or (d / "results.json").exists() for d in folders)
    assert not (folders[0] / CHECKPOINT_NAME).exists()


def test_a_diverged_replica_stops_and_the_others_finish(tmp_path, monkeypatch):
    configs = [TrainConfig(**_digits(), seed=s) for s in (0, 1)]
    import insitu.models as models

    original = models.mlp

    def poisoned(*args, **kwargs):
        model = original(*args, **kwargs)
        with torch.no_grad():
            model[0].tile.weight[1] = float("nan")
        return model

    monkeypatch.setattr(models, "mlp", poisoned)
    results = run_lockstep(configs, [tmp_path / "r0", tmp_path / "r1"], log=lambda line: None)
    assert results[0]["status"] == "completed" and len(results[0]["epochs"]) == 2
    assert results[1]["status"] == "diverged" and results[1]["epochs"] == [] and "learning rate" in results[1]["error"]


def test_configs_that_differ_in_more_than_replica_numbers_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="differ only in seed"):
        run_lockstep([TrainConfig(**_digits(), seed=0), TrainConfig(**_digits(lr=0.2), seed=1)], [tmp_path / "a", tmp_path / "b"])
    assert lockstep_group_key(TrainConfig(model="cnn-2017", activation="tanh")) is None
    # The layer pipeline's staleness is per network: a pipelined point trains alone.
    assert lockstep_group_key(TrainConfig(**_digits(), pipeline=True)) is None
    assert lockstep_group_key(TrainConfig(**_digits())) is not None


# -- sweeps in lockstep ------------------------------------------------------------------------
def tiny_study() -> StudyConfig:
    return StudyConfig.from_dict({
        "name": "tiny-lockstep",
        "base": {"preset": "gokmen-vlasov-2016", "dataset": "digits", "hidden": [8], "epochs": 2, "subset": 80,
                 "lr": 0.1, "lr_milestones": []},
        "axes": [{"field": "tile.device.dw_min", "values": [0.001, 0.004]}, {"field": "lr", "values": [0.1, 0.3]}],
        "seeds": [0, 1],
    })


def test_sweep_groups_compatible_points_and_records_every_point(tmp_path):
    lines = []
    started = time.perf_counter()
    counts = run_study(tiny_study(), tmp_path, workers=0, lockstep=8, log=lines.append)
    elapsed = time.perf_counter() - started
    assert counts["completed"] == len(tiny_study().points())
    with ResultsStore(store_paths(tmp_path)[0], create=False) as store:
        # Each member is charged its share of the group's time: the study's total counts a group once.
        assert 0 < sum(p["seconds"] for p in store.points()) <= elapsed
    # The lr axis cannot be held apart by replicas: one group per lr value.
    assert any("in 2 group(s)" in line for line in lines), lines
    with ResultsStore(store_paths(tmp_path)[0], create=False) as store:
        for point in store.points():
            assert len(store.epochs(point["id"])) == 2
    again = []
    run_study(tiny_study(), tmp_path, workers=0, lockstep=8, log=again.append)
    assert any("0 to run" in line for line in again)


def test_groups_are_cut_by_pulse_load_so_heavy_points_share_a_group(tmp_path):
    # Pulse load sqrt(lr BL / dw_min): dw_min 1e-4 and BL 31 are the heavy points here; the others
    # are at or below the baseline. Interleaved in the study order, they must end up together.
    preset = get_preset("gokmen-vlasov-2016")
    variants = [("device", "dw_min", 1e-4), ("device", "dw_min", 1e-2), ("update", "bl", 31),
                ("update", "bl", 1), ("device", "dw_min", 1e-3), ("update", "bl", 10)]
    tasks = []
    for i, (part, field, value) in enumerate(variants):
        tile = preset.replace(**{part: getattr(preset, part).replace(**{field: value})})
        config = TrainConfig(dataset="digits", hidden=[8], epochs=1, tile=tile)
        tasks.append({"point_id": i, "config": config.to_dict(), "run_dir": str(tmp_path / f"p{i}")})
    groups = group_tasks(tasks, 2, None, 1)
    members = [sorted(m["point_id"] for m in g["group"]) for g in groups]
    assert sorted(members) == [[0, 2], [1, 3], [4, 5]], members


def test_an_interrupted_group_is_formed_again_and_resumes_from_its_checkpoint(tmp_path):
    study = tiny_study()
    run_study(study, tmp_path, workers=0, lockstep=8, log=lambda line: None)
    store_path = store_paths(tmp_path)[0]

    def finals():
        with ResultsStore(store_path, create=False) as store:
            return {p["key"]: (p["status"], [e["test_error"] for e in store.epochs(p["id"])]) for p in store.points()}

    before = finals()
    # A driver killed while the groups trained leaves their points 'running'.
    with ResultsStore(store_path, create=False) as store:
        points = store.points()
        for point in points:
            store.mark_running(point["id"])
    # The groups are formed again from their members' lockstep.json, whatever the order of the points.
    tasks = [{"point_id": p["id"], "config": p["config"], "run_dir": p["run_dir"]} for p in reversed(points)]
    for task in group_tasks(tasks, 8, None, 1):
        members = [m["run_dir"] for m in task["group"]]
        marker = json.loads((Path(members[0]) / "lockstep.json").read_text())
        assert [str(Path(m)) for m in marker["members"]] == [str(Path(m)) for m in members]
        assert (Path(members[0]) / CHECKPOINT_NAME).exists()
    lines = []
    run_study(study, tmp_path, workers=0, lockstep=8, log=lines.append)
    assert any("resuming them" in line for line in lines) and any("(resumed)" in line for line in lines)
    assert finals() == before


def test_ideal_device_replicas_equal_exact_sgd_and_summed_mode_trains(tmp_path):
    # Ideal devices and perfect IO: each replica is plain SGD on its own data.
    ideal = TileConfig(device=IdealDevice(), forward=IOConfig.perfect(), backward=IOConfig.perfect())
    layer = AnalogLinear(5, 3, config=[ideal, ideal], seed=[0, 1])
    x = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(2))
    w0 = layer.tile.weight.detach().clone()
    out = layer(x)
    out.square().sum().backward()
    AnalogSGD(layer.parameters(), lr=0.1).step()
    x1 = torch.nn.functional.pad(x, (0, 1), value=1.0)
    expected = w0 - 0.1 * torch.bmm((2 * out.detach()).transpose(1, 2), x1)
    assert torch.allclose(layer.tile.weight, expected, atol=1e-6)
    # The summed update mode at batch 8: a lockstep group trains like separate runs.
    configs = [TrainConfig(**_digits(batch_size=8, lr=0.1, epochs=3, subset=None, hidden=(24,)), seed=s,
                           tile=rpu(mode="summed")) for s in (0, 1)]
    together = run_lockstep(configs, [tmp_path / "a", tmp_path / "b"], log=lambda line: None)
    alone = [run_training(c, tmp_path / f"s{c.seed}", progress=False, log=lambda line: None) for c in configs]
    for runs in (together, alone):
        assert all(r["epochs"][-1]["train_loss"] < r["epochs"][0]["train_loss"] for r in runs)
    mean = [sum(r["epochs"][-1]["test_error"] for r in runs) / 2 for runs in (together, alone)]
    assert abs(mean[0] - mean[1]) < 0.1


def test_cli_sweep_with_lockstep(tmp_path):
    from click.testing import CliRunner

    from insitu.cli import main

    result = CliRunner().invoke(main, [
        "sweep", "run", "--param", "tile.device.dw_min", "--values", "0.001,0.002", "--seeds", "0,1", "--hidden", "8",
        "--subset", "100", "--lr", "0.1", "--lockstep", "4", "--workers", "0", "--out", str(tmp_path / "s"),
    ])
    assert result.exit_code == 0, result.output
    assert "lockstep: 4 points in 1 group(s)" in result.output
    bad = CliRunner().invoke(main, ["sweep", "run", "--param", "lr", "--values", "0.1", "--lockstep", "0", "--workers", "0",
                                    "--out", str(tmp_path / "t")])
    assert bad.exit_code == 2 and "lockstep" in bad.output


def test_a_sweep_limits_the_compiled_kernels_threads_as_well_as_torchs(tmp_path):
    """`--threads 1` once set only PyTorch's threads: the lockstep kernels ran in numba's default
    pool (every core) beside the other workers of the study."""
    numba = pytest.importorskip("numba")
    import torch
    from click.testing import CliRunner

    from insitu.cli import main

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs a numba pool of two threads to see the limit")
    before = (numba.get_num_threads(), torch.get_num_threads())
    numba.set_num_threads(2)
    try:
        result = CliRunner().invoke(main, [
            "sweep", "run", "--param", "tile.device.dw_min", "--values", "0.001,0.002", "--hidden", "8",
            "--subset", "50", "--lr", "0.1", "--lockstep", "2", "--workers", "0", "--threads", "1",
            "--out", str(tmp_path / "s"),
        ])
        assert result.exit_code == 0, result.output
        assert (numba.get_num_threads(), torch.get_num_threads()) == (1, 1)
    finally:
        numba.set_num_threads(before[0])
        torch.set_num_threads(before[1])


# -- conductance pairs (per-device state) in lockstep ------------------------------------------
def _pairs():
    from insitu.devices import JumpTableDevice, JumpTablePairDevice, PCMDevice, PCMPairDevice

    pcm = PCMDevice(nonlinearity=1.0, initial_jump=0.05, g_max_dtod=0.1, dg_dtod=0.2, dg_std=0.3)
    table = JumpTableDevice(bin_edges=(0.0, 0.4, 1.0), mean=(0.02, 0.01), std=(0.01, 0.005), gain_dtod=0.1)
    return {"pcm": PCMPairDevice(device=pcm, w_max=0.5), "jump-table": JumpTablePairDevice(device=table)}


def _noise_free(pair):
    """The pair without pulse-to-pulse noise (its devices' spreads kept)."""
    inner = pair.device
    quiet = inner.replace(dg_std=0.0) if hasattr(inner, "dg_std") else inner.replace(std=tuple(0.0 for _ in inner.std))
    return pair.replace(device=quiet)


def _signs(shape, generator) -> torch.Tensor:
    """-1, 0 or +1 at random: with a learning rate that makes every probability at least 1 each
    nonzero line fires in every slot, so the trains are fixed and nothing is drawn."""
    return torch.randint(-1, 2, shape, generator=generator).float()


def _state_planes(model, params) -> torch.Tensor:
    from insitu.devices.conductance_pair import STATE_PLANES

    return torch.stack([model.plane(params, name) for name in STATE_PLANES])


@pytest.mark.parametrize("backend", ["torch", "compiled"])
@pytest.mark.parametrize("mode", ["sequential", "summed"])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("kind", ["pcm", "jump-table"])
def test_pair_replicas_equal_separate_tiles_when_every_slot_fires(kind, batch, mode, backend):
    # Deterministic: no pulse-to-pulse noise and trains that fire in every slot, so the replicas
    # and the separate tiles (same configs and seeds: same devices, same start) take the same
    # pulses; the refresh (on, deterministic without noise) runs in both.
    if backend == "compiled":
        pytest.importorskip("numba")
    from insitu.update import PulseUpdateConfig
    from insitu.update.kernels import use_backend

    pair = _noise_free(_pairs()[kind]).replace(refresh_every=2, refresh_threshold=0.3)
    config = TileConfig(device=pair, update=PulseUpdateConfig(mode=mode, bl=5))
    seeds, shape = [3, 4, 5], (4, 6)
    g = torch.Generator().manual_seed(batch)
    x, d = _signs((3, batch, shape[1]), g), _signs((3, batch, shape[0]), g)
    start = (torch.rand(3, *shape, generator=g) - 0.5) * 0.6
    lr = 2.0 * config.update.bl * pair.nominal_step  # Cx = Cd = sqrt(2) > 1 for |x| = |δ| = 1
    with use_backend(backend):
        replicas = ReplicatedTile(*shape, [config] * 3, seeds=seeds)
        replicas.set_weights(start)
        for _ in range(6):
            replicas.stash(x, d)
            replicas.update(lr)
        for r, seed in enumerate(seeds):
            alone = AnalogTile(*shape, config, seed=seed)
            alone.set_weights(start[r])
            for _ in range(6):
                alone.stash(x[r], d[r])
                alone.update(lr)
            model = alone.device_model
            torch.testing.assert_close(replicas.weight[r], alone.weight, rtol=0, atol=1e-6)
            torch.testing.assert_close(
                _state_planes(model, replicas.device_params[:, r]), _state_planes(model, alone.device_params), rtol=0, atol=1e-6
            )
            assert float(replicas.counters.coincidences[r]) == alone.counters.coincidences > 0
    refreshes = model.plane(replicas.device_params, "refreshes")
    assert float(refreshes.sum()) > 0  # the refresh ran (and agreed)
    assert ("stacked_stateful" in replicas._kernel_cache) == (backend == "compiled" and mode == "sequential")


@pytest.mark.parametrize("mode, backend", [("sequential", "torch"), ("sequential", "compiled"), ("summed", "torch")])
def test_pair_replicas_have_the_distribution_of_separate_tiles(mode, backend):
    # With pulse-to-pulse noise and random trains: many replicas of one array against as many
    # separate updates of it (the replicas draw from the shared generator or their own streams).
    if backend == "compiled":
        pytest.importorskip("numba")
    from _distribution import assert_same_distribution

    from insitu.update.kernels import use_backend

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 8, generator=g) * 2 - 1
    d = (torch.rand(2, 6, generator=g) * 2 - 1) * 0.5
    config = rpu(mode=mode).replace(device=_pairs()["pcm"])
    draws = 300
    with use_backend(backend):
        lockstep = _weight_changes(True, config, x, d, draws)
        separate = _weight_changes(False, config, x, d, draws)
    assert_same_distribution(lockstep, separate, draws, moved=separate.var(0) > 0)


@pytest.mark.parametrize("backend", ["torch", "compiled"])
@pytest.mark.parametrize("kind", ["pcm", "jump-table"])
def test_every_pair_replica_keeps_its_weight_the_read_of_its_state_through_refreshes(kind, backend):
    # Noisy pulses of both signs at a large learning rate fill both devices of most pairs until
    # they saturate; the refresh (after every update) then RESETs and reprograms them.
    if backend == "compiled":
        pytest.importorskip("numba")
    from insitu.update.kernels import use_backend

    pair = _pairs()[kind].replace(refresh_every=1)
    configs = [rpu().replace(device=pair), rpu(bl=20).replace(device=pair), rpu().replace(device=pair)]
    tile = ReplicatedTile(5, 7, configs, seeds=[1, 2, 3])
    model = tile.device_model
    g = torch.Generator().manual_seed(4)
    with use_backend(backend):
        for _ in range(40):
            tile.stash(torch.rand(3, 2, 7, generator=g) * 2 - 1, torch.rand(3, 2, 5, generator=g) * 2 - 1)
            tile.update(0.5)
            torch.testing.assert_close(tile.weight.detach(), model.read(tile.device_params), rtol=0, atol=1e-6)
    params = tile.device_params
    for r in range(3):
        assert float(model.plane(params, "refreshes")[r].sum()) > 0, r  # every replica was refreshed
        assert torch.all(tile.weight[r] <= model.plane(params, "w_max")[r] + 1e-6)
        assert torch.all(tile.weight[r] >= model.plane(params, "w_min")[r] - 1e-6)
    assert ("stacked_stateful" in tile._kernel_cache) == (backend == "compiled")


@pytest.mark.parametrize("backend", ["torch", "compiled"])
@pytest.mark.parametrize("preset", ["pcm-pair-2016-io", "jump-table-pair-2016-io"])
def test_a_replicated_mlp_trains_with_a_pair_preset(preset, backend):
    if backend == "compiled":
        pytest.importorskip("numba")
    from insitu.models import mlp
    from insitu.update.kernels import use_backend

    n_rep, sizes = 3, (10, 8, 3)
    config = get_preset(preset)
    model = mlp(sizes, "sigmoid", [config] * n_rep, seeds=[[0, 1, 2], [3, 4, 5]])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_rep, 16, sizes[0], generator=g)
    y = torch.randint(0, sizes[-1], (n_rep, 16), generator=g)
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = AnalogSGD(model.parameters(), lr=0.5)

    def loss():
        with torch.no_grad():
            return float(loss_fn(model(x).flatten(0, 1), y.flatten()))

    start = loss()
    tiles = [layer.tile for layer in model if hasattr(layer, "tile")]
    before = [tile.weight.detach().clone() for tile in tiles]
    with use_backend(backend):
        for step in range(60):
            batch = slice(step % 4 * 4, step % 4 * 4 + 4)
            loss_fn(model(x[:, batch]).flatten(0, 1), y[:, batch].flatten()).backward()
            optimizer.step()
            optimizer.zero_grad()
    assert loss() < start
    for tile, weight in zip(tiles, before):
        assert tile.replicas == n_rep
        assert torch.equal(tile.weight.detach(), tile.device_model.read(tile.device_params))
        assert bool((tile.counters.coincidences > 0).all())
        assert all(not torch.equal(tile.weight[r], weight[r]) for r in range(n_rep))
        assert ("stacked_stateful" in tile._kernel_cache) == (backend == "compiled")


def test_pair_replicas_share_one_pair_config_and_keep_the_pairs_refusals():
    from insitu.update import PulseUpdateConfig

    pair = _pairs()["pcm"]
    assert lockstep_conflict([rpu().replace(device=pair), rpu(bl=20).replace(device=pair)]) is None  # BL may differ
    message = lockstep_conflict([TileConfig(device=pair), TileConfig(device=pair.replace(w_max=0.8))])
    assert "tile.device.w_max" in message and "per_device_state" in message
    with pytest.raises(ConfigError, match="tile.device.device"):
        ReplicatedTile(3, 2, [TileConfig(device=pair), TileConfig(device=_noise_free(pair))])
    # What a pair refuses alone it refuses in lockstep: its config cannot be built.
    for update in (PulseUpdateConfig(mode="batched"), PulseUpdateConfig(pulse_type="expected")):
        with pytest.raises(ConfigError, match="per_device_state"):
            TileConfig(device=pair, update=update)


# -- learning-rule cells in lockstep (issue 17) -------------------------------------------------
def _noise_free_rule_tile(spec: str, **device) -> TileConfig:
    """The 2016 tile with a learning-rule cell and no draw during training: expected pulses for
    the gradient's writes (and TTv1's transfer writes), no cycle-to-cycle noise for whole-pulse
    writes, noise-free reads, regular chopper flips; the devices still vary device to device."""
    from insitu.cells import cell_from_spec

    base = deterministic(rpu())
    cell = cell_from_spec(spec)
    if hasattr(cell, "transfer_io"):
        cell = cell.replace(
            transfer_io=cell.transfer_io.replace(out_noise=0.0),
            transfer_update=cell.transfer_update.replace(pulse_type="expected"),
        )
    return base.replace(device=base.device.replace(dw_min_std=0.0, **device), cell=cell)


RULE_SPECS = ["tiki-taka:transfer_lr=5", "ttv2:transfer_lr=5", "c-ttv2:transfer_lr=5,in_chop_random=false,in_chop_prob=0.2,gamma=0.1", "agad:transfer_lr=5", "mp"]


@pytest.mark.parametrize("spec", RULE_SPECS)
def test_each_rule_replica_starts_with_the_cell_of_a_layer_with_its_seed(spec):
    from insitu.cells import cell_from_spec

    base = get_preset("gokmen-vlasov-2016").replace(cell=cell_from_spec(spec))
    configs = [base, base.replace(device=base.device.replace(dw_min=0.002), update=base.update.replace(bl=20))]
    layer = AnalogLinear(6, 4, config=configs, seed=[3, 4])
    for r, (config, seed) in enumerate(zip(configs, (3, 4))):
        alone = AnalogLinear(6, 4, config=config, seed=seed)
        assert torch.equal(layer.tile.effective_weights()[r], alone.tile.effective_weights())
        for name, buffer in alone.tile.cell._buffers.items():  # e.g. the slow array and its devices
            if buffer is not None:
                assert torch.equal(layer.tile.cell_state._buffers[name][r], buffer), name
                # replica r's cell sees its slice of the stacked buffer, not a copy
                assert layer.tile.replica_cell(r)._buffers[name].data_ptr() == layer.tile.cell_state._buffers[name][r].data_ptr()


@pytest.mark.parametrize("spec", RULE_SPECS)
def test_deterministic_lockstep_rules_train_as_separate_runs(tmp_path, spec):
    tiles = [_noise_free_rule_tile(spec), _noise_free_rule_tile(spec, dw_min=0.002, w_max=0.4)]
    configs = [TrainConfig(**_digits(), seed=s, tile=t) for s, t in zip((0, 1), tiles)]
    together = run_lockstep(configs, [tmp_path / f"r{k}" for k in range(2)], log=lambda line: None)
    for result, alone in _match_separate_runs(tmp_path, configs, together):
        for name, counts in alone["counters"].items():  # the cells' own counters, per replica
            mine = result["counters"][name]
            for key in ("rank1_updates", "steps", "transfer_reads", "transfers", "digital_macs"):
                if key in counts:
                    assert mine[key] == counts[key], (name, key)
            assert mine["pulses"] == pytest.approx(counts["pulses"], rel=1e-4)
            for key in ("transfer_pulses",):
                if key in counts:
                    assert mine[key] == pytest.approx(counts[key], rel=0.02, abs=2), (name, key)


def test_stochastic_rule_replicas_learn_and_their_state_round_trips():
    from insitu.cells import cell_from_spec
    from insitu.models import mlp

    base = get_preset("gokmen-vlasov-2016").replace(cell=cell_from_spec("c-ttv2:transfer_lr=10,in_chop_prob=0.1"))
    configs = [base, base.replace(device=base.device.replace(dw_min=0.002))]
    model = mlp((10, 8, 3), "sigmoid", configs, seeds=[[0, 1], [2, 3]])
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 16, 10, generator=g), torch.randint(0, 3, (2, 16), generator=g)
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = AnalogSGD(model.parameters(), lr=0.5)

    def train(steps):
        for step in range(steps):
            batch = slice(step % 4 * 4, step % 4 * 4 + 4)
            loss_fn(model(x[:, batch]).flatten(0, 1), y[:, batch].flatten()).backward()
            optimizer.step()
            optimizer.zero_grad()

    with torch.no_grad():
        start = float(loss_fn(model(x).flatten(0, 1), y.flatten()))
    train(150)
    with torch.no_grad():
        assert float(loss_fn(model(x).flatten(0, 1), y.flatten())) < start
    tiles = [layer.tile for layer in model if hasattr(layer, "tile")]
    for tile in tiles:
        for r in range(2):
            assert tile.replica_counter_report(r)["transfer_reads"] > 0
            assert float(tile.counters.pulses[r]) == tile.counters.replica(r)["pulses"] > 0
    # A copy loaded from the state dict continues draw for draw (chopper signs, buffers, schedule).
    saved = {k: v.clone() if torch.is_tensor(v) else v for k, v in model.state_dict().items()}
    copy = mlp((10, 8, 3), "sigmoid", configs, seeds=[[0, 1], [2, 3]])
    copy.load_state_dict(saved)
    train(20)
    first = [t.effective_weights().clone() for t in tiles]
    model.load_state_dict(saved)
    train(20)
    for a, t in zip(first, tiles):
        assert torch.equal(a, t.effective_weights())


def test_rule_lockstep_refusals_name_the_cell():
    from insitu.cells import TwoPairPCMCell, cell_from_spec

    ttv2 = rpu().replace(cell=cell_from_spec("ttv2"))
    assert lockstep_conflict([ttv2, ttv2.replace(device=ttv2.device.replace(dw_min=0.002))]) is None
    message = lockstep_conflict([ttv2, ttv2.replace(cell=cell_from_spec("ttv2:transfer_lr=3"))])
    assert "tile.cell" in message and "share" in message
    assert "PCM" in lockstep_conflict([TileConfig(cell=TwoPairPCMCell())] * 2)
    with pytest.raises(ConfigError, match="tile.cell"):
        AnalogLinear(3, 2, config=[ttv2, rpu()])


def test_a_diverged_rule_replica_is_silenced_and_the_other_finishes(tmp_path, monkeypatch):
    import insitu.models as models

    configs = [TrainConfig(**_digits(), seed=s, cell="ttv2:transfer_lr=5") for s in (0, 1)]
    original = models.mlp

    def poisoned(*args, **kwargs):
        model = original(*args, **kwargs)
        with torch.no_grad():
            model[0].tile.cell_state.slow_weight[1] = float("nan")  # TTv2's visible weight is C
        return model

    monkeypatch.setattr(models, "mlp", poisoned)
    results = run_lockstep(configs, [tmp_path / "r0", tmp_path / "r1"], log=lambda line: None)
    assert results[0]["status"] == "completed" and len(results[0]["epochs"]) == 2
    assert results[0]["epochs"][-1]["test_error"] < 0.9
    assert results[1]["status"] == "diverged" and results[1]["epochs"] == []
