package gemm

import (
	"runtime"
	"sync"
)

// microKernel computes the mr×nr tile
//
//	C = Ap * Bp + beta*C
//
// from a packed A micro-panel ap (kc steps of mr values, alpha already
// applied) and a packed B micro-panel bp (kc steps of nr values), writing C
// with leading dimension ldc. When beta is 0, C is not read. kc >= 1.
type microKernel func(kc int, ap, bp, c []float32, ldc int, beta float32)

// blocked is the Goto/BLIS-style driver shared by every implementation: it
// packs op(A) into mr-row panels and op(B) into nr-column panels (zero padded
// at the edges), blocks the product for the caches (kc×nc slices of B, mc×kc
// blocks of A) and splits C into rectangles computed by parallel workers.
type blocked struct {
	mr, nr     int // register tile of the micro-kernel
	mc, kc, nc int // cache blocks; mc is a multiple of mr, nc of nr
	kern       microKernel
	// packBT, when not nil, packs a full nr-column panel of op(B) = B^T for
	// 8*kc8 steps: dst[p*nr+j] = b[off+j*ldb+p].
	packBT func(kc8 int, b []float32, off, ldb int, dst []float32, nr int)
	// packBN, when not nil, packs a full nr-column panel of op(B) = B for kc
	// steps: dst[p*nr+j] = b[off+p*ldb+j].
	packBN func(kc int, b []float32, off, ldb int, dst []float32)
	// packAN, when not nil, packs a full mr-row panel of alpha*op(A) = alpha*A
	// for 8*kc8 steps: dst[p*mr+r] = alpha*a[off+r*lda+p].
	packAN func(kc8 int, a []float32, off, lda int, dst []float32, alpha float32)
	// packAT, when not nil, packs a full mr-row panel of alpha*op(A) =
	// alpha*A^T for kc steps: dst[p*mr+r] = alpha*a[off+p*lda+r].
	packAT func(kc int, a []float32, off, lda int, dst []float32, alpha float32)
	pool   sync.Pool // *workspace
}

// workspace holds one worker's packing buffers.
type workspace struct {
	a, b, tile []float32
}

// Small products (m*n*k below smallWork) skip packing; products below
// threadWork multiply-adds per extra worker are not worth a goroutine.
const (
	smallWork  = 8 * 8 * 8
	threadWork = 1 << 21
)

func (d *blocked) getWorkspace() *workspace {
	if w, ok := d.pool.Get().(*workspace); ok {
		return w
	}
	return &workspace{
		a:    make([]float32, d.mc*d.kc),
		b:    make([]float32, d.kc*d.nc),
		tile: make([]float32, d.mr*d.nr),
	}
}

// sgemm computes C = alpha*op(A)*op(B) + beta*C (see package doc). Arguments
// are checked; on bad ones it panics with a message naming the operand.
func (d *blocked) sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if m == 0 || n == 0 {
		return
	}
	if alpha == 0 || k == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	work := int64(m) * int64(n) * int64(k)
	if work < smallWork {
		naive(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	op := operands{transA, transB, alpha, a, lda, b, ldb, beta, c, ldc}
	workers := int64(runtime.GOMAXPROCS(0))
	if w := work / threadWork; w < workers {
		workers = max(w, 1)
	}
	gm, gn := d.grid(m, n, int(workers))
	if gm*gn == 1 {
		d.rect(&op, 0, m, 0, n, k)
		return
	}
	// Rectangle boundaries fall on multiples of the register tile so that
	// only the last rectangle in each direction has partial tiles.
	rowAt := func(i int) int { return min(m, roundUp(m*i/gm, d.mr)) }
	colAt := func(j int) int { return min(n, roundUp(n*j/gn, d.nr)) }
	var wg sync.WaitGroup
	for t := 1; t < gm*gn; t++ {
		i, j := t/gn, t%gn
		i0, i1, j0, j1 := rowAt(i), rowAt(i+1), colAt(j), colAt(j+1)
		if i0 >= i1 || j0 >= j1 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.rect(&op, i0, i1, j0, j1, k)
		}()
	}
	if i1, j1 := rowAt(1), colAt(1); i1 > 0 && j1 > 0 {
		d.rect(&op, 0, i1, 0, j1, k)
	}
	wg.Wait()
}

// grid splits an m×n product among up to workers goroutines as a gm×gn grid
// of rectangles, each at least one tile wide, using as many workers as such a
// grid allows and, among the grids of that size, minimising the packing work
// per multiply-add (each row strip re-packs B, costing gm/m; each column
// strip re-packs A, costing gn/n).
func (d *blocked) grid(m, n, workers int) (gm, gn int) {
	for w := workers; w > 1; w-- {
		best := -1.0
		for r := 1; r <= w; r++ {
			if w%r != 0 {
				continue
			}
			s := w / r
			if (m+d.mr-1)/d.mr < r || (n+d.nr-1)/d.nr < s {
				continue
			}
			cost := float64(r)/float64(m) + float64(s)/float64(n)
			if best < 0 || cost < best {
				best, gm, gn = cost, r, s
			}
		}
		if best >= 0 {
			return gm, gn
		}
	}
	return 1, 1
}

// operands bundles the arguments of one Sgemm call.
type operands struct {
	transA, transB bool
	alpha          float32
	a              []float32
	lda            int
	b              []float32
	ldb            int
	beta           float32
	c              []float32
	ldc            int
}

// rect computes rows [i0,i1) and columns [j0,j1) of C over the full k.
func (d *blocked) rect(op *operands, i0, i1, j0, j1, k int) {
	ws := d.getWorkspace()
	defer d.pool.Put(ws)
	for jc := j0; jc < j1; jc += d.nc {
		nc := min(d.nc, j1-jc)
		for pc := 0; pc < k; pc += d.kc {
			kc := min(d.kc, k-pc)
			beta := op.beta
			if pc > 0 {
				beta = 1
			}
			for ic := i0; ic < i1; ic += d.mc {
				mc := min(d.mc, i1-ic)
				d.packA(ws.a, op.transA, op.alpha, op.a, op.lda, ic, mc, pc, kc)
				// The first block of rows packs each B panel just before
				// its first use, while it is still in L1; later blocks
				// reuse the packed slice.
				var pb *operands
				if ic == i0 {
					pb = op
				}
				d.macro(ws, mc, nc, kc, op.c[ic*op.ldc+jc:], op.ldc, beta, pb, pc, jc)
			}
		}
	}
}

// macro multiplies the packed mc×kc block of A by the packed kc×nc slice of B
// into C (whose element (0,0) is c[0]). When pb is not nil, it first packs
// each panel of the slice, op(B)[pc:pc+kc, jc+jr:jc+jr+nr], from pb.
func (d *blocked) macro(ws *workspace, mc, nc, kc int, c []float32, ldc int, beta float32, pb *operands, pc, jc int) {
	mr, nr := d.mr, d.nr
	for jr := 0; jr < nc; jr += nr {
		bp := ws.b[jr*kc : jr*kc+nr*kc]
		nrr := min(nr, nc-jr)
		if pb != nil {
			d.packB(bp, pb.transB, pb.b, pb.ldb, pc, kc, jc+jr, nrr)
		}
		for ir := 0; ir < mc; ir += mr {
			ap := ws.a[ir*kc : ir*kc+mr*kc]
			mrr := min(mr, mc-ir)
			off := ir*ldc + jr
			if mrr == mr && nrr == nr {
				d.kern(kc, ap, bp, c[off:off+(mr-1)*ldc+nr], ldc, beta)
				continue
			}
			t := ws.tile
			d.kern(kc, ap, bp, t, nr, 0)
			for i := range mrr {
				ci := c[off+i*ldc : off+i*ldc+nrr]
				ti := t[i*nr : i*nr+nrr]
				switch beta {
				case 0:
					copy(ci, ti)
				case 1:
					for j, v := range ti {
						ci[j] += v
					}
				default:
					for j, v := range ti {
						ci[j] = v + beta*ci[j]
					}
				}
			}
		}
	}
}

// packA stores alpha*op(A)[i0:i0+mc, p0:p0+kc] in dst as ceil(mc/mr) panels;
// panel q holds kc steps of mr values (rows q*mr..q*mr+mr-1, zero past mc).
func (d *blocked) packA(dst []float32, trans bool, alpha float32, a []float32, lda, i0, mc, p0, kc int) {
	mr := d.mr
	for q := 0; q < mc; q += mr {
		rows := min(mr, mc-q)
		panel := dst[q*kc : q*kc+mr*kc]
		if !trans {
			// op(A)[i][p] = a[i*lda+p]: each row is contiguous in p.
			p := 0
			if rows == mr && d.packAN != nil {
				p = kc &^ 7
				d.packAN(p/8, a, (i0+q)*lda+p0, lda, panel, alpha)
			}
			for r := range rows {
				src := a[(i0+q+r)*lda+p0:][:kc]
				for pp := p; pp < kc; pp++ {
					panel[pp*mr+r] = alpha * src[pp]
				}
			}
		} else {
			// op(A)[i][p] = a[p*lda+i]: each step is contiguous in i.
			if rows == mr && d.packAT != nil {
				d.packAT(kc, a, p0*lda+i0+q, lda, panel, alpha)
				continue
			}
			for p := range kc {
				src := a[(p0+p)*lda+i0+q:][:rows]
				dp := panel[p*mr : p*mr+rows]
				for r, v := range src {
					dp[r] = alpha * v
				}
			}
		}
		if rows < mr {
			for p := range kc {
				clear(panel[p*mr+rows : p*mr+mr])
			}
		}
	}
}

// packB stores op(B)[p0:p0+kc, j0:j0+nc] in dst as ceil(nc/nr) panels;
// panel q holds kc steps of nr values (columns q*nr.., zero past nc).
func (d *blocked) packB(dst []float32, trans bool, b []float32, ldb, p0, kc, j0, nc int) {
	nr := d.nr
	for q := 0; q < nc; q += nr {
		cols := min(nr, nc-q)
		panel := dst[q*kc : q*kc+nr*kc]
		switch {
		case !trans && cols == nr && d.packBN != nil:
			d.packBN(kc, b, p0*ldb+j0+q, ldb, panel)
		case !trans:
			// op(B)[p][j] = b[p*ldb+j]: each step is contiguous in j.
			for p := range kc {
				copy(panel[p*nr:p*nr+cols], b[(p0+p)*ldb+j0+q:][:cols])
			}
		default:
			// op(B)[p][j] = b[j*ldb+p]: each column is contiguous in p.
			p := 0
			if cols == nr && d.packBT != nil {
				p = kc &^ 7
				d.packBT(p/8, b, (j0+q)*ldb+p0, ldb, panel, nr)
			}
			for j := range cols {
				src := b[(j0+q+j)*ldb+p0:][:kc]
				for pp := p; pp < kc; pp++ {
					panel[pp*nr+j] = src[pp]
				}
			}
		}
		if cols < nr {
			for p := range kc {
				clear(panel[p*nr+cols : p*nr+nr])
			}
		}
	}
}

// scaleC sets C = beta*C, writing zeros without reading C when beta is 0.
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := range m {
		ci := c[i*ldc : i*ldc+n]
		switch beta {
		case 0:
			clear(ci)
		case 1:
		default:
			for j := range ci {
				ci[j] *= beta
			}
		}
	}
}

// naive computes C = alpha*op(A)*op(B) + beta*C by dot products; it serves
// products too small to repay packing.
func naive(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := range m {
		for j := range n {
			var s float32
			for p := range k {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += av * bv
			}
			s *= alpha
			if beta != 0 {
				s += beta * c[i*ldc+j]
			}
			c[i*ldc+j] = s
		}
	}
}

func roundUp(x, q int) int { return (x + q - 1) / q * q }
