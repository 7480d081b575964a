// Package gemm declares the single-precision matrix product that every
// dense kernel in ctlens (convolution, linear layers, attention) reduces to,
// and selects the implementation that computes it.
//
// All matrices are row-major. Sgemm computes
//
//	C = alpha * op(A) * op(B) + beta * C
//
// where op(A) is m×k (A is m×k, or k×m when transA), op(B) is k×n (B is k×n,
// or n×k when transB) and C is m×n, with leading dimensions lda, ldb, ldc.
// When beta is 0, C is overwritten without being read. When alpha is 0 or k
// is 0, A and B are not read and C becomes beta*C.
//
// At start-up the package picks the fastest implementation the CPU supports:
// on amd64 with AVX-512F the AVX512 assembly kernel, with AVX2 and FMA the
// AVX2 one, otherwise the blocked pure-Go Portable. Building with the purego
// tag forces Portable. All of them pack the operands, block for the caches and
// split large products over GOMAXPROCS goroutines.
package gemm

import "fmt"

// Impl computes single-precision general matrix products.
type Impl interface {
	Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
}

var impl Impl = Portable{}

// implementations lists every Impl usable on this machine, slowest first;
// the init of an architecture's file appends to it and sets impl.
var implementations = []Impl{Portable{}}

// Use makes impl the implementation behind Sgemm and returns the previous one.
// It must not be called while another goroutine is inside Sgemm.
func Use(i Impl) Impl {
	old := impl
	impl = i
	return old
}

// Current returns the implementation behind Sgemm.
func Current() Impl { return impl }

// Sgemm computes C = alpha*op(A)*op(B) + beta*C with the current implementation.
// It panics with a message naming the operand when a dimension is negative, a
// leading dimension is smaller than its row length, or a slice is too short.
// It is safe to call from several goroutines at once.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if m == 0 || n == 0 {
		return
	}
	impl.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// checkArgs panics unless the operands of an m×n×k product fit their slices.
func checkArgs(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("gemm: Sgemm: negative dimension m=%d n=%d k=%d", m, n, k))
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	checkMatrix("A", ar, ac, a, lda)
	checkMatrix("B", br, bc, b, ldb)
	checkMatrix("C", m, n, c, ldc)
}

// checkMatrix panics unless a rows×cols row-major matrix with leading
// dimension ld fits in s.
func checkMatrix(name string, rows, cols int, s []float32, ld int) {
	if rows == 0 || cols == 0 {
		return
	}
	if ld < cols {
		panic(fmt.Sprintf("gemm: Sgemm: ld%s=%d < %d (%s is %d×%d)", lower(name), ld, cols, name, rows, cols))
	}
	if need := (rows-1)*ld + cols; len(s) < need {
		panic(fmt.Sprintf("gemm: Sgemm: len(%s)=%d < %d (%s is %d×%d, ld%s=%d)", lower(name), len(s), need, name, rows, cols, lower(name), ld))
	}
}

func lower(name string) string { return string(name[0] | 0x20) }
