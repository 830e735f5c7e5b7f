"""Named model builders: the networks of the papers, analog or digital."""

from __future__ import annotations

from torch import nn

from .nn import AnalogLinear
from .tile import TileConfig

__all__ = ["mlp", "ACTIVATIONS"]

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(
    sizes: list[int] | tuple[int, ...],
    activation: str = "sigmoid",
    config: TileConfig | None = None,
    bias_on_array: bool = True,
) -> nn.Sequential:
    """A fully connected network ``sizes[0] -> ... -> sizes[-1]`` producing logits.

    Args:
        sizes: layer widths including input and output, e.g. ``(784, 256, 128, 10)``
            (Gokmen & Vlasov 2016).
        activation: hidden non-linearity, one of ``sigmoid``, ``tanh``, ``relu``.
        config: tile config of every layer; ``None`` builds plain ``torch.nn.Linear`` layers.
        bias_on_array: for analog layers, keep the bias as an array column.
    """
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"mlp sizes must be at least two positive widths (input and output), got {list(sizes)}.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation '{activation}'; choose one of {sorted(ACTIVATIONS)}.")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if config is None:
            layers.append(nn.Linear(n_in, n_out))
        else:
            layers.append(AnalogLinear(n_in, n_out, config=config, bias_on_array=bias_on_array))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)
