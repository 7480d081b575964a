#!/usr/bin/python3
"""Makes a torchvision r3d_18 checkpoint for net3d's import test.

    /usr/bin/python3 testdata/pytorch/import_case.py OUTDIR

Writes OUTDIR/r3d18.pth (a plain state dict: 3-channel stem, 400 classes,
random weights and batch-norm statistics) and OUTDIR/expected.safetensors with
an input x (1 channel) and the layer4 feature map that the 3-channel model
gives for x repeated over RGB, which is what a 1-channel model with the stem
summed over RGB must give.
"""
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stfile  # noqa: E402

out = sys.argv[1]
torch.manual_seed(3)
m = torchvision.models.video.r3d_18()
with torch.no_grad():
    for name, t in m.state_dict().items():
        if t.is_floating_point():
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("weight") and t.dim() == 1:
                t.uniform_(0.5, 1.5)
            else:
                t.normal_(0, 0.05)
m.eval()
torch.save(m.state_dict(), os.path.join(out, "r3d18.pth"))
x = torch.randn(1, 1, 4, 32, 32)
with torch.no_grad():
    f = m.layer4(m.layer3(m.layer2(m.layer1(m.stem(x.repeat(1, 3, 1, 1, 1))))))
stfile.write(os.path.join(out, "expected.safetensors"), [stfile.f32("x", x.numpy()), stfile.f32("features", f.numpy())])
