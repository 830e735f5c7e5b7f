"""Named model builders: the networks of the papers, analog or digital."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .nn import AnalogConv2d, AnalogLinear
from .tile import TileConfig

__all__ = ["mlp", "cnn_2017", "MODELS", "ACTIVATIONS"]

#: Named networks accepted by ``insitu train --model``.
MODELS = ("mlp", "cnn-2017")

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(
    sizes: list[int] | tuple[int, ...],
    activation: str = "sigmoid",
    config: TileConfig | list[TileConfig] | None = None,
    bias_on_array: bool = True,
    seeds: list | None = None,
    per_layer: bool = False,
) -> nn.Sequential:
    """A fully connected network ``sizes[0] -> ... -> sizes[-1]`` producing logits.

    Args:
        sizes: layer widths including input and output, e.g. ``(784, 256, 128, 10)``
            (Gokmen & Vlasov 2016).
        activation: hidden non-linearity, one of ``sigmoid``, ``tanh``, ``relu``.
        config: tile config of every layer; ``None`` builds plain ``torch.nn.Linear`` layers.
            A list of ``R`` configs builds ``R`` replicas in lockstep (:mod:`insitu.replicas`):
            inputs ``(R, batch, sizes[0])``, logits ``(R, batch, sizes[-1])``.
        bias_on_array: for analog layers, keep the bias as an array column.
        seeds: one tile seed per layer (for replicas a list of ``R`` seeds per layer); ``None``
            draws them from torch's global generator.
        per_layer: ``config`` is a list of one tile config per layer (input side first) instead
            of the replicas' configs.
    """
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"mlp sizes must be at least two positive widths (input and output), got {list(sizes)}.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation '{activation}'; choose one of {sorted(ACTIVATIONS)}.")
    if per_layer and (not isinstance(config, (list, tuple)) or len(config) != len(sizes) - 1):
        given = f"{len(config)} configs" if isinstance(config, (list, tuple)) else type(config).__name__
        raise ValueError(f"per_layer needs a list of one tile config per layer ({len(sizes) - 1}), got {given}.")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if config is None:
            layers.append(nn.Linear(n_in, n_out))
        else:
            seed = None if seeds is None else seeds[i]
            layer_config = config[i] if per_layer else config
            layers.append(AnalogLinear(n_in, n_out, config=layer_config, bias_on_array=bias_on_array, seed=seed))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


#: Convolutions of :func:`cnn_2017` (K1, K2), each one array.
CNN_2017_CONVOLUTIONS = 2


def cnn_2017(
    image_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    activation: str = "tanh",
    config: TileConfig | None = None,
    bias_on_array: bool = True,
    conv_config: TileConfig | Sequence[TileConfig] | None = None,
) -> nn.Sequential:
    """The CNN of Gokmen, Onen & Haensch 2017 (Front. Neurosci. 11:538).

    ``config`` is the tile config of every layer; ``conv_config``, when given, replaces it for
    the two convolutional layers (the paper applies some techniques to those only): one config for
    both, or a sequence of two, K1's then K2's (the paper uses more devices per weight on K1).

    conv 5×5, 16 maps -> max-pool 2 -> conv 5×5, 32 maps -> max-pool 2 -> fully connected
    512 -> 128 -> ``num_classes``, ``tanh`` after every layer but the last (for 28×28 inputs the
    flattened size is 32·4·4 = 512). The input is ``(N, C·H·W)`` flattened, as the datasets
    provide it, or ``(N, C, H, W)``. ``config=None`` builds plain torch layers.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation '{activation}'; choose one of {sorted(ACTIVATIONS)}.")
    channels, height, width = image_shape
    if min(height, width) < 16:
        raise ValueError(
            f"cnn-2017 needs images of at least 16×16 pixels (two 5×5 convolutions and two 2×2 poolings); "
            f"got {height}×{width}. Use --model mlp for small images such as digits."
        )
    flat = 32 * ((((height - 4) // 2) - 4) // 2) * ((((width - 4) // 2) - 4) // 2)

    if conv_config is None or isinstance(conv_config, TileConfig):
        conv_configs = [conv_config if conv_config is not None else config] * CNN_2017_CONVOLUTIONS
    else:
        conv_configs = list(conv_config)
        if len(conv_configs) != CNN_2017_CONVOLUTIONS or not all(isinstance(c, TileConfig) for c in conv_configs):
            raise ValueError(
                f"conv_config must be one TileConfig or a sequence of {CNN_2017_CONVOLUTIONS} (K1, K2); got {conv_config!r}."
            )

    conv_order = iter(conv_configs)  # K1's config, then K2's, in the order the layers are built

    def conv(c_in, c_out):
        layer_config = next(conv_order)
        if layer_config is None:
            return nn.Conv2d(c_in, c_out, 5)
        return AnalogConv2d(c_in, c_out, 5, config=layer_config, bias_on_array=bias_on_array)

    def linear(n_in, n_out):
        if config is None:
            return nn.Linear(n_in, n_out)
        return AnalogLinear(n_in, n_out, config=config, bias_on_array=bias_on_array)

    act = ACTIVATIONS[activation]
    return nn.Sequential(
        nn.Unflatten(1, image_shape),
        conv(channels, 16), act(), nn.MaxPool2d(2),
        conv(16, 32), act(), nn.MaxPool2d(2),
        nn.Flatten(),
        linear(flat, 128), act(),
        linear(128, num_classes),
    )
