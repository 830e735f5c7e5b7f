"""Conditions of the Cristiano/Burr 2018 reproduction (docs/reproductions/cristiano-2018-pcm.md).

Every condition trains the 784-250-125-10 sigmoid network on a 10,000-image MNIST training subset
(seed 0) for 2 epochs at batch 1 (lr 0.1, halved after epoch 1) through ``insitu.training.run_training``
and is tested on the full 10,000-image test set. A condition is one change to the
``cristiano-2018-two-pair`` preset (or another preset), so each sweep varies one thing.

    python docs/reproductions/cristiano_2018_pcm.py run [--only a,b] [--worker i/n]   # train
    python docs/reproductions/cristiano_2018_pcm.py summarize                          # JSON + PNG

Run folders go to ``runs/cristiano-2018-pcm/<name>`` (resumable: a finished run is skipped);
``summarize`` copies each run's results (without the checkpoint) to
``docs/reproductions/data/cristiano-2018-pcm/<name>.json`` and writes ``summary.json`` and the figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from insitu.data import load_dataset
from insitu.presets import _peer_pcm_table, get_preset
from insitu.training import TrainConfig, run_training

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "cristiano-2018-pcm"
DATA = ROOT / "docs" / "reproductions" / "data" / "cristiano-2018-pcm"
FIGURE = ROOT / "docs" / "reproductions" / "cristiano-2018-pcm.png"
SUBSET, EPOCHS, LR = 10_000, 2, 0.1
#: Workload of the lifetime projection: 60,000 images x 20 epochs a day (this project's choice).
EXAMPLES_PER_DAY = 1.2e6
#: PCM SET/RESET cycles before failure: a placeholder (1e6-1e9 are reported for PCM), not from the paper.
ENDURANCE_CYCLES = 1e8


def _two_pair(**changes):
    """The preset with some fields of its cell (TwoPairPCMCell) changed."""
    base = get_preset("cristiano-2018-two-pair")
    return base.replace(cell=base.cell.replace(**changes))


def _lsp(**changes):
    base = get_preset("cristiano-2018-two-pair").cell
    return _two_pair(lsp=base.lsp.replace(**changes))


def _msp(**changes):
    base = get_preset("cristiano-2018-two-pair").cell
    return _two_pair(msp=base.msp.replace(**changes))


def _dtod(scale):
    base = get_preset("cristiano-2018-two-pair").cell
    lsp, msp = base.lsp, base.msp
    return _two_pair(
        lsp=lsp.replace(g_max_dtod=0.1 * scale, dg_dtod=0.2 * scale),
        msp=msp.replace(g_max_dtod=0.1 * scale, dg_dtod=0.2 * scale),
    )


def _both_nonlinearity(lsp_nl, msp_nl):
    base = get_preset("cristiano-2018-two-pair").cell
    return _two_pair(lsp=base.lsp.replace(nonlinearity=lsp_nl), msp=base.msp.replace(nonlinearity=msp_nl))


#: name -> (sweep, x value, tile config or None for the preset named by "preset:...")
CONDITIONS = {
    "fp": ("baseline", "software", "preset:floating-point"),
    "two-pair": ("baseline", "two pairs (preset)", "preset:cristiano-2018-two-pair"),
    # Dynamic range of the LSP: size of the steep initial jump (fraction of G_max).
    "jump-0": ("lsp_jump", 0.0, lambda: _lsp(initial_jump=0.0)),
    "jump-0.1": ("lsp_jump", 0.1, lambda: _lsp(initial_jump=0.1)),
    "jump-0.3": ("lsp_jump", 0.3, lambda: _lsp(initial_jump=0.3)),
    "jump-0.5": ("lsp_jump", 0.5, lambda: _lsp(initial_jump=0.5)),
    # Device-to-device variability of G_max and of the step, both pairs (x: multiple of 10% / 20%).
    "dtod-0": ("dtod", 0.0, lambda: _dtod(0.0)),
    "dtod-2x": ("dtod", 2.0, lambda: _dtod(2.0)),
    "dtod-4x": ("dtod", 4.0, lambda: _dtod(4.0)),
    # Gain factor F between the pairs.
    "F-1": ("F", 1.0, lambda: _two_pair(gain_factor=1.0)),
    "F-10": ("F", 10.0, lambda: _two_pair(gain_factor=10.0)),
    # Transfer interval (examples).
    "transfer-100": ("transfer_every", 100, lambda: _two_pair(transfer_every=100)),
    "transfer-10000": ("transfer_every", 10000, lambda: _two_pair(transfer_every=10_000)),
    # Linearity: nonlinearity of each pair, 0.2 (near-linear) or 2 (strongly saturating).
    "lsp-nl-msp-nl": ("linearity", "LSP 2 / MSP 2", lambda: _both_nonlinearity(2.0, 2.0)),
    "lsp-lin-msp-lin": ("linearity", "LSP 0.2 / MSP 0.2", lambda: _both_nonlinearity(0.2, 0.2)),
    "lsp-nl-msp-lin": ("linearity", "LSP 2 / MSP 0.2", lambda: _both_nonlinearity(2.0, 0.2)),
    # Single pair against two pairs of the same (saturating, jumping) device.
    "same-device": ("pairs", "two pairs, same device", "preset:cristiano-2018-same-device"),
    "single-pair": ("pairs", "single pair", "preset:cristiano-2018-single-pair"),
    # Polarity inversion off: the MSP is tuned from its present state at every transfer.
    "no-inversion": ("polarity", "no polarity inversion", lambda: _two_pair(polarity_inversion=False)),
    # Run-to-run spread: the preset and the software baseline again with seed 1 (devices, initial
    # weights, data order; the training subset stays the same).
    "two-pair-seed1": ("seed", "two pairs, seed 1", "preset:cristiano-2018-two-pair"),
    "fp-seed1": ("seed", "software, seed 1", "preset:floating-point"),
}
SEEDS = {"two-pair-seed1": 1, "fp-seed1": 1}
# A measured-like PCM device (session 10): the peer's PCM preset device, which IBM fitted to measured
# PCM, measured into a jump table (presets.PEER_PCM_TABLE_MEAN); in the MSP only, and in both pairs.
CONDITIONS["peer-table-msp"] = ("peer PCM table", "MSP", lambda: _two_pair(msp=_peer_pcm_table(1.0)))
CONDITIONS["peer-table-both"] = ("peer PCM table", "LSP and MSP", "preset:cristiano-2018-peer-pcm-table")
# The default condition appears in every sweep at its own x value.
DEFAULT_X = {"lsp_jump": 0.02, "dtod": 1.0, "F": 3.0, "transfer_every": 1000, "linearity": "LSP 0.2 / MSP 2"}


def train_config(name: str) -> TrainConfig:
    _, _, spec = CONDITIONS[name]
    common = dict(
        dataset="mnist", model="mlp", hidden=(250, 125), activation="sigmoid", epochs=EPOCHS, batch_size=1,
        lr=LR, lr_milestones=(1,), lr_gamma=0.5, seed=SEEDS.get(name, 0), subset=SUBSET,
    )
    if isinstance(spec, str):
        return TrainConfig(preset=spec.split(":", 1)[1], **common)
    return TrainConfig(preset="cristiano-2018-two-pair", tile=spec(), **common)


def run(names, data_dir: str) -> None:
    torch.set_num_threads(1)
    data = load_dataset("mnist", path=data_dir, subset=SUBSET, seed=0)
    for name in names:
        out = RUNS / name
        results_path = out / "results.json"
        if results_path.exists() and json.loads(results_path.read_text()).get("status") == "completed":
            print(f"{name}: done already")
            continue
        started = time.perf_counter()
        resume = (out / "checkpoint.pt").exists()
        run_training(train_config(name), out, data=data, resume=resume, progress=False, log=lambda s, n=name: print(f"{n}: {s}", flush=True))
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)


def _lifetime(entry: dict) -> dict:
    def days(per_example):
        return ENDURANCE_CYCLES / (per_example * EXAMPLES_PER_DAY) if per_example > 0 else float("inf")

    return {
        "lifetime_years_reset_limited": days(entry["resets_per_example_max"]) / 365.25,
        "lifetime_years_write_limited": days(entry["writes_per_example_max"]) / 365.25,
    }


def summarize() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    summary = {
        "setup": {
            "network": "784-250-125-10 sigmoid", "dataset": "mnist", "train_subset": SUBSET, "test_images": 10_000,
            "epochs": EPOCHS, "batch_size": 1, "lr": LR, "lr_schedule": "halved after epoch 1", "seed": 0,
            "examples_per_day": EXAMPLES_PER_DAY, "endurance_cycles": ENDURANCE_CYCLES,
        },
        "conditions": {},
    }
    for name, (sweep, x, _) in CONDITIONS.items():
        path = RUNS / name / "results.json"
        if not path.exists():
            print(f"{name}: no results yet", file=sys.stderr)
            continue
        results = json.loads(path.read_text())
        shutil.copyfile(path, DATA / f"{name}.json")
        epochs = results["epochs"]
        entry = {
            "sweep": sweep, "x": x, "status": results["status"], "epochs": len(epochs),
            "test_error": [e["test_error"] for e in epochs],
            "final_test_error": epochs[-1]["test_error"] if epochs else None,
            "ms_per_sample": 1e3 * sum(e["train_seconds"] for e in epochs) / (SUBSET * max(len(epochs), 1)),
        }
        layers = {}
        for layer, counters in results.get("counters", {}).items():
            if "endurance" not in counters:
                continue
            endurance, transfer = counters["endurance"], counters["transfer"]
            layers[layer] = {
                "transfer": transfer,
                **{pair: {**endurance[pair], **_lifetime(endurance[pair])} for pair in ("lsp", "msp") if pair in endurance},
            }
        if layers:
            entry["layers"] = layers
            for pair in ("lsp", "msp"):
                years = [v[pair]["lifetime_years_reset_limited"] for v in layers.values() if pair in v]
                if years:
                    entry[f"{pair}_lifetime_years_reset_limited_min"] = min(years)
                    entry[f"{pair}_writes_per_example_max"] = max(v[pair]["writes_per_example_max"] for v in layers.values() if pair in v)
            entry["clt_failures"] = sum(v["transfer"]["clt_failures"] for v in layers.values())
        summary["conditions"][name] = entry
    (DATA / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(summary)
    _print_tables(summary)


def _plot(summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cond = summary["conditions"]
    fp = cond.get("fp", {}).get("final_test_error")
    default = cond.get("two-pair", {}).get("final_test_error")
    sweeps = [
        ("lsp_jump", "LSP initial jump (fraction of G_max)", False),
        ("dtod", "device-to-device spread (x 10% G_max, 20% step)", False),
        ("F", "gain factor F", True),
        ("transfer_every", "transfer interval (examples)", True),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), dpi=110)
    for ax, (sweep, label, log_x) in zip(axes.flat, sweeps):
        points = [(v["x"], v["final_test_error"]) for v in cond.values() if v["sweep"] == sweep]
        if default is not None:
            points.append((DEFAULT_X[sweep], default))
        points.sort()
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o")
        if fp is not None:
            ax.axhline(100 * fp, color="gray", ls="--", label="floating point")
        ax.set_xlabel(label)
        ax.set_ylabel("test error (%)")
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax, sweep, extra in ((axes.flat[4], "linearity", ("two-pair",)), (axes.flat[5], "pairs", ("two-pair",))):
        names = [n for n, v in cond.items() if v["sweep"] == sweep] + [n for n in extra if n in cond]
        labels = [str(cond[n]["x"]) if n != "two-pair" else ("LSP 0.2 / MSP 2" if sweep == "linearity" else "two pairs (preset)") for n in names]
        ax.barh(labels, [100 * cond[n]["final_test_error"] for n in names])
        if fp is not None:
            ax.axvline(100 * fp, color="gray", ls="--")
        ax.set_xlabel("test error (%)")
        ax.set_title("nonlinearity of each pair" if sweep == "linearity" else "pairs", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(
        f"784-250-125-10 MNIST, {SUBSET} training images, {EPOCHS} epochs, batch 1 (dashed: floating point)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(FIGURE)
    plt.close(fig)


def _print_tables(summary: dict) -> None:
    print("| condition | sweep | x | test error after each epoch | LSP writes/example (max device) | MSP writes/example (max device) | CLT failures | ms/sample |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name, v in summary["conditions"].items():
        errors = " / ".join(f"{100 * e:.2f}%" for e in v["test_error"])
        lsp = v.get("lsp_writes_per_example_max")
        msp = v.get("msp_writes_per_example_max")
        print(
            f"| {name} | {v['sweep']} | {v['x']} | {errors} | {'' if lsp is None else f'{lsp:.3f}'} | "
            f"{'' if msp is None else f'{msp:.4f}'} | {v.get('clt_failures', '')} | {v['ms_per_sample']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "summarize", "list"])
    parser.add_argument("--only", default=None, help="comma-separated condition names")
    parser.add_argument("--worker", default="0/1", help="i/n: run every n-th condition starting at i")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    args = parser.parse_args()
    names = list(CONDITIONS) if args.only is None else args.only.split(",")
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        parser.error(f"unknown condition(s) {unknown}; known: {list(CONDITIONS)}")
    if args.action == "list":
        print("\n".join(names))
    elif args.action == "run":
        i, n = (int(v) for v in args.worker.split("/"))
        run(names[i::n], args.data_dir)
    else:
        summarize()


if __name__ == "__main__":
    main()
