#!/usr/bin/env python3
"""Dump the pixels of DICOM files as decoded by pydicom (the independent
reference for dicomio's tests).

usage: pydicom_pixels.py [--gdcmconv PATH] OUTDIR FILE...

For the i-th FILE it writes OUTDIR/i.json with
  {"file", "ok", "error", "ts", "compressed", "reference", "shape",
   "slope", "intercept", "modality"}
and, when ok, OUTDIR/i.bin: the pixel array as little-endian int64 in
(frames, rows, cols, samples) order.

Native and RLE files are decoded by pydicom itself. Other compressed
files are first converted to native Explicit VR Little Endian by
`gdcmconv --raw` (GDCM's decoders) when --gdcmconv is given, and pydicom
reads the converted file; "reference" says which path was used.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pydicom

RLE = "1.2.840.10008.1.2.5"


def dump(i, path, outdir, gdcmconv, tmp):
    info = {"file": path, "ok": False, "error": "", "ts": "", "compressed": False,
            "reference": "pydicom", "shape": [], "slope": 1.0, "intercept": 0.0, "modality": ""}
    try:
        ds = pydicom.dcmread(path, force=True)
        meta = getattr(ds, "file_meta", None)
        ts = str(getattr(meta, "TransferSyntaxUID", "")) if meta is not None else ""
        info["ts"] = ts
        info["modality"] = str(ds.get("Modality", ""))
        if "PixelData" not in ds:
            raise ValueError("no PixelData")
        compressed = bool(ts) and pydicom.uid.UID(ts).is_compressed
        info["compressed"] = compressed
        src = ds
        if compressed and ts != RLE:
            if not gdcmconv:
                raise ValueError("compressed and no gdcmconv")
            conv = os.path.join(tmp, "%d_raw.dcm" % i)
            r = subprocess.run([gdcmconv, "--raw", path, conv], capture_output=True, text=True)
            if r.returncode != 0:
                raise ValueError("gdcmconv --raw failed: " + (r.stderr or r.stdout).strip()[:200])
            src = pydicom.dcmread(conv, force=True)
            info["reference"] = "gdcmconv --raw + pydicom"
        arr = src.pixel_array
        frames = int(src.get("NumberOfFrames", 1) or 1)
        spp = int(src.get("SamplesPerPixel", 1))
        rows, cols = int(src.Rows), int(src.Columns)
        arr = np.asarray(arr).reshape(frames, rows, cols, spp).astype(np.int64)
        # pydicom 2.3 returns the BitsAllocated-wide words as stored; the
        # DICOM standard (PS3.5 8.1.1) makes only BitsStored bits (ending
        # at HighBit) the value, two's complement when PixelRepresentation
        # is 1. Apply that rule here.
        ba, bs = int(src.BitsAllocated), int(src.get("BitsStored", src.BitsAllocated))
        hb = int(src.get("HighBit", bs - 1))
        if bs < ba and ba > 1:
            arr = (arr >> (hb + 1 - bs)) & ((1 << bs) - 1)
            if int(src.get("PixelRepresentation", 0)) == 1:
                arr = np.where(arr >= (1 << (bs - 1)), arr - (1 << bs), arr)
        info["shape"] = [frames, rows, cols, spp]
        info["slope"] = float(ds.get("RescaleSlope", 1) or 1)
        info["intercept"] = float(ds.get("RescaleIntercept", 0) or 0)
        arr.astype("<i8").tofile(os.path.join(outdir, "%d.bin" % i))
        info["ok"] = True
    except Exception as e:  # the error text is the result
        info["error"] = "%s: %s" % (type(e).__name__, e)
    with open(os.path.join(outdir, "%d.json" % i), "w") as f:
        json.dump(info, f)


def main():
    args = sys.argv[1:]
    gdcmconv = None
    if args and args[0] == "--gdcmconv":
        gdcmconv, args = args[1], args[2:]
    outdir, files = args[0], args[1:]
    with tempfile.TemporaryDirectory() as tmp:
        for i, p in enumerate(files):
            dump(i, p, outdir, gdcmconv, tmp)


if __name__ == "__main__":
    main()
