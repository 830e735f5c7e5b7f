"""What the hardware sees of a network: the array shape and sequential vectors of each layer.

A cost model never needs the weights, only, per weight layer, the matrix it stores and how many
vectors pass through that matrix per training example. :class:`LayerShape` holds that;
:class:`NetworkShape` is the ordered list. They come from

* a built model (:func:`network_from_model`: one forward pass of one example with hooks, so a
  convolution's patch count comes from its real output size), or
* widths alone (:func:`network_from_mlp`), which is how a network of a billion weights is
  described without allocating it.

Mapping follows Gokmen, Onen & Haensch 2017 (papers.md §2.2): a convolution with ``M`` kernels
of ``k×k×d`` is an ``M × (k²d [+1 bias])`` array fed with its ``n`` patch vectors one after the
other, so ``n`` forward, ``n`` backward and ``n`` update cycles per example.

Layers other than the known ones are an error, unless they hold no parameters (activations,
pooling, reshapes): those run on the digital units and are accounted there as one operation per
output element. ``SparseLinear`` (insitu.sparse) maps to a ``"sparse"`` layer holding its edges and
out-degree. A new layer type is made mappable with
:func:`register_layer_mapper`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "NAMED_NETWORKS",
    "HardwareMappingError",
    "LayerShape",
    "NetworkShape",
    "named_network",
    "network_from_mlp",
    "network_from_model",
    "register_layer_mapper",
]


class HardwareMappingError(ValueError):
    """A network (or a layer of it) cannot be mapped onto the hardware; the message says why."""


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """One weight layer as an array.

    Attributes:
        name: the module's name in the model (``"0"``, ``"features.3"``) or a label.
        kind: ``"linear"`` or ``"conv"`` (or a kind registered by another module).
        rows: outputs of one array product (``out_features``, or ``out_channels / groups``).
        cols: inputs of one array product, including a bias column when the bias is on the
            array (``in_features [+1]`` or ``k²d [+1]``).
        vectors: sequential vectors per training example (1 for a linear layer on a flat input,
            the number of output positions for a convolution).
        groups: independent arrays of ``rows × cols`` working on the same vectors (grouped
            convolutions); 1 otherwise.
        digital_bias: the layer adds a bias digitally (one addition per output).
        bias_column: ``cols`` includes a bias column (so the layer has ``cols − 1`` inputs).
        edges: for a pre-defined sparse layer (``kind="sparse"``, insitu.sparse.SparseLinear),
            the stored input-output connections per group; ``None`` = fully connected.
        out_degree: the fixed out-degree of every input of a sparse layer (Dey et al. 2017,
            papers.md §5.3), or ``None`` when the degrees are not all equal (or dense).
    """

    name: str
    kind: str
    rows: int
    cols: int
    vectors: int = 1
    groups: int = 1
    digital_bias: bool = False
    bias_column: bool = False
    edges: int | None = None
    out_degree: int | None = None

    def __post_init__(self) -> None:
        for field in ("rows", "cols", "vectors", "groups"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HardwareMappingError(
                    f"LayerShape '{self.name}'.{field} = {value!r}: must be an integer >= 1 "
                    f"(an array needs at least one row and one column, and a layer at least one vector)."
                )
        for field in ("edges", "out_degree"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise HardwareMappingError(
                    f"LayerShape '{self.name}'.{field} = {value!r}: must be an integer >= 1, or None for a dense layer."
                )
        if self.edges is not None and self.edges > self.rows * self.inputs:
            raise HardwareMappingError(
                f"LayerShape '{self.name}'.edges = {self.edges}: more than the {self.rows}·{self.inputs} "
                "connections of a fully connected layer."
            )

    @property
    def inputs(self) -> int:
        """Inputs of one array product without the bias column."""
        return self.cols - int(self.bias_column)

    @property
    def weights(self) -> int:
        """Stored weights (array devices per weight not counted): ``groups · rows · cols``, or for
        a sparse layer ``groups · (edges [+ rows biases])``."""
        if self.edges is not None:
            return self.groups * (self.edges + self.rows * int(self.bias_column))
        return self.groups * self.rows * self.cols

    @property
    def macs_per_vector(self) -> int:
        """Multiply-accumulates of one array product (all groups)."""
        return self.weights

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class NetworkShape:
    """The weight layers of a network in forward order, plus its parameter-free digital work.

    Attributes:
        name: a label for tables.
        layers: the weight layers, forward order.
        digital_ops_per_example: element-wise operations of parameter-free layers (activations,
            pooling, ...) per example in the forward pass, counted as one per output element;
            the backward pass is counted the same again by the estimators.
    """

    name: str
    layers: tuple[LayerShape, ...]
    digital_ops_per_example: int = 0

    def __post_init__(self) -> None:
        if not self.layers:
            raise HardwareMappingError(
                f"Network '{self.name}' has no weight layer that the hardware could hold; "
                "give a model with at least one Linear or Conv layer."
            )

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    def macs_per_example(self) -> int:
        """Multiply-accumulates of one forward pass of one example."""
        return sum(layer.macs_per_vector * layer.vectors for layer in self.layers)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "weights": self.weights,
            "macs_per_example": self.macs_per_example(),
            "digital_ops_per_example": self.digital_ops_per_example,
            "layers": [layer.to_dict() for layer in self.layers],
        }


# -- mapping of modules ---------------------------------------------------------------------------
#: module class -> function(name, module, input, output) -> LayerShape
_MAPPERS: dict[type, Callable[[str, nn.Module, torch.Tensor, torch.Tensor], LayerShape]] = {}


def register_layer_mapper(module_type: type, mapper: Callable[[str, nn.Module, torch.Tensor, torch.Tensor], LayerShape]) -> None:
    """Teach :func:`network_from_model` a layer type.

    ``mapper(name, module, input, output)`` gets the module's input and output of a one-example
    forward pass (batch dimension first) and returns its :class:`LayerShape`. Subclasses of
    ``module_type`` use the same mapper unless they register their own.
    """
    _MAPPERS[module_type] = mapper


def _mapper_for(module: nn.Module):
    for cls in type(module).__mro__:
        if cls in _MAPPERS:
            return _MAPPERS[cls]
    return None


def _vectors(output: torch.Tensor, channels: int) -> int:
    """Sequential vectors of one example: output elements of example 0 divided by the channels."""
    per_example = output[0].numel() if output.dim() > 1 else output.numel()
    return max(1, per_example // channels)


def _map_linear(name, module, inp, out) -> LayerShape:
    from ..nn import AnalogLinear

    if isinstance(module, AnalogLinear):
        on_array = module.bias_on_array
        digital_bias = getattr(module, "bias", None) is not None
    else:
        on_array = module.bias is not None  # a digital network's bias would sit on the array too
        digital_bias = False
    return LayerShape(
        name, "linear", module.out_features, module.in_features + int(on_array),
        vectors=_vectors(out, module.out_features), digital_bias=digital_bias, bias_column=on_array,
    )


def _map_sparse_linear(name, module, inp, out) -> LayerShape:
    """A :class:`~insitu.sparse.SparseLinear`: its edges, and its out-degree when every input has
    the same one (structured and clash-free patterns; not unstructured random ones)."""
    degrees = torch.bincount(module.col_indices.long(), minlength=module.in_features)
    fixed = bool((degrees == degrees[0]).all()) and int(degrees[0]) > 0
    has_bias = module.bias is not None
    return LayerShape(
        name, "sparse", module.out_features, module.in_features + int(has_bias),
        vectors=_vectors(out, module.out_features), bias_column=has_bias,
        edges=module.num_edges, out_degree=int(degrees[0]) if fixed else None,
    )


def _map_conv(name, module, inp, out) -> LayerShape:
    from ..nn.conv import _AnalogConvNd

    if isinstance(module, _AnalogConvNd):
        on_array = module.bias_on_array
        digital_bias = module.bias is not None
    else:
        if getattr(module, "padding_mode", "zeros") != "zeros":
            raise HardwareMappingError(
                f"Layer '{name}' ({type(module).__name__}) uses padding_mode={module.padding_mode!r}; "
                "only zero padding maps onto an array (patches are read as they are)."
            )
        on_array = module.bias is not None
        digital_bias = False
    groups = module.groups
    patch = module.in_channels // groups * math.prod(module.kernel_size)
    return LayerShape(
        name, "conv", module.out_channels // groups, patch + int(on_array),
        vectors=_vectors(out, module.out_channels), groups=groups, digital_bias=digital_bias, bias_column=on_array,
    )


def _register_builtin() -> None:
    from ..nn import AnalogConv1d, AnalogConv2d, AnalogLinear
    from ..sparse.linear import SparseLinear

    for cls in (nn.Linear, AnalogLinear):
        register_layer_mapper(cls, _map_linear)
    register_layer_mapper(SparseLinear, _map_sparse_linear)
    for cls in (nn.Conv1d, nn.Conv2d, AnalogConv1d, AnalogConv2d):
        register_layer_mapper(cls, _map_conv)


def network_from_model(model: nn.Module, input_shape: tuple[int, ...], name: str = "model") -> NetworkShape:
    """The :class:`NetworkShape` of a built model.

    Runs one forward pass of a single zero example of ``input_shape`` (without the batch
    dimension, e.g. ``(784,)`` or ``(1, 28, 28)``) under ``torch.no_grad`` with hooks on the leaf
    modules. Analog layers simulate that pass (cheap for one example); their state is not changed
    by a forward pass.

    Raises:
        HardwareMappingError: a leaf module holds parameters but is not a known layer type
            (say which layer and how to proceed), or the model has no weight layer.
    """
    if not _MAPPERS:
        _register_builtin()
    layers: list[LayerShape] = []
    digital_ops = [0]
    hooks = []
    unmappable: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        mapper = _mapper_for(module)
        if mapper is not None:
            label = prefix or type(module).__name__
            hooks.append(module.register_forward_hook(
                lambda mod, args, out, _n=label, _m=mapper: layers.append(_m(_n, mod, args[0], out))
            ))
            return
        children = list(module.named_children())
        if children:
            for child_name, child in children:
                visit(f"{prefix}.{child_name}" if prefix else child_name, child)
            return
        if any(True for _ in module.parameters(recurse=False)):
            unmappable.append(f"'{prefix}' ({type(module).__name__})")
            return

        def count(mod, args, out):
            if isinstance(out, torch.Tensor) and not isinstance(mod, (nn.Flatten, nn.Unflatten, nn.Identity)):
                digital_ops[0] += out[0].numel() if out.dim() > 1 else out.numel()

        hooks.append(module.register_forward_hook(count))

    visit("", model)
    if unmappable:
        for hook in hooks:
            hook.remove()
        known = sorted({cls.__name__ for cls in _MAPPERS})
        raise HardwareMappingError(
            f"Cannot map layer {', '.join(unmappable)} onto the hardware: the estimators know {known} "
            "(and parameter-free layers, which run on the digital units). Replace the layer, or teach "
            "the mapping with insitu.hardware.register_layer_mapper."
        )
    try:
        param = next(model.parameters(), None)
        x = torch.zeros((1, *input_shape), device=param.device if param is not None else None)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(x)
        model.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    return NetworkShape(name, tuple(layers), digital_ops[0])


def network_from_mlp(sizes, bias: bool = True, name: str | None = None) -> NetworkShape:
    """A fully connected network from its widths, e.g. ``(784, 256, 128, 10)``, without building it.

    ``bias=True`` puts each layer's bias on its array (one extra column), as insitu's
    ``AnalogLinear`` does by default. Each hidden layer's activation counts as one digital
    operation per hidden unit.
    """
    sizes = tuple(sizes)
    if len(sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise HardwareMappingError(
            f"MLP widths must be at least two positive integers (input and output), got {list(sizes)}."
        )
    layers = tuple(
        LayerShape(str(2 * i), "linear", n_out, n_in + int(bias), bias_column=bias)
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes))
    )
    return NetworkShape(name or "mlp " + "-".join(map(str, sizes)), layers, sum(sizes[1:-1]))


def _fc_1b() -> NetworkShape:
    # A stand-in for "DNNs with about 1 billion weights" (Gokmen & Vlasov 2016 abstract): the
    # abstract does not describe the network, so we take 60 fully connected 4096×4096 layers
    # without biases (1.007e9 weights), each exactly one 4096×4096 tile of the paper's design.
    return network_from_mlp((4096,) * 61, bias=False, name="fc-1b (60 × 4096×4096)")


def _mlp_2016() -> NetworkShape:
    return network_from_mlp((784, 256, 128, 10), name="mlp 784-256-128-10")


def _cnn_2017() -> NetworkShape:
    from ..models import cnn_2017

    return network_from_model(cnn_2017(), (784,), name="cnn-2017")


def _mlp_2018() -> NetworkShape:
    # The four-neuron-layer network of Ambrogio 2018 / Cristiano 2018 [R: 784-250-125-10].
    return network_from_mlp((784, 250, 125, 10), name="mlp 784-250-125-10")


#: Named networks for the CLI and the reproduction; functions so nothing is built on import.
NAMED_NETWORKS: dict[str, Callable[[], NetworkShape]] = {
    "mlp-2016": _mlp_2016,
    "cnn-2017": _cnn_2017,
    "mlp-2018": _mlp_2018,
    "fc-1b": _fc_1b,
}


def named_network(name: str) -> NetworkShape:
    """One of :data:`NAMED_NETWORKS`; an unknown name is an error listing the known ones."""
    if name not in NAMED_NETWORKS:
        raise HardwareMappingError(f"Unknown network '{name}'; known: {sorted(NAMED_NETWORKS)}.")
    return NAMED_NETWORKS[name]()
