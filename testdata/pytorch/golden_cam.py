#!/usr/bin/python3
"""Writes cam/testdata/golden_cam.safetensors: PyTorch reference
class-activation maps, checked by cam/golden_test.go.

The network is the Go test's tinyNet (cam/model_test.go), with the same
state-dict names:

    layer1 = Sequential(Conv3d(1, 4, 3, padding=1), BatchNorm3d(4), ReLU())
    layer2 = Sequential(Conv3d(4, 6, 3, stride=2, padding=1, bias=False),
                        BatchNorm3d(6), ReLU())
    layer3 = Sequential(Conv3d(6, 8, 3, padding=1), ReLU())
    fc     = Linear(8, 3)
    logits = fc(mean over d, h, w of layer3(layer2(layer1(x))))

Every parameter and buffer is drawn at random (model in eval mode) and
stored under "w/<state-dict key>" (num_batches_tracked as I64). The input
"x" is a batch of 2 volumes 7×10×9 (so that layer2 halves to 4×5×5 and
the upsampling factors are not whole numbers); "logits" are the outputs.
The input is drawn (repeatedly, deterministically under the seed; the
metadata "draws" says how often) until the two items' argmax classes differ
and every Grad-CAM++ denominator D is far from zero where g > 0
(|D| >= 0.1·2g²): where D nearly cancels, the float32 rounding of A and g,
which differs between any two implementations, is amplified past 1e-4.

The maps follow MONAI's monai/visualize/class_activation_maps.py (MONAI is
not installed; the formulas are written out here, with MONAI's hooks:
a forward hook storing each target module's output and a full backward hook
storing grad_output[0]), per batch item n with class c_n and score
y_n = logits[n, c_n], back-propagating sum_n y_n:

    GradCAM:   w = mean_s(g);  map = relu(sum_k w_k A_k)
    GradCAMpp: alpha = g^2 / (where(D != 0, D, 1) + 1e-7),
               D = 2 g^2 + sum_s(A g^3);
               w = sum_s(alpha * relu(exp(y_n) g));  map = relu(sum_k w_k A_k)
    CAM:       map = fc applied at every position of layer3's output
               (MONAI adds the bias; "nobias" leaves it out)

For classes "argmax" (each item's argmax; the input is drawn so that the two
items' argmax classes differ), "c0" (class 0 for both items) and "c1", the script stores "<method>/<layer>/<classes>/raw" (N×1×
d×h×w at the layer), ".../up" (F.interpolate to 7×10×9, trilinear,
align_corners=False) and ".../norm" (MONAI's default_normalizer on up:
1 - (x - min)/(max - min) per item), and "classes/<classes>" (I64).

Run from the repository root with Debian's PyTorch (float32, seeded,
single-threaded, so the file is reproducible):

    /usr/bin/python3 testdata/pytorch/golden_cam.py
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stfile  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "cam", "testdata", "golden_cam.safetensors")

torch.manual_seed(20240617)
torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv3d(4, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm3d(6), nn.ReLU())
        self.layer3 = nn.Sequential(nn.Conv3d(6, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        f = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(f.mean(dim=(2, 3, 4)))


net = TinyNet()
with torch.no_grad():
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.4)
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, ())))
        elif isinstance(m, (nn.Conv3d, nn.Linear)):
            m.weight.normal_(0, 0.5)
            if m.bias is not None:
                m.bias.uniform_(-0.3, 0.3)
net.eval()


class ModelWithHooks:
    """MONAI's ModelWithHooks, reduced to what the maps need."""

    def __init__(self, model, layers):
        self.model = model
        self.acti = {}
        self.grad = {}
        mods = dict(model.named_modules())
        for name in layers:
            mods[name].register_forward_hook(self._fwd(name))
            mods[name].register_full_backward_hook(self._bwd(name))

    def _fwd(self, name):
        def hook(_module, _inp, out):
            self.acti[name] = out

        return hook

    def _bwd(self, name):
        def hook(_module, _grad_in, grad_out):
            self.grad[name] = grad_out[0]

        return hook

    def __call__(self, x, classes):
        self.model.zero_grad()
        logits = self.model(x)
        if classes is None:
            classes = logits.argmax(1)
        score = logits.gather(1, classes[:, None]).squeeze(1)
        score.sum().backward()
        return logits.detach(), classes, score.detach()


LAYERS = ["layer2", "layer3"]
hooked = ModelWithHooks(net, LAYERS)


# Draw inputs until the two items have different argmax classes, so that
# per-item class selection is exercised, and until every Grad-CAM++
# denominator D is far from 0 where g > 0 (|D| >= 0.1·2g²): where D nearly
# cancels, float32 rounding of A and g (which differs between any two
# implementations) is amplified beyond the test's 1e-4. Deterministic under
# the seed.


def conditioned(x):
    b = x.shape[0]
    for cls in (None, torch.zeros(b, dtype=torch.long), torch.ones(b, dtype=torch.long)):
        hooked(x, cls)
        for layer in LAYERS:
            a, g = hooked.acti[layer].detach().double(), hooked.grad[layer].detach().double()
            d = 2 * g**2 + (a * g**3).reshape(b, g.shape[1], -1).sum(-1).reshape(b, g.shape[1], 1, 1, 1)
            pos = g > 0
            if pos.any() and (d.abs()[pos] / (2 * g[pos] ** 2)).min() < 0.1:
                return False
    return True


draws = 0
while True:
    draws += 1
    x = torch.randn(2, 1, 7, 10, 9)
    with torch.no_grad():
        differ = len(set(net(x).argmax(1).tolist())) == 2
    if differ and conditioned(x):
        break
size = x.shape[2:]


def gradcam(a, g):
    b, c = g.shape[:2]
    w = g.reshape(b, c, -1).mean(2).reshape(b, c, 1, 1, 1)
    return F.relu((w * a).sum(1, keepdim=True))


def gradcampp(a, g, score):
    b, c = g.shape[:2]
    nr = g.pow(2)
    dr = nr.mul(2) + a.mul(g.pow(3)).reshape(b, c, -1).sum(-1).reshape(b, c, 1, 1, 1)
    dr = torch.where(dr != 0.0, dr, torch.ones_like(dr))
    alpha = nr.div(dr + 1e-7)
    relu_grad = F.relu(score.exp().reshape(b, 1, 1, 1, 1) * g)
    w = (alpha * relu_grad).reshape(b, c, -1).sum(-1).reshape(b, c, 1, 1, 1)
    return F.relu((w * a).sum(1, keepdim=True))


def cam(a, classes, bias):
    # fc at every position: (b, d, h, w, c) @ W^T (+ b), then pick the class.
    z = a.permute(0, 2, 3, 4, 1) @ net.fc.weight.t()
    if bias:
        z = z + net.fc.bias
    z = z.permute(0, 4, 1, 2, 3)
    return z.gather(1, classes.reshape(-1, 1, 1, 1, 1).expand(-1, 1, *z.shape[2:]))


def up(m):
    return F.interpolate(m, size=size, mode="trilinear", align_corners=False)


def monai_norm(m):
    out = torch.empty_like(m)
    for i in range(m.shape[0]):
        lo, hi = m[i].min(), m[i].max()
        out[i] = m[i] if hi == lo else 1 - (m[i] - lo) / (hi - lo)
    return out


tensors = []
for k, v in net.state_dict().items():
    if k.endswith("num_batches_tracked"):
        tensors.append((f"w/{k}", "I64", [], np.array(int(v), dtype="<i8").tobytes()))
    else:
        tensors.append(stfile.f32(f"w/{k}", v.numpy()))
tensors.append(stfile.f32("x", x.numpy()))

choices = {"argmax": None, "c0": torch.tensor([0, 0]), "c1": torch.tensor([1, 1])}
for cname, cls in choices.items():
    logits, classes, score = hooked(x, cls)
    if cname == "argmax":
        tensors.append(stfile.f32("logits", logits.numpy()))
    tensors.append((f"classes/{cname}", "I64", [2], np.asarray(classes.numpy(), dtype="<i8").tobytes()))
    maps = {}
    for layer in LAYERS:
        a, g = hooked.acti[layer].detach(), hooked.grad[layer].detach()
        maps[f"gradcam/{layer}"] = gradcam(a, g)
        maps[f"gradcampp/{layer}"] = gradcampp(a, g, score)
    a3 = hooked.acti["layer3"].detach()
    with torch.no_grad():
        maps["cam/bias"] = cam(a3, classes, True)
        maps["cam/nobias"] = cam(a3, classes, False)
    for key, m in maps.items():
        u = up(m)
        tensors.append(stfile.f32(f"{key}/{cname}/raw", m.numpy()))
        tensors.append(stfile.f32(f"{key}/{cname}/up", u.numpy()))
        tensors.append(stfile.f32(f"{key}/{cname}/norm", monai_norm(u).numpy()))

meta = {"torch": torch.__version__, "draws": str(draws), "layers": json.dumps(LAYERS)}
os.makedirs(os.path.dirname(OUT), exist_ok=True)
stfile.write(OUT, tensors, meta)
print(f"wrote {OUT}: {os.path.getsize(OUT)} bytes", file=sys.stderr)
