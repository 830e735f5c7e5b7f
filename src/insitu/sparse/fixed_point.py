"""Fixed-point training emulation, as in the edge-processing hardware of Dey et al. (2017).

The hardware keeps weights, activations, errors (``δ``) and weight updates in signed
fixed-point words with a few integer and fraction bits, saturates instead of wrapping, and uses a
power-of-two learning rate ``η = 2^-k`` so that ``η·δ·a`` is a shift (the authors' RTL: "Should be
a power of 2. Value between 2^(-frac_bits) and 1"). A format is written ``total:integer``:
``12:3`` is 1 sign bit, 3 integer bits and 8 fraction bits (the RTL default of ``DNN.sv``).

Emulation in float tensors: every stored value is rounded to the nearest multiple of the format's
step ``2^-f`` (ties toward +∞, what adding half an LSB and truncating does) and clamped to the
format's range ``[-2^i, 2^i - 2^-f]``. Values between roundings are exact in float32 for widths up
to 24 bits, so the emulation is bit-exact for the values it rounds.

Weight updates may instead be rounded *stochastically* (``update_rounding="stochastic"``): up with
probability equal to the fraction of a step, i.e. ``floor(x/2^-f + u)·2^-f`` with ``u ~ U[0, 1)``
from a seeded generator (Gupta et al., "Deep Learning with Limited Numerical Precision", ICML
2015). Its expectation is the exact update, so updates smaller than half a step, which rounding
to nearest sets to zero, still move the weights on average. In hardware ``u`` comes from an LFSR.

* :func:`quantize` rounds a tensor;
* :class:`FixedPointQuantizer` rounds activations on the way forward and errors on the way back;
* :func:`insert_quantizers` puts one after the input and after every layer of an ``nn.Sequential``;
* :class:`FixedPointSGD` applies ``w ← sat(w − sat(η·∂w))`` with a power-of-two ``η``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..config import Config, ConfigError, register_config

__all__ = [
    "ROUNDING_MODES",
    "FixedPointConfig",
    "FixedPointFormat",
    "FixedPointQuantizer",
    "FixedPointSGD",
    "insert_quantizers",
    "quantize",
    "quantize_stochastic",
]

ROUNDING_MODES = ("nearest", "stochastic")


@register_config
@dataclasses.dataclass
class FixedPointFormat(Config):
    """A signed fixed-point word: 1 sign bit, ``integer_bits``, ``fraction_bits``.

    Attributes:
        integer_bits: bits left of the binary point (range ``[-2^i, 2^i)``).
        fraction_bits: bits right of it (step ``2^-f``).
    """

    integer_bits: int = 3
    fraction_bits: int = 8

    def validate(self) -> None:
        for field in ("integer_bits", "fraction_bits"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                self._fail(field, "must be an integer >= 0.")
        if self.total_bits > 24:
            self._fail("fraction_bits", f"total width {self.total_bits} bits exceeds 24, beyond which float32 emulation is no longer exact; use at most 24 bits.")

    @property
    def total_bits(self) -> int:
        return 1 + self.integer_bits + self.fraction_bits

    @property
    def step(self) -> float:
        """The value of one least significant bit, ``2^-fraction_bits``."""
        return 2.0 ** -self.fraction_bits

    @property
    def max_value(self) -> float:
        return 2.0 ** self.integer_bits - self.step

    @property
    def min_value(self) -> float:
        return -(2.0 ** self.integer_bits)

    @classmethod
    def parse(cls, text: str) -> FixedPointFormat:
        """``"12:3"`` -> 12 bits in all, 3 of them integer bits (so 8 fraction bits and a sign)."""
        try:
            total, integer = (int(part) for part in str(text).split(":"))
        except ValueError:
            raise ConfigError(f"fixed-point format '{text}': write TOTAL:INTEGER bits, e.g. 12:3 (1 sign, 3 integer, 8 fraction bits).") from None
        if total < integer + 1:
            raise ConfigError(f"fixed-point format '{text}': {total} bits cannot hold a sign bit and {integer} integer bits; use TOTAL >= {integer + 1}.")
        return cls(integer_bits=integer, fraction_bits=total - 1 - integer)

    def __str__(self) -> str:
        return f"{self.total_bits}:{self.integer_bits}"


def quantize(x: torch.Tensor, fmt: FixedPointFormat | None) -> torch.Tensor:
    """Round ``x`` (any shape) to ``fmt``: nearest step (ties toward +∞), saturated to the range.

    ``fmt=None`` returns ``x`` unchanged (floating point).
    """
    if fmt is None:
        return x
    scale = 2.0 ** fmt.fraction_bits
    return (torch.floor(x * scale + 0.5) / scale).clamp_(fmt.min_value, fmt.max_value)


def quantize_stochastic(
    x: torch.Tensor,
    fmt: FixedPointFormat | None,
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Round ``x`` (any shape) to ``fmt`` stochastically, saturated to the range.

    ``x = (n + r)·2^-f`` with integer ``n`` and ``0 <= r < 1`` becomes ``(n + 1)·2^-f`` with
    probability ``r`` and ``n·2^-f`` otherwise, so ``E[result] = x`` inside the range (unbiased).
    The draw is ``floor(x·2^f + u)`` with ``u ~ U[0, 1)`` of ``x``'s shape taken from
    ``generator``, or given as ``uniform`` (for tests, or to share one draw). The sum is done in
    float64 so that adding ``u`` to a word of up to 24 bits loses nothing.

    ``fmt=None`` returns ``x`` unchanged (floating point).
    """
    if fmt is None:
        return x
    if uniform is None:
        uniform = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device)
    elif uniform.shape != x.shape:
        raise ValueError(f"uniform has shape {tuple(uniform.shape)}, but x has {tuple(x.shape)}; give one draw per element.")
    scale = 2.0 ** fmt.fraction_bits
    steps = torch.floor(x.to(torch.float64) * scale + uniform.to(torch.float64))
    return (steps / scale).clamp_(fmt.min_value, fmt.max_value).to(x.dtype)


@register_config
@dataclasses.dataclass
class FixedPointConfig(Config):
    """Word formats of training in fixed point, and the power-of-two learning rate.

    Attributes:
        weights: format of the stored weights (and biases).
        activations: format of the inputs and of every layer's outputs.
        errors: format of the back-propagated errors ``δ``.
        updates: format of a weight update ``η·∂w`` before it is added. The sum ``w − update`` is
            rounded to nearest in the weights format, so an updates format with more fraction
            bits than the weights loses them there; stochastic rounding takes effect when both
            have the same fraction bits.
        learning_rate_exponent: ``k`` of ``η = 2^-k``.
        update_rounding: how ``η·∂w`` is rounded to the updates format: ``nearest`` (ties toward
            +∞, as adding half an LSB and truncating does) or ``stochastic`` (unbiased, see
            :func:`quantize_stochastic`; needs a seed in :class:`FixedPointSGD`).
        weight_decay: L2 coefficient ``λ``: the update is ``η (∂w + λ w)``, rounded as above (the
            decay passes through the same update path as the gradient, as it would in the
            hardware's update unit; with stochastic rounding a decay below one step still acts
            on average). 0: none.
    """

    weights: FixedPointFormat = dataclasses.field(default_factory=FixedPointFormat)
    activations: FixedPointFormat = dataclasses.field(default_factory=FixedPointFormat)
    errors: FixedPointFormat = dataclasses.field(default_factory=FixedPointFormat)
    updates: FixedPointFormat = dataclasses.field(default_factory=FixedPointFormat)
    learning_rate_exponent: int = 4
    update_rounding: str = "nearest"
    weight_decay: float = 0.0

    def validate(self) -> None:
        self._check_choice("update_rounding", ROUNDING_MODES)
        self._check_non_negative("weight_decay")
        for field in ("weights", "activations", "errors", "updates"):
            if not isinstance(getattr(self, field), FixedPointFormat):
                self._fail(field, f"must be a FixedPointFormat, got {type(getattr(self, field)).__name__}.")
        k = self.learning_rate_exponent
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            self._fail("learning_rate_exponent", "must be an integer >= 0 (η = 2^-k <= 1).")
        # The RTL's constraint: η between 2^-frac_bits and 1, else η·δ·a underflows to zero.
        for field in ("weights", "updates"):
            fmt = getattr(self, field)
            if k > fmt.fraction_bits:
                self._fail(
                    "learning_rate_exponent",
                    f"η = 2^-{k} is smaller than one step 2^-{fmt.fraction_bits} of the {fmt.total_bits}-bit {field} "
                    f"format ({fmt}), which cannot hold the learning rate. Use learning_rate_exponent <= "
                    f"{fmt.fraction_bits} or give {field} more fraction bits.",
                )

    @property
    def lr(self) -> float:
        return 2.0 ** -self.learning_rate_exponent

    @classmethod
    def uniform(cls, fmt: FixedPointFormat | str, learning_rate_exponent: int, update_rounding: str = "nearest") -> FixedPointConfig:
        """The same format for weights, activations, errors and updates (``fmt`` like ``"12:3"``)."""
        fmt = FixedPointFormat.parse(fmt) if isinstance(fmt, str) else fmt
        return cls(fmt, fmt, fmt, fmt, learning_rate_exponent, update_rounding)


class _Quantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, forward_fmt, backward_fmt):
        ctx.backward_fmt = backward_fmt
        return quantize(x, forward_fmt)

    @staticmethod
    def backward(ctx, grad):
        # Straight through the rounding; the error itself is stored in the error format.
        return quantize(grad, ctx.backward_fmt), None, None


class FixedPointQuantizer(nn.Module):
    """Identity that rounds values to ``forward_fmt`` and their gradients (errors) to ``backward_fmt``."""

    def __init__(self, forward_fmt: FixedPointFormat | None, backward_fmt: FixedPointFormat | None):
        super().__init__()
        self.forward_fmt = forward_fmt
        self.backward_fmt = backward_fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Quantize.apply(x, self.forward_fmt, self.backward_fmt)

    def extra_repr(self) -> str:
        return f"forward={self.forward_fmt}, backward={self.backward_fmt}"


def insert_quantizers(model: nn.Sequential, config: FixedPointConfig) -> nn.Sequential:
    """A new ``nn.Sequential``: a quantizer on the input and after every module of ``model``.

    Every stored activation (input, pre- and post-activation) is rounded to
    ``config.activations`` and every error flowing back to ``config.errors``.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"insert_quantizers needs an nn.Sequential, got {type(model).__name__}.")
    layers: list[nn.Module] = [FixedPointQuantizer(config.activations, config.errors)]
    for module in model:
        layers += [module, FixedPointQuantizer(config.activations, config.errors)]
    return nn.Sequential(*layers)


class FixedPointSGD(torch.optim.Optimizer):
    """SGD in fixed point: ``w ← sat_W(w − sat_U(η · (∂w + λ w)))`` with ``η = 2^-k`` and
    ``λ = config.weight_decay`` (0 by default).

    The parameters are rounded to the weight format when the optimizer is built. ``∂w`` is the
    gradient autograd produced from the (quantized) errors and activations: for a loss summed
    over a batch it is the sum of the per-example products ``δ·a``, which the hardware would
    apply one example at a time (identical for batch size 1).

    With ``config.update_rounding == "stochastic"`` the update is rounded by
    :func:`quantize_stochastic` with a ``torch.Generator`` seeded by ``seed``: the same seed gives
    the same training run.
    """

    def __init__(self, params, config: FixedPointConfig, seed: int | None = None):
        if not isinstance(config, FixedPointConfig):
            raise ConfigError(f"FixedPointSGD needs a FixedPointConfig, got {type(config).__name__}.")
        if config.update_rounding == "stochastic" and seed is None:
            raise ConfigError("stochastic update rounding draws random numbers: pass FixedPointSGD(..., seed=<int>) so runs repeat.")
        super().__init__(params, {"lr": config.lr})
        self.config = config
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.copy_(quantize(p, config.weights))

    def state_dict(self) -> dict:
        # The rounding generator's state too: a resumed run continues bit for bit.
        state = super().state_dict()
        state["rounding_generator"] = None if self.generator is None else self.generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("rounding_generator", None)
        super().load_state_dict(state_dict)
        if generator_state is not None and self.generator is not None:
            self.generator.set_state(generator_state)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if self.config.weight_decay == 0 else p.grad + self.config.weight_decay * p
                if self.config.update_rounding == "stochastic":
                    # Unbiased rounding (Gupta et al. 2015): updates below half a step survive on
                    # average instead of being set to zero (docs/reproductions/dey-2017-sparse.md §3.2).
                    uniform = torch.rand(p.shape, generator=self.generator, dtype=torch.float64).to(p.device)
                    update = quantize_stochastic(grad * lr, self.config.updates, uniform=uniform)
                else:
                    update = quantize(grad * lr, self.config.updates)
                p.copy_(quantize(p - update, self.config.weights))
        return loss
