#!/usr/bin/python3
"""Round trip of nn/safetensors with PyTorch, driven by
nn/safetensors/torch_test.go:

    /usr/bin/python3 testdata/pytorch/check_safetensors.py IN OUT

IN is a file written by the Go encoder. This script loads it into torch
tensors and checks it against the recipe both sides know:

    "a"      F32 [2,3,4]  a[i] = (i - 7) * 0.375      (i the flat index)
    "b"      F32 [5]      b[i] = 1 / (i + 1)           (float32 division)
    "s"      F32 []       42
    metadata {"producer": "ctlens-go", "recipe": "v1"}

with the layout rules: header length a multiple of 8, padded with spaces,
tensors laid out in sorted-name order, all F32. It then writes OUT with
tensors that torch itself converts, for the Go side to check:

    "f32"   F32  [3,4]  i * 0.5 - 2
    "f16"   F16  [13]   F16_VALUES, converted by torch
    "bf16"  BF16 [2,4]  BF16_VALUES, converted by torch (1/3 rounds to 0.333984375)
    "f64"   F64  [3]    [0.1, -2.5, 1e300]
    "count" I64  []     7   (as a state dict's num_batches_tracked)
    metadata {"producer": "torch", "torch": version}

Exits non-zero with a message on any mismatch.
"""

import math
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stfile  # noqa: E402

F16_VALUES = [0.0, -0.0, 1.0, -2.0, 0.5, 65504.0, 2.0**-24, 1023 * 2.0**-24, 2.0**-14,
              math.inf, -math.inf, math.nan, 1 / 3]
BF16_VALUES = [1.0, -3.0, 0.15625, 2.0**-133, 3.3895313892515355e38, math.inf, 1 / 3, -0.0]


def fail(msg):
    print(f"check_safetensors: {msg}", file=sys.stderr)
    sys.exit(1)


def check_go_file(path):
    ts, meta, n, hdr = stfile.read(path)
    if n % 8 != 0:
        fail(f"{path}: header length {n} is not a multiple of 8")
    body = hdr.rstrip(b" ")
    if not body.endswith(b"}") or len(hdr) - len(body) >= 8:
        fail(f"{path}: header {hdr[-16:]!r} is not JSON padded with fewer than 8 spaces")
    if meta != {"producer": "ctlens-go", "recipe": "v1"}:
        fail(f"{path}: metadata {meta}")
    if sorted(ts) != ["a", "b", "s"]:
        fail(f"{path}: tensors {sorted(ts)}")
    by_offset = sorted(ts, key=lambda k: ts[k][3][0])
    if by_offset != sorted(ts):
        fail(f"{path}: data order {by_offset}, want sorted names")
    for k, (dtype, _, _, _) in ts.items():
        if dtype != "F32":
            fail(f"{path}: tensor {k} stored as {dtype}, want F32")
    got = {k: torch.from_numpy(np.array(v[2], dtype=np.float32)) for k, v in ts.items()}
    want = {
        "a": ((torch.arange(24, dtype=torch.float32) - 7) * 0.375).reshape(2, 3, 4),
        "b": torch.ones(5, dtype=torch.float32) / torch.arange(1, 6, dtype=torch.float32),
        "s": torch.tensor(42.0, dtype=torch.float32),
    }
    for k, w in want.items():
        g = got[k]
        if g.shape != w.shape or not torch.equal(g, w):
            fail(f"{path}: tensor {k}: got {g.shape} {g.flatten().tolist()}, want {w.shape} {w.flatten().tolist()}")


def bits16(t):
    """The raw little-endian bytes of a 16-bit torch tensor."""
    return t.contiguous().view(torch.int16).numpy().astype("<i2").tobytes()


def write_torch_file(path):
    f32 = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 2
    f16 = torch.tensor(F16_VALUES, dtype=torch.float32).to(torch.float16)
    bf16 = torch.tensor(BF16_VALUES, dtype=torch.float32).to(torch.bfloat16).reshape(2, 4)
    f64 = torch.tensor([0.1, -2.5, 1e300], dtype=torch.float64)
    count = torch.tensor(7, dtype=torch.int64)
    stfile.write(path, [
        ("bf16", "BF16", list(bf16.shape), bits16(bf16)),
        ("count", "I64", [], count.numpy().astype("<i8").tobytes()),
        ("f16", "F16", list(f16.shape), bits16(f16)),
        ("f32", "F32", list(f32.shape), f32.numpy().astype("<f4").tobytes()),
        ("f64", "F64", list(f64.shape), f64.numpy().astype("<f8").tobytes()),
    ], {"producer": "torch", "torch": torch.__version__})


def main():
    if len(sys.argv) != 3:
        fail("usage: check_safetensors.py IN OUT")
    check_go_file(sys.argv[1])
    write_torch_file(sys.argv[2])
    print("ok")


if __name__ == "__main__":
    main()
