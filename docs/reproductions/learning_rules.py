"""Learning rules on asymmetric devices (issue 17; docs/reproductions/learning-rules.md).

The 784-256-128-10 sigmoid network of Gokmen & Vlasov 2016 on MNIST (or Fashion-MNIST), batch 1,
trained with plain pulsed SGD and with each learning-rule cell (insitu.cells) on the same
devices, plus the floating-point reference. Every run is an ``insitu`` run folder (results.json,
checkpoint.pt per epoch) under ``--out``/DEVICE/RULE, resumed when it exists, so a study grows
across sittings:

    python docs/reproductions/learning_rules.py --devices sb-sp0.3 --rules "sgd;ttv2;c-ttv2:in_chop_prob=0.05" --epochs 3

Devices (``DEVICES``): soft bounds with 1000 states whose symmetry point is moved to ``u`` by the
up/down imbalance (``sb-spU``: for soft bounds on ±1, ``up_down = u`` puts the mean device's
symmetry point at w* = u, algorithms.md §2), the ReRAM soft-bounds preset of the peer, and the
2016 constant-step device as the symmetric control. The IO (forward, backward) and the main pulse
update are the 2016 preset's for every run, so only the device and the rule change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from insitu.cells import cell_from_spec
from insitu.devices import SoftBoundsDevice
from insitu.presets import get_preset
from insitu.training import TrainConfig, run_training


def soft_bounds(symmetry_point: float, spread: float = 0.05) -> SoftBoundsDevice:
    # 1000 states on [-1, 1]; 30 % device-to-device and cycle-to-cycle spread as the 2016 spec;
    # every device's symmetry point is at `symmetry_point` on average and spreads by `spread` from
    # device to device (up_down and up_down_dtod: w* = up_down for soft bounds on ±1).
    return SoftBoundsDevice(
        dw_min=0.002, dw_min_dtod=0.3, dw_min_std=0.3, up_down=symmetry_point, up_down_dtod=spread,
        w_max=1.0, w_min=-1.0, w_max_dtod=0.1, w_min_dtod=0.1,
    )


def device(name: str):
    if name.startswith("sb-sp"):  # a common offset of every device's symmetry point
        return soft_bounds(float(name[len("sb-sp"):]))
    if name.startswith("sb-sd"):  # symmetry points at 0 on average, spread by this much
        return soft_bounds(0.0, float(name[len("sb-sd"):]))
    if name == "reram-sb":
        return get_preset("reram-sb-2016-io").device
    if name == "cs-2016":
        return get_preset("gokmen-vlasov-2016").device
    raise SystemExit(f"unknown device {name!r}: sb-spU (e.g. sb-sp0.3), sb-sdS (e.g. sb-sd0.2), reram-sb or cs-2016")


def tile_config(device_name: str, rule: str, periphery: str = "gokmen-vlasov-2016"):
    """The periphery and update of preset ``periphery`` (the 2016 one by default; the CNN runs
    take ``gokmen-2017-cnn-nm-bm``: noise and bound management), ``device_name``'s device and the
    rule's cell (a ``--cell`` spec: :func:`insitu.cells.cell_from_spec`)."""
    return get_preset(periphery).replace(device=device(device_name), cell=cell_from_spec(rule))


def folder_name(rule: str) -> str:
    """A rule spec as a portable folder name (no ':' or ','): ``ttv2@fast_lr=0.1+max_pulses=2``."""
    return rule.replace(":", "@").replace(",", "+")


def rule_label(folder: str) -> str:
    return folder.replace("@", ":").replace("+", ",")


def table(root: Path) -> str:
    """A markdown table of every run under ``root`` (``<device>/<rule>/results.json``, and ``fp``):
    final test error, epochs, and the pulses the rule paid per training sample (the gradient's
    pulses into the first array, the transfers' pulses into the second, summed over layers)."""
    rows = ["| device | rule (overrides) | epochs | test error % | pulses / sample (array A or W) | transfer pulses / sample | transfer reads / sample |",
            "|---|---|---|---|---|---|---|"]
    for results_file in sorted(root.glob("**/results.json")):
        results = json.loads(results_file.read_text())
        rel = results_file.parent.relative_to(root).parts
        device_name, rule = ("-", "floating point") if rel == ("fp",) else (rel[0], rule_label(rel[1]))
        epochs = results["epochs"]
        counters = results.get("counters") or {}
        steps = max((c.get("steps", 0) for c in counters.values()), default=0)
        samples = steps * results["config"]["batch_size"]
        pulses = sum(c.get("pulses", 0.0) for c in counters.values())
        transfer = sum(c.get("transfer_pulses", 0.0) for c in counters.values())
        reads = sum(c.get("transfer_reads", c.get("transfers", 0)) for c in counters.values())
        per = (lambda v: f"{v / samples:,.0f}") if samples else (lambda v: f"{v:,.0f} (total)")
        rows.append(f"| {device_name} | {rule} | {len(epochs)} | {100 * epochs[-1]['test_error']:.2f} | {per(pulses)} | {per(transfer)} | {per(reads)} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="sb-sp0.3")
    parser.add_argument("--rules", default="fp;sgd;tiki-taka;ttv2;c-ttv2;agad;mp",
                        help="';'-separated rules, each a --cell name with optional field overrides: ttv2:fast_lr=0.1,max_pulses=2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn-2017"],
                        help="the 2016 MLP (sigmoid) or the 2017 CNN (tanh, as docs/reproductions/gokmen-2017-cnn.sh)")
    parser.add_argument("--periphery", default="gokmen-vlasov-2016",
                        help="preset whose IO and update every analog run takes (e.g. gokmen-2017-cnn-nm-bm for the CNN)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for PyTorch and the compiled kernels (1, as the other reproductions: two "
                             "intra-op threads on a machine shared with other runs slowed the CNN several-fold)")
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--out", default="runs/learning-rules")
    parser.add_argument("--table", action="store_true", help="Print the markdown table of the runs under --out/DATASET/sSEED and stop.")
    args = parser.parse_args(argv)
    import torch

    from insitu.update.kernels import set_threads

    torch.set_num_threads(args.threads)
    set_threads(args.threads)
    if args.table:
        print(table(Path(args.out) / args.dataset / f"s{args.seed}"))
        return
    summary = {}
    for device_name in args.devices.split(","):
        for rule in args.rules.split(";"):
            tag = f"{device_name}/{folder_name(rule)}" if rule != "fp" else "fp"
            out = Path(args.out) / args.dataset / f"s{args.seed}" / tag
            network = {} if args.model == "mlp" else {"model": "cnn-2017", "activation": "tanh"}
            if rule == "fp":
                config = TrainConfig(preset="floating-point", dataset=args.dataset, epochs=args.epochs, subset=args.subset,
                                     seed=args.seed, lr=args.lr, lr_milestones=(), **network)
            else:
                config = TrainConfig(dataset=args.dataset, epochs=args.epochs, subset=args.subset, seed=args.seed, lr=args.lr,
                                     lr_milestones=(), tile=tile_config(device_name, rule, args.periphery), **network)
            done = 0
            if (out / "results.json").exists():
                done = len(json.loads((out / "results.json").read_text())["epochs"])
            if done < args.epochs:
                results = run_training(config, out, data_dir=args.data_dir, resume=(out / "checkpoint.pt").exists(),
                                       progress=False)
            else:
                results = json.loads((out / "results.json").read_text())
            summary[tag] = [round(100 * e["test_error"], 2) for e in results["epochs"]]
            print(f"{tag}: test error % per epoch {summary[tag]}", flush=True)
    json.dump(summary, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
