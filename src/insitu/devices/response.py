"""Looking at a device: its pulse response as training sees it, and a figure of it.

:func:`simulate_response` applies trains of single pulses (up, then down, repeated) to freshly
drawn devices through the family's own model (``draw_parameters``, then
``apply_signed_pulses`` with a count of 1 a pulse), so the trajectories are exactly what the
update engine does to a weight. :func:`step_curves` gives the noise-free step ``Δw(w)`` of one
pulse (``steps_at``) over the weight range. :func:`plot_response` draws both
(``insitu device plot``); matplotlib is imported there only, so ``import insitu`` stays light.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from ..config import ConfigError
from .base import DeviceConfig

__all__ = ["load_device_config", "mean_device", "simulate_response", "step_curves", "symmetry_point", "plot_response"]

#: Fields zeroed by :func:`mean_device`: the device-to-device spreads of every family.
_SPREAD_FIELDS = ("reference_std",)


def load_device_config(spec) -> tuple[DeviceConfig, str]:
    """``(device config, label)`` of a preset name, a YAML/JSON file or a config object.

    A file holds a ``TileConfig`` (a ``device`` key, as ``insitu presets NAME`` prints) or a
    ``DeviceConfig`` alone (a ``type`` key naming the family). Tile configs with a learning-rule
    cell are read through their ``device``; multi-conductance (PCM) cells have no single device.
    """
    from ..tile import TileConfig

    if isinstance(spec, DeviceConfig):
        return spec, type(spec).__name__
    if isinstance(spec, TileConfig):
        if spec.cell is not None and not spec.cell.uses_tile_device:
            raise ConfigError(
                f"a tile with the cell {type(spec.cell).__name__} (e.g. PCM pairs) has no single tile device: its "
                "devices are the cell's own, not ordinary tile devices; pick a tile config or preset with a 'device'."
            )
        return spec.device, type(spec.device).__name__
    if not isinstance(spec, (str, Path)):
        raise ConfigError(f"expected a preset name, a config file or a device/tile config, got {type(spec).__name__}.")
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file.")
        data = _read_config_data(path)
        if isinstance(data, dict) and "type" in data and "device" not in data:
            config = DeviceConfig.from_dict(data)
        else:
            config = TileConfig.from_dict(data)
        return load_device_config(config)[0], path.name
    from ..presets import get_preset

    try:
        return load_device_config(get_preset(str(spec)))[0], str(spec)
    except ConfigError as exc:
        raise ConfigError(f"preset '{spec}': {exc}") from None


def _read_config_data(path: Path):
    """The plain data of a YAML/JSON config file, with the errors of :meth:`Config.from_file`."""
    import json

    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}.") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def _require_pulsed(device: DeviceConfig) -> None:
    if device.is_ideal:
        raise ConfigError(f"{type(device).__name__} is the exact floating-point device: it has no pulse response to look at.")
    if device.capabilities.per_device_state:
        raise ConfigError(
            f"{type(device).__name__} has per-device state (a conductance pair): its step depends on the pair's "
            "conductances, not on the weight alone, so it has no step-versus-weight curve to plot."
        )


def mean_device(device: DeviceConfig) -> DeviceConfig:
    """``device`` with every device-to-device spread (``*_dtod``, ``reference_std``) set to 0:
    all drawn devices are then the mean device."""
    _require_pulsed(device)
    zero = {
        f.name: 0.0
        for f in dataclasses.fields(device)
        if f.name.endswith("_dtod") or f.name in _SPREAD_FIELDS
    }
    return device.replace(**zero) if zero else device


def _auto_pulses(device: DeviceConfig) -> int:
    """Pulses a train: enough nominal steps to cross the mean weight range once (the number of
    states), at least 50 and at most 20,000."""
    span = float(getattr(device, "w_max", 1.0)) - float(getattr(device, "w_min", -1.0))
    return int(min(max(math.ceil(span / device.nominal_step), 50), 20000))


@torch.no_grad()
def simulate_response(
    device: DeviceConfig,
    pulses: int | None = None,
    cycles: int = 2,
    n_devices: int = 1,
    seed: int = 0,
    noise: bool = True,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Trains of single pulses applied to ``n_devices`` freshly drawn devices.

    Every device starts at its lower bound; then ``cycles`` times: ``pulses`` up pulses, then
    ``pulses`` down pulses, each pulse one call of the model's ``apply_signed_pulses`` with a
    count of 1 (cycle-to-cycle noise drawn as in training when ``noise``). ``pulses=None``: the
    number of states, ``(w_max - w_min) / nominal_step`` (see :func:`_auto_pulses`).

    Returns a dict: ``pulse`` (``0 … N``, row 0 the start), ``direction`` (+1/-1 of the pulse that
    led to each row, 0 for row 0), ``weight`` (``(N + 1, n_devices)``), ``params`` (the drawn
    parameters, ``(P, 1, n_devices)``), ``model``, ``pulses`` (per train).
    """
    _require_pulsed(device)
    if n_devices < 1 or cycles < 1:
        raise ConfigError(f"need n_devices >= 1 and cycles >= 1 (got {n_devices}, {cycles}).")
    pulses = _auto_pulses(device) if pulses is None else int(pulses)
    if pulses < 1:
        raise ConfigError(f"pulses must be >= 1 (got {pulses}).")
    model = device.model()
    params = device.draw_parameters((1, n_devices), torch.Generator().manual_seed(seed), dtype=dtype)
    generator = torch.Generator().manual_seed(seed + 1) if noise else None
    w = model.clip(torch.full((1, n_devices), -math.inf, dtype=dtype), params)
    plus, minus = torch.ones_like(w), -torch.ones_like(w)
    rows, directions = [w[0].clone()], [0]
    for _ in range(cycles):
        for sign, counts in ((1, plus), (-1, minus)):
            for _ in range(pulses):
                w = model.apply_signed_pulses(w, counts, params, generator)
                rows.append(w[0].clone())
                directions.append(sign)
    return {
        "pulse": torch.arange(len(rows)),
        "direction": torch.tensor(directions),
        "weight": torch.stack(rows),
        "params": params,
        "model": model,
        "pulses": pulses,
    }


@torch.no_grad()
def step_curves(device: DeviceConfig, points: int = 401, params: torch.Tensor | None = None, model=None):
    """``(w, step_up, step_down)``: the noise-free magnitudes of one up and one down step over
    the weight range, from the model's ``steps_at``; of the mean device (:func:`mean_device`)
    unless ``params`` (one device, ``(P, 1, 1)``) are given."""
    if params is None:
        mean = mean_device(device)
        model = mean.model()
        params = mean.draw_parameters((1, 1), torch.Generator().manual_seed(0), dtype=torch.float64)
    params = params.double()
    lo, hi = float(model.plane(params, "w_min").min()), float(model.plane(params, "w_max").max())
    w = torch.linspace(lo, hi, points, dtype=torch.float64).view(1, points)
    expanded = params.expand(-1, 1, points).contiguous()
    up, down = model.steps_at(w, expanded)
    return w[0], up.expand(1, points)[0], down.expand(1, points)[0]


def symmetry_point(device: DeviceConfig) -> float | None:
    """The mean device's symmetry point (where one up step equals one down step), or ``None``.

    The closed form of :func:`insitu.devices.symmetry.analytic_symmetry_point` for the families
    that have one; otherwise the sign change of ``step_up - step_down`` on a fine grid (linearly
    interpolated). ``None`` where the steps never cross (e.g. a constant step) or are equal
    everywhere.
    """
    from .symmetry import analytic_symmetry_point

    mean = mean_device(device)
    try:
        value = float(analytic_symmetry_point(mean, shape=(1, 1)).flatten()[0])
        return value if math.isfinite(value) else None
    except ConfigError:
        pass
    value = _grid_root(mean)
    # Rounding of the grid: a root within 1e-9 of the range from 0 is 0.
    span = float(getattr(mean, "w_max", 1.0)) - float(getattr(mean, "w_min", -1.0))
    return None if value is None else (0.0 if abs(value) < 1e-9 * span else value)


def _grid_root(mean: DeviceConfig) -> float | None:
    w, up, down = step_curves(mean, points=4001)
    diff = (up - down).numpy()
    w = w.numpy()
    for k in range(len(diff) - 1):
        a, b = diff[k], diff[k + 1]
        if a == 0 and b == 0:
            continue
        if a == 0:
            return float(w[k])
        if a * b < 0:
            return float(w[k] + (w[k + 1] - w[k]) * a / (a - b))
    return None


def plot_response(
    config_or_device,
    path: str | Path,
    n_devices: int = 5,
    pulses: int | None = None,
    seed: int = 0,
    cycles: int = 2,
    noise: bool = True,
    title: str | None = None,
    size: tuple[float, float] = (7.5, 5.0),
    dpi: int = 80,
) -> dict:
    """Write a PNG of a device family's pulse response; returns a summary dict.

    (a) Weight against pulse number for ``n_devices`` drawn devices (device-to-device variation),
    each receiving ``cycles`` times ``pulses`` up then ``pulses`` down single pulses with
    cycle-to-cycle noise (:func:`simulate_response`). (b) The step ``Δw`` of one up and one down
    pulse against ``w`` for the mean device (thick; the drawn devices thin), from ``steps_at``,
    with the symmetry point marked (:func:`symmetry_point`).

    ``config_or_device``: a preset name, a TileConfig/DeviceConfig YAML or JSON file, or a config
    object (:func:`load_device_config`). The default ``size`` and ``dpi`` give a 600x400 image.
    """
    device, label = load_device_config(config_or_device)
    sim = simulate_response(device, pulses=pulses, cycles=cycles, n_devices=n_devices, seed=seed, noise=noise)
    w_grid, up, down = step_curves(device)
    sp = symmetry_point(device)
    model, params = sim["model"], sim["params"]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    family = type(device).__name__
    fig, (ax_w, ax_s) = plt.subplots(1, 2, figsize=size, dpi=dpi, gridspec_kw={"width_ratios": [1.5, 1]})
    x = sim["pulse"].numpy()
    weights = sim["weight"].double().numpy()
    n = sim["pulses"]
    for c in range(cycles):  # shade the down trains
        start = (2 * c + 1) * n
        ax_w.axvspan(start, start + n, color="0.92", lw=0)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i in range(weights.shape[1]):
        ax_w.plot(x, weights[:, i], lw=0.7, color=colors[i % len(colors)])
    ax_w.set_xlabel("pulse number (white: up, grey: down)")
    ax_w.set_ylabel("weight w")
    ax_w.set_title(f"(a) {n_devices} devices, {n} pulses a train", fontsize=9)
    ax_w.set_xlim(0, x[-1])

    for i in range(weights.shape[1]):  # the drawn devices, faint
        wi, ui, di = step_curves(device, points=101, params=params[:, :, i : i + 1], model=model)
        ax_s.plot(wi.numpy(), ui.numpy(), color="tab:red", lw=0.5, alpha=0.3)
        ax_s.plot(wi.numpy(), di.numpy(), color="tab:blue", lw=0.5, alpha=0.3)
    ax_s.plot(w_grid.numpy(), up.numpy(), color="tab:red", lw=1.8, label="up: Δw⁺(w)")
    ax_s.plot(w_grid.numpy(), down.numpy(), color="tab:blue", lw=1.8, label="down: |Δw⁻(w)|")
    if sp is not None:
        ax_s.axvline(sp, color="k", ls="--", lw=0.8)
        ax_s.plot([sp], [_interp(sp, w_grid, up)], "ko", ms=4, label=f"symmetry point {sp:.3g}")
    ax_s.set_xlabel("weight w")
    ax_s.set_ylabel("step of one pulse")
    ax_s.set_ylim(bottom=0)
    ax_s.set_title("(b) step vs weight (thick: mean device)", fontsize=9)
    ax_s.legend(fontsize=7, loc="best")
    for ax in (ax_w, ax_s):
        ax.tick_params(labelsize=7)
        ax.xaxis.label.set_size(8)
        ax.yaxis.label.set_size(8)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.yaxis.get_offset_text().set_fontsize(7)
    fig.suptitle(title if title is not None else f"{label}: {family}, nominal step {device.nominal_step:.3g}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", dpi=dpi)
    plt.close(fig)
    return {
        "label": label,
        "family": family,
        "pulses": n,
        "devices": n_devices,
        "nominal_step": device.nominal_step,
        "symmetry_point": sp,
        "path": str(path),
    }


def _interp(x: float, grid: torch.Tensor, values: torch.Tensor) -> float:
    import numpy as np

    return float(np.interp(x, grid.numpy(), values.numpy()))
