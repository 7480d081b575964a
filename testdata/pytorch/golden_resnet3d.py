#!/usr/bin/python3
"""Writes net3d/testdata/golden_resnet3d.safetensors: PyTorch reference
outputs of the 3D ResNet families, checked by net3d/resnet_test.go and
net3d/video_test.go.

Models:
  - Kensho Hara's 3D ResNet (3D-ResNets-PyTorch models/resnet.py, the
    generate_model form with n_input_channels, conv1_t_size,
    conv1_t_stride, no_max_pool, shortcut_type and widen_factor) and
    Tencent MedicalNet's ResNet (models/resnet.py: 7x7x7 stride-2 conv1,
    dilated layer3/layer4, with a pool + fc head in place of conv_seg) are
    written below from their description (shared/docs/reference-models.md
    sections 5.3 and 5.4);
  - r3d_18, mc3_18 and r2plus1d_18 come from torchvision.models.video
    (no weights), with the stem conv replaced for 1 input channel and fc
    for the class count, as the CovidNet3D baselines do.

Each case stores, under "<case>/...":
  x              the input,
  tap/<layer>    the output of every layer Classifier.TapLayers names (the
                 last, layer4, is the pre-pool feature map),
  logits         the eval-mode output,
  state/<key>    the state dict, for the Hara cases (small widen_factor).
Every weight, bias and BatchNorm weight/bias/running_mean/running_var is
random. The fixed-width networks (MedicalNet, torchvision) would need
hundreds of MB of weights, so their state dicts are not stored: every
value is instead a deterministic hash of (key, index), mapped to
[lo, hi) per tensor, which net3d's test recomputes (hashed_uniform below
documents the formula). The metadata entry "cases" lists, per case, the
registry architecture, spec, how weights are given, and the state-dict
keys with shapes (and lo/hi) in PyTorch's order; "structures" lists the
state-dict keys and shapes of every ResNet3D / MedicalNet depth at a
reduced width, for a structural comparison.

Run from the repository root with Debian's PyTorch and torchvision
(float32, seeded, single-threaded, so the file is reproducible):

    /usr/bin/python3 testdata/pytorch/golden_resnet3d.py
"""

import functools
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models.video as tvv

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stfile  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "net3d", "testdata", "golden_resnet3d.safetensors")

torch.manual_seed(20240611)
torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)

# ---------------------------------------------------------------------------
# Hara / MedicalNet 3D ResNet, from the reference description.


def shortcut_a(x, planes, stride):
    """Type-A shortcut: avg_pool3d(kernel 1, stride), then zero channels up
    to planes, on the detached tensor (the reference concatenates out.data)."""
    out = F.avg_pool3d(x, kernel_size=1, stride=stride)
    pad = torch.zeros(out.size(0), planes - out.size(1), *out.shape[2:])
    return torch.cat([out.data, pad], dim=1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


DEPTHS = {
    10: (BasicBlock, [1, 1, 1, 1]),
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
    200: (Bottleneck, [3, 24, 36, 3]),
}
MEDICALNET_SHORTCUT = {10: "B", 18: "A", 34: "A", 50: "B", 101: "B", 152: "B", 200: "B"}


class ResNet3D(nn.Module):
    """The common body: conv1, bn1, relu, optional maxpool(3, 2, 1),
    layer1..layer4 with the given strides and dilations, global average
    pool, optional dropout, fc."""

    def __init__(self, depth, in_ch, classes, widths, conv1_k, conv1_s, conv1_p, max_pool, strides, dilations,
                 shortcut, dropout=0.0):
        super().__init__()
        block, layers = DEPTHS[depth]
        self.inplanes = widths[0]
        self.conv1 = nn.Conv3d(in_ch, widths[0], conv1_k, stride=conv1_s, padding=conv1_p, bias=False)
        self.bn1 = nn.BatchNorm3d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1) if max_pool else None
        for i in range(4):
            setattr(self, f"layer{i + 1}",
                    self._make_layer(block, widths[i], layers[i], shortcut, strides[i], dilations[i]))
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.fc = nn.Linear(widths[3] * block.expansion, classes)

    def _make_layer(self, block, planes, blocks, shortcut, stride, dilation):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            if shortcut == "A":
                downsample = functools.partial(shortcut_a, planes=planes * block.expansion, stride=stride)
            else:
                downsample = nn.Sequential(
                    nn.Conv3d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                    nn.BatchNorm3d(planes * block.expansion))
        mods = [block(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            mods.append(block(self.inplanes, planes, dilation=dilation))
        return nn.Sequential(*mods)

    def taps(self, x):
        """Returns [(layer, output)] for conv1 (after the pool) and layer1..4."""
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        out = [("conv1", x)]
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            out.append((f"layer{i + 1}", x))
        return out

    def forward(self, x):
        x = self.avgpool(self.taps(x)[-1][1]).flatten(1)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)


def hara(depth, in_ch, classes, shortcut="B", conv1_t_size=7, conv1_t_stride=1, no_max_pool=False,
         widen_factor=1.0, dropout=0.0):
    widths = [int(w * widen_factor) for w in (64, 128, 256, 512)]
    return ResNet3D(depth, in_ch, classes, widths, (conv1_t_size, 7, 7), (conv1_t_stride, 2, 2),
                    (conv1_t_size // 2, 3, 3), not no_max_pool, [1, 2, 2, 2], [1, 1, 1, 1], shortcut, dropout)


def medicalnet(depth, in_ch, classes, shortcut=None, dropout=0.0, widths=(64, 128, 256, 512)):
    return ResNet3D(depth, in_ch, classes, list(widths), 7, 2, 3, True, [1, 2, 1, 1], [1, 1, 2, 4],
                    shortcut or MEDICALNET_SHORTCUT[depth], dropout)


# ---------------------------------------------------------------------------
# torchvision video nets.


def video(arch, in_ch, classes, fc_bias=True):
    m = getattr(tvv, arch)(weights=None, num_classes=classes)
    c = m.stem[0]
    m.stem[0] = nn.Conv3d(in_ch, c.out_channels, c.kernel_size, stride=c.stride, padding=c.padding, bias=False)
    if not fc_bias:
        m.fc = nn.Linear(m.fc.in_features, classes, bias=False)
    return m


def video_taps(m, x):
    out = []
    hooks = [getattr(m, n).register_forward_hook(lambda mod, i, o, n=n: out.append((n, o)))
             for n in ("stem", "layer1", "layer2", "layer3", "layer4")]
    y = m(x)
    for h in hooks:
        h.remove()
    return out, y


# ---------------------------------------------------------------------------
# Weights.

MASK = (1 << 64) - 1


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def hashed_uniform(key, n):
    """u[i] in [0, 1) for i < n: SplitMix64's output function applied to
    z = fnv1a64(key) + (i+1)·0x9E3779B97F4A7C15 (mod 2^64), top 24 bits / 2^24."""
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(key)) + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def bounds(key, shape):
    """[lo, hi) of the uniform values given to a state-dict entry."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return 3.0, 3.0
    if leaf == "running_mean":
        return -0.5, 0.5
    if leaf == "running_var":
        return 0.5, 2.0
    if len(shape) >= 2:  # conv / linear weight: std sqrt(2 / fan_in)
        fan_in = int(np.prod(shape[1:]))
        a = math.sqrt(6.0 / fan_in)
        return -a, a
    if leaf == "weight":  # BatchNorm weight
        return 0.5, 1.5
    return -0.2, 0.2  # BatchNorm and Linear bias


def fill(model, hashed):
    """Replaces every state-dict value; returns the recipe list."""
    sd = model.state_dict()
    recipe = []
    new = {}
    for k, v in sd.items():
        lo, hi = bounds(k, list(v.shape))
        if hashed:
            u = hashed_uniform(k, v.numel())
            vals = (lo + (hi - lo) * u).astype(np.float32).reshape(v.shape)
        else:
            vals = (lo + (hi - lo) * torch.rand(v.shape, dtype=torch.float64)).float().numpy()
        new[k] = torch.from_numpy(np.ascontiguousarray(vals)).to(v.dtype)
        recipe.append({"key": k, "shape": list(v.shape), "lo": lo, "hi": hi})
    model.load_state_dict(new)
    return recipe


# ---------------------------------------------------------------------------

cases = []
tensors = []


def add_case(name, arch, in_ch, classes, config, model, x, hashed, tap_fn=None, state_model=None):
    """Fills model's weights (through state_model's state dict, e.g. a
    DataParallel wrapper, when given), runs it in eval mode and records
    everything."""
    sm = state_model if state_model is not None else model
    recipe = fill(sm, hashed)
    model.eval()
    with torch.no_grad():
        if tap_fn is None:
            taps = model.taps(x)
            logits = model(x)
        else:
            taps, logits = tap_fn(model, x)
    tensors.append(stfile.f32(f"{name}/x", x.numpy()))
    tensors.append(stfile.f32(f"{name}/logits", logits.numpy()))
    for layer, t in taps:
        tensors.append(stfile.f32(f"{name}/tap/{layer}", t.numpy()))
    if not hashed:
        for k, v in sm.state_dict().items():
            if v.dtype == torch.int64:
                a = np.array(v.numpy(), dtype="<i8")
                tensors.append((f"{name}/state/{k}", "I64", a.shape, a.tobytes()))
            else:
                tensors.append(stfile.f32(f"{name}/state/{k}", v.numpy()))
    cases.append({
        "name": name, "arch": arch, "in_channels": in_ch, "classes": classes, "config": config,
        "weights": "hashed" if hashed else "stored", "taps": [layer for layer, _ in taps], "params": recipe,
    })
    f = taps[-1][1]
    print(f"{name}: x {list(x.shape)} features {list(f.shape)} |f|max {f.abs().max():.3g} "
          f"logits {logits.flatten()[:6].tolist()}", file=sys.stderr)


def hara_case(name, depth, in_ch, classes, x_shape, **cfg):
    m = hara(depth, in_ch, classes, **cfg)
    add_case(name, f"resnet3d-{depth}", in_ch, classes, cfg, m, torch.randn(x_shape), hashed=False)


# Hara, stored weights, small widen factors.
hara_case("resnet3d-10-A", 10, 1, 3, (2, 1, 16, 48, 48), shortcut="A", widen_factor=0.125)
hara_case("resnet3d-18-B", 18, 3, 4, (1, 3, 16, 32, 32), shortcut="B", conv1_t_size=3, conv1_t_stride=2,
          no_max_pool=True, widen_factor=0.125)
hara_case("resnet3d-50-B", 50, 1, 2, (1, 1, 16, 64, 64), shortcut="B", widen_factor=0.0625)
hara_case("resnet3d-50-A", 50, 2, 3, (1, 2, 8, 32, 32), shortcut="A", widen_factor=0.0625, dropout=0.5)

# MedicalNet, hashed weights, keys as saved from nn.DataParallel ("module.").
for depth in (10, 18):
    m = medicalnet(depth, 1, 3)
    add_case(f"medicalnet-resnet-{depth}", f"medicalnet-resnet-{depth}", 1, 3, {}, m, torch.randn(1, 1, 16, 32, 32),
             hashed=True, state_model=nn.DataParallel(m))

# torchvision video nets, hashed weights, 1 input channel, 3 classes.
for arch, fc_bias in (("r3d_18", True), ("mc3_18", False), ("r2plus1d_18", True)):
    m = video(arch, 1, 3, fc_bias)
    add_case(arch, arch, 1, 3, {} if fc_bias else {"fc_bias": False}, m, torch.randn(1, 1, 8, 24, 24),
             hashed=True, tap_fn=video_taps)

# Structures: state-dict keys and shapes of every depth at a reduced width.
structures = []
for depth in DEPTHS:
    for shortcut in ("A", "B"):
        m = hara(depth, 2, 5, shortcut=shortcut, widen_factor=0.0625)
        structures.append({"arch": f"resnet3d-{depth}", "in_channels": 2, "classes": 5,
                           "config": {"shortcut": shortcut, "widen_factor": 0.0625}, "width_scale": 1,
                           "keys": [[k, list(v.shape)] for k, v in m.state_dict().items()]})
    m = medicalnet(depth, 1, 2, widths=(4, 8, 16, 32))
    structures.append({"arch": f"medicalnet-resnet-{depth}", "in_channels": 1, "classes": 2, "config": {},
                       "width_scale": 16, "keys": [[k, list(v.shape)] for k, v in m.state_dict().items()]})

meta = {
    "cases": json.dumps(cases, separators=(",", ":")),
    "structures": json.dumps(structures, separators=(",", ":")),
    "torch": torch.__version__,
}
stfile.write(OUT, tensors, meta)
print(f"wrote {OUT}: {os.path.getsize(OUT)} bytes", file=sys.stderr)
