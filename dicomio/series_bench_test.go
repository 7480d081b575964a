package dicomio

import (
	"archive/zip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// cpuSeconds is this process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// zipDir writes every file under dir into a new zip archive at dst (Go's
// archive/zip, deflate).
func zipDir(t testing.TB, dir, dst string) {
	t.Helper()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	err = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		w, err := zw.Create(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(w, src)
		return err
	})
	if err == nil {
		err = zw.Close()
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		t.Fatal(err)
	}
}

// writeBenchSeries writes n random int16 axial slices of size x size with
// make_series.py.
func writeBenchSeries(t testing.TB, dir string, n, size int) {
	t.Helper()
	s := seriesSpec{UID: "1.2.5.1", Rows: size, Cols: size, IOP: axial, Spacing: [2]float64{0.7, 0.7},
		Slope: 1, Intercept: -1024, Random: intp(42)}
	for k := 0; k < n; k++ {
		// files named in reverse position order
		s.Slices = append(s.Slices, sliceSpec{File: fmt.Sprintf("IM%04d.dcm", n-k), IPP: []float64{-180, -180, float64(k) * 1.25}, Num: intp(n - k)})
	}
	makeSeries(t, dir, s)
}

type benchResult struct {
	MBps    float64 `json:"mbps"`
	Seconds float64 `json:"seconds"`
	// CPUSeconds is the best process CPU time of one load.
	CPUSeconds float64 `json:"cpu_seconds"`
	Bytes      int64   `json:"bytes"`
	Shape      [3]int  `json:"shape"`
	Sum        float64 `json:"sum"`
	First      float64 `json:"first"`
	Last       float64 `json:"last"`
}

// runBenchPydicom runs bench_pydicom.py on dir.
func runBenchPydicom(t testing.TB, dir string, reps int) benchResult {
	t.Helper()
	out, err := exec.Command(pythonPath, scriptPath("bench_pydicom.py"), dir, fmt.Sprint(reps)).CombinedOutput()
	if err != nil {
		t.Fatalf("bench_pydicom.py: %v\n%s", err, out)
	}
	var r benchResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("bench_pydicom.py output %q: %v", out, err)
	}
	return r
}

// BenchmarkLoadSeries loads a 200-slice 512x512 int16 series (written by
// pydicom) into a HU volume and reports MB/s of file data; it runs
// bench_pydicom.py (pydicom + numpy) on the same files and reports its
// MB/s and the ratio (goal: ctlens >= 3x pydicom).
func BenchmarkLoadSeries(b *testing.B) {
	needPydicom(b)
	dir := b.TempDir()
	writeBenchSeries(b, dir, 200, 512)
	var total int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		info, _ := e.Info()
		total += info.Size()
	}
	py := runBenchPydicom(b, dir, 2)
	b.SetBytes(total)
	b.ResetTimer()
	start := time.Now()
	cpu0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		d, err := Discover(dir, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		v, err := d.Series[0].Load(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if v.Dims[2] != 200 {
			b.Fatalf("dims %v", v.Dims)
		}
	}
	sec := time.Since(start).Seconds() / float64(b.N)
	cpu := (cpuSeconds() - cpu0) / float64(b.N)
	mbps := float64(total) / sec / 1e6
	b.ReportMetric(mbps, "MB/s-ctlens")
	b.ReportMetric(py.MBps, "MB/s-pydicom")
	b.ReportMetric(mbps/py.MBps, "x-pydicom")
	// On a shared machine wall time is noisy: also compare CPU seconds
	// (user+system, all threads) per load.
	b.ReportMetric(float64(total)/cpu/1e6, "MB/cpu-s-ctlens")
	b.ReportMetric(float64(total)/py.CPUSeconds/1e6, "MB/cpu-s-pydicom")
}
