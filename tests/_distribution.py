"""Comparisons in distribution shared by the engine tests: two backends (or layouts) give the same
update when the per-device means agree within their standard errors and the total variances agree."""

from __future__ import annotations

import math

import numpy as np
import torch


def assert_same_distribution(a: torch.Tensor, b: torch.Tensor, draws: int, ratio=(0.8, 1.25), moved=None) -> None:
    """``a``, ``b``: ``(draws, *devices)`` weight changes. Per device the difference of the means in
    units of its standard error stays below 4.8, their mean z below 4/sqrt(devices), and the ratio of
    the summed variances within ``ratio``; ``moved`` restricts the z-scores to those devices."""
    se = torch.sqrt(a.var(0) / draws + b.var(0) / draws)
    diff = a.mean(0) - b.mean(0)
    if moved is None:
        z = diff / se.clamp_min(1e-12)
    else:
        z = diff[moved] / se[moved]
    assert float(z.abs().max()) < 4.8, float(z.abs().max())
    assert abs(float(z.mean())) < 4 / math.sqrt(z.numel())
    variance_ratio = float(a.var(0).sum() / b.var(0).sum())
    assert ratio[0] < variance_ratio < ratio[1], variance_ratio


def assert_same_counts(a_pulses, b_pulses, a_coincidences, b_coincidences, draws: int) -> None:
    """Pulses are counted as their expected number (equal to rounding); coincidence totals agree
    in distribution."""
    assert np.allclose(a_pulses, b_pulses, rtol=1e-5)
    z = (a_coincidences.mean() - b_coincidences.mean()) / math.sqrt(
        a_coincidences.var() / draws + b_coincidences.var() / draws + 1e-12
    )
    assert abs(z) < 4.5
