#!/usr/bin/python3
"""Writes net2d/testdata/golden_net2d.safetensors: PyTorch reference outputs
of the 2D networks of package net2d, checked by net2d's tests.

Models, written below from their sources' facts (timm is not installed):
  - ResNet-RS as timm builds it (timm/models/resnet.py: ResNet with
    stem_type='deep', stem_width=32, replace_stem_pool=True,
    avg_down=True, block attn_layer = SEModule(rd_ratio=0.25), i.e.
    timm/layers/squeeze_excite.py with rd_channels =
    make_divisible(C_out * 0.25, 8, round_limit=0)); the registry's small
    depths 18 (BasicBlock [2, 2, 2, 2]) and 26 (Bottleneck [2, 2, 2, 2])
    use the same recipe;
  - ResFormer (ruitian12/resformer image_classification/models.py:
    GlobalPosEmbed, Attention with get_v, Block, PatchEmbed), with the
    token grid taken from the patch-embedding output (h × w) instead of
    sqrt(N − 1), which is the reference for square inputs and its natural
    extension to rectangular ones;
  - the scale-consistency loss of ResFormer's losses.py ('smooth-l1':
    smooth_l1(student, layer_norm(teacher, eps 1e-6)) with the teacher the
    detached feature of the next-higher resolution);
  - attention-based MIL pooling (Ilse et al. 2018, AttentionMIL's
    attention = Sequential(Linear(C, L), Tanh(), Linear(L, 1)),
    softmax over instances, weighted sum, classifier Linear(C, K)).

Each model case stores, under "<case>/...": x, logits (eval mode), the
pooled pre-logit feature "pooled", and a Grad-CAM map "gradcam" of class 1
at the case's explained layer (ReLU(Σ_k mean_s(∂y/∂A_k)·A_k), raw). The
weights are a deterministic hash of (key, index) mapped to [lo, hi) per
tensor (hashed_uniform, as golden_resnet3d.py), recomputed by the Go test;
the metadata "cases" lists each case's arch, spec, taps and its state-dict
keys with shapes and bounds in PyTorch's order. "param_counts" holds the
parameter count of every ResNet-RS depth and ResFormer size at 1000
classes and 3 input channels (built on the meta device).

Run from the repository root with Debian's PyTorch (float32, seeded,
single-threaded, so the file is reproducible):

    /usr/bin/python3 testdata/pytorch/golden_net2d.py
"""

import json
import math
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
OUT = os.path.join(ROOT, "net2d", "testdata", "golden_net2d.safetensors")

torch.manual_seed(20240612)
torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)

DEV = {"device": "cpu"}  # "meta" while counting parameters

# ---------------------------------------------------------------------------
# ResNet-RS (timm resnet.py facts).


def make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class SEModule(nn.Module):
    def __init__(self, channels, rd_ratio=0.25):
        super().__init__()
        rd = make_divisible(channels * rd_ratio, 8, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True, **DEV)
        self.bn = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True, **DEV)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.bn(self.fc1(s))))
        return x * self.gate(s)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False, **DEV)
        self.bn1 = nn.BatchNorm2d(planes, **DEV)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False, **DEV)
        self.bn2 = nn.BatchNorm2d(planes, **DEV)
        self.se = SEModule(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        sc = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.se(self.bn2(self.conv2(x)))
        if self.downsample is not None:
            sc = self.downsample(sc)
        return self.act2(x + sc)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False, **DEV)
        self.bn1 = nn.BatchNorm2d(planes, **DEV)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False, **DEV)
        self.bn2 = nn.BatchNorm2d(planes, **DEV)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False, **DEV)
        self.bn3 = nn.BatchNorm2d(out, **DEV)
        self.se = SEModule(out)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        sc = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.se(self.bn3(self.conv3(x)))
        if self.downsample is not None:
            sc = self.downsample(sc)
        return self.act3(x + sc)


def downsample_avg(cin, cout, stride):
    pool = nn.Identity() if stride == 1 else nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    return nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False, **DEV), nn.BatchNorm2d(cout, **DEV))


RS_DEPTHS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    26: (Bottleneck, [2, 2, 2, 2]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
    200: (Bottleneck, [3, 24, 36, 3]),
    270: (Bottleneck, [4, 29, 53, 4]),
    350: (Bottleneck, [4, 36, 72, 4]),
    420: (Bottleneck, [4, 44, 87, 4]),
}


class ResNetRS(nn.Module):
    def __init__(self, depth, in_ch=3, classes=1000, drop_rate=0.0):
        super().__init__()
        block, layers = RS_DEPTHS[depth]
        sw = 32
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_ch, sw, 3, stride=2, padding=1, bias=False, **DEV), nn.BatchNorm2d(sw, **DEV),
            nn.ReLU(inplace=True),
            nn.Conv2d(sw, sw, 3, stride=1, padding=1, bias=False, **DEV), nn.BatchNorm2d(sw, **DEV),
            nn.ReLU(inplace=True),
            nn.Conv2d(sw, 64, 3, stride=1, padding=1, bias=False, **DEV))
        self.bn1 = nn.BatchNorm2d(64, **DEV)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.Sequential(
            nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False, **DEV), nn.BatchNorm2d(64, **DEV),
            nn.ReLU(inplace=True))
        inplanes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            ds = None
            if stride != 1 or inplanes != planes * block.expansion:
                ds = downsample_avg(inplanes, planes * block.expansion, stride)
            blocks = [block(inplanes, planes, stride, ds)]
            inplanes = planes * block.expansion
            blocks += [block(inplanes, planes) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.drop_rate = drop_rate
        self.fc = nn.Linear(inplanes, classes, **DEV)

    def taps(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        out = [("maxpool", x)]
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            out.append((f"layer{i + 1}", x))
        return out

    def head(self, f):
        p = f.mean((2, 3))
        return p, self.fc(F.dropout(p, self.drop_rate, self.training))


# ---------------------------------------------------------------------------
# ResFormer (ruitian12/resformer models.py facts).


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, **DEV)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, **DEV)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        hd = dim // heads
        self.scale = hd ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True, **DEV)
        self.proj = nn.Linear(dim, dim, **DEV)
        self.get_v = nn.Conv2d(hd, hd, 3, padding=1, groups=hd, **DEV)

    def forward(self, x, grid):
        B, N, C = x.shape
        H, W = grid
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        hd = C // self.num_heads
        lv = v[:, :, 1:].transpose(-2, -1).reshape(B * self.num_heads, hd, H, W)
        local = self.get_v(lv).reshape(B, -1, hd, N - 1).transpose(-2, -1)
        local = torch.cat((torch.zeros(B, self.num_heads, 1, hd), local), dim=2)
        x = (attn @ v + local).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, **DEV)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, **DEV)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x, grid, tap=None):
        y = self.norm1(x)
        if tap is not None:
            y = tap(y)
        x = x + self.attn(y, grid)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_ch, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch, stride=patch, **DEV)


class GlobalPosEmbed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.embed_dim = dim // 2
        self.embed_layer = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **DEV)

    def forward(self, x, grid):
        b, n, c = x.shape
        H, W = grid
        not_mask = torch.ones((b, H, W))
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps, scale = 1e-6, 2 * math.pi
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
        dim_t = torch.arange(self.embed_dim, dtype=torch.float32)
        dim_t = 10000 ** (2 * (dim_t // 2) / self.embed_dim)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
        pos = self.embed_layer(pos).reshape(b, c, -1).transpose(1, 2)
        pos = torch.cat((torch.zeros((b, 1, c)), pos), dim=1)
        return pos + x


RF_SIZES = {"ti": (192, 3), "s": (384, 6), "b": (768, 12)}


class ResFormer(nn.Module):
    def __init__(self, size, in_ch=3, classes=1000, patch=16, depth=12):
        super().__init__()
        dim, heads = RF_SIZES[size]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim, **DEV))
        self.patch_embed = PatchEmbed(in_ch, dim, patch)
        self.pos_embed = GlobalPosEmbed(dim)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6, **DEV)
        self.head = nn.Linear(dim, classes, **DEV)

    def features(self, x, explain=None):
        """Returns the final-normed tokens; explain(i) gives block i's norm1 tap."""
        x = self.patch_embed.proj(x)
        grid = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_embed(x, grid)
        for i, blk in enumerate(self.blocks):
            x = blk(x, grid, explain(i) if explain else None)
        return self.norm(x), grid

    def forward(self, x):
        t, _ = self.features(x)
        return self.head(t[:, 0])


# ---------------------------------------------------------------------------
# Weights (the hash of golden_resnet3d.py).

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
    if len(shape) >= 2:  # conv / linear weight, cls token: ±sqrt(6 / fan_in)
        fan_in = int(np.prod(shape[1:]))
        a = math.sqrt(6.0 / fan_in)
        return -a, a
    if leaf == "weight":  # BatchNorm / LayerNorm weight
        return 0.5, 1.5
    return -0.2, 0.2  # biases


def fill(model):
    recipe, new = [], {}
    for k, v in model.state_dict().items():
        lo, hi = bounds(k, list(v.shape))
        u = hashed_uniform(k, v.numel())
        vals = (lo + (hi - lo) * u).astype(np.float32).reshape(v.shape)
        new[k] = torch.from_numpy(np.ascontiguousarray(vals)).to(v.dtype)
        recipe.append({"key": k, "shape": list(v.shape), "lo": lo, "hi": hi})
    model.load_state_dict(new)
    return recipe


def gradcam(act, grad):
    """ReLU(Σ_k mean_s(g_k)·A_k) per item: N×1×h×w."""
    w = grad.mean((2, 3), keepdim=True)
    return F.relu((w * act).sum(1, keepdim=True))


# ---------------------------------------------------------------------------

cases = []
tensors = []


def record(name, arch, in_ch, classes, config, model, x, taps, pooled, logits, layer, cam):
    tensors.append(stfile.f32(f"{name}/x", x.numpy()))
    tensors.append(stfile.f32(f"{name}/logits", logits.detach().numpy()))
    tensors.append(stfile.f32(f"{name}/pooled", pooled.detach().numpy()))
    tensors.append(stfile.f32(f"{name}/gradcam", cam.detach().numpy()))
    for tname, t in taps:
        tensors.append(stfile.f32(f"{name}/tap/{tname}", t.detach().numpy()))
    cases.append({"name": name, "arch": arch, "in_channels": in_ch, "classes": classes, "config": config,
                  "taps": [t for t, _ in taps], "gradcam_layer": layer, "gradcam_class": 1,
                  "params": model.recipe})
    print(f"{name}: x {list(x.shape)} logits {logits.flatten()[:6].tolist()}", file=sys.stderr)


def resnetrs_case(name, depth, in_ch, classes, x, config):
    m = ResNetRS(depth, in_ch, classes, drop_rate=config.get("dropout", 0.0))
    m.recipe = fill(m)
    m.eval()
    with torch.no_grad():
        taps = m.taps(x)
        pooled, logits = m.head(taps[-1][1])
    # Grad-CAM of class 1 at layer4 (the final feature map).
    f = taps[-1][1].clone().requires_grad_(True)
    _, y = m.head(f)
    y[:, 1].sum().backward()
    cam = gradcam(f.detach(), f.grad)
    record(name, f"resnetrs-{depth}", in_ch, classes, config, m, x, taps, pooled, logits, "layer4", cam)


def resformer_case(name, size, in_ch, classes, x, depth=12):
    m = ResFormer(size, in_ch, classes, depth=depth)
    m.recipe = fill(m)
    m.eval()
    with torch.no_grad():
        t, grid = m.features(x)
        logits = m.head(t[:, 0])
    # Grad-CAM of class 1 at the last block's norm1 output (patch tokens as
    # a D×h×w map).
    last = depth - 1
    store = {}

    def explain(i):
        if i != last:
            return None

        def tap(y):
            p = y[:, 1:].detach().clone().requires_grad_(True)
            store["p"] = p
            return torch.cat((y[:, :1], p), dim=1)
        return tap

    t2, _ = m.features(x, explain)
    m.head(t2[:, 0])[:, 1].sum().backward()
    B, _, D = t2.shape
    H, W = grid
    p = store["p"]
    act = p.detach().transpose(1, 2).reshape(B, D, H, W)
    grad = p.grad.transpose(1, 2).reshape(B, D, H, W)
    cam = gradcam(act, grad)
    taps = [("norm", t.transpose(1, 2))]
    record(name, f"resformer-{size}", in_ch, classes, {"depth": depth} if depth != 12 else {}, m, x, taps,
           t[:, 0], logits, f"blocks.{last}.norm1", cam)


resnetrs_case("resnetrs-18", 18, 1, 3, torch.randn(2, 1, 80, 48), {"dropout": 0.25})
resnetrs_case("resnetrs-50", 50, 3, 4, torch.randn(1, 3, 64, 64), {})
resformer_case("resformer-ti-64", "ti", 3, 5, torch.randn(2, 3, 64, 64))
resformer_case("resformer-ti-96", "ti", 3, 5, torch.randn(1, 3, 96, 96))
resformer_case("resformer-ti-rect", "ti", 1, 2, torch.randn(1, 1, 48, 80), depth=2)

# Scale-consistency loss: features of three resolutions, descending.
feats = [torch.randn(3, 16) * s for s in (1.0, 1.5, 2.0)]
for f in feats:
    f.requires_grad_(True)
loss = torch.zeros(())
for i in range(1, len(feats)):
    teacher = F.layer_norm(feats[i - 1].detach(), (feats[i - 1].shape[-1],), eps=1e-6)
    loss = loss + F.smooth_l1_loss(feats[i], teacher)
loss.backward()
for i, f in enumerate(feats):
    tensors.append(stfile.f32(f"scale_loss/feat{i}", f.detach().numpy()))
    g = f.grad if f.grad is not None else torch.zeros_like(f)
    tensors.append(stfile.f32(f"scale_loss/grad{i}", g.numpy()))
tensors.append(stfile.f32("scale_loss/loss", loss.detach().numpy()))

# Attention-MIL pooling: batch 2 of 5 instances with 6 features, L = 4, 3 classes.


class AttentionPool(nn.Module):
    def __init__(self, c, hidden, classes):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(c, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.classifier = nn.Linear(c, classes)

    def forward(self, h):
        a = torch.softmax(self.attention(h).squeeze(-1), dim=1)  # B×S
        z = (a.unsqueeze(1) @ h).squeeze(1)  # B×C
        return self.classifier(z), a


ap = AttentionPool(6, 4, 3)
ap_recipe = fill(ap)
h = torch.randn(2, 5, 6)
with torch.no_grad():
    ap_logits, ap_weights = ap(h)
tensors.append(stfile.f32("attnpool/h", h.numpy()))
tensors.append(stfile.f32("attnpool/logits", ap_logits.numpy()))
tensors.append(stfile.f32("attnpool/weights", ap_weights.numpy()))

# Parameter counts at 1000 classes, 3 channels, built on the meta device.
DEV["device"] = "meta"
counts = {}
for depth in RS_DEPTHS:
    counts[f"resnetrs-{depth}"] = sum(p.numel() for p in ResNetRS(depth).parameters())
for size in RF_SIZES:
    counts[f"resformer-{size}"] = sum(p.numel() for p in ResFormer(size).parameters())
print("parameter counts:", counts, file=sys.stderr)

meta = {
    "cases": json.dumps(cases, separators=(",", ":")),
    "attnpool_params": json.dumps(ap_recipe, separators=(",", ":")),
    "param_counts": json.dumps(counts, separators=(",", ":")),
    "torch": torch.__version__,
}
os.makedirs(os.path.dirname(OUT), exist_ok=True)
stfile.write(OUT, tensors, meta)
print(f"wrote {OUT}: {os.path.getsize(OUT)} bytes", file=sys.stderr)
