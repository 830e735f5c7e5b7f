"""Digital reference: a CPU or GPU given by its peak rate, utilisation and power, or measured.

Training one example by SGD costs the forward, backward and weight-gradient products
(``2·MAC`` operations each, :func:`~insitu.hardware.base.ops_per_example`), plus the element-wise
work of activations (forward and backward). Time is ``operations / (peak · utilisation)``, or a
step time measured on this machine with PyTorch (:func:`measure_time_per_example`); energy is
``power · time``; area is the die.
"""

from __future__ import annotations

import dataclasses
import time

from ..config import Config, register_config
from .base import Estimator, LayerEstimate, register_estimator
from .shapes import NetworkShape

__all__ = [
    "CPUConfig",
    "CPUEstimator",
    "DigitalConfig",
    "DigitalEstimator",
    "GPUConfig",
    "GPUEstimator",
    "measure_time_per_example",
]


@register_config
@dataclasses.dataclass
class DigitalConfig(Config):
    """A digital processor.

    Attributes:
        label: what it is, for tables.
        peak_flops: peak operations per second of the number format used.
        utilization: fraction of the peak reached on this training (small layers at batch 1 reach
            a few per cent at most).
        power_w: power while training (board or package).
        area_mm2: die area.
        measured_time_per_example_s: if > 0, replaces ``ops / (peak · utilization)`` by this
            measured time per training example (see :func:`measure_time_per_example`).
    """

    label: str = "digital processor"
    peak_flops: float = 1e12
    utilization: float = 1.0
    power_w: float = 100.0
    area_mm2: float = 100.0
    measured_time_per_example_s: float = 0.0

    def validate(self) -> None:
        self._check_positive("peak_flops", "utilization", "power_w", "area_mm2")
        self._check_non_negative("measured_time_per_example_s")
        if self.utilization > 1:
            self._fail("utilization", "is the fraction of the peak rate reached; use a value in (0, 1].")


@register_config
@dataclasses.dataclass
class GPUConfig(DigitalConfig):
    """An NVIDIA Tesla P100 (PCIe), the GPU of 2016–2018 [A: vendor datasheet as recalled:
    9.3 TFLOP/s FP32, 250 W, 610 mm² die]; utilisation 1 gives the best case for the GPU."""

    label: str = "GPU (Tesla P100, FP32 peak)"
    peak_flops: float = 9.3e12
    utilization: float = 1.0
    power_w: float = 250.0
    area_mm2: float = 610.0


@register_config
@dataclasses.dataclass
class CPUConfig(DigitalConfig):
    """A 2016 server microprocessor, Intel Xeon E5-2699 v4 [A: 22 cores × 2.2 GHz × 32 FP32
    FLOP/cycle (two AVX2 FMA units) = 1.55 TFLOP/s, 145 W TDP, ~456 mm² die, as recalled]."""

    label: str = "CPU (Xeon E5-2699 v4, FP32 peak)"
    peak_flops: float = 1.55e12
    utilization: float = 1.0
    power_w: float = 145.0
    area_mm2: float = 456.0


class DigitalEstimator(Estimator):
    """Time split over forward, backward and update in proportion to their operations."""

    config_class = DigitalConfig

    def estimate_layers(self, network: NetworkShape) -> list[LayerEstimate]:
        c = self.config
        rate = c.peak_flops * c.utilization
        per_layer = []
        for index, layer in enumerate(network.layers):
            ops = 2.0 * layer.macs_per_vector * layer.vectors
            per_layer.append((layer.name, {"forward": ops, "backward": ops if index > 0 else 0.0, "update": ops}))
        if network.digital_ops_per_example:
            per_layer.append(("activations", {"element-wise": 2.0 * network.digital_ops_per_example}))
        total_ops = sum(sum(ops.values()) for _, ops in per_layer)
        scale = 1.0 / rate
        if c.measured_time_per_example_s > 0:
            scale = c.measured_time_per_example_s / total_ops
        out = []
        for i, (name, ops) in enumerate(per_layer):
            time_s = {key: value * scale for key, value in ops.items()}
            energy = {key: value * c.power_w for key, value in time_s.items()}
            # The die is one shared resource: its area is reported once, on the first layer.
            out.append(LayerEstimate(name, 0, time_s, energy, {"die": c.area_mm2} if i == 0 else {}))
        return out

    def extra(self) -> dict:
        c = self.config
        return {"label": c.label, "measured": c.measured_time_per_example_s > 0}


@register_estimator("gpu")
class GPUEstimator(DigitalEstimator):
    config_class = GPUConfig


@register_estimator("cpu")
class CPUEstimator(DigitalEstimator):
    config_class = CPUConfig


def measure_time_per_example(model, input_shape: tuple[int, ...], batch_size: int = 1, steps: int = 20,
                             warmup: int = 3, device=None, seed: int = 0) -> float:
    """Seconds per training example of plain SGD on this machine, measured with PyTorch.

    Trains a copy-free step loop (forward, cross-entropy on random labels, backward, SGD step) on
    random inputs drawn from a seeded generator and returns the median step time divided by
    ``batch_size``. Use a digital model (``torch.nn`` layers): analog layers would time the
    simulator, not the hardware.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((batch_size, *input_shape), generator=gen)
    model = model.to(device) if device is not None else model
    x = x.to(device) if device is not None else x
    with torch.no_grad():
        classes = model(x[:1]).shape[-1]
    y = torch.randint(0, classes, (batch_size,), generator=gen).to(x.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    times = []
    for step in range(warmup + steps):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if x.is_cuda:
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] / batch_size
