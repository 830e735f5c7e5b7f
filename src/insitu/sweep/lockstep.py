"""Training several points of a study as replicas in lockstep (:mod:`insitu.replicas`).

Points that differ only in their seed and in the numbers replicas may hold apart (device
numbers, ``update.bl``, the IO numbers of :data:`insitu.io.REPLICA_IO_FIELDS`) train as one
network with a leading replica dimension: :func:`run_lockstep` does for ``R`` configs what
:func:`insitu.training.run_training` does for one, and writes each point's ``results.json`` and
plot in the same format into the point's own run folder. Replica ``r`` starts from the devices,
initial weights and data order of the separate run with its seed; only the draws made during
training (pulses, noise) come from a shared generator.

The group keeps one checkpoint, ``lockstep.pt`` in the first member's folder, written atomically
after every epoch; every member folder holds ``lockstep.json`` naming the group, so an
interrupted study resumes the same group (see :func:`group_points`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..config import ConfigError
from ..optim import AnalogSGD
from ..replicas import lockstep_conflict, replica_key
from ..training import TrainConfig, _atomic_write_bytes, _progress, _rank1_writes, plot_test_error, write_json

__all__ = ["run_lockstep", "lockstep_group_key", "GROUP_FILE", "CHECKPOINT_NAME"]

GROUP_FILE = "lockstep.json"
CHECKPOINT_NAME = "lockstep.pt"
# Fields of a TrainConfig that replicas may hold apart (the tile is compared by replica_key).
_REPLICA_TRAIN_FIELDS = ("seed", "tile", "preset")


def lockstep_group_key(config: TrainConfig) -> str | None:
    """Points with equal keys can train as replicas of one lockstep group; ``None``: this point
    has no lockstep form (a CNN, an update algorithm other than SGD, a PCM cell, ...)."""
    if config.model != "mlp" or config.update_algorithm not in (None, "sgd"):
        return None
    tile = config.tile_config()
    if lockstep_conflict([tile]) is not None:
        return None
    rest = {k: v for k, v in config.to_dict().items() if k not in _REPLICA_TRAIN_FIELDS}
    return json.dumps({"train": rest, "tile": replica_key(tile)}, sort_keys=True, default=str)


def _layer_seeds(seeds: Sequence[int], layers: int) -> list[list[int]]:
    """Tile seeds ``[layer][replica]``: those a separate run with seed ``s`` gives its tiles
    (``run_training`` calls ``torch.manual_seed(s)`` and every tile draws its seed from it)."""
    per_replica = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        per_replica.append([int(torch.randint(0, 2**62, (1,), generator=g).item()) for _ in range(layers)])
    return [list(column) for column in zip(*per_replica)]


def _check_group(configs: Sequence[TrainConfig]) -> None:
    keys = [lockstep_group_key(c) for c in configs]
    if keys[0] is None:
        raise ConfigError(
            "This config has no lockstep form (replicas need --model mlp, the sgd update, and a plain RPU tile "
            "without multi-device cells or the batched mode); run it with run_training."
        )
    if any(k != keys[0] for k in keys):
        raise ConfigError(
            "Replicas in lockstep must differ only in seed and in device/IO numbers; these configs differ in more. "
            "Group points with lockstep_group_key()."
        )


@torch.no_grad()
def evaluate_replicas(model: nn.Module, replicas: int, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000):
    """``(error rates (R,), mean cross-entropies (R,))`` of each replica on the shared test set."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros(replicas, dtype=torch.int64)
    loss = torch.zeros(replicas, dtype=torch.float64)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        target = y[start : start + batch_size]
        logits = model(xb.unsqueeze(0).expand(replicas, *xb.shape))
        wrong += (logits.argmax(dim=-1) != target).sum(dim=1)
        per = nn.functional.cross_entropy(logits.transpose(1, 2), target.expand(replicas, -1), reduction="none")
        loss += per.sum(dim=1).double()
    model.train(was_training)
    return [w / x.shape[0] for w in wrong.tolist()], (loss / x.shape[0]).tolist()


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
    last good epoch kept); the others go on.
    """
    from .. import __version__
    from ..data import load_dataset
    from ..models import mlp

    configs, out_dirs = list(configs), [Path(d) for d in out_dirs]
    if len(configs) != len(out_dirs) or not configs:
        raise ValueError(f"run_lockstep: {len(configs)} configs and {len(out_dirs)} run folders; give one folder per config.")
    _check_group(configs)
    n_rep = len(configs)
    base = configs[0]
    group_path = out_dirs[0] / CHECKPOINT_NAME
    if not resume and group_path.exists():
        raise FileExistsError(f"{out_dirs[0]} already holds a lockstep group ({CHECKPOINT_NAME}); resume it or choose other folders.")
    if resume and not group_path.exists():
        raise FileNotFoundError(f"Cannot resume: no {CHECKPOINT_NAME} in {out_dirs[0]}.")
    for out in out_dirs:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / GROUP_FILE, {"checkpoint": str(group_path), "members": [str(d) for d in out_dirs]})

    if datasets is None:
        # Loaded once; each replica's subset is then drawn with its seed, as load_dataset does.
        from ..data import _apply_subset

        full = load_dataset(base.dataset, path=data_dir)
        datasets = [_apply_subset(full, c.subset, c.seed) for c in configs]
    shared = all(d is datasets[0] for d in datasets) or base.subset is None
    train_x = datasets[0].train_x if shared else torch.stack([d.train_x for d in datasets])
    train_y = datasets[0].train_y if shared else torch.stack([d.train_y for d in datasets])
    data = datasets[0]
    n_train = data.train_x.shape[0]
    sizes = (math.prod(data.image_shape), *base.hidden, data.num_classes)
    seeds = [c.seed for c in configs]
    model = mlp(sizes, base.activation, [c.tile_config() for c in configs], base.bias_on_array, seeds=_layer_seeds(seeds, len(sizes) - 1))
    optimizer = AnalogSGD(model.parameters(), lr=base.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(base.lr_milestones), gamma=base.lr_gamma)
    order_generators = [torch.Generator().manual_seed(s) for s in seeds]

    results = [
        {
            "insitu_version": __version__,
            "status": "running",
            "config": c.to_dict(),
            "tile_config": c.tile_config().to_dict(),
            "conv_tile_config": None,
            "dataset": {"name": d.name, "source": str(d.source), "train": n_train, "test": int(d.test_x.shape[0])},
            "lockstep": {"replicas": n_rep, "replica": r, "members": [str(o) for o in out_dirs]},
            "epochs": [],
        }
        for r, (c, d) in enumerate(zip(configs, datasets))
    ]
    start_epoch = 0
    alive = torch.ones(n_rep, dtype=torch.bool)
    if resume:
        checkpoint = load_checkpoint(group_path)
        saved = [TrainConfig.from_dict(c).to_dict() for c in checkpoint["configs"]]
        wanted = [c.to_dict() for c in configs]
        if [{**s, "epochs": None} for s in saved] != [{**w, "epochs": None} for w in wanted]:
            raise ConfigError(f"The lockstep checkpoint in {out_dirs[0]} was made with other configs; resume with the same ones (only epochs may grow).")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        for g, state in zip(order_generators, checkpoint["order_generators"]):
            g.set_state(state)
        results = checkpoint["results"]
        alive = checkpoint["alive"]
        start_epoch = checkpoint["epoch"]
        for r, c in enumerate(configs):
            results[r]["config"] = c.to_dict()
            if alive[r]:
                results[r]["status"] = "running"
        log(f"resumed lockstep group of {n_rep} in {out_dirs[0]} after epoch {start_epoch}")

    batch = base.batch_size
    arange = torch.arange(n_rep).unsqueeze(1)
    try:
        for epoch in range(start_epoch, base.epochs):
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            orders = torch.stack([torch.randperm(n_train, generator=g) for g in order_generators])  # (R, N)
            model.train()
            loss_sums = torch.zeros(n_rep, dtype=torch.float64)
            bar = _progress(n_train, epoch, base.epochs, progress, out_dirs)
            for start in range(0, n_train, batch):
                index = orders[:, start : start + batch]  # (R, B)
                xb = train_x[index] if shared else train_x[arange, index]
                yb = train_y[index] if shared else train_y[arange, index]
                optimizer.zero_grad(set_to_none=True)  # digital biases accumulate .grad otherwise
                logits = model(xb)
                per_sample = nn.functional.cross_entropy(logits.transpose(1, 2), yb, reduction="none")  # (R, B)
                losses = per_sample.mean(dim=1)
                finite = torch.isfinite(losses)
                if not bool(finite[alive].all()):
                    _stop_diverged(model, results, alive & ~finite, epoch, start, lr)
                    alive &= finite
                # Each replica's loss is its own batch mean; a stopped replica contributes nothing.
                total = torch.where(alive, losses, torch.zeros_like(losses)).sum()
                total.backward()
                optimizer.step()
                loss_sums += torch.where(alive, losses.detach(), torch.zeros_like(losses)).double() * index.shape[1]
                bar.update(index.shape[1])
            bar.close()
            train_seconds = time.perf_counter() - started
            errors, test_losses = evaluate_replicas(model, n_rep, data.test_x, data.test_y, base.eval_batch_size)
            scheduler.step()
            committed = []
            for r in range(n_rep):
                result = dict(results[r])
                if alive[r]:
                    record = {
                        "epoch": epoch + 1,
                        "lr": lr,
                        "train_loss": float(loss_sums[r]) / n_train,
                        "test_error": errors[r],
                        "test_loss": test_losses[r],
                        "train_seconds": train_seconds,
                        "seconds_per_sample": train_seconds / n_train,
                        "rank1_writes": _rank1_writes(model),
                    }
                    result["epochs"] = result["epochs"] + [record]
                    result["counters"] = _replica_counters(model, r)
                    if epoch + 1 == base.epochs:
                        result["status"] = "completed"
                committed.append(result)
            checkpoint = {
                "epoch": epoch + 1,
                "configs": [c.to_dict() for c in configs],
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "order_generators": [g.get_state() for g in order_generators],
                "alive": alive.clone(),
                "results": committed,
            }
            _atomic_write_bytes(group_path, lambda tmp: torch.save(checkpoint, tmp))
            results = committed
            for r, out in enumerate(out_dirs):
                write_json(out / "results.json", results[r])
                if results[r]["epochs"]:
                    plot_test_error(out / "test_error.png", results[r])
            shown = ", ".join(f"{100 * e:.2f}" for e, a in zip(errors, alive.tolist()) if a)
            log(f"epoch {epoch + 1}/{base.epochs}  lr {lr:g}  test error (%) of {int(alive.sum())} live replicas: {shown}  "
                f"({train_seconds / n_train * 1e3:.3f} ms/sample for all {n_rep})")
            if not bool(alive.any()):
                break
    except BaseException as exc:
        for module in model.modules():
            if hasattr(module, "discard_pending"):
                module.discard_pending()
        for r, out in enumerate(out_dirs):
            if results[r]["status"] == "running":
                failed = dict(results[r], status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
                failed["error"] = f"{type(exc).__name__}: {exc}"
                write_json(out / "results.json", failed)
        raise
    return results


def _stop_diverged(model, results, diverged, epoch, start, lr) -> None:
    """Mark replicas whose loss stopped being finite; their weights are set to zero so that no
    NaN reaches the shared computations (each replica's numbers stay its own regardless)."""
    for r in diverged.nonzero().flatten().tolist():
        results[r] = dict(
            results[r],
            status="diverged",
            error=(
                f"TrainingDiverged: the training loss stopped being finite at epoch {epoch + 1}, sample {start} (lr {lr:g}). "
                "Lower the learning rate or check the device and IO config; the last good epoch is kept."
            ),
        )
        with torch.no_grad():
            for module in model.modules():
                if hasattr(module, "replicas") and hasattr(module, "tile") and module.replicas:
                    module.tile.weight[r] = 0.0
                    if module.bias is not None:
                        module.bias[r] = 0.0


def _replica_counters(model: nn.Module, r: int) -> dict:
    from ..replicas import ReplicatedTile

    return {name: m.counters.replica(r) for name, m in model.named_modules() if isinstance(m, ReplicatedTile)}
