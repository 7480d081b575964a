#!/usr/bin/python3
"""Writes net3d/testdata/golden_covidnet3d.safetensors: PyTorch reference
values for CovidNet3D (net3d/covidnet.go) and its supernet
(net3d/supernet.go), checked by net3d/covidnet_test.go.

The network is the reference Mobile3DNet (marsggbo/CovidNet3D
networks/mobile3d_net.py and mobile3d_ops.py), rewritten here without NNI:
each cell's LayerChoice is a module holding ALL candidates in a ModuleList
"choices" with a fixed chosen index, as NNI's apply_fixed_architecture
leaves it for retraining, so the state dict has the reference's keys.
A small spec uses every MBConv variant, identity and zero in first and
later cells, the second zero (index 9), and a stage whose first cell has a
shortcut. Every weight, BatchNorm affine parameter and running statistic is
random.

Stored tensors:
  <state-dict key>           the full reference state dict (every candidate;
                             num_batches_tracked as I64, as torch exports it)
  golden/input               2x1x16x32x32 input
  golden/logits              eval-mode logits
  golden/tap/<layer>         outputs of first_conv, blocks.0, each stage's
                             last block, feature_mix_layer
  golden/soft/mask.<i>, golden/soft/logits, golden/soft/proj,
  golden/soft/grad.<i>       soft masks (softmax of random logits), the
                             masked logits y = s*x + sum_j m_j*g_j(x) per
                             cell, a projection and d sum(logits*proj)/d mask
  golden/hard/...            the same for one-hot masks of value 1 at
                             random choices (only the selected op runs)
Metadata: "spec" (the Go net3d.Spec JSON), "choices" (JSON list), and
"ref_mflops"/"ref_size_mb" from the reference's flops_size_counter
(utils/calc_model_flops_size.py) for a zero input 1x1x16x32x32.

Run from the repository root with Debian's PyTorch:

    /usr/bin/python3 testdata/pytorch/golden_covidnet3d.py
"""

import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stfile  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "net3d", "testdata", "golden_covidnet3d.safetensors")

torch.manual_seed(20240602)
torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)

OPS = [("mb3_e3", 3, 3), ("mb3_e4", 3, 4), ("mb3_e6", 3, 6), ("mb5_e3", 5, 3), ("mb5_e4", 5, 4),
       ("mb7_e3", 7, 3), ("mb7_e4", 7, 4), ("identity", 0, 0), ("zero", 0, 0), ("zero2", 0, 0)]
INDEX = {name: j for j, (name, _, _) in enumerate(OPS)}


def make_divisible(v, divisor=8, min_val=None):
    if min_val is None:
        min_val = divisor
    new_v = max(min_val, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvLayer(nn.Module):
    """ConvLayer with ops_order weight_bn_act: conv (no bias), bn, act."""

    def __init__(self, cin, cout, k, stride=1, act=True):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm3d(cout)
        if act:
            self.act = nn.ReLU6(inplace=True)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class MBInvertedConvLayer(nn.Module):
    def __init__(self, cin, cout, k, stride, e):
        super().__init__()
        mid = round(cin * e)
        if e == 1:
            self.inverted_bottleneck = None
        else:
            self.inverted_bottleneck = nn.Sequential(OrderedDict([
                ("conv", nn.Conv3d(cin, mid, 1, 1, 0, bias=False)),
                ("bn", nn.BatchNorm3d(mid)),
                ("act", nn.ReLU6(inplace=True))]))
        self.depth_conv = nn.Sequential(OrderedDict([
            ("conv", nn.Conv3d(mid, mid, k, stride, k // 2, groups=mid, bias=False)),
            ("bn", nn.BatchNorm3d(mid)),
            ("act", nn.ReLU6(inplace=True))]))
        self.point_linear = nn.Sequential(OrderedDict([
            ("conv", nn.Conv3d(mid, cout, 1, 1, 0, bias=False)),
            ("bn", nn.BatchNorm3d(cout))]))

    def forward(self, x):
        if self.inverted_bottleneck:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))

    @staticmethod
    def is_zero_layer():
        return False


class IdentityLayer(nn.Module):
    def forward(self, x):
        return x

    @staticmethod
    def is_zero_layer():
        return False


class ZeroLayer(nn.Module):
    def forward(self, x):
        return x * 0

    @staticmethod
    def is_zero_layer():
        return True


class CalibrationLayer(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=1, stride=stride)

    def forward(self, x):
        return self.conv(x)


class LayerChoice(nn.Module):
    """NNI LayerChoice after apply_fixed_architecture: all candidates are
    allocated under choices; only the chosen one runs."""

    def __init__(self, cands, chosen):
        super().__init__()
        self.choices = nn.ModuleList(cands)
        self.chosen = chosen

    def forward(self, x):
        return self.choices[self.chosen](x), self.chosen


class MobileInvertedResidualBlock(nn.Module):
    def __init__(self, choice, shortcut, cands):
        super().__init__()
        self.mobile_inverted_conv = choice
        self.shortcut = shortcut
        self.op_candidates_list = cands  # plain list: not registered
        self.mask = None  # per-forward mask (tensor) for the mask modes
        self.soft = False

    def forward(self, x):
        if self.mask is None:  # the reference's semantics for a fixed choice
            out, idx = self.mobile_inverted_conv(x)
            if self.op_candidates_list[idx].is_zero_layer():
                return x
            if self.shortcut is None:
                return out
            return self.shortcut(x) + out
        # Mask modes: y = s*x + sum_j m_j*g_j(x) over the run candidates,
        # g_j the effective op (zero: 0 with a shortcut, x without).
        y = x if self.shortcut is not None else None
        for j, op in enumerate(self.op_candidates_list):
            if not self.soft and float(self.mask[j]) == 0:
                continue
            if op.is_zero_layer():
                if self.shortcut is not None:
                    continue
                g = x
            else:
                g = op(x)
            t = g * self.mask[j]
            y = t if y is None else y + t
        return y


class LinearLayer(nn.Module):
    def __init__(self, cin, cout, dropout_rate):
        super().__init__()
        if dropout_rate > 0:
            self.dropout = nn.Dropout(dropout_rate, inplace=True)
        self.linear = nn.Linear(cin, cout)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class Mobile3DNet(nn.Module):
    def __init__(self, c_in, width_stages, n_cell_stages, stride_stages, ops, first_width,
                 first_cell_width, feature_mix, width_mult, classes, dropout_rate, bn_param):
        super().__init__()
        input_channel = make_divisible(first_width * width_mult, 8)
        first_cell_width = make_divisible(first_cell_width * width_mult, 8)
        width_stages = [make_divisible(w * width_mult, 8) for w in width_stages]
        self.first_conv = ConvLayer(c_in, input_channel, 3, stride=2)
        blocks = [MBInvertedConvLayer(input_channel, first_cell_width, 3, 1, 1)]
        input_channel = first_cell_width
        self.stage_ends = []
        self.cells = []
        for s, (width, n_cell, stride0) in enumerate(zip(width_stages, n_cell_stages, stride_stages)):
            for i in range(n_cell):
                stride = stride0 if i == 0 else 1
                blocks.append(CalibrationLayer(input_channel, width, stride))
                cands = [MBInvertedConvLayer(width, width, k, 1, e) for _, k, e in OPS[:7]]
                cands += [IdentityLayer(), ZeroLayer()]
                has_shortcut = stride == 1 and input_channel == width
                if has_shortcut:
                    cands.append(ZeroLayer())
                chosen = INDEX[ops[s][i]]
                assert chosen < len(cands)
                block = MobileInvertedResidualBlock(LayerChoice(cands, chosen),
                                                    IdentityLayer() if has_shortcut else None, cands)
                blocks.append(block)
                self.cells.append(block)
                input_channel = width
            self.stage_ends.append(len(blocks) - 1)
        last_channel = make_divisible(feature_mix * width_mult, 8) if width_mult > 1.0 else feature_mix
        self.blocks = nn.ModuleList(blocks)
        self.feature_mix_layer = ConvLayer(input_channel, last_channel, 1)
        self.global_avg_pooling = nn.AdaptiveAvgPool3d(1)
        self.classifier = LinearLayer(last_channel, classes, dropout_rate)
        for m in self.modules():
            if isinstance(m, (nn.BatchNorm3d, nn.BatchNorm1d)):
                m.momentum, m.eps = bn_param

    def forward(self, x):
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        x = self.feature_mix_layer(x)
        x = self.global_avg_pooling(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x)

    def set_masks(self, masks, soft):
        for cell, m in zip(self.cells, masks):
            cell.mask, cell.soft = m, soft


def flops_size_counter(model, input_size):
    """The reference's utils/calc_model_flops_size.py, condensed: conv ops
    cin*out_elements*w.size(2)*w.size(3)//groups and linear in*out over the
    leaf modules that run; size = their parameters*4/1024**2."""
    used, ops, params = {}, {}, {}

    def conv_hook(m, _, y):
        ops[m] = m.in_channels * y.nelement() * m.weight.size()[2] * m.weight.size()[3] // m.groups
        used[m] = True

    def linear_hook(m, _, __):
        ops[m] = m.in_features * m.out_features
        used[m] = True

    def naive_hook(m, _, __):
        used[m] = True

    handles = []
    for m in model.modules():
        if len(list(m.children())) > 0:
            continue
        params[m] = sum(p.numel() for p in m.parameters())
        hook = {nn.Conv3d: conv_hook, nn.Linear: linear_hook}.get(type(m), naive_hook)
        handles.append(m.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(input_size))
    for h in handles:
        h.remove()
    total_ops = sum(ops.get(m, 0) for m in used)
    total_params = sum(params[m] for m in used)
    return total_ops / 1e6, total_params * 4 / 1024 ** 2


CONFIG = {
    "width_stages": [8, 16, 16, 24],
    "n_cell_stages": [3, 4, 2, 3],
    "stride_stages": [2, 2, 1, 2],
    "ops": [["identity", "mb3_e6", "mb3_e4"],
            ["zero", "mb3_e3", "zero", "mb7_e3"],
            ["mb7_e4", "mb5_e4"],
            ["mb5_e3", "identity", "zero2"]],
    "first_width": 16,
    "first_cell_width": 8,
    "feature_mix": 32,
    "dropout": 0.5,
    "width_mult": 1,
    "bn_eps": 1e-3,
    "bn_momentum": 0.1,
}
CLASSES = 3


def main():
    c = CONFIG
    net = Mobile3DNet(1, c["width_stages"], c["n_cell_stages"], c["stride_stages"], c["ops"],
                      c["first_width"], c["first_cell_width"], c["feature_mix"], c["width_mult"],
                      CLASSES, c["dropout"], (c["bn_momentum"], c["bn_eps"]))
    # Randomise everything. Conv and linear weights are He-scaled normals
    # (so that the input still shows in the logits), BatchNorm affine
    # parameters are drawn, and the running statistics of the BatchNorms the
    # chosen architecture uses are estimated on random inputs in training
    # mode and then perturbed; those of unused candidates are drawn.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                fan_in = m.weight[0].numel()
                gain = 1.0 if m.bias is not None else 2.0  # calibration convs have no activation
                m.weight.normal_(0, (gain / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, (1.0 / m.in_features) ** 0.5)
                m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
                m.reset_running_stats()
                m.momentum = None  # cumulative average while calibrating
        net.train()
        for _ in range(3):
            net(torch.randn(2, 1, 16, 32, 32))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):
                if int(m.num_batches_tracked) == 0:
                    m.running_mean.normal_(0, 0.3)
                    m.running_var.uniform_(0.4, 1.6)
                else:
                    sd = m.running_var.sqrt()
                    m.running_mean.add_(0.1 * sd * torch.randn_like(sd))
                    m.running_var.mul_(torch.empty_like(sd).uniform_(0.8, 1.25))
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, ())))
                m.momentum = c["bn_momentum"]
    net.eval()

    tensors = []
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            tensors.append((k, "I64", [], np.array(int(v), dtype="<i8").tobytes()))
        else:
            tensors.append(stfile.f32(k, v.numpy()))

    x = torch.randn(2, 1, 16, 32, 32)
    taps = OrderedDict()
    tap_modules = [("first_conv", net.first_conv), ("blocks.0", net.blocks[0])]
    tap_modules += [(f"blocks.{k}", net.blocks[k]) for k in net.stage_ends]
    tap_modules += [("feature_mix_layer", net.feature_mix_layer)]
    handles = []
    for name, m in tap_modules:
        handles.append(m.register_forward_hook(lambda _m, _i, y, name=name: taps.__setitem__(name, y.detach().clone())))
    with torch.no_grad():
        logits = net(x)
    for h in handles:
        h.remove()
    tensors.append(stfile.f32("golden/input", x.numpy()))
    tensors.append(stfile.f32("golden/logits", logits.numpy()))
    for name, y in taps.items():
        tensors.append(stfile.f32(f"golden/tap/{name}", y.numpy()))

    # Mask modes (supernet): gradients of sum(logits*proj) w.r.t. the masks.
    for p in net.parameters():
        p.requires_grad_(False)
    ncand = [len(cell.op_candidates_list) for cell in net.cells]
    xm = x[:1]
    for mode in ("soft", "hard"):
        if mode == "soft":
            masks = [torch.softmax(torch.randn(k), 0) for k in ncand]
        else:
            masks = []
            for k in ncand:
                m = torch.zeros(k)
                m[int(torch.randint(0, k, ()))] = 1
                masks.append(m)
        masks = [m.clone().requires_grad_(True) for m in masks]
        net.set_masks(masks, mode == "soft")
        y = net(xm)
        proj = torch.randn(y.shape)
        (y * proj).sum().backward()
        net.set_masks([None] * len(masks), False)
        tensors.append(stfile.f32(f"golden/{mode}/input", xm.numpy()))
        tensors.append(stfile.f32(f"golden/{mode}/logits", y.detach().numpy()))
        tensors.append(stfile.f32(f"golden/{mode}/proj", proj.numpy()))
        for i, m in enumerate(masks):
            tensors.append(stfile.f32(f"golden/{mode}/mask.{i}", m.detach().numpy()))
            g = m.grad if m.grad is not None else torch.zeros_like(m)
            tensors.append(stfile.f32(f"golden/{mode}/grad.{i}", g.numpy()))

    mflops, size_mb = flops_size_counter(net, (1, 1, 16, 32, 32))
    spec = {"arch": "covidnet3d", "in_channels": 1, "classes": CLASSES, "config": CONFIG}
    choices = [cell.mobile_inverted_conv.chosen for cell in net.cells]
    meta = {"spec": json.dumps(spec), "choices": json.dumps(choices),
            "ref_mflops": repr(mflops), "ref_size_mb": repr(size_mb),
            "torch": torch.__version__}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    stfile.write(OUT, tensors, meta)
    print(f"wrote {OUT}: {len(tensors)} tensors, logits {logits.flatten().tolist()}, "
          f"{mflops} MFLOPS, {size_mb} MB")


if __name__ == "__main__":
    main()
