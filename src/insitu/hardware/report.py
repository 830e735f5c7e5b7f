"""Tables and figures of estimates (matplotlib is imported only when a figure is drawn)."""

from __future__ import annotations

from pathlib import Path

from .base import Estimate

__all__ = ["layer_table", "plot_breakdown", "summary_table"]

_ROWS = (
    ("time per example", "time_per_example_s", "s"),
    ("energy per example", "energy_per_example_j", "J"),
    ("time per epoch", "time_per_epoch_s", "s"),
    ("energy per epoch", "energy_per_epoch_j", "J"),
    ("power", "power_w", "W"),
    ("area", "area_mm2", "mm²"),
    ("tiles", "tiles", ""),
    ("throughput", "ops_per_s", "Op/s"),
    ("efficiency", "gops_per_s_per_w", "GOp/s/W"),
    ("area efficiency", "tops_per_s_per_mm2", "TOp/s/mm²"),
)


def _fmt(value: float, unit: str = "") -> str:
    if unit in ("", "tiles"):
        return f"{value:,.0f}" if value == int(value) else f"{value:.3g}"
    prefixes = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"))
    if unit in ("s", "J", "W", "Op/s") and value != 0:
        for scale, prefix in prefixes:
            if abs(value) >= scale:
                return f"{value / scale:.3g} {prefix}{unit}"
        return f"{value:.3g} {unit}"
    return f"{value:.3g} {unit}".strip()


def summary_table(estimates: list[tuple[str, Estimate]], baseline: str | None = None) -> str:
    """A Markdown table, one column per estimate; with ``baseline``, speed-up and energy ratio rows."""
    header = "| | " + " | ".join(label for label, _ in estimates) + " |"
    lines = [header, "| --- |" + " ---: |" * len(estimates)]
    summaries = [est.summary() for _, est in estimates]
    for title, key, unit in _ROWS:
        lines.append(f"| {title} | " + " | ".join(_fmt(s[key], unit) for s in summaries) + " |")
    if baseline is not None:
        base = dict(estimates).get(baseline)
        if base is None:
            raise ValueError(f"baseline '{baseline}' is not among {[label for label, _ in estimates]}.")
        b = base.summary()
        lines.append(f"| speed-up vs {baseline} | " + " | ".join(f"{b['time_per_example_s'] / s['time_per_example_s']:.3g}×" for s in summaries) + " |")
        lines.append(f"| energy saving vs {baseline} | " + " | ".join(f"{b['energy_per_example_j'] / s['energy_per_example_j']:.3g}×" for s in summaries) + " |")
    return "\n".join(lines)


def layer_table(estimate: Estimate) -> str:
    """Per-layer Markdown table: tiles, time, energy and area, then per-component totals."""
    lines = ["| layer | tiles | time | energy | area |", "| --- | ---: | ---: | ---: | ---: |"]
    for layer in estimate.layers:
        lines.append(f"| {layer.name} | {layer.tiles} | {_fmt(layer.total_time_s, 's')} | "
                     f"{_fmt(layer.total_energy_j, 'J')} | {_fmt(layer.total_area_mm2, 'mm²')} |")
    lines += ["", "| component | time per example | energy per example |", "| --- | ---: | ---: |"]
    times, energies = estimate.time_by_component(), estimate.energy_by_component()
    for key in list(dict.fromkeys([*times, *energies])):
        t, e = times.get(key), energies.get(key)
        lines.append(f"| {key} | {_fmt(t, 's') if t is not None else '–'} | {_fmt(e, 'J') if e is not None else '–'} |")
    if estimate.extra.get("pipeline_layers"):
        lines.append("")
        lines.append("Layers are pipelined: the time per example is the slowest layer's; the component times above are summed over layers.")
    return "\n".join(lines)


def plot_breakdown(path: str | Path, estimates: list[tuple[str, Estimate]], title: str = "") -> None:
    """Time and energy per example by component: grouped bars (log scale), one colour per estimate.

    The components span orders of magnitude, so bars side by side on a log axis show the small
    ones too (a stacked bar would hide them).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("time_by_component", "time per example (s)"), ("energy_by_component", "energy per example (J)"))
    parts = {attr: [getattr(est, attr)() for _, est in estimates] for attr, _ in panels}
    widest = max(len({k for p in parts[attr] for k in p}) for attr, _ in panels)
    fig, axes = plt.subplots(1, 2, figsize=(min(16.0, 3 + 0.6 * widest * max(1.0, len(estimates) / 2)), 5.0))
    width = 0.8 / len(estimates)
    for ax, (attr, ylabel) in zip(axes, panels):
        keys = list(dict.fromkeys(k for p in parts[attr] for k in p if p[k] > 0))
        for i, (label, est) in enumerate(estimates):
            values = [parts[attr][i].get(k, 0.0) for k in keys]
            total = sum(parts[attr][i].values())
            ax.bar([j + (i - (len(estimates) - 1) / 2) * width for j in range(len(keys))],
                   [v if v > 0 else float("nan") for v in values], width,
                   label=f"{label} (sum {total:.2g})")
        ax.set_xticks(range(len(keys)), keys, rotation=35, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
