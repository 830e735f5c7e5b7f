"""The reduced Cristiano study's preset under one code version: a check that an engine change keeps
the results in distribution (session 24: the PCM cell's LSP writes compiled).

Trains ``two-pair`` of ``cristiano_2018_pcm.py`` (784-250-125-10, a 10,000-image MNIST subset, 2
epochs, lr 0.1 halved after epoch 1) with the given seeds and writes, per seed, the test errors and
train losses per epoch, the CPU time, the first layer's coincidences and failed tunings to a JSON
file. Run it once per code version, e.g. from a worktree of each commit:

    PYTHONPATH=/path/to/worktree/src python docs/reproductions/cristiano_2018_pcm_code_check.py OUT.json 0,1,2,3,4,5
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cristiano_2018_pcm as reduced  # noqa: E402

from insitu.data import load_dataset  # noqa: E402
from insitu.training import run_training  # noqa: E402


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    out_path, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
    torch.set_num_threads(1)
    data = load_dataset("mnist", path=str(reduced.ROOT.parent / "shared" / "datasets"), subset=reduced.SUBSET, seed=0)
    out = {}
    for seed in seeds:
        config = dataclasses.replace(reduced.train_config("two-pair"), seed=seed)
        started = time.process_time()
        with tempfile.TemporaryDirectory() as folder:
            result = run_training(config, Path(folder) / "run", data=data, progress=False, log=lambda s: None)
        first = result["counters"]["0.tile"]
        out[seed] = {
            "test_error": [e["test_error"] for e in result["epochs"]],
            "train_loss": [e["train_loss"] for e in result["epochs"]],
            "cpu_s": time.process_time() - started,
            "coincidences_layer0": first["coincidences"],
            "clt_failures_layer0": first["transfer"]["clt_failures"],
            "backend": result.get("update_backend"),
        }
        print(seed, out[seed], flush=True)
    Path(out_path).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
