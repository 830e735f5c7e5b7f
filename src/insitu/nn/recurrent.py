"""Analog recurrent layers: ``AnalogRNN``, ``AnalogGRU``, ``AnalogLSTM`` and their cells.

The mapping is the one of Gokmen, Rasch & Haensch 2018 ("Training LSTM networks with resistive
cross-point devices", Front. Neurosci. 12:745): the input-to-hidden and hidden-to-hidden weights
of all gates of one layer (and direction) are stored side by side on **one** array of
``gates·H × (I + H)`` devices (``I`` inputs, ``H`` hidden units; 4 gates for the LSTM, 1 for the
Elman RNN). At every time step the vector ``[x_t, h_{t-1}]`` drives the rows and one analog
matrix-vector product gives the pre-activations of all gates at once; the backward pass sends
each step's ``δ_t`` through the transposed array, and each step leaves its pair
``([x_t, h_{t-1}], δ_t)`` on the tile. :class:`~insitu.optim.AnalogSGD` then applies the ``T · B``
rank-1 updates of a sequence of length ``T`` and batch ``B`` in place, in the tile's update mode
(``sequential``: one stochastic pulse train per pair, in the order backpropagation through time
produced them, i.e. last time step first; ``summed``/``batched``: as for any other layer).

The GRU needs one more array: torch's GRU (and Cho et al. 2014's) computes the candidate state
``n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))``, with the reset gate applied to the
*recurrent* contribution alone, so the array must deliver ``W_in x_t`` and ``W_hn h_{t-1}``
separately. Two arrays, ``3H × I`` (input to hidden) and ``3H × H`` (hidden to hidden), read
separately, do that with one forward product each per step and no extra reads; a single
``3H × (I + H)`` array would need a second, split read of its candidate rows (and would see the
write of each step twice). The input-to-hidden products of a whole sequence do not depend on
the recurrence, so they are computed in one call (one analog product per ``(t, b)``, with its
own noise, as before).

Biases are digital floating-point parameters by default (``bias_ih``, ``bias_hh`` as torch names
them, updated exactly by :class:`~insitu.optim.AnalogSGD`); with ``bias_on_array=True`` they
are an extra array column driven by a constant 1 (LSTM/RNN: one column holding
``b_ih + b_hh``; GRU: one column on each array).

Every layer computes through :func:`insitu.nn.functional.analog_linear`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..mapping import make_tile, reference_weight
from ..tile import AnalogTile, TileConfig
from .functional import analog_linear

__all__ = ["AnalogRNNCell", "AnalogLSTMCell", "AnalogGRUCell", "AnalogRNN", "AnalogLSTM", "AnalogGRU"]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def _derived_seeds(seed: int | None, n: int) -> list[int | None]:
    """``seed`` itself for the first tile, seeds drawn from a generator seeded with it for the others."""
    if seed is None:
        return [None] * n
    gen = torch.Generator().manual_seed(int(seed))
    return [int(seed)] + [int(torch.randint(0, 2**62, (1,), generator=gen).item()) for _ in range(n - 1)]


def _make_tile(rows: int, columns: int, config, seed, device, dtype):
    # A config may name its own tile class (the multi-conductance cell); else the RPU tile.
    # A grid of tiles (GridTile) when the array exceeds config.max_tile_size.
    return make_tile(rows, columns, config, seed=seed, device=device, dtype=dtype)


def _with_one(x: torch.Tensor) -> torch.Tensor:
    """``x`` with the constant input 1 of a bias column appended."""
    return F.pad(x, (0, 1), value=1.0)


# -- cells ------------------------------------------------------------------------------------


class _AnalogCellBase(nn.Module):
    """Shared part of the cells: shapes, biases, weights in torch's layout, input checks."""

    _gates = 1
    _torch_name = "RNNCell"

    def __init__(self, input_size: int, hidden_size: int, bias: bool, config, bias_on_array: bool, seed, device, dtype):
        super().__init__()
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self._has_bias = bool(bias)
        self.bias_on_array = bool(bias and bias_on_array)
        rows = self._gates * hidden_size
        self._build_tiles(rows, config, _derived_seeds(seed, 2), device, dtype)
        if bias and not bias_on_array:
            self.bias_ih = nn.Parameter(torch.zeros(rows, device=device, dtype=dtype))
            self.bias_hh = nn.Parameter(torch.zeros(rows, device=device, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    # One array (gates·H) × (I + H [+1]) holding [W_ih | W_hh | b] (Gokmen, Rasch & Haensch 2018).
    def _build_tiles(self, rows, config, seeds, device, dtype) -> None:
        columns = self.input_size + self.hidden_size + (1 if self.bias_on_array else 0)
        self.tile = _make_tile(rows, columns, config, seeds[0], device, dtype)

    @property
    def config(self) -> TileConfig:
        return self._tiles()[0].config

    def _tiles(self) -> list:
        return [self.tile]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise as torch does (every weight and bias uniform in ``±1/sqrt(hidden_size)``),
        drawn from the (first) tile's generator so ``seed`` fixes them, and program the arrays."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        gen = self._tiles()[0].generator
        rows = self._gates * self.hidden_size

        def draw(*shape):
            return torch.empty(*shape, device=gen.device).uniform_(-bound, bound, generator=gen)

        w_ih, w_hh = draw(rows, self.input_size), draw(rows, self.hidden_size)
        b_ih, b_hh = (draw(rows), draw(rows)) if self._has_bias else (None, None)
        self.set_weights(w_ih, w_hh, b_ih, b_hh)

    def get_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(weight_ih (G·H, I), weight_hh (G·H, H), bias_ih (G·H,) or None, bias_hh (G·H,) or None)``
        in torch's layout and gate order, as floating-point copies (a bias column on one array is
        returned as ``bias_ih``, with ``bias_hh`` zero)."""
        w = self.tile.get_weights()
        i, h = self.input_size, self.hidden_size
        w_ih, w_hh = w[:, :i].contiguous(), w[:, i : i + h].contiguous()
        if self.bias_on_array:
            b = w[:, -1].contiguous()
            return w_ih, w_hh, b, torch.zeros_like(b)
        if self.bias_ih is None:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, self.bias_ih.detach().clone(), self.bias_hh.detach().clone()

    def _check_weights(self, w_ih, w_hh, b_ih, b_hh) -> None:
        rows = self._gates * self.hidden_size
        for name, t, shape in (
            ("weight_ih", w_ih, (rows, self.input_size)),
            ("weight_hh", w_hh, (rows, self.hidden_size)),
            ("bias_ih", b_ih, (rows,)),
            ("bias_hh", b_hh, (rows,)),
        ):
            if t is not None and tuple(t.shape) != shape:
                raise ValueError(f"set_weights: {name} must have shape {shape} (gates·hidden, ...), got {tuple(t.shape)}.")
        if (b_ih is not None or b_hh is not None) and not self._has_bias:
            raise ValueError("set_weights: this cell has no bias (bias=False); pass bias_ih=None and bias_hh=None.")

    def set_weights(self, weight_ih, weight_hh, bias_ih=None, bias_hh=None) -> None:
        """Program the weights in torch's layout (clipped to the device bounds); ``None`` biases
        keep the present ones."""
        self._check_weights(weight_ih, weight_hh, bias_ih, bias_hh)
        w = torch.cat((weight_ih.detach(), weight_hh.detach()), dim=1).to(reference_weight(self.tile))
        if self.bias_on_array:
            if bias_ih is None and bias_hh is None:
                b = self.tile.get_weights()[:, -1]
            else:
                b = sum(v.detach().to(w) for v in (bias_ih, bias_hh) if v is not None)
            w = torch.cat((w, b.reshape(-1, 1)), dim=1)
        self.tile.set_weights(w)
        self._set_digital_biases(bias_ih, bias_hh)

    @torch.no_grad()
    def _set_digital_biases(self, bias_ih, bias_hh) -> None:
        if self.bias_ih is None:
            return
        if bias_ih is not None:
            self.bias_ih.copy_(bias_ih)
        if bias_hh is not None:
            self.bias_hh.copy_(bias_hh)

    # -- computation ------------------------------------------------------------------------
    def _gate_inputs(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """All gates' pre-activations ``W [x, h] + b`` ``(B, G·H)``: one analog product per sample."""
        z = torch.cat((x, h), dim=1)
        if self.bias_on_array:
            z = _with_one(z)
        y = analog_linear(z, self.tile)
        if self.bias_ih is not None:
            y = y + self.bias_ih + self.bias_hh
        return y

    def _sequence(self, x: torch.Tensor, state):
        """Run the cell over ``x`` ``(T, B, I)`` from ``state``; returns ``(outputs (T, B, H), state)``."""
        outputs = []
        for t in range(x.shape[0]):
            state = self._step(x[t], state)
            outputs.append(state[0] if isinstance(state, tuple) else state)
        return torch.stack(outputs), state

    def _check_cell_input(self, x: torch.Tensor) -> bool:
        name = type(self).__name__
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name} expected input (batch, {self.input_size}) or ({self.input_size},), got shape {tuple(x.shape)}."
            )
        return x.dim() == 2

    def _check_cell_state(self, what: str, s: torch.Tensor, batch: int, batched: bool) -> torch.Tensor:
        shape = (batch, self.hidden_size) if batched else (self.hidden_size,)
        if tuple(s.shape) != shape:
            raise ValueError(f"{type(self).__name__}: {what} must have shape {shape}, got {tuple(s.shape)}.")
        return s if batched else s.unsqueeze(0)

    def _zeros(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], self.hidden_size, device=x.device, dtype=x.dtype)

    def extra_repr(self) -> str:
        bias = f"bias={'array' if self.bias_on_array else 'digital'}" if self._has_bias else "bias=False"
        return f"{self.input_size}, {self.hidden_size}, {bias}"


class AnalogRNNCell(_AnalogCellBase):
    """A drop-in ``torch.nn.RNNCell``: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` on one array.

    The array holds ``[W_ih | W_hh]`` (``H × (I + H)`` devices, plus a bias column with
    ``bias_on_array``); every step is one analog product of ``[x, h]``.

    Args:
        input_size, hidden_size, bias, nonlinearity (``"tanh"`` or ``"relu"``): as torch.
        config: the :class:`~insitu.tile.TileConfig` of the array.
        bias_on_array: biases as an array column (driven by a constant 1) instead of digital.
        seed: seed of the tile's generator (fixes the initial weights and the devices).
        device, dtype: where the state lives.

    Shape: input ``(B, I)`` or ``(I,)``, hidden ``(B, H)`` or ``(H,)``; returns ``h'`` like ``hx``.
    """

    _gates = 1
    _torch_name = "RNNCell"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", config=None, bias_on_array=False,
                 seed=None, device=None, dtype=torch.float32):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}.")
        super().__init__(input_size, hidden_size, bias, config, bias_on_array, seed, device, dtype)
        self.nonlinearity = nonlinearity

    def _step(self, x, h):
        y = self._gate_inputs(x, h)
        return torch.tanh(y) if self.nonlinearity == "tanh" else torch.relu(y)

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        batched = self._check_cell_input(input)
        x = input if batched else input.unsqueeze(0)
        h = self._zeros(x) if hx is None else self._check_cell_state("hx", hx, x.shape[0], batched)
        h = self._step(x, h)
        return h if batched else h.squeeze(0)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}")


class AnalogLSTMCell(_AnalogCellBase):
    """A drop-in ``torch.nn.LSTMCell`` whose four gates share one array (Gokmen, Rasch & Haensch 2018).

    The array holds ``[W_ih | W_hh]`` for the gates ``i, f, g, o`` (torch's order): ``4H × (I + H)``
    devices (plus a bias column with ``bias_on_array``). Each step is one analog product of
    ``[x_t, h_{t-1}]`` giving the four gates' pre-activations; then, digitally,
    ``c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)``, ``h' = σ(o) ⊙ tanh(c')``.

    Args: as :class:`AnalogRNNCell` (without ``nonlinearity``).

    Shape: input ``(B, I)`` or ``(I,)``; ``hx`` a pair ``(h, c)`` of ``(B, H)`` or ``(H,)``;
    returns ``(h', c')``.
    """

    _gates = 4
    _torch_name = "LSTMCell"

    def __init__(self, input_size, hidden_size, bias=True, config=None, bias_on_array=False, seed=None, device=None,
                 dtype=torch.float32):
        super().__init__(input_size, hidden_size, bias, config, bias_on_array, seed, device, dtype)

    def _step(self, x, state):
        h, c = state
        i, f, g, o = self._gate_inputs(x, h).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, input: torch.Tensor, hx=None):
        batched = self._check_cell_input(input)
        x = input if batched else input.unsqueeze(0)
        if hx is None:
            state = (self._zeros(x), self._zeros(x))
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError("AnalogLSTMCell: hx must be a pair (h, c) of hidden and cell states.")
            state = tuple(self._check_cell_state(n, s, x.shape[0], batched) for n, s in zip(("h", "c"), hx))
        h, c = self._step(x, state)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class AnalogGRUCell(_AnalogCellBase):
    """A drop-in ``torch.nn.GRUCell`` on two arrays: ``3H × I`` (input) and ``3H × H`` (recurrent).

    Gates ``r, z, n`` in torch's order: ``r = σ(W_ir x + b_ir + W_hr h + b_hr)``, likewise ``z``,
    ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``, ``h' = (1 − z) ⊙ n + z ⊙ h``. The reset gate
    multiplies the recurrent contribution of ``n`` alone, so the input and recurrent products are
    read from two arrays (see the module docstring); with ``bias_on_array`` each array has its
    own bias column (``b_ih`` and ``b_hh``).

    Args: as :class:`AnalogLSTMCell`; ``seed`` seeds the input array, the recurrent array gets a
    seed drawn from it.

    Attributes: ``tile_ih``, ``tile_hh``.

    Shape: input ``(B, I)`` or ``(I,)``, hidden ``(B, H)`` or ``(H,)``; returns ``h'``.
    """

    _gates = 3
    _torch_name = "GRUCell"

    def __init__(self, input_size, hidden_size, bias=True, config=None, bias_on_array=False, seed=None, device=None,
                 dtype=torch.float32):
        super().__init__(input_size, hidden_size, bias, config, bias_on_array, seed, device, dtype)

    def _build_tiles(self, rows, config, seeds, device, dtype) -> None:
        extra = 1 if self.bias_on_array else 0
        self.tile_ih = _make_tile(rows, self.input_size + extra, config, seeds[0], device, dtype)
        self.tile_hh = _make_tile(rows, self.hidden_size + extra, config, seeds[1], device, dtype)

    def _tiles(self) -> list:
        return [self.tile_ih, self.tile_hh]

    def get_weights(self):
        """As :meth:`AnalogLSTMCell.get_weights` (both bias columns with ``bias_on_array``)."""
        w_ih, w_hh = self.tile_ih.get_weights(), self.tile_hh.get_weights()
        if self.bias_on_array:
            return w_ih[:, :-1].contiguous(), w_hh[:, :-1].contiguous(), w_ih[:, -1].contiguous(), w_hh[:, -1].contiguous()
        if self.bias_ih is None:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, self.bias_ih.detach().clone(), self.bias_hh.detach().clone()

    def set_weights(self, weight_ih, weight_hh, bias_ih=None, bias_hh=None) -> None:
        """Program the weights in torch's layout; ``None`` biases keep the present ones."""
        self._check_weights(weight_ih, weight_hh, bias_ih, bias_hh)
        for tile, w, b in ((self.tile_ih, weight_ih, bias_ih), (self.tile_hh, weight_hh, bias_hh)):
            w = w.detach().to(reference_weight(tile))
            if self.bias_on_array:
                b = tile.get_weights()[:, -1] if b is None else b.detach().to(w)
                w = torch.cat((w, b.reshape(-1, 1)), dim=1)
            tile.set_weights(w)
        self._set_digital_biases(bias_ih, bias_hh)

    def _input_part(self, x: torch.Tensor) -> torch.Tensor:
        """``W_ih x + b_ih`` for inputs ``(*, I)``: one analog product per row."""
        y = analog_linear(_with_one(x) if self.bias_on_array else x, self.tile_ih)
        return y if self.bias_ih is None else y + self.bias_ih

    def _recurrent_step(self, gi: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gh = analog_linear(_with_one(h) if self.bias_on_array else h, self.tile_hh)
        if self.bias_hh is not None:
            gh = gh + self.bias_hh
        i_r, i_z, i_n = gi.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h

    def _step(self, x, h):
        return self._recurrent_step(self._input_part(x), h)

    def _sequence(self, x, h):
        # The input products do not depend on the recurrence: all T·B of them in one call.
        gi = self._input_part(x)
        outputs = []
        for t in range(x.shape[0]):
            h = self._recurrent_step(gi[t], h)
            outputs.append(h)
        return torch.stack(outputs), h

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        batched = self._check_cell_input(input)
        x = input if batched else input.unsqueeze(0)
        h = self._zeros(x) if hx is None else self._check_cell_state("hx", hx, x.shape[0], batched)
        h = self._step(x, h)
        return h if batched else h.squeeze(0)


# -- multi-layer modules -----------------------------------------------------------------------


class _AnalogRNNBase(nn.Module):
    """Shared part of the multi-layer modules (torch's ``nn.RNNBase`` semantics)."""

    _cell_class = AnalogRNNCell
    _torch_name = "RNN"
    _has_cell_state = False

    def __init__(self, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, cell_kwargs,
                 config, bias_on_array, seed, device, dtype):
        super().__init__()
        name = type(self).__name__
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout must be a probability in [0, 1], got {dropout!r}.")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.bias_on_array = bool(bias and bias_on_array)
        directions = 2 if bidirectional else 1
        seeds = _derived_seeds(seed, num_layers * directions)
        cells = []
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * directions
            for d in range(directions):
                cells.append(self._cell_class(
                    width, hidden_size, bias=bias, config=config, bias_on_array=bias_on_array,
                    seed=seeds[layer * directions + d], device=device, dtype=dtype, **cell_kwargs,
                ))
        #: ``cells[layer * num_directions + direction]`` (direction 1: the reverse pass).
        self.cells = nn.ModuleList(cells)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def config(self) -> TileConfig:
        return self.cells[0].config

    def cell(self, layer: int, direction: int = 0) -> _AnalogCellBase:
        """The cell of ``layer`` and ``direction`` (1: reverse)."""
        return self.cells[layer * self.num_directions + direction]

    def flatten_parameters(self) -> None:
        """No-op (torch's cuDNN weight packing has no analog counterpart); for drop-in use."""

    def get_weights(self) -> dict[str, torch.Tensor]:
        """The weights under torch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), as copies."""
        out = {}
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh, b_ih, b_hh = self.cell(layer, d).get_weights()
                out[f"weight_ih_{sfx}"], out[f"weight_hh_{sfx}"] = w_ih, w_hh
                if b_ih is not None:
                    out[f"bias_ih_{sfx}"], out[f"bias_hh_{sfx}"] = b_ih, b_hh
        return out

    def set_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Program weights given under torch's names (e.g. ``dict(lstm.named_parameters())``)."""
        expected = set()
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                expected |= {f"weight_ih_{sfx}", f"weight_hh_{sfx}"} | ({f"bias_ih_{sfx}", f"bias_hh_{sfx}"} if self.bias else set())
        missing, unknown = expected - set(weights), set(weights) - expected
        if missing or unknown:
            raise ValueError(
                f"set_weights: expected the parameters {sorted(expected)} (torch's names for this shape); "
                f"missing {sorted(missing)}, unexpected {sorted(unknown)}."
            )
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                self.cell(layer, d).set_weights(
                    weights[f"weight_ih_{sfx}"], weights[f"weight_hh_{sfx}"],
                    weights.get(f"bias_ih_{sfx}"), weights.get(f"bias_hh_{sfx}"),
                )

    def _check_state(self, what, s, batch, batched):
        shape = (self.num_layers * self.num_directions, *((batch,) if batched else ()), self.hidden_size)
        if not torch.is_tensor(s) or tuple(s.shape) != shape:
            got = tuple(s.shape) if torch.is_tensor(s) else type(s).__name__
            raise ValueError(
                f"{type(self).__name__}: {what} must have shape {shape} (num_layers * num_directions, "
                f"{'batch, ' if batched else ''}hidden_size), got {got}."
            )
        return s if batched else s.unsqueeze(1)

    def forward(self, input: torch.Tensor, hx=None):
        """Run the network over a sequence.

        Args:
            input: ``(T, B, I)`` (``(B, T, I)`` with ``batch_first``) or unbatched ``(T, I)``.
            hx: initial state(s) ``(num_layers · num_directions, B, H)`` (unbatched: without
                ``B``); for the LSTM a pair ``(h_0, c_0)``. Default zeros.

        Returns:
            ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``) as torch returns them: ``output``
            ``(T, B, num_directions · H)`` (``(B, T, ...)`` with ``batch_first``), ``h_n``
            ``(num_layers · num_directions, B, H)``.
        """
        name = type(self).__name__
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError(
                f"{name} does not take a PackedSequence; pad the sequences (torch.nn.utils.rnn.pad_packed_sequence) "
                "and pass a tensor."
            )
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(
                f"{name} expected input {layout} or unbatched (T, I) with I = input_size = {self.input_size}, "
                f"got shape {tuple(input.shape)}."
            )
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        batch = x.shape[1]
        if hx is None:
            zeros = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            states = (zeros, zeros) if self._has_cell_state else zeros
        elif self._has_cell_state:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError(f"{name}: hx must be a pair (h_0, c_0).")
            states = tuple(self._check_state(n, s, batch, batched) for n, s in zip(("h_0", "c_0"), hx))
        else:
            states = self._check_state("hx", hx, batch, batched)

        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                state = (states[0][k], states[1][k]) if self._has_cell_state else states[k]
                seq = x if d == 0 else x.flip(0)
                out, state = self.cell(layer, d)._sequence(seq, state)
                outputs.append(out if d == 0 else out.flip(0))
                finals.append(state)
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)  # between layers only, as torch

        if self._has_cell_state:
            h_n = torch.stack([s[0] for s in finals])
            c_n = torch.stack([s[1] for s in finals])
        else:
            h_n = torch.stack(finals)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        if not batched:
            x = x.squeeze(1)
            h_n = h_n.squeeze(1)
            if self._has_cell_state:
                c_n = c_n.squeeze(1)
        return (x, (h_n, c_n)) if self._has_cell_state else (x, h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        s += ", bias=" + (("array" if self.bias_on_array else "digital") if self.bias else "False")
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


_COMMON_DOC = """
    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as torch.
        config: the :class:`~insitu.tile.TileConfig` of every array (default: the constant-step
            device of Gokmen & Vlasov 2016).
        bias_on_array: biases as an array column driven by a constant 1 (default: digital
            ``bias_ih``/``bias_hh`` parameters, updated exactly).
        seed: seed of the first cell's tile; the other cells get seeds drawn from it
            (``None``: drawn from torch's global generator).
        device, dtype: where the state lives.

    Attributes:
        cells: ``cells[layer * num_directions + direction]``, the per-layer, per-direction cells.

    Train with :class:`~insitu.optim.AnalogSGD`: each time step of each cell stashed one
    ``(x, δ)`` pair per sample, and ``step()`` applies them all in the tile's update mode.
    Not supported: ``PackedSequence`` inputs, ``proj_size``.
"""


class AnalogRNN(_AnalogRNNBase):
    """A drop-in ``torch.nn.RNN`` (Elman, ``tanh`` or ``relu``) with one array per layer and direction.

    Each layer and direction is an :class:`AnalogRNNCell`: ``H × (I + H)`` devices holding
    ``[W_ih | W_hh]``, one analog product of ``[x_t, h_{t-1}]`` per step.
    """

    _cell_class = AnalogRNNCell
    _torch_name = "RNN"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, config=None, bias_on_array=False, seed=None, device=None,
                 dtype=torch.float32):
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         {"nonlinearity": nonlinearity}, config, bias_on_array, seed, device, dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}")


class AnalogLSTM(_AnalogRNNBase):
    """A drop-in ``torch.nn.LSTM`` mapped as Gokmen, Rasch & Haensch 2018 map it.

    Each layer and direction is an :class:`AnalogLSTMCell`: the four gates' input and recurrent
    weights on one ``4H × (I + H)`` array, one analog product of ``[x_t, h_{t-1}]`` per step.
    Returns ``(output, (h_n, c_n))``.
    """

    _cell_class = AnalogLSTMCell
    _torch_name = "LSTM"
    _has_cell_state = True

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, *, config=None, bias_on_array=False, seed=None, device=None,
                 dtype=torch.float32):
        if proj_size != 0:
            raise ValueError(
                f"AnalogLSTM: proj_size={proj_size} (LSTM with projections) is not supported; use proj_size=0, "
                "or follow the LSTM with an AnalogLinear."
            )
        self.proj_size = 0
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, {},
                         config, bias_on_array, seed, device, dtype)


class AnalogGRU(_AnalogRNNBase):
    """A drop-in ``torch.nn.GRU``; each layer and direction an :class:`AnalogGRUCell` (two arrays,
    ``3H × I`` and ``3H × H``, because the reset gate acts on the recurrent part alone)."""

    _cell_class = AnalogGRUCell
    _torch_name = "GRU"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, *, config=None, bias_on_array=False, seed=None, device=None,
                 dtype=torch.float32):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, {},
                         config, bias_on_array, seed, device, dtype)


for _cls in (AnalogRNN, AnalogLSTM, AnalogGRU):
    _cls.__doc__ += _COMMON_DOC
del _cls
