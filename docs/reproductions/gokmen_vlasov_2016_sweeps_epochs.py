"""How the knees of the 2016 device-spec sweeps move during training (gokmen-vlasov-2016-sweeps.md).

Reads the per-epoch export of a one-at-a-time study (``insitu sweep export STUDY --csv
epochs.csv --per-epoch``) and draws, for every swept parameter, the test error against the
parameter's value after several epochs (mean over seeds, min-max as error bars), with the
baseline (the paper's spec) marked and, when given, the floating-point network's error at the
same epochs (mean of the given runs) as dotted lines. Prints the table it plotted as JSON.

    python docs/reproductions/gokmen_vlasov_2016_sweeps_epochs.py \
        docs/reproductions/data/gokmen-vlasov-2016-sweeps-full/epochs.csv \
        --fp docs/reproductions/data/gokmen-vlasov-2016-sweeps-full/floating-point-seed0.json \
             docs/reproductions/data/gokmen-vlasov-2016-sweeps-full/floating-point-seed1.json \
        --out docs/reproductions/data/gokmen-vlasov-2016-sweeps-full/knees_by_epoch.png
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Axis label in the export -> (title, log x axis). The baseline point carries every axis.
AXES = {
    "tile.device.dw_min": ("step dw_min", True),
    "weight bound": ("weight bound |w_max|", False),
    "tile.device.up_down": ("up/down imbalance", False),
    "device-to-device spread": ("device-to-device spread", False),
    "cycle-to-cycle spread": ("cycle-to-cycle spread", False),
    "output noise": ("output noise σ", False),
    "output bound": ("output bound α", False),
    "BL": ("pulse train length BL", True),
}


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def table(rows: list[dict], epochs: list[int]) -> dict:
    """``{axis: {value: {epoch: [test errors over seeds]}}}``, test errors in percent."""
    out: dict = {axis: defaultdict(lambda: defaultdict(list)) for axis in AXES}
    for row in rows:
        if row["status"] != "completed" or int(row["epoch"]) not in epochs:
            continue
        for axis in row["axes"].split(";"):
            if axis in out:
                out[axis][float(row[axis])][int(row["epoch"])].append(100 * float(row["test_error"]))
    return out


def baseline_values(rows: list[dict]) -> dict:
    """The value of each axis at the point that lists every axis (the baseline)."""
    for row in rows:
        if set(AXES) <= set(row["axes"].split(";")):
            return {axis: float(row[axis]) for axis in AXES}
    return {}


def fp_errors(paths: list[Path]) -> dict:
    """Floating-point test error (%) per epoch, the mean over the given runs' results.json."""
    per_epoch = defaultdict(list)
    for path in paths:
        for e in json.loads(path.read_text())["epochs"]:
            per_epoch[e["epoch"]].append(100 * e["test_error"])
    return {epoch: sum(v) / len(v) for epoch, v in per_epoch.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("epochs_csv", type=Path)
    parser.add_argument("--epochs", default="1,2,4,6", help="epochs to draw")
    parser.add_argument("--fp", type=Path, nargs="*", default=[], help="results.json of floating-point runs on the same data and lr (averaged)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--title",
        default="Gokmen & Vlasov 2016 device-spec sweeps: 784-256-128-10 sigmoid, full MNIST, batch 1, lr 0.01, "
        "mean of seeds 0-1 (bars: min-max)",
    )
    args = parser.parse_args()
    epochs = [int(e) for e in args.epochs.split(",")]
    rows = read_rows(args.epochs_csv)
    data = table(rows, epochs)
    base = baseline_values(rows)
    fp = fp_errors(args.fp)
    colors = plt.cm.viridis([i / max(1, len(epochs) - 1) * 0.85 for i in range(len(epochs))])
    # Every parameter of the full study in a 2 x 4 grid; a study of fewer parameters (the 30-epoch
    # up/down study) gets one panel per parameter it swept.
    swept = {axis: spec for axis, spec in AXES.items() if data[axis]}
    shape, size = ((2, 4), (17, 8)) if len(swept) > 4 else ((1, len(swept)), (5.5 * len(swept), 4.5))
    fig, axes = plt.subplots(*shape, figsize=size, squeeze=False)
    summary = {}
    for ax, (axis, (title, log)) in zip(axes.flat, swept.items()):
        values = sorted(data[axis])
        summary[axis] = {}
        for epoch, color in zip(epochs, colors):
            means, lows, highs, xs = [], [], [], []
            for v in values:
                errors = data[axis][v].get(epoch, [])
                if not errors:
                    continue
                xs.append(v)
                mean = sum(errors) / len(errors)
                means.append(mean)
                lows.append(mean - min(errors))
                highs.append(max(errors) - mean)
                summary[axis].setdefault(str(v), {})[epoch] = {"mean": round(mean, 2), "seeds": [round(e, 2) for e in errors]}
            if xs:
                ax.errorbar(xs, means, yerr=[lows, highs], marker="o", color=color, capsize=3, label=f"epoch {epoch}")
            if epoch in fp:
                ax.axhline(fp[epoch], color=color, ls=":", lw=1)
        if axis in base:
            ax.axvline(base[axis], color="gray", ls="--", lw=1)
        if log:
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_title(title)
        ax.set_xlabel(f"{title} (dashed: 2016 spec)")
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3, which="both")
    axes.flat[0].legend(fontsize=8, title="RPU (dotted: floating point)", title_fontsize=8)
    fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(json.dumps({"epochs": epochs, "baseline": base, "floating_point": {e: fp.get(e) for e in epochs}, "test_error_percent": summary}, indent=1))


if __name__ == "__main__":
    main()
