"""The pulse-update engine: the compiled CPU backend against the PyTorch reference.

The compiled kernels (insitu.update.kernels) must be the torch update in distribution for every
layout they serve (single tile, batches, update management, dynamic BL, multi-device cells,
weight-dependent steps), count what it counts, be deterministic for a seed, resume bit for bit
from a state_dict, and not depend on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from insitu import AnalogLinear, AnalogSGD
from insitu.devices import LinearStepDevice, SoftBoundsDevice
from insitu.models import mlp
from insitu.presets import get_preset
from insitu.tile import AnalogTile, TileConfig
from insitu.update import PulseUpdateConfig
from insitu.update.kernels import select_backend, set_backend, use_backend

pytest.importorskip("numba")

from _distribution import assert_same_counts, assert_same_distribution  # noqa: E402

OUT, IN = 7, 11


def _config(device=None, cell: int = 1, readout: str = "mean", **update) -> TileConfig:
    config = get_preset("gokmen-vlasov-2016").replace(update=PulseUpdateConfig(**update))
    if device is not None:
        config = config.replace(device=device)
    return config.replace(devices_per_weight=cell, cell_readout=readout)


def _inputs(batch: int):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(batch, IN, generator=g) * 2 - 1
    x[:, ::4] = 0.0  # lines that never fire
    d = (torch.rand(batch, OUT, generator=g) * 2 - 1) * 0.5
    return x, d


def _changes(backend: str, config: TileConfig, draws: int, batch: int, lr: float = 0.05):
    """``draws`` updates of a fresh tile from the same devices and start: the weight changes and
    the pulse and coincidence counts."""
    x, d = _inputs(batch)
    changes, pulses, coincidences = [], [], []
    with use_backend(backend):
        for k in range(draws):
            tile = AnalogTile(OUT, IN, config, seed=3)  # the same devices every draw
            tile.set_weights(torch.full((OUT, IN), 0.05))
            start = tile.weight.detach().clone()
            tile.manual_seed(100 + k)  # another draw of the same devices
            tile.stash(x, d)
            tile.update(lr)
            changes.append((tile.weight.detach() - start).double())
            pulses.append(tile.counters.pulses)
            coincidences.append(tile.counters.coincidences)
    return torch.stack(changes), np.array(pulses), np.array(coincidences)


LAYOUTS = {
    "batch 1": (dict(), 1),
    "batch 4": (dict(), 4),
    "update management": (dict(update_management=True), 3),
    "dynamic BL": (dict(update_management=True, dynamic_bl=True, bl=31), 2),
    "long train (BL 100, two words)": (dict(bl=100), 1),
    "3 devices per weight": (dict(cell=3), 2),
    "2 devices, summed readout": (dict(cell=2, readout="sum"), 2),
    "soft bounds": (dict(device=SoftBoundsDevice(w_max=0.3, w_min=-0.3, dw_min=0.002)), 2),
    "linear step": (dict(device=LinearStepDevice(gamma_up=0.8, dw_min=0.002)), 2),
}


def _backends_agree(options: dict, batch: int, mode: str = "sequential", draws: int = 250) -> None:
    """The compiled and the torch update of the layout ``options`` agree in distribution, and
    their pulses (counted as their expected number: the same in both, to rounding) and
    coincidences agree."""
    update = {k: v for k, v in options.items() if k in ("update_management", "dynamic_bl", "bl")}
    config = _config(options.get("device"), options.get("cell", 1), options.get("readout", "mean"), mode=mode, **update)
    compiled, c_pulses, c_coinc = _changes("compiled", config, draws, batch)
    reference, t_pulses, t_coinc = _changes("torch", config, draws, batch)
    assert_same_distribution(compiled, reference, draws)
    assert_same_counts(c_pulses, t_pulses, c_coinc, t_coinc, draws)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_compiled_update_has_the_distribution_of_the_torch_update(layout):
    _backends_agree(*LAYOUTS[layout])


SUMMED_LAYOUTS = {
    "batch 6": (dict(), 6),
    "update management, dynamic BL": (dict(update_management=True, dynamic_bl=True, bl=31), 5),
    "2 devices per weight": (dict(cell=2), 4),
    "soft bounds": (dict(device=SoftBoundsDevice(w_max=0.3, w_min=-0.3, dw_min=0.002)), 6),
    "linear step": (dict(device=LinearStepDevice(gamma_up=0.8, dw_min=0.002)), 4),
}


@pytest.mark.parametrize("layout", sorted(SUMMED_LAYOUTS))
def test_compiled_summed_mode_has_the_distribution_of_the_torch_summed_mode(layout):
    # The compiled summed kernel counts each device's up and down coincidences over the batch and
    # applies them as DeviceModel.apply_mixed does (steps at the weight before the batch).
    _backends_agree(*SUMMED_LAYOUTS[layout], mode="summed")


def test_the_summed_kernel_runs_where_the_model_has_a_mixed_response_and_leaves_the_rest_to_torch():
    from insitu.devices import PowStepDevice
    from insitu.update.pulse import _compiled_plan

    for device, compiled in ((None, True), (SoftBoundsDevice(), True), (PowStepDevice(), False)):
        tile = AnalogTile(OUT, IN, _config(device, mode="summed"), seed=1)
        plan = _compiled_plan(None, tile.weight, tile.device_params, tile.device_model, tile.pulse_rng, "summed")
        assert (plan is not None) == compiled
        x, d = _inputs(3)
        tile.stash(x, d)
        tile.update(0.05)  # the torch summed mode takes the power step
        assert tile.counters.coincidences > 0


def test_expected_update_of_the_compiled_kernel():
    """Mean weight change at batch 3, far from the bounds: -lr Σ δ xᵀ (the definition of Cx Cd)."""
    config = _config(bl=20)
    draws = 400
    compiled, _, _ = _changes("compiled", config, draws, 3, lr=0.02)
    x, d = _inputs(3)
    # Each device's own step scales its change: compare with the mean step of the devices drawn.
    tile = AnalogTile(OUT, IN, config, seed=3)
    up, down = tile.device_model.plane(tile.device_params, "dw_up"), tile.device_model.plane(tile.device_params, "dw_down")
    target = -0.02 * (d.t() @ x).double()
    expected_per_unit = torch.where(target > 0, up, down).double() / config.device.dw_min
    mean = compiled.mean(0)
    se = compiled.std(0) / math.sqrt(draws) + 1e-9
    z = (mean - target * expected_per_unit) / se
    assert float(z.abs().max()) < 5, float(z.abs().max())


def _train(model, steps: int, seed: int, batch: int = 1):
    g = torch.Generator().manual_seed(seed)
    optimizer = AnalogSGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        x = torch.rand(batch, 12, generator=g)
        y = torch.randint(0, 3, (batch,), generator=g)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return optimizer


def _model(seed: int):
    torch.manual_seed(seed)
    return mlp((12, 8, 3), "sigmoid", get_preset("gokmen-vlasov-2016"))


def test_compiled_training_is_deterministic_and_depends_on_the_seed():
    with use_backend("compiled"):
        a, b, c = _model(0), _model(0), _model(1)
        for model in (a, b):
            _train(model, 30, seed=9)
        _train(c, 30, seed=9)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].tile.weight, c[0].tile.weight)


def test_compiled_training_resumes_bit_identically_from_a_state_dict():
    with use_backend("compiled"):
        straight = _model(0)
        _train(straight, 20, seed=9)
        state = {k: v.clone() if torch.is_tensor(v) else v for k, v in straight.state_dict().items()}
        _train(straight, 15, seed=10)
        resumed = _model(7)  # other devices and weights, replaced by the loaded state
        resumed.load_state_dict(state)
        _train(resumed, 15, seed=10)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        if torch.is_tensor(a):
            assert torch.equal(a, b)
    # Counters continue too (the expected-pulse sums to rounding: they are summed in another grouping).
    a, b = straight[0].tile.counters.to_dict(), resumed[0].tile.counters.to_dict()
    assert a == {**b, "pulses": pytest.approx(a["pulses"], rel=1e-12)}


def test_compiled_results_do_not_depend_on_the_number_of_threads():
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with use_backend("compiled"):
                model = _model(0)
                _train(model, 10, seed=3, batch=4)
            results.append([p.detach().clone() for p in model.parameters()])
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_device_protocol_is_the_same_on_both_backends():
    """100x100 tile at full coincidence (p = 1 on every line): 200 down then 200 up pulses.
    The devices are the same (same seed); mean and spread across devices agree within 1 %."""
    config = _config(bl=1)
    dw_min = config.device.dw_min
    ones_x, ones_d = torch.ones(1, 100), torch.ones(1, 100)
    stats = {}
    for backend in ("compiled", "torch"):
        with use_backend(backend):
            tile = AnalogTile(100, 100, config, seed=21)
            tile.set_weights(torch.zeros(100, 100))
            trace = []
            for sign in [1.0] * 200 + [-1.0] * 200:  # δ = x: down first (ΔW = -lr δ xᵀ)
                tile.stash(ones_x, sign * ones_d)
                tile.update(dw_min)  # Cx = Cd = 1: one coincidence per device and update
                trace.append(tile.weight.detach().clone())
            assert tile.counters.coincidences == 400 * 100 * 100
        low, end = trace[199], trace[-1]
        stats[backend] = torch.tensor([low.mean(), low.std(), end.mean(), end.std()])
    compiled, reference = stats["compiled"], stats["torch"]
    scale = torch.tensor([reference[0].abs(), reference[1], reference[1], reference[3]])
    assert torch.all((compiled - reference).abs() <= 0.01 * scale), (compiled, reference)


def test_backend_selection():
    assert select_backend(torch.device("cuda")) == "torch"
    with use_backend("torch"):
        assert select_backend(torch.device("cpu")) == "torch"
    with use_backend("compiled"):
        assert select_backend(torch.device("cpu")) == "compiled"
    with pytest.raises(ValueError, match="backend must be one of"):
        set_backend("fortran")


def test_analog_layers_train_on_the_compiled_backend():
    """A small analog network learns a separable task through the compiled update."""
    g = torch.Generator().manual_seed(0)
    centers = torch.rand(3, 12, generator=g)
    with use_backend("compiled"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(AnalogLinear(12, 3, config=get_preset("gokmen-vlasov-2016")))
        optimizer = AnalogSGD(model.parameters(), lr=0.02)
        losses = []
        for step in range(600):
            y = torch.randint(0, 3, (1,), generator=g)
            x = centers[y] + 0.05 * torch.randn(1, 12, generator=g)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    assert np.mean(losses[-100:]) < 0.6 * np.mean(losses[:100])  # 0.43 vs 0.91 when written


@pytest.mark.parametrize("backend", ["compiled", "torch"])
@pytest.mark.parametrize(
    "layout",
    ["update management + dynamic BL", "soft bounds", "linear step, per-replica BL and step"],
)
def test_stacked_replicas_have_the_distribution_of_separate_tiles(backend, layout):
    """The replica layout (a leading axis, one update for all) against separate tiles, for the
    settings the replica path handles on its own: update management, dynamic BL, weight-dependent
    steps, and replicas that differ in BL and step."""
    from insitu.replicas import ReplicatedTile

    if layout == "update management + dynamic BL":
        configs = [_config(update_management=True, dynamic_bl=True, bl=31)] * 2
    elif layout == "soft bounds":
        configs = [_config(SoftBoundsDevice(w_max=0.3, w_min=-0.3, dw_min=0.002), bl=10)] * 2
    else:
        configs = [
            _config(LinearStepDevice(gamma_up=0.8, dw_min=0.002), bl=10),
            _config(LinearStepDevice(gamma_up=0.8, dw_min=0.004), bl=5),
        ]
    x, d = _inputs(2)
    draws = 200
    with use_backend(backend):
        replicated = []
        for k in range(draws):
            tile = ReplicatedTile(OUT, IN, configs, seeds=[3, 4])
            tile.set_weights(torch.full((2, OUT, IN), 0.05))
            start = tile.weight.detach().clone()
            tile.manual_seed(500 + k)
            tile.stash(x.expand(2, *x.shape), d.expand(2, *d.shape))
            tile.update(0.05)
            replicated.append((tile.weight.detach() - start).double())
        replicated = torch.stack(replicated)
        for r, (config, seed) in enumerate(zip(configs, [3, 4])):
            separate = []
            for k in range(draws):
                tile = AnalogTile(OUT, IN, config, seed=seed)
                tile.set_weights(torch.full((OUT, IN), 0.05))
                start = tile.weight.detach().clone()
                tile.manual_seed(900 + k)
                tile.stash(x, d)
                tile.update(0.05)
                separate.append((tile.weight.detach() - start).double())
            separate = torch.stack(separate)
            mine = replicated[:, r]
            se = torch.sqrt(mine.var(0) / draws + separate.var(0) / draws).clamp_min(1e-12)
            z = (mine.mean(0) - separate.mean(0)) / se
            assert float(z.abs().max()) < 4.8, float(z.abs().max())
            ratio = float(mine.var(0).sum() / separate.var(0).sum())
            assert 0.8 < ratio < 1.25, ratio


def test_a_deep_copy_trains_on_its_own_tensors():
    """The compiled path keeps numpy views of a tile's tensors; a copied model must write into
    its own tensors (not the original's) and continue as the original does."""
    import copy

    with use_backend("compiled"):
        original = _model(0)
        _train(original, 5, seed=1)
        before = original[0].tile.weight.detach().clone()
        twin = copy.deepcopy(original)
        _train(twin, 5, seed=2)
        assert torch.equal(original[0].tile.weight, before)  # untouched by the copy's training
        _train(original, 5, seed=2)
    assert torch.equal(original[0].tile.weight, twin[0].tile.weight)


def test_the_kernel_normals_are_standard_normal_and_seeded():
    """The ziggurat of the compiled kernels: moments, tails (through the slow paths) and the
    distribution (Kolmogorov-Smirnov), the bulk filler equal to single draws, seeds separate."""
    from numba import njit
    from scipy import stats

    from insitu.update.kernels.rng import fill_normals, normal
    from insitu.update.kernels.rng_state import as_views, new_state

    @njit
    def one_by_one(n, s, spare):
        out = np.empty(n)
        for k in range(n):
            out[k] = normal(s, spare)
        return out

    n = 400_000
    bulk = np.empty(n)
    fill_normals(bulk, *as_views(new_state(11)))
    single = one_by_one(n, *as_views(new_state(11)))
    assert np.array_equal(bulk, single)
    assert abs(bulk.mean()) < 5 / math.sqrt(n) and abs(bulk.var() - 1) < 5 * math.sqrt(2 / n)
    assert stats.kstest(bulk, "norm").pvalue > 1e-3
    tail = 2 * stats.norm.sf(3.442619855899)  # beyond the ziggurat's base: the tail sampler
    assert abs((np.abs(bulk) > 3.442619855899).mean() - tail) < 5 * math.sqrt(tail / n)
    other = np.empty(n)
    fill_normals(other, *as_views(new_state(12)))
    assert not np.array_equal(bulk, other)


def test_the_lane_normals_are_standard_normal_independent_and_seeded():
    """The sequential kernels' cycle-to-cycle normals (Box-Muller in float32 vector lanes,
    :func:`insitu.update.kernels.rng.fill_lane_normals`): moments, the distribution
    (Kolmogorov-Smirnov), tail probabilities out to 4.5 sigma, no correlation within a pair or
    between neighbours, an odd length filled, the same lanes giving the same normals."""
    from scipy import stats

    from insitu.update.kernels.rng import fill_lane_normals, lane_normal_draws, load_lanes
    from insitu.update.kernels.rng_state import as_views, new_state

    def draw(seed, n):
        lanes = load_lanes(as_views(new_state(seed))[0])
        out = np.full(n, np.nan, dtype=np.float32)
        fill_lane_normals(out, np.empty(lane_normal_draws(n), dtype=np.uint64), lanes)
        return out.astype(np.float64)

    n = 2_000_001  # odd: the last pair gives one normal
    z = draw(11, n)
    assert np.isfinite(z).all()
    assert abs(z.mean()) < 5 / math.sqrt(n) and abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / n) and abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    for k in (2.0, 3.0, 4.0, 4.5):
        p = 2 * stats.norm.sf(k)
        assert abs((np.abs(z) > k).mean() - p) < 5 * math.sqrt(p / n) + 1 / n, k
    half = n // 2  # a pair's two normals are z[t] and z[half + t]
    for a, b in ((z[:half], z[half : 2 * half]), (z[:-1], z[1:])):
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(half)
        assert abs(np.corrcoef(a * a, b * b)[0, 1]) < 5 / math.sqrt(half)  # a shared radius would correlate these
    assert np.array_equal(draw(11, 1000), draw(11, 1000))
    assert not np.array_equal(draw(11, 1000), draw(12, 1000))


def test_the_lane_normals_are_finite_at_every_edge_of_their_uniform():
    """The words next to each power of two, where converting the 31-bit word to float32 could
    round up to the next power (a uniform of 1 and a NaN radius, once in 3e7 normals before the
    fix): every normal finite, the radius at most sqrt(64 ln 2) = 6.66."""
    from insitu.update.kernels.rng import _normal_pair

    for power in range(32):
        for high in range((1 << power) - 130, (1 << power) + 130):
            if not 0 <= high < 1 << 31:
                continue
            for b in (0, 0x7FFFFF, 0x3F3504F3, 0xFFFFFFFF):
                first, second = _normal_pair(np.uint32(high << 1), np.uint32(b), np.uint32(0x2A5A5A))
                assert math.isfinite(first) and math.isfinite(second), (high, b)
                assert math.hypot(first, second) <= math.sqrt(64 * math.log(2)) * (1 + 1e-6), (high, b)


def test_the_train_lanes_are_uniform_seeded_and_saved_in_the_state():
    """The 16-lane stream of the pulse trains: its 32-bit halves are uniform and uncorrelated
    between neighbours (the order the trains read them), the lanes are distinct streams, the
    state is seeded and written back."""
    from numba import njit
    from scipy import stats

    from insitu.update.kernels.rng import LANES, fill_uniforms, load_lanes, store_lanes
    from insitu.update.kernels.rng_state import as_views, new_state

    @njit
    def draw(s, n):
        out = np.empty(n, dtype=np.uint64)
        lanes = load_lanes(s)
        fill_uniforms(out, lanes)
        store_lanes(lanes, s)
        return out

    state = new_state(11)
    words, _ = as_views(state)
    first = draw(words, 64_000)
    halves = first.view(np.uint32) / 2.0**32
    assert stats.kstest(halves, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(halves[:-1], halves[1:])[0, 1]) < 5 / math.sqrt(halves.size)
    lanes = first.reshape(-1, LANES)
    assert len({tuple(lanes[:8, k]) for k in range(LANES)}) == LANES  # 16 different streams
    again = draw(as_views(new_state(11))[0], 64_000)
    assert np.array_equal(first, again)  # seeded
    assert not np.array_equal(draw(words, 64_000), first)  # the state moved on


def test_a_state_saved_before_the_train_lanes_loads_and_resumes():
    """Checkpoints from before the lanes hold 6 entries per stream: they load (scalar stream and
    spare kept, lanes seeded from them) and training continues deterministically."""
    from insitu.update.kernels.rng_state import STATE_SIZE, upgrade

    with use_backend("compiled"):
        model = _model(0)
        _train(model, 5, seed=9)
        state = {k: v.clone() if torch.is_tensor(v) else v for k, v in model.state_dict().items()}
        key = next(k for k in state if k.endswith("tile._extra_state"))
        extra = dict(state[key])
        new = extra["pulse_rng"]
        old = torch.cat([new[:5], new[-1:]])  # the layout saved before: s0..s3, flag, spare
        extra["pulse_rng"] = old
        state[key] = extra
        runs = []
        for _ in range(2):
            resumed = _model(3)
            resumed.load_state_dict(state)
            loaded = resumed[0].tile.pulse_rng
            assert loaded.shape == (STATE_SIZE,) and torch.equal(loaded[:5], old[:5]) and loaded[-1] == old[-1]
            _train(resumed, 5, seed=10)
            runs.append(resumed[0].tile.weight.detach().clone())
    assert torch.equal(*runs)
    assert torch.equal(upgrade(torch.stack([old, old]))[1], upgrade(old))  # replica stacks too
    with pytest.raises(ValueError, match="entries"):
        upgrade(torch.zeros(7, dtype=torch.int64))


def test_row_trains_only_in_the_slots_a_column_fired_keep_the_coincidence_statistics():
    """Rows are drawn only in the slots where some column fired. A device's coincidences stay
    Binomial(BL, p_col p_row): mean and variance over many updates of one column and one row."""
    config = _config(bl=8)
    p_col, p_row = 0.3, 0.6
    counts = []
    with use_backend("compiled"):
        tile = AnalogTile(2, 3, config, seed=3)
        step = config.device.nominal_step
        lr = step * 8  # C = sqrt(lr / (BL dw)) = 1: probabilities are |x| and |δ|
        x = torch.tensor([[p_row, 0.0, 1.0]])
        d = torch.tensor([[p_col, 0.0]])
        for k in range(3000):
            before = tile.counters.coincidences
            tile.stash(x, d)
            tile.update(lr)
            counts.append(tile.counters.coincidences - before)
    # Device (0, 0) gets Binomial(8, 0.18), device (0, 2) Binomial(8, 0.3) coincidences; their sum
    # is what the counter sees (column 1 and row 1 never fire).
    counts = np.array(counts)
    mean = 8 * (p_col * p_row + p_col)
    # Both devices share the column's pulses: Var = Σ Var + 2 Cov, Cov = 8 (p_col p_row - p_col² p_row).
    var = 8 * p_col * p_row * (1 - p_col * p_row) + 8 * p_col * (1 - p_col) + 2 * 8 * (p_col * p_row - p_col**2 * p_row)
    assert abs(counts.mean() - mean) < 5 * math.sqrt(var / counts.size)
    assert 0.9 < counts.var() / var < 1.1


@pytest.mark.parametrize("p, m", [(0.02, 10), (0.3, 10), (1.0, 10), (0.01, 64), (0.5, 3)])
def test_a_quiet_line_is_drawn_as_independent_slots(p, m):
    """A column line's train is drawn as a whole first (one uniform decides whether and where it
    first fires, the later slots one by one: ``compiled._quiet_line``): each slot fires with
    probability ``p``, independently (pairs ``p²``, none ``(1 - p)^m``), only in its ``m`` slots
    (the low ``m`` bits of the word), and with at most ``1 + (m + 1) // 2`` draws."""
    pytest.importorskip("numba")
    from numba import njit

    from insitu.update.kernels.compiled import _quiet_line

    @njit
    def trains(p, m, draws, n):
        words = np.empty(n, dtype=np.uint64)
        used = np.empty(n, dtype=np.int64)
        cursor = 0
        for t in range(n):
            start = cursor
            words[t], cursor = _quiet_line(p, m, draws, cursor)
            used[t] = cursor - start
        return words, used

    n = 100_000
    slots = np.arange(m)
    draws = np.random.default_rng(7).integers(0, 2**64 - 1, size=n * (2 + m), dtype=np.uint64, endpoint=True)
    words, used = trains(p, m, draws, n)
    assert used.max() <= 1 + (m + 1) // 2
    fired = (words[:, None] >> slots.astype(np.uint64)[None, :]) & np.uint64(1)
    assert int(np.bitwise_or.reduce(words)) & ~int(sum(1 << int(k) for k in slots)) == 0  # listed slots only
    se = math.sqrt(p * (1 - p) / n) + 1e-12
    assert np.all(np.abs(fired.mean(0) - p) < 5 * se)
    for a, b in ((0, 1), (0, m - 1), (m // 2, m - 1)):
        both = (fired[:, a] & fired[:, b]).mean()
        assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / n) + 1e-12
    none = (words == 0).mean()
    assert abs(none - (1 - p) ** m) < 5 * math.sqrt((1 - p) ** m * (1 - (1 - p) ** m) / n) + 1e-12


@pytest.mark.parametrize("response", ["constant_step_response", "linear_step_response"])
def test_the_single_coincidence_hit_loop_moves_devices_as_the_counted_one(response):
    """A column that fired in one slot moves its devices from the slot's row list with a count of
    ±1 (``hits_single``, where the compiler folds the count into the response); the loop for
    counted hits given counts of 1 must write the same weights, bit for bit, with and without
    cycle-to-cycle noise and with rows of both signs."""
    pytest.importorskip("numba")
    from insitu.update.kernels import compiled

    hits_counted, hits_single = compiled._make_hit_loops(getattr(compiled, response))
    rng = np.random.default_rng(11)
    n_out, n_in, planes = 5, 40, 6 if response == "linear_step_response" else 4
    weights = rng.uniform(-0.5, 0.5, (n_out, n_in, 1)).astype(np.float32)
    params = np.empty((n_out, n_in, 1, planes), dtype=np.float32)
    params[..., 0] = rng.uniform(0.001, 0.003, (n_out, n_in, 1))  # dw_up
    params[..., 1] = rng.uniform(0.001, 0.003, (n_out, n_in, 1))  # dw_down
    if planes == 6:
        params[..., 2] = rng.uniform(-1.5, -0.5, (n_out, n_in, 1))  # slope_up
        params[..., 3] = rng.uniform(-1.5, -0.5, (n_out, n_in, 1))  # slope_down
    params[..., planes - 2] = -0.49  # w_min: some devices sit at a bound
    params[..., planes - 1] = 0.49
    rows = np.sort(rng.choice(n_in, 25, replace=False)).astype(np.int64)
    row_negative = rng.random(25) < 0.4
    hit_rows = np.sort(rng.choice(25, 18, replace=False)).astype(np.int64)
    normals = rng.standard_normal(64).astype(np.float32)
    for c2c in (0.0, 0.3):
        for j, d_negative in ((1, False), (3, True)):
            single, counted = weights.copy(), weights.copy()
            hits_single(single, params, j, hit_rows, 18, rows, row_negative, d_negative, normals, 5, c2c)
            hits_counted(counted, params, j, hit_rows, np.ones(18, dtype=np.int64), 18, rows, row_negative, d_negative, normals, 5, c2c)
            assert np.array_equal(single, counted)
            moved = rows[hit_rows]
            assert not np.array_equal(single[j, moved], weights[j, moved])
            untouched = np.setdiff1d(np.arange(n_in), moved)
            assert np.array_equal(single[j, untouched], weights[j, untouched])
            assert np.array_equal(np.delete(single, j, axis=0), np.delete(weights, j, axis=0))


def test_column_words_renumbered_by_the_slots_some_column_fired_in():
    """Rows are drawn only in the slots in which some column fired, as the low bits of their
    words (``compiled._compress`` renumbers a column's word the same way): bit ``k`` of the
    result is the ``k``-th set bit of the union, so every count ``popcount(column & row)`` is
    the one the full slot numbers give."""
    pytest.importorskip("numba")
    from insitu.update.kernels.compiled import _compress

    rng = np.random.default_rng(3)
    for _ in range(200):
        union = int(rng.integers(1, 2**64 - 1, dtype=np.uint64, endpoint=True))
        slots = [k for k in range(64) if union >> k & 1]
        chosen = [k for k in slots if rng.random() < 0.3]
        word = sum(1 << k for k in chosen)
        expected = sum(1 << slots.index(k) for k in chosen)
        assert int(_compress(np.uint64(word), np.uint64(union))) == expected
        row = int(rng.integers(0, 2 ** len(slots) - 1, dtype=np.uint64, endpoint=True)) if len(slots) < 64 else union
        full_row = sum(1 << slots[k] for k in range(len(slots)) if row >> k & 1)
        assert bin(expected & row).count("1") == bin(word & full_row).count("1")


def _updated_replicas():
    """Four replicas of ``_config()`` (seeds 1-4, weights 0.05) after three updates with the same
    inputs and errors for every replica."""
    from insitu.replicas import ReplicatedTile

    x, d = _inputs(3)
    tile = ReplicatedTile(OUT, IN, [_config()] * 4, seeds=[1, 2, 3, 4])
    tile.set_weights(torch.full((4, OUT, IN), 0.05))
    for _ in range(3):
        tile.stash(x.expand(4, *x.shape), d.expand(4, *d.shape))
        tile.update(0.05)
    return tile


def test_replicas_in_parallel_threads_give_the_same_result():
    """The stacked kernel runs replicas in parallel threads; each has its own stream, so one or
    two threads give the same weights and counters."""
    import numba

    from insitu.update.kernels import set_threads

    results = []
    previous = (torch.get_num_threads(), numba.get_num_threads())
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            set_threads(threads)
            with use_backend("compiled"):
                tile = _updated_replicas()
            results.append((tile.weight.detach().clone(), tile.counters.coincidences.clone()))
    finally:
        torch.set_num_threads(previous[0])
        numba.set_num_threads(previous[1])
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert not torch.equal(results[0][0][0], results[0][0][1])  # the replicas drew differently


def test_the_replicas_prefetching_kernel_gives_the_same_results(monkeypatch):
    """Above ``PREFETCH_BYTES`` of weights and parameters the replicas' kernel prefetches the
    devices a pulse may reach (a hint to the CPU, nothing else): forced on for a small stack,
    the same weights, counters and streams as without it, and the plan records the choice."""
    from insitu.update.kernels import compiled

    results = []
    for limit in (0, 1 << 60):  # everything above the limit: prefetch; nothing: none
        monkeypatch.setattr(compiled, "PREFETCH_BYTES", limit)
        with use_backend("compiled"):
            tile = _updated_replicas()
        assert tile._kernel_cache["stacked"][-1] is (limit == 0)
        results.append((tile.weight.detach().clone(), tile.counters.coincidences.clone(), tile.pulse_rng.clone()))
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert results[0][1].sum() > 0  # pulses met: the prefetching loop ran
