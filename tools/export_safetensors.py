#!/usr/bin/python3
"""Export a PyTorch checkpoint's state dict to safetensors for `ctlens import`.

    /usr/bin/python3 tools/export_safetensors.py model.pth model.safetensors

Accepts a saved state dict, a whole pickled module, or a dict holding one
under "state_dict" or "model" (MedicalNet, Lightning, the CovidNet3D code).
Floating tensors are written as F32, integer buffers (num_batches_tracked) as
I64. Needs only torch and numpy (no safetensors package).
"""
import json
import struct
import sys

import numpy as np
import torch


def state_dict_of(obj):
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                return state_dict_of(obj[key])
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise SystemExit("no state dict found (want a dict of tensors, or one under 'state_dict'/'model')")


def write(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu()
        if t.is_floating_point():
            a, dtype = t.to(torch.float32).numpy().astype("<f4"), "F32"
        else:
            a, dtype = t.to(torch.int64).numpy().astype("<i8"), "I64"
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    obj = torch.load(sys.argv[1], map_location="cpu")
    sd = state_dict_of(obj)
    write(sys.argv[2], sd)
    print(f"wrote {len(sd)} tensors to {sys.argv[2]}")


if __name__ == "__main__":
    main()
