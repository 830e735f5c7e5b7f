"""Tables, exports, figures and the Markdown report of a study store.

The figure of each swept parameter is the papers' device-spec plot: final test error against the
parameter, one marker per seed, the mean across seeds as a line with the min-max spread shaded,
log x axis for a log range, the baseline value marked (Gokmen & Vlasov 2016 read each spec off the
"knee" of such a curve). matplotlib is imported only here.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from .store import ResultsStore
from .study import StudyConfig

__all__ = ["axis_table", "export_csv", "export_parquet", "plot_study", "write_report", "status_text"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def axis_rows(store: ResultsStore, study: StudyConfig, axis_name: str, other_coords: dict | None = None) -> list[dict]:
    """Per value of one axis: the final test errors of its seeds and their statistics.

    In a one-at-a-time study the points are those that vary this axis, plus the baseline. In a
    grid, ``other_coords`` fixes the other axes (``None``: all points, pooled).
    """
    groups: dict[Any, list[dict]] = {}
    for point in store.points():
        if axis_name not in point["axes"]:
            continue
        if other_coords and any(point["coords"].get(k) != v for k, v in other_coords.items()):
            continue
        groups.setdefault(json.dumps(point["coords"][axis_name]), []).append(point)
    rows = []
    for key, points in groups.items():
        finished = [p for p in points if p["status"] == "completed"]
        errors = [100 * p["final_test_error"] for p in finished if p["final_test_error"] is not None]
        rows.append({
            "value": json.loads(key),
            "points": len(points),
            "completed": len(finished),
            "diverged": sum(p["status"] == "diverged" for p in points),
            "errors": errors,
            "mean": statistics.fmean(errors) if errors else None,
            "std": statistics.stdev(errors) if len(errors) > 1 else None,
            "min": min(errors) if errors else None,
            "max": max(errors) if errors else None,
        })
    rows.sort(key=lambda r: (not isinstance(r["value"], (int, float)), r["value"] if isinstance(r["value"], (int, float)) else str(r["value"])))
    return rows


def axis_table(store: ResultsStore, study: StudyConfig, axis_name: str) -> str:
    """Markdown table: value, seeds finished, mean ± std, min-max of the final test error (%)."""
    base = study.baseline_coords()[axis_name]
    lines = [
        f"| {axis_name} | runs done / points | mean test error (%) | std | min | max | diverged |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in axis_rows(store, study, axis_name):
        mark = " (baseline)" if row["value"] == base and study.mode == "one-at-a-time" else ""
        cells = [f"{_fmt(row['value'])}{mark}", f"{row['completed']} / {row['points']}"]
        cells += ["–" if row[k] is None else f"{row[k]:.2f}" for k in ("mean", "std", "min", "max")]
        cells.append(str(row["diverged"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _epoch_progress(run_dir, done: int) -> str:
    """``", epoch 3 at 41 % (...)"`` from the run's progress file, or ``""``."""
    from ..training import read_progress

    progress = read_progress(run_dir)
    if not progress or progress.get("epoch") != done + 1 or not progress.get("of"):
        return ""
    rate = progress["samples_per_second"]
    left = (progress["of"] - progress["samples"]) / rate / 60 if rate > 0 else float("nan")
    age = time.time() - progress["written_at"]
    return (
        f", epoch {progress['epoch']} at {100 * progress['samples'] / progress['of']:.0f} % "
        f"({rate:.0f} samples/s, about {left:.0f} min left in it; written {age:.0f} s ago)"
    )


def status_text(store: ResultsStore) -> str:
    """A short summary: counts per status, compute time, failed points with their errors."""
    points = store.points()
    counts = store.counts()
    seconds = sum(p["seconds"] or 0 for p in points)
    lines = [
        f"store: {store.path}",
        f"study: {store.study().name} ({len(points)} points; insitu {store.meta().get('insitu_version')})",
        "status: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
        f"compute time of finished points: {seconds / 60:.1f} min",
    ]
    for p in points:
        if p["status"] == "failed":
            lines.append(f"  failed #{p['id']} ({p['run_dir']}): {(p['error'] or '').splitlines()[0] if p['error'] else ''}")
        elif p["status"] == "running":
            # Epochs finished so far are in the run folder until the point is recorded.
            results_path = Path(p["run_dir"]) / "results.json"
            done = len(json.loads(results_path.read_text())["epochs"]) if results_path.exists() else 0
            lines.append(f"  running #{p['id']} ({p['run_dir']}): {done}/{p['config']['epochs']} epochs" + _epoch_progress(p["run_dir"], done))
    return "\n".join(lines)


# -- exports --------------------------------------------------------------------------------------
def _flat_rows(store: ResultsStore) -> tuple[list[str], list[dict]]:
    points = store.points()
    axis_names: list[str] = []
    for p in points:
        for name in p["coords"]:
            if name not in axis_names:
                axis_names.append(name)
    columns = ["id", "key", "status", "seed", *axis_names, "axes", "final_test_error", "best_test_error", "epochs_done",
               "seconds", "attempts", "insitu_version", "run_dir", "error", "config"]
    rows = []
    for p in points:
        row = {c: p.get(c) for c in columns}
        row.update({name: p["coords"].get(name) for name in axis_names})
        row["axes"] = ";".join(p["axes"])
        row["config"] = json.dumps(p["config"], sort_keys=True)
        row["error"] = (p["error"] or "").splitlines()[0] if p["error"] else ""
        for name in axis_names:
            if isinstance(row[name], list):
                row[name] = json.dumps(row[name])
        rows.append(row)
    return columns, rows


def export_csv(store: ResultsStore, path: str | os.PathLike, per_epoch: bool = False) -> Path:
    """One row per point (its coordinates, status, final/best test error, timings, full config as
    JSON); with ``per_epoch``, one row per point and epoch instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns, rows = _flat_rows(store)
    if per_epoch:
        by_id = {r["id"]: r for r in rows}
        epochs = store.all_epochs()
        point_columns = [c for c in columns if c not in ("config", "error", "final_test_error", "best_test_error")]
        epoch_columns = [c for c in (epochs[0].keys() if epochs else []) if c != "point_id"]
        columns = point_columns + epoch_columns
        rows = [{**{c: by_id[e["point_id"]][c] for c in point_columns}, **{c: e[c] for c in epoch_columns}} for e in epochs if e["point_id"] in by_id]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def export_parquet(store: ResultsStore, path: str | os.PathLike) -> Path:
    """The same table as :func:`export_csv`, as Parquet (needs pandas and pyarrow)."""
    try:
        import pandas
        import pyarrow  # noqa: F401  (pandas' Parquet engine)
    except ImportError:
        raise RuntimeError("Parquet export needs pandas and pyarrow: pip install pandas pyarrow (or use --csv).") from None
    columns, rows = _flat_rows(store)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pandas.DataFrame(rows, columns=columns).to_parquet(path, index=False)
    return path


# -- figures --------------------------------------------------------------------------------------
def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _draw_axis(ax, store: ResultsStore, study: StudyConfig, axis_name: str) -> bool:
    """Draw one parameter's panel; returns False if it has no numeric finished point."""
    axis = study.axis(axis_name)
    base = study.baseline_coords()[axis_name]
    groups = [None]
    if study.mode == "grid" and len(study.axes) > 1:
        others = [a for a in study.axes if a.name != axis_name]
        from itertools import product

        groups = [dict(zip([a.name for a in others], [v[0] for v in combo])) for combo in product(*[a.points() for a in others])]
    values = [v[0] for v in axis.points()]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    position = (lambda v: v) if numeric else (lambda v: values.index(v) if v in values else len(values))
    drew = False
    for other in groups:
        rows = sorted((dict(r, value=position(r["value"])) for r in axis_rows(store, study, axis_name, other)), key=lambda r: r["value"])
        label = None if other is None else ", ".join(f"{k}={_fmt(v)}" for k, v in other.items())
        done = [r for r in rows if r["mean"] is not None]
        if done:
            xs = [r["value"] for r in done]
            line, = ax.plot(xs, [r["mean"] for r in done], marker="o", ms=4, label=label or "mean over seeds")
            if any(len(r["errors"]) > 1 for r in done):
                ax.fill_between(xs, [r["min"] for r in done], [r["max"] for r in done], color=line.get_color(), alpha=0.2,
                                label=None if label else "min-max over seeds")
            for r in done:
                ax.plot([r["value"]] * len(r["errors"]), r["errors"], ".", color=line.get_color(), ms=3, alpha=0.7)
            drew = True
        diverged = [r["value"] for r in rows if r["diverged"]]
        if diverged:
            ax.plot(diverged, [100.0] * len(diverged), "x", color="crimson", ms=7, label="diverged" if other in (None, groups[0]) else None)
            drew = True
    if not drew:
        return False
    if not numeric:
        ax.set_xticks(range(len(values)), [str(v) for v in values], fontsize=8)
        base = position(base)
    if axis.scale == "log":
        ax.set_xscale("log" if axis.points()[0][0] > 0 else "symlog")
    if study.mode == "one-at-a-time" and isinstance(base, (int, float)):
        ax.axvline(base, color="gray", ls="--", lw=1, label=f"baseline {study.baseline_coords()[axis_name]}")
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel(axis_name + ("" if len(axis.fields) == 1 else f"  (with {', '.join(axis.fields[1:])})"), fontsize=8)
    ax.set_ylabel("final test error (%)")
    ax.legend(fontsize=7)
    return True


def _subtitle(study: StudyConfig) -> str:
    base = study.base
    data = f"{base.dataset}" + (f" subset {base.subset}" if base.subset else "")
    return f"{study.name}: {base.preset}, {base.model} {'-'.join(map(str, base.hidden))}, {data}, {base.epochs} epoch(s), seeds {list(study.seeds)}"


def plot_study(store: ResultsStore, out_dir: str | os.PathLike, caption: str | None = None) -> list[Path]:
    """One PNG per swept parameter and a combined figure ``all_parameters.png``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..training import _atomic_write_bytes

    study = store.study()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    subtitle = caption or _subtitle(study)
    paths = []
    for axis in study.axes:
        fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
        if _draw_axis(ax, store, study, axis.name):
            ax.set_title(subtitle, fontsize=7)
            fig.tight_layout()
            path = out / f"{_safe_name(axis.name)}.png"
            _atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, format="png"))
            paths.append(path)
        plt.close(fig)
    n = len(study.axes)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), dpi=110, squeeze=False)
    for ax, axis in zip(axes.flat, study.axes):
        if not _draw_axis(ax, store, study, axis.name):
            ax.set_title(f"{axis.name}: no finished point", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    path = out / "all_parameters.png"
    _atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    paths.append(path)
    return paths


def write_report(store: ResultsStore, out_dir: str | os.PathLike, caption: str | None = None) -> Path:
    """``report.md`` with the study summary, the figures, one table per parameter, and a CSV."""
    study = store.study()
    out = Path(out_dir)
    figures = plot_study(store, out, caption)
    csv_path = export_csv(store, out / "points.csv")
    points = store.points()
    counts = store.counts()
    seconds = sum(p["seconds"] or 0 for p in points)
    versions = sorted({p["insitu_version"] for p in points if p["insitu_version"]})
    lines = [
        f"# Sweep report: {study.name}",
        "",
        f"*{_subtitle(study)}.* Mode: {study.mode}. Store: `{store.path.name}` "
        f"(insitu {', '.join(versions) or store.meta().get('insitu_version')}).",
        "",
        "Points: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f"; compute time {seconds / 60:.1f} min.",
        "",
        "Test error is the error on the test set after the last epoch of each run, in percent.",
        "",
        "![all parameters](all_parameters.png)",
        "",
    ]
    by_name = {p.stem: p for p in figures}
    for axis in study.axes:
        lines.append(f"## {axis.name}")
        lines.append("")
        if len(axis.fields) > 1:
            lines.append(f"Fields changed together: {', '.join(f'`{f}`' for f in axis.fields)}; the table shows `{axis.fields[0]}`.")
            lines.append("")
        stem = _safe_name(axis.name)
        if stem in by_name:
            lines.append(f"![{axis.name}]({by_name[stem].name})")
            lines.append("")
        lines.append(axis_table(store, study, axis.name))
        lines.append("")
    failed = [p for p in points if p["status"] == "failed"]
    if failed:
        lines.append("## Failed points")
        lines.append("")
        for p in failed:
            lines.append(f"* #{p['id']} `{p['run_dir']}`: {(p['error'] or '').splitlines()[0] if p['error'] else ''}")
        lines.append("")
    lines.append(f"All points with their full configs: [`{csv_path.name}`]({csv_path.name}).")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
