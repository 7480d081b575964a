package tensor

import "github.com/ctlens/ctlens/tensor/gemm"

// Dense and grouped convolution as matrix products.
//
// For one sample and group, let X be the group's Cin/groups input channels,
// W the group's Cout/groups × (Cin/groups·kernel) weight matrix and col the
// (Cin/groups·kernel) × positions column matrix of X (im2col). Then
//
//	Y  = W · col
//	dW += dY · colᵀ
//	dX = col2im(Wᵀ · dY)
//
// Positions are processed in chunks so that the column buffers stay within
// ConvColumnLimit. A pointwise convolution (1×1×1, stride 1, no padding) has
// col = X and needs no column buffer.
//
// Parallelism: the GEMM implementation threads each product itself, and
// im2col/col2im run across goroutines between the products, so samples,
// groups and chunks run one after another and nothing is oversubscribed.

// groupOffsets returns where sample n's group grp starts in x (its
// Cin/groups channels), w (its Cout/groups weight rows) and y (its
// Cout/groups channels).
func (g *convGeom) groupOffsets(n, grp int) (xo, wo, yo int) {
	xo = (n*g.cin + grp*g.cinG) * g.inVol
	wo = grp * g.coutG * g.kRows()
	yo = (n*g.cout + grp*g.coutG) * g.outVol
	return
}

// denseForward computes y = conv(x, w) without bias; y is overwritten. When
// post is not nil, it is called with each finished block of output
// positions [l0, l1) of sample n's group grp (all the group's channels),
// right after the product that wrote it, while the block is still in cache.
func (g *convGeom) denseForward(x, w, y []float32, post func(n, grp, l0, l1 int)) {
	kr := g.kRows()
	if g.pointwise() {
		// Without a post pass one product covers all positions; with one,
		// blocks of positions keep the output block in cache for it.
		chunk := g.outVol
		if post != nil {
			chunk = min(g.outVol, max(2048, (1<<20)/(4*g.coutG))&^31)
		}
		for n := range g.n {
			for grp := range g.groups {
				xo, wo, yo := g.groupOffsets(n, grp)
				for l0 := 0; l0 < g.outVol; l0 += chunk {
					l1 := min(l0+chunk, g.outVol)
					gemm.Sgemm(false, false, g.coutG, l1-l0, kr, 1, w[wo:], kr, x[xo+l0:], g.inVol, 0, y[yo+l0:], g.outVol)
					if post != nil {
						post(n, grp, l0, l1)
					}
				}
			}
		}
		return
	}
	chunk := g.chunkLen(1)
	buf := getConvBuf(kr * chunk)
	defer putConvBuf(buf)
	for n := range g.n {
		for grp := range g.groups {
			xo, wo, yo := g.groupOffsets(n, grp)
			for l0 := 0; l0 < g.outVol; l0 += chunk {
				l1 := min(l0+chunk, g.outVol)
				col := (*buf)[:kr*(l1-l0)]
				g.im2col(x[xo:xo+g.cinG*g.inVol], col, l0, l1)
				gemm.Sgemm(false, false, g.coutG, l1-l0, kr, 1, w[wo:], kr, col, l1-l0, 0, y[yo+l0:], g.outVol)
				if post != nil {
					post(n, grp, l0, l1)
				}
			}
		}
	}
}

// denseBackward adds the gradients of the convolution for output gradient
// dy into dx and dw; either may be nil when not wanted.
func (g *convGeom) denseBackward(x, w, dy, dx, dw []float32) {
	kr := g.kRows()
	if g.pointwise() {
		for n := range g.n {
			for grp := range g.groups {
				xo, wo, yo := g.groupOffsets(n, grp)
				if dw != nil {
					gemm.Sgemm(false, true, g.coutG, kr, g.outVol, 1, dy[yo:], g.outVol, x[xo:], g.inVol, 1, dw[wo:], kr)
				}
				if dx != nil {
					gemm.Sgemm(true, false, kr, g.inVol, g.coutG, 1, w[wo:], kr, dy[yo:], g.outVol, 1, dx[xo:], g.inVol)
				}
			}
		}
		return
	}
	bufs := 0
	if dw != nil {
		bufs++
	}
	if dx != nil {
		bufs++
	}
	chunk := g.chunkLen(bufs)
	var colBuf, dcolBuf *[]float32
	if dw != nil {
		colBuf = getConvBuf(kr * chunk)
		defer putConvBuf(colBuf)
	}
	if dx != nil {
		dcolBuf = getConvBuf(kr * chunk)
		defer putConvBuf(dcolBuf)
	}
	for n := range g.n {
		for grp := range g.groups {
			xo, wo, yo := g.groupOffsets(n, grp)
			for l0 := 0; l0 < g.outVol; l0 += chunk {
				l1 := min(l0+chunk, g.outVol)
				m := l1 - l0
				if dw != nil {
					col := (*colBuf)[:kr*m]
					g.im2col(x[xo:xo+g.cinG*g.inVol], col, l0, l1)
					gemm.Sgemm(false, true, g.coutG, kr, m, 1, dy[yo+l0:], g.outVol, col, m, 1, dw[wo:], kr)
				}
				if dx != nil {
					dcol := (*dcolBuf)[:kr*m]
					gemm.Sgemm(true, false, kr, m, g.coutG, 1, w[wo:], kr, dy[yo+l0:], g.outVol, 0, dcol, m)
					g.col2im(dcol, dx[xo:xo+g.cinG*g.inVol], l0, l1)
				}
			}
		}
	}
}

// im2col fills col ((Cin/groups·kernel) × (l1−l0), row-major) with the
// input values that output positions [l0, l1) read: row (c, kd, kh, kw),
// column l holds x[c, od·sd−pd+kd·dd, oh·sh−ph+kh·dh, ow·sw−pw+kw·dw] where
// (od, oh, ow) is position l, or 0 outside the input.
func (g *convGeom) im2col(x, col []float32, l0, l1 int) {
	m := l1 - l0
	ParallelFor(g.kRows(), convGrain(m), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			c, t := r/g.kVol, r%g.kVol
			g.colRow(x[c*g.inVol:(c+1)*g.inVol], col[r*m:(r+1)*m], t, l0, false)
		}
	})
}

// col2im adds each entry of col (laid out as im2col's) into the input
// position it was read from: the adjoint of im2col.
func (g *convGeom) col2im(col, x []float32, l0, l1 int) {
	m := l1 - l0
	ParallelFor(g.cinG, convGrain(m*g.kVol), func(lo, hi int) {
		for c := lo; c < hi; c++ {
			xc := x[c*g.inVol : (c+1)*g.inVol]
			for t := range g.kVol {
				r := c*g.kVol + t
				g.colRow(xc, col[r*m:(r+1)*m], t, l0, true)
			}
		}
	})
}

// colRow walks the output positions [l0, l0+len(row)) for kernel tap t of
// one channel plane xc. Forward (add false) it sets row[l] to the input
// value read, or 0 in the padding; with add true it adds row[l] into that
// input value instead (padding entries are dropped).
func (g *convGeom) colRow(xc, row []float32, t, l0 int, add bool) {
	kd, kh, kw := g.tap(t)
	offD, offH := kd*g.d[0]-g.p[0], kh*g.d[1]-g.p[1]
	owLo, owHi, offW := g.tapRange(2, kw)
	sd, sh, sw := g.s[0], g.s[1], g.s[2]
	OH, OW := g.out[1], g.out[2]
	D, H, W := g.in[0], g.in[1], g.in[2]
	od, oh, ow := l0/(OH*OW), l0/OW%OH, l0%OW
	for i := 0; i < len(row); {
		seg := min(OW-ow, len(row)-i)
		dst := row[i : i+seg]
		id, ih := od*sd+offD, oh*sh+offH
		a, b := max(ow, owLo), min(ow+seg, owHi)
		switch {
		case id < 0 || id >= D || ih < 0 || ih >= H || a >= b:
			if !add {
				clear(dst)
			}
		case add:
			xr := xc[(id*H+ih)*W : (id*H+ih+1)*W]
			src := dst[a-ow : b-ow]
			if sw == 1 {
				xs := xr[a+offW : b+offW]
				xs = xs[:len(src)]
				for j, v := range src {
					xs[j] += v
				}
			} else {
				for j, v := range src {
					xr[(a+j)*sw+offW] += v
				}
			}
		default:
			clear(dst[:a-ow])
			clear(dst[b-ow:])
			xr := xc[(id*H+ih)*W : (id*H+ih+1)*W]
			if sw == 1 {
				copy(dst[a-ow:b-ow], xr[a+offW:b+offW])
			} else {
				out := dst[a-ow : b-ow]
				for j := range out {
					out[j] = xr[(a+j)*sw+offW]
				}
			}
		}
		i += seg
		ow = 0
		if oh++; oh == OH {
			oh = 0
			od++
		}
	}
}
