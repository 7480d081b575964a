#!/usr/bin/python3
"""PyTorch peer of `ctlens bench`: times one model in this (fresh) process
and prints one JSON line.

The architectures are the ones ctlens registers under the same names:
torchvision's r3d_18, mc3_18 and r2plus1d_18; Hara's 3D ResNet
("resnet3d-N", shortcut B, conv1 7x7x7 stride (1,2,2), max-pool); MONAI's
DenseNet ("densenet3d-121/169/201/264"); and CovidNet3D with its default
config (every cell mb3_e3, only the chosen ops allocated) for the training
step ("covidnet3d-small": net3d.SmallCovidNet3DConfig). Model definitions come from the golden scripts next to this file
(golden_covidnet3d.py is importable); the Hara ResNet and MONAI DenseNet
are repeated here because their golden scripts run at import.

Weights are PyTorch's random initialisation: the timings do not depend on
the values. Inference runs in eval mode under torch.no_grad(); a training
step is forward in train mode, cross-entropy, backward and an SGD step
(momentum 0.9), the same as `ctlens bench --train`.

Usage (one model per process, so that the peak RSS is the model's):

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 /usr/bin/python3 \\
        testdata/pytorch/bench_peer.py --model r3d_18 --shape 1x3x32x128x128 \\
        --threads 2 --reps 3 [--warmup 1] [--train]

Output: {"model", "shape", "threads", "train", "ms": [per repetition],
"median_ms", "rss_mb" (VmHWM of this process), "torch"}.
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections import OrderedDict

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision.models.video as tvv  # noqa: E402

import golden_covidnet3d as gc  # noqa: E402  (main() runs only as a script)


# ------------------------------------------------------------ Hara ResNet3D


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
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


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


HARA_DEPTHS = {
    10: (BasicBlock, [1, 1, 1, 1]), 18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3]), 152: (Bottleneck, [3, 8, 36, 3]),
    200: (Bottleneck, [3, 24, 36, 3]),
}


class HaraResNet3D(nn.Module):
    """Hara's generate_model defaults: shortcut B, conv1 7x7x7 stride
    (1, 2, 2) padding 3, max-pool, widths 64..512."""

    def __init__(self, depth, in_ch, classes):
        super().__init__()
        block, layers = HARA_DEPTHS[depth]
        self.inplanes = 64
        self.conv1 = nn.Conv3d(in_ch, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(512 * block.expansion, classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm3d(planes * block.expansion))
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            mods.append(block(self.inplanes, planes))
        return nn.Sequential(*mods)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


# ------------------------------------------------------------ MONAI DenseNet


class MonaiDenseLayer(nn.Module):
    def __init__(self, in_ch, growth, bn_size):
        super().__init__()
        mid = bn_size * growth
        self.layers = nn.Sequential(OrderedDict([
            ("norm1", nn.BatchNorm3d(in_ch)), ("relu1", nn.ReLU(inplace=True)),
            ("conv1", nn.Conv3d(in_ch, mid, kernel_size=1, bias=False)),
            ("norm2", nn.BatchNorm3d(mid)), ("relu2", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv3d(mid, growth, kernel_size=3, padding=1, bias=False))]))

    def forward(self, x):
        return torch.cat([x, self.layers(x)], 1)


DENSE_BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32), 264: (6, 12, 64, 48)}


class MonaiDenseNet(nn.Module):
    """monai.networks.nets.DenseNet(spatial_dims=3), init 64, growth 32,
    bn_size 4."""

    def __init__(self, depth, in_ch, classes, init=64, growth=32, bn_size=4):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv3d(in_ch, init, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm3d(init)), ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool3d(kernel_size=3, stride=2, padding=1))]))
        ch = init
        blocks = DENSE_BLOCKS[depth]
        for i, n in enumerate(blocks):
            block = nn.Sequential()
            for j in range(n):
                block.add_module("denselayer%d" % (j + 1), MonaiDenseLayer(ch + j * growth, growth, bn_size))
            self.features.add_module("denseblock%d" % (i + 1), block)
            ch += n * growth
            if i == len(blocks) - 1:
                self.features.add_module("norm5", nn.BatchNorm3d(ch))
            else:
                self.features.add_module("transition%d" % (i + 1), nn.Sequential(OrderedDict([
                    ("norm", nn.BatchNorm3d(ch)), ("relu", nn.ReLU(inplace=True)),
                    ("conv", nn.Conv3d(ch, ch // 2, kernel_size=1, bias=False)),
                    ("pool", nn.AvgPool3d(kernel_size=2, stride=2))])))
                ch //= 2
        self.class_layers = nn.Sequential(OrderedDict([
            ("relu", nn.ReLU(inplace=True)), ("pool", nn.AdaptiveAvgPool3d(1)),
            ("flatten", nn.Flatten(1)), ("out", nn.Linear(ch, classes))]))

    def forward(self, x):
        return self.class_layers(self.features(x))


# ------------------------------------------------------------ CovidNet3D


COVID_DEFAULT = {  # net3d.DefaultCovidNet3DConfig, every cell mb3_e3
    "width_stages": [32, 64, 128, 256, 512, 1024], "n_cell_stages": [4, 4, 4, 4, 4, 1],
    "stride_stages": [2, 2, 2, 1, 2, 1], "first_width": 32, "first_cell_width": 16,
    "feature_mix": 1280, "dropout": 0.5, "bn_eps": 1e-3, "bn_momentum": 0.1,
}
COVID_SMALL = dict(COVID_DEFAULT, width_stages=[16, 24, 32, 48, 64, 96], n_cell_stages=[1, 2, 2, 2, 1, 1],
                   first_width=16, first_cell_width=8, feature_mix=256)  # net3d.SmallCovidNet3DConfig


class CovidCell(nn.Module):
    def __init__(self, op, shortcut):
        super().__init__()
        self.op = op
        self.shortcut = shortcut

    def forward(self, x):
        out = self.op(x)
        return x + out if self.shortcut else out


class CovidNet3D(nn.Module):
    """The reference Mobile3DNet with only the chosen (mb3_e3) op of every
    cell allocated: the network net3d.NewCovidNet3D builds."""

    def __init__(self, in_ch, classes, c=COVID_DEFAULT):
        super().__init__()
        self.first_conv = gc.ConvLayer(in_ch, c["first_width"], 3, stride=2)
        blocks = [gc.MBInvertedConvLayer(c["first_width"], c["first_cell_width"], 3, 1, 1)]
        ch = c["first_cell_width"]
        for width, n, s0 in zip(c["width_stages"], c["n_cell_stages"], c["stride_stages"]):
            for i in range(n):
                stride = s0 if i == 0 else 1
                blocks.append(gc.CalibrationLayer(ch, width, stride))
                blocks.append(CovidCell(gc.MBInvertedConvLayer(width, width, 3, 1, 3), stride == 1 and ch == width))
                ch = width
        self.blocks = nn.Sequential(*blocks)
        self.feature_mix_layer = gc.ConvLayer(ch, c["feature_mix"], 1)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.classifier = gc.LinearLayer(c["feature_mix"], classes, c["dropout"])
        for m in self.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.momentum, m.eps = c["bn_momentum"], c["bn_eps"]

    def forward(self, x):
        x = self.feature_mix_layer(self.blocks(self.first_conv(x)))
        return self.classifier(self.pool(x).flatten(1))


def build(name, in_ch, classes):
    if name in ("r3d_18", "mc3_18", "r2plus1d_18"):
        m = getattr(tvv, name)(weights=None, num_classes=classes)
        if in_ch != 3:
            stem = m.stem[0]
            m.stem[0] = nn.Conv3d(in_ch, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False)
        return m
    if name.startswith("resnet3d-"):
        return HaraResNet3D(int(name.split("-")[1]), in_ch, classes)
    if name.startswith("densenet3d-"):
        return MonaiDenseNet(int(name.split("-")[1]), in_ch, classes)
    if name == "covidnet3d":
        return CovidNet3D(in_ch, classes)
    if name == "covidnet3d-small":
        return CovidNet3D(in_ch, classes, COVID_SMALL)
    raise SystemExit(f"bench_peer.py: unknown model {name!r}")


def vmhwm_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--shape", required=True, help="N x C x D x H x W, e.g. 1x3x32x128x128")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--train", action="store_true", help="time a training step instead of inference")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    shape = [int(v) for v in a.shape.lower().split("x")]
    model = build(a.model, shape[1], a.classes)
    x = torch.randn(*shape)
    times = []
    if a.train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        target = torch.arange(shape[0]) % a.classes
        loss_fn = nn.CrossEntropyLoss()
        for i in range(a.warmup + a.reps):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = loss_fn(model(x), target)
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
            if i >= a.warmup:
                times.append(dt * 1e3)
    else:
        model.eval()
        with torch.no_grad():
            for i in range(a.warmup + a.reps):
                t0 = time.perf_counter()
                model(x)
                dt = time.perf_counter() - t0
                if i >= a.warmup:
                    times.append(dt * 1e3)
    print(json.dumps({"model": a.model, "shape": shape, "threads": a.threads, "train": a.train, "ms": times,
                      "median_ms": statistics.median(times), "rss_mb": vmhwm_mb(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
