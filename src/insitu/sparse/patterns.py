"""Pre-defined connection patterns of a sparse junction (Dey, Shao, Chugg & Beerel 2017).

A *junction* connects ``n_in`` left neurons to ``n_out`` right neurons. In a *structured*
pattern every left neuron has the same out-degree ``d_out`` and every right neuron the same
in-degree ``d_in``, so the number of edges is

    |W| = n_in · d_out = n_out · d_in                     (Dey et al. 2017, Sec. 2)

and the junction density is ``ρ = d_out / n_out = d_in / n_in``.

Edges are kept in *processing order*: the order in which the edge-processing hardware visits
them, ``z`` edges per clock. Position ``k`` belongs to right neuron ``k // d_in`` (the right
side is visited neuron after neuron). The order is built from ``d_out`` *sweeps*; each sweep
visits every left neuron exactly once, which gives every left neuron out-degree ``d_out``.

Left activations live in ``z`` memory banks: left neuron ``l`` in bank ``l % z`` at address
``l // z``. A pattern is *clash-free* for ``z`` when the ``z`` edges of every clock read ``z``
different banks (one read port per bank). Clash-free patterns come from the interleaver of the
papers: in clock ``t`` of a sweep, slot ``s`` reads bank ``v(s)`` at address ``a_b(t)``:

* type 1: ``a_b`` an arbitrary permutation of the ``n_in/z`` addresses, new per bank and sweep;
* type 2: ``a_b(t) = (start_b + t) mod (n_in/z)`` with a random start, new every sweep;
* type 3: type 2 with the same starts in every sweep;
* ``v`` is the identity, or with *memory dither* a random permutation of the banks held for a
  sweep (new every sweep except in type 3).

*Unstructured random* patterns draw the same number of edges uniformly among all
``n_in · n_out`` positions, without degree constraints (the baseline of the papers).
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import Config, ConfigError, register_config

__all__ = [
    "PATTERN_KINDS",
    "ConnectionPattern",
    "PatternConfig",
    "in_degree",
    "make_pattern",
    "network_density",
]

#: Accepted values of ``PatternConfig.kind``.
PATTERN_KINDS = ("structured", "clash-free", "random")

# A structured draw repeats an edge only where a right neuron straddles two sweeps; the
# clash-free interleaver cannot repair that without breaking clash freedom, so it redraws.
_MAX_CLASH_FREE_TRIES = 200


def in_degree(n_in: int, n_out: int, out_degree: int) -> int:
    """``d_in = n_in · d_out / n_out``; raises :class:`ConfigError` when it is not an integer."""
    for name, value in (("n_in", n_in), ("n_out", n_out), ("out_degree", out_degree)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} = {value!r}: must be a positive integer.")
    if out_degree > n_out:
        raise ConfigError(
            f"out_degree = {out_degree}: a left neuron cannot connect to more than the n_out = {n_out} right neurons; "
            f"use out_degree <= {n_out} ({n_out} is fully connected)."
        )
    if (n_in * out_degree) % n_out:
        valid = [d for d in range(1, n_out + 1) if (n_in * d) % n_out == 0]
        raise ConfigError(
            f"out_degree = {out_degree} does not divide: n_in·d_out = {n_in}·{out_degree} = {n_in * out_degree} "
            f"must equal n_out·d_in = {n_out}·d_in with an integer in-degree d_in. "
            f"Out-degrees that work for {n_in} -> {n_out}: {valid[:12]}{' ...' if len(valid) > 12 else ''}."
        )
    return n_in * out_degree // n_out


@register_config
@dataclasses.dataclass
class PatternConfig(Config):
    """How the connections of one junction are chosen.

    Attributes:
        kind: ``structured`` (random biregular: fixed in- and out-degrees), ``clash-free``
            (structured and clash-free for ``z`` memory banks) or ``random`` (the same number of
            edges spread uniformly, no degree constraint).
        z: degree of parallelism, edges processed per clock (``clash-free`` only): the number of
            memory banks holding the left activations. Must divide ``n_in``.
        interleaver_type: 1, 2 or 3, the interleaver family (see the module docstring).
        dither: memory dither (a random bank order held for each sweep).
    """

    kind: str = "structured"
    z: int | None = None
    interleaver_type: int = 1
    dither: bool = False

    def validate(self) -> None:
        self._check_choice("kind", PATTERN_KINDS)
        self._check_choice("interleaver_type", (1, 2, 3))
        if not isinstance(self.dither, bool):
            self._fail("dither", "must be true or false.")
        if self.kind == "clash-free":
            if self.z is None:
                self._fail("z", "a clash-free pattern needs the degree of parallelism z (edges per clock, = memory banks).")
            if isinstance(self.z, bool) or not isinstance(self.z, int) or self.z < 1:
                self._fail("z", "must be a positive integer (edges per clock).")
        elif self.z is not None and (isinstance(self.z, bool) or not isinstance(self.z, int) or self.z < 1):
            self._fail("z", "must be a positive integer or None.")


# eq=False: patterns hold tensors, compared with torch.equal on rows/cols, not ==.
@dataclasses.dataclass(frozen=True, eq=False)
class ConnectionPattern:
    """The edges of one junction ``n_in -> n_out``.

    Attributes:
        n_in, n_out: neurons on the left and right.
        rows: int64 ``(num_edges,)``, the right neuron (output) of every edge.
        cols: int64 ``(num_edges,)``, the left neuron (input) of every edge.
        kind: the pattern kind that produced it.
        out_degree, in_degree: the fixed degrees (``None`` for ``random``).
        z: the parallelism the pattern was made clash-free for (``None`` otherwise).

    For ``structured`` and ``clash-free`` patterns the edges are in processing order (see the
    module docstring).
    """

    n_in: int
    n_out: int
    rows: torch.Tensor
    cols: torch.Tensor
    kind: str
    out_degree: int | None = None
    in_degree: int | None = None
    z: int | None = None

    @property
    def num_edges(self) -> int:
        return int(self.rows.numel())

    @property
    def density(self) -> float:
        """Junction density ``|W| / (n_in · n_out)``."""
        return self.num_edges / (self.n_in * self.n_out)

    def to_mask(self) -> torch.Tensor:
        """Boolean ``(n_out, n_in)`` adjacency matrix (True where an edge exists)."""
        mask = torch.zeros(self.n_out, self.n_in, dtype=torch.bool, device=self.rows.device)
        mask[self.rows, self.cols] = True
        return mask

    def degrees(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out-degree of every left neuron (n_in,), in-degree of every right neuron (n_out,))``."""
        return (
            torch.bincount(self.cols, minlength=self.n_in),
            torch.bincount(self.rows, minlength=self.n_out),
        )

    def has_repeated_edges(self) -> bool:
        keys = self.rows * self.n_in + self.cols
        return int(torch.unique(keys).numel()) != self.num_edges

    def is_clash_free(self, z: int) -> bool:
        """Whether every clock's ``z`` consecutive edges read ``z`` different banks (``cols % z``)."""
        if self.num_edges % z or self.n_in % z:
            return False
        banks = (self.cols % z).reshape(-1, z)
        return bool((banks.sort(dim=1).values == torch.arange(z, device=banks.device)).all())


def _check_z(n_in: int, z: int) -> None:
    if z > n_in or n_in % z:
        divisors = [d for d in range(1, n_in + 1) if n_in % d == 0]
        raise ConfigError(
            f"z = {z} does not fit the memory banks: the {n_in} left neurons are spread over z banks of n_in/z "
            f"neurons each, so z must divide n_in = {n_in}. Values that fit: {divisors}."
        )


def _sweep_structured(n_in: int, previous_tail: torch.Tensor, head: int, gen: torch.Generator) -> torch.Tensor:
    """One sweep: a random permutation of the left neurons whose first ``head`` entries avoid
    ``previous_tail`` (the neurons already given to the right neuron that straddles the sweeps)."""
    order = torch.randperm(n_in, generator=gen)
    if head == 0 or previous_tail.numel() == 0:
        return order
    taken = torch.zeros(n_in, dtype=torch.bool)
    taken[previous_tail] = True
    free = order[~taken[order]]  # random order of neurons the straddling right neuron lacks
    first = free[:head]
    rest_mask = torch.ones(n_in, dtype=torch.bool)
    rest_mask[first] = False
    rest = torch.nonzero(rest_mask).flatten()
    rest = rest[torch.randperm(rest.numel(), generator=gen)]
    return torch.cat((first, rest))


def _structured(n_in: int, n_out: int, d_out: int, d_in: int, gen: torch.Generator) -> torch.Tensor:
    """Left neuron of every position: ``d_out`` sweeps, each a permutation of the left neurons.

    A right neuron whose ``d_in`` positions straddle two sweeps could meet a left neuron twice;
    the next sweep's head is drawn among the neurons it does not have yet, so none repeats.
    """
    sweeps = []
    for s in range(d_out):
        start = s * n_in  # first position of this sweep
        straddle_from = (start // d_in) * d_in  # first position of the right neuron holding `start`
        # d_in <= n_in, so the straddling neuron's earlier edges all lie in the previous sweep.
        tail = sweeps[-1][straddle_from - (start - n_in):] if straddle_from < start else torch.empty(0, dtype=torch.long)
        head = min(straddle_from + d_in - start, n_in) if tail.numel() else 0
        sweeps.append(_sweep_structured(n_in, tail, head, gen))
    return torch.cat(sweeps)


def _clash_free(n_in: int, d_out: int, z: int, interleaver_type: int, dither: bool, gen: torch.Generator) -> torch.Tensor:
    """Left neuron of every position from the interleaver: clock ``t`` slot ``s`` reads bank
    ``v(s)`` at address ``a_{v(s)}(t)``, left neuron ``address · z + bank``."""
    depth = n_in // z  # addresses per bank = clocks per sweep
    sweeps = []
    starts = None
    bank_order = torch.arange(z)
    for s in range(d_out):
        if interleaver_type == 1:
            # (depth, z): column b is a random address permutation for bank b.
            addresses = torch.argsort(torch.rand(z, depth, generator=gen), dim=1).t()
        else:
            if starts is None or interleaver_type == 2:
                starts = torch.randint(0, depth, (z,), generator=gen)
            addresses = (starts.unsqueeze(0) + torch.arange(depth).unsqueeze(1)) % depth
        if dither and (s == 0 or interleaver_type != 3):
            bank_order = torch.randperm(z, generator=gen)
        # slot k of every clock reads bank bank_order[k]
        sweeps.append((addresses[:, bank_order] * z + bank_order.unsqueeze(0)).reshape(-1))
    return torch.cat(sweeps)


def make_pattern(
    n_in: int,
    n_out: int,
    out_degree: int,
    config: PatternConfig | None = None,
    seed: int = 0,
) -> ConnectionPattern:
    """Draw the connections of a junction ``n_in -> n_out``.

    Args:
        n_in, n_out: neurons on the left and right.
        out_degree: ``d_out`` of every left neuron; for ``random`` it only sets the edge count
            ``n_in · d_out``.
        config: the :class:`PatternConfig` (default: ``structured``).
        seed: seed of the generator; the same seed gives the same pattern.

    Raises:
        ConfigError: ``n_in · d_out`` is not a multiple of ``n_out``; ``z`` does not divide
            ``n_in``; no clash-free pattern without repeated edges was found.
    """
    config = PatternConfig() if config is None else config
    if not isinstance(config, PatternConfig):
        raise ConfigError(f"config must be a PatternConfig, got {type(config).__name__}.")
    d_in = in_degree(n_in, n_out, out_degree)
    gen = torch.Generator().manual_seed(int(seed))
    if config.kind == "random":
        edges = n_in * out_degree
        chosen = torch.randperm(n_in * n_out, generator=gen)[:edges].sort().values
        return ConnectionPattern(n_in, n_out, chosen // n_in, chosen % n_in, "random")
    rows = torch.arange(n_out).repeat_interleave(d_in)
    if config.kind == "structured":
        cols = _structured(n_in, n_out, out_degree, d_in, gen)
        return ConnectionPattern(n_in, n_out, rows, cols, "structured", out_degree, d_in, config.z)
    _check_z(n_in, config.z)
    for _ in range(_MAX_CLASH_FREE_TRIES):
        cols = _clash_free(n_in, out_degree, config.z, config.interleaver_type, config.dither, gen)
        pattern = ConnectionPattern(n_in, n_out, rows, cols, "clash-free", out_degree, d_in, config.z)
        if not pattern.has_repeated_edges():
            return pattern
    raise ConfigError(
        f"No clash-free pattern without repeated edges found for {n_in} -> {n_out}, out_degree {out_degree}, "
        f"z {config.z}, type {config.interleaver_type} in {_MAX_CLASH_FREE_TRIES} draws: a right neuron whose "
        f"{d_in} edges straddle two sweeps meets a left neuron twice. Choose an out_degree that divides "
        f"n_out = {n_out} (then no right neuron straddles sweeps), interleaver_type 1, or another seed."
    )


def network_density(patterns) -> float:
    """``ρ_net = Σ|W_i| / Σ n_in,i · n_out,i`` over the junctions of a network."""
    patterns = list(patterns)
    if not patterns:
        raise ValueError("network_density needs at least one pattern.")
    return sum(p.num_edges for p in patterns) / sum(p.n_in * p.n_out for p in patterns)
