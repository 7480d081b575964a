# Golden files for nn/torch_test.go, written with PyTorch (no safetensors
# package needed: the format is written by hand below).
# Run from the repository root: /usr/bin/python3 nn/testdata/torch_net.py
#
# torch_net.safetensors: the state dict of a one-block 3-D ResNet (the same
#   architecture as testNet in nn/module_test.go) after two training-mode
#   forward passes, saved as torch.nn.DataParallel would name it ("module."
#   prefix), with num_batches_tracked stored as I64 as PyTorch does.
# torch_net_io.safetensors: an input x, the eval-mode output y_eval, then a
#   training-mode forward on x: y_train, bn1's updated running statistics
#   and counter, and the gradients of sum(y_train * r) for conv1.weight,
#   bn1.weight and fc.weight.
import json
import struct

import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(s, i, o, st):
        super().__init__()
        s.conv1 = nn.Conv3d(i, o, 3, st, 1, bias=False)
        s.bn1 = nn.BatchNorm3d(o)
        s.relu = nn.ReLU()
        s.conv2 = nn.Conv3d(o, o, 3, 1, 1, bias=False)
        s.bn2 = nn.BatchNorm3d(o)
        s.downsample = nn.Sequential(nn.Conv3d(i, o, 1, st, bias=False), nn.BatchNorm3d(o))

    def forward(s, x):
        y = s.relu(s.bn1(s.conv1(x)))
        y = s.bn2(s.conv2(y))
        return s.relu(y + s.downsample(x))


class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.conv1 = nn.Conv3d(3, 8, 3, 1, 1, bias=False)
        s.bn1 = nn.BatchNorm3d(8)
        s.relu = nn.ReLU()
        s.layer1 = nn.Sequential(Block(8, 16, 2))
        s.avgpool = nn.AdaptiveAvgPool3d(1)
        s.fc = nn.Linear(16, 2)

    def forward(s, x):
        y = s.relu(s.bn1(s.conv1(x)))
        y = s.avgpool(s.layer1(y))
        return s.fc(torch.flatten(y, 1))


def write(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        if t.dtype == torch.int64:
            dtype, raw = "I64", struct.pack("<%dq" % t.numel(), *t.flatten().tolist())
        else:
            dtype, raw = "F32", struct.pack("<%df" % t.numel(), *t.float().flatten().tolist())
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


torch.manual_seed(0)
net = Net()
net.train()
for _ in range(2):
    net(torch.randn(2, 3, 6, 6, 6))
write("nn/testdata/torch_net.safetensors",
      {"module." + k: v for k, v in net.state_dict().items()}, {"format": "pt"})

x = torch.randn(2, 3, 6, 6, 6)
r = torch.randn(2, 2)
net.eval()
with torch.no_grad():
    y_eval = net(x)
net.train()
y_train = net(x)
(y_train * r).sum().backward()
write("nn/testdata/torch_net_io.safetensors", {
    "x": x, "r": r, "y_eval": y_eval, "y_train": y_train,
    "bn1.running_mean": net.bn1.running_mean, "bn1.running_var": net.bn1.running_var,
    "bn1.num_batches_tracked": net.bn1.num_batches_tracked,
    "grad.conv1.weight": net.conv1.weight.grad, "grad.bn1.weight": net.bn1.weight.grad,
    "grad.fc.weight": net.fc.weight.grad,
})
