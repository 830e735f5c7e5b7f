"""The 2016 device-spec knees at 30 epochs: one line per changed parameter, against the baseline.

Reads the run folders of 30-epoch one-at-a-time studies of the 2016 RPU baseline
(``configs/gv2016-sweeps-30ep-*.yaml``; each run's ``results.json``), finds for every run the one
field that differs from the 2016 spec (``gokmen-vlasov-2016`` preset), and prints a Markdown table
of the test error at several epochs and its mean over the last five, with the difference to the
baseline runs (the points that change nothing, e.g. the up/down study's ``up_down = 0``) of the
same seed. Writes the table as JSON and a figure of test error against epoch.

    python docs/reproductions/gokmen_vlasov_2016_knees_30ep.py \\
        docs/reproductions/data/gokmen-vlasov-2016-sweeps-30ep/updown-seed0 \\
        docs/reproductions/data/gokmen-vlasov-2016-sweeps-30ep/knees-seed0 \\
        --fp docs/reproductions/data/gokmen-vlasov-2016/gv2016-fp.json \\
        --out docs/reproductions/data/gokmen-vlasov-2016-sweeps-30ep/knees_by_epoch
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from insitu.presets import get_preset

#: Fields compared with the preset, and how a change is named in the table.
FIELDS = {
    ("update", "bl"): "BL",
    ("device", "dw_min"): "dw_min",
    ("device", "w_max"): "weight bound",
    ("device", "up_down"): "up_down",
    ("device", "dw_min_std"): "cycle-to-cycle spread",
    ("device", "dw_min_dtod"): "device-to-device spread",
    ("forward", "out_noise"): "forward output noise",
    ("backward", "out_noise"): "backward output noise",
    ("forward", "out_bound"): "forward output bound",
    ("backward", "out_bound"): "backward output bound",
    ("forward", "noise_management"): "forward noise management",
    ("backward", "noise_management"): "backward noise management",
}

#: Pairs of fields that a study changes together, named as one change when both take one value.
PAIRED = {("forward output bound", "backward output bound"): "output bound"}


def change_of(tile_config: dict, spec: dict) -> str:
    """``"name value"`` of the one field that differs from the spec, ``"baseline"`` if none."""
    changed = {
        label: tile_config[group][field]
        for (group, field), label in FIELDS.items()
        if tile_config[group][field] != spec[group][field]
    }
    for pair, name in PAIRED.items():
        if set(changed) == set(pair) and len({changed[label] for label in pair}) == 1:
            changed = {name: changed[pair[0]]}
    changes = [f"{label} {value:g}" if isinstance(value, (int, float)) else f"{label} {value}"
               for label, value in changed.items()]
    if len(changes) > 1:
        raise SystemExit(f"a run changes more than one field of the 2016 spec: {changes}")
    return changes[0] if changes else "baseline"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="Study run folders (each holding point folders with results.json).")
    parser.add_argument("--fp", nargs="*", default=[], help="results.json of floating-point runs (drawn dotted).")
    parser.add_argument("--epochs", default="6,10,20,30")
    parser.add_argument("--out", required=True, help="Output stem: STEM.json and STEM.png.")
    parser.add_argument("--partial", action="store_true",
                        help="Also runs still in progress or stopped (their mean is over their last five epochs).")
    args = parser.parse_args()
    spec = get_preset("gokmen-vlasov-2016").to_dict()
    epochs_shown = [int(e) for e in args.epochs.split(",")]
    runs = []
    for folder in args.folders:
        for path in sorted(Path(folder).glob("*/results.json")):
            r = json.loads(path.read_text())
            if r.get("status") != "completed" and not (args.partial and r.get("epochs")):
                continue
            errors = [100 * e["test_error"] for e in r["epochs"]]
            runs.append({"change": change_of(r["tile_config"], spec), "seed": r["config"]["seed"], "test_error": errors,
                         "mean_last5": statistics.fmean(errors[-5:]), "run": str(path.parent)})
    # A run stopped early (--partial) is compared with the baseline over the same five epochs.
    baseline = {r["seed"]: r["test_error"] for r in runs if r["change"] == "baseline"}
    for r in runs:
        n = len(r["test_error"])
        base = baseline.get(r["seed"])
        r["over_baseline"] = r["mean_last5"] - statistics.fmean(base[n - 5 : n]) if base and len(base) >= n else None
    runs.sort(key=lambda r: (r["change"] != "baseline", r["change"], r["seed"]))
    print("| change from the 2016 spec | seed | " + " | ".join(f"epoch {e}" for e in epochs_shown) + " | epochs | mean of the last five | over the baseline (same epochs) |")
    print("| --- | ---: | " + " | ".join("---:" for _ in epochs_shown) + " | ---: | ---: | ---: |")
    for r in runs:
        cells = " | ".join(f"{r['test_error'][e - 1]:.2f}" if e <= len(r["test_error"]) else "" for e in epochs_shown)
        over = "" if r["over_baseline"] is None or r["change"] == "baseline" else f"{r['over_baseline']:+.2f}"
        print(f"| {r['change']} | {r['seed']} | {cells} | {len(r['test_error'])} | {r['mean_last5']:.2f} | {over} |")
    Path(args.out + ".json").write_text(json.dumps(runs, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for r in runs:
        style = "k-" if r["change"] == "baseline" else "-"
        ax.plot(range(1, len(r["test_error"]) + 1), r["test_error"], style, lw=1.2, label=f"{r['change']} (seed {r['seed']})")
    for i, path in enumerate(args.fp):
        fp = [100 * e["test_error"] for e in json.loads(Path(path).read_text())["epochs"]]
        ax.plot(range(1, len(fp) + 1), fp, "k:", lw=1, label="floating point" if i == 0 else None)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([2, 3, 4, 6, 8, 10, 15, 20, 30])
    ax.set_xlabel("epoch (lr 0.01, halved after epochs 10 and 20)")
    ax.set_ylabel("test error (%)")
    ax.set_title("2016 RPU, one spec changed at a time, 30 epochs", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out + ".png")
    print(f"figure: {args.out}.png")


if __name__ == "__main__":
    main()
