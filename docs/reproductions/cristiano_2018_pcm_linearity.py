"""Linearity experiment of the Cristiano/Burr 2018 reproduction (issue 6), with repeated seeds.

Question: does the low-significance pair (LSP) need a near-linear response while the
high-significance pair (MSP) tolerates a saturating one? Conditions change the
``cristiano-2018-two-pair`` preset only in the nonlinearity exponent of one pair (and the
transfer interval), each with several seeds; see ``docs/reproductions/cristiano-2018-pcm.md``,
section "Linearity with repeated seeds".

Condition names (learning rate halved after epoch 1, as in cristiano_2018_pcm.py, unless "fpc"):
    fp-lr<lr>-s<seed>               software baseline, learning rate <lr>, halved after epoch 1
    fpc-lr<lr>-s<seed>              software baseline at constant learning rate <lr>
    lsp<a>-msp<b>-T<t>-s<seed>      LSP nonlinearity a, MSP nonlinearity b, transfer every t examples
    lsp<a>-msp<b>-T<t>-R<r>-s<seed> the same with refresh_threshold r (a pair whose LSP device is above
                                    r·G_max is transferred at the next check; preset 0.9)
    lsp<a>-msp<b>-T<t>[-R<r>]-C<k>-s<seed>   transfer_mode "columns": k columns at a time, interleaved
                                    with training, each column once every t examples (issue 18)
    lsp<a>-msp<b>-T<t>[-R<r>][-C<k>]-N<σ>-s<seed>   closed-loop tuning with verify-read noise σ
                                    (clt_read_noise, weight units; the preset's tolerance is 0.02)

    python docs/reproductions/cristiano_2018_pcm_linearity.py run NAME [NAME ...] [--subset N --epochs E --lr LR]
    python docs/reproductions/cristiano_2018_pcm_linearity.py summarize

Every run trains the 784-250-125-10 sigmoid network at batch 1 on a fixed MNIST training subset
(``--subset``, chosen with seed 0; the run's seed sets the devices, the initial weights and the
data order) and is tested on the full test set. Run folders go to
``runs/cristiano-2018-pcm-linearity/<name>`` (a finished run is skipped). Besides the usual
``results.json``, each PCM run writes ``lsp_occupancy.json``: at every whole-array transfer, the
state of the LSP devices just before their RESET (all layers together): quantiles of ``g/G_max``
over the devices that were pulsed since their last RESET, and the mean relative step
``(1 - g/G_max)^nonlinearity`` left at that conductance (1 for a linear device). ``summarize``
copies both (no checkpoints) to ``docs/reproductions/data/cristiano-2018-pcm-linearity/``, writes
``summary.json`` there (groups of seeds, Welch's t-tests of :data:`COMPARISONS`) and the figure
``docs/reproductions/cristiano-2018-pcm-linearity.png``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from insitu.cells import multi_conductance as mc
from insitu.data import load_dataset
from insitu.presets import get_preset
from insitu.tile import AnalogTile
from insitu.training import TrainConfig, run_training

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "cristiano-2018-pcm-linearity"
DATA = ROOT / "docs" / "reproductions" / "data" / "cristiano-2018-pcm-linearity"
FIGURE = ROOT / "docs" / "reproductions" / "cristiano-2018-pcm-linearity.png"
NAME = re.compile(
    r"^(?:fp(?P<const>c?)-lr(?P<fplr>[0-9.]+)"
    r"|lsp(?P<a>[0-9.]+)-msp(?P<b>[0-9.]+)-T(?P<t>[0-9]+)(?:-R(?P<r>[0-9.]+))?(?:-C(?P<c>[0-9]+))?(?:-N(?P<n>[0-9.]+))?)"
    r"-s(?P<seed>[0-9]+)$"
)


def tile_config(lsp_nl: float, msp_nl: float, transfer_every: int, refresh_threshold: float | None = None,
                transfer_columns: int | None = None, read_noise: float | None = None):
    base = get_preset("cristiano-2018-two-pair")
    extra = {} if refresh_threshold is None else {"refresh_threshold": refresh_threshold}
    if transfer_columns is not None:  # column-by-column transfer interleaved with training (Ambrogio 2018)
        extra.update(transfer_mode="columns", transfer_columns=transfer_columns)
    if read_noise is not None:  # noisy verify reads in closed-loop tuning, in weight units
        extra["clt_read_noise"] = read_noise
    cell = base.cell.replace(
        lsp=base.cell.lsp.replace(nonlinearity=lsp_nl), msp=base.cell.msp.replace(nonlinearity=msp_nl), transfer_every=transfer_every,
        **extra,
    )
    return base.replace(cell=cell)


def train_config(name: str, subset: int, epochs: int, lr: float) -> TrainConfig:
    m = NAME.match(name)
    if m is None:
        raise SystemExit(
            f"bad condition name {name!r}; expected fp-lr<lr>-s<seed>, fpc-lr<lr>-s<seed> or "
            "lsp<a>-msp<b>-T<t>[-R<r>][-C<k>][-N<noise>]-s<seed>"
        )
    common = dict(
        dataset="mnist", model="mlp", hidden=(250, 125), activation="sigmoid", epochs=epochs, batch_size=1,
        lr_milestones=(1,), lr_gamma=0.5, seed=int(m["seed"]), subset=subset,
    )
    if m["fplr"] is not None:
        if m["const"]:
            common["lr_milestones"] = ()
        return TrainConfig(preset="floating-point", lr=float(m["fplr"]), **common)
    tile = tile_config(
        float(m["a"]), float(m["b"]), int(m["t"]), None if m["r"] is None else float(m["r"]),
        None if m["c"] is None else int(m["c"]), None if m["n"] is None else float(m["n"]),
    )
    return TrainConfig(preset="cristiano-2018-two-pair", tile=tile, lr=lr, **common)


class OccupancyRecorder:
    """Wraps ``TwoPairPCM.transfer`` (the PCM cell's) to record the LSP state before whole-array transfers."""

    def __init__(self):
        self.records: list[dict] = []
        self._pending: dict[int, dict] = {}
        self._original = mc.TwoPairPCM.transfer

    def install(self) -> None:
        recorder = self

        def wrapped(cell, tile, idx, target=None, flip_polarity=None):
            if target is None and idx.numel() == cell._flat_index.numel():
                recorder._observe(tile)
            return recorder._original(cell, tile, idx, target, flip_polarity)

        mc.TwoPairPCM.transfer = wrapped

    def uninstall(self) -> None:
        mc.TwoPairPCM.transfer = self._original

    def _observe(self, tile) -> None:
        lsp, cell = tile.config.cell.lsp, tile.cell
        g = tile.weight.detach().reshape(-1)  # the tile's weight is the LSP pair (g⁺, g⁻)
        since = cell.pulses_since_reset[mc.LSP_P:mc.LSP_M + 1].reshape(-1)
        g_max = lsp.g_max_plane(cell.lsp_params).reshape(-1)
        used = since > 0
        frac = ((g - lsp.reset_conductance) / (g_max - lsp.reset_conductance))[used].clamp(0, 1)
        step = (1 - frac).pow(lsp.nonlinearity) if lsp.nonlinearity > 0 else torch.ones_like(frac)
        # Asymmetry of the two devices of a pair: relative steps of g⁺ and g⁻ (pairs with a pulsed device).
        gp, gm = tile.weight.detach()[0].reshape(-1), tile.weight.detach()[1].reshape(-1)
        params = cell.lsp_params.view(cell.lsp_params.shape[0], 2, -1)
        fp = ((gp - lsp.reset_conductance) / (lsp.g_max_plane(params[:, 0]) - lsp.reset_conductance)).clamp(0, 1)
        fm = ((gm - lsp.reset_conductance) / (lsp.g_max_plane(params[:, 1]) - lsp.reset_conductance)).clamp(0, 1)
        pair_used = (cell.pulses_since_reset[mc.LSP_P].reshape(-1) > 0) | (cell.pulses_since_reset[mc.LSP_M].reshape(-1) > 0)
        nl = lsp.nonlinearity
        asym = ((1 - fp).pow(nl) - (1 - fm).pow(nl)).abs()[pair_used] if nl > 0 else torch.zeros(int(pair_used.sum()))
        key = id(tile)
        entry = self._pending.setdefault(key, {"n": 0, "used": 0, "frac": [], "step": [], "asym": []})
        entry["n"] += g.numel()
        entry["used"] += int(used.sum())
        entry["frac"].append(frac)
        entry["step"].append(step)
        entry["asym"].append(asym)

    def flush(self, examples: int) -> None:
        """Combine the layers observed since the last flush into one record."""
        if not self._pending:
            return
        frac = torch.cat([t for e in self._pending.values() for t in e["frac"]])
        step = torch.cat([t for e in self._pending.values() for t in e["step"]])
        asym = torch.cat([t for e in self._pending.values() for t in e["asym"]])
        n = sum(e["n"] for e in self._pending.values())
        used = sum(e["used"] for e in self._pending.values())
        record = {"examples": examples, "devices": n, "pulsed_fraction": used / n}
        if frac.numel():
            q = torch.quantile(frac[torch.randperm(frac.numel(), generator=torch.Generator().manual_seed(0))[:200_000]],
                               torch.tensor([0.5, 0.9, 0.99]))
            record.update({
                "g_frac_mean": float(frac.mean()), "g_frac_q50": float(q[0]), "g_frac_q90": float(q[1]),
                "g_frac_q99": float(q[2]), "g_frac_above_half": float((frac > 0.5).float().mean()),
                "rel_step_mean": float(step.mean()), "rel_step_min_q01": float(step.kthvalue(max(1, step.numel() // 100)).values),
                "pair_step_asymmetry_mean": float(asym.mean()) if asym.numel() else 0.0,
            })
        self.records.append(record)
        self._pending.clear()


def run(names, subset: int, epochs: int, lr: float, data_dir: str) -> None:
    torch.set_num_threads(1)
    data = load_dataset("mnist", path=data_dir, subset=subset, seed=0)
    for name in names:
        out = RUNS / name
        results_path = out / "results.json"
        if results_path.exists() and json.loads(results_path.read_text()).get("status") == "completed":
            print(f"{name}: done already", flush=True)
            continue
        config = train_config(name, subset, epochs, lr)
        recorder = OccupancyRecorder()
        is_pcm = not name.startswith("fp")
        if is_pcm:
            recorder.install()
            # A whole-array transfer reaches the three layers within one example; one record
            # gathers the three (flushed once all three have been observed).
            original_update = AnalogTile.update
            counter = {"examples": 0}

            def update(tile, lr_, _orig=original_update):
                _orig(tile, lr_)
                if tile.out_features == 10:
                    counter["examples"] += 1
                if len(recorder._pending) == 3:
                    recorder.flush(counter["examples"])

            AnalogTile.update = update
        started = time.perf_counter()
        try:
            run_training(config, out, data=data, resume=(out / "checkpoint.pt").exists(), progress=False,
                         log=lambda s, n=name: print(f"{n}: {s}", flush=True))
        finally:
            if is_pcm:
                recorder.uninstall()
                AnalogTile.update = original_update
        if is_pcm:
            (out / "lsp_occupancy.json").write_text(json.dumps(recorder.records, indent=1) + "\n")
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)


def _group(name: str) -> str:
    return re.sub(r"-s[0-9]+$", "", name)


def summarize(runs: Path = RUNS, data: Path = DATA, figure: Path | None = FIGURE) -> None:
    data.mkdir(parents=True, exist_ok=True)
    groups: dict[str, dict] = {}
    for run_dir in sorted(runs.iterdir()):
        path = run_dir / "results.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        if results.get("status") != "completed":
            print(f"{run_dir.name}: not completed", file=sys.stderr)
            continue
        shutil.copyfile(path, data / f"{run_dir.name}.json")
        occ_path = run_dir / "lsp_occupancy.json"
        occ = None
        # Only whole-array transfers are recorded: a column-mode run's file is empty and not copied.
        all_records = json.loads(occ_path.read_text()) if occ_path.exists() else []
        if all_records:
            shutil.copyfile(occ_path, data / f"{run_dir.name}.lsp_occupancy.json")
            records = [r for r in all_records if "g_frac_mean" in r]
            if records:
                occ = {k: statistics.fmean(r[k] for r in records) for k in
                       ("g_frac_mean", "g_frac_q90", "g_frac_q99", "g_frac_above_half", "rel_step_mean", "pair_step_asymmetry_mean")}
        epochs = results["epochs"]
        cfg = results["config"]
        g = groups.setdefault(_group(run_dir.name), {"runs": {}})
        transfer = [c["transfer"] for c in results.get("counters", {}).values() if "transfer" in c]
        g["runs"][run_dir.name] = {
            "seed": cfg["seed"], "test_error": [e["test_error"] for e in epochs],
            "final_test_error": epochs[-1]["test_error"],
            "ms_per_sample": 1e3 * statistics.fmean(e["seconds_per_sample"] for e in epochs),
            "clt_failures": sum(t["clt_failures"] for t in transfer) if transfer else None,
            "lsp_saturations": sum(t["lsp_saturations"] for t in transfer) if transfer else None,
            # Counters of the column-wise transfer and noisy verify reads (absent in runs before them).
            **{key: sum(t.get(key, 0) for t in transfer) if transfer else None
               for key in ("clt_verify_reads", "clt_accepted_out_of_tolerance", "columns_transferred")},
            "lsp_occupancy_mean_over_transfers": occ,
        }
        g["setup"] = {"subset": cfg["subset"], "epochs": cfg["epochs"], "lr": cfg["lr"], "batch_size": cfg["batch_size"]}
    for g in groups.values():
        errs = [r["final_test_error"] for r in g["runs"].values()]
        g["n"] = len(errs)
        g["mean"] = statistics.fmean(errs)
        g["std"] = statistics.stdev(errs) if len(errs) > 1 else None
        g["min"], g["max"] = min(errs), max(errs)
        occs = [r["lsp_occupancy_mean_over_transfers"] for r in g["runs"].values() if r["lsp_occupancy_mean_over_transfers"]]
        if occs:
            g["lsp_occupancy"] = {k: statistics.fmean(o[k] for o in occs) for k in occs[0]}
    comparisons = compare(groups)
    if figure is not None:
        _plot(groups, figure)
    (data / "summary.json").write_text(json.dumps({"groups": groups, "comparisons": comparisons}, indent=2) + "\n")
    print("| condition | n | test error mean ± sd (min–max) | per seed | LSP g/Gmax mean, q99 | rel. step | ms/sample |")
    print("| --- | ---: | --- | --- | --- | --- | ---: |")
    for name, g in groups.items():
        sd = "" if g["std"] is None else f" ± {100 * g['std']:.2f}"
        per = ", ".join(f"{100 * r['final_test_error']:.2f}" for r in g["runs"].values())
        o = g.get("lsp_occupancy")
        occ = "" if not o else f"{o['g_frac_mean']:.3f}, {o['g_frac_q99']:.3f}"
        step = "" if not o else f"{o['rel_step_mean']:.3f}"
        ms = statistics.fmean(r["ms_per_sample"] for r in g["runs"].values())
        print(f"| {name} | {g['n']} | {100 * g['mean']:.2f}{sd} ({100 * g['min']:.2f}–{100 * g['max']:.2f}) | {per} | {occ} | {step} | {ms:.1f} |")
    print()
    print("| a | b | a − b (points) | SE | Welch p | resolved (p < 0.05) |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for c in comparisons:
        print(f"| {c['a']} | {c['b']} | {100 * c['difference']:+.2f} | {100 * c['se']:.2f} | {c['p']:.3f} | "
              f"{'yes' if c['resolved_p_below_0.05'] else 'no'} |")


def _plot(groups: dict, figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    fp = groups.get("fp-lr0.1")
    for ax in (ax1, ax2):
        if fp:
            ax.axhspan(100 * fp["min"], 100 * fp["max"], color="gray", alpha=0.25, label=f"floating point ({fp['n']} seeds)")
        ax.set_ylabel("final test error (%)")
        ax.grid(alpha=0.3)
    for pair, ax, label in (("lsp", ax1, "LSP nonlinearity (MSP 2)"), ("msp", ax2, "MSP nonlinearity (LSP 0.2)")):
        for t, marker in ((1000, "o"), (10000, "s")):
            pts = []
            for name, g in groups.items():
                m = NAME.match(name + "-s0")
                if m is None or m["a"] is None or m["r"] or m["c"] or m["n"] or int(m["t"]) != t:
                    continue
                if pair == "lsp" and float(m["b"]) == 2.0:
                    x = float(m["a"])
                elif pair == "msp" and float(m["a"]) == 0.2:
                    x = float(m["b"])
                else:
                    continue
                errs = [100 * r["final_test_error"] for r in g["runs"].values()]
                pts.append((x, errs))
            if not pts:
                continue
            pts.sort()
            xs = [p[0] for p in pts]
            ax.plot(xs, [statistics.fmean(p[1]) for p in pts], marker=marker, label=f"transfer every {t} (mean)")
            for x, errs in pts:
                ax.scatter([x] * len(errs), errs, color=ax.lines[-1].get_color(), s=10, alpha=0.5)
        if pair == "lsp" and "lsp4-msp2-T10000-R0.5" in groups:
            errs = [100 * r["final_test_error"] for r in groups["lsp4-msp2-T10000-R0.5"]["runs"].values()]
            ax.scatter([4.15] * len(errs), errs, marker="^", color="k", s=18, label="T 10000, transfer at 0.5 G_max")
        ax.set_xlabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("784-250-125-10 MNIST, 10,000 training images, 2 epochs, batch 1; dots: seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(figure)
    plt.close(fig)


#: (a, b): condition a against condition b (difference a − b of the mean final test error).
COMPARISONS = [
    ("lsp1-msp2-T1000", "lsp0.2-msp2-T1000"), ("lsp2-msp2-T1000", "lsp0.2-msp2-T1000"), ("lsp4-msp2-T1000", "lsp0.2-msp2-T1000"),
    ("lsp1-msp2-T10000", "lsp0.2-msp2-T10000"), ("lsp2-msp2-T10000", "lsp0.2-msp2-T10000"),
    ("lsp3-msp2-T10000", "lsp0.2-msp2-T10000"), ("lsp4-msp2-T10000", "lsp0.2-msp2-T10000"),
    ("lsp4-msp2-T10000-R0.5", "lsp0.2-msp2-T10000"), ("lsp4-msp2-T10000-R0.5", "lsp4-msp2-T10000"),
    ("lsp0.2-msp2-T10000-R0.5", "lsp0.2-msp2-T10000"), ("lsp4-msp2-T10000-R0.5", "lsp0.2-msp2-T10000-R0.5"),
    ("lsp4-msp2-T10000", "lsp4-msp2-T1000"), ("lsp0.2-msp2-T10000", "lsp0.2-msp2-T1000"),
    ("lsp0.2-msp0.2-T1000", "lsp0.2-msp2-T1000"), ("lsp0.2-msp4-T1000", "lsp0.2-msp2-T1000"),
    ("lsp0.2-msp2-T1000", "fp-lr0.1"), ("lsp0.2-msp2-T10000", "fp-lr0.1"),
    # Issue 18: column-by-column transfer and noisy verify reads against the whole-array transfer.
    ("lsp0.2-msp2-T1000-C8", "lsp0.2-msp2-T1000"),
    ("lsp0.2-msp2-T1000-C8-N0.02", "lsp0.2-msp2-T1000-C8"), ("lsp0.2-msp2-T1000-C8-N0.02", "lsp0.2-msp2-T1000"),
]


def compare(groups: dict) -> list[dict]:
    """Welch's t-test on the final test errors of each pair in :data:`COMPARISONS` (both with n >= 2)."""
    from scipy import stats

    out = []
    for a, b in COMPARISONS:
        if a not in groups or b not in groups or groups[a]["n"] < 2 or groups[b]["n"] < 2:
            continue
        ea = [r["final_test_error"] for r in groups[a]["runs"].values()]
        eb = [r["final_test_error"] for r in groups[b]["runs"].values()]
        t = stats.ttest_ind(ea, eb, equal_var=False)
        se = (statistics.variance(ea) / len(ea) + statistics.variance(eb) / len(eb)) ** 0.5
        out.append({"a": a, "b": b, "n_a": len(ea), "n_b": len(eb), "difference": statistics.fmean(ea) - statistics.fmean(eb),
                    "se": se, "welch_t": float(t.statistic), "p": float(t.pvalue), "resolved_p_below_0.05": bool(t.pvalue < 0.05)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "summarize"])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--subset", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate of the PCM runs (halved after epoch 1)")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--runs", default=str(RUNS), help="summarize: the run folders to read")
    parser.add_argument("--out-data", default=str(DATA), help="summarize: where the results and summary.json go")
    parser.add_argument("--figure", default=str(FIGURE), help="summarize: the linearity figure ('none': no figure)")
    args = parser.parse_args()
    if args.action == "run":
        run(args.names, args.subset, args.epochs, args.lr, args.data_dir)
    else:
        summarize(Path(args.runs), Path(args.out_data), None if args.figure == "none" else Path(args.figure))


if __name__ == "__main__":
    main()
