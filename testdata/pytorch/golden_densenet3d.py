#!/usr/bin/python3
"""Writes net3d/testdata/golden_densenet3d.safetensors: PyTorch reference
outputs of the two 3D DenseNet layouts, checked by net3d/densenet_test.go.

Both networks are written out here in plain PyTorch (MONAI is not
installed), following their sources:

  * MONAI layout: monai/networks/nets/densenet.py DenseNet(spatial_dims=3):
    features.conv0 (k 7, stride 2, pad 3), norm0, relu0, pool0 (max 3/2/1);
    denseblockB.denselayerJ.layers.{norm1,relu1,conv1,norm2,relu2,conv2,
    [dropout: nn.Dropout3d]}; transitionT.{norm,relu,conv,pool}; norm5;
    class_layers.{relu,pool,flatten,out}.
  * Hara/HKBU layout: kenshohara/3D-ResNets-PyTorch models/densenet.py (as
    copied into HKBU_HPML_COVID-19 covid19_pipeline/models/densenet.py):
    features.conv1 (k (7,7,7), stride (1,2,2), pad 3), norm1, relu1, pool1;
    denseblockB.denselayerJ.{norm1,relu1,conv1,norm2,relu2,conv2} with
    F.dropout after conv2; transitionT.{norm,relu,conv,pool}; norm5; forward
    applies F.relu, adaptive average pooling and `classifier`.

Cases (names prefix every tensor as "<case>/..."):

  * monai_small, hara_small: block_config (6, 12, 24, 16) with growth 8,
    init_features 16, bn_size 4, 1 input channel, 3 classes, a batch of 2
    odd-sized volumes. Every parameter and buffer is drawn at random and
    stored under "<case>/w/<state-dict key>" (num_batches_tracked as I64, as
    PyTorch writes it); the output of every tap layer is stored under
    "<case>/tap/<layer>".
  * monai_train, hara_train: as the small cases with block_config (3, 4, 3)
    and, after the eval pass, one training-mode pass (in float64) on a batch
    "<case>/train/x": its logits, the gradients of sum(logits * "train/r")
    with respect to the input ("train/grad_x") and to some parameters
    ("train/grad/<key>"), and some updated BN buffers ("train/state/<key>").
  * monai121, hara121: the real DenseNet-121 (growth 32, init 64, bn_size 4),
    1 input channel, 3 classes, one volume. Its 11 M weights would not fit
    the size budget, so they are not stored: each tensor is filled by
    formula_fill (a 32-bit integer hash of its key and element index,
    reproduced bit for bit by the Go test).

Every case stores its input "x", logits "logits" and pre-pool feature map
"features" (relu(norm5(...)), the class_layers.relu output in MONAI's
layout). The metadata entry "cases" is a JSON list describing each case
(layout, channels, classes, config, state-dict keys and shapes in order,
tap layer names, parameter count); "params" holds the parameter counts of
DenseNet-121 in both layouts for 1 and 3 input channels and 2 classes.

Run from the repository root with Debian's PyTorch (float32, seeded,
single-threaded, so the file is reproducible):

    /usr/bin/python3 testdata/pytorch/golden_densenet3d.py
"""

import copy
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stfile  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "net3d", "testdata", "golden_densenet3d.safetensors")

torch.manual_seed(20240613)
torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------- MONAI layout


class MonaiDenseLayer(nn.Module):
    def __init__(self, in_ch, growth, bn_size, drop):
        super().__init__()
        mid = bn_size * growth
        self.layers = nn.Sequential()
        self.layers.add_module("norm1", nn.BatchNorm3d(in_ch))
        self.layers.add_module("relu1", nn.ReLU(inplace=True))
        self.layers.add_module("conv1", nn.Conv3d(in_ch, mid, kernel_size=1, bias=False))
        self.layers.add_module("norm2", nn.BatchNorm3d(mid))
        self.layers.add_module("relu2", nn.ReLU(inplace=True))
        self.layers.add_module("conv2", nn.Conv3d(mid, growth, kernel_size=3, padding=1, bias=False))
        if drop > 0:
            self.layers.add_module("dropout", nn.Dropout3d(drop))

    def forward(self, x):
        return torch.cat([x, self.layers(x)], 1)


class MonaiDenseNet(nn.Module):
    def __init__(self, in_ch, classes, init=64, growth=32, blocks=(6, 12, 24, 16), bn_size=4, drop=0.0):
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv0", nn.Conv3d(in_ch, init, kernel_size=7, stride=2, padding=3, bias=False)),
                    ("norm0", nn.BatchNorm3d(init)),
                    ("relu0", nn.ReLU(inplace=True)),
                    ("pool0", nn.MaxPool3d(kernel_size=3, stride=2, padding=1)),
                ]
            )
        )
        ch = init
        for i, n in enumerate(blocks):
            block = nn.Sequential()
            for j in range(n):
                block.add_module("denselayer%d" % (j + 1), MonaiDenseLayer(ch + j * growth, growth, bn_size, drop))
            self.features.add_module("denseblock%d" % (i + 1), block)
            ch += n * growth
            if i == len(blocks) - 1:
                self.features.add_module("norm5", nn.BatchNorm3d(ch))
            else:
                t = nn.Sequential()
                t.add_module("norm", nn.BatchNorm3d(ch))
                t.add_module("relu", nn.ReLU(inplace=True))
                t.add_module("conv", nn.Conv3d(ch, ch // 2, kernel_size=1, bias=False))
                t.add_module("pool", nn.AvgPool3d(kernel_size=2, stride=2))
                self.features.add_module("transition%d" % (i + 1), t)
                ch //= 2
        self.class_layers = nn.Sequential(
            OrderedDict(
                [
                    ("relu", nn.ReLU(inplace=True)),
                    ("pool", nn.AdaptiveAvgPool3d(1)),
                    ("flatten", nn.Flatten(1)),
                    ("out", nn.Linear(ch, classes)),
                ]
            )
        )

    def forward(self, x):
        return self.class_layers(self.features(x))


# ------------------------------------------------------------ Hara/HKBU layout


class HaraDenseLayer(nn.Sequential):
    def __init__(self, in_ch, growth, bn_size, drop):
        super().__init__()
        self.add_module("norm1", nn.BatchNorm3d(in_ch))
        self.add_module("relu1", nn.ReLU(inplace=True))
        self.add_module("conv1", nn.Conv3d(in_ch, bn_size * growth, kernel_size=1, stride=1, bias=False))
        self.add_module("norm2", nn.BatchNorm3d(bn_size * growth))
        self.add_module("relu2", nn.ReLU(inplace=True))
        self.add_module("conv2", nn.Conv3d(bn_size * growth, growth, kernel_size=3, stride=1, padding=1, bias=False))
        self.drop = drop

    def forward(self, x):
        new = super().forward(x)
        if self.drop > 0:
            new = F.dropout(new, p=self.drop, training=self.training)
        return torch.cat([x, new], 1)


class HaraDenseNet(nn.Module):
    def __init__(self, in_ch, classes, init=64, growth=32, blocks=(6, 12, 24, 16), bn_size=4, drop=0.0):
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv3d(in_ch, init, kernel_size=(7, 7, 7), stride=(1, 2, 2), padding=(3, 3, 3), bias=False)),
                    ("norm1", nn.BatchNorm3d(init)),
                    ("relu1", nn.ReLU(inplace=True)),
                    ("pool1", nn.MaxPool3d(kernel_size=3, stride=2, padding=1)),
                ]
            )
        )
        ch = init
        for i, n in enumerate(blocks):
            block = nn.Sequential()
            for j in range(n):
                block.add_module("denselayer{}".format(j + 1), HaraDenseLayer(ch + j * growth, growth, bn_size, drop))
            self.features.add_module("denseblock{}".format(i + 1), block)
            ch += n * growth
            if i != len(blocks) - 1:
                t = nn.Sequential()
                t.add_module("norm", nn.BatchNorm3d(ch))
                t.add_module("relu", nn.ReLU(inplace=True))
                t.add_module("conv", nn.Conv3d(ch, ch // 2, kernel_size=1, stride=1, bias=False))
                t.add_module("pool", nn.AvgPool3d(kernel_size=2, stride=2))
                self.features.add_module("transition{}".format(i + 1), t)
                ch //= 2
        self.features.add_module("norm5", nn.BatchNorm3d(ch))
        self.classifier = nn.Linear(ch, classes)

    def forward(self, x):
        f = self.features(x)
        out = F.relu(f, inplace=False)
        out = F.adaptive_avg_pool3d(out, output_size=(1, 1, 1)).view(f.size(0), -1)
        return self.classifier(out)


# --------------------------------------------------------------- weights


def randomize(model):
    """Draws every parameter and buffer at random, away from PyTorch's
    initial values (BN weight 1, bias 0, mean 0, var 1)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv3d):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, ())))
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, 1.0 / m.in_features ** 0.5)
                m.bias.uniform_(-0.2, 0.2)


def fnv1a32(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def hash_unit(name, n):
    """n values in [-1, 1): v_i = 2·(fmix32(i·0x9E3779B1 + fnv1a32(name)) >> 8)/2^24 − 1
    (fmix32 is MurmurHash3's finaliser), all arithmetic modulo 2^32."""
    m = np.uint64(0xFFFFFFFF)
    x = (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B1) + np.uint64(fnv1a32(name))) & m
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & m
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & m
    x ^= x >> np.uint64(16)
    return (x >> np.uint64(8)).astype(np.float64) / float(1 << 24) * 2.0 - 1.0


def formula_fill(model):
    """Fills each state-dict tensor by its key and shape, in float64 then
    rounded once to float32 (v from hash_unit):
      rank-5 weight (conv):   v·√(6/fan_in)
      rank-2 weight (linear): v/√in
      rank-1 weight (BN):     1 + v/4
      bias:                   v/10
      running_mean:           v/10
      running_var:            1 + v/4
      num_batches_tracked:    0"""
    with torch.no_grad():
        for k, t in model.state_dict().items():
            n = t.numel()
            if k.endswith("num_batches_tracked"):
                t.zero_()
                continue
            v = hash_unit(k, n)
            if k.endswith("running_var") or (k.endswith("weight") and t.dim() == 1):
                val = 1.0 + v / 4.0
            elif k.endswith("running_mean") or k.endswith("bias"):
                val = v / 10.0
            elif k.endswith("weight") and t.dim() == 5:
                val = v * np.sqrt(6.0 / (n // t.shape[0]))
            elif k.endswith("weight") and t.dim() == 2:
                val = v / np.sqrt(float(t.shape[1]))
            else:
                raise ValueError("no formula for " + k)
            t.copy_(torch.from_numpy(val.astype(np.float32).reshape(t.shape)))


# ------------------------------------------------------------------ cases

tensors = []
cases = []


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def add_case(name, layout, model, cfg, x, store_weights, train_x=None):
    model.eval()
    taps = OrderedDict()
    hooks = []
    names = [n for n, _ in model.features.named_children() if n.startswith("denseblock") or n.startswith("transition")]
    for n in names:
        mod = getattr(model.features, n)
        hooks.append(mod.register_forward_hook(lambda _m, _i, o, n=n: taps.__setitem__("features." + n, o.detach().clone())))
    if layout == "monai":
        last = "class_layers.relu"
        hooks.append(model.class_layers.relu.register_forward_hook(lambda _m, _i, o: taps.__setitem__(last, o.detach().clone())))
    else:
        # The Hara forward applies F.relu after features.norm5; that map
        # (the input of HKBU's glob_avg_pool) is the last tap.
        last = "features.norm5"
        hooks.append(model.features.norm5.register_forward_hook(lambda _m, _i, o: taps.__setitem__(last, F.relu(o).detach().clone())))
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    sd = model.state_dict()
    keys = [[k, list(v.shape)] for k, v in sd.items()]
    if store_weights:
        for k, v in sd.items():
            if k.endswith("num_batches_tracked"):
                a = np.array(v.numpy(), dtype="<i8")
                tensors.append((f"{name}/w/{k}", "I64", a.shape, a.tobytes()))
            else:
                tensors.append(stfile.f32(f"{name}/w/{k}", v.numpy()))
        for k, v in taps.items():
            tensors.append(stfile.f32(f"{name}/tap/{k}", v.numpy()))
    tensors.append(stfile.f32(f"{name}/x", x.numpy()))
    tensors.append(stfile.f32(f"{name}/logits", logits.numpy()))
    tensors.append(stfile.f32(f"{name}/features", taps[last].numpy()))
    case = {
        "name": name,
        "layout": layout,
        "in_channels": x.shape[1],
        "classes": logits.shape[1],
        "config": cfg,
        "keys": keys,
        "taps": list(taps.keys()),
        "params": nparams(model),
        "stored_weights": store_weights,
    }
    f = taps[last]
    print(
        f"{name}: x {list(x.shape)} features {list(f.shape)} |f|max {f.abs().max():.3g} "
        f"logits {logits.flatten()[:6].tolist()} params {nparams(model)}"
    )
    if train_x is not None:
        # One training-mode pass from the same weights, in float64 (the
        # float32 rounding of either implementation is then the only
        # difference): batch statistics, running-statistics update,
        # gradients of sum(logits * r).
        md = copy.deepcopy(model).double().train()
        xt = train_x.double().requires_grad_(True)
        lt = md(xt)
        r = torch.randn(lt.shape)
        (lt * r.double()).sum().backward()
        tensors.append(stfile.f32(f"{name}/train/x", train_x.numpy()))
        tensors.append(stfile.f32(f"{name}/train/r", r.numpy()))
        tensors.append(stfile.f32(f"{name}/train/logits", lt.detach().numpy()))
        tensors.append(stfile.f32(f"{name}/train/grad_x", xt.grad.numpy()))
        params = dict(md.named_parameters())
        stem = "features.conv0" if layout == "monai" else "features.conv1"
        stem_bn = "features.norm0" if layout == "monai" else "features.norm1"
        lay = ".layers" if layout == "monai" else ""
        fc = "class_layers.out" if layout == "monai" else "classifier"
        # (Not the stem BN's parameters: behind ReLU, max pooling and the
        # next training-mode BN the loss hardly depends on them, and their
        # gradients are sums that cancel to 1e-5 .. 1e-14, with no float32
        # precision left to compare.)
        grads = [
            stem + ".weight",
            f"features.denseblock1.denselayer1{lay}.conv1.weight",
            f"features.denseblock2.denselayer4{lay}.norm2.bias",
            f"features.denseblock3.denselayer3{lay}.conv2.weight",
            "features.transition2.conv.weight",
            "features.norm5.weight",
            "features.norm5.bias",
            fc + ".weight",
            fc + ".bias",
        ]
        for k in grads:
            tensors.append(stfile.f32(f"{name}/train/grad/{k}", params[k].grad.numpy()))
        buffers = dict(md.named_buffers())
        state = [stem_bn + ".running_mean", stem_bn + ".running_var", stem_bn + ".num_batches_tracked",
                 "features.norm5.running_mean", "features.norm5.running_var"]
        for k in state:
            tensors.append(stfile.f32(f"{name}/train/state/{k}", buffers[k].numpy().astype(np.float32)))
        case["train_grads"] = grads
        case["train_state"] = state
        print(f"  train: x {list(train_x.shape)} logits {lt.flatten()[:3].tolist()} |grad_x|max {xt.grad.abs().max():.3g}")
    cases.append(case)


SMALL = dict(init=16, growth=8, blocks=(6, 12, 24, 16), bn_size=4)
SMALL_CFG = {"growth_rate": 8, "bn_size": 4, "init_features": 16, "block_config": [6, 12, 24, 16]}

m = MonaiDenseNet(1, 3, **SMALL)
randomize(m)
add_case("monai_small", "monai", m, SMALL_CFG, torch.rand(2, 1, 33, 35, 37) * 2 - 1, True)

m = HaraDenseNet(1, 3, **SMALL)
randomize(m)
add_case("hara_small", "hara", m, SMALL_CFG, torch.rand(2, 1, 17, 35, 37) * 2 - 1, True)

# Three blocks leave a 3×3×3 map at norm5, so that training-mode batch
# statistics are taken over 54 values per channel (DenseNet-121's four
# blocks would need 96³ inputs for that).
TRAIN = dict(init=16, growth=8, blocks=(3, 4, 3), bn_size=4)
TRAIN_CFG = {"growth_rate": 8, "bn_size": 4, "init_features": 16, "block_config": [3, 4, 3]}

m = MonaiDenseNet(1, 3, **TRAIN)
randomize(m)
add_case("monai_train", "monai", m, TRAIN_CFG, torch.rand(1, 1, 32, 32, 32) * 2 - 1, True,
         train_x=torch.rand(2, 1, 48, 48, 48) * 2 - 1)

m = HaraDenseNet(1, 3, **TRAIN)
randomize(m)
add_case("hara_train", "hara", m, TRAIN_CFG, torch.rand(1, 1, 16, 32, 32) * 2 - 1, True,
         train_x=torch.rand(2, 1, 24, 48, 48) * 2 - 1)

m = MonaiDenseNet(1, 3)
formula_fill(m)
add_case("monai121", "monai", m, {}, torch.rand(1, 1, 32, 32, 64) * 2 - 1, False)

m = HaraDenseNet(1, 3)
formula_fill(m)
add_case("hara121", "hara", m, {}, torch.rand(1, 1, 16, 32, 64) * 2 - 1, False)

params = {
    "monai121_in1_out2": nparams(MonaiDenseNet(1, 2)),
    "monai121_in3_out2": nparams(MonaiDenseNet(3, 2)),
    "hara121_in1_out2": nparams(HaraDenseNet(1, 2)),
    "hara121_in3_out2": nparams(HaraDenseNet(3, 2)),
}
print("params", params)

os.makedirs(os.path.dirname(OUT), exist_ok=True)
stfile.write(OUT, tensors, {"cases": json.dumps(cases), "params": json.dumps(params)})
print("wrote", OUT, os.path.getsize(OUT), "bytes")
