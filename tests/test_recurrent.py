"""Analog RNN/GRU/LSTM: equivalence with torch.nn on ideal hardware, pulsed training, state, errors."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from insitu import AnalogSGD, AnalogTile, IdealDevice, IOConfig, TileConfig
from insitu.nn import (
    AnalogGRU, AnalogGRUCell, AnalogLinear, AnalogLSTM, AnalogLSTMCell, AnalogRNN, AnalogRNNCell, analog_linear,
    convert_to_analog, convert_to_digital,
)
from insitu.presets import get_preset

IDEAL = TileConfig(device=IdealDevice(), forward=IOConfig.perfect(), backward=IOConfig.perfect())
TOL = {"atol": 1e-6, "rtol": 0.0}

SHAPES = [  # (num_layers, bidirectional, batch_first)
    (1, False, False),
    (1, True, True),
    (2, False, True),
    (2, True, False),
]


def _final_h(state):
    return state[0] if isinstance(state, tuple) else state


def _loss(output, state):
    """Depends on every output and on h_n (and c_n), so all paths of the graph carry gradient."""
    h = _final_h(state)
    loss = output.square().sum() + h.sin().sum()
    if isinstance(state, tuple):
        loss = loss + state[1].cos().sum()
    return loss


@pytest.mark.parametrize("torch_class", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("num_layers, bidirectional, batch_first", SHAPES)
def test_ideal_recurrent_layer_equals_torch_forward_backward_and_sgd_step(torch_class, num_layers, bidirectional, batch_first):
    torch.manual_seed(0)
    ref = torch_class(5, 6, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    analog = convert_to_analog(ref, IDEAL, bias_on_array=False)
    assert type(analog).__name__ == "Analog" + torch_class.__name__
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 5, generator=gen)  # (B, T, I) or (T, B, I): both valid shapes
    x_ref, x_an = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, state_ref = ref(x_ref)
    out_an, state_an = analog(x_an)
    assert out_an.shape == out_ref.shape
    torch.testing.assert_close(out_an, out_ref, **TOL)
    if isinstance(state_ref, tuple):
        for a, r in zip(state_an, state_ref):
            torch.testing.assert_close(a, r, **TOL)
    else:
        torch.testing.assert_close(state_an, state_ref, **TOL)

    _loss(out_ref, state_ref).backward()
    _loss(out_an, state_an).backward()
    torch.testing.assert_close(x_an.grad, x_ref.grad, **TOL)

    torch.optim.SGD(ref.parameters(), lr=0.1).step()
    AnalogSGD(analog.parameters(), lr=0.1).step()
    weights = analog.get_weights()
    assert set(weights) == {name for name, _ in ref.named_parameters()}
    moved = 0.0
    for name, p in ref.named_parameters():
        torch.testing.assert_close(weights[name], p.detach(), **TOL)
        moved = max(moved, (p.grad.abs().max().item()))
    assert moved > 1e-3  # the step did change the weights: the comparison above is not vacuous


@pytest.mark.parametrize("torch_class", [nn.LSTM, nn.GRU, nn.RNN])
def test_bias_on_array_forward_and_input_gradient_equal_torch(torch_class):
    torch.manual_seed(4)
    ref = torch_class(4, 5, num_layers=2, bidirectional=True)
    analog = convert_to_analog(ref, IDEAL, bias_on_array=True)
    assert all(cell.bias_ih is None for cell in analog.cells)  # the biases live on the arrays
    x = torch.randn(6, 2, 4, generator=torch.Generator().manual_seed(5))
    x_ref, x_an = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, state_ref = ref(x_ref)
    out_an, state_an = analog(x_an)
    torch.testing.assert_close(out_an, out_ref, **TOL)
    _loss(out_ref, state_ref).backward()
    _loss(out_an, state_an).backward()
    torch.testing.assert_close(x_an.grad, x_ref.grad, **TOL)


def test_each_time_step_stashes_one_pair_per_sample_on_the_one_lstm_array():
    torch.manual_seed(0)
    lstm = AnalogLSTM(3, 4, config=IDEAL, seed=2)
    tile = lstm.cells[0].tile
    assert (tile.out_features, tile.in_features) == (16, 7)  # 4 gates x H, I + H (Gokmen et al. 2018)
    out, _ = lstm(torch.randn(5, 2, 3))
    out.sum().backward()
    x, d = tile.take_pending()
    assert x.shape == (5 * 2, 7) and d.shape == (5 * 2, 16)


def test_gru_uses_two_arrays_for_input_and_recurrent_parts():
    cell = AnalogGRUCell(3, 4, config=IDEAL, seed=0)
    assert (cell.tile_ih.out_features, cell.tile_ih.in_features) == (12, 3)
    assert (cell.tile_hh.out_features, cell.tile_hh.in_features) == (12, 4)
    assert cell.tile_ih.seed != cell.tile_hh.seed


@pytest.mark.parametrize(
    "analog_class, torch_class",
    [(AnalogRNNCell, nn.RNNCell), (AnalogLSTMCell, nn.LSTMCell), (AnalogGRUCell, nn.GRUCell)],
)
def test_cells_equal_torch_cells_batched_and_unbatched(analog_class, torch_class):
    torch.manual_seed(1)
    ref = torch_class(3, 4)
    cell = analog_class(3, 4, config=IDEAL, seed=0)
    cell.set_weights(ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
    gen = torch.Generator().manual_seed(2)
    x, h = torch.randn(2, 3, generator=gen), torch.randn(2, 4, generator=gen)
    hx = (h, torch.randn(2, 4, generator=gen)) if torch_class is nn.LSTMCell else h
    for xi, hi in ((x, hx), (x[0], tuple(s[0] for s in hx) if isinstance(hx, tuple) else hx[0])):
        got, want = cell(xi, hi), ref(xi, hi)
        for a, r in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert a.shape == r.shape
            torch.testing.assert_close(a, r, **TOL)


def test_unbatched_input_and_initial_state_match_torch():
    torch.manual_seed(2)
    ref = nn.LSTM(3, 4, num_layers=2)
    analog = convert_to_analog(ref, IDEAL, bias_on_array=False)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, generator=gen)
    h0, c0 = torch.randn(2, 4, generator=gen), torch.randn(2, 4, generator=gen)
    out_ref, (h_ref, c_ref) = ref(x, (h0, c0))
    out_an, (h_an, c_an) = analog(x, (h0, c0))
    for a, r in ((out_an, out_ref), (h_an, h_ref), (c_an, c_ref)):
        assert a.shape == r.shape
        torch.testing.assert_close(a, r, **TOL)


def test_convert_to_digital_round_trip_and_model_with_recurrent_children():
    torch.manual_seed(3)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 6, batch_first=True, bidirectional=True)
            self.head = nn.Linear(12, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    net = Net()
    analog = convert_to_analog(net, IDEAL)
    assert isinstance(analog.rnn, AnalogGRU) and isinstance(analog.head, AnalogLinear)
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(analog(x), net(x), **TOL)
    back = convert_to_digital(analog)
    assert type(back.rnn) is nn.GRU and back.rnn.bidirectional and back.rnn.batch_first
    torch.testing.assert_close(back(x), net(x), **TOL)


def test_state_dict_round_trip_restores_weights_devices_and_generators():
    config = get_preset("gokmen-vlasov-2016")
    lstm = AnalogLSTM(3, 4, num_layers=2, config=config, seed=7)
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0))
    lstm(x)[0].sum().backward()
    AnalogSGD(lstm.parameters(), lr=0.01).step()
    buffer = io.BytesIO()
    torch.save(lstm.state_dict(), buffer)
    buffer.seek(0)
    restored = AnalogLSTM(3, 4, num_layers=2, config=config, seed=123)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    for a, b in zip(lstm.cells, restored.cells):
        assert torch.equal(a.tile.weight, b.tile.weight)
        assert torch.equal(a.tile.device_params, b.tile.device_params)
        torch.testing.assert_close(a.bias_ih, b.bias_ih, atol=0, rtol=0)
    # Same generator state: the next noisy forward passes agree draw for draw.
    assert torch.equal(lstm(x)[0], restored(x)[0])


def test_pulsed_lstm_learns_a_small_sequence_task():
    """2016 device and IO (Gokmen & Vlasov 2016): the class shifts the first feature of every
    step by ±0.4 under uniform noise of ±0.5, so the evidence accumulates over the sequence.
    (A float LSTM gets from 0.69 to 0.22 here; the pulsed one, seeded, from 0.69 to 0.50.)"""
    torch.manual_seed(0)
    config = get_preset("gokmen-vlasov-2016")
    model = nn.ModuleDict({
        "lstm": AnalogLSTM(2, 8, batch_first=True, config=config, seed=1),
        "head": AnalogLinear(8, 2, config=config, seed=2),
    })
    opt = AnalogSGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(150):
        y = torch.randint(0, 2, (8,), generator=gen)
        x = torch.rand(8, 6, 2, generator=gen) - 0.5
        x[:, :, 0] += 0.4 * (2 * y[:, None] - 1)
        out, _ = model["lstm"](x)
        loss = nn.functional.cross_entropy(model["head"](out[:, -1]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:30]) / 30, sum(losses[-30:]) / 30
    assert last < first - 0.1, (first, last)
    # 150 steps x 8 samples x 6 time steps: every step's pair went through the pulsed update.
    assert model["lstm"].cells[0].tile.counters.rank1_updates == 150 * 8 * 6


def test_analog_linear_function_matches_the_layer_and_checks_width():
    torch.manual_seed(0)
    tile = AnalogTile(3, 4, IDEAL, seed=0)
    x = torch.randn(2, 5, 4, requires_grad=True)
    w = tile.get_weights()
    y = analog_linear(x, tile, bias=torch.ones(3))
    torch.testing.assert_close(y, x @ w.t() + 1)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(2, 5, 3) @ w)
    assert tile.take_pending()[0].shape == (10, 4)
    with pytest.raises(ValueError, match="last dimension of x must be 4"):
        analog_linear(torch.randn(2, 3), tile)


def test_bad_inputs_say_what_to_change():
    lstm = AnalogLSTM(3, 4, num_layers=2, batch_first=True, config=IDEAL)
    with pytest.raises(ValueError, match=r"\(B, T, I\).*input_size = 3"):
        lstm(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 2, 4\)"):
        lstm(torch.randn(2, 5, 3), (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match="proj_size"):
        AnalogLSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="proj_size"):
        convert_to_analog(nn.LSTM(3, 4, proj_size=2), IDEAL)
    with pytest.raises(TypeError, match="PackedSequence"):
        packed = nn.utils.rnn.pack_padded_sequence(torch.randn(2, 5, 3), [5, 3], batch_first=True)
        lstm(packed)
    with pytest.raises(ValueError, match="nonlinearity"):
        AnalogRNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout"):
        AnalogGRU(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(16, 4\)"):
        lstm.cells[0].set_weights(torch.zeros(16, 3), torch.zeros(16, 3))


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    lstm = AnalogLSTM(3, 4, num_layers=2, dropout=0.5, config=IDEAL, seed=0)
    x = torch.randn(5, 2, 3)
    lstm.eval()
    a, b = lstm(x)[0], lstm(x)[0]
    assert torch.equal(a, b)
    lstm.train()
    torch.manual_seed(1)
    c = lstm(x)[0]
    assert not torch.allclose(a, c)
