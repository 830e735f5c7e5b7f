"""A sparse crossbar: an :class:`~insitu.nn.AnalogLinear` whose absent cross-points never change."""

from __future__ import annotations

import torch

from ..nn import AnalogLinear
from .patterns import ConnectionPattern

__all__ = ["mask_analog_linear"]


def mask_analog_linear(layer: AnalogLinear, connections: ConnectionPattern | torch.Tensor) -> AnalogLinear:
    """Remove the cross-points of ``layer`` that are not in ``connections``; returns ``layer``.

    Args:
        layer: an :class:`AnalogLinear` (``in_features -> out_features``).
        connections: a :class:`ConnectionPattern` of the same shape, or a bool mask
            ``(out_features, in_features)``. A bias column on the array is kept whole (the bias
            is a dense per-neuron term in the papers' hardware too).

    The absent weights are zeroed now and after every tile update
    (:meth:`insitu.tile.AnalogTile.set_connection_mask`), so they stay exactly zero through
    pulsed updates with any device model.
    """
    if not isinstance(layer, AnalogLinear):
        raise TypeError(f"mask_analog_linear needs an AnalogLinear, got {type(layer).__name__}.")
    if isinstance(connections, ConnectionPattern):
        if (connections.n_in, connections.n_out) != (layer.in_features, layer.out_features):
            raise ValueError(
                f"mask_analog_linear: the pattern is {connections.n_in} -> {connections.n_out}, the layer "
                f"{layer.in_features} -> {layer.out_features}."
            )
        mask = connections.to_mask()
    else:
        mask = connections
    if mask.dtype != torch.bool or tuple(mask.shape) != (layer.out_features, layer.in_features):
        raise ValueError(
            f"mask_analog_linear: expected a bool mask of shape ({layer.out_features}, {layer.in_features}), "
            f"got {mask.dtype} {tuple(mask.shape)}."
        )
    if layer.bias_on_array:
        mask = torch.cat((mask, torch.ones(layer.out_features, 1, dtype=torch.bool, device=mask.device)), dim=1)
    layer.tile.set_connection_mask(mask)
    return layer
