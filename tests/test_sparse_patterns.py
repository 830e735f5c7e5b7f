"""Connection patterns: degrees, clash freedom, edge counts, reproducibility, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from insitu.config import ConfigError
from insitu.sparse import PatternConfig, make_pattern, network_density


@st.composite
def junctions(draw):
    """(n_in, n_out, d_out, z) with n_in·d_out divisible by n_out and z dividing n_in."""
    n_out = draw(st.integers(1, 24))
    d_out = draw(st.integers(1, n_out))
    unit = n_out // math.gcd(n_out, d_out)  # n_in must be a multiple of this
    n_in = unit * draw(st.integers(1, max(1, 48 // unit)))
    z = draw(st.sampled_from([d for d in range(1, n_in + 1) if n_in % d == 0]))
    return n_in, n_out, d_out, z


def _check_degrees(pattern, n_in, n_out, d_out):
    d_in = n_in * d_out // n_out
    assert pattern.num_edges == n_in * d_out == n_out * d_in
    assert torch.equal(torch.bincount(pattern.cols, minlength=n_in), torch.full((n_in,), d_out))
    assert torch.equal(torch.bincount(pattern.rows, minlength=n_out), torch.full((n_out,), d_in))
    pairs = set(zip(pattern.rows.tolist(), pattern.cols.tolist()))
    assert len(pairs) == pattern.num_edges, "an edge is repeated"


def _clocks_read_distinct_banks(pattern, z):
    cols = pattern.cols.tolist()
    return all(len({c % z for c in cols[k : k + z]}) == z for k in range(0, len(cols), z))


@settings(max_examples=60, deadline=None)
@given(junctions(), st.integers(0, 2**31))
def test_structured_patterns_have_fixed_degrees(junction, seed):
    n_in, n_out, d_out, _ = junction
    pattern = make_pattern(n_in, n_out, d_out, PatternConfig("structured"), seed=seed)
    _check_degrees(pattern, n_in, n_out, d_out)
    assert pattern.density == pytest.approx(d_out / n_out)


@settings(max_examples=80, deadline=None)
@given(junctions(), st.sampled_from([1, 2, 3]), st.booleans(), st.integers(0, 2**31))
def test_clash_free_patterns_are_clash_free_and_biregular(junction, interleaver_type, dither, seed):
    n_in, n_out, d_out, z = junction
    config = PatternConfig("clash-free", z=z, interleaver_type=interleaver_type, dither=dither)
    try:
        pattern = make_pattern(n_in, n_out, d_out, config, seed=seed)
    except ConfigError as exc:
        # Only a right neuron straddling two sweeps can force a repeat: impossible when d_out | n_out.
        assert n_out % d_out != 0, exc
        assert "straddle" in str(exc)
        return
    _check_degrees(pattern, n_in, n_out, d_out)
    assert _clocks_read_distinct_banks(pattern, z)
    assert pattern.is_clash_free(z)


@settings(max_examples=40, deadline=None)
@given(junctions(), st.integers(0, 2**31))
def test_random_patterns_keep_the_edge_count(junction, seed):
    n_in, n_out, d_out, _ = junction
    pattern = make_pattern(n_in, n_out, d_out, PatternConfig("random"), seed=seed)
    assert pattern.num_edges == n_in * d_out
    assert not pattern.has_repeated_edges()
    assert int(pattern.rows.max()) < n_out and int(pattern.cols.max()) < n_in


def test_structured_pattern_is_usually_not_clash_free():
    # The property test above is meaningful only if clash freedom is not automatic.
    pattern = make_pattern(800, 100, 50, PatternConfig("structured"), seed=0)
    assert not pattern.is_clash_free(40)
    assert not _clocks_read_distinct_banks(pattern, 40)


def test_random_pattern_degrees_vary():
    pattern = make_pattern(800, 100, 10, PatternConfig("random"), seed=0)
    out_deg, in_deg = pattern.degrees()
    assert out_deg.min() < out_deg.max() and in_deg.min() < in_deg.max()


def test_same_seed_same_pattern_other_seed_other_pattern():
    config = PatternConfig("clash-free", z=20, interleaver_type=1, dither=True)
    a = make_pattern(100, 50, 10, config, seed=3)
    b = make_pattern(100, 50, 10, config, seed=3)
    c = make_pattern(100, 50, 10, config, seed=4)
    assert torch.equal(a.cols, b.cols) and torch.equal(a.rows, b.rows)
    assert not torch.equal(a.cols, c.cols)


def test_type_3_repeats_the_address_map_every_sweep():
    pattern = make_pattern(40, 10, 4, PatternConfig("clash-free", z=10, interleaver_type=3), seed=1)
    sweeps = pattern.cols.reshape(4, 40)
    assert all(torch.equal(sweeps[0], s) for s in sweeps[1:])
    type1 = make_pattern(40, 10, 4, PatternConfig("clash-free", z=10, interleaver_type=1), seed=1).cols.reshape(4, 40)
    assert not all(torch.equal(type1[0], s) for s in type1[1:])


def test_mask_and_network_density():
    p1 = make_pattern(800, 100, 50, seed=0)
    p2 = make_pattern(100, 10, 10, seed=0)
    mask = p1.to_mask()
    assert mask.shape == (100, 800) and int(mask.sum()) == 40_000
    assert network_density([p1, p2]) == pytest.approx((40_000 + 1_000) / (80_000 + 1_000))


def test_degrees_that_do_not_divide_are_rejected():
    with pytest.raises(ConfigError, match="does not divide.*Out-degrees that work"):
        make_pattern(10, 4, 3)
    with pytest.raises(ConfigError, match="cannot connect to more"):
        make_pattern(10, 4, 5)


def test_z_that_does_not_fit_the_banks_is_rejected():
    with pytest.raises(ConfigError, match="z must divide n_in = 100"):
        make_pattern(100, 10, 5, PatternConfig("clash-free", z=30))
    with pytest.raises(ConfigError, match="needs the degree of parallelism z"):
        PatternConfig("clash-free")
    with pytest.raises(ConfigError, match="kind"):
        PatternConfig("clash_free", z=4)
