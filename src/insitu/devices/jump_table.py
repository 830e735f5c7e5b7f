"""Jump-table device: the distribution of the conductance change per pulse, per conductance bin.

Cristiano et al. 2018 (J. Appl. Phys. 124, 151901) describe devices by a *jump table*: for every
present conductance ``G`` the distribution of ``ΔG`` caused by one pulse, which captures both the
nonlinearity (the mean ``ΔG`` changes with ``G``) and the stochasticity (its spread) of a
measured device. Here the table is piecewise constant in ``G``: bins
``[bin_edges[k], bin_edges[k+1])`` each with a Gaussian ``ΔG ~ N(mean[k], std[k]²)``. A device
stays within ``[bin_edges[0], bin_edges[-1]]``; RESET returns it to ``bin_edges[0]``.

A table can be given as numbers, read from a CSV or JSON file (:meth:`JumpTableDevice.from_file`),
or estimated from measured ``(G, ΔG)`` pairs (:meth:`JumpTableDevice.from_measurements`), so users
can plug in their own device; :func:`jump_table_from_device` measures a pulsed device model the same
way (its SET pulse trains from RESET), e.g. to turn a device fitted to measurements elsewhere into a
table. An optional depression table (``mean_down``, ``std_down``) makes the
device bidirectional (e.g. the capacitor-like 3T1C low-significance cell of Ambrogio et al. 2018).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import ClassVar

import torch

from ..config import ConfigError, register_config
from .pcm import ConductanceDevice

__all__ = ["JumpTableDevice", "jump_table_from_device"]


@register_config
@dataclasses.dataclass
class JumpTableDevice(ConductanceDevice):
    """Conductance change per pulse drawn from a per-bin table.

    Attributes:
        bin_edges: ``K + 1`` strictly increasing conductances (weight units); the first is the
            RESET level, the last the maximum conductance.
        mean: ``K`` mean conductance changes of one SET pulse, one per bin.
        std: ``K`` standard deviations (>= 0) of that change.
        mean_down, std_down: optional depression table (``K`` entries each, mean changes are
            usually negative); empty for a SET-only device.
        gain_dtod: device-to-device spread of a per-device gain multiplying mean and std,
            relative (a device with gain 1.1 takes 10% larger steps everywhere).
    """

    PARAM_NAMES: ClassVar[tuple[str, ...]] = ("g_max", "gain")

    bin_edges: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    mean: tuple[float, ...] = (0.01, 0.01, 0.01, 0.01)
    std: tuple[float, ...] = (0.003, 0.003, 0.003, 0.003)
    mean_down: tuple[float, ...] = ()
    std_down: tuple[float, ...] = ()
    gain_dtod: float = 0.0

    def validate(self) -> None:
        for field in ("bin_edges", "mean", "std", "mean_down", "std_down"):
            value = getattr(self, field)
            if isinstance(value, list):
                object.__setattr__(self, field, tuple(value))
                value = tuple(value)
            if not isinstance(value, tuple) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
                self._fail(field, "must be a list of numbers.")
            if any(v != v or v in (float("inf"), float("-inf")) for v in value):
                self._fail(field, "must contain finite numbers only.")
        edges = self.bin_edges
        if len(edges) < 2:
            self._fail("bin_edges", "needs at least two edges (one bin), e.g. [0.0, 1.0].")
        bad = [i for i in range(1, len(edges)) if edges[i] <= edges[i - 1]]
        if bad:
            i = bad[0]
            self._fail(
                "bin_edges",
                f"must increase strictly: edge {i} ({edges[i]}) is not above edge {i - 1} ({edges[i - 1]}). "
                "Sort the conductance bins and merge duplicates.",
            )
        n_bins = len(edges) - 1
        for field in ("mean", "std"):
            if len(getattr(self, field)) != n_bins:
                self._fail(field, f"needs one entry per bin: {n_bins} bins from {len(edges)} bin_edges, got {len(getattr(self, field))}.")
        negative = [i for i, s in enumerate(self.std) if s < 0]
        if negative:
            self._fail("std", f"spreads must be >= 0; bin {negative[0]} has {self.std[negative[0]]}.")
        if bool(self.mean_down) != bool(self.std_down):
            self._fail("mean_down", "give both mean_down and std_down (a depression table), or neither.")
        if self.mean_down:
            for field in ("mean_down", "std_down"):
                if len(getattr(self, field)) != n_bins:
                    self._fail(field, f"needs one entry per bin ({n_bins}), got {len(getattr(self, field))}.")
            negative = [i for i, s in enumerate(self.std_down) if s < 0]
            if negative:
                self._fail("std_down", f"spreads must be >= 0; bin {negative[0]} has {self.std_down[negative[0]]}.")
        self._check_non_negative("gain_dtod")
        if max(abs(m) for m in self.mean) <= 0:
            self._fail("mean", "all mean steps are 0: the device would never move.")

    @property
    def bidirectional(self) -> bool:  # type: ignore[override]
        return bool(self.mean_down)

    @property
    def reset_conductance(self) -> float:
        return float(self.bin_edges[0])

    @property
    def nominal_g_max(self) -> float:
        return float(self.bin_edges[-1])

    @property
    def nominal_step(self) -> float:
        # The mean SET step of the lowest bin with a positive mean (where a reset device starts).
        return float(next((m for m in self.mean if m > 0), max(abs(m) for m in self.mean)))

    def draw_parameters(self, shape, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        gain = (1 + self.gain_dtod * torch.randn(shape, generator=generator, device=device, dtype=dtype)).clamp_min(0)
        g_max = torch.full(shape, float(self.bin_edges[-1]), device=device, dtype=dtype)
        return torch.stack([g_max, gain])

    def noise_free(self) -> "JumpTableDevice":
        zeros = (0.0,) * len(self.mean)
        return self.replace(std=zeros, std_down=zeros if self.mean_down else ())

    def compiled_tune_kernel(self):
        from ..update.kernels.compiled_pairs import jump_table_closed_loop_tune

        return jump_table_closed_loop_tune(self)

    def _draw(self, g, params, generator, mean, std) -> torch.Tensor:
        edges = torch.tensor(self.bin_edges, device=g.device, dtype=g.dtype)
        table_mean = torch.tensor(mean, device=g.device, dtype=g.dtype)
        table_std = torch.tensor(std, device=g.device, dtype=g.dtype)
        # Bin k holds edges[k] <= G < edges[k+1]; G at the top edge belongs to the last bin.
        k = torch.bucketize(g, edges[1:-1], right=True)
        noise = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
        step = params[1] * (table_mean[k] + table_std[k] * noise)
        return torch.clamp(g + step, edges[0], edges[-1])

    def set_pulse(self, g, pulses_since_reset, params, generator) -> torch.Tensor:
        return self._draw(g, params, generator, self.mean, self.std)

    def depress_pulse(self, g, params, generator) -> torch.Tensor:
        if not self.mean_down:
            return super().depress_pulse(g, params, generator)
        return self._draw(g, params, generator, self.mean_down, self.std_down)

    # -- construction from data -----------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "JumpTableDevice":
        """Read a table from CSV or JSON.

        CSV: a header with columns ``g_low, g_high, mean, std`` (and optionally ``mean_down,
        std_down``), one row per bin, bins in increasing order and touching (``g_high`` of a row
        equals ``g_low`` of the next). JSON/YAML: the fields of this class. ``overrides`` set other
        fields (e.g. ``gain_dtod``).
        """
        path = Path(path)
        if path.suffix.lower() != ".csv":
            data = json.loads(path.read_text()) if path.suffix.lower() == ".json" else _yaml(path)
            data.pop("type", None)
            data.update(overrides)
            return cls.from_dict(data)
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            raise ConfigError(f"{path}: the jump table has no rows (expected a header g_low,g_high,mean,std and one row per bin).")
        required = {"g_low", "g_high", "mean", "std"}
        missing = required - set(rows[0])
        if missing:
            raise ConfigError(f"{path}: missing column(s) {sorted(missing)}; the header must name g_low,g_high,mean,std.")
        try:
            low = [float(r["g_low"]) for r in rows]
            high = [float(r["g_high"]) for r in rows]
            fields = {name: tuple(float(r[name]) for r in rows) for name in ("mean", "std")}
            if "mean_down" in rows[0]:
                fields.update({name: tuple(float(r[name]) for r in rows) for name in ("mean_down", "std_down")})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: every cell of the jump table must be a number ({exc}).") from None
        for i in range(1, len(rows)):
            if abs(low[i] - high[i - 1]) > 1e-12 * max(1.0, abs(high[i - 1])):
                raise ConfigError(
                    f"{path}: bins must touch and increase: row {i + 1} starts at g_low={low[i]} but the previous "
                    f"row ends at g_high={high[i - 1]}."
                )
        return cls(bin_edges=tuple(low) + (high[-1],), **fields, **overrides)

    @classmethod
    def from_measurements(cls, g: torch.Tensor, dg: torch.Tensor, bin_edges, **overrides) -> "JumpTableDevice":
        """Estimate the table from measured pairs: conductance before a pulse ``g`` and change ``dg``.

        ``g`` and ``dg`` are 1-d tensors of equal length; every bin needs at least two samples.
        """
        g, dg = torch.as_tensor(g, dtype=torch.float64).flatten(), torch.as_tensor(dg, dtype=torch.float64).flatten()
        if g.shape != dg.shape:
            raise ConfigError(f"from_measurements: g and dg must have the same length, got {g.numel()} and {dg.numel()}.")
        edges = tuple(float(e) for e in bin_edges)
        means, stds = [], []
        for k in range(len(edges) - 1):
            last = k == len(edges) - 2
            inside = (g >= edges[k]) & ((g <= edges[k + 1]) if last else (g < edges[k + 1]))
            if int(inside.sum()) < 2:
                raise ConfigError(
                    f"from_measurements: bin {k} [{edges[k]}, {edges[k + 1]}) holds {int(inside.sum())} measurement(s); "
                    "it needs at least 2. Use wider bins."
                )
            means.append(float(dg[inside].mean()))
            stds.append(float(dg[inside].std()))
        return cls(bin_edges=edges, mean=tuple(means), std=tuple(stds), **overrides)


def jump_table_from_device(
    device,
    bins: int = 8,
    g_scale: float = 1.0,
    trains: int = 20,
    pulses: int | None = None,
    gain_dtod: float | None = None,
    seed: int = 0,
) -> JumpTableDevice:
    """A SET-only jump table measured from a pulsed device model, as one would measure a device.

    The mean device of ``device`` (no device-to-device spread; :func:`insitu.devices.response.mean_device`)
    starts at its lower bound (RESET) and takes ``trains`` trains of ``pulses`` up pulses, each train
    from the lower bound again, with its cycle-to-cycle noise on; every pulse gives a pair
    ``(G before, ΔG)``. The range ``[w_min, w_max]`` of the device is mapped onto ``[0, g_scale]``
    and cut into ``bins`` equal bins, and :meth:`JumpTableDevice.from_measurements` takes each bin's
    mean and spread of ``ΔG`` (so the table holds both the nonlinearity and the pulse-to-pulse
    noise of the model, as a measured table holds the device's).

    Args:
        device: a pulsed device config whose up pulses raise the weight from ``w_min``.
        bins: conductance bins of the table.
        g_scale: the conductance of the device's upper bound in the table (the table's range).
        trains, pulses: SET trains from RESET and pulses per train (``None``: enough nominal steps
            to cross the range twice).
        gain_dtod: the table's device-to-device gain spread (``None``: the device's ``dw_min_dtod``).
        seed: seeds the noise of the pulses.
    """
    from .response import mean_device

    if bins < 1 or trains < 1:
        raise ConfigError(f"jump_table_from_device: bins and trains must be >= 1 (got {bins}, {trains}).")
    mean = mean_device(device)
    if not (hasattr(mean, "w_min") and hasattr(mean, "w_max")):
        raise ConfigError(f"jump_table_from_device: a {type(device).__name__} has no weight range (w_min, w_max) to measure across.")
    w_lo, w_hi = float(mean.w_min), float(mean.w_max)
    if not (math.isfinite(w_lo) and math.isfinite(w_hi)) or w_hi <= w_lo:
        raise ConfigError(f"jump_table_from_device: the device needs a finite range w_min < w_max (got {w_lo}, {w_hi}).")
    pulses = int(pulses if pulses is not None else max(50, math.ceil(2 * (w_hi - w_lo) / mean.nominal_step)))
    model = mean.model()
    generator = torch.Generator().manual_seed(seed)
    params = mean.draw_parameters((1, trains), generator, dtype=torch.float64)
    w = model.clip(torch.full((1, trains), -math.inf, dtype=torch.float64), params)
    before, change = [], []
    up = torch.ones_like(w)
    for _ in range(pulses):
        new = model.apply_signed_pulses(w.clone(), up, params, generator)
        before.append(w.flatten().clone())
        change.append((new - w).flatten())
        w = new
    scale = g_scale / (w_hi - w_lo)
    g = (torch.cat(before) - w_lo) * scale
    dg = torch.cat(change) * scale
    edges = tuple(g_scale * k / bins for k in range(bins + 1))
    spread = float(getattr(device, "dw_min_dtod", 0.0)) if gain_dtod is None else float(gain_dtod)
    return JumpTableDevice.from_measurements(g, dg, edges, gain_dtod=spread)


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
