"""Reproduction of Dey, Shao, Chugg & Beerel (2017) on MNIST: pre-defined sparsity, bit widths, hardware.

Parts (each writes one JSON under docs/reproductions/data/dey-2017-sparse/):

* ``headline``: dense 784-112-10 and sparse 800-100-10 (out-degrees 50, 10; structured and
  clash-free), the authors' software setup (Adam, batch 256, L2, ReLU), several seeds;
* ``density``: test accuracy against network density 100% .. 5% for the three pattern kinds;
* ``bits``: fixed-point training (batch 1, power-of-two learning rate) at 8, 10, 12, 16 bits
  against the floating-point reference;
* ``hardware``: the edge-processing model against a dense network on the same multipliers and a
  measured PyTorch training step on this machine;
* ``plot``: the figure from the JSON files.

Run from the repository root: ``python docs/reproductions/dey_2017_sparse.py --part all``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from insitu.data import load_dataset
from insitu.sparse.hardware import EdgeHardwareConfig, estimate, measure_torch_step
from insitu.sparse.training import SparseTrainConfig, train_sparse

OUT = Path(__file__).resolve().parent / "data" / "dey-2017-sparse"
DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets"

# Authors' software setup (papers.md 5.5): Adam, batch 256, ReLU, L2 8e-5 in Keras, i.e. a loss
# term 8e-5·Σw², whose gradient 1.6e-4·w is torch's weight_decay.
ADAM = dict(optimizer="adam", lr=1e-3, batch_size=256, weight_decay=1.6e-4, activation="relu")

# (d_out junction 1, d_out junction 2) for 800-100-10: network density 100, 50, 20, 10, 5.06 %.
DENSITIES = [(100, 10), (50, 5), (20, 2), (10, 1), (5, 1)]
# Clash-free z: divides 800 and 100 (the banks) for every degree above.
SWEEP_Z = (40, 10)


def _write(name: str, payload: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    payload["machine"] = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    (OUT / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {OUT / name}.json", flush=True)


def _summary(result: dict) -> dict:
    return {
        "network_density": result["network_density"],
        "edges": result["edges"],
        "final_test_accuracy": result["final_test_accuracy"],
        "best_test_accuracy": result["best_test_accuracy"],
        "train_seconds": sum(e["train_seconds"] for e in result["epochs"]),
        "per_epoch_test_accuracy": [e["test_accuracy"] for e in result["epochs"]],
        "config": result["config"],
    }


def headline(data, epochs: int, seeds) -> None:
    runs = {
        "dense 784-112-10": dict(sizes=(784, 112, 10), out_degrees=None),
        "sparse 800-100-10 structured": dict(sizes=(800, 100, 10), out_degrees=(50, 10), pattern="structured"),
        "sparse 800-100-10 clash-free z=200,5": dict(sizes=(800, 100, 10), out_degrees=(50, 10), pattern="clash-free", z=(200, 5)),
    }
    out = {"epochs": epochs, "seeds": list(seeds), "setup": ADAM, "authors": {"dense 784-112-10": 0.9809, "sparse 800-100-10": 0.9797}, "runs": {}}
    for name, kw in runs.items():
        out["runs"][name] = []
        for seed in seeds:
            result = train_sparse(SparseTrainConfig(epochs=epochs, seed=seed, **ADAM, **kw), data)
            out["runs"][name].append(_summary(result))
            print(f"{name} seed {seed}: {100 * result['final_test_accuracy']:.2f}%", flush=True)
    _write("headline", out)


def _kept_run(keep: Path, kind: str, d_out, seed: int, config: SparseTrainConfig, data) -> dict:
    """One sweep point: its kept JSON in ``keep`` when an earlier (interrupted) sweep finished it,
    else trained now and kept, so that a sweep continues where it stopped."""
    done = keep / f"{kind}-{d_out[0]}-{d_out[1]}-s{seed}.json"
    if done.exists():
        return json.loads(done.read_text())
    result = train_sparse(config, data)
    run = {"pattern": kind, "out_degrees": d_out, "seed": seed, **_summary(result)}
    done.write_text(json.dumps(run, indent=1) + "\n")
    print(f"{kind} {d_out} seed {seed}: density {100 * result['network_density']:.2f}% -> {100 * result['final_test_accuracy']:.2f}%", flush=True)
    return run


def density(data, epochs: int, seeds, name: str = "density") -> None:
    """Accuracy against density for the three pattern kinds. Each finished run is kept in
    ``runs/dey-2017-sparse/<name>/`` (one JSON per pattern, degrees and seed), so an interrupted
    sweep (50 epochs x 3 seeds is hours on one core) continues where it stopped."""
    keep = OUT.parents[3] / "runs" / "dey-2017-sparse" / name
    keep.mkdir(parents=True, exist_ok=True)
    out = {"epochs": epochs, "seeds": list(seeds), "setup": ADAM, "clash_free_z": SWEEP_Z, "runs": []}
    for kind in ("structured", "clash-free", "random"):
        for d_out in DENSITIES:
            for seed in seeds:
                kw = dict(pattern=kind, z=SWEEP_Z if kind == "clash-free" else None)
                config = SparseTrainConfig(sizes=(800, 100, 10), out_degrees=d_out, epochs=epochs, seed=seed, **ADAM, **kw)
                out["runs"].append(_kept_run(keep, kind, d_out, seed, config, data))
    _write(name, out)


# Junction 2 kept fully connected (d_out 10), junction 1 sparser: 50.6, 21.0, 11.1, 6.2, 5.2 %.
DENSITIES_DENSE_OUTPUT = [(50, 10), (20, 10), (10, 10), (5, 10), (4, 10)]


def density_dense_output(data, epochs: int, seeds, name: str = "density_dense_output") -> None:
    """Structured patterns with the output junction left dense: where the density goes matters.
    Finished runs are kept in ``runs/dey-2017-sparse/<name>/`` as in :func:`density`."""
    keep = OUT.parents[3] / "runs" / "dey-2017-sparse" / name
    keep.mkdir(parents=True, exist_ok=True)
    out = {"epochs": epochs, "seeds": list(seeds), "setup": ADAM, "runs": []}
    for d_out in DENSITIES_DENSE_OUTPUT:
        for seed in seeds:
            config = SparseTrainConfig(sizes=(800, 100, 10), out_degrees=d_out, epochs=epochs, seed=seed, **ADAM)
            out["runs"].append(_kept_run(keep, "structured", d_out, seed, config, data))
    _write(name, out)


def _dense_output_path():
    """The dense-output-junction sweep to plot: the 50-epoch one (3 seeds, session 22) where it
    exists, else the 20-epoch one, else ``None``."""
    for name in ("density_dense_output_50ep.json", "density_dense_output.json"):
        if (OUT / name).exists():
            return OUT / name
    return None


def _mean_by_degrees(runs) -> list:
    """``[(out_degrees, density, mean accuracy in %)]`` over the seeds of each degree pair, in the runs' order."""
    order = []
    for r in runs:
        if tuple(r["out_degrees"]) not in order:
            order.append(tuple(r["out_degrees"]))
    points = []
    for degrees in order:
        same = [r for r in runs if tuple(r["out_degrees"]) == degrees]
        points.append((degrees, same[0]["network_density"], 100 * statistics.mean(r["final_test_accuracy"] for r in same)))
    return points


# Fixed-point conditions: name -> (output stage, width, kind, SparseTrainConfig overrides). kind is
# "float", "nearest" (one format for all quantities, rounding to nearest: the original table) or
# "fix" (stochastic rounding of the updates, and at 8-12 bits an integer/fraction split per
# quantity; see section 3 of dey-2017-sparse.md and dey_2017_fixed_point_diagnosis.py).
def _split(width: int, weights: int, activations: int, errors: int) -> dict:
    """Per-quantity integer bits at one word width; updates share the weights' format."""
    return dict(fixed_point=f"{width}:{activations}", weight_format=f"{width}:{weights}", error_format=f"{width}:{errors}",
                update_format=f"{width}:{weights}", update_rounding="stochastic")


SR = dict(update_rounding="stochastic")
BITS_RUNS = {
    "softmax": {
        "float": ("float", "float", dict(optimizer="sgd", lr=2.0**-6)),
        "16:5": (16, "nearest", dict(fixed_point="16:5")),
        "12:4": (12, "nearest", dict(fixed_point="12:4")),
        "10:3": (10, "nearest", dict(fixed_point="10:3")),
        "8:1": (8, "nearest", dict(fixed_point="8:1")),
        "12:3 (RTL default split)": (12, "nearest", dict(fixed_point="12:3")),
        "16:5, stochastic": (16, "fix", dict(fixed_point="16:5", **SR)),
        "12:4, stochastic": (12, "other", dict(fixed_point="12:4", **SR)),
        "12 split, stochastic": (12, "fix", _split(12, 1, 4, 0)),
        "10 split, stochastic": (10, "fix", _split(10, 1, 4, 0)),
        "8 split, stochastic, η=2^-7": (8, "fix", dict(_split(8, 0, 3, 0), learning_rate_exponent=7)),
        # Remedies for the runaway to the format bounds over 3 epochs (§3.1a; session 12): L2 in
        # the rounded update, FixedPointConfig.weight_decay.
        "10 split, stochastic, L2 1e-4": (10, "other", dict(_split(10, 1, 4, 0), weight_decay=1e-4)),
        "10 split, stochastic, L2 1e-3": (10, "other", dict(_split(10, 1, 4, 0), weight_decay=1e-3)),
        "12:4, stochastic, L2 1e-3": (12, "other", dict(fixed_point="12:4", weight_decay=1e-3, **SR)),
        # Session 13: does L2 also hold the 12-bit split (95.45 % in epoch 3 without), and can it
        # rescue 8 bits (32 % after one epoch without)?
        "12 split, stochastic, L2 1e-4": (12, "other", dict(_split(12, 1, 4, 0), weight_decay=1e-4)),
        "8 split, stochastic, η=2^-7, L2 1e-4": (8, "other", dict(_split(8, 0, 3, 0), learning_rate_exponent=7, weight_decay=1e-4)),
        "8 split, stochastic, η=2^-7, L2 1e-3": (8, "other", dict(_split(8, 0, 3, 0), learning_rate_exponent=7, weight_decay=1e-3)),
    },
    "sigmoid": {
        "float": ("float", "float", dict(optimizer="sgd", lr=2.0**-6)),
        "16:5": (16, "nearest", dict(fixed_point="16:5")),
        "12:4": (12, "nearest", dict(fixed_point="12:4")),
        "10:3": (10, "nearest", dict(fixed_point="10:3")),
        "8:1": (8, "nearest", dict(fixed_point="8:1")),
        "12 split, stochastic": (12, "fix", _split(12, 1, 4, 0)),
        "10:3, stochastic": (10, "other", dict(fixed_point="10:3", **SR)),
        "10 split, stochastic": (10, "fix", _split(10, 1, 3, 0)),
        "8 split, stochastic, η=2^-7": (8, "fix", dict(_split(8, 0, 2, 0), learning_rate_exponent=7)),
    },
}
BITS_FILES = {"softmax": "bits", "sigmoid": "bits_sigmoid"}


def _bits_common(output: str, epochs: int, seed: int) -> dict:
    # One power-of-two rate for all widths, η = 2^-6 unless a condition says otherwise, batch 1
    # as the hardware trains; every format keeps k <= fraction bits of weights and updates.
    return dict(sizes=(800, 100, 10), out_degrees=(50, 10), pattern="clash-free", z=(200, 5), batch_size=1,
                activation="relu", output=output, epochs=epochs, seed=seed, weight_decay=0.0, learning_rate_exponent=6)


def _slug(name: str) -> str:
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in name)


def _epochs_suffix(epochs: int) -> str:
    """File-name suffix of a bit-width study: none for the 1-epoch study, ``_3ep`` for 3 epochs."""
    return "" if epochs == 1 else f"_{epochs}ep"


def bits_one(data, output: str, name: str, epochs: int, seed: int) -> None:
    """Train one fixed-point condition and write its summary under ``bits_runs/`` (runs in
    parallel; ``bits_runs_3ep/`` etc. for a study of more epochs, which leaves the 1-epoch one as it is)."""
    width, kind, kw = BITS_RUNS[output][name]
    result = train_sparse(SparseTrainConfig(**{**_bits_common(output, epochs, seed), **kw}), data)
    run_dir = OUT / f"bits_runs{_epochs_suffix(epochs)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = {"output": output, "name": name, "width": width, "kind": kind, **_summary(result)}
    (run_dir / f"{output}_{_slug(name)}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"{output} output {name}: {100 * result['final_test_accuracy']:.2f}%", flush=True)


def bits_collect(epochs: int, seed: int) -> None:
    """Gather the ``bits_runs/`` summaries into ``bits.json`` and ``bits_sigmoid.json``.

    A condition without a summary in ``bits_runs/`` keeps its entry of the existing JSON file,
    marked ``"from_previous_run": true`` (the rounding-to-nearest rows were trained once, before
    the fix, by code this change leaves as it was); a condition in neither is left out.
    """
    suffix = _epochs_suffix(epochs)
    for output, fname in BITS_FILES.items():
        fname += suffix
        previous_path = OUT / f"{fname}.json"
        previous = json.loads(previous_path.read_text())["runs"] if previous_path.exists() else {}
        out = {"epochs": epochs, "seed": seed, "common": _bits_common(output, epochs, seed), "runs": {}}
        for name, (width, kind, _) in BITS_RUNS[output].items():
            fragment = OUT / f"bits_runs{suffix}" / f"{output}_{_slug(name)}.json"
            if fragment.exists():
                out["runs"][name] = json.loads(fragment.read_text())
            elif name in previous:
                kept = previous[name]
                kept.setdefault("from_previous_run", True)
                out["runs"][name] = {"output": output, "name": name, "width": width, "kind": kind, **kept}
        _write(fname, out)


#: The bit-width conditions the pipeline study trains with and without the junction pipeline.
PIPELINE_CONDITIONS = ("float", "16:5, stochastic")


def _pipeline_fragment(output: str, name: str, epochs: int, seed: int, pipeline: bool) -> Path:
    kind = "pipelined" if pipeline else "sequential"
    return OUT / f"pipeline_runs{_epochs_suffix(epochs)}" / f"{output}_{_slug(name)}_s{seed}_{kind}.json"


def pipeline_one(data, output: str, name: str, epochs: int, seed: int, pipeline: bool) -> None:
    """One bit-width condition (batch 1, as the hardware trains) with or without the emulated
    junction pipeline (``--pipeline``: each junction's forward pass with its weights of
    ``2(L - l) + 1`` examples ago, :mod:`insitu.pipeline`; issue 18 item 6)."""
    width, kind, kw = BITS_RUNS[output][name]
    result = train_sparse(SparseTrainConfig(**{**_bits_common(output, epochs, seed), **kw, "pipeline": pipeline}), data)
    path = _pipeline_fragment(output, name, epochs, seed, pipeline)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"output": output, "name": name, "width": width, "kind": kind, "seed": seed, "pipeline": pipeline, **_summary(result)}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"{output} output {name}, seed {seed}, {'pipelined' if pipeline else 'sequential'}: "
          f"{100 * result['final_test_accuracy']:.2f}%", flush=True)


def pipeline_collect(epochs: int) -> None:
    """Gather ``pipeline_runs_Nep/`` into ``pipeline_Nep.json``. A sequential seed-0 run missing
    there is taken from the bit-width study of the same length (``bits_runs_Nep/``: the same
    config, pipeline off), marked ``"from": "bits_runs"``."""
    suffix = _epochs_suffix(epochs)
    runs = []
    for fragment in sorted((OUT / f"pipeline_runs{suffix}").glob("*.json")):
        runs.append(json.loads(fragment.read_text()))
    for output in BITS_RUNS:
        for name in PIPELINE_CONDITIONS:
            have = any(r["output"] == output and r["name"] == name and r["seed"] == 0 and not r["pipeline"] for r in runs)
            bits_fragment = OUT / f"bits_runs{suffix}" / f"{output}_{_slug(name)}.json"
            if not have and bits_fragment.exists() and any(r["output"] == output and r["name"] == name for r in runs):
                runs.append({**json.loads(bits_fragment.read_text()), "seed": 0, "pipeline": False, "from": "bits_runs"})
    _write(f"pipeline{suffix}", {"epochs": epochs, "common": _bits_common("softmax", epochs, 0), "runs": runs})
    for r in sorted(runs, key=lambda r: (r["output"], r["name"], r["pipeline"], r["seed"])):
        acc = [f"{100 * a:.2f}" for a in r.get("per_epoch_test_accuracy", [])]
        print(f"{r['output']:8s} {r['name']:18s} {'pipelined ' if r['pipeline'] else 'sequential'} seed {r['seed']}: {', '.join(acc)}")


def bits(data, epochs: int, seed: int, output: str = "softmax") -> None:
    """All conditions of one output stage, one after the other."""
    for name in BITS_RUNS[output]:
        bits_one(data, output, name, epochs, seed)


def hardware() -> None:
    config = EdgeHardwareConfig()
    cases = {
        "800-100-10 d_out 50,10 (C=200)": ((800, 100, 10), (50, 10), 200),
        "800-100-10 d_out 10,1 (C=100)": ((800, 100, 10), (10, 1), 100),
        "800-100-10 d_out 5,1 (C=100)": ((800, 100, 10), (5, 1), 100),
        "1024-64-16 d_out 8,8 (DNN.sv, C=16)": ((1024, 64, 16), (8, 8), 16),
    }
    out = {"config": config.to_dict(), "estimates": {}, "measured_torch": []}
    for name, (sizes, degrees, c) in cases.items():
        out["estimates"][name] = estimate(sizes, degrees, config, clocks_per_cycle=c).to_dict()
    # The same networks trained by PyTorch on this machine (one CPU thread).
    for sizes, degrees in (((800, 100, 10), (50, 10)), ((800, 100, 10), (5, 1)), ((800, 100, 10), None), ((784, 112, 10), None)):
        for batch in (1, 256):
            out["measured_torch"].append(measure_torch_step(sizes, degrees, batch_size=batch, steps=300 if batch == 1 else 30))
    _write("hardware", out)


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    # The full-length sweep (50 epochs, 3 seeds; session 11) where it exists, else the 20-epoch one.
    dens_path = OUT / "density_50ep.json" if (OUT / "density_50ep.json").exists() else OUT / "density.json"
    dens = json.loads(dens_path.read_text())
    n_seeds = len(dens.get("seeds", [0]))
    for kind, marker in (("structured", "o"), ("clash-free", "s"), ("random", "^")):
        runs = [r for r in dens["runs"] if r["pattern"] == kind]
        xs = sorted({r["network_density"] for r in runs})
        ys = [100 * sum(r["final_test_accuracy"] for r in runs if r["network_density"] == x) / sum(1 for r in runs if r["network_density"] == x) for x in xs]
        ax1.plot([100 * x for x in xs], ys, marker=marker, label=kind)
    extra = _dense_output_path()
    if extra is not None:
        extra_data = json.loads(extra.read_text())
        points = _mean_by_degrees(extra_data["runs"])
        n_extra = len(extra_data.get("seeds", [0]))
        ax1.plot([100 * rho for _, rho, _ in points], [acc for _, _, acc in points], marker="D", ls=":",
                 label=f"structured, output junction dense ({extra_data.get('epochs', dens['epochs'])} epochs, "
                       f"{'mean of %d seeds' % n_extra if n_extra > 1 else '1 seed'})")
    head = json.loads((OUT / "headline.json").read_text())
    dense = head["runs"]["dense 784-112-10"]
    ax1.axhline(100 * sum(r["final_test_accuracy"] for r in dense) / len(dense), color="gray", ls="--", lw=1, label=f"dense 784-112-10, {head['epochs']} epochs")
    ax1.set_xscale("log")
    ax1.set_xlabel("network density ρ_net (%)")
    ax1.set_ylabel("MNIST test accuracy (%)")
    seeds = f", mean of {n_seeds} seeds" if n_seeds > 1 else ""
    ax1.set_title(f"800-100-10, {dens['epochs']} epochs{seeds}, Adam batch 256", fontsize=9)
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8, loc="lower right")
    widths = ["float", 16, 12, 10, 8]
    series = [("softmax", "nearest", "softmax, nearest"), ("softmax", "fix", "softmax, fix"),
              ("sigmoid", "nearest", "sigmoid δ=a−y, nearest"), ("sigmoid", "fix", "sigmoid δ=a−y, fix")]
    bar = 0.2
    epochs = 1
    for i, (output, kind, label) in enumerate(series):
        path = OUT / f"{BITS_FILES[output]}.json"
        if not path.exists():
            continue
        b = json.loads(path.read_text())
        epochs = b["epochs"]
        acc = {}
        for r in b["runs"].values():
            if r["kind"] in (kind, "float"):
                acc[r["width"]] = 100 * r["final_test_accuracy"]
        # A width without a run of this kind gets no bar (nan), not a bar at 0%.
        ax2.bar([j + (i - 1.5) * bar for j in range(len(widths))], [acc.get(w, float("nan")) for w in widths], width=bar, label=label)
    ax2.set_xticks(range(len(widths)), [str(w) for w in widths], fontsize=8)
    ax2.set_ylabel("MNIST test accuracy (%)")
    ax2.set_xlabel("word width (bits)")
    ax2.set_title(f"800-100-10 clash-free, batch 1, {epochs} epoch; fix = stochastic updates + split", fontsize=8)
    ax2.grid(True, axis="y", alpha=0.3)
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    fig.savefig(OUT.parent.parent / "dey-2017-sparse.png")
    print("wrote docs/reproductions/dey-2017-sparse.png")


def tables() -> None:
    """Markdown tables of the JSON results (pasted into dey-2017-sparse.md)."""

    head = json.loads((OUT / "headline.json").read_text())
    print(f"| network | density | edges | test accuracy, {head['epochs']} epochs (mean of seeds {head['seeds']}) | per seed | authors |")
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for name, runs in head["runs"].items():
        accs = [100 * r["final_test_accuracy"] for r in runs]
        authors = head["authors"].get(name.split(" structured")[0].split(" clash")[0])
        print(f"| {name} | {100 * runs[0]['network_density']:.1f}% | {sum(runs[0]['edges'])} | {statistics.mean(accs):.2f}% "
              f"| {', '.join(f'{a:.2f}' for a in accs)} | {'' if authors is None else f'{100 * authors:.2f}%'} |")
    # The full-length sweep (50 epochs, 3 seeds; session 11) where it exists, else the 20-epoch one.
    dens_path = OUT / "density_50ep.json" if (OUT / "density_50ep.json").exists() else OUT / "density.json"
    dens = json.loads(dens_path.read_text())
    n_seeds = len(dens.get("seeds", [0]))
    print()
    print(f"| d_out (junction 1, 2) | ρ_net | structured | clash-free (z={dens['clash_free_z']}) | random |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for d_out in DENSITIES:
        cells = {}
        for r in dens["runs"]:
            if tuple(r["out_degrees"]) == d_out:
                cells.setdefault(r["pattern"], []).append(100 * r["final_test_accuracy"])
                rho = r["network_density"]
        print(f"| {d_out[0]}, {d_out[1]} | {100 * rho:.2f}% | " + " | ".join(
            f"{statistics.mean(cells[k]):.2f}%" if k in cells else "–" for k in ("structured", "clash-free", "random")) + " |")
    for path in (OUT / "density_dense_output.json", OUT / "density_dense_output_50ep.json"):
        if not path.exists():
            continue
        extra_data = json.loads(path.read_text())
        print()
        print(f"{path.name}: {extra_data['epochs']} epochs, seeds {extra_data.get('seeds', [0])} (mean, and each seed)")
        print("| d_out (junction 1, 2) | ρ_net | structured, output junction dense | seeds |")
        print("| --- | ---: | ---: | --- |")
        for degrees, rho, acc in _mean_by_degrees(extra_data["runs"]):
            each = [100 * r["final_test_accuracy"] for r in extra_data["runs"] if tuple(r["out_degrees"]) == degrees]
            print(f"| {degrees[0]}, {degrees[1]} | {100 * rho:.2f}% | {acc:.2f}% | {' / '.join(f'{a:.2f}' for a in each)} |")
    for output, label in (("softmax", "softmax output"), ("sigmoid", "sigmoid output, δ = a − y")):
        path = OUT / f"{BITS_FILES[output]}.json"
        if not path.exists():
            continue
        b = json.loads(path.read_text())
        print()
        print(f"| {label} | weights | activations | errors | updates | update rounding | η | test accuracy after {b['epochs']} epoch(s) |")
        print("| --- | --- | --- | --- | --- | --- | --- | ---: |")
        for name, r in b["runs"].items():
            c = r["config"]
            if c["fixed_point"] is None:
                print(f"| {name} | float | float | float | float | – | 2^-6 | {100 * r['final_test_accuracy']:.2f}% |")
                continue
            fmts = [c.get(f) or c["fixed_point"] for f in ("weight_format", "activation_format", "error_format", "update_format")]
            print(f"| {name} | {' | '.join(fmts)} | {c.get('update_rounding', 'nearest')} | 2^-{c['learning_rate_exponent']} | {100 * r['final_test_accuracy']:.2f}% |")
    diagnoses = [OUT / "fixed_point_diagnosis.json", OUT / "fixed_point_diagnosis_sigmoid.json"]
    if any(path.exists() for path in diagnoses):
        print()
        print("| condition (10,000-image subset, 1 epoch) | output | test accuracy | junction-1 updates kept by nearest rounding "
              "| logits saturated | hidden pre-activations saturated | max abs w (junction 1, 2) |")
        print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
        for path in diagnoses:
            if not path.exists():
                continue
            diag = json.loads(path.read_text())
            for name, r in diag["conditions"].items():
                kept = r["nearest_keeps_fraction_of_updates"]["1.values"]
                sat = r["saturated_fraction"]
                w = r["final_max_abs_weight"]
                print(f"| {name} | {diag['output']} | {100 * r['test_accuracy']:.2f}% | {100 * kept:.1f}% | {100 * sat['logits']:.1f}% "
                      f"| {100 * sat['hidden_preactivation']:.1f}% | {w['1.values']:.3g}, {w['5.values']:.3g} |")
    hw = json.loads((OUT / "hardware.json").read_text())
    print()
    print("| network | ρ_net | reduction | C | z | multipliers | adders | memory (kbit) | examples/s | dense clocks (same multipliers) | modelled speed-up |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, e in hw["estimates"].items():
        print(f"| {name} | {100 * e['network_density']:.2f}% | {e['complexity_reduction']:.2f}x | {e['clocks_per_cycle']} | "
              f"{','.join(str(j['z']) for j in e['junctions'])} | {e['multipliers']} | {e['adders']} | {e['memory_bits'] / 1e3:.1f} | "
              f"{e['examples_per_second']:,.0f} | {e['dense_clocks_per_cycle']} (z={','.join(map(str, e['dense_z']))}) | {e['speedup_vs_dense']:.2f}x |")
    print()
    print("| PyTorch on this machine | batch | examples/s | µs/example |")
    print("| --- | ---: | ---: | ---: |")
    for m in hw["measured_torch"]:
        what = "dense" if m["out_degrees"] is None else f"sparse d_out {m['out_degrees']}"
        print(f"| {'-'.join(map(str, m['sizes']))} {what} | {m['batch_size']} | {m['examples_per_second']:,.0f} | {1e6 * m['seconds_per_example']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all", choices=["all", "headline", "density", "density-dense-output", "bits", "bits-sigmoid",
                                                           "bits-one", "bits-collect", "pipeline-one", "pipeline-collect", "hardware", "plot", "tables"])
    parser.add_argument("--output", default="softmax", choices=list(BITS_RUNS), help="bits-one: the output stage")
    parser.add_argument("--condition", default=None, help="bits-one: a condition name of BITS_RUNS")
    parser.add_argument("--seed", type=int, default=0, help="pipeline-one: the seed")
    parser.add_argument("--pipeline", action="store_true", help="pipeline-one: emulate the junction pipeline (else sequential)")
    parser.add_argument("--list-conditions", action="store_true", help="print OUTPUT<TAB>CONDITION of every bit-width run and exit")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--headline-epochs", type=int, default=50)
    parser.add_argument("--density-epochs", type=int, default=20)
    parser.add_argument("--bits-epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the headline runs")
    parser.add_argument("--density-seeds", type=int, default=1, help="seeds of the density sweep (1: the committed 20-epoch sweep)")
    parser.add_argument("--dense-output-name", default="density_dense_output",
                        help="JSON name of the dense-output-junction sweep (density_dense_output.json: 20 epochs, 1 seed; "
                             "density_dense_output_50ep: 50 epochs x 3 seeds); its seeds are --density-seeds")
    parser.add_argument("--density-name", default="density",
                        help="JSON name of the density sweep (density.json: 20 epochs, 1 seed; e.g. density_50ep for 50 epochs x 3 seeds)")
    args = parser.parse_args()
    if args.list_conditions:
        for output, runs in BITS_RUNS.items():
            for name in runs:
                print(f"{output}\t{name}")
        return
    torch.set_num_threads(1)
    start = time.time()
    need_data = args.part in ("all", "headline", "density", "density-dense-output", "bits", "bits-sigmoid", "bits-one", "pipeline-one")
    data = load_dataset("mnist", path=args.data_dir) if need_data else None
    if args.part in ("all", "headline"):
        headline(data, args.headline_epochs, range(args.seeds))
    if args.part in ("all", "density"):
        density(data, args.density_epochs, range(args.density_seeds), args.density_name)
    if args.part in ("all", "density-dense-output"):
        density_dense_output(data, args.density_epochs, range(args.density_seeds), args.dense_output_name)
    if args.part in ("all", "bits"):
        bits(data, args.bits_epochs, 0, "softmax")
    if args.part in ("all", "bits-sigmoid"):
        bits(data, args.bits_epochs, 0, "sigmoid")
    if args.part == "bits-one":
        bits_one(data, args.output, args.condition, args.bits_epochs, 0)
    if args.part == "pipeline-one":
        pipeline_one(data, args.output, args.condition, args.bits_epochs, args.seed, args.pipeline)
    if args.part == "pipeline-collect":
        pipeline_collect(args.bits_epochs)
    if args.part in ("all", "bits-collect"):
        bits_collect(args.bits_epochs, 0)
    if args.part in ("all", "hardware"):
        hardware()
    if args.part in ("all", "plot"):
        plot()
    if args.part in ("all", "tables"):
        tables()
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
