//go:build amd64 && !purego

package gemm

//go:generate python3 gen_amd64.py

import "golang.org/x/sys/cpu"

// AVX2 is an amd64 implementation of Impl: the blocked, packed driver around
// a 6×16 AVX2+FMA assembly micro-kernel, parallel over GOMAXPROCS workers. On
// a CPU without AVX2 and FMA it computes with Portable instead.
type AVX2 struct{}

// AVX512 is an amd64 implementation of Impl: the blocked, packed driver
// around an 8×32 AVX-512F assembly micro-kernel, parallel over GOMAXPROCS
// workers. On a CPU without AVX-512F it computes with AVX2 instead.
type AVX512 struct{}

// CPU (and OS) support for the assembly kernels.
var (
	hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA
	hasAVX512  = hasAVX2FMA && cpu.X86.HasAVX512F
)

var (
	avx2   = &blocked{mr: 6, nr: 16, mc: 144, kc: 256, nc: 2048, kern: kernelAVX2, packBT: packBTAVX2, packBN: packBN16AVX2, packAN: packA6AVX2}
	avx512 = &blocked{mr: 8, nr: 32, mc: 128, kc: 256, nc: 2048, kern: kernelAVX512, packBT: packBTAVX2, packAN: packA8AVX2, packAT: packAT8AVX2, packBN: packBN32AVX2}
)

func init() {
	if hasAVX2FMA {
		impl = AVX2{}
		implementations = append(implementations, AVX2{})
		fmaPeak = fmaPeakAVX2
	}
	if hasAVX512 {
		impl = AVX512{}
		implementations = append(implementations, AVX512{})
		fmaPeak = fmaPeakAVX512
	}
}

// Sgemm implements Impl: C = alpha*op(A)*op(B) + beta*C.
func (AVX2) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if !hasAVX2FMA {
		portable.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	avx2.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// String names the implementation.
func (AVX2) String() string { return "avx2 (amd64 AVX2+FMA assembly, 6x16 tile)" }

// Sgemm implements Impl: C = alpha*op(A)*op(B) + beta*C.
func (AVX512) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if !hasAVX512 {
		AVX2{}.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	avx512.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// String names the implementation.
func (AVX512) String() string { return "avx512 (amd64 AVX-512F assembly, 8x32 tile)" }

// kernelAVX2 checks the slice bounds the assembly relies on and runs it.
func kernelAVX2(kc int, ap, bp, c []float32, ldc int, beta float32) {
	_ = ap[6*kc-1]
	_ = bp[16*kc-1]
	_ = c[5*ldc+15]
	kernel6x16(kc, &ap[0], &bp[0], &c[0], ldc, beta)
}

// kernelAVX512 checks the slice bounds the assembly relies on and runs it.
func kernelAVX512(kc int, ap, bp, c []float32, ldc int, beta float32) {
	_ = ap[8*kc-1]
	_ = bp[32*kc-1]
	_ = c[7*ldc+31]
	kernel8x32(kc, &ap[0], &bp[0], &c[0], ldc, beta)
}

// packBTAVX2 packs a full 16- or 32-column panel of op(B) = B^T for 8*kc8
// steps, dst[p*nr+j] = b[off+j*ldb+p], checking the bounds the assembly
// relies on.
func packBTAVX2(kc8 int, b []float32, off, ldb int, dst []float32, nr int) {
	if kc8 == 0 {
		return
	}
	for j := 0; j+16 <= nr; j += 16 {
		_ = b[off+(j+15)*ldb+8*kc8-1]
		_ = dst[(8*kc8-1)*nr+j+15]
		packBT16(kc8, &b[off+j*ldb], ldb, &dst[j], nr)
	}
}

// packA6AVX2 packs a full 6-row panel of alpha*A for 8*kc8 steps,
// dst[p*6+r] = alpha*a[off+r*lda+p], checking the bounds the assembly relies
// on.
func packA6AVX2(kc8 int, a []float32, off, lda int, dst []float32, alpha float32) {
	if kc8 == 0 {
		return
	}
	_ = a[off+5*lda+8*kc8-1]
	_ = dst[48*kc8-1]
	packT6(kc8, &a[off], lda, &dst[0], alpha)
}

// packA8AVX2 packs a full 8-row panel of alpha*A for 8*kc8 steps,
// dst[p*8+r] = alpha*a[off+r*lda+p], checking the bounds the assembly relies
// on.
func packA8AVX2(kc8 int, a []float32, off, lda int, dst []float32, alpha float32) {
	if kc8 == 0 {
		return
	}
	_ = a[off+7*lda+8*kc8-1]
	_ = dst[64*kc8-1]
	packT8(kc8, &a[off], lda, &dst[0], alpha)
}

// packAT8AVX2 packs a full 8-row panel of alpha*A^T for kc steps,
// dst[p*8+r] = alpha*a[off+p*lda+r], checking the bounds the assembly relies
// on.
func packAT8AVX2(kc int, a []float32, off, lda int, dst []float32, alpha float32) {
	_ = a[off+(kc-1)*lda+7]
	_ = dst[8*kc-1]
	packN8(kc, &a[off], lda, &dst[0], alpha)
}

// packN8 packs kc steps of 8 values of alpha*A^T (see kernel_amd64.s).
//
//go:noescape
func packN8(kc int, src *float32, lds int, dst *float32, alpha float32)

// packBN16AVX2 and packBN32AVX2 pack a full 16- or 32-column panel of B for
// kc steps, dst[p*nr+j] = b[off+p*ldb+j], checking the bounds the assembly
// relies on.
func packBN16AVX2(kc int, b []float32, off, ldb int, dst []float32) {
	_ = b[off+(kc-1)*ldb+15]
	_ = dst[16*kc-1]
	packN16(kc, &b[off], ldb, &dst[0])
}

func packBN32AVX2(kc int, b []float32, off, ldb int, dst []float32) {
	_ = b[off+(kc-1)*ldb+31]
	_ = dst[32*kc-1]
	packN32(kc, &b[off], ldb, &dst[0])
}

// packN16 and packN32 copy kc steps of 16 or 32 values of B (see
// kernel_amd64.s).
//
//go:noescape
func packN16(kc int, src *float32, lds int, dst *float32)

//go:noescape
func packN32(kc int, src *float32, lds int, dst *float32)

// kernel6x16 sets C[0:6][0:16] = A*B + beta*C (see kernel_amd64.s).
//
//go:noescape
func kernel6x16(kc int, a, b, c *float32, ldc int, beta float32)

// kernel8x32 sets C[0:8][0:32] = A*B + beta*C (see kernel_amd64.s).
//
//go:noescape
func kernel8x32(kc int, a, b, c *float32, ldc int, beta float32)

// packT8 and packT6 pack 8 or 6 rows of alpha*A for 8*kc8 steps (see
// kernel_amd64.s).
//
//go:noescape
func packT8(kc8 int, src *float32, lds int, dst *float32, alpha float32)

//go:noescape
func packT6(kc8 int, src *float32, lds int, dst *float32, alpha float32)

// packBT16 packs 16 columns of B^T for 8*kc8 steps (see kernel_amd64.s).
//
//go:noescape
func packBT16(kc8 int, b *float32, ldb int, dst *float32, lddst int)

// fmaLoop runs n iterations of 12 independent 8-wide fused multiply-adds.
//
//go:noescape
func fmaLoop(n int)

// fmaLoop512 runs n iterations of 12 independent 16-wide fused multiply-adds.
//
//go:noescape
func fmaLoop512(n int)

// fmaPeakAVX2 runs fmaLoop for iters iterations and returns the flops done.
func fmaPeakAVX2(iters int) float64 {
	fmaLoop(iters)
	return float64(iters) * 12 * 8 * 2
}

// fmaPeakAVX512 runs fmaLoop512 for iters iterations and returns the flops
// done.
func fmaPeakAVX512(iters int) float64 {
	fmaLoop512(iters)
	return float64(iters) * 12 * 16 * 2
}
