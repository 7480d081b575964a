#!/usr/bin/python3
"""Golden values for volume's resampling tests, produced with PyTorch.

Run from the repository root with the interpreter that has torch:
    /usr/bin/python3 volume/testdata/gen_resample_torch.py
It writes volume/testdata/resample_torch.json. Volumes are stored flat in
PyTorch (D, H, W) order, which is volume.Volume's layout (i = W fastest);
"in_dims"/"out_dims" are [W, H, D] = [cols, rows, slices].
"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(20240601)
cases = []


def add(name, in_dims, out_dims, mode):
    w, h, d = in_dims
    x = torch.randn(1, 1, d, h, w, dtype=torch.float32) * 100
    ow, oh, od = out_dims
    if mode == "bilinear":
        assert od == d
        # per-slice: slices as the batch
        y = F.interpolate(x[0].permute(1, 0, 2, 3), size=(oh, ow), mode="bilinear", align_corners=False)
        y = y.permute(1, 0, 2, 3)[None]
    elif mode == "trilinear":
        y = F.interpolate(x, size=(od, oh, ow), mode="trilinear", align_corners=False)
    else:
        y = F.interpolate(x, size=(od, oh, ow), mode="nearest-exact")
    cases.append({
        "name": name, "mode": mode, "in_dims": list(in_dims), "out_dims": list(out_dims),
        "input": [float(v) for v in x.flatten()], "output": [float(v) for v in y.flatten()],
    })


add("trilinear_mixed", (5, 4, 3), (7, 3, 5), "trilinear")
add("trilinear_down", (9, 8, 6), (4, 3, 2), "trilinear")
add("trilinear_up_odd", (3, 3, 2), (8, 5, 7), "trilinear")
add("nearest_exact_mixed", (5, 4, 3), (7, 3, 5), "nearest")
add("nearest_exact_down", (9, 8, 6), (4, 3, 2), "nearest")
add("bilinear_slices", (6, 5, 3), (8, 4, 3), "bilinear")

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resample_torch.json")
with open(out, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f, indent=None)
    f.write("\n")
print("wrote", out, len(cases), "cases")
