#!/usr/bin/python3
"""Independent checks of what ctlens writes, with pydicom and nibabel.

check DIR: DIR holds a DICOM series (series/*.dcm), ct.nii.gz, lesion.nii.gz,
voxels.f32 (float32 little endian, i fastest) and geometry.json
({dims, spacing, origin, direction} in LPS mm, direction[a] = unit vector of
voxel axis a). Reads the series with pydicom, sorts slices by position along
the normal, and checks that the HU voxels and the LPS affine equal the dump;
reads the NIfTI files with nibabel and checks data and the RAS affine.

dump OUT: writes, for every 3-D NIfTI file shipped with nibabel's tests, the
voxels as float64 (nibabel get_fdata, i fastest) and the sform/qform affine
nibabel reports, for ctlens to compare with its own reader.
"""
import glob
import json
import os
import sys

import numpy as np


def lps_affine(geom):
    a = np.eye(4)
    for ax in range(3):
        a[:3, ax] = np.array(geom["direction"][ax]) * geom["spacing"][ax]
    a[:3, 3] = geom["origin"]
    return a


def check(d):
    import pydicom
    import nibabel as nib

    geom = json.load(open(os.path.join(d, "geometry.json")))
    nx, ny, nz = geom["dims"]
    want = np.fromfile(os.path.join(d, "voxels.f32"), dtype="<f4").reshape(nz, ny, nx)
    files = sorted(glob.glob(os.path.join(d, "series", "*.dcm")))
    ds = [pydicom.dcmread(f) for f in files]
    assert len(ds) == nz, f"{len(ds)} slices, want {nz}"
    iop = np.array(ds[0].ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    ds.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, dtype=float))))
    vol = np.stack([s.pixel_array.astype(np.float64) * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in ds])
    assert ds[0].PixelRepresentation == 1 and ds[0].BitsAllocated == 16
    assert vol.shape == want.shape, (vol.shape, want.shape)
    bad = np.abs(vol - want) > 0
    assert not bad.any(), f"pydicom HU differ at {np.argwhere(bad)[:5]}"
    # Geometry from the DICOM tags, computed the usual way.
    ps = [float(x) for x in ds[0].PixelSpacing]  # row spacing, column spacing
    p0 = np.array(ds[0].ImagePositionPatient, dtype=float)
    p1 = np.array(ds[-1].ImagePositionPatient, dtype=float)
    aff = np.eye(4)
    aff[:3, 0] = row * ps[1]
    aff[:3, 1] = col * ps[0]
    aff[:3, 2] = (p1 - p0) / (nz - 1)
    aff[:3, 3] = p0
    want_aff = lps_affine(geom)
    assert np.allclose(aff, want_aff, atol=1e-3), f"DICOM affine\n{aff}\nwant\n{want_aff}"
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ want_aff
    for name, dtype_ok in (("ct.nii.gz", True), ("lesion.nii.gz", True)):
        img = nib.load(os.path.join(d, name))
        assert np.allclose(img.affine, ras, atol=1e-3), f"{name} affine\n{img.affine}\nwant\n{ras}"
        q = img.get_qform()
        assert np.allclose(q, ras, atol=1e-3), f"{name} qform\n{q}\nwant\n{ras}"
        data = np.asarray(img.dataobj).astype(np.float64)
        assert data.shape == (nx, ny, nz), data.shape
        if name == "ct.nii.gz":
            assert np.array_equal(data.transpose(2, 1, 0), want), f"{name} voxels differ"
        else:
            assert set(np.unique(data)) <= {0.0, 1.0}, np.unique(data)
    print("roundtrip ok")


def dump(out):
    import nibabel as nib
    import nibabel.tests as nt

    root = os.path.join(os.path.dirname(nt.__file__), "data")
    index = []
    for f in sorted(glob.glob(os.path.join(root, "*.nii")) + glob.glob(os.path.join(root, "*.nii.gz"))):
        try:
            img = nib.load(f)
        except Exception:
            continue
        if len(img.shape) != 3 or min(img.shape) < 1 or np.prod(img.shape) > 4_000_000:
            continue
        try:
            data = img.get_fdata()
        except Exception:
            continue
        name = os.path.basename(f)
        data.transpose(2, 1, 0).astype("<f8").tofile(os.path.join(out, name + ".f64"))
        index.append({"file": f, "name": name, "shape": list(img.shape), "affine": img.affine.tolist()})
    json.dump(index, open(os.path.join(out, "index.json"), "w"))
    print(len(index), "files")


if __name__ == "__main__":
    {"check": check, "dump": dump}[sys.argv[1]](sys.argv[2])
