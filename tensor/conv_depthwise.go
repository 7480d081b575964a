package tensor

// Depthwise convolution (groups == Cin, Cout = mult·Cin) computed directly:
// output channel o reads only input channel o/mult, so each kernel tap is a
// scaled shifted copy of one plane, and no column matrix is needed.
//
//	y[n, o, p]  = Σ_t w[o, 0, t] · x[n, o/mult, p·s − pad + t·d]
//	dx[n, c, q] = Σ_{o = c·mult…, t, p : p·s − pad + t·d = q} w[o, 0, t] · dy[n, o, p]
//	dw[o, 0, t] = Σ_{n, p} dy[n, o, p] · x[n, o/mult, p·s − pad + t·d]

// dwTap is one kernel tap's valid output box and input offsets.
type dwTap struct {
	odLo, odHi, offD int
	ohLo, ohHi, offH int
	owLo, owHi, offW int
}

// dwTaps returns the valid output box of every kernel tap.
func (g *convGeom) dwTaps() []dwTap {
	taps := make([]dwTap, g.kVol)
	for t := range taps {
		kd, kh, kw := g.tap(t)
		var tp dwTap
		tp.odLo, tp.odHi, tp.offD = g.tapRange(0, kd)
		tp.ohLo, tp.ohHi, tp.offH = g.tapRange(1, kh)
		tp.owLo, tp.owHi, tp.offW = g.tapRange(2, kw)
		taps[t] = tp
	}
	return taps
}

// depthwiseForward computes y = conv(x, w) without bias; y must be zero.
// When post is not nil, it is called with each finished output plane
// pl = n·Cout + o right after it is computed.
func (g *convGeom) depthwiseForward(x, w, y []float32, post func(pl int)) {
	taps := g.dwTaps()
	mult := g.coutG
	ParallelFor(g.n*g.cout, convGrain(g.outVol*g.kVol), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			n, o := pl/g.cout, pl%g.cout
			c := o / mult
			xp := x[(n*g.cin+c)*g.inVol : (n*g.cin+c+1)*g.inVol]
			yp := y[pl*g.outVol : (pl+1)*g.outVol]
			for t, tp := range taps {
				g.dwForwardTap(xp, yp, w[o*g.kVol+t], &tp)
			}
			if post != nil {
				post(pl)
			}
		}
	})
}

// dwForwardTap adds wv times tap tp's shifted input plane xp into yp.
func (g *convGeom) dwForwardTap(xp, yp []float32, wv float32, tp *dwTap) {
	if tp.owLo >= tp.owHi {
		return
	}
	sd, sh, sw := g.s[0], g.s[1], g.s[2]
	H, W, OH, OW := g.in[1], g.in[2], g.out[1], g.out[2]
	for od := tp.odLo; od < tp.odHi; od++ {
		id := od*sd + tp.offD
		for oh := tp.ohLo; oh < tp.ohHi; oh++ {
			ih := oh*sh + tp.offH
			yr := yp[(od*OH+oh)*OW+tp.owLo : (od*OH+oh)*OW+tp.owHi]
			xr := xp[(id*H+ih)*W : (id*H+ih+1)*W]
			if sw == 1 {
				xs := xr[tp.owLo+tp.offW : tp.owHi+tp.offW]
				yr = yr[:len(xs)]
				for j, v := range xs {
					yr[j] += wv * v
				}
			} else {
				base := tp.owLo*sw + tp.offW
				for j := range yr {
					yr[j] += wv * xr[base+j*sw]
				}
			}
		}
	}
}

// depthwiseBackward adds the gradients for output gradient dy into dx and
// dw; either may be nil when not wanted.
func (g *convGeom) depthwiseBackward(x, w, dy, dx, dw []float32) {
	taps := g.dwTaps()
	mult := g.coutG
	if dx != nil {
		// One goroutine per input plane: it gathers from its mult output planes.
		ParallelFor(g.n*g.cin, convGrain(mult*g.outVol*g.kVol), func(lo, hi int) {
			for pl := lo; pl < hi; pl++ {
				n, c := pl/g.cin, pl%g.cin
				xp := dx[pl*g.inVol : (pl+1)*g.inVol]
				for o := c * mult; o < (c+1)*mult; o++ {
					yp := dy[(n*g.cout+o)*g.outVol : (n*g.cout+o+1)*g.outVol]
					for t, tp := range taps {
						g.dwInputTap(xp, yp, w[o*g.kVol+t], &tp)
					}
				}
			}
		})
	}
	if dw != nil {
		ParallelFor(g.cout, convGrain(g.n*g.outVol*g.kVol), func(lo, hi int) {
			for o := lo; o < hi; o++ {
				c := o / mult
				for t, tp := range taps {
					var s float32
					for n := range g.n {
						xp := x[(n*g.cin+c)*g.inVol : (n*g.cin+c+1)*g.inVol]
						yp := dy[(n*g.cout+o)*g.outVol : (n*g.cout+o+1)*g.outVol]
						s += g.dwWeightTap(xp, yp, &tp)
					}
					dw[o*g.kVol+t] += s
				}
			}
		})
	}
}

// dwInputTap adds wv times output gradient plane yp, shifted back by tap
// tp, into input gradient plane xp.
func (g *convGeom) dwInputTap(xp, yp []float32, wv float32, tp *dwTap) {
	if tp.owLo >= tp.owHi {
		return
	}
	sd, sh, sw := g.s[0], g.s[1], g.s[2]
	H, W, OH, OW := g.in[1], g.in[2], g.out[1], g.out[2]
	for od := tp.odLo; od < tp.odHi; od++ {
		id := od*sd + tp.offD
		for oh := tp.ohLo; oh < tp.ohHi; oh++ {
			ih := oh*sh + tp.offH
			yr := yp[(od*OH+oh)*OW+tp.owLo : (od*OH+oh)*OW+tp.owHi]
			xr := xp[(id*H+ih)*W : (id*H+ih+1)*W]
			if sw == 1 {
				xs := xr[tp.owLo+tp.offW : tp.owHi+tp.offW]
				xs = xs[:len(yr)]
				for j, v := range yr {
					xs[j] += wv * v
				}
			} else {
				base := tp.owLo*sw + tp.offW
				for j, v := range yr {
					xr[base+j*sw] += wv * v
				}
			}
		}
	}
}

// dwWeightTap returns Σ_p yp[p] · xp[p·s − pad + t·d] over tap tp's valid
// output box.
func (g *convGeom) dwWeightTap(xp, yp []float32, tp *dwTap) float32 {
	if tp.owLo >= tp.owHi {
		return 0
	}
	sd, sh, sw := g.s[0], g.s[1], g.s[2]
	H, W, OH, OW := g.in[1], g.in[2], g.out[1], g.out[2]
	var s float32
	for od := tp.odLo; od < tp.odHi; od++ {
		id := od*sd + tp.offD
		for oh := tp.ohLo; oh < tp.ohHi; oh++ {
			ih := oh*sh + tp.offH
			yr := yp[(od*OH+oh)*OW+tp.owLo : (od*OH+oh)*OW+tp.owHi]
			xr := xp[(id*H+ih)*W : (id*H+ih+1)*W]
			var r float32
			if sw == 1 {
				xs := xr[tp.owLo+tp.offW : tp.owHi+tp.offW]
				xs = xs[:len(yr)]
				for j, v := range yr {
					r += v * xs[j]
				}
			} else {
				base := tp.owLo*sw + tp.offW
				for j, v := range yr {
					r += v * xr[base+j*sw]
				}
			}
			s += r
		}
	}
	return s
}
