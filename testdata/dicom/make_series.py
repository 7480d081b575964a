#!/usr/bin/env python3
"""Write synthetic CT series with pydicom for dicomio's tests and benchmark.

usage: make_series.py SPEC.json OUTDIR

SPEC is {"series": [S, ...]} where each S has
  uid, dir (optional sub-folder of OUTDIR), rows, cols, iop (6 numbers), spacing ([row, col] mm), slope,
  intercept, modality (default CT), syntax ("explicit" | "implicit" |
  "bigendian"), padding (optional PixelPaddingValue, stored units),
  random (optional: fill with seeded random int16 instead of the pattern),
  enhanced (optional: write ONE Enhanced CT multi-frame object whose frames
  are the slices, positions in per-frame functional groups),
  slices: [{"file", "ipp" (3 numbers or null), "num" (InstanceNumber or
  null), "value", "rows"/"cols"/"iop" (optional per-slice overrides)}].
Stored pixel (r, c) of a slice = value + (r*cols + c) % 7 (int16), except
where padding is set: the first row is the padding value.
"""
import json
import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, generate_uid

CT = "1.2.840.10008.5.1.4.1.1.2"
ENH_CT = "1.2.840.10008.5.1.4.1.1.2.1"
SYNTAX = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian, "bigendian": ExplicitVRBigEndian}


def pixels(rows, cols, value, padding, rng):
    if rng is not None:
        return rng.integers(-1024, 3000, size=(rows, cols), dtype=np.int16)
    a = (value + (np.arange(rows * cols) % 7)).astype(np.int16).reshape(rows, cols)
    if padding is not None:
        a[0, :] = padding
    return a


def base(s, sop_class, ts):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = s.get("study", "1.2.826.0.1.3680043.8.498.1")
    ds.SeriesInstanceUID = s["uid"]
    ds.Modality = s.get("modality", "CT")
    ds.SeriesDescription = "synthetic"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    return ds


def save(ds, path, ts):
    ds.is_little_endian = ts != ExplicitVRBigEndian
    ds.is_implicit_VR = ts == ImplicitVRLittleEndian
    ds.save_as(path, write_like_original=False)


def write_series(s, outdir):
    ts = SYNTAX[s.get("syntax", "explicit")]
    rng = np.random.default_rng(s["random"]) if s.get("random") is not None else None
    padding = s.get("padding")
    if s.get("enhanced"):
        write_enhanced(s, outdir, ts, rng, padding)
        return
    for sl in s["slices"]:
        rows, cols = sl.get("rows", s["rows"]), sl.get("cols", s["cols"])
        ds = base(s, CT, ts)
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [str(x) for x in s["spacing"]]
        ds.SliceThickness = str(s.get("thickness", 1))
        iop = sl.get("iop", s["iop"])
        if iop is not None:
            ds.ImageOrientationPatient = ["%.8f" % x for x in iop]
        if sl.get("ipp") is not None:
            ds.ImagePositionPatient = ["%.6f" % x for x in sl["ipp"]]
        if sl.get("num") is not None:
            ds.InstanceNumber = sl["num"]
        ds.RescaleSlope = str(s.get("slope", 1))
        ds.RescaleIntercept = str(s.get("intercept", -1024))
        if padding is not None:
            ds.add_new(0x00280120, "SS", padding)
        a = pixels(rows, cols, sl.get("value", 0), padding, rng)
        if ts == ExplicitVRBigEndian:
            ds.PixelData = a.astype(">i2").tobytes()
        else:
            ds.PixelData = a.astype("<i2").tobytes()
        save(ds, os.path.join(outdir, sl["file"]), ts)


def write_enhanced(s, outdir, ts, rng, padding):
    ds = base(s, ENH_CT, ts)
    ds.Rows, ds.Columns = s["rows"], s["cols"]
    n = len(s["slices"])
    ds.NumberOfFrames = n
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [str(x) for x in s["spacing"]]
    pm.SliceThickness = str(s.get("thickness", 1))
    shared.PixelMeasuresSequence = Sequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = ["%.8f" % x for x in s["iop"]]
    shared.PlaneOrientationSequence = Sequence([po])
    pv = Dataset()
    pv.RescaleSlope = str(s.get("slope", 1))
    pv.RescaleIntercept = str(s.get("intercept", -1024))
    pv.RescaleType = "HU"
    shared.PixelValueTransformationSequence = Sequence([pv])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for sl in s["slices"]:
        fg = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = ["%.6f" % x for x in sl["ipp"]]
        fg.PlanePositionSequence = Sequence([pp])
        frames.append(fg)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    a = np.stack([pixels(s["rows"], s["cols"], sl.get("value", 0), padding, rng) for sl in s["slices"]])
    ds.PixelData = a.astype("<i2").tobytes()
    save(ds, os.path.join(outdir, s["slices"][0]["file"]), ts)


def main():
    spec = json.load(open(sys.argv[1]))
    outdir = sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    for s in spec["series"]:
        d = os.path.join(outdir, s.get("dir", ""))
        os.makedirs(d, exist_ok=True)
        write_series(s, d)


if __name__ == "__main__":
    main()
