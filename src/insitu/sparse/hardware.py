"""The edge-processing training accelerator of Dey, Shao, Chugg & Beerel (2017), as a cost model.

Junction ``i`` (``N_{i-1} -> N_i``, out-degree ``d_out,i``, in-degree ``d_in,i``) has
``|W_i| = N_{i-1}·d_out,i`` edges and processes ``z_i`` of them per clock, so one junction cycle
takes ``C_i = |W_i| / z_i`` clocks. The hardware makes ``C`` the same for every junction
(``z_i = |W_i| / C``) and pipelines the junctions, each running feed-forward (FF),
back-propagation (BP) and update (UP) at once on different examples, so one training example
finishes every ``C + overhead`` clocks whatever the depth:

    throughput = f_clock / (C + overhead)   examples per second.

Resources per junction follow the authors' own estimator (``scripts/fpga_usage.py`` of
souryadey/mlp-ondevice-training; see /work/shared/reference/papers.md, 5.3):

* FF: ``z`` multipliers, ``d_in`` adders (an adder tree of ``d_in − 1`` plus the bias);
* UP: ``z + ceil(z/d_in)`` multipliers and as many adders (weights and biases);
* BP: ``2z`` multipliers (``w·δ`` and the activation derivative) and ``z`` adders, in every
  junction but the first (the input layer needs no error);
* memories: ``z + ceil(z/d_in)`` weight-and-bias banks of ``C`` words; ``z`` activation banks of
  ``N_{i-1}/z`` words, in ``2(L − i) − 1`` copies for the pipeline (``i`` from 0); activation
  derivatives (hidden layers) likewise; errors in 2 copies.

The *dense* comparison gives a fully connected network of the same sizes the same number of
multipliers and asks how many clocks its junction cycle then needs; the modelled speed-up is the
ratio of the cycles. A measured PyTorch training step on this machine
(:func:`measure_torch_step`) gives the software reference.
"""

from __future__ import annotations

import dataclasses
import math
import time

from ..config import Config, ConfigError, register_config
from .patterns import in_degree

__all__ = ["EdgeEstimate", "EdgeHardwareConfig", "JunctionEstimate", "estimate", "measure_torch_step"]


@register_config
@dataclasses.dataclass
class EdgeHardwareConfig(Config):
    """Parameters of the edge-processing hardware.

    Attributes:
        clock_hz: clock frequency (an assumption of the user; the authors' board design uses a
            UART clock of 60 MHz, the compute clock is not recorded in papers.md).
        overhead_clocks: extra clocks per junction cycle beyond ``C`` (the RTL adds 2 plus the
            processing latency in ``DNN_top.sv``, 12 in ``DNN.sv``).
        word_bits: width of weights, activations, errors (12 in ``DNN.sv``).
        input_bits: width of the input activations (8 in the RTL).
    """

    clock_hz: float = 100e6
    overhead_clocks: int = 2
    word_bits: int = 12
    input_bits: int = 8

    def validate(self) -> None:
        self._check_positive("clock_hz")
        for field in ("overhead_clocks", "word_bits", "input_bits"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if field == "overhead_clocks" else 1):
                self._fail(field, "must be a non-negative integer." if field == "overhead_clocks" else "must be an integer >= 1.")


@dataclasses.dataclass
class JunctionEstimate:
    """Per-junction figures of :func:`estimate`."""

    n_in: int
    n_out: int
    out_degree: int
    in_degree: int
    edges: int
    density: float
    z: int
    clocks_per_cycle: int
    ff_multipliers: int
    ff_adders: int
    bp_multipliers: int
    bp_adders: int
    up_multipliers: int
    up_adders: int
    weight_banks: int
    weight_words: int
    activation_banks: int
    activation_words: int
    memory_bits: int

    @property
    def multipliers(self) -> int:
        return self.ff_multipliers + self.bp_multipliers + self.up_multipliers

    @property
    def adders(self) -> int:
        return self.ff_adders + self.bp_adders + self.up_adders


@dataclasses.dataclass
class EdgeEstimate:
    """Whole-network figures of :func:`estimate` (``junctions`` holds the per-junction ones)."""

    sizes: tuple[int, ...]
    junctions: list[JunctionEstimate]
    clocks_per_cycle: int
    clocks_per_example: int
    clock_hz: float
    examples_per_second: float
    edges: int
    dense_edges: int
    network_density: float
    complexity_reduction: float
    multipliers: int
    adders: int
    memory_bits: int
    dense_clocks_per_cycle: int
    dense_z: tuple[int, ...]
    dense_multipliers: int
    dense_examples_per_second: float
    speedup_vs_dense: float

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for j, junction in zip(out["junctions"], self.junctions):
            j["multipliers"] = junction.multipliers
            j["adders"] = junction.adders
        return out


def _junction(index: int, n_layers: int, n_in: int, n_out: int, d_out: int, z: int, config: EdgeHardwareConfig) -> JunctionEstimate:
    d_in = in_degree(n_in, n_out, d_out)
    edges = n_in * d_out
    clocks = edges // z
    bias_lanes = math.ceil(z / d_in)  # right neurons finishing per clock, one bias each
    first = index == 0
    activation_copies = 2 * (n_layers - index) - 1  # pipeline depth still ahead of this layer
    activation_words = activation_copies * n_in
    derivative_words = 0 if first else activation_copies * n_in
    error_words = 2 * n_out
    weight_words = (z + bias_lanes) * clocks
    act_bits = config.input_bits if first else config.word_bits
    memory_bits = config.word_bits * (weight_words + derivative_words + error_words) + act_bits * activation_words
    return JunctionEstimate(
        n_in=n_in, n_out=n_out, out_degree=d_out, in_degree=d_in, edges=edges, density=d_out / n_out, z=z,
        clocks_per_cycle=clocks,
        ff_multipliers=z, ff_adders=d_in,
        bp_multipliers=0 if first else 2 * z, bp_adders=0 if first else z,
        up_multipliers=z + bias_lanes, up_adders=z + bias_lanes,
        weight_banks=z + bias_lanes, weight_words=weight_words,
        activation_banks=z, activation_words=activation_words,
        memory_bits=memory_bits,
    )


def _multipliers(sizes, out_degrees, zs) -> int:
    total = 0
    for i, (n_in, n_out, d_out, z) in enumerate(zip(sizes[:-1], sizes[1:], out_degrees, zs)):
        d_in = n_in * d_out // n_out
        total += z + (z + math.ceil(z / d_in)) + (0 if i == 0 else 2 * z)
    return total


def _dense_on_same_multipliers(sizes: tuple[int, ...], budget: int) -> tuple[int, tuple[int, ...]]:
    """Smallest junction cycle ``C`` of the fully connected network whose multipliers, with
    ``z_i = ceil(N_{i-1}·N_i / C)``, fit in ``budget``."""
    dense_edges = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    full = list(sizes[1:])

    def zs(c):
        return tuple(math.ceil(e / c) for e in dense_edges)

    low, high = 1, max(dense_edges)
    while low < high:
        mid = (low + high) // 2
        if _multipliers(sizes, full, zs(mid)) <= budget:
            high = mid
        else:
            low = mid + 1
    return low, zs(low)


def estimate(
    sizes,
    out_degrees,
    config: EdgeHardwareConfig | None = None,
    z=None,
    clocks_per_cycle: int | None = None,
) -> EdgeEstimate:
    """Model the edge-processing accelerator training a sparse MLP.

    Args:
        sizes: neurons per layer ``(N_0, ..., N_L)``, e.g. ``(800, 100, 10)``.
        out_degrees: ``d_out`` per junction (``L`` values); ``N_i`` is fully connected.
        config: the :class:`EdgeHardwareConfig`.
        z: edges per clock per junction (``L`` values), all giving the same ``|W_i|/z_i``; or
        clocks_per_cycle: the common ``C``, from which ``z_i = |W_i| / C``. Give exactly one.

    Returns:
        an :class:`EdgeEstimate` (``.to_dict()`` for JSON) with per-junction and total figures.

    Raises:
        ConfigError: degrees that do not divide, ``z`` that does not divide ``|W_i|`` or ``N_{i-1}``
        (the banks), unequal junction cycles.
    """
    config = EdgeHardwareConfig() if config is None else config
    sizes = tuple(int(s) for s in sizes)
    out_degrees = tuple(int(d) for d in out_degrees)
    if len(sizes) < 2 or len(out_degrees) != len(sizes) - 1:
        raise ConfigError(f"estimate: give L+1 layer sizes and L out-degrees, got sizes {sizes} and out-degrees {out_degrees}.")
    edges = [n * d for n, d in zip(sizes[:-1], out_degrees)]
    for i, (n_in, n_out, d_out) in enumerate(zip(sizes[:-1], sizes[1:], out_degrees)):
        in_degree(n_in, n_out, d_out)  # validates the degrees
    if (z is None) == (clocks_per_cycle is None):
        raise ConfigError("estimate: give either z (edges per clock per junction) or clocks_per_cycle, not both or neither.")
    if clocks_per_cycle is not None:
        bad = [i for i, e in enumerate(edges) if e % clocks_per_cycle]
        if bad or clocks_per_cycle < 1:
            raise ConfigError(
                f"clocks_per_cycle = {clocks_per_cycle} must divide every junction's edge count {edges} "
                f"(z_i = |W_i|/C must be an integer); common divisors: "
                f"{[c for c in range(1, min(edges) + 1) if all(e % c == 0 for e in edges)][:20]}."
            )
        z = tuple(e // clocks_per_cycle for e in edges)
    z = tuple(int(v) for v in z)
    if len(z) != len(edges):
        raise ConfigError(f"z needs one value per junction ({len(edges)}), got {z}.")
    for i, (zi, e, n_in) in enumerate(zip(z, edges, sizes[:-1])):
        if zi < 1 or e % zi:
            raise ConfigError(f"z[{i}] = {zi} must be a positive divisor of the junction's {e} edges (clocks = |W|/z).")
        if n_in % zi:
            raise ConfigError(
                f"z[{i}] = {zi} does not fit the memory banks: the {n_in} left neurons sit in z banks of N/z words, "
                f"so z must divide {n_in}."
            )
    cycles = [e // zi for e, zi in zip(edges, z)]
    if len(set(cycles)) != 1:
        raise ConfigError(
            f"junction cycles |W_i|/z_i = {cycles} differ; the pipeline runs at the slowest. Choose z proportional to "
            f"the edge counts {edges} (or pass clocks_per_cycle)."
        )
    c = cycles[0]
    n_layers = len(sizes) - 1
    junctions = [
        _junction(i, n_layers, n_in, n_out, d, zi, config)
        for i, (n_in, n_out, d, zi) in enumerate(zip(sizes[:-1], sizes[1:], out_degrees, z))
    ]
    dense_edges = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    multipliers = sum(j.multipliers for j in junctions)
    dense_c, dense_z = _dense_on_same_multipliers(sizes, multipliers)
    per_example = c + config.overhead_clocks
    dense_per_example = dense_c + config.overhead_clocks
    return EdgeEstimate(
        sizes=sizes,
        junctions=junctions,
        clocks_per_cycle=c,
        clocks_per_example=per_example,
        clock_hz=config.clock_hz,
        examples_per_second=config.clock_hz / per_example,
        edges=sum(edges),
        dense_edges=dense_edges,
        network_density=sum(edges) / dense_edges,
        complexity_reduction=dense_edges / sum(edges),
        multipliers=multipliers,
        adders=sum(j.adders for j in junctions),
        memory_bits=sum(j.memory_bits for j in junctions),
        dense_clocks_per_cycle=dense_c,
        dense_z=dense_z,
        dense_multipliers=_multipliers(sizes, sizes[1:], dense_z),
        dense_examples_per_second=config.clock_hz / dense_per_example,
        speedup_vs_dense=dense_per_example / per_example,
    )


def measure_torch_step(
    sizes,
    out_degrees=None,
    batch_size: int = 1,
    steps: int = 200,
    warmup: int = 20,
    seed: int = 0,
) -> dict:
    """Time a PyTorch training step (forward, backward, SGD) of the same MLP on this machine.

    ``out_degrees=None`` times a dense ``nn.Linear`` network, else :class:`SparseLinear` layers
    with structured patterns. ReLU hidden layers, cross-entropy, random data, the current number
    of torch threads.

    Returns:
        ``{"seconds_per_step", "seconds_per_example", "examples_per_second", "batch_size", ...}``.
    """
    import torch
    from torch import nn

    from .linear import SparseLinear
    from .patterns import make_pattern

    sizes = tuple(int(s) for s in sizes)
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if out_degrees is None:
            layers.append(nn.Linear(n_in, n_out))
        else:
            layers.append(SparseLinear(make_pattern(n_in, n_out, int(out_degrees[i]), seed=seed + i), seed=seed + i))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch_size, sizes[0], generator=gen)
    y = torch.randint(0, sizes[-1], (batch_size,), generator=gen)

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - start) / steps
    return {
        "sizes": list(sizes),
        "out_degrees": None if out_degrees is None else [int(d) for d in out_degrees],
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "seconds_per_step": per_step,
        "seconds_per_example": per_step / batch_size,
        "examples_per_second": batch_size / per_step,
    }
