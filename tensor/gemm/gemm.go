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
// When beta is 0, C is overwritten without being read.
package gemm

// Impl computes single-precision general matrix products.
type Impl interface {
	Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
}

var impl Impl = Portable{}

// Use makes impl the implementation behind Sgemm and returns the previous one.
func Use(i Impl) Impl {
	old := impl
	impl = i
	return old
}

// Current returns the implementation behind Sgemm.
func Current() Impl { return impl }

// Sgemm computes C = alpha*op(A)*op(B) + beta*C with the current implementation.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	impl.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}
