"""The compiled analog product (insitu.io_compiled) against the reference analog_mvm.

On the compiled CPU backend a tile computes its forward and backward products with the
periphery it covers (input bound, additive output noise, output bound, noise management,
iterative bound management) in compiled calls: at small batches all in one call, at larger ones
around one BLAS product. It must be analog_mvm's product exactly without noise (to float32
rounding), have its noise distribution with noise, clip and manage where it does, and leave
every setting it does not cover to analog_mvm.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("numba")

from insitu.io import IOConfig, analog_mvm  # noqa: E402
from insitu.io_compiled import MAX_BATCH, covers_io  # noqa: E402
from insitu.presets import get_preset  # noqa: E402
from insitu.tile import AnalogTile  # noqa: E402
from insitu.update.kernels import use_backend  # noqa: E402


def _tile(forward: IOConfig, backward: IOConfig | None = None, out=40, inp=60, seed=3) -> AnalogTile:
    config = get_preset("gokmen-vlasov-2016").replace(forward=forward, backward=backward or forward)
    tile = AnalogTile(out, inp, config, seed=seed)
    g = torch.Generator().manual_seed(seed)
    tile.set_weights((torch.rand(out, inp, generator=g) * 2 - 1) * 0.5)
    return tile


def _inputs(batch: int, n: int, scale: float = 1.5, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, n, generator=g) * 2 - 1) * scale  # beyond the input bound 1


def test_without_noise_it_is_the_reference_product_with_its_bounds():
    io = IOConfig(inp_bound=1.0, out_noise=0.0, out_bound=3.0)
    tile = _tile(io)
    for batch in (1, MAX_BATCH):
        x, d = _inputs(batch, 60), _inputs(batch, 40, seed=2)
        with use_backend("compiled"):
            y, z = tile.forward(x), tile.backward(d)
        w = tile.get_weights()
        assert "io_covers" in tile._kernel_cache  # the compiled product ran
        torch.testing.assert_close(y, analog_mvm(x, w.t(), io), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(z, analog_mvm(d, w, io), rtol=1e-5, atol=1e-5)
        assert float(y.abs().max()) <= 3.0 and bool((y.abs() == 3.0).any())  # the output bound clips


def test_the_output_noise_has_the_reference_distribution_and_comes_from_the_tile_stream():
    io = IOConfig(inp_bound=1.0, out_noise=0.06, out_bound=12.0)
    tile = _tile(io)
    x = _inputs(1, 60)
    w = tile.get_weights()
    exact = analog_mvm(x, w.t(), IOConfig(inp_bound=1.0, out_noise=0.0, out_bound=12.0))
    draws = 2000
    with use_backend("compiled"):
        before = tile.generator.get_state()
        noise = torch.cat([tile.forward(x) - exact for _ in range(draws)])
        assert torch.equal(tile.generator.get_state(), before)  # the torch generator drew nothing
    assert abs(float(noise.mean())) < 5 * 0.06 / math.sqrt(noise.numel())
    assert abs(float(noise.std()) / 0.06 - 1) < 0.03
    assert abs(float(torch.corrcoef(torch.stack([noise[:-1, 0], noise[1:, 0]]))[0, 1])) < 0.1  # fresh per product


def test_same_seed_same_products_and_another_seed_others():
    io = get_preset("gokmen-vlasov-2016").forward
    runs = []
    for seed in (3, 3, 4):
        tile = _tile(io, seed=seed)
        tile.set_weights(torch.full((40, 60), 0.1))
        with use_backend("compiled"):
            runs.append(torch.cat([tile.forward(_inputs(1, 60)) for _ in range(5)]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("batch", [1, 3, 50])
@pytest.mark.parametrize("bound_management", ["none", "iterative"])
@pytest.mark.parametrize("noise_management", ["none", "abs_max", "max", "average_abs_max", "constant"])
def test_noise_and_bound_management_without_noise_are_the_reference_product(noise_management, bound_management, batch):
    # Gokmen, Onen & Haensch 2017: inputs scaled by max|x| (or the batch's mean of it, or a
    # constant), passes repeated with halved inputs while an output saturates. A low output
    # bound makes bound management act on most vectors; row 0 is all zeros (not scaled).
    io = IOConfig(inp_bound=1.0, out_noise=0.0, out_bound=3.0, noise_management=noise_management,
                  bound_management=bound_management, nm_thres=2.0 if noise_management == "constant" else 0.0)
    assert covers_io(io)
    tile = _tile(io)
    x, d = _inputs(batch, 60), _inputs(batch, 40, seed=2)
    x[0] = 0.0
    with use_backend("compiled"):
        before = tile.generator.get_state()
        y, z = tile.forward(x), tile.backward(d)
        assert torch.equal(tile.generator.get_state(), before)  # the compiled product ran
    w = tile.get_weights()
    expected_y, expected_z = analog_mvm(x, w.t(), io), analog_mvm(d, w, io)
    torch.testing.assert_close(y, expected_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z, expected_z, rtol=1e-5, atol=1e-5)
    if bound_management == "iterative" and batch > 1:
        assert float(expected_y.abs().max()) > 3.0  # bound management acted in this case


def test_noise_management_caps_the_scale_at_nm_thres():
    io = IOConfig(inp_bound=1.0, out_noise=0.0, out_bound=3.0, noise_management="abs_max", nm_thres=0.5)
    tile = _tile(io)
    for batch in (1, 20):
        x = _inputs(batch, 60)
        with use_backend("compiled"):
            y = tile.forward(x)
        torch.testing.assert_close(y, analog_mvm(x, tile.get_weights().t(), io), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 20])
def test_managed_noise_and_repeated_passes_have_the_reference_distribution(batch):
    # One vector whose exact output (about 14: weights near 0.5, within each device's bounds)
    # exceeds the bound 12: the first pass saturates, the second, with the input halved, gives
    # 2 (y/2 + σξ): mean y, std 2σ, on both paths; the other output (about 3) is repeated with
    # it (the whole vector is passed again): std 2σ as well.
    io = IOConfig(inp_bound=1.0, out_noise=0.06, out_bound=12.0, noise_management="abs_max", bound_management="iterative")
    tile = _tile(io, out=2, inp=30)
    tile.set_weights(torch.stack([torch.full((30,), 0.5), torch.full((30,), 0.1)]))
    x = torch.ones(batch, 30)  # max|x| = 1: no scaling
    exact = float(tile.get_weights()[0].sum())
    assert 12.5 < exact < 15.0
    draws = 3000 // batch
    samples = {}
    for backend in ("compiled", "torch"):
        with use_backend(backend):
            samples[backend] = torch.cat([tile.forward(x) for _ in range(draws)])
    for backend, y in samples.items():
        assert abs(float(y[:, 0].mean()) - exact) < 5 * 0.12 / math.sqrt(len(y)), backend
        assert abs(float(y[:, 0].std()) / 0.12 - 1) < 0.06, backend
        assert abs(float(y[:, 1].std()) / 0.12 - 1) < 0.06, backend
    assert float(samples["compiled"][:, 0].max()) > 12.0  # repeated, not clipped


@pytest.mark.parametrize("batch", [1, 20])
def test_noise_management_scales_the_output_noise_back_with_the_output(batch):
    # Inputs scaled up by 1/max|x| = 4 before the DAC, outputs down by 4 after the ADC: the
    # output noise σ arrives as σ/4 (the point of noise management).
    io = IOConfig(inp_bound=1.0, out_noise=0.06, out_bound=12.0, noise_management="abs_max")
    tile = _tile(io)
    x = _inputs(batch, 60, scale=0.25)
    x[:, 0] = 0.25
    exact = analog_mvm(x, tile.get_weights().t(), io.replace(out_noise=0.0))
    with use_backend("compiled"):
        noise = torch.cat([tile.forward(x) - exact for _ in range(2000 // batch)])
    assert abs(float(noise.std()) / (0.06 / 4) - 1) < 0.03


@pytest.mark.parametrize(
    "change",
    [dict(bound_management="shift"), dict(out_bits=8), dict(inp_bits=8),
     dict(w_noise=0.01), dict(inp_noise=0.01), dict(ir_drop=0.01), dict(out_noise_asymmetry=0.1)],
)
def test_settings_it_does_not_cover_run_the_reference(change):
    io = IOConfig(inp_bound=1.0, out_noise=0.06, out_bound=12.0).replace(**change)
    assert not covers_io(io)
    tile = _tile(io)
    with use_backend("compiled"):
        before = tile.generator.get_state()
        tile.forward(_inputs(1, 60))
    assert not torch.equal(tile.generator.get_state(), before)  # analog_mvm drew from the torch generator


def test_evaluations_at_large_batches_of_the_plain_periphery_and_the_torch_backend_run_the_reference():
    # Managed IO runs compiled at any batch (above); the plain periphery above MAX_BATCH only in
    # training, so that evaluations (eval()) draw from the torch generator, not the update's stream.
    io = IOConfig(inp_bound=1.0, out_noise=0.06, out_bound=12.0)
    for backend, batch, training in (("compiled", MAX_BATCH + 1, False), ("torch", 1, True), ("torch", 1, False)):
        tile = _tile(io).train(training)
        with use_backend(backend):
            before = tile.generator.get_state()
            tile.forward(_inputs(batch, 60))
        assert not torch.equal(tile.generator.get_state(), before)


def test_training_at_large_batches_of_the_plain_periphery_runs_compiled_on_the_kernel_stream():
    """In training the plain periphery above MAX_BATCH is compiled: its noise comes from the
    tile's kernel stream (the torch generator untouched), seeded, and equal to the reference's
    product without noise."""
    io = IOConfig(inp_bound=1.0, out_noise=0.06, out_bound=12.0)
    x, d = _inputs(MAX_BATCH + 5, 60), _inputs(MAX_BATCH + 5, 40, seed=2)
    runs = []
    for _ in range(2):
        tile = _tile(io)
        with use_backend("compiled"):
            generator, stream = tile.generator.get_state(), tile.pulse_rng.clone()
            runs.append((tile.forward(x), tile.backward(d)))
        assert torch.equal(tile.generator.get_state(), generator)
        assert not torch.equal(tile.pulse_rng, stream)
    assert all(torch.equal(a, b) for a, b in zip(*runs))  # same seed, same products
    quiet = _tile(io.replace(out_noise=0.0))
    with use_backend("compiled"):
        y, z = quiet.forward(x), quiet.backward(d)
    w = quiet.get_weights()
    torch.testing.assert_close(y, analog_mvm(x, w.t(), io.replace(out_noise=0.0)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z, analog_mvm(d, w, io.replace(out_noise=0.0)), rtol=1e-5, atol=1e-5)
    # the noise: output minus the noiseless product, its spread the configured 0.06 (unsaturated)
    noise = (runs[0][0] - analog_mvm(x, _tile(io).get_weights().t(), io.replace(out_noise=0.0))).flatten()
    assert abs(noise.std().item() - 0.06) < 0.015 and abs(noise.mean().item()) < 0.02


def _plan_products(tile, x, d):
    with use_backend("compiled"):
        return tile.forward(x), tile.backward(d)


def test_the_kept_plan_gives_the_products_of_the_first_call_and_follows_in_place_writes():
    # The first compiled call keeps a plan (io_compiled.ProductPlan); later calls run on it: the
    # same products as a fresh tile's first call, and weights written in place are read.
    io = IOConfig(inp_bound=1.0, out_noise=0.0, out_bound=3.0)
    x, d = _inputs(1, 60), _inputs(1, 40, seed=2)
    tile = _tile(io)
    first = _plan_products(tile, x, d)
    assert "product" in tile._kernel_cache
    assert all(torch.equal(a, b) for a, b in zip(_plan_products(tile, x, d), first))
    tile.set_weights(torch.linspace(-0.4, 0.4, 40 * 60).reshape(40, 60))  # in place: the plan's view reads it
    new = tile.get_weights()  # (within each device's bounds)
    y, z = _plan_products(tile, x, d)
    assert not torch.equal(y, first[0])
    torch.testing.assert_close(y, analog_mvm(x, new.t(), io), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z, analog_mvm(d, new, io), rtol=1e-5, atol=1e-5)


def test_the_kept_plan_is_left_when_its_weights_config_or_backend_change():
    io = IOConfig(inp_bound=1.0, out_noise=0.0, out_bound=3.0)
    x, d = _inputs(1, 60), _inputs(1, 40, seed=2)
    tile = _tile(io)
    _plan_products(tile, x, d)
    # Weights in new memory (as .to(), .double() or a replaced .data leave them).
    replaced = torch.full((40, 60), 0.2)
    tile.weight.data = replaced.clone()
    y, z = _plan_products(tile, x, d)
    torch.testing.assert_close(y, analog_mvm(x, replaced.t(), io), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z, analog_mvm(d, replaced, io), rtol=1e-5, atol=1e-5)
    # A new config object: its IO settings are the ones used (here a lower output bound).
    tile.config = tile.config.replace(forward=io.replace(out_bound=0.5), backward=io.replace(out_bound=0.25))
    y, z = _plan_products(tile, x, d)
    assert float(y.abs().max()) == 0.5 and float(z.abs().max()) == 0.25
    # The torch backend: the reference product, whose noise comes from the tile's torch generator.
    tile.config = tile.config.replace(forward=io.replace(out_noise=0.06))
    with use_backend("torch"):
        before = tile.generator.get_state()
        tile.forward(x)
    assert not torch.equal(tile.generator.get_state(), before)
    # A setting it does not cover goes to the reference too (its noise from the torch generator).
    tile.config = tile.config.replace(forward=io.replace(out_noise=0.06, out_bits=8))
    with use_backend("compiled"):
        before = tile.generator.get_state()
        tile.forward(x)
    assert not torch.equal(tile.generator.get_state(), before)
    # A large batch of the plain periphery in evaluation goes to the reference as well; with noise
    # management it runs on the plan: the product of the kept weights, no torch draw.
    tile.config = tile.config.replace(forward=io.replace(out_noise=0.06))
    x_large = _inputs(MAX_BATCH + 5, 60)
    with use_backend("compiled"):
        before = tile.generator.get_state()
        tile.eval()
        tile.forward(x_large)
        tile.train()
        assert not torch.equal(tile.generator.get_state(), before)
        managed = io.replace(noise_management="abs_max")
        tile.config = tile.config.replace(forward=managed)
        tile.forward(x)  # keeps the plan for this config
        before = tile.generator.get_state()
        y = tile.forward(x_large)
        assert torch.equal(tile.generator.get_state(), before)
    torch.testing.assert_close(y, analog_mvm(x_large, replaced.t(), managed), rtol=1e-5, atol=1e-5)


def test_a_product_of_the_wrong_width_is_refused_not_read_past():
    io = IOConfig(inp_bound=1.0, out_noise=0.06, out_bound=12.0)
    tile = _tile(io)
    with use_backend("compiled"):
        tile.forward(_inputs(1, 60))  # keeps a plan
        for call, width in ((tile.forward, 59), (tile.backward, 41)):
            with pytest.raises(RuntimeError):
                call(_inputs(1, width))


def test_the_bias_columns_one_is_appended_inside_the_product_with_the_same_results(monkeypatch):
    # analog_linear(bias_column=True) at batch 1 of a plain tile appends the constant 1 in the
    # product's compiled call (no F.pad): the same outputs and draws as the product of the padded
    # inputs on a twin tile, and the padded inputs are what the update gets.
    from insitu.nn.functional import analog_linear

    io = IOConfig(inp_bound=1.0, out_noise=0.06, out_bound=3.0)
    fused, twin = _tile(io), _tile(io)
    x = _inputs(1, 59)
    padded = torch.nn.functional.pad(x, (0, 1), value=1.0)
    with use_backend("compiled"):
        outputs = [analog_linear(x, fused, bias_column=True)]  # keeps the plan
        with monkeypatch.context() as patch:
            patch.setattr(torch.nn.functional, "pad", lambda *a, **k: pytest.fail("padded outside the product"))
            outputs += [analog_linear(x, fused, bias_column=True) for _ in range(3)]
            y, inputs = fused.forward_with_bias_column(x)
        outputs.append(y)
        expected = [twin.forward(padded) for _ in range(5)]
    for got, want in zip(outputs, expected):
        assert torch.equal(got, want)
    assert torch.equal(inputs, padded)
    assert len({float(y[0, 0].detach()) for y in outputs}) > 1  # fresh noise at every pass
    # The saved inputs reach the update: backward stashes (x with its 1, δ).
    fused._pending.clear()
    x_grad = x.clone().requires_grad_()
    with use_backend("compiled"):
        analog_linear(x_grad, fused, bias_column=True).sum().backward()
    (stashed, _), = fused._pending
    assert torch.equal(stashed, padded) and x_grad.grad.shape == x.shape
