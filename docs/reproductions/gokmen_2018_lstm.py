"""Table and figure of the LSTM study (docs/reproductions/gokmen-2018-lstm.md, issue 20).

    python docs/reproductions/gokmen_2018_lstm.py --collect sweeps   # copy results.json of the runs into data/
    python docs/reproductions/gokmen_2018_lstm.py                    # table (markdown) and figure from data/

Each run is named by what differs from the study's base point (the 2016 device with the 2017 managements):
``base``, ``up_down=0.02``, ``dw_min=0.0005``, ``inp_bits=5``, ``inp_bits=5+sr`` (stochastic rounding),
``out_noise=0.12``, ``floating-point``, ``tiki-taka``/``c-ttv2`` (on ``up_down=0.05``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "gokmen-2018-lstm"
BASE = {"up_down": 0.0, "dw_min": 0.001, "inp_bits": None, "inp_sto_round": False, "out_noise": 0.06, "cell": None}
ORDER = [
    "floating-point", "base", "up_down=0.02", "up_down=0.05", "tiki-taka (up_down=0.05)",
    "tiki-taka:transfer_lr=10 (up_down=0.05)", "c-ttv2 (up_down=0.05)",
    "c-ttv2:transfer_lr=10,max_pulses=5,in_chop_prob=0.01 (up_down=0.05)", "base, seed 1", "up_down=0.02, seed 1",
    "dw_min=0.0005", "dw_min=0.002", "inp_bits=7", "inp_bits=5", "inp_bits=5+sr", "out_noise=0", "out_noise=0.12",
]


def _settings(results: dict) -> dict:
    config = results["config"]
    tile = config.get("tile") or {}
    device, forward = tile.get("device", {}), tile.get("forward", {})
    cell = config.get("cell")
    return {
        "preset": config.get("preset"), "up_down": device.get("up_down"), "dw_min": device.get("dw_min"),
        "inp_bits": forward.get("inp_bits"), "inp_sto_round": forward.get("inp_sto_round"),
        "out_noise": forward.get("out_noise"), "cell": cell,
    }


def label(results: dict) -> str:
    """The run's name: what differs from the base point (and the seed, when not 0)."""
    name = _label(results)
    seed = results["config"].get("seed", 0)
    return name if seed == 0 else f"{name}, seed {seed}"


def _label(results: dict) -> str:
    s = _settings(results)
    if s["preset"] == "floating-point":
        return "floating-point"
    if s["cell"]:
        return f"{s['cell']} (up_down={s['up_down']:g})"
    if s["inp_bits"] is not None:
        return f"inp_bits={s['inp_bits']}" + ("+sr" if s["inp_sto_round"] else "")
    for name in ("up_down", "dw_min", "out_noise"):
        if s[name] != BASE[name]:
            return f"{name}={s[name]:g}"
    return "base"


def collect(root: Path) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for path in sorted(root.glob("gokmen-2018-lstm*/**/results.json")):
        results = json.loads(path.read_text())
        if results.get("status") != "completed":
            print(f"skipped (status {results.get('status')}): {path}")
            continue
        name = label(results)
        safe = name
        for char, replacement in ((", ", "_"), (" ", "_"), ("(", ""), (")", ""), ("=", "-"), (":", "_"), (",", "_")):
            safe = safe.replace(char, replacement)
        target = DATA / (safe + ".json")
        shutil.copyfile(path, target)
        print(f"{path} -> {target.name} ({name})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", type=Path, help="folder holding the study's sweeps (copies completed runs into data/)")
    parser.add_argument("--figure", type=Path, default=HERE / "gokmen-2018-lstm.png")
    args = parser.parse_args()
    if args.collect:
        collect(args.collect)
    runs = {label(r): r for r in (json.loads(p.read_text()) for p in sorted(DATA.glob("*.json")))}
    names = [n for n in ORDER if n in runs] + sorted(set(runs) - set(ORDER))
    print("| run | bits/char, epoch 1 | epoch 2 | accuracy, epoch 2 |")
    print("| --- | ---: | ---: | ---: |")
    for name in names:
        epochs = runs[name]["epochs"]
        cells = [f"{e['bits_per_char']:.3f}" for e in epochs[:2]] + [""] * (2 - len(epochs[:2]))
        print(f"| {name} | {cells[0]} | {cells[1]} | {100 * epochs[-1]['accuracy']:.1f} % |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    final = [runs[n]["epochs"][-1]["bits_per_char"] for n in names]
    colors = ["tab:gray" if n == "floating-point" else "tab:green" if "(" in n else "tab:blue" for n in names]
    short = [n.replace(":transfer_lr=10,max_pulses=5,in_chop_prob=0.01", " (MLP settings)").replace(":transfer_lr=10", " (MLP settings)")
             for n in names]
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.barh(range(len(names)), final, color=colors)
    ax.set_yticks(range(len(names)), short)
    ax.invert_yaxis()
    low = min(final) - 0.3
    ax.set_xlim(low, max(final) + 0.1)
    ax.axvline(runs["base"]["epochs"][-1]["bits_per_char"], color="tab:blue", lw=0.8, ls="--") if "base" in runs else None
    ax.set_xlabel("test bits per character after 2 epochs (lower is better)")
    ax.set_title("Analog LSTM (64 units), next-character prediction, batch 1: one parameter at a time", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.figure, dpi=120)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
