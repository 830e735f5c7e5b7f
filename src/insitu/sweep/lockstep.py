"""Training several points of a study as replicas in lockstep (:mod:`insitu.replicas`).

Points that differ only in their seed and in the numbers replicas may hold apart (device
numbers, ``update.bl``, the IO numbers of :data:`insitu.io.REPLICA_IO_FIELDS`) train as one
network with a leading replica dimension: :func:`run_lockstep` does for ``R`` configs what
:func:`insitu.training.run_training` does for one, through the same loop
(:func:`insitu.training.train_task` with the task :class:`insitu.tasks.ReplicaClassification`),
and writes each point's ``results.json`` and plot in the same format into the point's own run
folder. Replica ``r`` starts from the devices, initial weights and data order of the separate
run with its seed; only the draws made during training (pulses, noise) come from a shared
generator.

The group keeps one checkpoint, ``lockstep.pt`` in the first member's folder, written atomically
after every epoch; every member folder holds ``lockstep.json`` naming the group, so an
interrupted study resumes the same group (see :func:`group_points`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from ..config import ConfigError
from ..replicas import lockstep_conflict, replica_key
from ..tasks import ReplicaClassification, evaluate_replicas  # noqa: F401  (evaluate_replicas: re-exported from its old home)
from ..training import REPLICA_CHECKPOINT, TrainConfig, train_task, write_json

__all__ = ["run_lockstep", "lockstep_group_key", "GROUP_FILE", "CHECKPOINT_NAME"]

GROUP_FILE = "lockstep.json"
CHECKPOINT_NAME = REPLICA_CHECKPOINT
# Fields of a TrainConfig that replicas may hold apart (the tile is compared by replica_key).
_REPLICA_TRAIN_FIELDS = ("seed", "tile", "preset")


def lockstep_group_key(config: TrainConfig) -> str | None:
    """Points with equal keys can train as replicas of one lockstep group; ``None``: this point
    has no lockstep form (a CNN, an update algorithm other than SGD, a PCM cell, the layer
    pipeline, per-layer tile configs, ...). Learning-rule cells have one: their points group with the points of the same
    cell config."""
    if config.model != "mlp" or config.update_algorithm not in (None, "sgd") or config.pipeline:
        return None
    if getattr(config, "layer_tiles", None) is not None:  # replicas share one config per replica
        return None
    tile = config.tile_config()
    if lockstep_conflict([tile]) is not None:
        return None
    rest = {k: v for k, v in config.to_dict().items() if k not in _REPLICA_TRAIN_FIELDS}
    return json.dumps({"train": rest, "tile": replica_key(tile)}, sort_keys=True, default=str)


def _check_group(configs: Sequence[TrainConfig]) -> None:
    keys = [lockstep_group_key(c) for c in configs]
    if keys[0] is None:
        raise ConfigError(
            "This config has no lockstep form (replicas need --model mlp, the sgd update, no layer pipeline, and a plain "
            "RPU tile without multi-device cells or the batched mode); run it with run_training."
        )
    if any(k != keys[0] for k in keys):
        raise ConfigError(
            "Replicas in lockstep must differ only in seed and in device/IO numbers; these configs differ in more. "
            "Group points with lockstep_group_key()."
        )


def run_lockstep(
    configs: Sequence[TrainConfig],
    out_dirs: Sequence[str | Path],
    datasets: Sequence | None = None,
    data_dir: str | None = None,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train ``R`` configs as replicas in lockstep; returns each one's results dict.

    Args:
        configs: one :class:`~insitu.training.TrainConfig` per replica (same everything but
            seed and the numbers :mod:`insitu.replicas` lets replicas hold apart).
        out_dirs: one run folder per replica (``results.json``, ``test_error.png``); the group
            checkpoint goes into the first.
        datasets: the loaded datasets, one per replica (they differ only with ``subset``, which
            picks the subset with the replica's seed), or ``None`` to load them.
        data_dir: where the datasets are.
        resume: continue from the group checkpoint (``epochs`` may grow, as for single runs).
        progress: show a progress bar; log: one-line epoch summaries.

    A replica whose loss becomes NaN or infinite stops there (its results say ``diverged``, its
    last good epoch kept); the others go on. The training is :func:`insitu.training.train_task`'s
    (task :class:`~insitu.tasks.ReplicaClassification`); this adds the group's checks and its
    ``lockstep.json`` in every member folder.
    """
    configs, out_dirs = list(configs), [Path(d) for d in out_dirs]
    if len(configs) != len(out_dirs) or not configs:
        raise ValueError(f"run_lockstep: {len(configs)} configs and {len(out_dirs)} run folders; give one folder per config.")
    _check_group(configs)
    marker = {"checkpoint": str(out_dirs[0] / CHECKPOINT_NAME), "members": [str(d) for d in out_dirs]}

    def task() -> ReplicaClassification:
        # Called by train_task once it holds every member folder's lock and has checked the group
        # checkpoint: a refused group leaves no lockstep.json behind.
        for out in out_dirs:
            write_json(out / GROUP_FILE, marker)
        return ReplicaClassification(_load_datasets(configs, data_dir) if datasets is None else datasets, configs)

    return train_task(task, None, None, configs, out_dirs, resume=resume, progress=progress, log=log)


def _load_datasets(configs: Sequence[TrainConfig], data_dir: str | None) -> list:
    """One dataset per replica: loaded once, each replica's subset then drawn with its seed, as
    :func:`insitu.data.load_dataset` draws it."""
    from ..data import _apply_subset, load_dataset

    full = load_dataset(configs[0].dataset, path=data_dir)
    return [_apply_subset(full, c.subset, c.seed) for c in configs]
