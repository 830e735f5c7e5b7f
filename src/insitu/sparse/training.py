"""Training a pre-defined sparse MLP (Dey et al. 2017), in floating point or emulated fixed point.

:class:`SparseTrainConfig` defines a run; :func:`build_sparse_mlp` builds the network;
:func:`train_sparse` trains it through the common training loop (:func:`insitu.training.train_task`,
as the task :class:`SparseClassification`) and returns a JSON-ready results dict.
"""

from __future__ import annotations

import dataclasses
import torch
from torch import nn

from ..config import Config, register_config
from ..tasks import Task
from .fixed_point import (
    FixedPointConfig,
    FixedPointFormat,
    FixedPointSGD,
    insert_quantizers,
)
from .linear import SparseLinear
from .patterns import (
    PATTERN_KINDS,
    PatternConfig,
    in_degree,
    make_pattern,
    network_density,
)

__all__ = ["SparseClassification", "SparseTrainConfig", "build_sparse_mlp", "pad_inputs", "train_sparse"]

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
# FixedPointConfig quantity -> the SparseTrainConfig field that overrides its format.
_FORMAT_FIELDS = {"weights": "weight_format", "activations": "activation_format", "errors": "error_format", "updates": "update_format"}


@register_config
@dataclasses.dataclass
class SparseTrainConfig(Config):
    """A training run of a sparse MLP.

    Attributes:
        dataset: ``mnist`` or ``fashion-mnist`` (or ``digits``).
        sizes: neurons per layer including input and output. An input wider than the data is
            padded with zeros (Dey et al. pad MNIST's 784 pixels to 800).
        out_degrees: ``d_out`` per junction; ``None`` for a dense (``nn.Linear``) network.
        pattern: ``structured``, ``clash-free`` or ``random``.
        z: edges per clock per junction, for ``clash-free`` patterns.
        interleaver_type, dither: the clash-free interleaver (see :mod:`insitu.sparse.patterns`).
        activation: hidden non-linearity (``relu`` in the authors' software).
        epochs, batch_size, seed, subset: as usual (``subset``: that many training samples).
        optimizer: ``adam`` (the authors' software) or ``sgd`` (floating point only).
        lr: learning rate of the floating-point optimizer.
        weight_decay: L2 coefficient (8e-5 in the authors' MNIST example); in fixed point it is
            part of the rounded update, ``η (∂w + λ w)`` (:class:`FixedPointConfig`).
        fixed_point: ``None`` (floating point) or ``"TOTAL:INTEGER"`` bits, e.g. ``"12:3"``, for
            weights, activations, errors and updates, trained by :class:`FixedPointSGD`.
        learning_rate_exponent: ``k`` of the fixed-point ``η = 2^-k``. The loss is summed over
            the batch, so each example contributes ``η·δ·a`` as on the hardware.
        update_rounding: ``nearest`` or ``stochastic`` rounding of the fixed-point updates
            ``η·δ·a`` (see :func:`insitu.sparse.fixed_point.quantize_stochastic`), drawn from a
            generator seeded by ``seed``.
        weight_format, activation_format, error_format, update_format: ``"TOTAL:INTEGER"`` for
            one quantity, overriding ``fixed_point`` for it (``None``: use ``fixed_point``).
        output: ``softmax`` (softmax and cross-entropy, the authors' software) or ``sigmoid``
            (sigmoid outputs with a binary cross-entropy per class, so the output error is
            ``δ = a − y`` as in the authors' RTL; a saturated output then has ``δ ≈ 0``).
        pipeline: emulate the weight staleness of the edge-processing pipeline (Dey et al. 2017
            pipeline the junctions, so examples overlap): each junction's forward pass uses its
            weights of ``2(L − l) + 1`` optimizer steps ago (:mod:`insitu.pipeline`; at batch
            ``B`` a step is ``B`` examples, so this is the pipeline of batch 1 only when ``B = 1``).
    """

    dataset: str = "mnist"
    sizes: tuple[int, ...] = (800, 100, 10)
    out_degrees: tuple[int, ...] | None = (50, 10)
    pattern: str = "structured"
    z: tuple[int, ...] | None = None
    interleaver_type: int = 1
    dither: bool = False
    activation: str = "relu"
    epochs: int = 5
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 8e-5
    fixed_point: str | None = None
    learning_rate_exponent: int = 6
    seed: int = 0
    subset: int | None = None
    output: str = "softmax"
    update_rounding: str = "nearest"
    weight_format: str | None = None
    activation_format: str | None = None
    error_format: str | None = None
    update_format: str | None = None
    pipeline: bool = False

    #: Fields added after runs were recorded: left out of ``to_dict`` at their defaults.
    _OMIT_AT_DEFAULT = {"pipeline": False}

    def validate(self) -> None:
        if len(self.sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.sizes):
            self._fail("sizes", "must be two or more positive layer widths, e.g. 800,100,10.")
        self._check_choice("pattern", PATTERN_KINDS)
        self._check_choice("activation", _ACTIVATIONS)
        self._check_choice("optimizer", ("adam", "sgd"))
        self._check_choice("output", ("softmax", "sigmoid"))
        for field in ("epochs", "batch_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self._fail(field, "must be an integer >= 1.")
        self._check_positive("lr")
        self._check_non_negative("weight_decay")
        junctions = len(self.sizes) - 1
        if self.out_degrees is not None:
            if len(self.out_degrees) != junctions:
                self._fail("out_degrees", f"needs one out-degree per junction ({junctions} for sizes {list(self.sizes)}).")
            for n_in, n_out, d in zip(self.sizes[:-1], self.sizes[1:], self.out_degrees):
                in_degree(n_in, n_out, d)
        if self.pattern == "clash-free":
            if self.out_degrees is None:
                self._fail("pattern", "clash-free needs out_degrees (a dense network has no pattern).")
            if self.z is None or len(self.z) != junctions:
                self._fail("z", f"a clash-free pattern needs z (edges per clock) for each of the {junctions} junctions.")
        overrides = [f for f in _FORMAT_FIELDS.values() if getattr(self, f) is not None]
        if self.fixed_point is None and overrides:
            self._fail(overrides[0], "sets one quantity's fixed-point format, so it needs fixed_point (e.g. '12:4') for the others.")
        if self.fixed_point is not None:
            self.fixed_point_config()  # raises a ConfigError naming the problem
        if self.subset is not None and (isinstance(self.subset, bool) or not isinstance(self.subset, int) or self.subset < 1):
            self._fail("subset", "must be a positive number of samples, or None for the whole set.")
        if not isinstance(self.pipeline, bool):
            self._fail("pipeline", "must be true or false (emulate the weight staleness of the edge-processing pipeline, insitu.pipeline).")

    def fixed_point_config(self) -> FixedPointConfig | None:
        if self.fixed_point is None:
            return None
        default = FixedPointFormat.parse(self.fixed_point)
        formats = {
            quantity: default if getattr(self, field) is None else FixedPointFormat.parse(getattr(self, field))
            for quantity, field in _FORMAT_FIELDS.items()
        }
        return FixedPointConfig(
            **formats, learning_rate_exponent=self.learning_rate_exponent, update_rounding=self.update_rounding,
            weight_decay=self.weight_decay,
        )

    def pattern_config(self, junction: int) -> PatternConfig:
        z = None if self.z is None else self.z[junction]
        return PatternConfig(self.pattern, z, self.interleaver_type, self.dither)


def build_sparse_mlp(config: SparseTrainConfig) -> tuple[nn.Sequential, list]:
    """``(model, patterns)``: the MLP of ``config`` (quantizers inserted for fixed point)."""
    layers: list[nn.Module] = []
    patterns = []
    for i, (n_in, n_out) in enumerate(zip(config.sizes[:-1], config.sizes[1:])):
        if config.out_degrees is None:
            torch.manual_seed(config.seed + i)  # nn.Linear draws from the global generator
            layers.append(nn.Linear(n_in, n_out))
        else:
            # Each junction gets its own seeds, derived from the run's seed.
            pattern = make_pattern(n_in, n_out, config.out_degrees[i], config.pattern_config(i), seed=1000 * config.seed + i)
            patterns.append(pattern)
            layers.append(SparseLinear(pattern, seed=1000 * config.seed + 100 + i))
        if i < len(config.sizes) - 2:
            layers.append(_ACTIVATIONS[config.activation]())
    model = nn.Sequential(*layers)
    fixed = config.fixed_point_config()
    if fixed is not None:
        model = insert_quantizers(model, fixed)
    return model, patterns


def pad_inputs(x: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad ``x`` ``(N, D)`` to ``(N, width)``; error if ``D > width``."""
    if x.shape[1] > width:
        raise ValueError(f"the data has {x.shape[1]} features but the input layer only {width}; use sizes[0] >= {x.shape[1]}.")
    return nn.functional.pad(x, (0, width - x.shape[1]))


def _loss(logits: torch.Tensor, target: torch.Tensor, output: str, reduction: str) -> torch.Tensor:
    if output == "softmax":
        return nn.functional.cross_entropy(logits, target, reduction=reduction)
    one_hot = nn.functional.one_hot(target, logits.shape[1]).to(logits.dtype)
    # summed over classes: ∂L/∂s = sigmoid(s) − y per output neuron
    loss = nn.functional.binary_cross_entropy_with_logits(logits, one_hot, reduction="sum")
    return loss if reduction == "sum" else loss / logits.shape[0]


class SparseClassification(Task):
    """The image classification of a sparse MLP run (:class:`SparseTrainConfig`) as a task of the
    common training loop (:func:`insitu.training.train_task`): inputs zero-padded to
    ``sizes[0]``, the loss of ``config.output`` (summed over the batch in fixed point, as the
    hardware applies per-example errors; averaged otherwise), and the test accuracy beside the
    test error."""

    name = "sparse-mlp"

    def __init__(self, config: SparseTrainConfig, data):
        if data.num_classes != config.sizes[-1]:
            raise ValueError(f"the data has {data.num_classes} classes but the output layer {config.sizes[-1]} neurons.")
        self.config = config
        self.data = data
        self.train_x, self.train_y = pad_inputs(data.train_x, config.sizes[0]), data.train_y
        self.test_x, self.test_y = pad_inputs(data.test_x, config.sizes[0]), data.test_y
        self.loss_reduction = "sum" if config.fixed_point_config() is not None else "mean"

    def build_model(self, config) -> nn.Module:
        return build_sparse_mlp(config)[0]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _loss(outputs, targets, self.config.output, self.loss_reduction)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch_size: int = 2000) -> dict:
        """Test accuracy, error and mean loss (per example), in batches of 2,000 as before the
        common loop (the results do not depend on it)."""
        correct, loss, n = 0, 0.0, self.test_x.shape[0]
        for start in range(0, n, 2000):
            logits = model(self.test_x[start : start + 2000])
            target = self.test_y[start : start + 2000]
            correct += int((logits.argmax(1) == target).sum())
            loss += float(_loss(logits, target, self.config.output, "sum"))
        return {"test_error": (n - correct) / n, "test_loss": loss / n, "test_accuracy": correct / n}

    def describe(self) -> dict:
        return {"name": self.data.name, "train": self.n_train, "test": int(self.test_x.shape[0])}

    def summary(self, record: dict) -> str:
        return f"test accuracy {100 * record['test_accuracy']:.2f}%"


def train_sparse(config: SparseTrainConfig, data, log=None, out_dir=None, resume: bool = False) -> dict:
    """Train ``config`` on ``data`` (an :class:`insitu.data.Dataset`) and return the results.

    The run goes through the common training loop (:func:`insitu.training.train_task`: the
    shuffling, checkpoints after every epoch, ``results.json``, resume, the divergence stop), in
    ``out_dir`` (a temporary folder when ``None``: nothing is kept but the returned results).
    The results hold the loop's record (config, per-epoch train loss, test error, loss and
    accuracy, seconds) and the network's junction densities and edge counts, final and best
    test accuracy.
    """
    import tempfile
    from pathlib import Path

    from ..training import TrainingDiverged, train_task

    task = SparseClassification(config, data)
    model, patterns = build_sparse_mlp(config)
    fixed = config.fixed_point_config()
    if fixed is not None:
        # The rounding draws get their own generator, derived from the run's seed.
        optimizer = FixedPointSGD(model.parameters(), fixed, seed=10_000 + config.seed)
    elif config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sizes = config.sizes
    network = {
        "edges": [p.num_edges for p in patterns] if patterns else [a * b for a, b in zip(sizes[:-1], sizes[1:])],
        "junction_density": [p.density for p in patterns] if patterns else [1.0] * (len(sizes) - 1),
        "network_density": network_density(patterns) if patterns else 1.0,
        "dense_edges": sum(a * b for a, b in zip(sizes[:-1], sizes[1:])),
        "train_samples": int(task.train_x.shape[0]),
        "test_samples": int(task.test_x.shape[0]),
        "threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory(prefix="insitu-sparse-") as scratch:
        folder = Path(out_dir) if out_dir is not None else Path(scratch)
        quiet = (lambda _line: None) if log is None else log
        try:
            results = train_task(task, model, optimizer, config, folder, resume=resume, progress=False, log=quiet)
            diverged = False
        except TrainingDiverged as exc:
            import json

            results = json.loads((folder / "results.json").read_text())
            diverged = True
            if log is not None:
                log(f"stopped: {exc}")
    results = {**results, **network}
    if diverged:
        results["diverged"] = True
    epochs = results["epochs"]
    if epochs:
        results["final_test_accuracy"] = epochs[-1]["test_accuracy"]
        results["best_test_accuracy"] = max(e["test_accuracy"] for e in epochs)
    if out_dir is not None:
        from ..training import write_json

        write_json(Path(out_dir) / "results.json", results)
    return results
