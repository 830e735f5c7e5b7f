"""Device effects of the pulsed devices (insitu.devices.effects): write noise, decay, diffusion,
stuck devices, reset.

Off by default, they must draw and compute nothing; on, each must follow its equation
(``docs/devices.md``, "Device effects") statistically, act once per update after the pulses (also
in the fused multi-tile update), survive a state_dict round trip, and bad values must be refused.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from insitu.config import ConfigError
from insitu.devices import ConstantStepDevice, SoftBoundsDevice
from insitu.devices.effects import DeviceEffects
from insitu.tile import AnalogTile, TileConfig
from insitu.update import PulseUpdateConfig
from insitu.update.kernels import compiled_available, use_backend

BACKENDS = ["torch"] + (["compiled"] if compiled_available() else [])


def _tile(out=40, inp=50, seed=0, update=None, **fields) -> AnalogTile:
    config = TileConfig(device=ConstantStepDevice(**fields), update=update or PulseUpdateConfig())
    return AnalogTile(out, inp, config, seed=seed)


def _idle_update(tile: AnalogTile) -> None:
    """One update without pulses (zero inputs): only the per-update effects act."""
    tile.stash(torch.zeros(1, tile.in_features), torch.zeros(1, tile.out_features))
    tile.update(0.1)


def _random_update(tile: AnalogTile, generator: torch.Generator, lr: float = 0.5, batch: int = 4) -> None:
    tile.stash(torch.rand(batch, tile.in_features, generator=generator), torch.randn(batch, tile.out_features, generator=generator))
    tile.update(lr)


# -- off by default ----------------------------------------------------------------------------
def test_defaults_are_off_and_draw_nothing(monkeypatch):
    device = ConstantStepDevice()
    assert device.effects() is not None and not device.effects().active
    tile = AnalogTile(6, 5, TileConfig(device=device), seed=7)
    assert tile.device_effects is None and tile.effect_params is None and tile.write_noise is None
    assert set(tile.state_dict()) == {"weight", "device_params", "_extra_state"}  # old checkpoints load
    # Construction drew the device parameters and nothing else from the tile's generator.
    reference = torch.Generator().manual_seed(7)
    device.draw_parameters((6, 5), reference)
    assert torch.equal(tile.generator.get_state(), reference.get_state())

    # No effect code runs at an update or when programming.
    def boom(*args, **kwargs):
        raise AssertionError("a device effect ran with every effect off")

    for name in ("after_update", "programmed", "hold_stuck", "draw_write_noise"):
        monkeypatch.setattr(DeviceEffects, name, boom)
    g = torch.Generator().manual_seed(1)
    for backend in BACKENDS:
        with use_backend(backend):
            tile.set_weights(torch.full((6, 5), 0.1))
            _random_update(tile, g)


def test_reset_fields_alone_draw_nothing():
    """reset and reset_std act only when reset_devices is called: no buffer, no draw."""
    plain = _tile(6, 5, seed=3)
    tile = _tile(6, 5, seed=3, reset=0.2, reset_std=0.05, corrupt_range=0.3)
    assert tile.device_effects is None and tile.effect_params is None
    assert torch.equal(tile.generator.get_state(), plain.generator.get_state())
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    with use_backend("torch"):
        _random_update(plain, g1)
        _random_update(tile, g2)
    assert torch.equal(plain.weight, tile.weight)


def test_an_effect_leaves_the_devices_and_the_tile_stream_of_a_seed_unchanged():
    """The effects draw at construction from a stream of their own: the device parameters and the
    tile generator (a layer's initial weights come from it) are those of the same seed without."""
    plain = _tile(seed=5)
    tile = _tile(seed=5, corrupt_prob=0.2, lifetime=50, lifetime_dtod=0.3, write_noise_std=1.0)
    assert torch.equal(plain.device_params, tile.device_params)
    assert torch.equal(plain.generator.get_state(), tile.generator.get_state())
    # And a seed fixes them.
    again = _tile(seed=5, corrupt_prob=0.2, lifetime=50, lifetime_dtod=0.3, write_noise_std=1.0)
    assert torch.equal(tile.effect_params, again.effect_params) and torch.equal(tile.write_noise, again.write_noise)


# -- decay -------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_decay_halves_a_weight_in_one_half_life(backend):
    """Without spread, w_n - b = (w_0 - b)(1 - 1/ℓ)^n exactly; after n = round(ℓ ln 2) updates that
    is (w_0 - b)/2 to O(1/ℓ): (1 - 1/ℓ)^(ℓ ln 2) = exp(ℓ ln 2 · ln(1 - 1/ℓ)) = 0.5 (1 - ln2/(2ℓ) + ...)."""
    lifetime, target, w0 = 300.0, 0.05, 0.3
    tile = _tile(lifetime=lifetime, reset=target, w_max_dtod=0.0, w_min_dtod=0.0)
    tile.set_weights(torch.full((40, 50), w0))
    n = round(lifetime * math.log(2))
    with use_backend(backend):
        for _ in range(n):
            _idle_update(tile)
    law = target + (w0 - target) * (1 - 1 / lifetime) ** n
    assert torch.allclose(tile.weight, torch.full_like(tile.weight, law), atol=1e-5)
    assert abs((law - target) / (w0 - target) - 0.5) < 0.002
    assert n == pytest.approx(tile.device_effects.half_life(), abs=1)


def test_decay_with_device_to_device_spread_follows_the_expected_law():
    """ℓ_ij = ℓ (1 + d ξ): each device follows w_n = w_0 s_ij^n (s_ij = 1 - 1/ℓ_ij, 0 if ℓ_ij <= 1),
    and the mean over devices is w_0 E[s^n] with E over ξ ~ N(0, 1) (Gauss-Hermite quadrature)."""
    lifetime, spread, w0 = 200.0, 0.3, 0.4
    tile = _tile(80, 100, lifetime=lifetime, lifetime_dtod=spread, w_max_dtod=0.0, w_min_dtod=0.0)
    tile.set_weights(torch.full((80, 100), w0))
    n = round(lifetime * math.log(2))
    for _ in range(n):
        _idle_update(tile)
    s = tile.effect_params[tile.device_effects.plane_names().index("decay")].double()
    assert torch.allclose(tile.weight.detach().double(), w0 * s**n, rtol=1e-3, atol=1e-6)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    life = lifetime * (1 + spread * nodes)
    factor = np.where(life > 1, 1 - 1 / np.maximum(life, 1), 0.0) ** n
    expected = w0 * float(weights @ factor) / math.sqrt(2 * math.pi)
    ratios = tile.weight.detach().double() / w0
    standard_error = float(ratios.std()) / math.sqrt(ratios.numel())
    assert abs(float(ratios.mean()) * w0 - expected) < 4 * standard_error * w0
    assert 0.4 < expected / w0 < 0.6  # about a half, less than exactly (Jensen: E[s^n] over a spread)


# -- diffusion ---------------------------------------------------------------------------------
def test_diffusion_std_grows_as_sqrt_of_the_updates():
    rho = 0.002
    tile = _tile(100, 100, diffusion=rho)
    stds = {}
    for n in range(1, 101):
        _idle_update(tile)
        if n in (25, 100):
            stds[n] = float(tile.weight.detach().double().std())
    # 10^4 devices: the sample std is within a few 1/sqrt(2N) = 0.7 % of the truth.
    assert stds[25] == pytest.approx(rho * 5, rel=0.03)
    assert stds[100] == pytest.approx(rho * 10, rel=0.03)
    assert abs(float(tile.weight.detach().mean())) < 4 * rho * 10 / 100


def test_diffusion_is_clipped_to_the_bounds():
    tile = _tile(20, 20, diffusion=0.2)
    for _ in range(20):
        _idle_update(tile)
    model, params = tile.device_model, tile.device_params
    assert torch.all(tile.weight <= model.plane(params, "w_max")) and torch.all(tile.weight >= model.plane(params, "w_min"))


# -- stuck devices -----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_stuck_devices_never_move(backend):
    prob, span = 0.2, 0.15
    tile = _tile(60, 50, corrupt_prob=prob, corrupt_range=span, diffusion=0.001, lifetime=100)
    names = tile.device_effects.plane_names()
    stuck = tile.effect_params[names.index("stuck")] > 0.5
    value = tile.effect_params[names.index("stuck_value")]
    n = stuck.numel()
    assert abs(float(stuck.float().mean()) - prob) < 4 * math.sqrt(prob * (1 - prob) / n)
    w_min, w_max = tile.device_model.plane(tile.device_params, "w_min"), tile.device_model.plane(tile.device_params, "w_max")
    assert torch.all(value[stuck] >= torch.clamp(w_min, min=-span)[stuck]) and torch.all(value[stuck] <= torch.clamp(w_max, max=span)[stuck])
    assert torch.equal(tile.weight[stuck], value[stuck])  # from construction on
    tile.set_weights(torch.full((60, 50), 0.4))
    assert torch.equal(tile.weight[stuck], value[stuck]) and torch.all(tile.weight[~stuck] != value[~stuck])
    start = tile.weight.detach().clone()
    g = torch.Generator().manual_seed(2)
    with use_backend(backend):
        for _ in range(20):
            _random_update(tile, g, lr=2.0)
            assert torch.equal(tile.weight[stuck], value[stuck])
    assert float((tile.weight.detach()[~stuck] - start[~stuck]).abs().mean()) > 0.01  # the others did move
    tile.reset_devices(torch.ones(60, 50, dtype=torch.bool))
    assert torch.equal(tile.weight[stuck], value[stuck])


def test_stuck_devices_never_move_in_the_fused_update():
    from insitu.update.fused import FusedPulseUpdate, can_fuse

    config = TileConfig(device=ConstantStepDevice(corrupt_prob=0.3, write_noise_std=1.0))
    tiles = [AnalogTile(8, 9, config, seed=1), AnalogTile(7, 8, config, seed=2)]
    assert all(can_fuse(t) for t in tiles)
    g = torch.Generator().manual_seed(0)
    with use_backend("torch"):
        fused = FusedPulseUpdate(tiles, 2.0)
        for _ in range(10):
            noise_before = [t.write_noise.clone() for t in tiles]
            for t in tiles:
                t.stash(torch.rand(2, t.in_features, generator=g), torch.randn(2, t.out_features, generator=g))
            with torch.no_grad():
                fused.apply()
            for t, old in zip(tiles, noise_before):
                names = t.device_effects.plane_names()
                stuck = t.effect_params[names.index("stuck")] > 0.5
                assert torch.equal(t.weight[stuck], t.effect_params[names.index("stuck_value")][stuck])
                assert not torch.equal(t.write_noise, old)  # re-drawn after the fused pulses


# -- write noise -------------------------------------------------------------------------------
@pytest.mark.skipif(not compiled_available(), reason="needs the compiled backend (pulses on their own stream)")
def test_write_noise_leaves_the_true_update_and_its_mean_unchanged():
    """On the compiled backend the pulses come from the tile's own stream and the write noise
    from its generator: the true (hidden) weights are those of the run without write noise, draw
    for draw; the read weights differ from them by σ_wn = write_noise_std · dw_min, mean 0."""
    sigma_units, dw_min = 3.0, 0.001
    plain = _tile(100, 120, seed=4)
    noisy = _tile(100, 120, seed=4, write_noise_std=sigma_units)
    for tile in (plain, noisy):
        tile.set_weights(torch.zeros(100, 120))
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    before = noisy.effective_weights().clone()
    with use_backend("compiled"):
        for _ in range(5):
            _random_update(plain, g1, lr=0.2)
            _random_update(noisy, g2, lr=0.2)
    assert torch.equal(plain.weight, noisy.weight)
    read_minus_true = (noisy.effective_weights() - noisy.weight.detach()).double()
    n = read_minus_true.numel()
    sigma = sigma_units * dw_min
    assert float(read_minus_true.std()) == pytest.approx(sigma, rel=4 / math.sqrt(2 * n))
    assert abs(float(read_minus_true.mean())) < 4 * sigma / math.sqrt(n)
    # The mean update seen through the read weights is the true mean update.
    read_update = (noisy.effective_weights() - before).double().mean()
    true_update = noisy.weight.detach().double().mean()  # from 0
    assert abs(float(read_update - true_update)) < 4 * sigma * math.sqrt(2 / n)
    assert abs(float(true_update)) > 10 * sigma * math.sqrt(2 / n)  # a non-trivial update was compared


def test_write_noise_is_redrawn_only_where_the_update_changed_the_device():
    tile = _tile(30, 20, write_noise_std=2.0)
    tile.set_weights(torch.zeros(30, 20))
    old = tile.write_noise.clone()
    x = torch.zeros(1, 20)
    x[0, :10] = 1.0  # only the first ten inputs pulse
    with use_backend("torch"):
        tile.stash(x, torch.ones(1, 30))
        tile.update(0.5)
    moved = tile.weight != 0
    assert moved[:, :10].float().mean() > 0.9 and not moved[:, 10:].any()
    assert torch.equal(tile.write_noise[~moved], old[~moved])
    assert torch.all(tile.write_noise[moved] != old[moved])
    # With decay (a per-update effect) every device's noise is re-drawn, as the peer does.
    decaying = _tile(30, 20, write_noise_std=2.0, lifetime=100)
    old = decaying.write_noise.clone()
    _idle_update(decaying)
    assert torch.all(decaying.write_noise != old)


def test_write_noise_in_multi_device_cells_and_sparse_arrays():
    config = TileConfig(device=ConstantStepDevice(write_noise_std=2.0), devices_per_weight=3)
    tile = AnalogTile(5, 4, config, seed=0)
    tile.set_weights(torch.full((5, 4), 0.1))
    assert tile.write_noise.shape == (5, 4, 3)
    assert torch.allclose(tile.effective_weights(), (tile.weight + tile.write_noise).mean(-1))
    sparse = _tile(5, 4, write_noise_std=2.0)
    mask = torch.rand(5, 4, generator=torch.Generator().manual_seed(0)) > 0.5
    sparse.set_connection_mask(mask)
    sparse.set_weights(torch.full((5, 4), 0.1))
    _random_update(sparse, torch.Generator().manual_seed(1))
    assert torch.all(sparse.effective_weights()[~mask] == 0)


# -- reset -------------------------------------------------------------------------------------
def test_reset_columns_and_masks():
    reset, spread = 0.1, 0.02
    tile = _tile(200, 30, reset=reset, reset_std=spread, w_max_dtod=0.0, w_min_dtod=0.0)
    tile.set_weights(torch.full((200, 30), -0.3))
    tile.reset_devices([2, 5])
    for col in (2, 5):
        values = tile.weight.detach()[:, col].double()
        assert float(values.mean()) == pytest.approx(reset, abs=4 * spread / math.sqrt(200))
        assert float(values.std()) == pytest.approx(spread, rel=0.25)
    others = [c for c in range(30) if c not in (2, 5)]
    assert torch.all(tile.weight[:, others] == -0.3)
    mask = torch.zeros(200, 30, dtype=torch.bool)
    mask[0, 0] = True
    tile.reset_devices(mask)
    assert tile.weight[0, 0] != -0.3 and tile.weight[1, 0] == -0.3


def test_reset_bias_spread_is_the_decay_target():
    tile = _tile(20, 20, reset=0.05, reset_dtod=0.03, lifetime=2.0)
    bias = tile.effect_params[tile.device_effects.plane_names().index("reset_bias")]
    tile.set_weights(torch.full((20, 20), 0.3))
    for _ in range(40):  # s = 1/2 a step: 2^-40 of the distance is left
        _idle_update(tile)
    assert torch.allclose(tile.weight, tile.device_model.clip(bias, tile.device_params), atol=1e-6)
    assert float(bias.std()) == pytest.approx(0.03, rel=0.25)


def test_reset_is_refused_where_it_has_no_meaning():
    from insitu.replicas import ReplicatedTile

    replicas = ReplicatedTile(3, 4, [TileConfig()] * 2, seeds=[0, 1])
    with pytest.raises(ConfigError, match="reset_devices"):
        replicas.reset_devices([0])
    with pytest.raises(ValueError, match="shape"):
        _tile(3, 4).reset_devices(torch.ones(4, 3, dtype=torch.bool))


# -- state -------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_state_round_trip_continues_identically(backend):
    fields = dict(write_noise_std=1.5, lifetime=80, lifetime_dtod=0.2, diffusion=0.0005, diffusion_dtod=0.3,
                  reset_dtod=0.01, corrupt_prob=0.1)
    config = TileConfig(device=SoftBoundsDevice(**fields))
    tile = AnalogTile(9, 7, config, seed=3)
    g = torch.Generator().manual_seed(0)
    with use_backend(backend):
        _random_update(tile, g)
        other = AnalogTile(9, 7, config, seed=99)
        other.load_state_dict(tile.state_dict())
        assert {"effect_params", "write_noise"} <= set(tile.state_dict())
        for key, value in tile.state_dict().items():
            if torch.is_tensor(value):
                assert torch.equal(value, other.state_dict()[key])
        x, d = torch.rand(3, 7, generator=g), torch.randn(3, 9, generator=g)
        for t in (tile, other):
            t.stash(x, d)
            t.update(0.3)
    assert torch.equal(tile.weight, other.weight)
    assert torch.equal(tile.effective_weights(), other.effective_weights())


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, name",
    [
        ({"lifetime": -1.0}, "lifetime"),
        ({"lifetime": 0.5}, "lifetime"),
        ({"corrupt_prob": 1.5}, "corrupt_prob"),
        ({"corrupt_prob": -0.1}, "corrupt_prob"),
        ({"write_noise_std": -1.0}, "write_noise_std"),
        ({"diffusion": float("nan")}, "diffusion"),
        ({"reset_std": -0.01}, "reset_std"),
        ({"corrupt_range": -0.1}, "corrupt_range"),
        ({"lifetime_dtod": -0.1}, "lifetime_dtod"),
    ],
)
def test_bad_values_are_refused(fields, name):
    with pytest.raises(ConfigError, match=name):
        ConstantStepDevice(**fields)


def test_replicas_and_cells_refuse_effects_by_name():
    from insitu.cells import TikiTakaCell
    from insitu.replicas import ReplicatedTile, lockstep_conflict

    config = TileConfig(device=ConstantStepDevice(lifetime=100))
    assert "device effects" in lockstep_conflict([config, config])
    with pytest.raises(ConfigError, match="device effects"):
        ReplicatedTile(3, 4, [config, config], seeds=[0, 1])
    assert lockstep_conflict([TileConfig(device=ConstantStepDevice(reset=0.1, reset_std=0.1))] * 2) is None
    with pytest.raises(ConfigError, match="device effects"):
        TileConfig(device=ConstantStepDevice(write_noise_std=1.0), cell=TikiTakaCell())
