package gemm

import (
	"runtime"
	"sync"
	"time"
)

// fmaPeak runs a register-only multiply-add loop for iters iterations and
// returns the floating-point operations it did. It is the widest fused
// multiply-add loop the fastest kernel on this machine uses.
var fmaPeak = scalarPeak

// PeakGFLOPS measures the machine's peak single-precision rate, in GFLOP/s,
// of the multiply-add instructions behind the fastest implementation here
// (16-wide FMA with AVX-512, 8-wide FMA with AVX2, scalar Go elsewhere) on
// threads cores at once (threads <= 0 means GOMAXPROCS; at most NumCPU): the sum over threads
// of flops per second. It runs a register-only loop on each thread for about
// 30 ms, a few times, and returns the best total. On Linux each thread's rate
// is taken over its own CPU time, so other load on the machine does not lower
// the result; elsewhere over wall time. A GEMM's GFLOP/s divided by
// PeakGFLOPS of the same thread count is its efficiency.
func PeakGFLOPS(threads int) float64 {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	threads = min(threads, runtime.NumCPU())
	// Calibrate the iteration count for about 30 ms on one core.
	iters := 1 << 16
	for {
		t0 := time.Now()
		fmaPeak(iters)
		if d := time.Since(t0); d > 2*time.Millisecond {
			iters = int(float64(iters) * float64(30*time.Millisecond) / float64(d))
			break
		}
		iters *= 4
	}
	best := 0.0
	for range 3 {
		var wg sync.WaitGroup
		rates := make([]float64, threads)
		start := make(chan struct{})
		for t := range threads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				<-start
				t0, c0 := time.Now(), threadCPUTime()
				f := fmaPeak(iters)
				sec := time.Since(t0).Seconds()
				if c := threadCPUTime() - c0; c0 >= 0 && c > 0 {
					sec = c
				}
				rates[t] = f / sec
			}()
		}
		close(start)
		wg.Wait()
		total := 0.0
		for _, r := range rates {
			total += r
		}
		best = max(best, total/1e9)
	}
	return best
}

// scalarPeak runs iters iterations of 16 independent float32 multiply-adds in
// plain Go and returns the flops done.
func scalarPeak(iters int) float64 {
	x, y := float32(0.999999), float32(1e-7)
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	var s8, s9, s10, s11, s12, s13, s14, s15 float32
	for range iters {
		s0 = s0*x + y
		s1 = s1*x + y
		s2 = s2*x + y
		s3 = s3*x + y
		s4 = s4*x + y
		s5 = s5*x + y
		s6 = s6*x + y
		s7 = s7*x + y
		s8 = s8*x + y
		s9 = s9*x + y
		s10 = s10*x + y
		s11 = s11*x + y
		s12 = s12*x + y
		s13 = s13*x + y
		s14 = s14*x + y
		s15 = s15*x + y
	}
	// The sums are finite, so adding 0*sum leaves the count unchanged while
	// keeping the loop's results alive.
	sum := s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7 + s8 + s9 + s10 + s11 + s12 + s13 + s14 + s15
	return float64(iters)*16*2 + 0*float64(sum)
}
