"""The one training loop, :func:`train_task`: the command line (``insitu train``), sweep points,
lockstep groups of sweeps (replicas of a network on a leading axis) and the sparse trainer.

:class:`TrainConfig` is everything that defines a run; :func:`run_training` trains, evaluates
the test error after every epoch, and keeps three files in the run folder up to date, each
written atomically (to a temporary file, then renamed), so an interrupted or failed run never
leaves a corrupt file behind:

* ``results.json``: config, status, per-epoch metrics, update counters;
* ``checkpoint.pt``: everything needed to resume bit-identically (model incl. device state and
  generators, optimizer, scheduler, data order);
* ``test_error.png``: test error per epoch.

Replicas in lockstep keep the same files per replica, except the checkpoint: one for the group,
:data:`REPLICA_CHECKPOINT` in the first replica's folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .checkpoint import FolderLock, LockedError, load_checkpoint
from .config import Config, ConfigError, _closest, register_config
from .models import CNN_2017_CONVOLUTIONS
from .optim import AnalogSGD
from .tile import AnalogTile, TileConfig

__all__ = ["TrainConfig", "TrainingDiverged", "LockedError", "run_training", "train_task", "evaluate", "build_model", "REPLICA_CHECKPOINT"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing was written for the failing epoch."""


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@register_config
@dataclasses.dataclass
class TrainConfig(Config):
    """What defines a training run.

    Attributes:
        preset: name of the tile preset (see ``insitu presets``).
        dataset: ``mnist``, ``fashion-mnist`` or ``digits``.
        model: ``mlp`` (fully connected, widths ``hidden``) or ``cnn-2017`` (the CNN of Gokmen,
            Onen & Haensch 2017; use ``activation="tanh"`` as the paper does).
        hidden: widths of the hidden layers of the ``mlp``.
        activation: hidden non-linearity.
        epochs: number of passes over the training set.
        batch_size: samples per update (1 in the 2016 paper).
        lr: learning rate.
        lr_milestones: epochs after which the learning rate is multiplied by ``lr_gamma``.
        lr_gamma: that factor.
        seed: seeds the model, the devices and the data order.
        subset: train on this many randomly chosen training samples (``None``: all).
        update_mode: override of the preset's update mode (``sequential``, ``summed`` or
            ``batched``), or ``None``.
        bias_on_array: analog layers keep their bias as an array column.
        eval_batch_size: test vectors per forward call (only speed; every vector is still one
            analog product with its own noise).
        tile: a full tile config that replaces the preset's (e.g. from ``--tile-config FILE``);
            ``preset`` then only names the starting point.
        layer_tiles: one tile config per layer of the ``mlp`` (input side first), replacing the
            common one (``tile`` or the preset) layer by layer, for settings that differ between
            layers (e.g. each layer's weight mapping, ``TwoPairPCMCell.weight_scaling_omega``);
            ``update_mode``, ``update_algorithm`` and ``cell`` still apply to each. ``None``: every
            layer takes the common config.
        conv_preset: preset of the convolutional layers of ``cnn-2017`` (default: ``preset``):
            one name for every convolution, or a comma-separated list with one name per
            convolution in order (``"gokmen-2017-cnn-nm-bm-um-13d,gokmen-2017-cnn-nm-bm-um-4d"``:
            13 devices per weight on K1, 4 on K2, as the paper reduces variability layer by layer).
        update_algorithm: override of the preset's update algorithm (``sgd``, ``mbgd``, ``svd``
            or ``sbe``; :mod:`insitu.update.lowrank`), or ``None``.
        rank: singular pairs written per batch by ``svd`` and ``sbe``.
        cell: a learning-rule cell on the preset's device, as a spec
            (:func:`insitu.cells.cell_from_spec`): a name of :data:`insitu.cells.CELL_NAMES`
            (``sgd``, ``tiki-taka``, ``ttv2``, ``c-ttv2``, ``agad``, ``mp``), optionally with field
            overrides, ``"c-ttv2:transfer_lr=10,max_pulses=5"``; ``None`` keeps the preset's cell.
        task: what is learned (:mod:`insitu.tasks`): ``image`` (classification of ``dataset``),
            ``seq-mnist`` / ``permuted-mnist`` (sequence classification of ``dataset`` read row by
            row or pixel by pixel) or ``char-lm`` (next-character prediction on ``text``). The
            sequence tasks take ``model="lstm"`` with ``hidden`` one width (the LSTM's hidden size).
        layers: stacked LSTM layers of ``model="lstm"``.
        seq_len: characters per training window of ``char-lm``.
        pixels_per_step: pixels per time step of ``permuted-mnist``.
        text: the text file of ``char-lm`` (``None``: the bundled public-domain *Pride and
            Prejudice*, :data:`insitu.sequence_data.BUNDLED_TEXT`).

    The task fields are left out of :meth:`to_dict` while they hold their defaults, so that the
    config of an image run (its results.json, its sweep point key) reads as before they existed.
    """

    preset: str = "gokmen-vlasov-2016"
    dataset: str = "mnist"
    model: str = "mlp"
    hidden: tuple[int, ...] = (256, 128)
    activation: str = "sigmoid"
    epochs: int = 30
    batch_size: int = 1
    lr: float = 0.01
    lr_milestones: tuple[int, ...] = (10, 20)
    lr_gamma: float = 0.5
    seed: int = 0
    subset: int | None = None
    update_mode: str | None = None
    bias_on_array: bool = True
    eval_batch_size: int = 1000
    tile: TileConfig | None = None
    layer_tiles: tuple[TileConfig, ...] | None = None
    conv_preset: str | None = None
    update_algorithm: str | None = None
    rank: int = 1
    cell: str | None = None
    task: str = "image"
    layers: int = 1
    seq_len: int = 100
    pixels_per_step: int = 1
    text: str | None = None
    pipeline: bool = False

    #: Fields added with the tasks, written by :meth:`to_dict` only when not at their default.
    # Fields added after runs and sweep stores were recorded: left out of the dict at their defaults,
    # so those records' configs and point keys stay what they were.
    _TASK_FIELDS = {"task": "image", "layers": 1, "seq_len": 100, "pixels_per_step": 1, "text": None, "cell": None, "pipeline": False}

    _OMIT_AT_DEFAULT = {**_TASK_FIELDS, "layer_tiles": None}

    def validate(self) -> None:
        from .models import ACTIVATIONS
        from .presets import PRESETS
        from .tasks import TASK_MODELS, TASKS

        self._check_choice("preset", PRESETS)
        self._check_choice("task", TASKS)
        if self.model not in TASK_MODELS[self.task]:
            self._fail("model", f"must be one of {list(TASK_MODELS[self.task])} for task {self.task!r}.")
        for field in ("layers", "seq_len", "pixels_per_step"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self._fail(field, "must be an integer >= 1.")
        if self.text is not None and (self.task != "char-lm" or not isinstance(self.text, str)):
            self._fail("text", "is the path of the text of task 'char-lm' (None: the bundled text).")
        if self.model == "lstm" and (not isinstance(self.hidden, (tuple, list)) or len(self.hidden) != 1):
            self._fail("hidden", "must be one width for model 'lstm' (its hidden size; stack layers with layers=N).")
        self._check_choice("activation", ACTIVATIONS)
        from .data import DATASETS

        if not isinstance(self.dataset, str) or self.dataset.lower().replace("_", "-") not in DATASETS:
            self._fail("dataset", f"must be one of {list(DATASETS)}.{_closest(str(self.dataset), DATASETS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            self._fail("seed", "must be an integer, e.g. 0.")
        for field in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self._fail(field, "must be an integer >= 1.")
        self._check_positive("lr", "lr_gamma")
        if self.lr > _FLOAT32_MAX:  # weights are float32: the update lr·δ·x could not be formed
            self._fail("lr", f"must be at most {_FLOAT32_MAX:.3g} (the largest float32); useful rates are far below 1.")
        if (
            not isinstance(self.hidden, (tuple, list))
            or not self.hidden
            or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden)
        ):
            self._fail("hidden", "must be one or more positive layer widths, e.g. 256,128.")
        if not isinstance(self.lr_milestones, (tuple, list)) or any(
            isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.lr_milestones
        ):
            self._fail("lr_milestones", "must be positive epoch numbers, e.g. 10,20.")
        if self.subset is not None and (isinstance(self.subset, bool) or not isinstance(self.subset, int) or self.subset < 1):
            self._fail("subset", "must be a positive number of samples, or None for the whole set.")
        if self.update_mode is not None:
            from .update.pulse import MODES

            self._check_choice("update_mode", MODES)
        if self.update_algorithm is not None:
            try:
                self._algorithm()  # validates method and rank with the algorithm's own messages
            except ConfigError as exc:
                raise ConfigError(f"TrainConfig.update_algorithm / rank: {exc}") from None
            if self.batch_size < self.rank:
                self._fail("batch_size", f"must be >= rank ({self.rank}): a batch of fewer samples has fewer singular pairs.")
        elif self.rank != 1:
            self._fail("rank", "applies with update_algorithm 'svd' or 'sbe' (--update); leave it at 1 otherwise.")
        if self.conv_preset is not None:
            if not isinstance(self.conv_preset, str):
                self._fail("conv_preset", "must be a preset name or a comma-separated list of them, one per convolution.")
            names = self.conv_preset.split(",")
            for name in names:
                if name not in PRESETS:
                    self._fail("conv_preset", f"unknown preset '{name}'; choose from {sorted(PRESETS)}.{_closest(name, PRESETS)}")
            if self.model != "cnn-2017":
                self._fail("conv_preset", "applies to the convolutional layers of --model cnn-2017 only.")
            if len(names) not in (1, CNN_2017_CONVOLUTIONS):
                self._fail(
                    "conv_preset",
                    f"names {len(names)} presets; give one for every convolution or one per convolution "
                    f"({CNN_2017_CONVOLUTIONS} for cnn-2017, in order K1,K2).",
                )
        if self.cell is not None:
            from .cells import cell_from_spec

            if not isinstance(self.cell, str):
                self._fail("cell", "must be a --cell spec string, e.g. 'ttv2' or 'c-ttv2:transfer_lr=10,max_pulses=5'.")
            try:
                cell_from_spec(self.cell)
            except ConfigError as exc:
                raise ConfigError(f"TrainConfig.cell: {exc}") from None
        if self.tile is not None and not isinstance(self.tile, TileConfig):
            self._fail("tile", "must be a TileConfig (or None to use the preset).")
        if self.layer_tiles is not None:
            def refuse(message: str) -> None:  # without the configs' repr, which runs to pages
                raise ConfigError(f"TrainConfig.layer_tiles: {message}")

            if self.task != "image" or self.model != "mlp":
                refuse("applies to model 'mlp' of task 'image' (cnn-2017 takes conv_preset).")
            if not isinstance(self.layer_tiles, (tuple, list)) or not all(isinstance(t, TileConfig) for t in self.layer_tiles):
                refuse("must be a sequence of TileConfig, one per layer (or None for the common config).")
            if len(self.layer_tiles) != len(self.hidden) + 1:
                refuse(
                    f"has {len(self.layer_tiles)} configs for an mlp of {len(self.hidden) + 1} layers "
                    f"(hidden {tuple(self.hidden)}); give one per layer, input side first."
                )
        if not isinstance(self.pipeline, bool):
            self._fail("pipeline", "must be true or false (emulate the weight staleness of a layer pipeline, insitu.pipeline).")
        if self.pipeline and self.task != "image":
            self._fail("pipeline", "applies to the feed-forward image networks (mlp, cnn-2017); a recurrent layer is one stage run many times.")

    def tile_config(self) -> TileConfig:
        from .presets import get_preset

        return self._with_overrides(self.tile if self.tile is not None else get_preset(self.preset))

    def layer_tile_configs(self) -> tuple[TileConfig, ...] | None:
        """The tile config of each ``mlp`` layer when ``layer_tiles`` gives them (with this
        config's overrides), else ``None`` (every layer takes :meth:`tile_config`)."""
        if self.layer_tiles is None:
            return None
        return tuple(self._with_overrides(t) for t in self.layer_tiles)

    def conv_tile_configs(self) -> tuple[TileConfig, ...]:
        """The tile config of each convolution of ``cnn-2017``, in order (``conv_preset``, else the
        common one)."""
        from .presets import get_preset

        if self.conv_preset is None:
            return (self.tile_config(),) * CNN_2017_CONVOLUTIONS
        names = self.conv_preset.split(",")
        if len(names) == 1:
            names = names * CNN_2017_CONVOLUTIONS
        return tuple(self._with_overrides(get_preset(name)) for name in names)

    def _algorithm(self):
        from .update import UpdateAlgorithmConfig

        return UpdateAlgorithmConfig(method=self.update_algorithm, rank=self.rank)

    def _with_overrides(self, config: TileConfig) -> TileConfig:
        if self.update_mode is not None:
            config = config.replace(update=config.update.replace(mode=self.update_mode))
        if self.update_algorithm is not None:
            config = config.replace(algorithm=self._algorithm())
        if self.cell is not None:
            from .cells import cell_from_spec

            config = config.replace(cell=cell_from_spec(self.cell))
        return config


def build_model(config: TrainConfig, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The network of ``config`` for images of ``image_shape`` and ``num_classes`` outputs."""
    from .models import cnn_2017, mlp

    if config.model == "cnn-2017":
        return cnn_2017(
            image_shape, num_classes, config.activation, config.tile_config(), config.bias_on_array,
            conv_config=config.conv_tile_configs(),
        )
    sizes = (math.prod(image_shape), *config.hidden, num_classes)
    layer_configs = config.layer_tile_configs()
    return mlp(
        sizes, config.activation, config.tile_config() if layer_configs is None else list(layer_configs),
        bias_on_array=config.bias_on_array, per_layer=layer_configs is not None,
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """``(error rate, mean cross-entropy)`` of ``model`` on ``x`` ``(N, D)``, labels ``y`` ``(N,)``."""
    was_training = model.training
    model.eval()
    wrong = 0
    loss = 0.0
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        wrong += int((logits.argmax(dim=1) != target).sum())
        loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
    model.train(was_training)
    return wrong / x.shape[0], loss / x.shape[0]


def _atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` then rename over ``path``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    # mkstemp makes the file 0600; a result file gets the mode any new file would (0666 & ~umask).
    if hasattr(os, "fchmod"):  # not on Windows
        os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it, then put it back
    os.umask(mask)
    return mask


def write_json(path: Path, data: dict) -> None:
    _atomic_write_bytes(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def plot_test_error(path: Path, results: dict) -> None:
    """PNG of test error (%) per epoch, one line per run given in ``results["epochs"]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] for e in results["epochs"]]
    cfg = results["config"]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    if results.get("task", "image") == "char-lm":  # a language model: bits per character
        ax.plot(epochs, [e["bits_per_char"] for e in results["epochs"]], marker="o", ms=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test bits per character")
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{cfg['preset']} on {results['dataset']['name']}, batch {cfg['batch_size']}", fontsize=9)
    else:
        errors = [100 * e["test_error"] for e in results["epochs"]]
        ax.plot(epochs, errors, marker="o", ms=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        _log_error_axis(ax)
        where = cfg["dataset"] if "task" not in results else results["dataset"]["name"]
        what = cfg.get("preset", results.get("task"))  # a sparse MLP run has no preset
        ax.set_title(f"{what} on {where}, batch {cfg['batch_size']}", fontsize=9)
    fig.tight_layout()
    _atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _log_error_axis(ax) -> None:
    """Log scale with plain-number tick labels (2, 3, 5 rather than 2×10⁰)."""
    from matplotlib.ticker import FormatStrFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.grid(True, which="both", alpha=0.3)


def plot_runs(path: Path, runs: list[tuple[str, dict]], title: str = "") -> None:
    """PNG comparing test error (%) per epoch of several runs, given as ``(label, results)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, results in runs:
        epochs = [e["epoch"] for e in results["epochs"]]
        ax.plot(epochs, [100 * e["test_error"] for e in results["epochs"]], marker="o", ms=2.5, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    _log_error_axis(ax)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _atomic_write_bytes(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _rank1_writes(model: nn.Module) -> int:
    """Rank-1 writes performed so far on all analog tiles of ``model``."""
    return sum(m.counters.rank1_updates for m in model.modules() if isinstance(m, AnalogTile))


def _layer_counters(model: nn.Module) -> dict:
    # Tiles with more to report (e.g. transfers and endurance of multi-conductance cells) add it.
    return {
        name: {**m.counters.to_dict(), **(m.counter_report() if hasattr(m, "counter_report") else {})}
        for name, m in model.named_modules()
        if isinstance(m, AnalogTile)
    }


def _backend_name() -> str:
    """The pulse-update backend CPU tiles run on (recorded in results.json: the same seed gives
    the same run on the same backend; the backends agree in distribution)."""
    from .update.kernels import select_backend

    return select_backend(torch.device("cpu"))


def run_training(
    config: TrainConfig,
    out_dir: str | Path,
    data=None,
    data_dir: str | None = None,
    download: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    fused_update: bool = True,
) -> dict:
    """Train as ``config`` says, writing results, checkpoints and the plot into ``out_dir``.

    The task (``config.task``, :mod:`insitu.tasks`) is trained by :func:`train_task`.

    Args:
        config: the run.
        out_dir: run folder (created).
        data: already loaded data (a :class:`insitu.data.Dataset` for the image task, see
            :func:`insitu.tasks.make_task`), else loaded by name.
        data_dir, download: where to find the dataset / whether to download it.
        resume: continue from ``out_dir/checkpoint.pt``. Its config must equal ``config`` except for
            ``epochs``, which may grow, so that a long run can be extended across sittings.
        progress: show a progress bar.
        log: where one-line epoch summaries go.
        fused_update: let :class:`~insitu.optim.AnalogSGD` fuse the layers' pulse updates
            (``False``: each tile on its own, as runs before the fused update; the same update in
            distribution). Recorded in the results; not part of ``config``.

    Returns:
        The results dict (also in ``out_dir/results.json``).

    Raises:
        LockedError: another run holds ``out_dir`` (its ``run.lock``).
        insitu.checkpoint.CheckpointError: ``resume`` and the checkpoint is damaged or unsafe.
    """
    from .tasks import make_task

    return train_task(
        lambda: make_task(config, data, data_dir, download), None, None, config, out_dir,
        resume=resume, progress=progress, log=log, fused_update=fused_update,
    )


def train_task(
    task,
    model: nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    config,
    out_dir,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    fused_update: bool = True,
) -> dict | list[dict]:
    """The training loop of every task: train ``model`` on ``task`` for ``config.epochs`` epochs.

    Every epoch the training samples are shuffled (a generator seeded with ``config.seed``),
    cut into batches of ``config.batch_size``, and each batch takes one optimizer step on
    ``task.loss``; then the test metrics (``task.evaluate``) are measured, the learning rate
    schedule (``lr_milestones``, ``lr_gamma``) steps, and ``checkpoint.pt``, ``results.json``
    and ``test_error.png`` are written (atomically; the epoch counts once its checkpoint is on
    disk). A NaN or infinite loss stops the run with :class:`TrainingDiverged`; an interrupt or
    failure marks results.json ``interrupted`` or ``failed``. ``run.lock`` keeps a second run
    out of ``out_dir``.

    **Replicas in lockstep.** A task with a leading replica axis (``task.replicas == R``,
    :class:`insitu.tasks.ReplicaClassification`) takes ``R`` configs and ``R`` run folders
    (``config`` and ``out_dir`` sequences), and the same loop keeps per replica what it keeps
    for a run: the data order (a generator seeded with that replica's seed), the train loss
    (``task.loss`` is ``(R,)``, each replica's batch mean), the test metrics, ``results.json``
    and ``test_error.png`` in the replica's folder. The replicas share the optimizer step, the
    learning-rate schedule and one checkpoint, ``lockstep.pt`` (:data:`REPLICA_CHECKPOINT`) in
    the first folder. A replica whose loss turns NaN or infinite stops (its weights are set to
    zero, its results say ``diverged``, its last good epoch kept) and the others go on.

    Args:
        task: a :class:`insitu.tasks.Task`, or a function returning one (called once the run
            folders are locked and checked, so that a refused run loads no data).
        model: the network, or ``None``: ``task.build_model(config)`` after
            ``torch.manual_seed(config.seed)`` (for replicas ``task.build_model(configs)``
            after seeding with the first one's seed; each replica's tiles take their own seeds).
        optimizer: or ``None``: :class:`~insitu.optim.AnalogSGD` with ``config.lr``.
        config: the run (its ``epochs``, ``batch_size``, ``lr`` schedule, ``seed``, ``eval_batch_size``):
            a :class:`TrainConfig`, or another trainer's config with ``epochs``, ``batch_size``,
            ``seed``, ``to_dict``/``from_dict`` (the sparse MLP's :class:`~insitu.sparse.training.SparseTrainConfig`;
            what it lacks (schedule, tiles, pipeline) is taken as absent). For replicas a list of
            ``R`` configs that agree in all of these but ``seed``; the first one's are used.
        out_dir: the run folder; for replicas a list of ``R`` folders.
        resume, progress, log, fused_update: as :func:`run_training`.

    Returns:
        The results dict (also in ``out_dir/results.json``); for replicas a list of ``R``.
    """
    book = _ReplicaBook(config, out_dir) if isinstance(config, (list, tuple)) else _RunBook(config, out_dir)
    if resume and not book.checkpoint.exists():
        raise FileNotFoundError(f"Cannot resume: no {book.checkpoint.name} in {book.checkpoint.parent}. Start the run without --resume.")
    # Two runs in one folder would overwrite each other's checkpoint and results: the second one
    # stops here (the lock is released when this run ends, however it ends, even by kill -9).
    with contextlib.ExitStack() as locks:
        for folder in book.folders:
            folder.mkdir(parents=True, exist_ok=True)
            locks.enter_context(FolderLock(
                folder / LOCK_FILE,
                f"Another `insitu train` is running in {folder}; wait for it to finish (or stop it), or choose another --out folder.",
            ))
        if not resume and book.checkpoint.exists():
            raise FileExistsError(
                f"{book.checkpoint.parent} already holds a run ({book.checkpoint.name}). "
                "Pass --resume to continue it, or choose another --out folder."
            )
        if callable(task) and not hasattr(task, "build_model"):
            task = task()
        book.check_task(task)
        _train_task_locked(task, model, optimizer, book, resume, progress, log, fused_update)
    return book.returned()


#: The lock file of a run folder (see :func:`run_training`).
LOCK_FILE = "run.lock"

#: The checkpoint of replicas in lockstep, in the first replica's folder (:func:`train_task`).
REPLICA_CHECKPOINT = "lockstep.pt"


def _train_task_locked(task, model, optimizer, book: _RunBook, resume, progress, log, fused_update) -> None:
    config = book.config
    # The order of the random draws is that of every run before tasks existed: model (tile
    # seeds, initial weights) from torch's generator seeded here, then the data order.
    if model is None:
        torch.manual_seed(config.seed)
        model = task.build_model(book.model_config)
    if optimizer is None:
        optimizer = AnalogSGD(model.parameters(), lr=config.lr, fused=fused_update)
    # A config of another trainer (the sparse MLP's) may have no schedule, tiles or pipeline.
    milestones, gamma = list(getattr(config, "lr_milestones", ())), getattr(config, "lr_gamma", 1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=gamma)
    # One data order per replica (one for a run), each from its own seed.
    order_generators = [torch.Generator().manual_seed(c.seed) for c in book.configs]
    staleness = None
    if getattr(config, "pipeline", False):  # the forward pass of each layer with the weights a layer pipeline would hold
        from .pipeline import PipelineStaleness, pipeline_delays, weight_layers

        layers = weight_layers(model)
        staleness = PipelineStaleness(layers, pipeline_delays(len(layers)))
    book.start(task, fused_update)
    start_epoch = 0
    if resume:
        start_epoch = _resume(book, load_checkpoint(book.checkpoint), model, optimizer, scheduler, order_generators, staleness, fused_update)
        log(f"resumed {book.where()} after epoch {start_epoch}")

    n_train = task.n_train
    batch = config.batch_size
    # A task whose loss is summed over the batch (the fixed-point sparse MLP, as its hardware
    # applies per-example errors) reports a sum; the epoch's mean loss counts it once.
    summed_loss = getattr(task, "loss_reduction", "mean") == "sum"
    try:
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            xs, ys = task.shuffle([torch.randperm(n_train, generator=g) for g in order_generators])
            model.train()
            tally = book.loss_tally(model, summed_loss, epoch, lr)
            bar = _progress(n_train, epoch, config.epochs, progress, book.folders)
            for step, start in enumerate(range(0, n_train, batch)):
                xb, yb = task.batch(xs, ys, start, batch)
                n = min(batch, n_train - start)  # samples in this batch (per replica)
                # Digital parameters (a digital bias) accumulate .grad like any torch parameter:
                # without this their step would apply the sum of all past gradients.
                optimizer.zero_grad(set_to_none=True)
                loss = tally.add(task.loss(model(xb), yb), start, n)
                loss.backward()
                optimizer.step()
                if staleness is not None:
                    staleness.step()
                bar.update(n)
                if bar.bar is not None and step % 200 == 0:
                    bar.set_postfix(loss=f"{tally.running(start + n):.4f}", writes=_rank1_writes(model), refresh=False)
            bar.close()
            train_seconds = time.perf_counter() - started
            metrics = book.per_member(task.evaluate(model, getattr(config, "eval_batch_size", 1000)))
            scheduler.step()
            means = tally.means(n_train)
            committed = _committed(book, model, epoch, lr, means, metrics, train_seconds, n_train)
            # The epoch counts only once its checkpoint is on disk: results and checkpoint agree.
            checkpoint = {
                "epoch": epoch + 1,
                **book.config_entry(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                **book.member_entries(order_generators, committed),
            }
            if staleness is not None:
                checkpoint["pipeline"] = staleness.state_dict()
            _atomic_write_bytes(book.checkpoint, lambda tmp: torch.save(checkpoint, tmp))
            book.results = committed
            for folder, result in zip(book.folders, committed):
                write_json(folder / "results.json", result)
                if result["epochs"]:  # a replica that diverged in its first epoch has nothing to plot
                    plot_test_error(folder / "test_error.png", result)
            log(book.epoch_line(task, epoch, lr, means, metrics, train_seconds / n_train))
            if not bool(book.alive.any()):  # every replica diverged
                break
    except BaseException as exc:
        for module in model.modules():
            if isinstance(module, AnalogTile):
                module.discard_pending()
        book.write_failure(exc)
        raise


def _resume(book, checkpoint: dict, model, optimizer, scheduler, order_generators, staleness, fused_update) -> int:
    """Restore a run (or replica group) from ``checkpoint``; returns the epochs it holds.
    Refuses (:class:`ConfigError`) a checkpoint made with other configs (only ``epochs`` may grow)."""
    saved = book.saved_configs(checkpoint)
    if len(saved) != len(book.configs):
        raise ConfigError(f"The checkpoint {book.where_checkpoint()} holds {len(saved)} replicas, not {len(book.configs)}; resume with the same configs.")
    for r, (old, config) in enumerate(zip(saved, book.configs)):
        # Through from_dict so that fields added since the checkpoint was written take their defaults.
        old, wanted = type(config).from_dict(old).to_dict(), config.to_dict()
        if {**old, "epochs": None} != {**wanted, "epochs": None}:
            changed = sorted(k for k in set(old) | set(wanted) if old.get(k) != wanted.get(k) and k != "epochs")
            raise ConfigError(
                f"The checkpoint {book.where_checkpoint(r)} was made with a different config (differs in: {', '.join(changed)}); "
                f"resume with the same options (only --epochs may grow). Saved: {old}"
            )
    if book.config.epochs < checkpoint["epoch"]:
        raise ConfigError(
            f"The checkpoint {book.where_checkpoint()} already holds {checkpoint['epoch']} epochs; "
            f"--epochs {book.config.epochs} is fewer. Pass --epochs {checkpoint['epoch']} or more."
        )
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    for generator, state in zip(order_generators, book.saved_generator_states(checkpoint)):
        generator.set_state(state)
    if "torch_rng" in checkpoint:  # a run's (replica groups draw nothing from torch's generator)
        torch.set_rng_state(checkpoint["torch_rng"])
    if staleness is not None:
        staleness.load_state_dict(checkpoint["pipeline"])
    book.restore(checkpoint, fused_update)
    return checkpoint["epoch"]


def _committed(book, model, epoch: int, lr: float, means: list[float], metrics: list[dict], train_seconds: float, n_train: int) -> list[dict]:
    """Every member's results with this epoch's record added (a stopped replica's stay as they were)."""
    committed = []
    for r, result in enumerate(book.results):
        if book.alive[r]:
            record = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": means[r],
                **metrics[r],
                "train_seconds": train_seconds,
                "seconds_per_sample": train_seconds / n_train,
                "rank1_writes": _rank1_writes(model),
            }
            result = dict(result, epochs=result["epochs"] + [record], counters=book.counters(model, r))
            if epoch + 1 == book.config.epochs:
                result["status"] = "completed"
        committed.append(result)
    return committed


def _results_header(config, dataset: dict) -> dict:
    """The first entries of a results.json: version, status, configs, dataset."""
    from . import __version__

    return {
        "insitu_version": __version__,
        "status": "running",
        "config": config.to_dict(),
        "tile_config": config.tile_config().to_dict() if hasattr(config, "tile_config") else None,
        "conv_tile_config": _conv_tile_configs_record(config),
        **_layer_tile_configs_record(config),
        "dataset": dataset,
    }


def _layer_tile_configs_record(config) -> dict:
    """``{"layer_tile_configs": [...]}`` for an mlp with a config per layer, else nothing (the
    results of runs without it read as before)."""
    configs = config.layer_tile_configs() if hasattr(config, "layer_tile_configs") else None
    return {} if configs is None else {"layer_tile_configs": [c.to_dict() for c in configs]}


def _conv_tile_configs_record(config):
    """The convolutions' tile config for results.json: one dict when every convolution has the same
    (as runs recorded it before per-convolution presets), else a list, one per convolution."""
    if getattr(config, "model", None) != "cnn-2017":
        return None
    configs = [c.to_dict() for c in config.conv_tile_configs()]
    return configs[0] if all(c == configs[0] for c in configs) else configs


class _RunBook:
    """What the loop keeps per run folder, for one run: its config, folder and results, where
    its checkpoint lies and what it holds, what a NaN loss does (:class:`TrainingDiverged`).
    :class:`_ReplicaBook` keeps the same for ``R`` replicas in lockstep; the lists hold one
    entry per member (one here, ``R`` there).

    Attributes:
        configs, folders: one config and run folder per member.
        checkpoint: the checkpoint file (``checkpoint.pt`` in the run folder).
        results: each member's results dict (as in its results.json).
        alive: ``(members,)`` bool, the members still training (a run either trains or raises).
    """

    def __init__(self, config, out_dir):
        self.configs, self.folders = [config], [Path(out_dir)]
        self.checkpoint = self.folders[0] / "checkpoint.pt"
        self.results: list[dict] = []
        self.alive = torch.ones(1, dtype=torch.bool)

    @property
    def config(self):
        """The settings every member shares (epochs, batch size, lr schedule, eval batch size)."""
        return self.configs[0]

    @property
    def model_config(self):
        """What ``task.build_model`` takes."""
        return self.config

    def check_task(self, task) -> None:
        if getattr(task, "replicas", None) is not None:
            raise ValueError(f"train_task: the task trains {task.replicas} replicas; give one config and one run folder per replica (lists).")

    def start(self, task, fused_update: bool) -> None:
        """The results of a run not yet trained."""
        result = {
            **_results_header(self.config, task.describe()),
            "epochs": [],
            "fused_update": bool(fused_update),
            "update_backend": _backend_name(),
        }
        if task.name != "image":
            result["task"] = task.name
        self.results = [result]

    def restore(self, checkpoint: dict, fused_update: bool) -> None:
        """The results saved in ``checkpoint``, running again."""
        result = checkpoint["results"]
        result["status"] = "running"
        result["fused_update"] = bool(fused_update)  # the path of the epochs trained from now on
        result["update_backend"] = _backend_name()
        result["config"] = self.config.to_dict()
        self.results = [result]

    def saved_configs(self, checkpoint: dict) -> list[dict]:
        return [checkpoint["config"]]

    def saved_generator_states(self, checkpoint: dict) -> list[torch.Tensor]:
        return [checkpoint["order_generator"]]

    def config_entry(self) -> dict:
        return {"config": self.config.to_dict()}

    def member_entries(self, order_generators, committed: list[dict]) -> dict:
        """The checkpoint's entries after the optimizer's: data order, torch's generator, results."""
        return {"order_generator": order_generators[0].get_state(), "torch_rng": torch.get_rng_state(), "results": committed[0]}

    def per_member(self, metrics: dict) -> list[dict]:
        """``task.evaluate``'s metrics as one dict per member."""
        return [metrics]

    def counters(self, model: nn.Module, member: int) -> dict:
        return _layer_counters(model)

    def loss_tally(self, model: nn.Module, summed: bool, epoch: int, lr: float) -> _RunLoss:
        return _RunLoss(summed, epoch, lr)

    def where(self) -> str:
        return str(self.folders[0])

    def where_checkpoint(self, member: int | None = None) -> str:
        return f"in {self.folders[0]}"

    def epoch_line(self, task, epoch: int, lr: float, means: list[float], metrics: list[dict], seconds_per_sample: float) -> str:
        return (
            f"epoch {epoch + 1}/{self.config.epochs}  lr {lr:g}  train loss {means[0]:.4f}  "
            f"{task.summary(self.results[0]['epochs'][-1])}  ({seconds_per_sample * 1e3:.3f} ms/sample)"
        )

    def write_failure(self, exc: BaseException) -> None:
        """Mark the results ``interrupted`` (Ctrl-C, SIGTERM) or ``failed``; a diverged replica
        keeps its own status."""
        interrupt = _interrupt_in(exc)
        for folder, result in zip(self.folders, self.results):
            if result.get("status") == "diverged":
                continue
            failed = dict(result, status="interrupted" if interrupt is not None else "failed")
            failed["error"] = f"{type(interrupt or exc).__name__}: {interrupt or exc}"
            write_json(folder / "results.json", failed)

    def returned(self) -> dict:
        return self.results[0]


class _ReplicaBook(_RunBook):
    """:class:`_RunBook` for ``R`` replicas in lockstep: one config, run folder and results per
    replica, one checkpoint (:data:`REPLICA_CHECKPOINT` in the first folder, with every
    replica's data order and which replicas still train), and a NaN loss stops only its
    replica (:meth:`stop`)."""

    def __init__(self, configs, out_dirs):
        if isinstance(out_dirs, (str, os.PathLike)):
            raise ValueError("train_task: replicas need one run folder each (a list of folders), not one folder.")
        self.configs, self.folders = list(configs), [Path(d) for d in out_dirs]
        if len(self.configs) != len(self.folders) or not self.configs:
            raise ValueError(f"train_task: {len(self.configs)} configs and {len(self.folders)} run folders; give one folder per replica.")
        self.checkpoint = self.folders[0] / REPLICA_CHECKPOINT
        self.results = []
        self.alive = torch.ones(len(self.configs), dtype=torch.bool)

    @property
    def model_config(self) -> list:
        return self.configs

    def check_task(self, task) -> None:
        if getattr(task, "replicas", None) != len(self.configs):
            raise ValueError(f"train_task: {len(self.configs)} replica configs, but the task trains {getattr(task, 'replicas', None)} replicas.")

    def start(self, task, fused_update: bool) -> None:
        members = [str(d) for d in self.folders]
        self.results = [
            {
                **_results_header(config, task.describe(r)),
                "lockstep": {"replicas": len(self.configs), "replica": r, "members": members},
                "epochs": [],
            }
            for r, config in enumerate(self.configs)
        ]

    def restore(self, checkpoint: dict, fused_update: bool) -> None:
        self.results, self.alive = checkpoint["results"], checkpoint["alive"]
        for r, config in enumerate(self.configs):
            self.results[r]["config"] = config.to_dict()
            if self.alive[r]:
                self.results[r]["status"] = "running"

    def saved_configs(self, checkpoint: dict) -> list[dict]:
        return checkpoint["configs"]

    def saved_generator_states(self, checkpoint: dict) -> list[torch.Tensor]:
        return checkpoint["order_generators"]

    def config_entry(self) -> dict:
        return {"configs": [c.to_dict() for c in self.configs]}

    def member_entries(self, order_generators, committed: list[dict]) -> dict:
        # No torch generator state: the replicas' draws come from their tiles' generators.
        return {"order_generators": [g.get_state() for g in order_generators], "alive": self.alive.clone(), "results": committed}

    def per_member(self, metrics: list[dict]) -> list[dict]:
        return metrics

    def counters(self, model: nn.Module, member: int) -> dict:
        from .replicas import ReplicatedTile

        return {
            name: {**m.counters.replica(member), **m.replica_counter_report(member)}
            for name, m in model.named_modules()
            if isinstance(m, ReplicatedTile)
        }

    def loss_tally(self, model: nn.Module, summed: bool, epoch: int, lr: float) -> _ReplicaLoss:
        return _ReplicaLoss(self, model, epoch, lr)

    def where(self) -> str:
        return f"lockstep group of {len(self.configs)} in {self.folders[0]}"

    def where_checkpoint(self, member: int | None = None) -> str:
        return f"in {self.folders[0]}" + ("" if member is None else f" (replica {member}, {self.folders[member]})")

    def epoch_line(self, task, epoch: int, lr: float, means: list[float], metrics: list[dict], seconds_per_sample: float) -> str:
        shown = ", ".join(f"{100 * m['test_error']:.2f}" for m, a in zip(metrics, self.alive.tolist()) if a)
        return (
            f"epoch {epoch + 1}/{self.config.epochs}  lr {lr:g}  test error (%) of {int(self.alive.sum())} live replicas: {shown}  "
            f"({seconds_per_sample * 1e3:.3f} ms/sample for all {len(self.configs)})"
        )

    def stop(self, model: nn.Module, diverged: torch.Tensor, epoch: int, start: int, lr: float) -> None:
        """Mark the replicas ``diverged`` ``(R,)`` bool as such; their weights are set to zero so
        that no NaN reaches the shared computations (each replica's numbers stay its own regardless)."""
        for r in diverged.nonzero().flatten().tolist():
            self.results[r] = dict(
                self.results[r],
                status="diverged",
                error=(
                    f"TrainingDiverged: the training loss stopped being finite at epoch {epoch + 1}, sample {start} (lr {lr:g}). "
                    "Lower the learning rate or check the device and IO config; the last good epoch is kept."
                ),
            )
            with torch.no_grad():
                for module in model.modules():
                    if hasattr(module, "replicas") and hasattr(module, "tile") and module.replicas:
                        module.tile.zero_replica(r)
                        if module.bias is not None:
                            module.bias[r] = 0.0

    def returned(self) -> list[dict]:
        return self.results


class _RunLoss:
    """The training loss of one run over an epoch (a NaN or infinite loss ends the run)."""

    def __init__(self, summed: bool, epoch: int, lr: float):
        self.summed, self.epoch, self.lr = summed, epoch, lr
        self.total = 0.0

    def add(self, loss: torch.Tensor, start: int, n: int) -> torch.Tensor:
        """Count the loss (a scalar) of the batch of ``n`` samples from ``start``; returns what
        ``backward`` takes."""
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"The training loss became {value} at epoch {self.epoch + 1}, sample {start} "
                f"(lr {self.lr:g}). Lower the learning rate (--lr) or check the device and IO config; "
                "the last good epoch is kept in the checkpoint and results."
            )
        self.total += value if self.summed else value * n
        return loss

    def running(self, samples: int) -> float:
        """Mean loss per sample of the first ``samples`` samples."""
        return self.total / samples

    def means(self, n_train: int) -> list[float]:
        """The epoch's mean loss per sample."""
        return [self.total / n_train]


class _ReplicaLoss:
    """The training losses of ``R`` replicas over an epoch: ``add`` takes each replica's batch
    mean ``(R,)``. A replica whose loss turns NaN or infinite is stopped (:meth:`_ReplicaBook.stop`)
    and counts no more; the others go on."""

    def __init__(self, book: _ReplicaBook, model: nn.Module, epoch: int, lr: float):
        self.book, self.model, self.epoch, self.lr = book, model, epoch, lr
        self.totals = torch.zeros(len(book.configs), dtype=torch.float64)

    def add(self, losses: torch.Tensor, start: int, n: int) -> torch.Tensor:
        alive = self.book.alive
        finite = torch.isfinite(losses)
        if not bool(finite[alive].all()):
            self.book.stop(self.model, alive & ~finite, self.epoch, start, self.lr)
            alive &= finite
        # Each replica's loss is its own batch mean; a stopped replica contributes nothing.
        self.totals += torch.where(alive, losses.detach(), torch.zeros_like(losses)).double() * n
        return torch.where(alive, losses, torch.zeros_like(losses)).sum()

    def running(self, samples: int) -> float:
        """Mean loss per sample of the first ``samples`` samples, over the live replicas."""
        return float(self.totals.sum()) / max(int(self.book.alive.sum()), 1) / samples

    def means(self, n_train: int) -> list[float]:
        return [float(total) / n_train for total in self.totals]


def _interrupt_in(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt (Ctrl-C, or SIGTERM through the CLI's handler) behind ``exc``, if any.

    A signal that lands while autograd runs a Python backward (the analog layers' bridge) reaches
    us wrapped in another exception; its chain still holds the interrupt."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


PROGRESS_FILE = "progress.json"


class EpochProgress:
    """Where the running epoch stands: a tqdm bar on the terminal (when ``bar``) and a small
    :data:`PROGRESS_FILE` in each of ``run_dirs``, rewritten at most every ``interval`` seconds
    (``insitu sweep status`` reads it: a lockstep group or a long point shows more than its
    finished epochs). Has the part of tqdm's interface the training loops use."""

    def __init__(self, total: int, epoch: int, epochs: int, bar: bool, run_dirs=(), interval: float = 30.0):
        self.total, self.epoch, self.epochs = total, epoch, epochs
        self.done = 0
        self.paths = [Path(d) / PROGRESS_FILE for d in run_dirs]
        self.interval = interval
        self.started = self.last_write = time.monotonic()
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="sample", unit_scale=True, mininterval=1.0, leave=False
            )

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.paths:
            now = time.monotonic()
            if now - self.last_write >= self.interval:
                self.last_write = now
                self._write(now)

    def set_postfix(self, **values) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _write(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-9)
        state = {
            "epoch": self.epoch + 1,
            "epochs": self.epochs,
            "samples": self.done,
            "of": self.total,
            "samples_per_second": round(rate, 2),
            "written_at": time.time(),
        }
        for path in self.paths:
            try:
                write_json(path, state)
            except OSError:  # progress is a courtesy: never stop a training for it
                pass


def read_progress(run_dir) -> dict | None:
    """The last :data:`PROGRESS_FILE` of a run folder, or ``None``."""
    try:
        return json.loads((Path(run_dir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def _progress(total: int, epoch: int, epochs: int, enabled: bool, run_dirs=()) -> EpochProgress:
    return EpochProgress(total, epoch, epochs, enabled, run_dirs)
