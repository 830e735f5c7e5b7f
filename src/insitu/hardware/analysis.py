"""Which assumption moves a figure of merit, and what value a headline would need.

Parameters are addressed by dotted paths into an estimator's config (``"bl"``,
``"periphery.adc_energy_j"``). Metrics are keys of :meth:`Estimate.summary`
(``"gops_per_s_per_w"``, ``"time_per_example_s"``, ...) or any function of an estimate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from ..config import Config, ConfigError
from .base import Estimate, get_estimator
from .shapes import NetworkShape

__all__ = ["metric_of", "numeric_parameters", "required_value", "sensitivity", "with_parameter"]


def numeric_parameters(config: Config, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of ``config`` (nested configs flattened with dots); booleans excluded."""
    out: dict[str, float] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        path = f"{prefix}{f.name}"
        if isinstance(value, Config):
            out.update(numeric_parameters(value, path + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[path] = value
    return out


def with_parameter(config: Config, path: str, value) -> Config:
    """A validated copy of ``config`` with the dotted ``path`` set to ``value``."""
    head, _, rest = path.partition(".")
    if not any(f.name == head for f in dataclasses.fields(config)):
        raise ConfigError(f"{type(config).__name__} has no parameter '{head}'; see numeric_parameters(config).")
    if rest:
        return config.replace(**{head: with_parameter(getattr(config, head), rest, value)})
    current = getattr(config, head)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float) and value.is_integer():
        value = int(value)
    return config.replace(**{head: value})


def metric_of(estimate: Estimate, metric: str | Callable[[Estimate], float]) -> float:
    if callable(metric):
        return float(metric(estimate))
    summary = estimate.summary()
    if metric not in summary:
        raise ConfigError(f"Unknown metric '{metric}'; choose one of {sorted(summary)} or pass a function.")
    return float(summary[metric])


def sensitivity(hardware: str, config: Config, network: NetworkShape, metric, factor: float = 2.0,
                examples_per_epoch: int = 60000) -> list[dict]:
    """Change each numeric parameter by ``×factor`` and ``÷factor``, one at a time.

    Returns one row per parameter, sorted by how much it moves ``metric`` (largest first):
    ``{"parameter", "value", "low", "high", "ratio_low", "ratio_high"}``, the ratios being the
    metric at ``value/factor`` and ``value·factor`` over the metric at ``value``. Parameters equal
    to 0 are skipped (scaling does nothing), as are those whose changed value fails validation
    (e.g. a probability already at 1 cannot double).
    """
    base = metric_of(get_estimator(hardware, config).estimate(network, examples_per_epoch), metric)
    rows = []
    for path, value in numeric_parameters(config).items():
        if value == 0:
            continue
        ratios = {}
        for label, new in (("low", value / factor), ("high", value * factor)):
            if isinstance(value, int):  # integer parameters (array size, BL) stay integers >= 1
                new = max(1, round(new))
            try:
                changed = with_parameter(config, path, new)
            except ConfigError:
                ratios[label] = None
                continue
            ratios[label] = metric_of(get_estimator(hardware, changed).estimate(network, examples_per_epoch), metric) / base
        moved = [abs(math.log(r)) for r in ratios.values() if r]
        if not moved:
            continue
        rows.append({"parameter": path, "value": value, "ratio_low": ratios["low"], "ratio_high": ratios["high"],
                     "max_log_change": max(moved)})
    rows.sort(key=lambda row: -row["max_log_change"])
    return rows


def required_value(hardware: str, config: Config, network: NetworkShape, path: str, metric, target: float,
                   low: float, high: float, examples_per_epoch: int = 60000, steps: int = 80) -> float | None:
    """The value of parameter ``path`` in ``[low, high]`` at which ``metric`` equals ``target``.

    Bisection on a log scale, assuming the metric is monotonic in the parameter over the
    interval (integer parameters are rounded, so the result is within one step of the target). Returns ``None`` when the target is outside the metric's range on the interval
    (the headline cannot be reached by that parameter alone).
    """
    if not (0 < low < high):
        raise ConfigError(f"required_value: need 0 < low < high, got low={low}, high={high}.")

    integer = isinstance(numeric_parameters(config).get(path), int)

    def f(v: float) -> float:
        if integer:  # an integer parameter (array size, transfer interval) is searched on integers
            v = max(1, round(v))
        est = get_estimator(hardware, with_parameter(config, path, v)).estimate(network, examples_per_epoch)
        return metric_of(est, metric) - target

    f_low, f_high = f(low), f(high)
    if f_low == 0:
        return low
    if f_high == 0:
        return high
    if (f_low > 0) == (f_high > 0):
        return None
    lo, hi = math.log(low), math.log(high)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        f_mid = f(math.exp(mid))
        if (f_mid > 0) == (f_low > 0):
            lo, f_low = mid, f_mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))
