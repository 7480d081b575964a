package gemm

import (
	"runtime"
	"sync"
)

// Portable is a pure-Go implementation of Impl, parallel over rows of C.
type Portable struct{}

// Sgemm implements Impl.
func (Portable) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	rows := func(lo, hi int) {
		bt := make([]float32, k)
		for i := lo; i < hi; i++ {
			ci := c[i*ldc : i*ldc+n]
			if beta == 0 {
				clear(ci)
			} else if beta != 1 {
				for j := range ci {
					ci[j] *= beta
				}
			}
			for p := 0; p < k; p++ {
				var av float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				av *= alpha
				if av == 0 {
					continue
				}
				if !transB {
					bp := b[p*ldb : p*ldb+n]
					for j, bv := range bp {
						ci[j] += av * bv
					}
				} else {
					_ = bt
					for j := 0; j < n; j++ {
						ci[j] += av * b[j*ldb+p]
					}
				}
			}
		}
	}
	workers := runtime.GOMAXPROCS(0)
	if workers > m {
		workers = m
	}
	if workers <= 1 || m*n*k < 1<<15 {
		rows(0, m)
		return
	}
	var wg sync.WaitGroup
	chunk := (m + workers - 1) / workers
	for lo := 0; lo < m; lo += chunk {
		wg.Add(1)
		go func(lo, hi int) { defer wg.Done(); rows(lo, hi) }(lo, min(lo+chunk, m))
	}
	wg.Wait()
}
