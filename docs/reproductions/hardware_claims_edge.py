"""Section 4 of docs/reproductions/hardware-claims.md: the edge-processing headlines of Dey et al. 2017
("network complexity reduced up to 30x, training time up to 35x faster than GPUs"), recomputed
with the "edge" estimator of insitu.hardware.

Writes docs/reproductions/data/hardware-claims/edge-processing.json and
docs/reproductions/hardware-claims-edge.png. Arithmetic plus one PyTorch batch-1 step timed on
this machine's CPU (one thread); runs in seconds. Kept apart from hardware_claims.py so that
regenerating this section leaves the measured numbers of sections 1-3 as they are.

Usage: python docs/reproductions/hardware_claims_edge.py [OUT_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from insitu.hardware import (
    CPUConfig,
    EdgeSystemConfig,
    GPUConfig,
    get_estimator,
    measure_time_per_example,
    network_from_mlp,
    required_value,
    sensitivity,
)
from insitu.hardware.report import plot_breakdown
from insitu.models import mlp as build_mlp

torch.set_num_threads(1)
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/reproductions/data/hardware-claims")
OUT.mkdir(parents=True, exist_ok=True)
EXAMPLES = 60000
CLAIMS = {"complexity_reduction_up_to": 30, "training_speedup_vs_gpu_up_to": 35}

# The paper's MNIST networks (papers.md §5.4-5.5): 800-100-10 (input padded to 800) and the RTL's
# 1024-64-16. Out-degrees from dense down to ~1/48 of the edges; every one fits the banks (z | N).
CASES = [
    ("800-100-10 dense", (800, 100, 10), (100, 10), 0),
    ("800-100-10 d_out 50,10", (800, 100, 10), (50, 10), 0),
    ("800-100-10 d_out 10,1", (800, 100, 10), (10, 1), 0),
    ("800-100-10 d_out 4,1", (800, 100, 10), (4, 1), 0),
    ("800-100-10 d_out 2,1", (800, 100, 10), (2, 1), 0),
    ("1024-64-16 dense", (1024, 64, 16), (64, 16), 0),
    ("1024-64-16 d_out 8,8 (DNN.sv, C = 16)", (1024, 64, 16), (8, 8), 16),
    ("1024-64-16 d_out 2,2", (1024, 64, 16), (2, 2), 0),
]


def write(name: str, data: dict) -> None:
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {OUT / name}.json")


gpu = GPUConfig()
rows = []
estimates = {}
for label, sizes, degrees, clocks in CASES:
    network = network_from_mlp(sizes)
    config = EdgeSystemConfig(out_degrees=degrees, clocks_per_cycle=clocks)
    edge = get_estimator("edge", config).estimate(network, EXAMPLES)
    # The GPU trains the dense network (the hardware's sparsity is what is being compared).
    gpu_est = get_estimator("gpu", gpu).estimate(network, EXAMPLES)
    speedup = gpu_est.time_per_example_s / edge.time_per_example_s
    # The GPU utilisation at which the edge model is 35x faster (time scales as 1/utilisation).
    utilization_for_35x = gpu_est.time_per_example_s / (35 * edge.time_per_example_s)
    estimates[label] = (edge, gpu_est)
    rows.append({
        "network": label,
        "sizes": list(sizes),
        "out_degrees": list(degrees),
        "network_density": edge.extra["network_density"],
        "complexity_reduction": edge.extra["complexity_reduction"],
        "clocks_per_cycle": edge.extra["clocks_per_cycle"],
        "z": edge.extra["z"],
        "multipliers": edge.extra["multipliers"],
        "edge_summary": edge.summary(),
        "edge_energy_by_component_j": edge.energy_by_component(),
        "edge_area_by_component_mm2": edge.area_by_component(),
        "speedup_vs_dense_same_multipliers": edge.extra["speedup_vs_dense_same_multipliers"],
        "gpu_dense_time_per_example_s": gpu_est.time_per_example_s,
        "gpu_dense_energy_per_example_j": gpu_est.energy_per_example_j,
        "speedup_vs_gpu_at_full_peak": speedup,
        "energy_saving_vs_gpu_at_full_peak": gpu_est.energy_per_example_j / edge.energy_per_example_j,
        "gpu_utilization_for_35x": utilization_for_35x,
    })

# The point nearest the 30x complexity claim on the paper's 800-100-10 network.
point_label = "800-100-10 d_out 4,1"
point_config = EdgeSystemConfig(out_degrees=(4, 1))
net800 = network_from_mlp((800, 100, 10))
point, gpu_point = estimates[point_label]

# Which edge parameter alone would give 35x against the GPU preset at full peak.
clock_for_35x = required_value("edge", point_config, net800, "clock_hz", "time_per_example_s",
                               gpu_point.time_per_example_s / 35, 1e6, 1e12)

# Batch-1 SGD of the dense 800-100-10 network timed here with PyTorch (one CPU thread): what
# per-example training reaches on a general-purpose processor (no GPU on this machine).
measured = measure_time_per_example(build_mlp((800, 100, 10), activation="relu"), (800,), steps=200, warmup=20)
cpu_measured = get_estimator("cpu", CPUConfig(measured_time_per_example_s=measured)).estimate(net800, EXAMPLES)


def speedup_vs_gpu(est):
    return gpu_point.time_per_example_s / est.time_per_example_s


def top(rows_, n=6):
    return [{k: r[k] for k in ("parameter", "value", "ratio_low", "ratio_high")} for r in rows_[:n]]


result = {
    "claims": CLAIMS,
    "assumptions": point_config.to_dict() | {"out_degrees": "per case", "clocks_per_cycle": "per case (0 = chosen)"},
    "gpu_preset": gpu.to_dict(),
    "cases": rows,
    "point_near_30x": {
        "network": point_label,
        "complexity_reduction": point.extra["complexity_reduction"],
        "speedup_vs_dense_same_multipliers": point.extra["speedup_vs_dense_same_multipliers"],
        "speedup_vs_gpu_at_full_peak": speedup_vs_gpu(point),
        "gpu_utilization_for_35x": gpu_point.time_per_example_s / (35 * point.time_per_example_s),
        "edge_clock_hz_for_35x_vs_gpu_at_full_peak": clock_for_35x,
        "measured_cpu_here_dense_batch1_s": measured,
        "measured_cpu_utilization_of_preset_peak": cpu_measured.ops_per_s / CPUConfig().peak_flops,
        "speedup_vs_measured_cpu_here": cpu_measured.time_per_example_s / point.time_per_example_s,
    },
    "sensitivity": {
        "factor": 2.0,
        "speedup_vs_gpu (800-100-10 d_out 4,1)": top(sensitivity("edge", point_config, net800, speedup_vs_gpu)),
        "energy_per_example (800-100-10 d_out 4,1)": top(sensitivity("edge", point_config, net800, "energy_per_example_j")),
        "area (800-100-10 d_out 4,1)": top(sensitivity("edge", point_config, net800, "area_mm2")),
    },
}
write("edge-processing", result)

dense_edge, _ = estimates["800-100-10 dense"]
plot_breakdown(OUT.parent.parent / "hardware-claims-edge.png",
               [("edge, dense", dense_edge), ("edge, d_out 4,1", point), ("GPU P100 (dense, full peak)", gpu_point)],
               title="800-100-10: one training example on the edge-processing model and the GPU preset")
print("wrote docs/reproductions/hardware-claims-edge.png")
