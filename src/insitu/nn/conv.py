"""``AnalogConv1d`` and ``AnalogConv2d``: convolutions whose kernels live on analog tiles.

The mapping is the one of Gokmen, Onen & Haensch 2017 ("Training deep convolutional neural
networks with resistive cross-point devices", Front. Neurosci. 11:538): the ``M`` kernels of a
layer, each of size ``k × k × d`` (``d`` input channels), are stored as the rows of one array of
``M × (k²d + 1)`` devices, the last column holding the bias. The input image is unrolled into its
patches (im2col); for an ``N × N`` image with stride 1 and no padding there are
``n = (N − k + 1)²`` patch vectors of length ``k²d`` (plus a constant 1 for the bias). Each patch
is one analog matrix-vector product in the forward pass, each output error ``δ`` one product with
the transposed array in the backward pass, and the update is ``n`` rank-1 updates per image
(one per ``(patch, δ)`` pair) performed on the array in place.

Here the patches are extracted with :func:`torch.nn.functional.unfold` and sent through the tile
by the same autograd bridge as :class:`~insitu.nn.AnalogLinear`
(:func:`insitu.nn.functional.analog_linear`), so every patch gets its own
noise, bounds and noise/bound management, and :class:`~insitu.optim.AnalogSGD` applies the
``N · H_out · W_out`` rank-1 updates of a batch of ``N`` images. Grouped convolutions use one tile
per group, of ``M/groups × (k²d/groups [+1])`` devices.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..mapping import make_tile, reference_weight
from ..tile import AnalogTile, TileConfig
from .functional import analog_linear

__all__ = ["AnalogConv1d", "AnalogConv2d"]


def _check_int(name: str, value, minimum: int, advice: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}; {advice}")
    return value


def _tuple(name: str, value, n: int, minimum: int, advice: str) -> tuple[int, ...]:
    """``value`` as an n-tuple of integers >= ``minimum``."""
    values = (value,) * n if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(values, (tuple, list)) or len(values) != n:
        raise ValueError(f"{name} must be an integer or a tuple of {n} integers, got {value!r}.")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"{name} must be integers >= {minimum}, got {value!r}; {advice}")
    return tuple(values)


class _AnalogConvNd(nn.Module):
    """Shared implementation; the computation is always 2-d (a 1-d signal is a 1 × L image)."""

    _ndim = 2
    _torch_name = "Conv2d"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        config: TileConfig | None = None,
        bias_on_array: bool = True,
        seed: int | None = None,
        device=None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        n = self._ndim
        name = type(self).__name__
        _check_int("in_channels", in_channels, 1, "a convolution needs at least one input channel.")
        _check_int("out_channels", out_channels, 1, "a convolution needs at least one output channel (kernel).")
        _check_int("groups", groups, 1, "use groups=1 for an ordinary convolution.")
        for label, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % groups:
                raise ValueError(
                    f"{name}: {label}={channels} is not divisible by groups={groups}; choose a number of "
                    f"groups that divides both in_channels ({in_channels}) and out_channels ({out_channels})."
                )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.kernel_size = _tuple("kernel_size", kernel_size, n, 1, "every kernel dimension must be at least 1.")
        self.stride = _tuple("stride", stride, n, 1, "use stride=1 for a dense convolution.")
        self.dilation = _tuple("dilation", dilation, n, 1, "use dilation=1 for an ordinary (undilated) kernel.")
        if padding_mode != "zeros":
            raise ValueError(
                f"{name}: padding_mode={padding_mode!r} is not supported; only 'zeros' is (keep this layer "
                "digital, or pad the input yourself with torch.nn.functional.pad)."
            )
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be an integer, a tuple, 'same' or 'valid', got {padding!r}.")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' needs stride 1 (got stride={self.stride}); pad explicitly.")
            self.padding = padding
            if padding == "valid":
                pads = [(0, 0)] * n
            else:  # as torch: the odd unit of padding goes to the end
                totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
                pads = [(t // 2, t - t // 2) for t in totals]
        else:
            self.padding = _tuple("padding", padding, n, 0, "padding cannot be negative.")
            pads = [(p, p) for p in self.padding]
        # F.pad order: last dimension first, (left, right) each.
        self._pad = tuple(v for pair in reversed(pads) for v in pair)

        self.bias_on_array = bool(bias and bias_on_array)
        self._has_bias = bool(bias)
        self._patch = in_channels // groups * math.prod(self.kernel_size)  # k²d per group
        rows, columns = out_channels // groups, self._patch + (1 if self.bias_on_array else 0)
        seeds = self._group_seeds(seed)
        # As in AnalogLinear: the config's tile class, a grid of them (GridTile) past max_tile_size.
        self.tiles = nn.ModuleList(
            make_tile(rows, columns, config, seed=s, device=device, dtype=dtype) for s in seeds
        )
        if bias and not bias_on_array:
            self.bias = nn.Parameter(torch.zeros(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _group_seeds(self, seed: int | None) -> list[int | None]:
        """The first tile gets ``seed`` itself; the others seeds drawn from a generator seeded with it."""
        if seed is None or self.groups == 1:
            return [seed] * self.groups
        gen = torch.Generator().manual_seed(int(seed))
        return [int(seed)] + [int(torch.randint(0, 2**62, (1,), generator=gen).item()) for _ in range(self.groups - 1)]

    # -- weights ------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise as torch does (uniform in ``±1/sqrt(fan_in)``, ``fan_in = k²d/groups``) and program it.

        Each group's kernels (and array bias) are drawn from that group's tile generator, so ``seed``
        fixes them.
        """
        bound = 1.0 / math.sqrt(self._patch)
        rows = self.out_channels // self.groups
        for tile in self.tiles:
            gen = tile.generator
            weight = torch.empty(rows, self._patch, device=gen.device).uniform_(-bound, bound, generator=gen)
            if self.bias_on_array:
                bias = torch.empty(rows, 1, device=gen.device).uniform_(-bound, bound, generator=gen)
                weight = torch.cat((weight, bias), dim=1)
            tile.set_weights(weight)
        if self.bias is not None:
            self.bias.uniform_(-bound, bound, generator=self.tiles[0].generator)

    @property
    def tile(self) -> AnalogTile:
        """The tile of a layer with ``groups=1`` (grouped layers: see ``tiles``)."""
        if self.groups != 1:
            raise AttributeError(f"{type(self).__name__} with groups={self.groups} has one tile per group: use .tiles.")
        return self.tiles[0]

    @property
    def config(self) -> TileConfig:
        return self.tiles[0].config

    def _weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def get_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(weight (out, in/groups, *kernel_size), bias (out,) or None)`` as floating-point copies."""
        w = torch.cat([tile.get_weights() for tile in self.tiles], dim=0)
        bias = None
        if self.bias_on_array:
            w, bias = w[:, :-1], w[:, -1].contiguous()
        elif self.bias is not None:
            bias = self.bias.detach().clone()
        return w.reshape(self._weight_shape()).contiguous(), bias

    def set_weights(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Program ``weight`` ``(out, in/groups, *kernel_size)`` and ``bias`` ``(out,)``.

        Values are clipped to the device bounds. With the bias on the array, ``bias=None`` keeps
        the present bias column.
        """
        shape = self._weight_shape()
        if tuple(weight.shape) != shape:
            raise ValueError(f"set_weights: weight must have shape {shape}, got {tuple(weight.shape)}.")
        if bias is not None:
            if not self._has_bias:
                raise ValueError("set_weights: this layer has no bias (bias=False).")
            if bias.numel() != self.out_channels:
                raise ValueError(f"set_weights: bias must have {self.out_channels} elements, got {bias.numel()}.")
        rows = self.out_channels // self.groups
        flat = weight.detach().reshape(self.out_channels, self._patch)
        for g, tile in enumerate(self.tiles):
            w = flat[g * rows : (g + 1) * rows].to(reference_weight(tile))
            if self.bias_on_array:
                b = tile.get_weights()[:, -1] if bias is None else bias.detach().reshape(-1)[g * rows : (g + 1) * rows]
                w = torch.cat((w, b.reshape(-1, 1).to(w)), dim=1)
            tile.set_weights(w)
        if bias is not None and not self.bias_on_array:
            with torch.no_grad():
                self.bias.copy_(bias.reshape(-1))

    # -- computation --------------------------------------------------------------------------
    def _conv(self, x: torch.Tensor, kernel, stride, dilation, pad) -> torch.Tensor:
        """The analog convolution of a 4-d input ``(N, C, H, W)`` -> ``(N, M, H_out, W_out)``."""
        n = x.shape[0]
        if any(pad):
            x = F.pad(x, pad)
        h, w = x.shape[-2:]
        out_size = [
            (size - d * (k - 1) - 1) // s + 1 for size, k, s, d in zip((h, w), kernel, stride, dilation)
        ]
        # (N, C·k_h·k_w, L): channel-major columns, as the weight (out, C, k_h, k_w) flattens.
        patches = F.unfold(x, kernel, dilation=dilation, stride=stride)
        patches = patches.transpose(1, 2).reshape(-1, patches.shape[1])  # one row per patch: (N·L, k²d)
        outputs = []
        for g, tile in enumerate(self.tiles):
            p = patches if self.groups == 1 else patches[:, g * self._patch : (g + 1) * self._patch]
            if not self.bias_on_array:
                p = p.contiguous()
            # With the bias on the array, its constant input is appended inside the product.
            outputs.append(analog_linear(p, tile, bias_column=self.bias_on_array))
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)  # (N·L, M)
        y = y.reshape(n, math.prod(out_size), self.out_channels).transpose(1, 2).reshape(n, self.out_channels, *out_size)
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y

    def _check_input(self, x: torch.Tensor) -> bool:
        """Validate ``x``; returns whether it is batched."""
        name, n = type(self).__name__, self._ndim
        dims = "(N, C, L)" if n == 1 else "(N, C, H, W)"
        if x.dim() not in (n + 1, n + 2):
            raise ValueError(
                f"{name} expected a {n + 2}-d input {dims} (or {n + 1}-d without the batch dimension), "
                f"got a {x.dim()}-d input of shape {tuple(x.shape)}."
            )
        channels = x.shape[-n - 1]
        if channels != self.in_channels:
            raise ValueError(
                f"{name} expected input with {self.in_channels} channels (dimension {-n - 1}), got {channels} "
                f"(input shape {tuple(x.shape)})."
            )
        spatial = tuple(x.shape[-n:])
        padded = tuple(s + self._pad[2 * (n - 1 - i)] + self._pad[2 * (n - 1 - i) + 1] for i, s in enumerate(spatial))
        extent = tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))
        if any(e > p for e, p in zip(extent, padded)):
            raise ValueError(
                f"{name}: the (dilated) kernel of size {extent} is larger than the padded input of size {padded} "
                f"(input {spatial} plus padding); use a larger input, more padding or a smaller kernel/dilation."
            )
        return x.dim() == n + 2

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._ndim:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._ndim:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self._has_bias:
            s += f", bias={'array' if self.bias_on_array else 'digital'}"
        else:
            s += ", bias=False"
        return s


class AnalogConv2d(_AnalogConvNd):
    """A drop-in ``torch.nn.Conv2d`` whose kernels are stored on a simulated cross-point array.

    The ``M = out_channels`` kernels of size ``k_h × k_w × d`` form an array of
    ``M × (k_h k_w d + 1)`` devices (the last column is the bias, driven by a constant input 1),
    as in Gokmen, Onen & Haensch 2017. Every image patch is one analog matrix-vector product
    (``n = (N − k + 1)²`` patch vectors per ``N × N`` image at stride 1, no padding), every output
    error one product with the transposed array, and a batch of ``B`` images gives
    ``B · H_out · W_out`` rank-1 updates when :class:`~insitu.optim.AnalogSGD` steps. With
    ``groups = G`` there is one tile per group of ``M/G × (k_h k_w d/G [+1])`` devices.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as for
            ``torch.nn.Conv2d`` (``padding`` an int, a pair, ``"same"`` (stride 1) or ``"valid"``).
        padding_mode: only ``"zeros"``.
        config: the :class:`~insitu.tile.TileConfig` of every tile (default: constant-step device).
        bias_on_array: store the bias as the array's extra column (as in the paper); otherwise it is
            a digital parameter added after the array and updated exactly by the optimizer.
        seed: seed of the (first) tile's generator; fixes the initial weights and the devices.
        device, dtype: where the tiles' state lives.

    Attributes:
        tiles: ``nn.ModuleList`` of the ``groups`` tiles (``tile``: the only one when ``groups=1``).

    Shape:
        input ``(N, C_in, H, W)`` or ``(C_in, H, W)``; output ``(N, C_out, H_out, W_out)`` (or
        unbatched), ``H_out = ⌊(H + pad_top + pad_bottom − dilation·(k_h − 1) − 1) / stride⌋ + 1``.
    """

    _ndim = 2
    _torch_name = "Conv2d"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batched = self._check_input(x)
        if not batched:
            x = x.unsqueeze(0)
        y = self._conv(x, self.kernel_size, self.stride, self.dilation, self._pad)
        return y if batched else y.squeeze(0)


class AnalogConv1d(_AnalogConvNd):
    """A drop-in ``torch.nn.Conv1d`` whose kernels are stored on a simulated cross-point array.

    The ``M = out_channels`` kernels of length ``k`` over ``d`` channels form an array of
    ``M × (k d + 1)`` devices (last column: the bias); each of the ``L_out`` windows of a signal is
    one analog matrix-vector product, so a batch of ``N`` signals gives ``N · L_out`` rank-1
    updates. The signal is processed as an image of height 1 (see :class:`AnalogConv2d`).

    Args: as :class:`AnalogConv2d`, with 1-d ``kernel_size``, ``stride``, ``padding``, ``dilation``.

    Shape:
        input ``(N, C_in, L)`` or ``(C_in, L)``; output ``(N, C_out, L_out)`` (or unbatched),
        ``L_out = ⌊(L + pad_left + pad_right − dilation·(k − 1) − 1) / stride⌋ + 1``.
    """

    _ndim = 1
    _torch_name = "Conv1d"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batched = self._check_input(x)
        if not batched:
            x = x.unsqueeze(0)
        y = self._conv(
            x.unsqueeze(2),
            (1, self.kernel_size[0]),
            (1, self.stride[0]),
            (1, self.dilation[0]),
            self._pad + (0, 0),
        ).squeeze(2)
        return y if batched else y.squeeze(0)
