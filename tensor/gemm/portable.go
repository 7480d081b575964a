package gemm

// Portable is a pure-Go implementation of Impl for every architecture: the
// blocked, packed driver around a register tile of plain Go code (2×4 on
// 386/amd64, whose 16 scalar float registers cannot hold a 4×4 tile; 4×4
// elsewhere), parallel over GOMAXPROCS workers.
type Portable struct{}

var (
	portable4x4 = &blocked{mr: 4, nr: 4, mc: 128, kc: 256, nc: 1024, kern: kernel4x4}
	portable2x4 = &blocked{mr: 2, nr: 4, mc: 128, kc: 256, nc: 1024, kern: kernel2x4}
	portable    = portable4x4
)

func init() {
	if fewFloatRegisters {
		portable = portable2x4
	}
}

// Sgemm implements Impl: C = alpha*op(A)*op(B) + beta*C.
func (Portable) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	portable.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// String names the implementation.
func (Portable) String() string {
	if portable == portable2x4 {
		return "portable (pure Go, 2x4 tile)"
	}
	return "portable (pure Go, 4x4 tile)"
}

// kernel4x4 is a pure-Go micro-kernel: C = Ap*Bp + beta*C for a 4×4 tile.
func kernel4x4(kc int, ap, bp, c []float32, ldc int, beta float32) {
	var c00, c01, c02, c03 float32
	var c10, c11, c12, c13 float32
	var c20, c21, c22, c23 float32
	var c30, c31, c32, c33 float32
	ap = ap[:4*kc]
	bp = bp[:4*kc]
	for len(ap) >= 4 && len(bp) >= 4 {
		a0, a1, a2, a3 := ap[0], ap[1], ap[2], ap[3]
		b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
		ap = ap[4:]
		bp = bp[4:]
	}
	store4(c[0:4], c00, c01, c02, c03, beta)
	store4(c[ldc:ldc+4], c10, c11, c12, c13, beta)
	store4(c[2*ldc:2*ldc+4], c20, c21, c22, c23, beta)
	store4(c[3*ldc:3*ldc+4], c30, c31, c32, c33, beta)
}

// kernel2x4 is a pure-Go micro-kernel: C = Ap*Bp + beta*C for a 2×4 tile.
func kernel2x4(kc int, ap, bp, c []float32, ldc int, beta float32) {
	var c00, c01, c02, c03 float32
	var c10, c11, c12, c13 float32
	ap = ap[:2*kc]
	bp = bp[:4*kc]
	for len(ap) >= 2 && len(bp) >= 4 {
		a0, a1 := ap[0], ap[1]
		b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		ap = ap[2:]
		bp = bp[4:]
	}
	store4(c[0:4], c00, c01, c02, c03, beta)
	store4(c[ldc:ldc+4], c10, c11, c12, c13, beta)
}

// store4 sets c = v + beta*c, not reading c when beta is 0.
func store4(c []float32, v0, v1, v2, v3, beta float32) {
	c = c[:4]
	if beta != 0 {
		v0 += beta * c[0]
		v1 += beta * c[1]
		v2 += beta * c[2]
		v3 += beta * c[3]
	}
	c[0], c[1], c[2], c[3] = v0, v1, v2, v3
}
