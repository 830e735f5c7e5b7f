"""The ``insitu`` command line."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from .config import ConfigError


def _int_list(ctx, param, value):
    if value is None or isinstance(value, tuple):
        return value
    value = value.strip()
    if value in ("", "none"):
        return ()
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 10,20, got '{value}'.") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="insitu")
def main() -> None:
    """Simulate the training of neural networks on analog and sparse hardware."""


@main.command()
@click.option("--preset", default="gokmen-vlasov-2016", show_default=True, help="Tile preset (see `insitu presets`).")
@click.option("--conv-preset", default=None, help="Preset of the convolutional layers of --model cnn-2017 (default: --preset); a comma-separated list gives one per convolution, K1,K2.")
@click.option("--dataset", default="mnist", show_default=True, help="mnist, fashion-mnist or digits.")
@click.option("--data-dir", default=None, help="Folder holding the dataset (else INSITU_DATA, the user cache, /usr/share/datasets).")
@click.option("--download", is_flag=True, help="Download the dataset into the user cache if it is not found.")
@click.option("--task", default="image", show_default=True, type=click.Choice(["image", "seq-mnist", "permuted-mnist", "char-lm"]), help="What is learned (docs/tasks.md): image classification of --dataset; sequence classification of --dataset read row by row (seq-mnist) or pixel by pixel in a fixed random order (permuted-mnist); next-character prediction on a text (char-lm). The sequence tasks train an AnalogLSTM (--model lstm, the default for them).")
@click.option("--model", default=None, help="Network: mlp or cnn-2017 (Gokmen, Onen & Haensch 2017; with --activation tanh) for --task image (default mlp); lstm for the sequence tasks.")
@click.option("--hidden", default=None, callback=_int_list, help="Hidden layer widths (default 256,128); --model lstm: its hidden size (default 128).")
@click.option("--layers", default=1, show_default=True, type=int, help="--model lstm: stacked LSTM layers.")
@click.option("--seq-len", default=100, show_default=True, type=int, help="--task char-lm: characters per training window.")
@click.option("--pixels-per-step", default=1, show_default=True, type=int, help="--task permuted-mnist: pixels per time step (a divisor of the image's pixel count).")
@click.option("--text", default=None, type=click.Path(exists=True, dir_okay=False), help="--task char-lm: a UTF-8 text file (.gz allowed) instead of the bundled public-domain Pride and Prejudice.")
@click.option("--activation", default="sigmoid", show_default=True, help="sigmoid, tanh or relu.")
@click.option("--epochs", default=30, show_default=True, type=int)
@click.option("--batch-size", default=1, show_default=True, type=int)
@click.option("--lr", default=0.01, show_default=True, type=float, help="Learning rate.")
@click.option("--lr-milestones", default="10,20", show_default=True, callback=_int_list, help="Epochs after which lr is multiplied by --lr-gamma.")
@click.option("--lr-gamma", default=0.5, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--subset", default=None, type=int, help="Train on this many random training samples.")
@click.option("--tile-config", default=None, type=click.Path(exists=True, dir_okay=False), help="YAML/JSON TileConfig replacing the preset's (start from `insitu presets NAME > file.yaml`).")
@click.option("--layer-tile-config", "layer_tile_config", multiple=True, type=click.Path(exists=True, dir_okay=False), help="--model mlp: a YAML/JSON TileConfig per layer, input side first, repeated once per layer (e.g. each layer's weight mapping); replaces the common config layer by layer.")
@click.option("--update-mode", default=None, type=click.Choice(["sequential", "summed", "batched"]), help="Override the preset's update mode.")
@click.option("--update", "update_algorithm", default=None, type=click.Choice(["sgd", "mbgd", "svd", "sbe"]), help="Update algorithm: rank-1 write per sample (sgd), full batch gradient (mbgd), its top singular pairs exact (svd) or streamed (sbe, Hoskins et al. 2019).")
@click.option("--rank", default=1, show_default=True, type=int, help="Singular pairs written per batch by --update svd/sbe.")
@click.option("--cell", default=None, help="Learning-rule cell on the preset's device (insitu.cells, docs/cells.md): sgd, tiki-taka, ttv2, c-ttv2, agad or mp, optionally with field overrides, e.g. 'c-ttv2:transfer_lr=10,max_pulses=5,in_chop_prob=0.01'.")
@click.option("--digital-bias", is_flag=True, help="Keep biases digital instead of on the array.")
@click.option("--pipeline", is_flag=True, help="Emulate a layer pipeline: each layer's forward pass uses its weights of 2(L-l)+1 updates ago (insitu.pipeline; docs/pipeline.md).")
@click.option("--per-tile-update", is_flag=True, help="Update each layer's tile on its own instead of fusing the layers' pulse updates (slower; the same update in distribution; reproduces runs made before the fused update draw for draw).")
@click.option("--threads", default=None, type=int, help="CPU threads for PyTorch (default: PyTorch's choice).")
@click.option("--backend", default=None, type=click.Choice(["auto", "torch", "compiled"]), help="Pulse-update backend: compiled numba kernels on CPU (auto), or the PyTorch reference (torch; what runs made before the compiled engine used). Default: the environment variable INSITU_BACKEND, else auto.")
@click.option("--out", "out_dir", default=None, help="Run folder (default runs/<preset>-<dataset>-b<batch>-s<seed>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--sizes", default=None, help="Pre-defined sparse MLP (Dey et al. 2017): neurons per layer, e.g. 800,100,10; see `insitu sparse train`.")
@click.option("--out-degree", default=None, help="Sparse MLP: d_out per junction, e.g. 50,10 (selects `insitu sparse train`).")
@click.option("--pattern", default=None, type=click.Choice(["structured", "clash-free", "random"]), help="Sparse MLP: connection pattern.")
@click.option("--z", default=None, help="Sparse MLP: edges per clock per junction (clash-free patterns).")
@click.option("--fixed-point", default=None, help="Sparse MLP: TOTAL:INTEGER bits of fixed-point training, e.g. 12:3.")
def train(**opts) -> None:
    """Train a network and record test error per epoch (results.json, checkpoint.pt, test_error.png).

    With --out-degree, --sizes, --pattern, --z or --fixed-point it trains a pre-defined sparse MLP
    instead, exactly as `insitu sparse train` (which has the full set of sparse options).
    """
    sparse_options = ("sizes", "out_degree", "pattern", "z", "fixed_point")
    if any(opts[name] is not None for name in sparse_options):
        _train_sparse_from_train(opts)
        return

    from .checkpoint import CheckpointError, LockedError
    from .data import DatasetError
    from .training import TrainConfig, TrainingDiverged, run_training

    if opts["threads"] is not None:
        if opts["threads"] < 1:
            raise click.BadParameter("must be >= 1.", param_hint="--threads")
        from .update.kernels import set_threads

        set_threads(opts["threads"])  # PyTorch's and the compiled kernels' threads
    from .update.kernels import set_backend

    try:
        # Without --backend the choice stays as INSITU_BACKEND set it at import (a default of
        # "auto" here once overrode the variable, so scripts that exported it ran compiled).
        if opts["backend"] is not None:
            set_backend(opts["backend"])
    except (ValueError, RuntimeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--backend") from None
    try:
        tile = None
        if opts["tile_config"] is not None:
            from .tile import TileConfig

            tile = TileConfig.from_file(opts["tile_config"])
        layer_tiles = None
        if opts["layer_tile_config"]:
            from .tile import TileConfig

            layer_tiles = tuple(TileConfig.from_file(path) for path in opts["layer_tile_config"])
        sequence_task = opts["task"] != "image"
        model = opts["model"] or ("lstm" if sequence_task else "mlp")
        hidden = opts["hidden"] if opts["hidden"] is not None else ((128,) if model == "lstm" else (256, 128))
        config = TrainConfig(
            preset=opts["preset"],
            conv_preset=opts["conv_preset"],
            dataset=opts["dataset"],
            model=model,
            hidden=hidden,
            task=opts["task"],
            layers=opts["layers"],
            seq_len=opts["seq_len"],
            pixels_per_step=opts["pixels_per_step"],
            text=opts["text"],
            activation=opts["activation"],
            epochs=opts["epochs"],
            batch_size=opts["batch_size"],
            lr=opts["lr"],
            lr_milestones=opts["lr_milestones"],
            lr_gamma=opts["lr_gamma"],
            seed=opts["seed"],
            subset=opts["subset"],
            update_mode=opts["update_mode"],
            update_algorithm=opts["update_algorithm"],
            rank=opts["rank"],
            cell=opts["cell"],
            pipeline=opts["pipeline"],
            bias_on_array=not opts["digital_bias"],
            tile=tile,
            layer_tiles=layer_tiles,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    what = {"image": config.dataset, "char-lm": "char-lm"}.get(config.task, f"{config.task}-{config.dataset}")
    out_dir = opts["out_dir"] or f"runs/{config.preset}-{what}-b{config.batch_size}-s{config.seed}"
    click.echo(f"insitu train: {config.preset} on {what} -> {out_dir}")
    # SIGTERM (a plain `kill`, a batch system's stop) ends the run as Ctrl-C does: results.json
    # says "interrupted" and the last checkpoint stays, instead of a run that seems still running.
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = run_training(
            config, out_dir, data_dir=opts["data_dir"], download=opts["download"], resume=opts["resume"],
            progress=not opts["no_progress"], log=click.echo, fused_update=not opts["per_tile_update"],
        )
    except (DatasetError, ConfigError, FileExistsError, FileNotFoundError, TrainingDiverged, CheckpointError, LockedError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    last = results["epochs"][-1]
    if "bits_per_char" in last:
        score = f"test {last['bits_per_char']:.3f} bits/char (accuracy {100 * last['accuracy']:.2f}%)"
    else:
        score = f"test error {100 * last['test_error']:.2f}%"
    click.echo(f"done: {score} after {last['epoch']} epochs; results in {Path(out_dir) / 'results.json'}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _train_sparse_from_train(opts: dict) -> None:
    """`insitu train --out-degree ...`: hand the run to `insitu sparse train` (the issue's spelling)."""
    ctx = click.get_current_context()
    if opts["model"] not in (None, "mlp"):
        raise click.UsageError(f"--model {opts['model']}: a pre-defined sparse network is an mlp (--model mlp --sizes ...).")
    analog_only = ("preset", "conv_preset", "download", "hidden", "lr_milestones", "lr_gamma", "tile_config", "layer_tile_config",
                   "update_mode", "update_algorithm", "rank", "cell", "digital_bias", "resume", "per_tile_update", "backend",
                   "task", "layers", "seq_len", "pixels_per_step", "text")
    given = [f"--{name.replace('_', '-')}" for name in analog_only
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} apply to analog training; a sparse MLP (--out-degree/--sizes/--pattern/--z/--fixed-point) "
            "is trained by `insitu sparse train` (for a sparse analog crossbar use insitu.sparse.mask_analog_linear)."
        )
    mapped = {name: opts[name] for name in ("dataset", "data_dir", "epochs", "batch_size", "lr", "seed", "subset", "pattern", "fixed_point")
              if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT and opts[name] is not None}
    for name in ("sizes", "z"):
        if opts[name] is not None:
            mapped[name] = _int_list(None, None, opts[name])
    if opts["out_degree"] is not None:
        mapped["out_degree"] = opts["out_degree"]
    if ctx.get_parameter_source("activation") is not click.core.ParameterSource.DEFAULT:
        mapped["activation"] = opts["activation"]
    if opts["pipeline"]:
        mapped["pipeline"] = True
    if opts["threads"] is not None:
        mapped["threads"] = opts["threads"]
    if opts["out_dir"] is not None:
        Path(opts["out_dir"]).mkdir(parents=True, exist_ok=True)
        mapped["out_path"] = str(Path(opts["out_dir"]) / "results.json")
    ctx.invoke(sparse_train, **mapped)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--label", "labels", multiple=True, help="Legend label per run (default: folder name).")
@click.option("--out", "out_path", default="comparison.png", show_default=True, help="PNG to write.")
@click.option("--title", default="", help="Figure title.")
def compare(runs, labels, out_path, title) -> None:
    """Plot test error per epoch of several run folders and print a Markdown table."""
    import json

    from .training import plot_runs

    if labels and len(labels) != len(runs):
        raise click.UsageError(f"give one --label per run: {len(runs)} runs, {len(labels)} labels.")
    loaded = []
    for i, run in enumerate(runs):
        results_path = Path(run) / "results.json"
        if not results_path.exists():
            raise click.UsageError(f"{run} has no results.json; is it a run folder of `insitu train`?")
        loaded.append((labels[i] if labels else Path(run).name, json.loads(results_path.read_text())))
    plot_runs(Path(out_path), loaded, title)
    click.echo("| run | epochs | final test error | best test error | ms/sample |")
    click.echo("| --- | ---: | ---: | ---: | ---: |")
    for label, results in loaded:
        epochs = results["epochs"]
        if not epochs:
            click.echo(f"| {label} | 0 | – | – | – |")
            continue
        best = min(e["test_error"] for e in epochs)
        ms = 1e3 * sum(e["train_seconds"] for e in epochs) / sum(results["dataset"]["train"] for _ in epochs)
        click.echo(f"| {label} | {len(epochs)} | {100 * epochs[-1]['test_error']:.2f}% | {100 * best:.2f}% | {ms:.3f} |")
    click.echo(f"figure: {out_path}")


@main.command()
@click.argument("name", required=False)
@click.option("--format", "fmt", default="yaml", type=click.Choice(["yaml", "json"]), show_default=True)
def presets(name: str | None, fmt: str) -> None:
    """List the presets, or print the full config of one."""
    from .presets import PRESETS, get_preset

    if name is None:
        for key in sorted(PRESETS):
            doc = (PRESETS[key].__doc__ or "").strip().splitlines()[0]
            click.echo(f"{key:30s} {doc}")
        return
    try:
        config = get_preset(name)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(config.to_yaml() if fmt == "yaml" else config.to_json())


@main.group()
def device() -> None:
    """Look at a device family: its pulse response (plot), fit one to measured data (fit), or
    measure one into a jump table (table)."""


def _float_pair(ctx, param, value):
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected two comma-separated numbers such as -1,1, got '{value}'.") from None
    if not hi > lo:
        raise click.BadParameter(f"the second number must be larger than the first (got '{value}').")
    return lo, hi


@device.command("plot")
@click.argument("preset_or_file")
@click.option("--out", "out_path", default="response.png", show_default=True, help="PNG to write.")
@click.option("--devices", default=5, show_default=True, type=click.IntRange(1, 50), help="Devices drawn (device-to-device variation).")
@click.option("--pulses", default=None, type=click.IntRange(1, 100000), help="Pulses per up or down train (default: the number of states, (w_max - w_min) / nominal step).")
@click.option("--cycles", default=2, show_default=True, type=click.IntRange(1, 20), help="Up-then-down train pairs.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--no-noise", is_flag=True, help="Leave out the cycle-to-cycle noise.")
@click.option("--title", default=None, help="Figure title (default: the preset or file and the family).")
def device_plot(preset_or_file, out_path, devices, pulses, cycles, seed, no_noise, title) -> None:
    """Plot the pulse response of PRESET_OR_FILE (a preset name, or a TileConfig/DeviceConfig YAML/JSON).

    (a) weight against pulse number for several drawn devices under up then down pulse trains,
    with cycle-to-cycle noise; (b) the step of one up and one down pulse against the weight for the
    mean device, with its symmetry point. The pulses go through the device model training uses.
    """
    from .devices.response import plot_response

    try:
        info = plot_response(preset_or_file, out_path, n_devices=devices, pulses=pulses, seed=seed, cycles=cycles,
                             noise=not no_noise, title=title)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    sp = info["symmetry_point"]
    click.echo(f"{info['label']}: {info['family']}, nominal step {info['nominal_step']:.4g}, {info['pulses']} pulses a train, "
               f"symmetry point {'none' if sp is None else f'{sp:.4g}'}")
    click.echo(f"figure: {out_path}")


@device.command("fit")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--family", default="auto", show_default=True,
              type=click.Choice(["soft-bounds", "linear-step", "constant-step", "exp-step", "pow-step", "piecewise", "auto"]),
              help="Device family to fit; auto fits all and picks the lowest error (the simplest within 2 %).")
@click.option("--out", "out_path", default="tile.yaml", show_default=True, help="TileConfig YAML to write (for insitu train --tile-config).")
@click.option("--w-range", default=None, callback=_float_pair, help="Weight range the conductance range maps to (default -1,1; a 'weight' column is used as given).")
@click.option("--g-range", default=None, callback=_float_pair, help="Conductance range mapped onto --w-range (default: the observed minimum and maximum).")
@click.option("--nodes", default=11, show_default=True, type=click.IntRange(2, 101), help="Table nodes of --family piecewise.")
def device_fit(data, family, out_path, w_range, g_range, nodes) -> None:
    """Fit a device family to DATA (CSV: pulse, conductance or weight, optional direction +1/-1).

    Least squares on the increment of every single pulse against the weight before it; writes the
    2016 preset's tile (gokmen-vlasov-2016: IO and update) with the fitted mean device.
    """
    from .devices.fit import fit_increments, prepare_increments, read_pulse_csv

    try:
        pulses = read_pulse_csv(data)
        inc = prepare_increments(pulses, w_range, g_range)
        fit = fit_increments(inc, family, nodes)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    n_up, n_down = int((inc.sign > 0).sum()), int((inc.sign < 0).sum())
    click.echo(f"data: {data}, {len(pulses.pulse)} rows; fitted {n_up} up and {n_down} down increments "
               f"({inc.excluded} left out: clipped at a bound or spanning several pulses); directions: {inc.directions}")
    click.echo(f"mapping: {inc.mapping}")
    if fit.candidates:
        click.echo("| family | RMS of increments | relative to mean abs(dw) | c2c |")
        click.echo("| --- | ---: | ---: | ---: |")
        for f in fit.candidates:
            if f.device is None:
                click.echo(f"| {f.family} | failed | {f.error} | |")
            else:
                mark = " (chosen)" if f.family == fit.family else ""
                click.echo(f"| {f.family}{mark} | {f.rms:.4g} | {100 * f.relative_rms:.2f} % | {f.c2c:.3f} |")
    states = (fit.device.w_max - fit.device.w_min) / fit.device.nominal_step
    click.echo(f"fitted {fit.family} ({type(fit.device).__name__}), {states:.0f} states:")
    click.echo(fit.summary())
    click.echo(f"fit error: RMS of increments {fit.rms:.4g} ({100 * fit.relative_rms:.2f} % of the mean abs(dw)); "
               f"cycle-to-cycle spread from the residuals {fit.c2c:.3f}")
    fit.tile_config().to_yaml(out_path)
    click.echo(f"wrote {out_path}: the gokmen-vlasov-2016 tile with the fitted device (device-to-device spreads 0: "
               f"one device's data cannot measure them). Train: insitu train --tile-config {out_path}")


@device.command("table")
@click.argument("preset_or_file")
@click.option("--out", "out_path", default="jump_table.csv", show_default=True, help="CSV to write (g_low,g_high,mean,std; JumpTableDevice.from_file reads it).")
@click.option("--bins", default=8, show_default=True, type=click.IntRange(1, 1000), help="Conductance bins of the table.")
@click.option("--g-max", default=1.0, show_default=True, type=float, help="Conductance of the device's upper bound in the table.")
@click.option("--trains", default=20, show_default=True, type=click.IntRange(1, 100000), help="SET trains from RESET.")
@click.option("--pulses", default=None, type=click.IntRange(1, 100000), help="Pulses per train (default: twice the number of states).")
@click.option("--seed", default=0, show_default=True, type=int)
def device_table(preset_or_file, out_path, bins, g_max, trains, pulses, seed) -> None:
    """Measure the device of PRESET_OR_FILE into a SET-only jump table, as one measures a device.

    SET trains from RESET on the mean device with its pulse-to-pulse noise; each bin's mean and
    spread of the conductance change (insitu.devices.jump_table.jump_table_from_device). A pair
    device (e.g. a PCM pair preset) is measured through its member device.
    """
    import csv

    from .devices.jump_table import jump_table_from_device
    from .devices.response import load_device_config

    if not g_max > 0:
        raise click.BadParameter(f"--g-max must be > 0, got {g_max}.")
    try:
        device, label = load_device_config(preset_or_file)
        member = getattr(device, "device", None)
        if member is not None and hasattr(member, "w_max"):  # a pair: measure its member
            device, label = member, f"{label}, member {type(member).__name__}"
        table = jump_table_from_device(device, bins=bins, g_scale=g_max, trains=trains, pulses=pulses, seed=seed)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    with open(out_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["g_low", "g_high", "mean", "std"])
        for k in range(bins):
            writer.writerow([repr(table.bin_edges[k]), repr(table.bin_edges[k + 1]), repr(table.mean[k]), repr(table.std[k])])
    click.echo(f"{label}: {bins} bins on [0, {g_max:g}], {trains} SET trains from RESET")
    click.echo("| g_low | g_high | mean step | spread |")
    click.echo("| ---: | ---: | ---: | ---: |")
    for k in range(bins):
        click.echo(f"| {table.bin_edges[k]:.4g} | {table.bin_edges[k + 1]:.4g} | {table.mean[k]:.4g} | {table.std[k]:.4g} |")
    click.echo(f"wrote {out_path} (device-to-device gain spread {table.gain_dtod:g}: pass it as gain_dtod when you load the table)")


@main.group()
def hardware() -> None:
    """Time, energy and area of training on RPU, PCM, edge-processing or digital hardware (insitu.hardware)."""


def _parse_value(text: str):
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:  # YAML 1.1 reads 5e-12 (no dot) as a string; it is meant as a number
            return float(value)
        except ValueError:
            pass
    return value


@hardware.command("estimate")
@click.option("--model", default="mlp", show_default=True,
              help="mlp (widths from --inputs/--hidden/--outputs, never allocated), cnn-2017, or a named network: "
                   "mlp-2016, mlp-2018, fc-1b (60 layers of 4096x4096, ~1e9 weights).")
@click.option("--hidden", default="256,128", show_default=True, callback=_int_list, help="Hidden widths of --model mlp.")
@click.option("--inputs", default=784, show_default=True, type=int, help="Input width of --model mlp.")
@click.option("--outputs", default=10, show_default=True, type=int, help="Output width of --model mlp.")
@click.option("--digital-bias", is_flag=True, help="--model mlp: biases are not an array column.")
@click.option("--hardware", "hardware_names", default="rpu", show_default=True,
              help="Comma-separated: rpu, pcm, edge, gpu, cpu.")
@click.option("--compare", default=None, is_flag=False, flag_value="rpu,pcm,gpu,cpu", metavar="[HW,HW,...]",
              help="Put several side by side: alone rpu,pcm,gpu,cpu, or a list such as --compare rpu,pcm,gpu,edge.")
@click.option("--baseline", default=None, help="Add speed-up and energy-saving rows relative to this hardware (e.g. gpu).")
@click.option("--set", "overrides", multiple=True, metavar="HW.PARAM=VALUE",
              help="Change an assumption, e.g. --set rpu.bl=20 --set rpu.periphery.adc_energy_j=5e-12 (repeatable).")
@click.option("--pipeline", is_flag=True, help="Pipeline the layers of rpu/pcm (time per example = slowest layer).")
@click.option("--examples", default=60000, show_default=True, type=int, help="Training examples per epoch.")
@click.option("--measure", is_flag=True, help="Time a PyTorch SGD step (batch 1) on this machine's GPU (for --hardware gpu) or CPU (for cpu) instead of using the peak rate.")
@click.option("--threads", default=None, type=int, help="CPU threads for --measure (default: PyTorch's choice).")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="Write all estimates to this JSON file.")
@click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False), help="Write a PNG of the time and energy breakdown.")
def hardware_estimate(model, hidden, inputs, outputs, digital_bias, hardware_names, compare, baseline, overrides,
                      pipeline, examples, measure, threads, json_path, plot_path) -> None:
    """Estimate time, energy and area of training a network, per layer and per component."""
    import json

    from . import hardware as hw

    names = [n.strip() for n in (compare or hardware_names).split(",") if n.strip()]
    if not names:
        raise click.UsageError("give at least one --hardware (rpu, pcm, edge, gpu, cpu).")
    # Checked before any work, so that a typo does not end in a traceback after the estimate.
    if baseline is not None and baseline not in names:
        raise click.UsageError(f"--baseline {baseline} is not among the hardware estimated ({', '.join(names)}); add it to --hardware or --compare.")
    if plot_path is not None:
        from matplotlib.backend_bases import FigureCanvasBase

        formats = FigureCanvasBase.get_supported_filetypes()
        if Path(plot_path).suffix.lower().lstrip(".") not in formats:
            raise click.UsageError(f"--plot {plot_path}: name the figure with one of the suffixes {', '.join('.' + f for f in sorted(formats))} (e.g. .png).")
    if model == "cnn-2017" and inputs != 784:
        raise click.UsageError("--inputs applies to --model mlp; cnn-2017 is the network of 28x28 images (784 inputs).")
    try:
        built = None
        if model == "mlp":
            sizes = (inputs, *hidden, outputs)
            network = hw.network_from_mlp(sizes, bias=not digital_bias)
        elif model == "cnn-2017":
            from .models import cnn_2017

            built, input_shape = cnn_2017(), (inputs,)
            network = hw.network_from_model(built, input_shape, name="cnn-2017")
        else:
            network = hw.named_network(model)
        configs = {}
        for name in names:
            configs[name] = hw.get_estimator(name).config
        for item in overrides:
            key, sep, value = item.partition("=")
            target, dot, path = key.partition(".")
            if not sep or not dot:
                raise click.UsageError(f"--set expects HW.PARAM=VALUE such as rpu.bl=20, got '{item}'.")
            if target not in configs:
                raise click.UsageError(f"--set {item}: '{target}' is not among the hardware estimated ({names}).")
            configs[target] = hw.with_parameter(configs[target], path, _parse_value(value))
        if pipeline:
            for name, config in configs.items():
                if hasattr(config, "pipeline_layers"):
                    configs[name] = config.replace(pipeline_layers=True)
        if measure:
            import torch

            if threads is not None:
                torch.set_num_threads(threads)
            device, target = ("cuda", "gpu") if torch.cuda.is_available() else ("cpu", "cpu")
            if target not in configs:
                raise click.UsageError(f"--measure times a step on this machine's {device}: add --hardware {target}.")
            if model not in ("mlp", "cnn-2017"):
                raise click.UsageError(f"--measure needs a model small enough to build here (mlp, cnn-2017), not '{model}'.")
            if built is None:
                from .models import mlp as build_mlp

                built = build_mlp((inputs, *hidden, outputs))
            seconds = hw.measure_time_per_example(built, (inputs,), steps=100, warmup=10, device=device)
            click.echo(f"measured on this machine's {device} with PyTorch ({torch.get_num_threads()} threads): "
                       f"{seconds * 1e6:.1f} µs per example (batch 1)")
            configs[target] = configs[target].replace(
                measured_time_per_example_s=seconds, label=f"measured here on {device} ({configs[target].power_w:g} W assumed)")
        estimates = [(name, hw.get_estimator(name, configs[name]).estimate(network, examples)) for name in names]
    except (ConfigError, hw.HardwareMappingError) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"network: {network.name}, {network.weights:,} weights, {network.macs_per_example():,} MACs per example (forward)")
    click.echo("")
    click.echo(hw.report.summary_table(estimates, baseline))
    if len(estimates) == 1:
        click.echo("")
        click.echo(hw.report.layer_table(estimates[0][1]))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps({name: est.to_dict() for name, est in estimates}, indent=2) + "\n")
        click.echo(f"json: {json_path}")
    if plot_path:
        hw.report.plot_breakdown(plot_path, estimates, title=network.name)
        click.echo(f"figure: {plot_path}")


# -- pre-defined sparsity (Dey et al. 2017) ---------------------------------------------------


@main.group()
def sparse() -> None:
    """Pre-defined sparse networks and the edge-processing accelerator (Dey et al. 2017)."""


@sparse.command("train")
@click.option("--dataset", default="mnist", show_default=True)
@click.option("--data-dir", default=None, help="Folder holding the dataset.")
@click.option("--sizes", default="800,100,10", show_default=True, callback=_int_list, help="Neurons per layer; the input is zero-padded to sizes[0].")
@click.option("--out-degree", default="50,10", show_default=True, help="d_out per junction, or 'dense' for nn.Linear layers.")
@click.option("--pattern", default="structured", show_default=True, type=click.Choice(["structured", "clash-free", "random"]))
@click.option("--z", default=None, callback=_int_list, help="Edges per clock per junction (clash-free patterns).")
@click.option("--interleaver-type", default=1, show_default=True, type=click.IntRange(1, 3))
@click.option("--dither", is_flag=True, help="Memory dither in clash-free patterns.")
@click.option("--activation", default="relu", show_default=True, type=click.Choice(["relu", "sigmoid", "tanh"]))
@click.option("--epochs", default=5, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "sgd"]))
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Learning rate in floating point.")
@click.option("--weight-decay", default=8e-5, show_default=True, type=float)
@click.option("--fixed-point", default=None, help="TOTAL:INTEGER bits, e.g. 12:3, for weights, activations, errors and updates.")
@click.option("--lr-exponent", default=6, show_default=True, type=int, help="Fixed point: learning rate 2^-k.")
@click.option("--update-rounding", default="nearest", show_default=True, type=click.Choice(["nearest", "stochastic"]), help="Fixed point: rounding of the weight updates (stochastic keeps updates below one LSB on average).")
@click.option("--weight-format", default=None, help="Fixed point: TOTAL:INTEGER of the weights (default --fixed-point).")
@click.option("--activation-format", default=None, help="Fixed point: TOTAL:INTEGER of the activations.")
@click.option("--error-format", default=None, help="Fixed point: TOTAL:INTEGER of the errors.")
@click.option("--update-format", default=None, help="Fixed point: TOTAL:INTEGER of the updates.")
@click.option("--output", default="softmax", show_default=True, type=click.Choice(["softmax", "sigmoid"]), help="Output stage: softmax + cross-entropy, or sigmoid with δ = a − y (the RTL's).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--subset", default=None, type=int, help="Train on this many random training samples.")
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--out", "out_path", default=None, help="Write the results JSON here.")
@click.option("--run-dir", default=None, help="Run folder of the common training loop (checkpoint every epoch, results.json); without it nothing but --out is kept.")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint (only --epochs may grow).")
@click.option("--pipeline", is_flag=True, help="Emulate the junction pipeline: each junction's forward pass uses its weights of 2(L-l)+1 optimizer steps ago (insitu.pipeline).")
def sparse_train(**opts) -> None:
    """Train a sparse MLP (float or fixed point) and print the test accuracy per epoch."""
    import json

    import torch

    from .data import DatasetError, load_dataset
    from .sparse.training import SparseTrainConfig, train_sparse

    torch.set_num_threads(max(1, opts["threads"]))
    degrees = None if opts["out_degree"].strip() == "dense" else _int_list(None, None, opts["out_degree"])
    try:
        config = SparseTrainConfig(
            dataset=opts["dataset"], sizes=opts["sizes"], out_degrees=degrees, pattern=opts["pattern"], z=opts["z"] or None,
            interleaver_type=opts["interleaver_type"], dither=opts["dither"], activation=opts["activation"],
            epochs=opts["epochs"], batch_size=opts["batch_size"], optimizer=opts["optimizer"], lr=opts["lr"],
            weight_decay=opts["weight_decay"], fixed_point=opts["fixed_point"], learning_rate_exponent=opts["lr_exponent"],
            seed=opts["seed"], subset=opts["subset"], output=opts["output"], update_rounding=opts["update_rounding"],
            weight_format=opts["weight_format"], activation_format=opts["activation_format"],
            error_format=opts["error_format"], update_format=opts["update_format"], pipeline=opts["pipeline"],
        )
        data = load_dataset(config.dataset, path=opts["data_dir"], subset=config.subset, seed=config.seed)
        results = train_sparse(config, data, log=click.echo, out_dir=opts["run_dir"], resume=opts["resume"])
    except (ConfigError, DatasetError, ValueError, FileExistsError, FileNotFoundError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"network density {100 * results['network_density']:.2f}% ({sum(results['edges'])} of {results['dense_edges']} edges); "
               f"final test accuracy {100 * results['final_test_accuracy']:.2f}%")
    if opts["out_path"]:
        Path(opts["out_path"]).write_text(json.dumps(results, indent=2) + "\n")
        click.echo(f"results in {opts['out_path']}")


@sparse.command("hardware")
@click.option("--sizes", default="800,100,10", show_default=True, callback=_int_list, help="Neurons per layer.")
@click.option("--out-degree", default="50,10", show_default=True, callback=_int_list, help="d_out per junction.")
@click.option("--z", default=None, callback=_int_list, help="Edges per clock per junction (equal |W_i|/z_i).")
@click.option("--clocks", default=None, type=int, help="Clocks per junction cycle C instead of --z (z_i = |W_i|/C).")
@click.option("--clock-mhz", default=100.0, show_default=True, type=float)
@click.option("--overhead", default=2, show_default=True, type=int, help="Extra clocks per junction cycle.")
@click.option("--word-bits", default=12, show_default=True, type=int)
@click.option("--measure", is_flag=True, help="Also time a PyTorch training step of the same network here (one thread).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def sparse_hardware(sizes, out_degree, z, clocks, clock_mhz, overhead, word_bits, measure, as_json) -> None:
    """Model the edge-processing accelerator: clocks, throughput, multipliers, memory, vs dense."""
    import json

    from .sparse.hardware import EdgeHardwareConfig, estimate, measure_torch_step

    try:
        config = EdgeHardwareConfig(clock_hz=clock_mhz * 1e6, overhead_clocks=overhead, word_bits=word_bits)
        est = estimate(sizes, out_degree, config, z=z or None, clocks_per_cycle=clocks)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    result = est.to_dict()
    if measure:
        import torch

        torch.set_num_threads(1)
        result["measured_torch"] = [measure_torch_step(sizes, out_degree, batch_size=b, steps=100) for b in (1, 256)]
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo("| junction | N_in -> N_out | d_out | d_in | edges | density | z | clocks | mult FF/BP/UP | adders | memory bits |")
    click.echo("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for i, j in enumerate(est.junctions, 1):
        click.echo(f"| {i} | {j.n_in} -> {j.n_out} | {j.out_degree} | {j.in_degree} | {j.edges} | {100 * j.density:.1f}% | {j.z} | "
                   f"{j.clocks_per_cycle} | {j.ff_multipliers}/{j.bp_multipliers}/{j.up_multipliers} | {j.adders} | {j.memory_bits} |")
    click.echo(f"network density {100 * est.network_density:.2f}% (complexity reduction {est.complexity_reduction:.2f}x); "
               f"{est.multipliers} multipliers, {est.adders} adders, {est.memory_bits / 8e3:.1f} kB of memory")
    click.echo(f"throughput {est.examples_per_second:,.0f} examples/s at {clock_mhz:g} MHz ({est.clocks_per_example} clocks/example)")
    click.echo(f"dense on the same multipliers: {est.dense_clocks_per_cycle + overhead} clocks/example, "
               f"{est.dense_examples_per_second:,.0f} examples/s; modelled speed-up {est.speedup_vs_dense:.2f}x")
    for m in result.get("measured_torch", []):
        click.echo(f"PyTorch here, batch {m['batch_size']}: {m['examples_per_second']:,.0f} examples/s "
                   f"(model / measured = {est.examples_per_second / m['examples_per_second']:.1f}x)")

# -- insitu sweep ---------------------------------------------------------------------------------
# The spelling: `insitu hardware edge ...` is the same command as `insitu sparse hardware ...`.
hardware.add_command(sparse_hardware, name="edge")


@main.group()
def sweep() -> None:
    """Device-requirement studies: many trainings, one results store, figures and a report."""


def _float_list(text: str) -> tuple:
    from .sweep.study import _as_number

    return tuple(_as_number(v.strip()) for v in text.split(",") if v.strip())


def _store_path(target: str) -> Path:
    """A study folder (holding study.sqlite) or the store file itself."""
    from .sweep import store_paths

    path = Path(target)
    return store_paths(path)[0] if path.is_dir() else path


@sweep.command("run")
@click.argument("study_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", default=None, help="Study folder: study.sqlite and runs/ (default sweeps/<study name>).")
@click.option("--workers", default=None, type=int, help="Points trained at a time (default: cores // threads; 0: in this process).")
@click.option("--threads", default=None, type=int, help="Torch threads per point (default 1).")
@click.option("--address", default=None, help="Ray cluster address ('auto', 'ray://host:10001', or 'local'); default: local process pool.")
@click.option("--data-dir", default=None, help="Folder holding the datasets.")
@click.option("--extend", is_flag=True, help="The study file changed: add its new points to the existing store (finished points are kept).")
@click.option(
    "--lockstep", default=1, show_default=True, type=int,
    help="Train up to this many points together as replicas in lockstep (points differing only in seed and "
    "device/IO numbers; MLPs, sgd update, learning-rule cells shared by the group). 1: every point alone.",
)
@click.option("--param", default=None, help="Without STUDY_FILE: the one field to sweep (dotted path, e.g. tile.device.dw_min).")
@click.option("--values", "values_text", default=None, help="With --param: comma-separated values.")
@click.option("--range", "range_text", default=None, help="With --param: START,STOP,NUM (linear; add --log for a log range).")
@click.option("--log", "log_scale", is_flag=True, help="With --range: geometric spacing.")
@click.option("--preset", default="gokmen-vlasov-2016", show_default=True, help="Without STUDY_FILE: base preset.")
@click.option("--dataset", default="digits", show_default=True, help="Without STUDY_FILE: dataset.")
@click.option("--hidden", default="256,128", show_default=True, callback=_int_list, help="Without STUDY_FILE: hidden widths.")
@click.option("--epochs", default=1, show_default=True, type=int, help="Without STUDY_FILE: epochs per point.")
@click.option("--subset", default=None, type=int, help="Without STUDY_FILE: training samples per point.")
@click.option("--lr", default=0.01, show_default=True, type=float, help="Without STUDY_FILE: learning rate.")
@click.option("--seeds", default="0", show_default=True, callback=_int_list, help="Without STUDY_FILE: comma-separated seeds.")
@click.option("--name", default=None, help="Without STUDY_FILE: study name (default: the parameter).")
def sweep_run(study_file, out_dir, workers, threads, address, data_dir, extend, lockstep, param, values_text, range_text, log_scale, **quick) -> None:
    """Run a study (STUDY_FILE, YAML or JSON) or a quick one-parameter sweep (--param with --values or --range).

    Finished points are never run again: rerun the same command to resume an interrupted study.
    """
    from .sweep import StoreError, StudyConfig, run_study

    try:
        if study_file is not None:
            if param is not None:
                raise click.UsageError("give either STUDY_FILE or --param, not both.")
            study = StudyConfig.from_file(study_file)
        else:
            if param is None or (values_text is None) == (range_text is None):
                raise click.UsageError("give a STUDY_FILE, or --param with either --values or --range.")
            axis = {"field": param}
            if values_text is not None:
                axis["values"] = list(_float_list(values_text))
            else:
                parts = _float_list(range_text)
                if len(parts) != 3:
                    raise click.BadParameter(f"expected START,STOP,NUM such as 1e-4,1e-2,5, got '{range_text}'.", param_hint="--range")
                axis.update(start=parts[0], stop=parts[1], num=parts[2], scale="log" if log_scale else "linear")
            base = {k: quick[k] for k in ("preset", "dataset", "hidden", "epochs", "subset", "lr")}
            study = StudyConfig.from_dict({
                "name": quick["name"] or param.replace(".", "-"), "base": {**base, "lr_milestones": []},
                "axes": [axis], "seeds": list(quick["seeds"]),
            })
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    out_dir = out_dir or f"sweeps/{study.name}"
    try:
        counts = run_study(
            study, out_dir, workers=workers, threads=threads, address=address, data_dir=data_dir, extend=extend,
            lockstep=lockstep, log=click.echo,
        )
    except (ConfigError, StoreError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted: finished points are kept; run the same command again to resume.", err=True)
        sys.exit(130)
    click.echo("done: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + f". Report: insitu sweep report {out_dir}")
    if counts["failed"]:
        sys.exit(1)


@sweep.command("status")
@click.argument("store", type=click.Path(exists=True))
def sweep_status(store) -> None:
    """Points per status, compute time and failures of a study (its folder or study.sqlite)."""
    from .sweep import ResultsStore, StoreError
    from .sweep.report import status_text

    try:
        with ResultsStore(_store_path(store), create=False) as results:
            click.echo(status_text(results))
    except StoreError as exc:
        raise click.UsageError(str(exc)) from None


@sweep.command("export")
@click.argument("store", type=click.Path(exists=True))
@click.option("--csv", "csv_path", default=None, help="Write one row per point to this CSV file.")
@click.option("--parquet", "parquet_path", default=None, help="Write the same table as Parquet (needs pandas and pyarrow).")
@click.option("--per-epoch", is_flag=True, help="CSV: one row per point and epoch.")
def sweep_export(store, csv_path, parquet_path, per_epoch) -> None:
    """Export a study's results to CSV and/or Parquet."""
    from .sweep import ResultsStore, StoreError, export_csv, export_parquet

    if csv_path is None and parquet_path is None:
        raise click.UsageError("give --csv FILE and/or --parquet FILE.")
    try:
        with ResultsStore(_store_path(store), create=False) as results:
            if csv_path:
                click.echo(f"wrote {export_csv(results, csv_path, per_epoch=per_epoch)}")
            if parquet_path:
                click.echo(f"wrote {export_parquet(results, parquet_path)}")
    except (StoreError, RuntimeError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@sweep.command("report")
@click.argument("store", type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, help="Folder for report.md, the figures and points.csv.")
@click.option("--caption", default=None, help="Subtitle of every figure (default: the study's setup).")
def sweep_report(store, out_dir, caption) -> None:
    """Write report.md with one figure and table per swept parameter, a combined figure and a CSV."""
    from .sweep import ResultsStore, StoreError, write_report

    try:
        with ResultsStore(_store_path(store), create=False) as results:
            click.echo(f"wrote {write_report(results, out_dir, caption)}")
    except StoreError as exc:
        raise click.UsageError(str(exc)) from None


if __name__ == "__main__":  # pragma: no cover
    main()
