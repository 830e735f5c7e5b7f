"""Fitting a device family to a measured pulse response (``insitu device fit``).

The data are one device's conductance (or weight) after each pulse of a pulse sequence, with the
direction of every pulse (given, or inferred from the increments). The conductance is mapped
linearly to weight: ``[g_lo, g_hi]`` (default: the observed minimum and maximum) onto ``w_range``
(default ``[-1, 1]``). Every increment ``Δw_k = w_{k+1} - w_k`` of a single pulse is a sample of the
family's step at ``w_k``: ``+step_up(w_k)`` or ``-step_down(w_k)``. The mean-device parameters are
fitted by least squares on these increments (numpy only):

=================  ===========================================================================
``constant-step``  mean step per direction; bounds: the observed weight range
``linear-step``    a straight line ``step(w)`` per direction (closed form); bounds observed,
                   ``γ = -slope · bound``
``soft-bounds``    the same straight lines; the bounds are where they reach 0
``pow-step``       ``dw ω^γ`` per direction and both bounds (Levenberg-Marquardt from the
                   soft-bounds fit)
``exp-step``       ``dw (1 - α e^{κ w})`` per direction (κ by a 1-D search, ``dw``, ``α`` by
                   linear least squares for each κ); written as ``a = 0.5``, ``b = 0``,
                   ``A = α``, ``γ_up = κ_up R``, ``γ_down = -κ_down R`` (the same steps:
                   ``a``, ``b``, ``A``, ``γ`` are not separately identifiable)
``piecewise``      step factors at ``nodes`` equally spaced weights on the observed range
                   (linear least squares on the interpolation's hat functions, lightly smoothed
                   so that nodes without data follow their neighbours)
=================  ===========================================================================

Increments that end exactly on the observed extreme ahead, or start on it (pulses clipped by a
hard bound), are left out; where the data sit on an extreme more than once (a hard bound), so are
the pulses towards it that start within 3 median steps of it. The cycle-to-cycle spread is estimated from the residuals as a relative spread of the
step, ``σ² = Σ r² / Σ step²``. Device-to-device spreads cannot be measured from one device: the
fitted device has them at 0.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np

from ..config import ConfigError
from .base import DeviceConfig

__all__ = ["FAMILIES", "DeviceFit", "PulseData", "fit_device", "prepare_increments", "read_pulse_csv"]

#: In order of preference when ``auto`` finds errors within :data:`AUTO_TOLERANCE` of the best.
FAMILIES = ("constant-step", "soft-bounds", "linear-step", "pow-step", "exp-step", "piecewise")
#: ``auto`` picks the first family (in :data:`FAMILIES` order) whose RMS error is within this
#: relative margin of the lowest: the richer families always fit noisy data a little better.
AUTO_TOLERANCE = 0.02
#: The fewest rows a data set may have, and the fewest usable increments per direction.
MIN_ROWS = 20
MIN_PER_DIRECTION = 5
#: Passes reweighted by the family's own steps after the pass with the shared weights.
REWEIGHTS = 1

_PULSE_NAMES = ("pulse", "pulses", "pulse_number", "pulse number", "n", "step", "index")
_WEIGHT_NAMES = ("weight", "w")
_DIRECTION_NAMES = ("direction", "dir", "sign", "polarity")


def _is_conductance(name: str) -> bool:
    return name.startswith("conductance") or name == "g" or name.startswith("g_") or name.startswith("g (") or name.startswith("g[")


@dataclasses.dataclass
class PulseData:
    """A pulse sequence read from a CSV file: ``pulse`` numbers, ``value`` (conductance or weight),
    ``direction`` (+1/-1 of the pulse that led to each row, or None), ``is_weight``."""

    pulse: np.ndarray
    value: np.ndarray
    direction: np.ndarray | None
    is_weight: bool
    value_name: str
    source: str = "data"


def read_pulse_csv(path: str | Path) -> PulseData:
    """Read a pulse sequence from a CSV file.

    With a header: a pulse column (``pulse``, ``pulse_number``, ``n`` …), a conductance column
    (``conductance``, ``conductance_uS``, ``g`` …) or a ``weight`` column, and optionally a
    ``direction`` column (+1 potentiating, -1 depressing; the pulse that led to that row). Without
    a header: ``pulse, conductance[, direction]`` by position. Errors name the file, the row and
    the column.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the data file ({exc}).") from None
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise ConfigError(f"{path}: no data rows.")

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    header = [c.strip().lower() for c in rows[0]]
    if all(numeric(c) for c in header):
        width = len(rows[0])
        if width not in (2, 3):
            raise ConfigError(
                f"{path}: without a header the columns are 'pulse, conductance[, direction]'; the first row has {width} columns. "
                "Add a header naming the columns (pulse, conductance or weight, direction)."
            )
        names = ["pulse", "conductance", "direction"][:width]
        columns = {"pulse": 0, "value": 1, **({"direction": 2} if width == 3 else {})}
        body, first_line, value_name = rows, 1, "conductance"
    else:
        names = header
        columns = {}
        for i, name in enumerate(header):
            if name in _PULSE_NAMES and "pulse" not in columns:
                columns["pulse"] = i
            elif (name in _WEIGHT_NAMES or _is_conductance(name)) and "value" not in columns:
                columns["value"] = i
            elif name in _DIRECTION_NAMES and "direction" not in columns:
                columns["direction"] = i
        found = ", ".join(repr(c) for c in rows[0])
        if "pulse" not in columns:
            raise ConfigError(f"{path}: missing column 'pulse' (the pulse number); found columns {found}.")
        if "value" not in columns:
            raise ConfigError(f"{path}: missing column 'conductance' (or 'weight'); found columns {found}.")
        body, first_line, value_name = rows[1:], 2, header[columns["value"]]
    data = {key: [] for key in columns}
    for line, row in enumerate(body, start=first_line):
        for key, index in columns.items():
            cell = row[index].strip() if index < len(row) else ""
            if key == "direction" and not cell:  # allowed (the first row has no pulse before it)
                data[key].append(math.nan)
                continue
            try:
                value = float(cell)
            except ValueError:
                shown = f"'{cell}'" if cell else "an empty cell"
                raise ConfigError(f"{path}, row {line}, column '{names[index]}': {shown} is not a number.") from None
            if not math.isfinite(value):
                raise ConfigError(f"{path}, row {line}, column '{names[index]}': {cell} is not a finite number.")
            data[key].append(value)
    if len(data["pulse"]) < MIN_ROWS:
        raise ConfigError(f"{path}: only {len(data['pulse'])} pulses; a fit needs at least {MIN_ROWS} rows (pulses).")
    return PulseData(
        pulse=np.asarray(data["pulse"]),
        value=np.asarray(data["value"]),
        direction=np.asarray(data["direction"]) if "direction" in data else None,
        is_weight=value_name in _WEIGHT_NAMES,
        value_name=value_name,
        source=str(path),
    )


@dataclasses.dataclass
class Increments:
    """Single-pulse increments ready to fit: ``w`` before the pulse, ``dw``, ``sign`` (+1/-1)."""

    w: np.ndarray
    dw: np.ndarray
    sign: np.ndarray
    w_lo: float  # the observed weight range
    w_hi: float
    hard_bounds: bool  # rows sit exactly on an observed extreme more than once (clipping)
    excluded: int  # increments left out (clipped by a bound, or spanning several pulses)
    mapping: str
    directions: str  # where the directions came from
    weight: np.ndarray | None = None  # least-squares weight of each increment (None: all 1)
    reference_weight: np.ndarray | None = None  # the weights every family starts from


def _infer_directions(dw: np.ndarray) -> np.ndarray:
    """+1/-1 per increment: the majority sign of the increments in a centred window (odd, up
    to 15 wide), so that single noisy increments and zero increments at a bound follow their train."""
    signs = np.sign(dw)
    half = int(min(7, max(1, len(dw) // 20)))
    padded = np.concatenate([np.zeros(half), signs, np.zeros(half)])
    window = np.convolve(padded, np.ones(2 * half + 1), mode="valid")
    out = np.sign(window)
    # Ties: the increment's own sign, then the previous label.
    out = np.where(out == 0, signs, out)
    for k in range(len(out)):
        if out[k] == 0:
            out[k] = out[k - 1] if k else 1
    return out


def prepare_increments(
    data: PulseData,
    w_range: tuple[float, float] | None = None,
    g_range: tuple[float, float] | None = None,
) -> Increments:
    """Map the values to weight and form the single-pulse increments (see the module docstring)."""
    order = np.argsort(data.pulse, kind="stable")
    pulse, value = data.pulse[order], data.value[order]
    if len(pulse) < MIN_ROWS:
        raise ConfigError(f"{data.source}: only {len(pulse)} pulses; a fit needs at least {MIN_ROWS} rows (pulses).")
    if np.any(np.diff(pulse) == 0):
        k = int(np.flatnonzero(np.diff(pulse) == 0)[0])
        raise ConfigError(f"{data.source}: pulse number {pulse[k]:g} appears twice; each row is the state after one pulse.")
    if data.is_weight and w_range is None and g_range is None:
        w = value.astype(float)
        mapping = f"weight = the '{data.value_name}' column as given"
    else:
        w_lo, w_hi = (-1.0, 1.0) if w_range is None else (float(w_range[0]), float(w_range[1]))
        if not w_hi > w_lo:
            raise ConfigError(f"w_range must be increasing (got {w_lo}, {w_hi}).")
        g_lo, g_hi = (float(value.min()), float(value.max())) if g_range is None else (float(g_range[0]), float(g_range[1]))
        if not g_hi > g_lo:
            raise ConfigError(
                f"{data.source}: the '{data.value_name}' column is constant ({g_lo:g}): no pulse changed the device."
                if g_range is None else f"g_range must be increasing (got {g_lo}, {g_hi})."
            )
        w = w_lo + (value - g_lo) * ((w_hi - w_lo) / (g_hi - g_lo))
        source = "the observed minimum and maximum" if g_range is None else "given"
        mapping = f"weight = {w_lo:g} + {w_hi - w_lo:g} · (G - {g_lo:g}) / ({g_hi:g} - {g_lo:g}) (G range {source})"
    dw = np.diff(w)
    single = np.diff(pulse) == 1
    if data.direction is not None:
        given = data.direction[order][1:]
        bad = (given == 0) | ~np.isfinite(given)
        if np.any(bad):
            k = int(np.flatnonzero(bad)[0]) + 1
            raise ConfigError(
                f"{data.source}: direction {given[k - 1]:g} at pulse {pulse[k]:g}; every pulse after the first row needs "
                "+1 (potentiating) or -1 (depressing)."
            )
        sign = np.sign(given)
        directions = "the direction column"
    else:
        sign = _infer_directions(dw)
        directions = "inferred from the increments (majority sign in a window)"
    lo, hi = float(w.min()), float(w.max())
    tol = 1e-9 * max(hi - lo, 1e-300)
    after = w[1:]
    before = w[:-1]
    clipped = ((sign > 0) & (after >= hi - tol)) | ((sign < 0) & (after <= lo + tol))
    # A pulse towards the extreme the weight sits on (its step is clipped away; in the models the
    # noise may still move it off), and a pulse that left the weight on an extreme (clipped,
    # whatever its inferred direction).
    clipped |= ((sign > 0) & (before >= hi - tol)) | ((sign < 0) & (before <= lo + tol))
    clipped |= (dw == 0) & ((before >= hi - tol) | (before <= lo + tol))
    # Where the data sit on an extreme more than once, it is a hard bound: pulses towards it that
    # start within 3 median steps of it may be clipped (selected on the weight before the pulse,
    # so that leaving them out does not bias the fit).
    hard_hi, hard_lo = int(np.sum(w >= hi - tol)) >= 2, int(np.sum(w <= lo + tol)) >= 2
    for side, hard, ahead in ((1, hard_hi, lambda m: before > hi - m), (-1, hard_lo, lambda m: before < lo + m)):
        moving = (sign == side) & (dw != 0) & single
        if hard and np.any(moving):
            clipped |= (sign == side) & ahead(3 * float(np.median(np.abs(dw[moving]))))
    keep = single & ~clipped
    hard = hard_hi or hard_lo
    inc = Increments(
        w=w[:-1][keep], dw=dw[keep], sign=sign[keep], w_lo=lo, w_hi=hi, hard_bounds=hard,
        excluded=int(np.sum(~keep)), mapping=mapping, directions=directions,
    )
    n_up, n_down = int(np.sum(inc.sign > 0)), int(np.sum(inc.sign < 0))
    if min(n_up, n_down) < MIN_PER_DIRECTION:
        raise ConfigError(
            f"{data.source}: {n_up} usable up and {n_down} down increments of single pulses; a fit needs at least "
            f"{MIN_PER_DIRECTION} of each (pulse numbers must count single pulses, and both directions must be present)."
        )
    return inc


@dataclasses.dataclass
class DeviceFit:
    """The result of :func:`fit_device`.

    Attributes:
        family: the fitted family (one of :data:`FAMILIES`).
        device: the fitted mean device (device-to-device spreads 0, ``dw_min_std`` the estimated
            cycle-to-cycle spread), or None if the family cannot describe the data (``error``).
        parameters: the fitted numbers, by config field name.
        rms: RMS of the increment residuals, weight units (``inf`` if the fit failed).
        relative_rms: ``rms`` over the mean ``|Δw|``.
        c2c: the estimated relative cycle-to-cycle spread of a step.
        n_increments: increments fitted; ``excluded``: left out.
        mapping, directions: how the data became weights and directions.
        candidates: with ``family="auto"``, every family's fit (in :data:`FAMILIES` order).
        error: why the family failed, if it did.
    """

    family: str
    device: DeviceConfig | None
    parameters: dict
    rms: float
    relative_rms: float
    c2c: float
    n_increments: int
    excluded: int
    mapping: str
    directions: str
    candidates: list = dataclasses.field(default_factory=list)
    error: str = ""

    def tile_config(self):
        """The 2016 preset's tile (``gokmen-vlasov-2016``: its IO and update) with the fitted device."""
        from ..presets import get_preset

        if self.device is None:
            raise ConfigError(f"the {self.family} fit failed: {self.error}")
        return get_preset("gokmen-vlasov-2016").replace(device=self.device)

    def summary(self) -> str:
        lines = []
        for name, value in self.parameters.items():
            if isinstance(value, (tuple, list)):
                value = "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
            elif isinstance(value, float):
                value = f"{value:.6g}"
            lines.append(f"  {name}: {value}")
        return "\n".join(lines)


# -- the families -----------------------------------------------------------------------------------


def _split(inc: Increments):
    """``(x_up, y_up, x_down, y_down)``: weights before the pulse and step magnitudes, times the
    square roots of the least-squares weights as ``(s_up, s_down)``."""
    up, down = inc.sign > 0, inc.sign < 0
    root = np.ones_like(inc.w) if inc.weight is None else np.sqrt(inc.weight)
    return inc.w[up], inc.dw[up], inc.w[down], -inc.dw[down], root[up], root[down]


def _lstsq(a: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Weighted least squares: rows scaled by ``s`` (square roots of the weights)."""
    coef, *_ = np.linalg.lstsq(a * s[:, None], y * s, rcond=None)
    return coef


def _line(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares ``y = c0 + c1 x``."""
    c0, c1 = _lstsq(np.stack([np.ones_like(x), x], axis=1), y, s)
    return float(c0), float(c1)


def _mean(y: np.ndarray, s: np.ndarray) -> float:
    return float(np.sum(s * s * y) / np.sum(s * s))


def _steps(dw_up: float, dw_down: float) -> dict:
    """``dw_min``, ``up_down`` of insitu's symmetric convention from the two steps."""
    if not (dw_up > 0 and dw_down > 0):
        raise ConfigError(f"the fitted steps must be positive (up {dw_up:.3g}, down {dw_down:.3g}).")
    return {"dw_min": 0.5 * (dw_up + dw_down), "up_down": (dw_up - dw_down) / (dw_up + dw_down)}


def _zero_spreads(cls) -> dict:
    return {f.name: 0.0 for f in dataclasses.fields(cls) if f.name.endswith("_dtod")}


def _fit_constant(inc: Increments, nodes: int) -> DeviceConfig:
    from .pulsed import ConstantStepDevice

    xu, yu, xd, yd, su, sd = _split(inc)
    return ConstantStepDevice(**_steps(_mean(yu, su), _mean(yd, sd)), w_max=inc.w_hi, w_min=inc.w_lo,
                              **_zero_spreads(ConstantStepDevice))


def _fit_linear(inc: Increments, nodes: int) -> DeviceConfig:
    from .pulsed import LinearStepDevice

    xu, yu, xd, yd, su, sd = _split(inc)
    c0, c1 = _line(xu, yu, su)
    d0, d1 = _line(xd, yd, sd)
    gamma_up, gamma_down = -c1 / c0 * inc.w_hi, -d1 / d0 * inc.w_lo
    if gamma_up < 0:  # the step grows towards the upper bound: not a linear step with γ >= 0
        gamma_up, c0 = 0.0, _mean(yu, su)
    if gamma_down < 0:
        gamma_down, d0 = 0.0, _mean(yd, sd)
    return LinearStepDevice(**_steps(c0, d0), w_max=inc.w_hi, w_min=inc.w_lo, gamma_up=gamma_up, gamma_down=gamma_down,
                            **_zero_spreads(LinearStepDevice))


def _fit_soft_bounds(inc: Increments, nodes: int) -> DeviceConfig:
    from .pulsed import SoftBoundsDevice

    xu, yu, xd, yd, su, sd = _split(inc)
    c0, c1 = _line(xu, yu, su)
    d0, d1 = _line(xd, yd, sd)
    if not (c1 < 0 and d1 > 0):
        raise ConfigError("the steps do not shrink towards the bound ahead (soft bounds need it).")
    w_max, w_min = -c0 / c1, -d0 / d1
    if not (w_min < 0 < w_max):
        raise ConfigError(f"the fitted bounds ({w_min:.3g}, {w_max:.3g}) do not enclose weight 0.")
    return SoftBoundsDevice(**_steps(c0, d0), w_max=w_max, w_min=w_min, **_zero_spreads(SoftBoundsDevice))


def _levenberg_marquardt(residual, x0: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Minimise ``||residual(x)||²`` (finite-difference Jacobian, adaptive damping)."""
    x = np.asarray(x0, dtype=float)
    r = residual(x)
    cost = float(r @ r)
    damping = 1e-3
    for _ in range(iterations):
        jac = np.empty((len(r), len(x)))
        for j in range(len(x)):
            h = 1e-6 * max(1.0, abs(x[j]))
            step = x.copy()
            step[j] += h
            jac[:, j] = (residual(step) - r) / h
        jtj, jtr = jac.T @ jac, jac.T @ r
        improved = False
        for _ in range(20):
            delta = np.linalg.solve(jtj + damping * np.diag(np.diag(jtj) + 1e-30), -jtr)
            candidate = x + delta
            rc = residual(candidate)
            cc = float(rc @ rc)
            if np.isfinite(cc) and cc < cost:
                x, r, damping, improved = candidate, rc, max(damping / 3, 1e-12), True
                relative = (cost - cc) / max(cost, 1e-300)
                cost = cc
                break
            damping *= 4
        if not improved or relative < 1e-12:
            break
    return x


def _fit_pow(inc: Increments, nodes: int) -> DeviceConfig:
    from .powstep import PowStepDevice

    xu, yu, xd, yd, su, sd = _split(inc)
    span = inc.w_hi - inc.w_lo
    try:
        sb = _fit_soft_bounds(inc, nodes)
        hi0, lo0 = max(sb.w_max, inc.w_hi + 1e-3 * span), min(sb.w_min, inc.w_lo - 1e-3 * span)
    except ConfigError:
        hi0, lo0 = inc.w_hi + 0.05 * span, inc.w_lo - 0.05 * span
    # Parameters: log dw_up, log dw_down, log γ_up, log γ_down, log(w_max - w_hi), log(w_lo - w_min).
    def unpack(p):
        return np.exp(p[0]), np.exp(p[1]), np.exp(p[2]), np.exp(p[3]), inc.w_hi + span * np.exp(p[4]), inc.w_lo - span * np.exp(p[5])

    def residual(p):
        dwu, dwd, gu, gd, hi, lo = unpack(p)
        omega_u = np.clip((hi - xu) / (hi - lo), 0, 1)
        omega_d = np.clip((hi - xd) / (hi - lo), 0, 1)
        return np.concatenate([su * (dwu * omega_u**gu - yu), sd * (dwd * (1 - omega_d) ** gd - yd)])

    r0 = hi0 - lo0
    # γ = 1 start: dw ω = dw_sb (1 - w/w_max) = dw_sb (w_max - w)/w_max, so dw = dw_sb R / w_max.
    start_up = max(float(np.mean(yu / np.clip((hi0 - xu) / r0, 1e-6, None))), 1e-12)
    start_down = max(float(np.mean(yd / np.clip((xd - lo0) / r0, 1e-6, None))), 1e-12)
    p0 = np.array([math.log(start_up), math.log(start_down), 0.0, 0.0,
                   math.log((hi0 - inc.w_hi) / span), math.log((inc.w_lo - lo0) / span)])
    p = _levenberg_marquardt(residual, p0)
    dwu, dwd, gu, gd, hi, lo = (float(v) for v in unpack(p))
    gamma = 0.5 * (gu + gd)
    return PowStepDevice(**_steps(dwu, dwd), w_max=hi, w_min=lo, pow_gamma=gamma, pow_up_down=(gu - gd) / (gu + gd),
                         **_zero_spreads(PowStepDevice))


def _exp_direction(x: np.ndarray, y: np.ndarray, s: np.ndarray, span: float) -> tuple[float, float, float, float]:
    """``(dw, alpha, kappa, rss)`` of ``y ≈ dw (1 - alpha e^{kappa x})``: κ by a grid then a golden
    section search on the profile residual, ``dw`` and ``dw·alpha`` by linear least squares."""

    def solve(kappa):
        a = np.stack([np.ones_like(x), -np.exp(kappa * x)], axis=1)
        coef = _lstsq(a, y, s)
        # dw must be positive (the sign of the step is the pulse's), and not a huge number
        # nearly cancelled by α e^{κw} (the degenerate straight-line limit κ -> 0).
        if not 0 < coef[0] < 20 * top:
            return math.inf, coef
        r = (a @ coef - y) * s
        return float(r @ r), coef

    top = float(np.max(np.abs(y)))
    limit = 50.0 / span  # |γ| = |κ| R <= 50 keeps the config's exponent finite
    grid = np.linspace(-limit, limit, 400)
    costs = [solve(k)[0] for k in grid]
    i = int(np.argmin(costs))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    golden = (math.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = solve(a)[0], solve(b)[0]
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = solve(a)[0]
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = solve(b)[0]
    kappa = 0.5 * (lo + hi)
    rss, (dw, q) = solve(kappa)
    if abs(dw) < 1e-300:
        raise ConfigError("the exponential step fit found a zero step.")
    return float(dw), float(q / dw), float(kappa), rss


def _fit_exp(inc: Increments, nodes: int) -> DeviceConfig:
    from .expstep import ExpStepDevice

    xu, yu, xd, yd, su, sd = _split(inc)
    span = inc.w_hi - inc.w_lo
    dwu, alpha_u, kappa_u, _ = _exp_direction(xu, yu, su, span)
    dwd, alpha_d, kappa_d, _ = _exp_direction(xd, yd, sd, span)
    return ExpStepDevice(
        **_steps(dwu, dwd), w_max=inc.w_hi, w_min=inc.w_lo, a=0.5, b=0.0,
        A_up=alpha_u, A_down=alpha_d, gamma_up=kappa_u * span, gamma_down=-kappa_d * span,
        **_zero_spreads(ExpStepDevice),
    )


def _hat_basis(x: np.ndarray, lo: float, hi: float, nodes: int) -> np.ndarray:
    """``(len(x), nodes)``: the weights of linear interpolation between equally spaced nodes."""
    last = nodes - 1
    u = np.clip((x - lo) / (hi - lo) * last, 0, last)
    i = np.minimum(np.floor(u), last - 1).astype(int)
    t = u - i
    basis = np.zeros((len(x), nodes))
    basis[np.arange(len(x)), i] = 1 - t
    basis[np.arange(len(x)), i + 1] += t
    return basis


def _fit_piecewise(inc: Increments, nodes: int) -> DeviceConfig:
    from .piecewise import PiecewiseStepDevice

    if nodes < 2:
        raise ConfigError(f"a piecewise fit needs at least 2 nodes (got {nodes}).")
    xu, yu, xd, yd, su, sd = _split(inc)
    smooth = np.diff(np.eye(nodes), n=2, axis=0) if nodes > 2 else np.zeros((0, nodes))

    def table(x, y, s):
        basis = _hat_basis(x, inc.w_lo, inc.w_hi, nodes) * s[:, None]
        y = y * s
        # A light second-difference penalty: nodes without data follow their neighbours.
        lam = 1e-6 * max(float(np.trace(basis.T @ basis)) / nodes, 1e-30)
        a = np.concatenate([basis, math.sqrt(lam) * smooth])
        rhs = np.concatenate([y, np.zeros(len(smooth))])
        values, *_ = np.linalg.lstsq(a, rhs, rcond=None)
        return np.clip(values, 0, None)

    up, down = table(xu, yu, su), table(xd, yd, sd)
    mid = nodes // 2
    scale = 0.5 * (up[mid] + down[mid])
    if not up[mid] > 0 or not scale > 0:
        raise ConfigError("the fitted up step at the middle node is not positive.")
    return PiecewiseStepDevice(
        dw_min=float(scale), up_down=0.0, w_max=inc.w_hi, w_min=inc.w_lo,
        piecewise_up=tuple(float(v) for v in up / scale), piecewise_down=tuple(float(v) for v in down / scale),
        **_zero_spreads(PiecewiseStepDevice),
    )


_FITTERS = {
    "constant-step": _fit_constant,
    "linear-step": _fit_linear,
    "soft-bounds": _fit_soft_bounds,
    "pow-step": _fit_pow,
    "exp-step": _fit_exp,
    "piecewise": _fit_piecewise,
}

_SHOWN = {
    "constant-step": ("dw_min", "up_down", "w_min", "w_max"),
    "linear-step": ("dw_min", "up_down", "gamma_up", "gamma_down", "w_min", "w_max"),
    "soft-bounds": ("dw_min", "up_down", "w_min", "w_max"),
    "pow-step": ("dw_min", "up_down", "pow_gamma", "pow_up_down", "w_min", "w_max"),
    "exp-step": ("dw_min", "up_down", "A_up", "A_down", "gamma_up", "gamma_down", "a", "b", "w_min", "w_max"),
    "piecewise": ("dw_min", "w_min", "w_max", "piecewise_up", "piecewise_down"),
}


def predicted_increments(device: DeviceConfig, w: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """The noise-free signed step of ``device``'s mean device at weights ``w`` (its ``steps_at``)."""
    import torch

    from .response import mean_device

    mean = mean_device(device)
    model = mean.model()
    params = mean.draw_parameters((1, 1), torch.Generator().manual_seed(0), dtype=torch.float64)
    n = len(w)
    weights = torch.as_tensor(np.asarray(w, dtype=float)).view(1, n)
    up, down = model.steps_at(weights, params.expand(-1, 1, n).contiguous())
    up, down = up.expand(1, n)[0].numpy(), down.expand(1, n)[0].numpy()
    return np.where(np.asarray(sign) > 0, up, -down)


def _weights(predicted: np.ndarray) -> np.ndarray:
    """``1 / step²``, the step floored at a tenth of the median step."""
    size = np.abs(predicted)
    floor = 0.1 * float(np.median(size)) if np.any(size > 0) else 1.0
    return 1.0 / np.maximum(size, floor) ** 2


def _reference_weights(inc: Increments, nodes: int) -> np.ndarray:
    """The least-squares weights shared by all families: ``1 / step²`` of a piecewise fit of at
    least 11 nodes (unweighted, then reweighted once by itself)."""
    if inc.reference_weight is None:
        inc.weight = None
        table = max(nodes, 11)
        predicted = predicted_increments(_fit_piecewise(inc, table), inc.w, inc.sign)
        inc.weight = _weights(predicted)
        predicted = predicted_increments(_fit_piecewise(inc, table), inc.w, inc.sign)
        inc.reference_weight = _weights(predicted)
    return inc.reference_weight


def _fit_one(inc: Increments, family: str, nodes: int) -> DeviceFit:
    scale = float(np.mean(np.abs(inc.dw))) or 1.0
    common = dict(n_increments=len(inc.dw), excluded=inc.excluded, mapping=inc.mapping, directions=inc.directions)
    try:
        # The cycle-to-cycle noise of a step is proportional to it: weighted least squares with
        # weights 1 / step², the steps first from a flexible reference fit (a piecewise table of
        # at least 11 nodes, the same for every family), then once more from the family's own fit.
        inc.weight = _reference_weights(inc, nodes)
        for k in range(1 + REWEIGHTS):
            if k:
                inc.weight = _weights(predicted)
            device = _FITTERS[family](inc, nodes)
            predicted = predicted_increments(device, inc.w, inc.sign)
    except ConfigError as exc:
        inc.weight = None
        return DeviceFit(family, None, {}, math.inf, math.inf, math.nan, error=str(exc), **common)
    inc.weight = None
    residual = inc.dw - predicted
    rms = float(np.sqrt(np.mean(residual**2)))
    c2c = float(np.sqrt(np.sum(residual**2) / max(float(np.sum(predicted**2)), 1e-300)))
    device = device.replace(dw_min_std=c2c)
    parameters = {name: getattr(device, name) for name in _SHOWN[family]}
    parameters["dw_min_std"] = c2c
    return DeviceFit(family, device, parameters, rms, rms / scale, c2c, **common)


def fit_device(
    pulses,
    conductance,
    family: str = "soft-bounds",
    *,
    direction=None,
    is_weight: bool = False,
    w_range: tuple[float, float] | None = None,
    g_range: tuple[float, float] | None = None,
    nodes: int = 11,
) -> DeviceFit:
    """Fit a device family's mean-device parameters to one device's pulse response.

    Args:
        pulses: pulse number of each row (each row is the state after that pulse).
        conductance: conductance (or, with ``is_weight``, weight) of each row.
        family: one of :data:`FAMILIES`, or ``"auto"``: every family, then the first in
            :data:`FAMILIES` order whose RMS error is within :data:`AUTO_TOLERANCE` of the lowest
            (``linear-step`` before ``soft-bounds`` if the data sit on a hard bound).
        direction: +1/-1 of the pulse that led to each row (row 0's is ignored), or None to
            infer it from the increments.
        is_weight: the values are weights already (used as given unless a range is given).
        w_range: the weight range the conductance range maps to (default ``(-1, 1)``).
        g_range: the conductance range mapped to ``w_range`` (default: observed min and max).
        nodes: table nodes of the ``piecewise`` family.

    Returns:
        A :class:`DeviceFit`; its ``tile_config()`` is the 2016 preset with the fitted device.
    """
    data = PulseData(
        pulse=np.asarray(pulses, dtype=float), value=np.asarray(conductance, dtype=float),
        direction=None if direction is None else np.asarray(direction, dtype=float), is_weight=is_weight,
        value_name="weight" if is_weight else "conductance",
    )
    if data.pulse.shape != data.value.shape or data.pulse.ndim != 1:
        raise ConfigError(f"pulses and conductance must be 1-D of equal length (got {data.pulse.shape}, {data.value.shape}).")
    if data.direction is not None and data.direction.shape != data.pulse.shape:
        raise ConfigError(f"direction must have one entry per pulse (got {data.direction.shape}, {data.pulse.shape}).")
    if not (np.all(np.isfinite(data.pulse)) and np.all(np.isfinite(data.value))):
        raise ConfigError("pulses and conductance must be finite numbers.")
    return fit_increments(prepare_increments(data, w_range, g_range), family, nodes)


def fit_increments(inc: Increments, family: str = "soft-bounds", nodes: int = 11) -> DeviceFit:
    """:func:`fit_device` on prepared increments (:func:`prepare_increments`)."""
    if family != "auto":
        if family not in _FITTERS:
            raise ConfigError(f"unknown family '{family}'; one of {', '.join(FAMILIES)} or auto.")
        fit = _fit_one(inc, family, nodes)
        if fit.device is None:
            raise ConfigError(f"the {family} fit failed: {fit.error}")
        return fit
    fits = [_fit_one(inc, f, nodes) for f in FAMILIES]
    best = min(f.rms for f in fits)
    if not math.isfinite(best):
        raise ConfigError("no family fits the data: " + "; ".join(f"{f.family}: {f.error}" for f in fits))
    floor = 1e-9 * float(np.mean(np.abs(inc.dw)))
    order = list(FAMILIES)
    if inc.hard_bounds:  # the same straight lines: the data say whether the bounds are hard
        order[1], order[2] = order[2], order[1]
    by_name = {f.family: f for f in fits}
    chosen = next(by_name[name] for name in order if by_name[name].rms <= best * (1 + AUTO_TOLERANCE) + floor)
    return dataclasses.replace(chosen, candidates=fits)
