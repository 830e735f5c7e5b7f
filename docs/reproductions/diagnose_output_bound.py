"""How far a trained MLP's analog outputs sit beyond the output bound (used in gokmen-vlasov-2016.md).

Loads ``RUN/checkpoint.pt`` of an ``insitu train`` run of the 784-256-128-10 MLP and prints the
weight magnitudes per layer and the share of test-set logits whose ideal (unclipped) value lies
beyond the forward output bound of 12.

Usage: ``python docs/reproductions/diagnose_output_bound.py runs/gv2016-io-only``
"""

import sys

import torch

from insitu.data import load_dataset
from insitu.training import TrainConfig, build_model

run = sys.argv[1] if len(sys.argv) > 1 else "runs/gv2016-io-only"
data_dir = sys.argv[2] if len(sys.argv) > 2 else "../shared/datasets"
torch.set_num_threads(1)
checkpoint = torch.load(f"{run}/checkpoint.pt", weights_only=False)
config = TrainConfig.from_dict(checkpoint["config"])
data = load_dataset("mnist", path=data_dir)
model = build_model(config, data.image_shape, data.num_classes)
model.load_state_dict(checkpoint["model"])
model.eval()
for index in (0, 2, 4):
    w = model[index].tile.get_weights()
    print(f"layer {index}: max|w| {w.abs().max():.2f}, mean|w| {w.abs().mean():.3f}")
with torch.no_grad():
    x = data.test_x[:2000]
    hidden = model[:4](x)
    logits = torch.nn.functional.pad(hidden, (0, 1), value=1.0) @ model[4].tile.get_weights().t()
    print(f"test logits beyond the output bound 12: {(logits.abs() > 12).float().mean():.1%}")
    print(f"samples whose largest logit is beyond 12: {(logits.amax(1) > 12).float().mean():.1%}")
