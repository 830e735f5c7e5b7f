"""Update algorithms (SGD, MBGD, SVD-k, SBE-k; Hoskins et al. 2019): estimates, writes, counters, errors."""

from __future__ import annotations

import pytest
import torch

from insitu import AnalogLinear, AnalogSGD, AnalogTile, ConstantStepDevice, IdealDevice, IOConfig, PulseUpdateConfig, TileConfig
from insitu.config import ConfigError
from insitu.nn import AnalogConv2d
from insitu.update import UpdateAlgorithm, UpdateAlgorithmConfig


def ideal_tile(out=5, inp=7, **algorithm) -> AnalogTile:
    cfg = TileConfig(
        device=IdealDevice(), forward=IOConfig.perfect(), backward=IOConfig.perfect(),
        algorithm=UpdateAlgorithmConfig(**algorithm),
    )
    tile = AnalogTile(out, inp, cfg, seed=0, dtype=torch.float64)
    tile.set_weights(torch.zeros(out, inp, dtype=torch.float64))
    return tile


def orthonormal(rows, cols, generator):
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return q


def low_rank_stream(n, a_basis, d_basis, strengths, generator):
    """Samples x_j = ±s_i a_i, δ_j = ±s_i b_i (same sign), i drawn at random: G = Σ c_i s_i² b_i a_iᵀ.

    Every batch has (up to its counts c_i) the same singular vectors, so the exact answer is known.
    """
    which = torch.randint(0, len(strengths), (n,), generator=generator)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
    s = torch.tensor(strengths, dtype=torch.float64)[which] * sign
    return a_basis[:, which].t() * s.unsqueeze(1), d_basis[:, which].t() * s.unsqueeze(1)


def angle_error(u, v):
    """1 - |cos| between two vectors (the convergence measure of Hoskins et al.)."""
    return 1 - abs(float(torch.dot(u, v) / (u.norm() * v.norm())))


def test_sbe1_converges_to_the_exact_top_singular_pair_of_a_low_rank_stream():
    g = torch.Generator().manual_seed(0)
    a, b = 12, 30
    x_basis, d_basis = orthonormal(b, 3, g), orthonormal(a, 3, g)
    algorithm = UpdateAlgorithm(UpdateAlgorithmConfig(method="sbe"), a, b)
    for _ in range(6):  # warm start carries the estimate from batch to batch
        x, d = low_rank_stream(256, x_basis, d_basis, [2.0, 1.0, 0.5], g)
        xw, dw = algorithm.writes(x, d)
    u, s, vh = torch.linalg.svd(d.t() @ x)
    assert xw.shape == (1, b) and dw.shape == (1, a)
    assert angle_error(xw[0], vh[0]) < 1e-3
    assert angle_error(dw[0], u[:, 0]) < 1e-3
    # The written term carries the top singular value of the batch gradient, with the right sign.
    written = dw.t() @ xw
    assert torch.allclose(written.norm(), s[0], rtol=0.05)
    assert float((written * (d.t() @ x)).sum()) > 0


def test_sbe_sign_is_right_even_when_the_warm_start_points_the_wrong_way():
    g = torch.Generator().manual_seed(1)
    a, b = 6, 9
    x_basis, d_basis = orthonormal(b, 2, g), orthonormal(a, 2, g)
    algorithm = UpdateAlgorithm(UpdateAlgorithmConfig(method="sbe"), a, b)
    x, d = low_rank_stream(64, x_basis, d_basis, [2.0, 0.5], g)
    algorithm.writes(x, d)
    algorithm.x_estimate = -algorithm.x_estimate  # one vector anti-parallel (the paper's sporadic flip)
    for _ in range(3):
        x, d = low_rank_stream(64, x_basis, d_basis, [2.0, 0.5], g)
        xw, dw = algorithm.writes(x, d)
        gradient = d.t() @ x
        # The net sign of the term is always that of the gradient along it.
        assert float((dw.t() @ xw * gradient).sum()) > 0


def test_sbe_k_keeps_orthonormal_bases_and_finds_the_top_subspace():
    g = torch.Generator().manual_seed(2)
    a, b, k = 10, 16, 2
    x_basis, d_basis = orthonormal(b, 4, g), orthonormal(a, 4, g)
    algorithm = UpdateAlgorithm(UpdateAlgorithmConfig(method="sbe", rank=k), a, b)
    for _ in range(6):
        x, d = low_rank_stream(256, x_basis, d_basis, [2.0, 1.5, 0.6, 0.3], g)
        xw, dw = algorithm.writes(x, d)
    assert xw.shape == (k, b) and dw.shape == (k, a)
    v = xw / xw.norm(dim=1, keepdim=True)
    u = dw / dw.norm(dim=1, keepdim=True)
    eye = torch.eye(k, dtype=torch.float64)
    assert torch.allclose(v @ v.t(), eye, atol=1e-9) and torch.allclose(u @ u.t(), eye, atol=1e-9)
    # Spanned subspaces equal the top-2 singular subspaces of the batch (principal angles ~ 0).
    uu, _, vh = torch.linalg.svd(d.t() @ x)
    assert torch.linalg.svdvals(v @ vh[:k].t()).min() > 1 - 1e-3
    assert torch.linalg.svdvals(u @ uu[:, :k]).min() > 1 - 1e-3


def test_svd_k_writes_the_best_rank_k_approximation_on_an_ideal_device():
    g = torch.Generator().manual_seed(3)
    x, d = torch.randn(9, 7, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    tile = ideal_tile(method="svd", rank=2)
    tile.stash(x, d)
    tile.update(0.5)
    u, s, vh = torch.linalg.svd(d.t() @ x)
    best = u[:, :2] @ torch.diag(s[:2]) @ vh[:2]
    assert torch.allclose(tile.get_weights(), -0.5 * best, atol=1e-10)
    assert tile.counters.rank1_updates == 2 and tile.counters.steps == 1


@pytest.mark.parametrize("full_write", [True, False])
def test_mbgd_writes_the_whole_batch_gradient(full_write):
    g = torch.Generator().manual_seed(4)
    x, d = torch.randn(9, 7, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    tile = ideal_tile(method="mbgd", full_write=full_write)
    tile.stash(x, d)
    tile.update(0.1)
    assert torch.allclose(tile.get_weights(), -0.1 * d.t() @ x, atol=1e-12)
    # A full write costs one rank-1 write per row of W (5); the batch's own terms cost 9.
    assert tile.counters.rank1_updates == (5 if full_write else 9)


def test_mbgd_full_write_through_pulses_has_the_batch_gradient_as_its_mean():
    """Row writes go through the device model: with expected pulses the mean update is lr·G."""
    g = torch.Generator().manual_seed(5)
    x, d = torch.rand(16, 7, generator=g) * 0.5, (torch.rand(16, 5, generator=g) - 0.5) * 0.2
    device = ConstantStepDevice(dw_min=1e-4, dw_min_dtod=0.0, dw_min_std=0.0, up_down_dtod=0.0, w_max_dtod=0.0)
    cfg = TileConfig(
        device=device, forward=IOConfig.perfect(), backward=IOConfig.perfect(),
        update=PulseUpdateConfig(pulse_type="expected", bl=100, update_management=True),
        algorithm=UpdateAlgorithmConfig(method="mbgd"),
    )
    tile = AnalogTile(5, 7, cfg, seed=0)
    tile.set_weights(torch.zeros(5, 7))
    tile.stash(x, d)
    tile.update(0.01)
    assert torch.allclose(tile.get_weights(), -0.01 * d.t() @ x, atol=2e-4)


@pytest.mark.parametrize(
    "algorithm, writes, memory",
    [
        (dict(method="sgd"), 8, 8 * (5 + 7)),
        (dict(method="mbgd"), 5, 5 * 7),
        (dict(method="mbgd", full_write=False), 8, 5 * 7),
        (dict(method="svd", rank=2), 2, 5 * 7),
        (dict(method="sbe", rank=1), 1, 5 + 7 + 1),
        (dict(method="sbe", rank=3), 3, 3 * (5 + 7) + 3),
    ],
)
def test_counters_are_exact(algorithm, writes, memory):
    g = torch.Generator().manual_seed(6)
    tile = ideal_tile(**algorithm)
    for _ in range(3):
        tile.stash(torch.randn(8, 7, generator=g, dtype=torch.float64), torch.randn(8, 5, generator=g, dtype=torch.float64))
        tile.update(0.01)
    assert tile.counters.steps == 3
    assert tile.counters.rank1_updates == 3 * writes
    assert tile.counters.extra_memory == memory


def test_sgd_at_batch_one_holds_nothing():
    tile = ideal_tile()
    tile.stash(torch.ones(1, 7, dtype=torch.float64), torch.ones(1, 5, dtype=torch.float64))
    tile.update(0.01)
    assert tile.counters.extra_memory == 0 and tile.counters.rank1_updates == 1


def test_sbe_on_the_2016_device_and_in_a_conv_layer_trains_and_resumes_bit_identically():
    """SBE runs on a pulsed device and in a conv layer; its warm start is part of the checkpoint."""
    from insitu.presets import get_preset

    cfg = get_preset("gokmen-vlasov-2016").replace(algorithm=UpdateAlgorithmConfig(method="sbe"))
    g = torch.Generator().manual_seed(7)
    images, labels = torch.rand(12, 1, 6, 6, generator=g), torch.randint(0, 3, (12,), generator=g)

    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            AnalogConv2d(1, 2, 3, config=cfg), torch.nn.Tanh(), torch.nn.Flatten(), AnalogLinear(32, 3, config=cfg)
        )

    def train(model, batches):
        opt = AnalogSGD(model.parameters(), lr=0.05)
        for i in batches:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(images[4 * i : 4 * i + 4]), labels[4 * i : 4 * i + 4]).backward()
            opt.step()

    straight = build()
    train(straight, [0, 1, 2])
    first = build()
    train(first, [0])
    resumed = build()
    resumed.load_state_dict(first.state_dict())
    train(resumed, [1, 2])
    assert torch.equal(resumed[0].tile.get_weights(), straight[0].tile.get_weights())
    assert torch.equal(resumed[3].tile.get_weights(), straight[3].tile.get_weights())
    # One rank-1 write per step on both layers (the conv layer's patches stream through SBE).
    assert straight[0].tile.counters.rank1_updates == 3 and straight[3].tile.counters.rank1_updates == 3
    assert straight[0].tile.counters.pulses > 0


def test_bad_input_gives_clear_errors():
    with pytest.raises(ConfigError, match="rank"):
        UpdateAlgorithmConfig(method="sbe", rank=0)
    with pytest.raises(ConfigError, match="applies to method 'svd' or 'sbe'"):
        UpdateAlgorithmConfig(method="sgd", rank=2)
    with pytest.raises(ConfigError, match="Did you mean 'sbe'"):
        UpdateAlgorithmConfig(method="sbee")
    with pytest.raises(ConfigError, match=r"at most min\(out, in\) = 5"):
        ideal_tile(method="svd", rank=6)
    tile = ideal_tile(method="sbe", rank=3)
    tile.stash(torch.ones(2, 7, dtype=torch.float64), torch.ones(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="batch size >= rank"):
        tile.update(0.01)


def test_pending_gradient_is_the_batch_gradient_before_the_update():
    tile = ideal_tile(method="svd")
    assert tile.pending_gradient() is None
    x, d = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    tile.stash(x[:1], d[:1])
    tile.stash(x[1:], d[1:])
    assert torch.allclose(tile.pending_gradient(), d.t() @ x)
    tile.update(0.1)
    assert tile.pending_gradient() is None


@pytest.mark.parametrize("n", [2, 40])
def test_svd_through_qr_of_a_small_batch_equals_the_full_decomposition(n):
    from insitu.update.lowrank import _top_singular

    g = torch.Generator().manual_seed(8)
    x, d = torch.randn(n, 30, generator=g, dtype=torch.float64), torch.randn(n, 20, generator=g, dtype=torch.float64)
    u, s, v = _top_singular(d, x, 2)
    uu, ss, vh = torch.linalg.svd(d.t() @ x)
    assert torch.allclose(s, ss[:2])
    assert torch.allclose((u * s) @ v.t(), uu[:, :2] @ torch.diag(ss[:2]) @ vh[:2], atol=1e-10)


def test_sbe1_numpy_and_torch_recursions_agree():
    """The CPU runs the recursion in NumPy, accelerators in PyTorch: the same numbers."""
    from insitu.update.lowrank import _stream_rank1_numpy, _stream_rank1_torch

    g = torch.Generator().manual_seed(9)
    x, d = torch.randn(50, 13, generator=g, dtype=torch.float64), torch.randn(50, 4, generator=g, dtype=torch.float64)
    ref_x, ref_d, ref_s = _stream_rank1_numpy(x.numpy(), d.numpy(), x[0].numpy().copy(), d[0].numpy().copy(), 0.3)
    big_x, big_d, sigma = _stream_rank1_torch(x, d, x[0].clone(), d[0].clone(), torch.tensor(0.3, dtype=torch.float64))
    assert torch.allclose(big_x, torch.from_numpy(ref_x)) and torch.allclose(big_d, torch.from_numpy(ref_d))
    assert abs(float(sigma) - ref_s) < 1e-12


def test_the_sbe_trace_ends_where_the_update_ends_and_converges_on_a_rank1_batch():
    from insitu.update.lowrank import _stream_rank1_numpy, sbe_trace

    g = torch.Generator().manual_seed(11)
    x, d = torch.randn(40, 13, generator=g, dtype=torch.float64), torch.randn(40, 4, generator=g, dtype=torch.float64)
    xs, ds = sbe_trace(x, d, x[0], d[0])
    ref_x, ref_d, _ = _stream_rank1_numpy(x.numpy(), d.numpy(), x[0].numpy().copy(), d[0].numpy().copy(), 0.0)
    assert xs.shape == (40, 13) and ds.shape == (40, 4)
    assert torch.equal(xs[-1], torch.from_numpy(ref_x)) and torch.equal(ds[-1], torch.from_numpy(ref_d))
    # A batch whose samples all share one direction pair (G of rank 1): the streamed vectors settle
    # on it, and their change from sample to sample shrinks.
    u, v = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(13, generator=g, dtype=torch.float64)
    scale = torch.rand(200, 1, generator=g, dtype=torch.float64) + 0.5
    xs, ds = sbe_trace(scale * v, scale * u, torch.randn(13, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64))
    unit = xs / xs.norm(dim=1, keepdim=True)
    assert float((unit[-1] @ v).abs() / v.norm()) > 0.999
    assert float((unit[-1] - unit[-2]).norm()) < float((unit[1] - unit[0]).norm())


def test_singular_writes_balance_the_peaks_of_both_pulse_trains():
    g = torch.Generator().manual_seed(10)
    x, d = torch.rand(8, 300, generator=g, dtype=torch.float64), 0.01 * torch.randn(8, 10, generator=g, dtype=torch.float64)
    algorithm = UpdateAlgorithm(UpdateAlgorithmConfig(method="svd", rank=2), 10, 300)
    xw, dw = algorithm.writes(x, d)
    assert torch.allclose(xw.abs().amax(dim=1), dw.abs().amax(dim=1))
    u, s, vh = torch.linalg.svd(d.t() @ x)
    assert torch.allclose(dw.t() @ xw, u[:, :2] @ torch.diag(s[:2]) @ vh[:2], atol=1e-12)
