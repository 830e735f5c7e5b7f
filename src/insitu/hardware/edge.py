"""The edge-processing sparse training accelerator (Dey, Shao, Chugg & Beerel 2017) as an estimator.

Time comes from :mod:`insitu.sparse.hardware` unchanged (papers.md §5.3): junction ``i`` with
``|W_i| = N_{i-1}·d_out,i`` edges processes ``z_i = |W_i| / C`` edges per clock; the junctions are
pipelined and each runs feed-forward (FF), back-propagation (BP) and update (UP) at once on
different examples, so one example finishes every ``C + overhead_clocks`` clocks:

    time per example = (C + overhead_clocks) / clock_hz.

Every junction is busy for the whole of that interval, so each layer's time is the full cycle and
the time per example is that of one layer (the slowest, all equal), as for pipelined tiles.

This module adds **energy** and **area**, which the sparse model does not have. Energy counts the
operations actually done per example (idle units clock-gated) [A], per junction with ``E`` edges,
``N_in`` left and ``N_out`` right neurons:

* FF: ``E`` multiplies (``w·a``) and ``E`` additions (accumulation of ``d_in`` products and the
  bias per right neuron);
* BP (not in the first junction: the input needs no error): ``E`` multiplies (``w·δ``), ``N_in``
  multiplies by the activation derivative, ``E − N_in`` additions;
* UP: ``E`` multiplies (``a·δ``; the power-of-two learning rate is a shift, papers.md §5.3) and
  ``E + N_out`` additions (weights and biases);
* memory, in words: FF reads ``E`` weights and ``E`` activations and writes ``N_out`` activations
  (and ``N_out`` derivatives when the right layer is hidden); BP reads ``E`` weights and ``E``
  errors and writes ``N_in`` errors; UP reads ``E`` activations and ``E`` errors, reads and
  writes ``E`` weights and ``N_out`` biases. Words are ``word_bits`` wide, input activations
  ``input_bits``.

Operation energies and unit areas are given at ``reference_bits`` and scaled to ``word_bits``:
multipliers with the square of the width (an array multiplier has ``b²`` partial-product cells),
adders linearly. Area = multipliers and adders of the sparse model's resource count (the
authors' ``fpga_usage.py``) + its memory bits. Control, routing and off-chip I/O are not
modelled (as in the sparse model): the figures are a lower bound on energy and area.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from ..config import Config, ConfigError, register_config
from ..sparse.hardware import EdgeEstimate, EdgeHardwareConfig
from ..sparse.hardware import estimate as edge_estimate
from ..sparse.patterns import in_degree
from .base import Estimate, Estimator, LayerEstimate, register_estimator
from .shapes import HardwareMappingError, LayerShape, NetworkShape

__all__ = ["EdgeEstimator", "EdgeSystemConfig"]

_UM2_TO_MM2 = 1e-6


@register_config
@dataclasses.dataclass
class EdgeSystemConfig(Config):
    """Every assumption of the edge-processing accelerator estimate.

    Attributes:
        clock_hz: compute clock [A: 100 MHz, as in docs/reproductions/dey-2017-sparse.md; papers.md
            records only the board's 60 MHz UART clock].
        overhead_clocks: clocks per junction cycle beyond ``C`` [V: 2 in the RTL ``DNN_top.sv``,
            without its ``PROCTIME`` term].
        word_bits: width of weights, activations, errors [V: 12 in ``DNN.sv``].
        input_bits: width of the input activations [V: 8 in the RTL].
        out_degrees: ``d_out`` per junction (one per weight layer); empty: take each layer's own
            (a ``SparseLinear`` layer's pattern), else derive it from ``density``.
        density: junction density ``d_out / N_out`` for layers without an out-degree [A: 1, fully
            connected]; ``density · N_out`` must be an integer out-degree that divides.
        clocks_per_cycle: the junction cycle ``C`` (``z_i = |W_i| / C``); 0: the smallest valid ``C``
            whose multipliers fit in ``max_multipliers``.
        max_multipliers: multipliers available when ``C`` is chosen [A: 1024; the RTL's
            1024-64-16 design uses 1157, papers.md §5.4].
        reference_bits: width at which the energies and areas below are given [R: 8].
        multiply_energy_j: one integer multiply [R: 0.2 pJ for 8 bits, 45 nm, Horowitz ISSCC 2014,
            recalled, unverified]; scaled by ``(word_bits/reference_bits)²``.
        add_energy_j: one integer addition [R: 0.03 pJ for 8 bits, same source]; scaled linearly.
        memory_energy_per_bit_j: one bit read or written in an on-chip SRAM bank [R: 10 pJ per
            64-bit access of an 8 kB SRAM, same source, i.e. 0.16 pJ/bit].
        multiplier_area_um2: one multiplier [R: 282 µm² for 8 bits, same source]; scaled by
            ``(word_bits/reference_bits)²``.
        adder_area_um2: one adder [R: 36 µm² for 8 bits, same source]; scaled linearly.
        memory_area_per_bit_um2: one SRAM bit with its share of the bank periphery [A: 0.5 µm²,
            a 45 nm 6T cell is ~0.35 µm²].
        static_power_w: leakage and clock tree, charged for the time per example [A: 0].
    """

    clock_hz: float = 100e6
    overhead_clocks: int = 2
    word_bits: int = 12
    input_bits: int = 8
    out_degrees: tuple[int, ...] = ()
    density: float = 1.0
    clocks_per_cycle: int = 0
    max_multipliers: int = 1024
    reference_bits: int = 8
    multiply_energy_j: float = 0.2e-12
    add_energy_j: float = 0.03e-12
    memory_energy_per_bit_j: float = 10e-12 / 64
    multiplier_area_um2: float = 282.0
    adder_area_um2: float = 36.0
    memory_area_per_bit_um2: float = 0.5
    static_power_w: float = 0.0

    def validate(self) -> None:
        self._check_positive("clock_hz")
        for field, minimum in (("overhead_clocks", 0), ("word_bits", 1), ("input_bits", 1), ("clocks_per_cycle", 0),
                               ("max_multipliers", 1), ("reference_bits", 1)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                self._fail(field, f"must be an integer >= {minimum}.")
        if isinstance(self.out_degrees, list):
            self.out_degrees = tuple(self.out_degrees)
        if not isinstance(self.out_degrees, tuple) or any(
                isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.out_degrees):
            self._fail("out_degrees", "must be a list of positive integers, one per junction (e.g. [50, 10]), "
                                      "or empty to use the layers' own degrees or `density`.")
        self._check_positive("density")
        if self.density > 1:
            self._fail("density", "is d_out / N_out per junction; use a value in (0, 1] (1 = fully connected).")
        self._check_non_negative("multiply_energy_j", "add_energy_j", "memory_energy_per_bit_j", "multiplier_area_um2",
                                 "adder_area_um2", "memory_area_per_bit_um2", "static_power_w")

    def accelerator(self) -> EdgeHardwareConfig:
        """The timing part, as the sparse model's config."""
        return EdgeHardwareConfig(clock_hz=self.clock_hz, overhead_clocks=self.overhead_clocks,
                                  word_bits=self.word_bits, input_bits=self.input_bits)

    def multiply_energy_at_width_j(self) -> float:
        return self.multiply_energy_j * (self.word_bits / self.reference_bits) ** 2

    def add_energy_at_width_j(self) -> float:
        return self.add_energy_j * self.word_bits / self.reference_bits

    def multiplier_area_at_width_um2(self) -> float:
        return self.multiplier_area_um2 * (self.word_bits / self.reference_bits) ** 2

    def adder_area_at_width_um2(self) -> float:
        return self.adder_area_um2 * self.word_bits / self.reference_bits


@register_estimator("edge")
class EdgeEstimator(Estimator):
    """Pipelined edge-processing junctions; time from :func:`insitu.sparse.hardware.estimate`."""

    config_class = EdgeSystemConfig

    # -- the network as junctions -------------------------------------------------------------
    def junctions(self, network: NetworkShape) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(sizes, out_degrees)`` of the MLP the accelerator trains: ``sizes = (N_0, ..., N_L)``.

        Raises:
            HardwareMappingError: a layer that is not a fully connected or sparse linear layer on
                one vector, or widths that do not chain.
            ConfigError: out-degrees (given, or from ``density``) that do not divide.
        """
        c = self.config
        layers = network.layers
        for layer in layers:
            if layer.kind not in ("linear", "sparse") or layer.vectors != 1 or layer.groups != 1:
                raise HardwareMappingError(
                    f"Layer '{layer.name}' ({layer.kind}, {layer.vectors} vectors, {layer.groups} groups): the "
                    "edge-processing accelerator (Dey et al. 2017) trains MLPs, one vector per junction; give a model of "
                    "Linear or SparseLinear layers on a flat input."
                )
        sizes = (layers[0].inputs, *(layer.rows for layer in layers))
        for prev, layer in itertools.pairwise(layers):
            if layer.inputs != prev.rows:
                raise HardwareMappingError(
                    f"Layer '{layer.name}' has {layer.inputs} inputs but layer '{prev.name}' has {prev.rows} outputs: the "
                    "accelerator's junctions must chain (N_i outputs feed the next junction)."
                )
        if c.out_degrees:
            if len(c.out_degrees) != len(layers):
                raise ConfigError(
                    f"EdgeSystemConfig.out_degrees = {list(c.out_degrees)}: needs one out-degree per junction, "
                    f"{len(layers)} for sizes {list(sizes)}."
                )
            degrees = tuple(c.out_degrees)
        else:
            degrees = tuple(self._degree(layer, n_out) for layer, n_out in zip(layers, sizes[1:]))
        for i, (n_in, n_out, d) in enumerate(zip(sizes[:-1], sizes[1:], degrees)):
            try:
                in_degree(n_in, n_out, d)
            except ConfigError as exc:
                raise ConfigError(f"edge, junction {i + 1} ({n_in} -> {n_out}): {exc}") from None
        return sizes, degrees

    def _degree(self, layer: LayerShape, n_out: int) -> int:
        if layer.edges is not None:
            if layer.out_degree is None:
                raise HardwareMappingError(
                    f"Layer '{layer.name}' is sparse without a fixed out-degree (an unstructured random pattern): the "
                    "edge-processing hardware needs every left neuron to have the same out-degree; use a structured "
                    "or clash-free pattern, or set edge.out_degrees."
                )
            return layer.out_degree
        d = self.config.density * n_out
        if abs(d - round(d)) > 1e-9 or round(d) < 1:
            raise ConfigError(
                f"EdgeSystemConfig.density = {self.config.density!r} gives d_out = {d:g} for the {n_out} outputs of layer "
                f"'{layer.name}', not a whole number of connections; choose a density k/{n_out} or set out_degrees."
            )
        return round(d)

    def sparse_network(self, network: NetworkShape) -> NetworkShape:
        """``network`` with each layer's edges and out-degree as the accelerator trains it."""
        sizes, degrees = self.junctions(network)
        layers = tuple(
            dataclasses.replace(layer, kind="sparse", edges=n_in * d, out_degree=d)
            for layer, n_in, d in zip(network.layers, sizes[:-1], degrees)
        )
        return dataclasses.replace(network, layers=layers)

    def edge_model(self, network: NetworkShape) -> EdgeEstimate:
        """The sparse model's estimate for ``network`` (``C`` given or chosen by the multiplier budget)."""
        c = self.config
        sizes, degrees = self.junctions(network)
        if c.clocks_per_cycle:
            return edge_estimate(sizes, degrees, c.accelerator(), clocks_per_cycle=c.clocks_per_cycle)
        edges = [n * d for n, d in zip(sizes[:-1], degrees)]
        common = math.gcd(*edges)
        # C must divide every |W_i| and give z_i = |W_i|/C dividing N_{i-1} (the z activation banks).
        valid = [cc for cc in range(1, common + 1)
                 if common % cc == 0 and all(n % (e // cc) == 0 for n, e in zip(sizes[:-1], edges))]
        if not valid:
            raise ConfigError(
                f"edge: no junction cycle C fits sizes {list(sizes)} with out-degrees {list(degrees)}: C must divide every "
                f"junction's edge count {edges} and z_i = |W_i|/C must divide N_(i-1) (the memory banks). Change a width "
                "(e.g. pad the input as the paper pads 784 to 800 or 1024) or the out-degrees."
            )
        fits = []
        for cc in valid:
            est = edge_estimate(sizes, degrees, c.accelerator(), clocks_per_cycle=cc)
            if est.multipliers <= c.max_multipliers:
                return est
            fits.append((cc, est.multipliers))
        raise ConfigError(
            f"EdgeSystemConfig.max_multipliers = {c.max_multipliers}: even the slowest valid junction cycle needs more "
            f"(C, multipliers) = {fits[-3:]}; raise max_multipliers or set clocks_per_cycle."
        )

    # -- estimator interface ----------------------------------------------------------------
    def estimate_layers(self, network: NetworkShape) -> list[LayerEstimate]:
        c = self.config
        model = self.edge_model(network)
        cycle_s = model.clocks_per_cycle / c.clock_hz
        overhead_s = c.overhead_clocks / c.clock_hz
        mult_j, add_j = c.multiply_energy_at_width_j(), c.add_energy_at_width_j()
        n_layers = len(model.junctions)
        out = []
        for i, (layer, j) in enumerate(zip(network.layers, model.junctions)):
            e, n_in, n_out = j.edges, j.n_in, j.n_out
            first, hidden_right = i == 0, i < n_layers - 1
            multiplies = e + (0 if first else e + n_in) + e
            additions = e + (0 if first else e - n_in) + e + n_out
            act_bits = c.input_bits if first else c.word_bits
            w = c.word_bits
            memory_bits = (
                e * w + e * act_bits + n_out * w * (2 if hidden_right else 1)  # FF
                + (0 if first else 2 * e * w + n_in * w)  # BP
                + e * act_bits + e * w + 2 * e * w + 2 * n_out * w  # UP
            )
            energy = {
                "multiply": multiplies * mult_j,
                "add": additions * add_j,
                "memory": memory_bits * c.memory_energy_per_bit_j,
            }
            if c.static_power_w:
                # Static power runs for one pipelined example interval; charged once, on the first junction.
                energy["static"] = c.static_power_w * (cycle_s + overhead_s) if first else 0.0
            area = {
                "multipliers": j.multipliers * c.multiplier_area_at_width_um2() * _UM2_TO_MM2,
                "adders": j.adders * c.adder_area_at_width_um2() * _UM2_TO_MM2,
                "memory": j.memory_bits * c.memory_area_per_bit_um2 * _UM2_TO_MM2,
            }
            out.append(LayerEstimate(layer.name, 0, {"junction cycle": cycle_s, "overhead": overhead_s}, energy, area))
        return out

    def time_per_example(self, layers: list[LayerEstimate]) -> float:
        # Junctions pipelined (papers.md §5.3): one example per C + overhead clocks, whatever the depth.
        return max(layer.total_time_s for layer in layers)

    def estimate(self, network: NetworkShape, examples_per_epoch: int = 60000) -> Estimate:
        """As :meth:`Estimator.estimate`, on the network as the accelerator holds it (only its edges,
        so operations count edges), with the sparse model's figures in ``extra``."""
        sparse = self.sparse_network(network)
        est = super().estimate(sparse, examples_per_epoch)
        model = self.edge_model(sparse)
        est.extra.update({
            "pipelined_junctions": True,
            "sizes": list(model.sizes),
            "out_degrees": [j.out_degree for j in model.junctions],
            "z": [j.z for j in model.junctions],
            "clocks_per_cycle": model.clocks_per_cycle,
            "clocks_per_example": model.clocks_per_example,
            "multipliers": model.multipliers,
            "adders": model.adders,
            "memory_bits": model.memory_bits,
            "network_density": model.network_density,
            "complexity_reduction": model.complexity_reduction,
            "dense_clocks_per_example": model.dense_clocks_per_cycle + self.config.overhead_clocks,
            "speedup_vs_dense_same_multipliers": model.speedup_vs_dense,
        })
        return est
