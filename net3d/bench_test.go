package net3d

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ctlens/ctlens/tensor/gemm"
)

// Whole-model benchmarks. By default they use small inputs so that
// `go test -bench . ./net3d` finishes in a few minutes on 2 cores; the
// environment selects the bar's sizes:
//
//	CTLENS_BENCH_MODELS  comma-separated architectures (default below)
//	CTLENS_BENCH_SHAPE   inference input N×C×D×H×W, e.g. 1x3x32x128x128
//	                     (default 1x3x16x64x64; C is the models' in channels)
//	CTLENS_BENCH_TRAIN_SHAPE  training batch (default 8x1x16x64x64)
//
// e.g. GOMAXPROCS=2 CTLENS_BENCH_SHAPE=1x1x32x128x128 CTLENS_BENCH_MODELS=resnet3d-101
// go test -run '^$' -bench Inference -benchtime 3x -cpuprofile cpu.out ./net3d
//
// Each reports ms/op, GFLOP/s (2·forward MACs per second; 3 times that for
// a training step) and % of the measured FMA peak of GOMAXPROCS cores.

var defaultBenchModels = []string{"mc3_18", "r3d_18", "r2plus1d_18", "resnet3d-101", "densenet3d-121"}

func benchEnvShape(b *testing.B, name, def string) []int {
	s := os.Getenv(name)
	if s == "" {
		s = def
	}
	var out []int
	for _, p := range strings.Split(strings.ToLower(s), "x") {
		v, err := strconv.Atoi(p)
		if err != nil || v < 1 {
			b.Fatalf("%s=%q: want N×C×D×H×W such as 1x3x32x128x128", name, s)
		}
		out = append(out, v)
	}
	if len(out) != 5 {
		b.Fatalf("%s=%q: want 5 sizes", name, s)
	}
	return out
}

var (
	benchPeakOnce sync.Once
	benchPeak     float64
)

func benchWorkload(b *testing.B, arch string, shape []int, train bool) {
	w, err := NewWorkload(arch, shape, train, 1)
	if err != nil {
		b.Fatal(err)
	}
	macs, err := w.MACs()
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Run(); err != nil { // warm-up: buffers, pools, optimizer state
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := w.Run(); err != nil {
			b.Fatal(err)
		}
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	gflop := 2 * float64(macs) / 1e9
	if train {
		gflop *= 3
	}
	benchPeakOnce.Do(func() { benchPeak = gemm.PeakGFLOPS(runtime.GOMAXPROCS(0)) })
	b.ReportMetric(sec*1e3, "ms/run")
	b.ReportMetric(gflop/sec, "GFLOP/s")
	b.ReportMetric(100*gflop/sec/benchPeak, "%peak")
}

// BenchmarkInference times one eval-mode, gradient-free forward pass of
// each model.
func BenchmarkInference(b *testing.B) {
	models := defaultBenchModels
	if s := os.Getenv("CTLENS_BENCH_MODELS"); s != "" {
		models = strings.Split(s, ",")
	}
	shape := benchEnvShape(b, "CTLENS_BENCH_SHAPE", "1x3x16x64x64")
	for _, m := range models {
		b.Run(m, func(b *testing.B) {
			s := append([]int(nil), shape...)
			if !strings.HasPrefix(m, "r3d") && !strings.HasPrefix(m, "mc3") && !strings.HasPrefix(m, "r2plus1d") &&
				os.Getenv("CTLENS_BENCH_SHAPE") == "" {
				s[1] = 1 // CT models take one channel
			}
			benchWorkload(b, m, s, false)
		})
	}
}

// BenchmarkTrainStep times one training step (forward, cross-entropy,
// backward, SGD) of CovidNet3D.
func BenchmarkTrainStep(b *testing.B) {
	shape := benchEnvShape(b, "CTLENS_BENCH_TRAIN_SHAPE", "8x1x16x64x64")
	benchWorkload(b, "covidnet3d", shape, true)
}
