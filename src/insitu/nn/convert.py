"""Convert a torch model to analog layers and back.

:func:`convert_to_analog` replaces every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.RNN``,
``nn.LSTM`` and ``nn.GRU`` of a model by :class:`~insitu.nn.AnalogLinear`,
:class:`~insitu.nn.AnalogConv1d`, :class:`~insitu.nn.AnalogConv2d`,
:class:`~insitu.nn.AnalogRNN`, :class:`~insitu.nn.AnalogLSTM` or :class:`~insitu.nn.AnalogGRU`
with the same hyper-parameters and the same weights, programmed
onto the tiles (so clipped to each device's bounds). :func:`convert_to_digital` does the reverse
with the present analog weights, e.g. to evaluate or export a model trained on analog hardware.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..config import ConfigError
from ..tile import TileConfig
from .conv import AnalogConv1d, AnalogConv2d, _AnalogConvNd
from .linear import AnalogLinear
from .recurrent import AnalogGRU, AnalogLSTM, AnalogRNN, _AnalogRNNBase

__all__ = ["convert_to_analog", "convert_to_digital"]

ConfigChoice = TileConfig | Callable[[str, nn.Module], TileConfig | None]

_TO_ANALOG = {
    nn.Linear: AnalogLinear, nn.Conv1d: AnalogConv1d, nn.Conv2d: AnalogConv2d,
    nn.RNN: AnalogRNN, nn.LSTM: AnalogLSTM, nn.GRU: AnalogGRU,
}
_RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)


def _analog_recurrent(layer: nn.RNNBase, config: TileConfig, bias_on_array: bool, name: str) -> nn.Module:
    if getattr(layer, "proj_size", 0):
        raise ValueError(
            f"convert_to_analog: layer '{name}' is an LSTM with proj_size={layer.proj_size}; analog LSTMs have no "
            "projection. Keep it digital (pass a function as config that returns None for it)."
        )
    weight = layer.weight_ih_l0.detach()
    kwargs = {} if not isinstance(layer, nn.RNN) else {"nonlinearity": layer.nonlinearity}
    new = _TO_ANALOG[type(layer)](
        layer.input_size, layer.hidden_size, layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
        dropout=layer.dropout, bidirectional=layer.bidirectional, config=config, bias_on_array=bias_on_array,
        device=weight.device, dtype=weight.dtype, **kwargs,
    )
    new.set_weights({k: v.detach() for k, v in layer.named_parameters()})
    new.train(layer.training)
    return new


def _digital_recurrent(layer: _AnalogRNNBase) -> nn.Module:
    weights = layer.get_weights()
    first = weights["weight_ih_l0"]
    kwargs = {} if not isinstance(layer, AnalogRNN) else {"nonlinearity": layer.nonlinearity}
    new = getattr(nn, layer._torch_name)(
        layer.input_size, layer.hidden_size, layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
        dropout=layer.dropout, bidirectional=layer.bidirectional, device=first.device, dtype=first.dtype, **kwargs,
    )
    with torch.no_grad():
        for key, value in new.named_parameters():
            value.copy_(weights[key])
    new.train(layer.training)
    return new


def _analog_layer(layer: nn.Module, config: TileConfig, bias_on_array: bool, name: str) -> nn.Module:
    if isinstance(layer, _RECURRENT):
        return _analog_recurrent(layer, config, bias_on_array, name)
    weight = layer.weight.detach()
    has_bias = layer.bias is not None
    common = {
        "bias": has_bias, "config": config, "bias_on_array": bias_on_array,
        "device": weight.device, "dtype": weight.dtype,
    }
    if isinstance(layer, nn.Linear):
        new = AnalogLinear(layer.in_features, layer.out_features, **common)
    else:
        if layer.padding_mode != "zeros":
            raise ValueError(
                f"convert_to_analog: layer '{name}' uses padding_mode={layer.padding_mode!r}; analog convolutions "
                "support only 'zeros'. Keep it digital (pass a function as config that returns None for it)."
            )
        new = _TO_ANALOG[type(layer)](
            layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride, padding=layer.padding,
            dilation=layer.dilation, groups=layer.groups, **common,
        )
    new.set_weights(weight, layer.bias.detach() if has_bias else None)
    new.train(layer.training)
    return new


def _digital_layer(layer: nn.Module) -> nn.Module:
    if isinstance(layer, _AnalogRNNBase):
        return _digital_recurrent(layer)
    weight, bias = layer.get_weights()
    kind = {"device": weight.device, "dtype": weight.dtype}
    if isinstance(layer, AnalogLinear):
        new = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None, **kind)
    else:
        new = getattr(nn, layer._torch_name)(
            layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride, padding=layer.padding,
            dilation=layer.dilation, groups=layer.groups, bias=bias is not None, **kind,
        )
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.train(layer.training)
    return new


def _replace(module: nn.Module, prefix: str, convert) -> nn.Module:
    """``convert(name, layer)`` on ``module`` and, recursively, on its children; returns the result."""
    new = convert(prefix, module)
    if new is not None:
        return new
    for child_name, child in list(module.named_children()):
        name = f"{prefix}.{child_name}" if prefix else child_name
        replaced = _replace(child, name, convert)
        if replaced is not child:
            setattr(module, child_name, replaced)
    return module


def convert_to_analog(
    module: nn.Module, config: ConfigChoice, *, bias_on_array: bool = True, inplace: bool = False
) -> nn.Module:
    """Replace every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU``
    of ``module`` by its analog layer.

    Args:
        module: the model (or a single layer).
        config: a :class:`~insitu.tile.TileConfig` for every layer, or a function
            ``(qualified_name, layer) -> TileConfig | None`` choosing per layer (``qualified_name`` as
            in ``module.named_modules()``, ``""`` for ``module`` itself); ``None`` keeps that layer
            digital.
        bias_on_array: store biases as an array column (see :class:`~insitu.nn.AnalogLinear`). For
            recurrent layers that is one column holding ``b_ih + b_hh`` (GRU: one per array), so
            the two torch biases become one trained bias; ``False`` keeps them as torch's two
            digital parameters (what an exact comparison with ``torch.optim.SGD`` needs).
        inplace: modify ``module`` itself; by default a deep copy is converted and ``module`` is
            left unchanged.

    Returns:
        The converted model (always use the return value: a bare layer is replaced, not modified).

    Only these exact classes are converted (a subclass may compute something else, e.g.
    ``nn.MultiheadAttention``'s output projection); the analog layers' tiles draw their seeds
    from torch's global generator, so ``torch.manual_seed`` fixes the devices. Weights are
    programmed onto the devices, so a pulsed device clips them to its bounds.

    Raises:
        ConfigError: ``config`` is neither a ``TileConfig`` nor callable, or the function returned
            something else than a ``TileConfig`` or ``None``.
        ValueError: a convolution has a ``padding_mode`` other than ``"zeros"``, or an LSTM a
            ``proj_size``.
    """
    if not isinstance(config, TileConfig) and not callable(config):
        raise ConfigError(
            f"convert_to_analog: config must be a TileConfig or a function (name, layer) -> TileConfig | None, "
            f"got {type(config).__name__}."
        )

    def convert(name: str, layer: nn.Module):
        if type(layer) not in _TO_ANALOG:
            return None
        chosen = config(name, layer) if not isinstance(config, TileConfig) else config
        if chosen is None:
            return layer
        if not isinstance(chosen, TileConfig):
            raise ConfigError(
                f"convert_to_analog: the config function returned a {type(chosen).__name__} for layer "
                f"'{name}' ({type(layer).__name__}); return a TileConfig, or None to keep the layer digital."
            )
        return _analog_layer(layer, chosen, bias_on_array, name)

    if not inplace:
        module = copy.deepcopy(module)
    return _replace(module, "", convert)


def convert_to_digital(module: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every analog layer of ``module`` by the torch layer with its present analog weights.

    :class:`~insitu.nn.AnalogLinear` becomes ``nn.Linear``, :class:`~insitu.nn.AnalogConv1d`
    ``nn.Conv1d``, :class:`~insitu.nn.AnalogConv2d` ``nn.Conv2d`` (a bias on the array becomes
    the torch bias), and the recurrent layers ``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` (a recurrent bias
    column becomes ``bias_ih``, with ``bias_hh`` zero). By default a deep copy is converted; always use the return value.
    """

    def convert(name: str, layer: nn.Module):
        if isinstance(layer, (AnalogLinear, _AnalogConvNd, _AnalogRNNBase)):
            return _digital_layer(layer)
        return None

    if not inplace:
        module = copy.deepcopy(module)
    return _replace(module, "", convert)
