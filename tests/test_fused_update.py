"""The fused sequential pulse update of several tiles (insitu.update.fused, AnalogSGD(fused=...)).

It must be the per-tile sequential update in distribution, count what the per-tile path counts,
stay deterministic for a seed, resume identically, and leave tiles it does not cover to their
own update.
"""

from __future__ import annotations

import math

import pytest
import torch

from insitu import AnalogLinear, AnalogSGD
from insitu.devices import ConstantStepDevice, LinearStepDevice, SoftBoundsDevice
from insitu.models import mlp
from insitu.presets import get_preset
from insitu.tile import AnalogTile, TileConfig
from insitu.update import PulseUpdateConfig
from insitu.update.fused import can_fuse

SHAPES = ((6, 9), (5, 6), (3, 5))


@pytest.fixture(autouse=True)
def _torch_backend():
    """Fusing tiles is a layout of the torch backend (the reference, and the CUDA path); on the
    compiled backend AnalogSGD updates each tile on its own."""
    from insitu.update.kernels import use_backend

    with use_backend("torch"):
        yield  # (out, in) of three tiles, as the layers of a small MLP


def _tiles(config: TileConfig, start: float = 0.05) -> list[AnalogTile]:
    tiles = [AnalogTile(o, i, config, seed=11 + k) for k, (o, i) in enumerate(SHAPES)]
    for tile in tiles:
        tile.set_weights(torch.full((tile.out_features, tile.in_features), start))
    return tiles


def _inputs(batch: int = 1):
    g = torch.Generator().manual_seed(3)
    xs, ds = [], []
    for o, i in SHAPES:
        x = torch.rand(batch, i, generator=g) * 2 - 1
        x[:, ::3] = 0.0  # zero inputs never fire (the fused path skips their trains)
        xs.append(x)
        ds.append((torch.rand(batch, o, generator=g) * 2 - 1) * 0.6)
    return xs, ds


def _weight_changes(fused: bool, config: TileConfig, draws: int, batch: int = 1, lr: float = 0.05):
    """``draws`` independent updates of the same tiles from the same start: ΔW of each tile."""
    xs, ds = _inputs(batch)
    changes = [[] for _ in SHAPES]
    for k in range(draws):
        tiles = _tiles(config)
        for t, tile in enumerate(tiles):
            tile.manual_seed(1000 * k + t)
            tile.stash(xs[t], ds[t])
        optimizer = AnalogSGD([tile.weight for tile in tiles], lr=lr, fused=fused)
        optimizer.step()
        for t, tile in enumerate(tiles):
            changes[t].append(tile.weight.detach() - 0.05)
    return [torch.stack(c).double() for c in changes]


def _rpu(**update) -> TileConfig:
    return get_preset("gokmen-vlasov-2016").replace(update=PulseUpdateConfig(**update))


@pytest.mark.parametrize(
    "batch, management, device",
    [(1, False, None), (3, False, None), (2, True, None), (1, False, SoftBoundsDevice()), (2, False, LinearStepDevice(gamma_up=0.8)),
     (2, False, "pow-step")],
)
def test_fused_update_has_the_distribution_of_the_per_tile_update(batch, management, device):
    config = _rpu(bl=10, update_management=management)
    if device == "pow-step":  # a family with its own parameter layout and response
        from insitu.devices import PowStepDevice

        device = PowStepDevice(dw_min=0.01, dw_min_std=0.3)
    if device is not None:  # weight-dependent steps, through DeviceModel.apply_signed_pulses
        config = config.replace(device=device.replace(w_max=0.3, w_min=-0.3, dw_min=0.002))
    draws = 300
    fused = _weight_changes(True, config, draws, batch)
    separate = _weight_changes(False, config, draws, batch)
    for f, s in zip(fused, separate):
        se = torch.sqrt(f.var(0) / draws + s.var(0) / draws).clamp_min(1e-12)
        z = (f.mean(0) - s.mean(0)) / se
        assert float(z.abs().max()) < 4.5 and abs(float(z.mean())) < 4 / math.sqrt(z.numel())
        ratio = f.var(0).sum() / s.var(0).sum()
        assert 0.8 < float(ratio) < 1.25, float(ratio)
        # Devices on zero inputs never move, in either path.
        assert torch.all(f[:, :, ::3] == 0) and torch.all(s[:, :, ::3] == 0)


def test_fused_update_moves_devices_by_whole_steps_and_counts_them():
    dw = 0.01
    device = ConstantStepDevice(
        dw_min=dw, dw_min_dtod=0.0, dw_min_std=0.0, up_down=0.0, w_max=5.0, w_min=-5.0, w_max_dtod=0.0, w_min_dtod=0.0
    )
    config = TileConfig(device=device, update=PulseUpdateConfig(bl=8))
    xs, ds = _inputs(batch=2)
    tiles = _tiles(config, start=0.0)
    reference = _tiles(config, start=0.0)
    for t in range(len(SHAPES)):
        tiles[t].stash(xs[t], ds[t])
        reference[t].stash(xs[t], ds[t])
    AnalogSGD([t.weight for t in tiles], lr=0.02).step()
    AnalogSGD([t.weight for t in reference], lr=0.02, fused=False).step()
    for tile, ref in zip(tiles, reference):
        steps = tile.weight.detach() / dw
        assert torch.allclose(steps, steps.round(), atol=1e-4)  # whole coincidences only
        counters, expected = tile.counters.to_dict(), ref.counters.to_dict()
        assert counters["coincidences"] >= float(steps.abs().sum().round())  # up and down may cancel
        # Expected pulses BL Σ(p) are deterministic: both paths count the same.
        assert counters["pulses"] == pytest.approx(expected["pulses"], rel=1e-6)
        assert (counters["rank1_updates"], counters["steps"]) == (2, 1) == (expected["rank1_updates"], expected["steps"])


def test_coincidence_counter_is_the_number_of_device_steps_at_batch_1():
    dw = 0.01
    device = ConstantStepDevice(
        dw_min=dw, dw_min_dtod=0.0, dw_min_std=0.0, up_down=0.0, w_max=5.0, w_min=-5.0, w_max_dtod=0.0, w_min_dtod=0.0
    )
    tiles = _tiles(TileConfig(device=device, update=PulseUpdateConfig(bl=8)), start=0.0)
    xs, ds = _inputs(batch=1)
    for t, tile in enumerate(tiles):
        tile.stash(xs[t], ds[t])
    AnalogSGD([t.weight for t in tiles], lr=0.05).step()
    for tile in tiles:  # one sample: every device steps in one direction only
        assert tile.counters.coincidences == pytest.approx(float((tile.weight.detach() / dw).abs().sum()), abs=1e-3)
        assert tile.counters.coincidences > 0


def test_mean_of_a_fused_batch_is_minus_lr_delta_x():
    # Every device with the nominal step (no device-to-device spread) and 30 % cycle-to-cycle spread.
    device = ConstantStepDevice(dw_min_dtod=0.0, w_max=5.0, w_min=-5.0, w_max_dtod=0.0, w_min_dtod=0.0)
    config = TileConfig(device=device, update=PulseUpdateConfig(bl=10))
    draws = 300
    lr = 0.005  # Cx = Cd = sqrt(lr / (BL dw_min)) = 0.71: no probability reaches 1 (no clipping)
    xs, ds = _inputs(batch=3)
    fused = _weight_changes(True, config, draws, batch=3, lr=lr)
    for change, x, d in zip(fused, xs, ds):
        expected = -lr * (d.t() @ x).double()
        z = (change.mean(0) - expected) / (change.var(0) / draws).sqrt().clamp_min(1e-12)
        live = change.var(0) > 0
        assert torch.all(change.mean(0)[~live] == expected[~live])  # zero inputs: no update
        assert float(z[live].abs().max()) < 4.5 and abs(float(z[live].mean())) < 4 / math.sqrt(int(live.sum()))


def _train(model, optimizer, steps: int, seed: int = 0, start: int = 0):
    g = torch.Generator().manual_seed(seed)
    for i in range(start + steps):
        x = torch.rand(1, 20, generator=g)
        y = torch.randint(0, 4, (1,), generator=g)
        if i < start:
            continue
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _model(seed=0):
    return mlp((20, 16, 8, 4), "sigmoid", get_preset("gokmen-vlasov-2016"), seeds=[seed, seed + 1, seed + 2])


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_fused_training_is_deterministic_and_resumes_bit_identically():
    a, b = _model(), _model()
    _train(a, AnalogSGD(a.parameters(), lr=0.1), 200)
    _train(b, AnalogSGD(b.parameters(), lr=0.1), 200)
    assert all(torch.equal(u, v) for u, v in zip(_weights(a), _weights(b)))
    # Interrupted after 120 steps, restored into a fresh model and optimizer, continued.
    c = _model()
    _train(c, AnalogSGD(c.parameters(), lr=0.1), 120)
    state = c.state_dict()
    d = _model(seed=7)  # other devices: the state must bring them back
    d.load_state_dict(state)
    _train(d, AnalogSGD(d.parameters(), lr=0.1), 80, start=120)
    assert all(torch.equal(u, v) for u, v in zip(_weights(a), _weights(d)))
    counters_a = [m.counters.to_dict() for m in a.modules() if isinstance(m, AnalogTile)]
    counters_d = [m.counters.to_dict() for m in d.modules() if isinstance(m, AnalogTile)]
    for ca, cd in zip(counters_a, counters_d):
        assert ca["rank1_updates"] == cd["rank1_updates"] == 200
        assert ca["coincidences"] == pytest.approx(cd["coincidences"])
        assert ca["pulses"] == pytest.approx(cd["pulses"], rel=1e-9)


def test_fused_and_per_tile_training_reach_the_same_loss():
    losses = {}
    for fused in (True, False):
        model = mlp((20, 16, 4), "tanh", get_preset("gokmen-vlasov-2016"), seeds=[0, 1])
        optimizer = AnalogSGD(model.parameters(), lr=0.05, fused=fused)
        g = torch.Generator().manual_seed(5)
        centers = torch.rand(4, 20, generator=g)
        total = 0.0
        for i in range(1500):
            y = torch.randint(0, 4, (1,), generator=g)
            x = (centers[y] + 0.1 * torch.randn(1, 20, generator=g)).clamp(0, 1)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            if i >= 1000:
                total += float(loss.detach())
        losses[fused] = total / 500
    # Four noisy clusters: from ln 4 = 1.39 to about 0.05 in 1,500 samples (one seed each).
    assert losses[True] < 0.15 and losses[False] < 0.15
    assert abs(losses[True] - losses[False]) < 0.05


def test_which_tiles_are_fused():
    rpu = get_preset("gokmen-vlasov-2016")
    assert can_fuse(AnalogTile(3, 4, rpu))
    assert can_fuse(AnalogTile(3, 4, rpu.replace(update=rpu.update.replace(update_management=True))))
    assert can_fuse(AnalogTile(3, 4, rpu.replace(device=SoftBoundsDevice())))
    not_covered = [
        rpu.replace(update=rpu.update.replace(update_management=True, dynamic_bl=True)),
        rpu.replace(update=rpu.update.replace(mode="batched")),
        rpu.replace(update=rpu.update.replace(pulse_type="expected")),
        rpu.replace(devices_per_weight=2),
        get_preset("floating-point"),
    ]
    for config in not_covered:
        assert not can_fuse(AnalogTile(3, 4, config)), config
    masked = AnalogTile(3, 4, rpu)
    masked.set_connection_mask(torch.rand(3, 4) > 0.5)
    assert not can_fuse(masked)


def test_tiles_not_covered_keep_their_own_update_beside_fused_ones():
    rpu = get_preset("gokmen-vlasov-2016")
    managed = rpu.replace(update=rpu.update.replace(update_management=True, dynamic_bl=True))
    layers = [AnalogLinear(10, 8, config=rpu, seed=1), AnalogLinear(8, 6, config=managed, seed=2), AnalogLinear(6, 3, config=rpu, seed=3)]
    model = torch.nn.Sequential(layers[0], torch.nn.Sigmoid(), layers[1], torch.nn.Sigmoid(), layers[2])
    start = [layer.tile.get_weights() for layer in layers]
    optimizer = AnalogSGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.rand(2, 10, generator=g)), torch.tensor([0, 2])).backward()
        optimizer.step()
    for layer, w0 in zip(layers, start):
        assert layer.tile.counters.steps == 30 and layer.tile.counters.rank1_updates == 60
        assert not torch.equal(layer.tile.get_weights(), w0)
        assert not layer.tile._pending


def test_reloaded_device_parameters_are_used_by_a_cached_fused_update():
    tiles = _tiles(_rpu(bl=10))
    optimizer = AnalogSGD([t.weight for t in tiles], lr=0.05)
    xs, ds = _inputs()
    for t, tile in enumerate(tiles):
        tile.stash(xs[t], ds[t])
    optimizer.step()
    # Devices that cannot move any more (steps 0), loaded in place as load_state_dict does.
    for tile in tiles:
        tile.device_params[:2].zero_()
    before = [t.weight.detach().clone() for t in tiles]
    for t, tile in enumerate(tiles):
        tile.stash(xs[t], ds[t])
    optimizer.step()
    assert all(torch.equal(t.weight.detach(), b) for t, b in zip(tiles, before))


def test_fused_option_is_validated():
    with pytest.raises(ValueError, match="fused"):
        AnalogSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, fused="yes")


def test_devices_without_coincidences_do_not_move_at_all():
    # Weights at exactly 0 show any spurious change; with 30 % cycle-to-cycle noise a device with
    # n >= 1 coincidences moves by dw (n + 0.3 sqrt(n) ξ), far from zero but for |ξ| > 3.
    tiles = _tiles(_rpu(bl=10), start=0.0)
    xs, ds = _inputs(batch=1)
    for t, tile in enumerate(tiles):
        tile.stash(xs[t], ds[t])
    AnalogSGD([t.weight for t in tiles], lr=0.05).step()
    changes = torch.cat([t.weight.detach().flatten() for t in tiles])
    assert int((changes != 0).sum()) > 20
    assert int(((changes != 0) & (changes.abs() < 1e-6)).sum()) == 0


def test_batches_of_different_sizes_share_one_fused_update():
    tiles = _tiles(_rpu(bl=10))
    optimizer = AnalogSGD([t.weight for t in tiles], lr=0.05)
    for batch in (3, 1, 2):
        xs, ds = _inputs(batch)
        for t, tile in enumerate(tiles):
            tile.stash(xs[t], ds[t])
        optimizer.step()
    assert len(optimizer._fused_updates) == 1
    assert all(t.counters.rank1_updates == 6 and t.counters.steps == 3 for t in tiles)
    # Tiles with different numbers of pending samples are not fused together, yet all update.
    xs, ds = _inputs(2)
    tiles[0].stash(xs[0][:1], ds[0][:1])
    for t in (1, 2):
        tiles[t].stash(xs[t], ds[t])
    optimizer.step()
    assert [t.counters.rank1_updates for t in tiles] == [7, 8, 8]
