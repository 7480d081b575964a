"""Minimal safetensors reader and writer (json + struct + numpy), for the
PyTorch reference scripts beside it; no safetensors package is needed.

Format: 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
then the raw little-endian data, offsets relative to its start.
"""

import json
import struct

import numpy as np

# Stored dtype -> (numpy dtype of the raw little-endian elements, size).
# BF16 has no numpy type: it is read as uint16 bit patterns.
RAW = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
    "U8": ("u1", 1),
}


def read(path):
    """Returns ({name: (dtype, shape, raw numpy array)}, metadata, header
    length, raw header bytes)."""
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    hdr_bytes = b[8 : 8 + n]
    hdr = json.loads(hdr_bytes)
    data = b[8 + n :]
    meta = hdr.pop("__metadata__", None)
    out = {}
    for name, e in hdr.items():
        dt, size = RAW[e["dtype"]]
        lo, hi = e["data_offsets"]
        count = int(np.prod(e["shape"], dtype=np.int64))
        assert hi - lo == count * size, (name, e)
        arr = np.frombuffer(data[lo:hi], dtype=dt).reshape(e["shape"])
        out[name] = (e["dtype"], list(e["shape"]), arr, (lo, hi))
    return out, meta, n, hdr_bytes


def write(path, tensors, metadata=None):
    """Writes tensors, a list of (name, dtype, shape, raw bytes) in the
    order given, with the header padded with spaces to a multiple of 8."""
    hdr = {}
    if metadata:
        hdr["__metadata__"] = metadata
    off = 0
    for name, dtype, shape, raw in tensors:
        hdr[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    js = json.dumps(hdr, sort_keys=True, separators=(",", ":")).encode()
    js += b" " * ((8 - len(js) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for _, _, _, raw in tensors:
            f.write(raw)


def f32(name, arr):
    """A (name, "F32", shape, bytes) entry for write from a float32 array."""
    a = np.array(arr, dtype="<f4", order="C", copy=True)  # keeps 0-d shapes
    return (name, "F32", a.shape, a.tobytes())
