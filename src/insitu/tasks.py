"""What is learned: the tasks that :func:`insitu.training.train_task` trains.

A :class:`Task` holds its data as tensors (train and test inputs and targets, first dimension
the sample) and says how a network for it is built, what the training loss is and what is
measured on the test set. The loop forms a batch by slicing the (shuffled) training tensors,
so a task only has to lay its samples out along the first dimension.

Tasks (``TrainConfig.task``):

``image``
    Image classification (MNIST, Fashion-MNIST, the 8x8 digits): :class:`ImageClassification`,
    the task of every run before tasks existed (same numbers, bit for bit).
``seq-mnist`` / ``permuted-mnist``
    Sequence classification: :class:`SequenceClassification` on sequential MNIST (rows as 28
    steps) or permuted pixel MNIST (:func:`insitu.sequence_data.load_sequential_mnist`), an
    :class:`~insitu.nn.AnalogLSTM` read out after the last step.
``char-lm``
    Next-character prediction on a text (:func:`insitu.sequence_data.char_corpus`):
    :class:`CharPrediction`, an :class:`~insitu.nn.AnalogLSTM` with a readout at every step;
    measured in bits per character and accuracy.

Replicas in lockstep (:mod:`insitu.replicas`, the sweeps' ``--lockstep``):
:class:`ReplicaClassification` is image classification by ``R`` replicas of an MLP stacked on a
leading axis, each with its own config, seed, data order and subset; the same loop trains it
(``train_task`` with one config and one run folder per replica).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Task", "ImageClassification", "SequenceClassification", "CharPrediction", "ReplicaClassification", "TASKS",
    "make_task", "SequenceClassifier", "CharLSTM",
]

#: Task names of ``TrainConfig.task``.
TASKS = ("image", "seq-mnist", "permuted-mnist", "char-lm")

#: Models each task can build (``TrainConfig.model``).
TASK_MODELS = {"image": ("mlp", "cnn-2017"), "seq-mnist": ("lstm",), "permuted-mnist": ("lstm",), "char-lm": ("lstm",)}


class Task:
    """A learning problem: data, model, loss and test metrics.

    Subclasses set the data attributes and implement :meth:`build_model`; :meth:`loss`,
    :meth:`metric` and :meth:`evaluate` default to classification with one target per sample.

    Attributes:
        name: the task's name (one of :data:`TASKS`).
        train_x, train_y: training inputs and targets, samples along the first dimension.
        test_x, test_y: the same for the test set.
        replicas: ``None`` for one network; ``R`` for a task whose network holds ``R`` replicas
            on a leading axis (:class:`ReplicaClassification`): its loss and metrics are then
            per replica, and the loop keeps one data order, result and run folder per replica.
    """

    name: str = "task"
    replicas: int | None = None
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.train_x.shape[0])

    def shuffle(self, orders: list[torch.Tensor]) -> tuple:
        """The training set in this epoch's order, ``(x, y)``, from which :meth:`batch` cuts the
        batches. ``orders``: the epoch's permutations ``(N,)``, one per data order (one here)."""
        (order,) = orders
        return self.train_x[order], self.train_y[order]

    def batch(self, x: torch.Tensor, y: torch.Tensor, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``start .. start + size`` of (already shuffled) ``x`` and ``y``."""
        return x[start : start + size], y[start : start + size]

    def build_model(self, config) -> nn.Module:
        """The network of ``config`` (a :class:`~insitu.training.TrainConfig`) for this task."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean training loss of a batch (cross-entropy)."""
        return F.cross_entropy(outputs, targets)

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """Sums over a test batch: ``wrong`` predictions, summed ``loss``, ``count`` predictions."""
        return {
            "wrong": int((outputs.argmax(dim=1) != targets).sum()),
            "loss": float(F.cross_entropy(outputs, targets, reduction="sum")),
            "count": int(targets.numel()),
        }

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch_size: int = 1000) -> dict:
        """Test metrics: ``test_error`` (share of wrong predictions) and ``test_loss`` (mean
        cross-entropy per prediction), plus what :meth:`extra_metrics` adds."""
        was_training = model.training
        model.eval()
        wrong, loss, count = 0, 0.0, 0
        for start in range(0, self.test_x.shape[0], batch_size):
            m = self.metric(model(self.test_x[start : start + batch_size]), self.test_y[start : start + batch_size])
            wrong, loss, count = wrong + m["wrong"], loss + m["loss"], count + m["count"]
        model.train(was_training)
        metrics = {"test_error": wrong / count, "test_loss": loss / count}
        metrics.update(self.extra_metrics(metrics))
        return metrics

    def extra_metrics(self, metrics: dict) -> dict:
        """Metrics derived from ``test_error`` and ``test_loss`` (none by default)."""
        return {}

    def describe(self) -> dict:
        """What results.json records under ``dataset``."""
        return {"name": self.name, "train": self.n_train, "test": int(self.test_x.shape[0])}

    def summary(self, record: dict) -> str:
        """The test part of the one-line epoch summary."""
        return f"test error {100 * record['test_error']:.2f}%"


class ImageClassification(Task):
    """Images ``(N, C·H·W)`` (flattened) with class labels ``(N,)``: an MLP or the 2017 CNN.

    Args:
        data: a loaded :class:`insitu.data.Dataset`.
    """

    name = "image"

    def __init__(self, data):
        self.data = data
        self.train_x, self.train_y, self.test_x, self.test_y = data.train_x, data.train_y, data.test_x, data.test_y

    def build_model(self, config) -> nn.Module:
        from .training import build_model

        return build_model(config, self.data.image_shape, self.data.num_classes)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch_size: int = 1000) -> dict:
        from .training import evaluate

        error, loss = evaluate(model, self.test_x, self.test_y, batch_size)
        return {"test_error": error, "test_loss": loss}

    def describe(self) -> dict:
        d = self.data
        return {"name": d.name, "source": str(d.source), "train": int(d.train_x.shape[0]), "test": int(d.test_x.shape[0])}


class SequenceClassifier(nn.Module):
    """An :class:`~insitu.nn.AnalogLSTM` over ``(B, T, F)`` read out by an
    :class:`~insitu.nn.AnalogLinear` from the last step's hidden state: logits ``(B, classes)``."""

    def __init__(self, features: int, hidden: int, classes: int, layers: int = 1, config=None, bias_on_array: bool = True):
        super().__init__()
        from .nn import AnalogLinear, AnalogLSTM

        self.lstm = AnalogLSTM(features, hidden, num_layers=layers, batch_first=True, config=config, bias_on_array=bias_on_array)
        self.readout = AnalogLinear(hidden, classes, config=config, bias_on_array=bias_on_array)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.readout(out[:, -1])


class CharLSTM(nn.Module):
    """Next-character model: character indices ``(B, T)`` -> one-hot -> :class:`~insitu.nn.AnalogLSTM`
    -> :class:`~insitu.nn.AnalogLinear` at every step: logits ``(B, T, vocab)``."""

    def __init__(self, vocab_size: int, hidden: int, layers: int = 1, config=None, bias_on_array: bool = True):
        super().__init__()
        from .nn import AnalogLinear, AnalogLSTM

        self.vocab_size = int(vocab_size)
        self.lstm = AnalogLSTM(vocab_size, hidden, num_layers=layers, batch_first=True, config=config, bias_on_array=bias_on_array)
        self.readout = AnalogLinear(hidden, vocab_size, config=config, bias_on_array=bias_on_array)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(F.one_hot(x, self.vocab_size).to(torch.float32))
        return self.readout(out)


def _lstm_width(config) -> int:
    return int(config.hidden[0])


class SequenceClassification(Task):
    """Sequences ``(N, T, F)`` with class labels ``(N,)`` (sequential or permuted MNIST).

    Args:
        data: a :class:`insitu.sequence_data.SequenceDataset`.
        name: ``seq-mnist`` or ``permuted-mnist``.
    """

    def __init__(self, data, name: str = "seq-mnist"):
        self.data = data
        self.name = name
        self.train_x, self.train_y, self.test_x, self.test_y = data.train_x, data.train_y, data.test_x, data.test_y

    def build_model(self, config) -> nn.Module:
        return SequenceClassifier(
            self.data.features, _lstm_width(config), self.data.num_classes, config.layers, config.tile_config(), config.bias_on_array
        )

    def describe(self) -> dict:
        d = self.data
        return {"name": d.name, "source": str(d.source), "train": self.n_train, "test": int(self.test_x.shape[0]),
                "steps": d.steps, "features": d.features}


class CharPrediction(Task):
    """Next-character prediction on windows ``(N, T)`` of character indices, targets ``(N, T)``.

    The loss is the mean cross-entropy over all predicted characters; the test metrics are
    ``test_error`` (share of wrongly predicted characters), ``test_loss`` (nats per character),
    ``bits_per_char`` (``test_loss / ln 2``), ``accuracy`` and ``perplexity``.

    Args:
        corpus: a :class:`insitu.sequence_data.CharCorpus`.
    """

    name = "char-lm"

    def __init__(self, corpus):
        self.corpus = corpus
        self.train_x, self.train_y, self.test_x, self.test_y = corpus.train_x, corpus.train_y, corpus.test_x, corpus.test_y

    def build_model(self, config) -> nn.Module:
        return CharLSTM(self.corpus.vocab_size, _lstm_width(config), config.layers, config.tile_config(), config.bias_on_array)

    def loss(self, outputs, targets):
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))

    def metric(self, outputs, targets):
        return super().metric(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))

    def extra_metrics(self, metrics):
        return {
            "bits_per_char": metrics["test_loss"] / math.log(2),
            "accuracy": 1.0 - metrics["test_error"],
            "perplexity": math.exp(min(metrics["test_loss"], 700.0)),
        }

    def describe(self) -> dict:
        c = self.corpus
        return {"name": c.name, "source": c.source, "train": self.n_train, "test": int(self.test_x.shape[0]),
                "seq_len": c.steps, "vocab_size": c.vocab_size, "train_chars": c.train_chars, "test_chars": c.test_chars}

    def summary(self, record):
        return f"test {record['bits_per_char']:.3f} bits/char, accuracy {100 * record['accuracy']:.2f}%"


class _ReplicaRows:
    """Every replica's training tensor in that replica's order, gathered one batch at a time:
    ``rows[a:b]`` is ``(R, b - a, *sample)``. (Gathering a whole epoch at once would hold ``R``
    copies of the training set.)

    Args:
        data: ``(N, *sample)`` shared by all replicas, or ``(R, N, *sample)`` one set per replica.
        orders: ``(R, N)``, replica ``r``'s permutation of its samples.
        shared: whether ``data`` is shared.
    """

    def __init__(self, data: torch.Tensor, orders: torch.Tensor, shared: bool):
        self.data, self.orders, self.shared = data, orders, shared
        self.replica_index = torch.arange(orders.shape[0]).unsqueeze(1)  # (R, 1)

    def __getitem__(self, part: slice) -> torch.Tensor:
        index = self.orders[:, part]  # (R, B)
        return self.data[index] if self.shared else self.data[self.replica_index, index]


def replica_layer_seeds(seeds, layers: int) -> list[list[int]]:
    """Tile seeds ``[layer][replica]``: those a separate run with seed ``s`` gives its tiles
    (``train_task`` calls ``torch.manual_seed(s)`` and every tile draws its seed from it)."""
    per_replica = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        per_replica.append([int(torch.randint(0, 2**62, (1,), generator=g).item()) for _ in range(layers)])
    return [list(column) for column in zip(*per_replica)]


class ReplicaClassification(Task):
    """Image classification by ``R`` replicas of an MLP in lockstep (:mod:`insitu.replicas`): one
    network whose analog layers hold ``R`` arrays on a leading axis, trained as one batched
    computation. Replica ``r`` starts from the devices, initial weights and data order of the
    separate run with ``configs[r]`` (same seed, same subset); only the draws made during
    training (pulses, noise) come from a generator the replicas share.

    Shapes: a batch is ``x`` ``(R, B, D)``, ``y`` ``(R, B)`` (replica ``r``'s samples in its own
    order); the loss is ``(R,)``, each replica's batch mean; :meth:`evaluate` gives one metrics
    dict per replica, all on the shared test set.

    Args:
        datasets: one loaded :class:`insitu.data.Dataset` per replica. They differ only in the
            training subset (``subset`` drawn with each replica's seed); without ``subset`` the
            first one serves all.
        configs: one :class:`~insitu.training.TrainConfig` per replica (the same but for seed and
            the device and IO numbers replicas may hold apart; see
            :func:`insitu.sweep.lockstep.lockstep_group_key`).
    """

    name = "image"  # results read as those of image runs (no "task" entry)

    def __init__(self, datasets, configs):
        self.datasets, self.configs = list(datasets), list(configs)
        if len(self.datasets) != len(self.configs) or not self.configs:
            raise ValueError(f"ReplicaClassification: {len(self.datasets)} datasets and {len(self.configs)} configs; give one of each per replica.")
        self.replicas = len(self.configs)
        self.data = data = self.datasets[0]
        # One training set serves all when every replica trains on the whole set.
        self.shared = all(d is data for d in self.datasets) or self.configs[0].subset is None
        self.train_x = data.train_x if self.shared else torch.stack([d.train_x for d in self.datasets])  # (N, D) or (R, N, D)
        self.train_y = data.train_y if self.shared else torch.stack([d.train_y for d in self.datasets])  # (N,) or (R, N)
        self.test_x, self.test_y = data.test_x, data.test_y

    @property
    def n_train(self) -> int:
        return int(self.data.train_x.shape[0])

    def shuffle(self, orders: list[torch.Tensor]) -> tuple:
        """Replica ``r``'s samples in ``orders[r]`` ``(N,)``, gathered per batch (:class:`_ReplicaRows`)."""
        stacked = torch.stack(orders)  # (R, N)
        return _ReplicaRows(self.train_x, stacked, self.shared), _ReplicaRows(self.train_y, stacked, self.shared)

    def build_model(self, configs) -> nn.Module:
        """The MLP of ``configs`` (one per replica), replica ``r``'s tiles seeded as in the
        separate run with ``configs[r].seed``."""
        from . import models  # looked up at call time, so that tests can wrap models.mlp

        base, data = configs[0], self.data
        if any(getattr(c, "layer_tiles", None) is not None for c in configs):
            from .config import ConfigError

            raise ConfigError(
                "TrainConfig.layer_tiles is not supported for replicas in lockstep (their stacked "
                "layers share one config per replica); train such runs one at a time."
            )
        sizes = (math.prod(data.image_shape), *base.hidden, data.num_classes)
        seeds = replica_layer_seeds([c.seed for c in configs], len(sizes) - 1)
        return models.mlp(sizes, base.activation, [c.tile_config() for c in configs], base.bias_on_array, seeds=seeds)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each replica's mean cross-entropy over its batch: logits ``(R, B, C)``, targets
        ``(R, B)`` -> ``(R,)``."""
        return F.cross_entropy(outputs.transpose(1, 2), targets, reduction="none").mean(dim=1)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch_size: int = 1000) -> list[dict]:
        """``test_error`` and ``test_loss`` of each replica on the shared test set (one dict per replica)."""
        errors, losses = evaluate_replicas(model, self.replicas, self.test_x, self.test_y, batch_size)
        return [{"test_error": e, "test_loss": l} for e, l in zip(errors, losses)]

    def describe(self, replica: int = 0) -> dict:
        """What replica ``replica``'s results.json records under ``dataset``."""
        d = self.datasets[replica]
        return {"name": d.name, "source": str(d.source), "train": self.n_train, "test": int(d.test_x.shape[0])}


@torch.no_grad()
def evaluate_replicas(model: nn.Module, replicas: int, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000):
    """``(error rates (R,), mean cross-entropies (R,))`` of each replica of ``model`` on the
    shared test set ``x`` ``(N, D)``, ``y`` ``(N,)``, as lists."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros(replicas, dtype=torch.int64)
    loss = torch.zeros(replicas, dtype=torch.float64)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        target = y[start : start + batch_size]
        logits = model(xb.unsqueeze(0).expand(replicas, *xb.shape))  # every replica sees the same test batch
        wrong += (logits.argmax(dim=-1) != target).sum(dim=1)
        per = F.cross_entropy(logits.transpose(1, 2), target.expand(replicas, -1), reduction="none")
        loss += per.sum(dim=1).double()
    model.train(was_training)
    return [w / x.shape[0] for w in wrong.tolist()], (loss / x.shape[0]).tolist()


def make_task(config, data=None, data_dir: str | None = None, download: bool = False) -> Task:
    """The task of ``config`` (a :class:`~insitu.training.TrainConfig`), its data loaded unless
    ``data`` is given (a :class:`~insitu.data.Dataset`, a
    :class:`~insitu.sequence_data.SequenceDataset` or a :class:`~insitu.sequence_data.CharCorpus`,
    as fits the task; or a ready :class:`Task`)."""
    if isinstance(data, Task):
        return data
    from .config import ConfigError
    from .data import Dataset
    from .sequence_data import CharCorpus, SequenceDataset

    wanted = {"image": Dataset, "seq-mnist": SequenceDataset, "permuted-mnist": SequenceDataset, "char-lm": CharCorpus}
    if data is not None and config.task in wanted and not isinstance(data, wanted[config.task]):
        raise TypeError(f"Task {config.task!r} takes data of type {wanted[config.task].__name__}, got {type(data).__name__}.")
    try:
        return _make_task(config, data, data_dir, download)
    except ConfigError:
        raise
    except ValueError as exc:  # e.g. pixels_per_step not dividing the pixel count
        raise ConfigError(f"TrainConfig: {exc}") from None


def _make_task(config, data, data_dir, download) -> Task:
    from .config import ConfigError

    if config.task == "image":
        if data is None:
            from .data import load_dataset

            data = load_dataset(config.dataset, path=data_dir, download=download, subset=config.subset, seed=config.seed)
        elif config.subset is not None and data.n_train != config.subset:
            # Data loaded whole and handed in (a script training several configs on one copy):
            # the subset load_dataset would have drawn, not silently the whole set.
            from .data import _apply_subset

            data = _apply_subset(data, config.subset, config.seed)
        return ImageClassification(data)
    if data is not None and config.subset is not None:  # the image task returned above
        raise ConfigError(
            f"TrainConfig: subset {config.subset} with data passed in for task {config.task!r}: "
            "load the data with this subset, or leave data out so that the task loads it."
        )
    if config.task in ("seq-mnist", "permuted-mnist"):
        if data is None:
            from .sequence_data import load_sequential_mnist

            data = load_sequential_mnist(
                data_dir, permuted=config.task == "permuted-mnist", pixels_per_step=config.pixels_per_step,
                subset=config.subset, seed=config.seed, name=config.dataset, download=download,
            )
        return SequenceClassification(data, config.task)
    if config.task == "char-lm":
        if data is None:
            from .sequence_data import char_corpus

            data = char_corpus(config.text, seq_len=config.seq_len, subset=config.subset, seed=config.seed)
        return CharPrediction(data)
    raise ValueError(f"Unknown task {config.task!r}; choose one of {list(TASKS)}.")
