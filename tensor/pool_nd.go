package tensor

import (
	"math"
)

// poolAxis holds, for one spatial axis, the input range [lo[o], hi[o]) read
// by each output index o (stepping by step), and the divisor factor div[o]
// that average pooling uses for that axis.
type poolAxis struct {
	lo, hi, div []int
	step        int
}

// poolGeom is the geometry of a pooling of N·C independent planes. One or two
// spatial dimensions are expanded to three by leading singleton dimensions,
// so that every kernel runs on D×H×W planes.
type poolGeom struct {
	n, c    int
	nd      int    // spatial dimensions of the caller's tensor (1–3)
	in, out [3]int // expanded spatial sizes
	axes    [3]poolAxis
}

func (g *poolGeom) planes() int  { return g.n * g.c }
func (g *poolGeom) inPlane() int { return g.in[0] * g.in[1] * g.in[2] }
func (g *poolGeom) outPlane() int {
	return g.out[0] * g.out[1] * g.out[2]
}

// outShape returns N×C×(output spatial sizes of the caller's rank).
func (g *poolGeom) outShape() []int {
	s := []int{g.n, g.c}
	return append(s, g.out[3-g.nd:]...)
}

// poolGrain returns a ParallelFor grain so that each chunk holds about 32k
// element operations, given the operations per plane.
func poolGrain(perPlane int) int {
	if perPlane < 1 {
		perPlane = 1
	}
	return max(1, (1<<15)/perPlane)
}

// poolInput checks that x is N×C×spatial with 1–3 non-empty spatial dims and
// returns the geometry with n, c, nd and in filled.
func poolInput(op string, x *Tensor) poolGeom {
	if x.Dim() < 3 || x.Dim() > 5 {
		shapeErr(op, "input of shape %v: want N×C×spatial with 1 to 3 spatial dimensions", x.shape)
	}
	g := poolGeom{n: x.shape[0], c: x.shape[1], nd: x.Dim() - 2, in: [3]int{1, 1, 1}}
	for i, s := range x.shape[2:] {
		if s < 1 {
			shapeErr(op, "input of shape %v has an empty spatial dimension", x.shape)
		}
		g.in[3-g.nd+i] = s
	}
	if g.inPlane() > math.MaxInt32 {
		shapeErr(op, "input of shape %v: spatial plane of %d elements exceeds %d", x.shape, g.inPlane(), math.MaxInt32)
	}
	return g
}

// poolArg expands an option with one value per spatial dimension, or one
// value for all, into three entries; the leading entries of expanded
// dimensions get fill. It reports whether v was given.
func poolArg(op, name string, x *Tensor, v []int, nd, fill int) ([3]int, bool) {
	r := [3]int{fill, fill, fill}
	switch len(v) {
	case 0:
		return r, false
	case 1:
		for i := 3 - nd; i < 3; i++ {
			r[i] = v[0]
		}
	case nd:
		copy(r[3-nd:], v)
	default:
		shapeErr(op, "%s %v for input of shape %v: want 1 or %d values", name, v, x.shape, nd)
	}
	return r, true
}

// poolOutSize is PyTorch's pooling_output_shape: the number of windows of
// extent dil·(k−1)+1 at stride s over the input padded by p on both sides,
// rounding up in ceil mode but never starting a window in the right padding.
func poolOutSize(in, k, s, p, dil int, ceil bool) int {
	num := in + 2*p - dil*(k-1) - 1
	if ceil {
		num += s - 1
	}
	out := poolFloorDiv(num, s) + 1
	if ceil && (out-1)*s >= in+p {
		out--
	}
	return out
}

func poolFloorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// newPoolGeom validates o against x and builds the window tables of MaxPool
// (isMax true) or AvgPool.
func newPoolGeom(op string, x *Tensor, o PoolOpts, isMax bool) poolGeom {
	g := poolInput(op, x)
	nd := g.nd
	k, ok := poolArg(op, "kernel", x, o.Kernel, nd, 1)
	if !ok {
		shapeErr(op, "no kernel size given for input of shape %v", x.shape)
	}
	s, ok := poolArg(op, "stride", x, o.Stride, nd, 1)
	if !ok {
		s = k
	}
	p, _ := poolArg(op, "padding", x, o.Padding, nd, 0)
	d, _ := poolArg(op, "dilation", x, o.Dilation, nd, 1)
	if !isMax && len(o.Dilation) > 0 {
		for i := 3 - nd; i < 3; i++ {
			if d[i] != 1 {
				shapeErr(op, "dilation %v given for average pooling of input of shape %v; only MaxPool dilates", o.Dilation, x.shape)
			}
		}
	}
	for i := 3 - nd; i < 3; i++ {
		if k[i] < 1 || s[i] < 1 || d[i] < 1 || p[i] < 0 {
			shapeErr(op, "kernel %v, stride %v, padding %v, dilation %v for input of shape %v: kernel, stride and dilation must be positive, padding non-negative",
				k[3-nd:], s[3-nd:], p[3-nd:], d[3-nd:], x.shape)
		}
		if p[i] > k[i]/2 {
			shapeErr(op, "padding %v for kernel %v (input of shape %v): padding must be at most half the kernel size",
				p[3-nd:], k[3-nd:], x.shape)
		}
	}
	if !isMax && nd == 3 {
		// avg_pool3d alone rejects inputs smaller than the kernel, padding
		// notwithstanding.
		for i := range 3 {
			if g.in[i] < k[i] {
				shapeErr(op, "input of shape %v is smaller than the kernel %v", x.shape, k)
			}
		}
	}
	for i := 0; i < 3; i++ {
		g.out[i] = poolOutSize(g.in[i], k[i], s[i], p[i], d[i], o.CeilMode)
	}
	for i := 3 - nd; i < 3; i++ {
		if g.out[i] < 1 {
			shapeErr(op, "input of shape %v with kernel %v, stride %v, padding %v, dilation %v: output size %v is too small",
				x.shape, k[3-nd:], s[3-nd:], p[3-nd:], d[3-nd:], g.out[3-nd:])
		}
	}
	for i := 0; i < 3; i++ {
		a := poolAxis{lo: make([]int, g.out[i]), hi: make([]int, g.out[i]), div: make([]int, g.out[i]), step: 1}
		for j := range g.out[i] {
			start := j*s[i] - p[i]
			if isMax {
				// Positions start + t·d for t < k that fall inside the input.
				end := min(start+(k[i]-1)*d[i]+1, g.in[i])
				for start < 0 {
					start += d[i]
				}
				a.lo[j], a.hi[j], a.step = start, end, d[i]
				continue
			}
			// PyTorch's avg_pool: the divisor with padding counts the
			// window clipped to the padded input, the other one the
			// window clipped to the input.
			end := min(start+k[i], g.in[i]+p[i])
			padded := end - start
			start, end = max(start, 0), min(end, g.in[i])
			a.lo[j], a.hi[j] = start, end
			if o.CountIncludePad {
				a.div[j] = padded
			} else {
				a.div[j] = end - start
			}
		}
		g.axes[i] = a
	}
	return g
}

// newAdaptiveGeom builds the bins of AdaptiveAvgPool: output index i of an
// axis averages input [floor(i·in/out), ceil((i+1)·in/out)).
func newAdaptiveGeom(x *Tensor, out []int) poolGeom {
	const op = "AdaptiveAvgPool"
	g := poolInput(op, x)
	o, ok := poolArg(op, "output size", x, out, g.nd, 1)
	if !ok {
		shapeErr(op, "no output size given for input of shape %v", x.shape)
	}
	for i := 3 - g.nd; i < 3; i++ {
		if o[i] < 1 {
			shapeErr(op, "output size %v for input of shape %v: sizes must be positive", out, x.shape)
		}
	}
	g.out = o
	for i := 0; i < 3; i++ {
		in, n := g.in[i], g.out[i]
		a := poolAxis{lo: make([]int, n), hi: make([]int, n), div: make([]int, n), step: 1}
		for j := range n {
			a.lo[j] = j * in / n
			a.hi[j] = ((j+1)*in + n - 1) / n
			a.div[j] = a.hi[j] - a.lo[j]
		}
		g.axes[i] = a
	}
	return g
}

// maxForward computes the window maxima of every plane of x and, when idx is
// not nil, the flat in-plane index of each maximum (-1 for a window with no
// input element). Ties keep the first maximum; NaN propagates, as in PyTorch.
func (g *poolGeom) maxForward(x, y []float32, idx []int32) {
	isz, osz := g.inPlane(), g.outPlane()
	H, W := g.in[1], g.in[2]
	ad, ah, aw := &g.axes[0], &g.axes[1], &g.axes[2]
	negInf := float32(math.Inf(-1))
	work := osz * max(1, (ad.hi[0]-ad.lo[0])*(ah.hi[0]-ah.lo[0])*(aw.hi[0]-aw.lo[0]))
	ParallelFor(g.planes(), poolGrain(work), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x[pl*isz : (pl+1)*isz]
			dst := y[pl*osz : (pl+1)*osz]
			var ind []int32
			if idx != nil {
				ind = idx[pl*osz : (pl+1)*osz]
			}
			o := 0
			for od := range g.out[0] {
				d0, d1 := ad.lo[od], ad.hi[od]
				for oh := range g.out[1] {
					h0, h1 := ah.lo[oh], ah.hi[oh]
					for ow := range g.out[2] {
						w0, w1 := aw.lo[ow], aw.hi[ow]
						best, bi := negInf, int32(-1)
						if d0 < d1 && h0 < h1 && w0 < w1 {
							bi = int32((d0*H+h0)*W + w0)
						}
						for id := d0; id < d1; id += ad.step {
							for ih := h0; ih < h1; ih += ah.step {
								row := (id*H + ih) * W
								for iw := w0; iw < w1; iw += aw.step {
									if v := src[row+iw]; v > best || v != v {
										best, bi = v, int32(row+iw)
									}
								}
							}
						}
						dst[o] = best
						if ind != nil {
							ind[o] = bi
						}
						o++
					}
				}
			}
		}
	})
}

// maxBackward adds each output gradient gy to the input position of its
// window's maximum.
func (g *poolGeom) maxBackward(gy, gx []float32, idx []int32) {
	isz, osz := g.inPlane(), g.outPlane()
	ParallelFor(g.planes(), poolGrain(osz), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			dst := gx[pl*isz : (pl+1)*isz]
			for o, i := range idx[pl*osz : (pl+1)*osz] {
				if i >= 0 {
					dst[i] += gy[pl*osz+o]
				}
			}
		}
	})
}

// avgForward computes y = Σ window / Π div over each window (0 for an empty
// window).
func (g *poolGeom) avgForward(x, y []float32) {
	isz, osz := g.inPlane(), g.outPlane()
	H, W := g.in[1], g.in[2]
	ad, ah, aw := &g.axes[0], &g.axes[1], &g.axes[2]
	work := osz * max(1, (ad.hi[0]-ad.lo[0])*(ah.hi[0]-ah.lo[0])*(aw.hi[0]-aw.lo[0]))
	ParallelFor(g.planes(), poolGrain(work), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x[pl*isz : (pl+1)*isz]
			dst := y[pl*osz : (pl+1)*osz]
			o := 0
			for od := range g.out[0] {
				d0, d1 := ad.lo[od], ad.hi[od]
				for oh := range g.out[1] {
					h0, h1 := ah.lo[oh], ah.hi[oh]
					for ow := range g.out[2] {
						w0, w1 := aw.lo[ow], aw.hi[ow]
						if d0 >= d1 || h0 >= h1 || w0 >= w1 {
							dst[o] = 0
							o++
							continue
						}
						var sum float64
						for id := d0; id < d1; id++ {
							for ih := h0; ih < h1; ih++ {
								row := (id*H + ih) * W
								for _, v := range src[row+w0 : row+w1] {
									sum += float64(v)
								}
							}
						}
						div := ad.div[od] * ah.div[oh] * aw.div[ow]
						dst[o] = float32(sum / float64(div))
						o++
					}
				}
			}
		}
	})
}

// avgBackward adds gy / Π div to every input position of each window.
func (g *poolGeom) avgBackward(gy, gx []float32) {
	isz, osz := g.inPlane(), g.outPlane()
	H, W := g.in[1], g.in[2]
	ad, ah, aw := &g.axes[0], &g.axes[1], &g.axes[2]
	work := osz * max(1, (ad.hi[0]-ad.lo[0])*(ah.hi[0]-ah.lo[0])*(aw.hi[0]-aw.lo[0]))
	ParallelFor(g.planes(), poolGrain(work), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			dst := gx[pl*isz : (pl+1)*isz]
			src := gy[pl*osz : (pl+1)*osz]
			o := 0
			for od := range g.out[0] {
				d0, d1 := ad.lo[od], ad.hi[od]
				for oh := range g.out[1] {
					h0, h1 := ah.lo[oh], ah.hi[oh]
					for ow := range g.out[2] {
						w0, w1 := aw.lo[ow], aw.hi[ow]
						if d0 >= d1 || h0 >= h1 || w0 >= w1 {
							o++
							continue
						}
						v := src[o] / float32(ad.div[od]*ah.div[oh]*aw.div[ow])
						o++
						for id := d0; id < d1; id++ {
							for ih := h0; ih < h1; ih++ {
								row := (id*H + ih) * W
								seg := dst[row+w0 : row+w1]
								for i := range seg {
									seg[i] += v
								}
							}
						}
					}
				}
			}
		}
	})
}
