"""Why SGD with update management (and SVD-1) collapses the ReLU 784-100-10 network on the 2016 device.

784-100-10 ReLU, batch 1, lr 0.01, 3,000 MNIST training samples (subset of 4,000, seed 0); after
every 1,000 samples: cross-entropy on the 1,000 held-out samples of the subset, fraction of
active hidden units, largest |weight| of each layer. Usage (from the repository root):

    python docs/reproductions/hoskins-2019-um-collapse.py [condition ...]

Output of the run cited in hoskins-2019-sbe.md (session 3):

    ideal+io [(0.882, 0.677, 0.179, 0.591), (0.627, 0.647, 0.287, 1.148), (0.643, 0.613, 0.33, 1.334)]
    rpu [(1.131, 0.694, 0.26, 0.458), (0.933, 0.704, 0.425, 0.506), (0.749, 0.706, 0.488, 0.726)]
    rpu+um [(1.04, 0.679, 0.268, 0.707), (2.303, 0.83, 0.689, 1.15), (2.303, 0.836, 0.94, 1.149)]
    rpu+um expected [(0.958, 0.736, 0.21, 0.597), (2.303, 0.816, 0.622, 1.052), (2.303, 0.844, 0.91, 1.148)]
    rpu expected [(0.92, 0.763, 0.183, 0.429), (0.766, 0.767, 0.317, 0.523), (0.684, 0.766, 0.426, 0.64)]
    rpu+um no-var [(1.025, 0.728, 0.188, 0.572), (2.303, 0.84, 0.6, 0.6), (2.303, 0.825, 0.6, 0.6)]
    rpu+um nm-bm (2017 preset) [(0.688, 0.671, 0.171, 0.431), (0.554, 0.66, 0.228, 0.633), (0.511, 0.639, 0.262, 0.714)]
    rpu+um no-out-bound [(1.04, 0.679, 0.268, 0.707), (1.055, 0.708, 0.436, 1.022), (0.932, 0.663, 0.661, 1.085)]
    rpu+um perfect-io [(0.928, 0.78, 0.237, 0.62), (0.858, 0.747, 0.378, 0.927), (0.832, 0.71, 0.558, 1.022)]

At the collapse every logit is at -12 and every hidden output at +12 (the output bound).
"""
import torch, sys
from insitu import AnalogSGD, IdealDevice
from insitu.models import mlp
from insitu.presets import get_preset
from insitu.data import load_dataset
from insitu.update.kernels import set_backend

# The torch pulse-update backend (per-tile path): the committed numbers were made with it, and
# reruns equal them draw for draw (the compiled CPU backend agrees in distribution only).
set_backend("torch")
torch.set_num_threads(1)
data = load_dataset("mnist", path="../shared/datasets", subset=4000, seed=0)
x = data.train_x; y = data.train_y
base = get_preset("gokmen-vlasov-2016")
um = base.update.replace(update_management=True)
dev0 = base.device.replace(dw_min_dtod=0.0, dw_min_std=0.0, w_max_dtod=0.0, w_min_dtod=0.0, up_down_dtod=0.0)
conds = {
 "ideal+io": base.replace(device=IdealDevice()),
 "rpu": base,
 "rpu+um": base.replace(update=um),
 "rpu+um expected": base.replace(update=um.replace(pulse_type="expected")),
 "rpu expected": base.replace(update=base.update.replace(pulse_type="expected")),
 "rpu+um no-var": base.replace(update=um, device=dev0),
 "rpu+um nm-bm (2017 preset)": get_preset("gokmen-2017-cnn-nm-bm-um"),
 "rpu+um no-out-bound": base.replace(update=um, forward=base.forward.replace(out_bound=None), backward=base.backward.replace(out_bound=None)),
 "rpu+um perfect-io": base.replace(update=um, forward=base.forward.replace(out_noise=0.0, out_bound=None), backward=base.backward.replace(out_noise=0.0, out_bound=None)),
}
only = sys.argv[1:] or list(conds)
for name in only:
    cfg = conds[name]
    torch.manual_seed(0); m = mlp((784,100,10), "relu", cfg); opt = AnalogSGD(m.parameters(), lr=0.01, fused=False)  # the per-tile path the committed numbers were made with
    out=[]
    for i in range(3000):
        opt.zero_grad(); l = torch.nn.functional.cross_entropy(m(x[i:i+1]), y[i:i+1]); l.backward(); opt.step()
        if i % 1000 == 999:
            with torch.no_grad():
                h = torch.relu(m[0](x[3000:4000]))
                out.append((round(float(torch.nn.functional.cross_entropy(m(x[3000:4000]), y[3000:4000])),3), round(float((h>0).float().mean()),3), round(float(m[0].tile.weight.abs().max()),3), round(float(m[2].tile.weight.abs().max()),3)))
    print(name, out, flush=True)
