"""The offset x states x rule sweep of the learning-rule study (issue 17): table and figure.

Reads a CSV written by ``insitu sweep export STORE --csv FILE`` for the study
``docs/reproductions/configs/learning-rules-offset-states.yaml`` and prints a markdown table of
the final test error (rule x symmetry-point offset, one block per number of states), and draws
test error against the offset, one panel per number of states, one line per rule:

    insitu sweep export runs/sweeps/learning-rules-offset-states/study.sqlite --csv points.csv
    python docs/reproductions/learning_rules_sweep.py points.csv [more.csv] --figure docs/reproductions/learning-rules-sweep.png
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict

RULE, OFFSET, DW_MIN = "rule", "symmetry-point offset", "dw_min (states = 2 / dw_min)"


def _label(rule: str) -> str:
    if not rule:
        return "SGD"
    name, _, overrides = rule.partition(":")
    label = {"ttv2": "TTv2", "c-ttv2": "chopped TTv2", "tiki-taka": "TTv1", "agad": "AGAD", "mp": "MP"}.get(name, name)
    chop = [o.split("=")[1] for o in overrides.split(",") if o.startswith("in_chop_prob=")]
    return f"{label} (chopper {chop[0]})" if chop else label


def load(paths) -> dict:
    """``{dw_min: {rule: {offset: test error %}}}`` of the completed points of the CSV files; with
    several seeds of a point, the mean of its seeds (the seeds are kept: :func:`load_seeds`)."""
    seeds = load_seeds(paths)
    return {
        dw_min: {rule: {o: sum(v.values()) / len(v) for o, v in offsets.items()} for rule, offsets in rules.items()}
        for dw_min, rules in seeds.items()
    }


def load_seeds(paths) -> dict:
    """``{dw_min: {rule: {offset: {seed: test error %}}}}`` of the completed points."""
    table: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for path in [paths] if isinstance(paths, str) else paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row["status"] != "completed":
                    continue
                point = table[float(row[DW_MIN])][row[RULE]][float(row[OFFSET])]
                point[int(row["seed"])] = 100 * float(row["final_test_error"])
    return table


def markdown(seeds: dict) -> str:
    """Markdown tables of :func:`load_seeds`' result, one per number of states: a point run with one
    seed shows its test error, a point with several the mean and then each seed's value."""
    several = any(len(v) > 1 for rules in seeds.values() for offsets in rules.values() for v in offsets.values())
    what = "test error %, mean (seed 0 / seed 1 ...)" if several else "test error % after one pass over 20,000 images"
    lines = []
    for dw_min in sorted(seeds, reverse=True):
        rules = seeds[dw_min]
        offsets = sorted({o for values in rules.values() for o in values})
        lines.append(f"**{2 / dw_min:,.0f} states** (`dw_min` {dw_min:g}): {what}")
        lines.append("")
        lines.append("| rule | " + " | ".join(f"offset {o:g}" for o in offsets) + " |")
        lines.append("|---|" + "---|" * len(offsets))
        for rule in sorted(rules, key=lambda r: (r != "", r)):
            cells = []
            for o in offsets:
                values = rules[rule].get(o)
                if not values:
                    cells.append("—")
                    continue
                each = " / ".join(f"{values[s]:.2f}" for s in sorted(values))
                cells.append(f"{sum(values.values()) / len(values):.2f} ({each})" if len(values) > 1 else each)
            lines.append(f"| {_label(rule)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def figure(table: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted(table, reverse=True)
    rules = sorted({r for values in table.values() for r in values}, key=lambda r: (r != "", r))
    colors = {rule: f"C{k}" for k, rule in enumerate(rules)}  # one color per rule in every panel
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), sharey=True, squeeze=False)
    for ax, dw_min in zip(axes[0], panels):
        for rule in rules:
            points = sorted(table[dw_min].get(rule, {}).items())
            if points:
                ax.plot([o for o, _ in points], [e for _, e in points], marker="o", color=colors[rule], label=_label(rule))
        ax.set_title(f"{2 / dw_min:,.0f} states (dw_min {dw_min:g})")
        ax.set_xlabel("symmetry-point offset (common to all devices)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("test error % (20,000 images, one pass)")
    handles = [plt.Line2D([], [], color=colors[r], marker="o", label=_label(r)) for r in rules]
    fig.suptitle("2016 MLP on soft-bounds devices: SGD vs TTv2 vs chopped TTv2 (each point the mean of the seeds run)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="+", help="CSV files of `insitu sweep export` (the main sweep, the chopper follow-up)")
    parser.add_argument("--figure", default=None, help="PNG of the mean over seeds (one line per rule, one panel per number of states)")
    args = parser.parse_args(argv)
    print(markdown(load_seeds(args.csv)))
    if args.figure:
        figure(load(args.csv), args.figure)


if __name__ == "__main__":
    main()
