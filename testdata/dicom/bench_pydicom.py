#!/usr/bin/env python3
"""Load a single-series DICOM folder into a float32 HU volume with pydicom
and numpy, the way a typical Python pipeline does, and report throughput.

usage: bench_pydicom.py DIR REPEATS

Prints one JSON line: {"mbps": file megabytes (1e6) per second (best of
REPEATS), "seconds": best time, "cpu_seconds": best process CPU time, "bytes": total file size, "shape":
[slices, rows, cols], "sum": voxel sum, "first": voxel [0,0,0], "last":
voxel [-1,-1,-1]}. Slices are ordered by ImagePositionPatient projected on
the slice normal.
"""
import json
import os
import sys
import time

import numpy as np
import pydicom


def load(files):
    dss = [pydicom.dcmread(f) for f in files]
    iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
    n = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda d: float(np.dot(n, np.array(d.ImagePositionPatient, dtype=float))))
    vol = np.empty((len(dss), dss[0].Rows, dss[0].Columns), dtype=np.float32)
    for k, d in enumerate(dss):
        vol[k] = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
    return vol


def main():
    d, reps = sys.argv[1], int(sys.argv[2])
    files = sorted(os.path.join(d, f) for f in os.listdir(d))
    total = sum(os.path.getsize(f) for f in files)
    best, bestcpu, vol = None, None, None
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        vol = load(files)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        best = dt if best is None else min(best, dt)
        bestcpu = dc if bestcpu is None else min(bestcpu, dc)
    print(json.dumps({"mbps": total / best / 1e6, "seconds": best, "cpu_seconds": bestcpu, "bytes": total, "shape": list(vol.shape),
                      "sum": float(vol.astype(np.float64).sum()), "first": float(vol[0, 0, 0]),
                      "last": float(vol[-1, -1, -1])}))


if __name__ == "__main__":
    main()
