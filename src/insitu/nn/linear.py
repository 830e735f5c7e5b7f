"""``AnalogLinear``: a drop-in ``torch.nn.Linear`` whose weights live on an analog tile."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..mapping import check_no_grid_with_replicas, make_tile
from ..tile import TileConfig
from .functional import analog_linear

__all__ = ["AnalogLinear"]


class AnalogLinear(nn.Module):
    """``y = W x + b`` computed on a simulated cross-point array.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: learn an additive bias.
        config: the :class:`~insitu.tile.TileConfig` (device, IO, update); default the constant-step
            RPU device of Gokmen & Vlasov 2016.
        bias_on_array: store the bias as an extra array column driven by a constant input 1 (as in
            the papers, where it sees the same device and IO non-idealities); otherwise it is a
            digital floating-point parameter updated exactly by the optimizer.
        seed: seed of the tile's generator (``None``: drawn from torch's global generator).
        device, dtype: where the tile's state lives.
        replicas: train ``R`` independent copies in lockstep on a
            :class:`~insitu.replicas.ReplicatedTile` (sweeps; :mod:`insitu.replicas`). ``config``
            is then one config for all or a list of ``R`` configs, and ``seed`` a list of ``R``
            seeds (or ``None``). A list ``config`` or ``seed`` alone also makes replicas.

    Shape:
        input ``(*, in_features)``, output ``(*, out_features)``; with ``R`` replicas input
        ``(R, *, in_features)``, output ``(R, *, out_features)``, weights ``(R, out, in)``.

    Weights are initialised like ``torch.nn.Linear`` (uniform in ``±1/sqrt(in_features)``, drawn
    from the tile's generator so ``seed`` fixes them) and programmed onto the devices, clipped to
    each device's bounds. Train with
    :class:`insitu.optim.AnalogSGD`: its ``step()`` applies the stashed updates on the tile.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        config: TileConfig | None = None,
        bias_on_array: bool = True,
        seed: int | None = None,
        device=None,
        dtype: torch.dtype = torch.float32,
        replicas: int | None = None,
    ):
        super().__init__()
        # Checked here, before the bias column is added: the tile would report in_features + 1.
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AnalogLinear: {name} must be a positive integer, got {value!r}.")
        self.in_features = in_features
        self.out_features = out_features
        self.bias_on_array = bool(bias and bias_on_array)
        columns = in_features + (1 if self.bias_on_array else 0)
        configs, seeds = _replica_arguments(config, seed, replicas)
        self.replicas = None if configs is None else len(configs)
        if configs is not None:
            from ..replicas import ReplicatedTile

            check_no_grid_with_replicas(out_features, columns, configs)
            self.tile = ReplicatedTile(out_features, columns, configs, seeds, device=device, dtype=dtype)
        else:
            # A config may name its own tile class (e.g. the multi-conductance cell); else the RPU
            # tile; a grid of them (GridTile) when the array exceeds config.max_tile_size.
            self.tile = make_tile(out_features, columns, config, seed=seed, device=device, dtype=dtype)
        if bias and not bias_on_array:
            lead = () if self.replicas is None else (self.replicas, 1)
            self.bias = nn.Parameter(torch.zeros(*lead, out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self._has_bias = bool(bias)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise as ``torch.nn.Linear`` does and program the result onto the tile."""
        if self.replicas is not None:
            self._reset_replicas()
            return
        bound = 1.0 / math.sqrt(self.in_features)
        gen = self.tile.generator  # the layer's seed fixes its initial weights too
        weight = torch.empty(self.out_features, self.in_features, device=gen.device).uniform_(-bound, bound, generator=gen)
        if self.bias_on_array:
            bias = torch.empty(self.out_features, 1, device=gen.device).uniform_(-bound, bound, generator=gen)
            weight = torch.cat((weight, bias), dim=1)
        elif self.bias is not None:
            self.bias.uniform_(-bound, bound, generator=gen)
        self.tile.set_weights(weight)

    def _reset_replicas(self) -> None:
        """Replica ``r`` draws its initial weights from its own generator, as a layer with its
        seed alone would (so it starts where the separate run starts)."""
        bound = 1.0 / math.sqrt(self.in_features)
        weights, biases = [], []
        for gen in self.tile.init_generators:
            weight = torch.empty(self.out_features, self.in_features, device=gen.device).uniform_(-bound, bound, generator=gen)
            if self.bias_on_array:
                bias = torch.empty(self.out_features, 1, device=gen.device).uniform_(-bound, bound, generator=gen)
                weight = torch.cat((weight, bias), dim=1)
            elif self.bias is not None:
                biases.append(torch.empty(self.out_features, device=gen.device).uniform_(-bound, bound, generator=gen))
            weights.append(weight)
        if biases:
            self.bias.copy_(torch.stack(biases).unsqueeze(1))
        self.tile.set_weights(torch.stack(weights))

    @property
    def config(self) -> TileConfig:
        return self.tile.config

    def get_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(weight (out, in), bias (out,) or None)`` as floating-point copies (with replicas
        ``(R, out, in)`` and ``(R, out)``)."""
        w = self.tile.get_weights()
        if self.bias_on_array:
            return w[..., :-1].contiguous(), w[..., -1].contiguous()
        bias = None if self.bias is None else self.bias.detach().clone()
        if bias is not None and self.replicas is not None:
            bias = bias.squeeze(1)
        return w, bias

    def set_weights(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Program ``weight`` ``(out, in)`` and ``bias`` ``(out,)`` (clipped to the device bounds);
        with replicas ``(R, out, in)`` and ``(R, out)``."""
        lead = () if self.replicas is None else (self.replicas,)
        if tuple(weight.shape) != (*lead, self.out_features, self.in_features):
            raise ValueError(
                f"set_weights: weight must have shape {(*lead, self.out_features, self.in_features)}, got {tuple(weight.shape)}."
            )
        if self.bias_on_array:
            if bias is None:
                bias = self.tile.get_weights()[..., -1]
            weight = torch.cat((weight, bias.reshape(*lead, -1, 1).to(weight)), dim=-1)
        elif bias is not None:
            if self.bias is None:
                raise ValueError("set_weights: this layer has no bias (bias=False).")
            with torch.no_grad():
                self.bias.copy_(bias.reshape(self.bias.shape))
        self.tile.set_weights(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"AnalogLinear expected inputs with {self.in_features} features in the last dimension, "
                f"got shape {tuple(x.shape)}."
            )
        if self.replicas is not None and (x.dim() < 2 or x.shape[0] != self.replicas):
            raise ValueError(
                f"AnalogLinear with {self.replicas} replicas expected inputs (replicas={self.replicas}, ..., "
                f"{self.in_features}), got shape {tuple(x.shape)}."
            )
        # The bias column's constant input is appended inside the product (bias_column).
        return analog_linear(x, self.tile, self.bias, bias_column=self.bias_on_array)

    def replica(self, r: int) -> "AnalogLinear":
        """Replica ``r`` as a layer of its own (an :class:`~insitu.tile.AnalogTile` with that
        replica's config, seed, devices and present weights), e.g. to keep training it alone."""
        if self.replicas is None:
            raise ValueError("replica(): this layer has no replicas.")
        tile = self.tile
        layer = AnalogLinear(
            self.in_features, self.out_features, bias=self._has_bias, config=tile.configs[r],
            bias_on_array=self.bias_on_array, seed=tile.seeds[r], device=tile.weight.device, dtype=tile.weight.dtype,
        )
        with torch.no_grad():
            if tile.device_params is not None:
                layer.tile.device_params.copy_(tile.parameter_planes()[:, r])
            layer.tile.weight.copy_(tile.weight[r])
            cell = tile.replica_cell(r)
            if cell is not None:  # the cell's arrays and buffers, and its schedule (column, passes, ...)
                layer.tile.cell.load_state_dict(cell.state_dict())
                layer.tile.cell.load_extra_state(cell.extra_state())
            if self.bias is not None:
                layer.bias.copy_(self.bias[r, 0])
        return layer

    def extra_repr(self) -> str:
        where = "array" if self.bias_on_array else "digital"
        if self.replicas is not None:
            where += f", replicas={self.replicas}"
        bias = f"bias={where}" if self._has_bias else "bias=False"
        return f"in_features={self.in_features}, out_features={self.out_features}, {bias}"


def _replica_arguments(config, seed, replicas):
    """``(configs, seeds)`` for a replicated layer, or ``(None, None)`` for a plain one."""
    listed = isinstance(config, (list, tuple)) or isinstance(seed, (list, tuple))
    if replicas is None and not listed:
        return None, None
    sizes = {len(v) for v in (config, seed) if isinstance(v, (list, tuple))}
    if replicas is not None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be a positive integer, got {replicas!r}.")
        sizes.add(replicas)
    if len(sizes) != 1:
        raise ValueError(f"replicas: the lists of configs and seeds and `replicas` disagree on the number of replicas ({sorted(sizes)}).")
    (n,) = sizes
    configs = list(config) if isinstance(config, (list, tuple)) else [config if config is not None else TileConfig()] * n
    seeds = list(seed) if isinstance(seed, (list, tuple)) else None if seed is None else [seed] * n
    return configs, seeds
