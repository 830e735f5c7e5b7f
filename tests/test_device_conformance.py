"""The device contract, checked on every registered device family (``docs/engine.md``).

Every :class:`~insitu.devices.DeviceConfig` registered with the config registry runs the same
checks: its nominal step and capabilities, the closed form of ``n`` pulses against pulse-by-pulse
application, the bounds, determinism per seed, the mean and variance of ``n`` noisy pulses, the
compiled response against the torch response, and a tile's state_dict round trip. A new device
family gets all of them by being registered.
"""

from __future__ import annotations

import math

import pytest
import torch

from insitu.config import _REGISTRY, ConfigError
from insitu.devices import DeviceCapabilities, DeviceConfig, JumpTableDevice, PCMDevice
from insitu.devices.pulsed import _PulsedDevice
from insitu.presets import get_preset
from insitu.tile import AnalogTile, TileConfig

PULSED = sorted(
    name for name, cls in _REGISTRY.items() if issubclass(cls, DeviceConfig) and not cls.is_ideal
)
#: Non-default settings that change a family's response, checked like the families themselves:
#: "Family[variant]" -> fields.
VARIANTS = {
    "PiecewiseStepDevice[table]": {"piecewise_up": (1.6, 1.2, 1.0, 0.7, 0.2), "piecewise_down": (0.3, 0.8, 1.0, 1.1, 1.5)},
    "SoftBoundsReferenceDevice[sp,ref,mult]": {
        "subtract_symmetry_point": True, "reference_std": 0.05, "mult_noise": True, "up_down": 0.1, "slope_up_dtod": 0.1,
    },
    "SoftBoundsReferenceDevice[sp]": {"subtract_symmetry_point": True, "up_down": 0.1},
    "PowStepReferenceDevice[sp]": {"subtract_symmetry_point": True, "up_down": 0.1, "n_estimation_steps": 300},
    "SoftBoundsDevice[effects]": {
        "write_noise_std": 1.0, "lifetime": 50.0, "lifetime_dtod": 0.2, "diffusion": 0.001, "diffusion_dtod": 0.2,
        "reset_dtod": 0.01, "corrupt_prob": 0.1,
    },
    "ExpStepDevice[complex-noise]": {"dw_min_std_add": 0.001, "dw_min_std_slope": 0.01, "up_down": 0.1},
    "ExpStepDevice[rereams]": {"a": -0.5, "b": -0.5, "gamma_up": 5.0, "gamma_down": 5.0, "A_up": -1.18445, "A_down": -0.081404},
}
VARIANTS.update({
    "PCMPairDevice[jump,saturating]": {
        "device": PCMDevice(nonlinearity=1.0, initial_jump=0.05, g_max_dtod=0.1, dg_dtod=0.2, dg_std=0.3), "w_max": 0.8,
    },
    "JumpTablePairDevice[table]": {
        "device": JumpTableDevice(
            bin_edges=(0.0, 0.3, 0.6, 1.0), mean=(0.02, 0.012, 0.004), std=(0.004, 0.003, 0.002), gain_dtod=0.2,
        ),
    },
    "OneSidedPairDevice[pcm-peer]": {"device": get_preset("pcm-peer-io").device.device, "refresh_read_noise": 0.1},
})
PULSED = PULSED + sorted(VARIANTS)
SHAPE = (40, 30)


def _pair_fields(cls, fields: dict, dw_min=None, dw_min_std=None, w_max_dtod=None, w_min_dtod=None, **rest) -> dict:
    """The generic knobs of these checks in a conductance pair's terms: ``dw_min`` the gradual step
    near RESET in weight units, ``dw_min_std`` the pulse-to-pulse spread relative to the step,
    ``w_*_dtod`` the spread of the devices' ``g_max`` (the pair's bounds)."""
    pair = cls(**fields)
    inner = pair.device
    if isinstance(inner, _PulsedDevice):  # a one-sided pair: its members are pulsed devices
        changes = {}
        if dw_min is not None:
            changes["dw_min"] = dw_min * pair.g_scale
        if dw_min_std is not None:
            changes["dw_min_std"] = dw_min_std
        if w_max_dtod is not None or w_min_dtod is not None:
            changes["w_max_dtod"] = max(w_max_dtod or 0.0, w_min_dtod or 0.0)
    elif isinstance(inner, PCMDevice):
        changes = {}
        if dw_min is not None:
            changes["dg"] = dw_min * pair.g_scale
        if dw_min_std is not None:
            changes["dg_std"] = dw_min_std
        if w_max_dtod is not None or w_min_dtod is not None:
            changes["g_max_dtod"] = max(w_max_dtod or 0.0, w_min_dtod or 0.0)
    else:  # a jump table: scale the table so that its first step is dw_min; spread relative to each step
        scale = 1.0 if dw_min is None else dw_min * pair.g_scale / inner.nominal_step
        mean = tuple(m * scale for m in inner.mean)
        std = tuple(s * scale for s in inner.std) if dw_min_std is None else tuple(abs(m) * dw_min_std for m in mean)
        changes = {"mean": mean, "std": std}  # the table's g_max has no spread
    return {**fields, **rest, "device": inner.replace(**changes)}


def _device(name: str, **fields) -> DeviceConfig:
    cls = _REGISTRY[name.split("[")[0]]
    base = VARIANTS.get(name, {})
    if cls.capabilities.per_device_state:
        return cls(**_pair_fields(cls, base, **fields))
    return cls(**{**base, **fields})


def _params(device: DeviceConfig, seed: int = 0):
    return device.draw_parameters(SHAPE, torch.Generator().manual_seed(seed))


def test_every_pulsed_family_is_checked():
    assert {
        "ConstantStepDevice", "LinearStepDevice", "SoftBoundsDevice", "PowStepDevice", "ExpStepDevice",
        "PiecewiseStepDevice", "SoftBoundsReferenceDevice", "PowStepReferenceDevice",
    } <= set(PULSED)


@pytest.mark.parametrize("name", PULSED)
def test_contract_fields(name):
    device = _device(name)
    assert isinstance(device.capabilities, DeviceCapabilities)
    assert device.nominal_step > 0
    model = device.model()
    params = _params(device)
    assert params.shape == (len(model.param_names), *SHAPE)
    assert set(model.param_names) >= {"w_min", "w_max"}
    assert torch.all(model.plane(params, "w_min") < 0) and torch.all(model.plane(params, "w_max") > 0)


@pytest.mark.parametrize("name", PULSED)
def test_parameters_are_deterministic_per_seed(name):
    device = _device(name)
    assert torch.equal(_params(device, 3), _params(device, 3))
    assert not torch.equal(_params(device, 3), _params(device, 4))


def _start(device, params, seed=1):
    model = device.model()
    g = torch.Generator().manual_seed(seed)
    low, high = model.plane(params, "w_min"), model.plane(params, "w_max")
    return low + (high - low) * torch.rand(SHAPE, generator=g)


@pytest.mark.parametrize("name", PULSED)
@pytest.mark.parametrize("up", [True, False])
def test_n_pulses_equal_n_single_pulses(name, up):
    """The response to n pulses at once (closed form or internal loop) is n single pulses."""
    device = _device(name, dw_min=0.01)
    model = device.model()
    drawn = _params(device)
    # Each run on its own copy: a device with per-device state updates it in place.
    params = drawn.clone()
    w0 = model.program(_start(device, drawn), params)
    direction = torch.full(SHAPE, up)
    n = 7
    at_once = model.apply_pulses(w0, torch.full(SHAPE, float(n)), direction, params, None)
    params = drawn.clone()
    one_by_one = model.program(w0, params)
    for _ in range(n):
        one_by_one = model.apply_pulses(one_by_one, torch.ones(SHAPE), direction, params, None)
    assert torch.allclose(at_once, one_by_one, atol=1e-5), float((at_once - one_by_one).abs().max())
    # Moving in the pulse direction, never past the device's bounds.
    moved = (at_once - w0) if up else (w0 - at_once)
    assert torch.all(moved >= -1e-7)


@pytest.mark.parametrize("name", PULSED)
def test_bounds_hold_under_many_noisy_pulses(name):
    device = _device(name, dw_min=0.05, dw_min_std=1.0)
    model = device.model()
    params = _params(device)
    g = torch.Generator().manual_seed(2)
    w = model.program(torch.zeros(SHAPE), params)
    for k in range(60):
        w = model.apply_signed_pulses(w, torch.randint(-6, 7, SHAPE, generator=g).float(), params, g)
    assert torch.all(w >= model.plane(params, "w_min")) and torch.all(w <= model.plane(params, "w_max"))


#: Devices whose first pulses from weight 0 start at a bound with noise larger than the steps (the
#: one-sided PCM member: its noise floor 0.042 against steps of 0.002, clipped at 0), where the
#: first-order spread below does not hold; their noise is checked in test_device_families.
NOT_FIRST_ORDER = {"OneSidedPairDevice[pcm-peer]"}


@pytest.mark.parametrize("name", sorted(set(PULSED) - NOT_FIRST_ORDER))
def test_mean_and_variance_of_n_noisy_pulses(name):
    """From the middle of the range: the mean of n noisy pulses is the noise-free response, and
    its spread is c2c · sqrt(Σ step²) to first order (c2c · step · sqrt(n) for a constant step;
    c2c · dw · sqrt(n) for additive noise; c2c · sqrt(Σ (|step| + add + slope |w|)²) with the
    exponential step's complex noise)."""
    c2c, n, draws = 0.3, 5, 4000
    device = _device(name, dw_min=0.002, dw_min_std=c2c, w_max_dtod=0.0, w_min_dtod=0.0)
    model = device.model()
    drawn = _params(device)[:, :1, :1].expand(-1, draws, 1).contiguous()  # one device, many draws
    params = drawn.clone()  # a copy per run: a device with per-device state updates it in place
    w0 = model.program(torch.zeros(draws, 1), params)
    counts = torch.full((draws, 1), float(n))
    up = torch.ones(draws, 1, dtype=torch.bool)
    clean = model.apply_pulses(w0, counts, up, params, None)
    params = drawn.clone()
    noisy = model.apply_pulses(model.program(w0, params), counts, up, params, torch.Generator().manual_seed(5))
    change = clean[0, 0] - w0[0, 0]
    steps = []  # noise-free single steps along the path
    params = drawn[:, :1].clone()
    w = model.program(w0[:1], params)
    add, slope = getattr(model, "noise_add", 0.0), getattr(model, "noise_slope", 0.0)
    for _ in range(n):
        nxt = model.apply_pulses(w, torch.ones(1, 1), up[:1], params, None)
        steps.append(abs(float(nxt - w)) + add + slope * abs(float(w)))
        w = nxt
    spread = c2c * math.sqrt(sum(s * s for s in steps))
    if getattr(model, "mult_noise", True) is False:
        # Additive noise (SoftBoundsReferenceDevice's default): σ · dw per pulse whatever the weight.
        spread = c2c * float(model.plane(params, "dw_up")[0, 0]) * math.sqrt(n)
    assert abs(float(noisy.mean()) - float(clean[0, 0])) < 5 * spread / math.sqrt(draws)
    assert abs(float(noisy.std()) / spread - 1) < 0.1, (float(noisy.std()), spread)
    assert float(change) > 0


@pytest.mark.parametrize("name", PULSED)
def test_compiled_response_equals_the_torch_response(name):
    """Noise-free, at random weights and counts of both signs, device by device."""
    pytest.importorskip("numba")
    import numpy as np
    from numba import njit

    device = _device(name, dw_min=0.01)
    model = device.model()
    if not device.capabilities.compiled:
        assert model.compiled_response() is None
        return
    respond = model.compiled_response()

    @njit
    def apply_all(w, counts, packed):
        out = np.empty_like(w)
        for j in range(w.shape[0]):
            for i in range(w.shape[1]):
                out[j, i] = respond(w[j, i], counts[j, i], packed, j, i, 0, 0.0, 0.0)
        return out

    params = _params(device)
    w0 = _start(device, params, seed=7)
    counts = torch.randint(-8, 9, SHAPE, generator=torch.Generator().manual_seed(8))
    torch_result = model.apply_signed_pulses(w0, counts.float(), params, None)
    packed = model.pack_for_kernel(params.unsqueeze(-1)).numpy()  # (out, in, 1, P')
    compiled = apply_all(w0.double().numpy(), counts.numpy(), packed)
    assert np.allclose(compiled, torch_result.double().numpy(), atol=1e-6)


@pytest.mark.parametrize("name", PULSED)
def test_tile_state_round_trip(name):
    config = TileConfig(device=_device(name))
    tile = AnalogTile(5, 4, config, seed=3)
    tile.set_weights(torch.rand(5, 4) * 0.2 - 0.1)
    tile.stash(torch.rand(2, 4), torch.randn(2, 5) * 0.5)
    tile.update(0.05)
    other = AnalogTile(5, 4, config, seed=99)
    other.load_state_dict(tile.state_dict())
    for a, b in zip(tile.state_dict().values(), other.state_dict().values()):
        if torch.is_tensor(a):
            assert torch.equal(a, b)
    # Continuing gives the same draws.
    for t in (tile, other):
        t.stash(torch.ones(1, 4), torch.ones(1, 5))
        t.update(0.05)
    assert torch.equal(tile.weight, other.weight)


def test_missing_capability_is_refused_by_name():
    import dataclasses

    from insitu.devices import ConstantStepDevice
    from insitu.replicas import ReplicatedTile

    @dataclasses.dataclass
    class Unstackable(ConstantStepDevice):  # not registered: a family that declares no lockstep form
        capabilities = DeviceCapabilities()

    with pytest.raises(ConfigError, match="lockstep"):
        ReplicatedTile(3, 2, [TileConfig(device=Unstackable())] * 2)


def _deterministic_update(name: str, x: torch.Tensor, d: torch.Tensor):
    """``(device, update config, lr)`` for which an update draws nothing: expected pulses; or, for
    a device that takes whole pulses only (per-device state), stochastic trains whose nonzero
    lines fire in every slot (``Cx |x_i|, Cd |δ_j| >= 1``) and a device without pulse-to-pulse noise."""
    from insitu.update import PulseUpdateConfig

    device = _device(name)
    if not device.capabilities.per_device_state:
        return device, PulseUpdateConfig(pulse_type="expected", bl=10), 0.05
    device = _device(name, dw_min_std=0.0)
    smallest = float(torch.cat([x[x != 0].abs(), d[d != 0].abs()]).min())
    update = PulseUpdateConfig(bl=10)
    return device, update, 1.5 * update.bl * device.nominal_step / smallest**2  # Cx = Cd = sqrt(1.5) / smallest


@pytest.mark.parametrize("name", PULSED)
def test_replicas_in_lockstep_update_as_separate_tiles(name):
    # Every device with the lockstep capability runs stacked (the engine's layout, the model's
    # own response); with an update that draws nothing the replicas equal separate tiles, in
    # their weights and in their parameters (the state planes of a device with per-device state).
    from insitu.replicas import ReplicatedTile

    x = torch.tensor([[0.9, -0.5, 0.3, 0.0]])
    d = torch.tensor([[0.4, -0.8, 0.1, 0.6, -0.2]])
    device, update, lr = _deterministic_update(name, x, d)
    if not device.capabilities.lockstep or (device.effects() is not None and device.effects().active):
        with pytest.raises(ConfigError, match="lockstep|device effects"):
            ReplicatedTile(5, 4, [TileConfig(device=device)] * 2, seeds=[1, 2])
        return
    config = TileConfig(device=device, update=update)
    replicas = ReplicatedTile(5, 4, [config, config], seeds=[1, 2])
    drawn = replicas.device_params.clone()
    start = torch.rand(2, 5, 4, generator=torch.Generator().manual_seed(3)) * 0.4 - 0.2
    replicas.set_weights(start)
    for _ in range(3):
        replicas.stash(x.expand(2, 1, 4), d.expand(2, 1, 5))
        replicas.update(lr)
    for r, seed in enumerate((1, 2)):
        single = AnalogTile(5, 4, config, seed=seed)
        assert torch.equal(single.device_params, drawn[:, r])
        single.set_weights(start[r])
        for _ in range(3):
            single.stash(x, d)
            single.update(lr)
        torch.testing.assert_close(replicas.weight[r], single.weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(replicas.device_params[:, r], single.device_params, rtol=1e-5, atol=1e-6)


def test_a_device_without_a_nominal_step_says_what_to_add():
    import dataclasses

    @dataclasses.dataclass
    class Stepless(DeviceConfig):
        pass

    with pytest.raises(ConfigError, match="nominal_step"):
        Stepless().nominal_step
