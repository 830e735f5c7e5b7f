"""Check: on the 2016 device, SVD-1 at batch 1 is bit-identical to SGD with update management.

Both write the single sample as a rank-1 update whose two pulse trains peak at the same
probability. Prints the loss on 1,000 training images and the coincidence counters of both
layers every 1,000 samples (3,000 MNIST samples, batch 1, lr 0.01). Output of the run cited in
hoskins-2019-sbe.md:

    sgd+um 999 1.135 5098376.0 580932.0
    sgd+um 1999 2.303 15823031.0 2321995.0
    sgd+um 2999 2.303 28181474.0 5216537.0
    svd 999 1.135 5098376.0 580932.0
    svd 1999 2.303 15823031.0 2321995.0
    svd 2999 2.303 28181474.0 5216537.0
"""
import torch
from insitu import AnalogSGD
from insitu.models import mlp
from insitu.presets import get_preset
from insitu.update import UpdateAlgorithmConfig
from insitu.data import load_dataset
from insitu.update.kernels import set_backend

# The torch pulse-update backend (per-tile path): the committed numbers were made with it, and
# reruns equal them draw for draw (the compiled CPU backend agrees in distribution only).
set_backend("torch")
torch.set_num_threads(1)
data = load_dataset("mnist", path="../shared/datasets", subset=3000, seed=0)
x = data.train_x.reshape(len(data.train_x), -1); y = data.train_y
base = get_preset("gokmen-vlasov-2016")
for name, cfg in [("sgd+um", base.replace(update=base.update.replace(update_management=True))),
                  ("svd", base.replace(algorithm=UpdateAlgorithmConfig(method="svd")))]:
    torch.manual_seed(0); m = mlp((784,100,10), "relu", cfg); opt = AnalogSGD(m.parameters(), lr=0.01, fused=False)  # the per-tile path the committed numbers were made with
    for i in range(3000):
        opt.zero_grad(); l = torch.nn.functional.cross_entropy(m(x[i:i+1]), y[i:i+1]); l.backward(); opt.step()
        if i % 1000 == 999:
            with torch.no_grad():
                print(name, i, round(float(torch.nn.functional.cross_entropy(m(x[:1000]), y[:1000])),3), m[0].tile.counters.coincidences, m[2].tile.counters.coincidences)
