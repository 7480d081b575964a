package gemm

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// benchSgemm times C = A*B (no transposes, beta 0) for an m×n×k product with
// every implementation and reports GFLOP/s (2mnk flops per wall second) and,
// where the process CPU time can be read, GFLOP/cpu-s (per CPU second of the
// process: GFLOP/s as if each worker had a core of its own, a rate other load
// on the machine hardly disturbs).
func benchSgemm(b *testing.B, m, n, k int) {
	rng := rand.New(rand.NewPCG(1, 1))
	a, _ := randMatrix(rng, m, k, 0)
	bm, _ := randMatrix(rng, k, n, 0)
	c := make([]float32, m*n)
	for _, impl := range allImpls()[:len(implementations)] {
		b.Run(strings.Fields(fmt.Sprint(impl))[0], func(b *testing.B) {
			gflop := 2 * float64(m) * float64(n) * float64(k) / 1e9
			c0 := processCPUTime()
			for b.Loop() {
				impl.Sgemm(false, false, m, n, k, 1, a, k, bm, n, 0, c, n)
			}
			b.ReportMetric(gflop*float64(b.N)/b.Elapsed().Seconds(), "GFLOP/s")
			if cpu := processCPUTime() - c0; c0 >= 0 && cpu > 0 {
				b.ReportMetric(gflop*float64(b.N)/cpu, "GFLOP/cpu-s")
			}
		})
	}
}

// BenchmarkSgemm_256x2304x4096 is m=256, n=2304, k=4096.
func BenchmarkSgemm_256x2304x4096(b *testing.B) { benchSgemm(b, 256, 2304, 4096) }

// BenchmarkSgemm_1024 is m=n=k=1024.
func BenchmarkSgemm_1024(b *testing.B) { benchSgemm(b, 1024, 1024, 1024) }

// BenchmarkSgemm_small is m=n=k=64, below the threshold for a second worker.
func BenchmarkSgemm_small(b *testing.B) { benchSgemm(b, 64, 64, 64) }

// BenchmarkFMAPeak measures PeakGFLOPS on one core and on GOMAXPROCS cores,
// reported as the GFLOP/s metric.
func BenchmarkFMAPeak(b *testing.B) {
	for _, threads := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			var g float64
			for b.Loop() {
				g = PeakGFLOPS(threads)
			}
			b.ReportMetric(g, "GFLOP/s")
		})
	}
}
