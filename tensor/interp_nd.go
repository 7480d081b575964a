package tensor

import "math"

// interpAxis maps each output index o of one spatial axis to taps input
// indices i0[o], i1[o] with weights w0[o], w1[o] (only the first when taps
// is 1).
type interpAxis struct {
	i0, i1 []int
	w0, w1 []float32
	taps   int
}

// interpNearestAxis is PyTorch's nearest_idx: identity for equal sizes,
// o>>1 for doubling, otherwise min(floor(o·(in/out)), in−1) in float32.
func interpNearestAxis(in, out int) interpAxis {
	a := interpAxis{i0: make([]int, out), w0: make([]float32, out), taps: 1}
	scale := float32(in) / float32(out)
	for o := range out {
		switch {
		case out == in:
			a.i0[o] = o
		case out == 2*in:
			a.i0[o] = o >> 1
		default:
			a.i0[o] = min(int(math.Floor(float64(float32(float32(o)*scale)))), in-1)
		}
		a.w0[o] = 1
	}
	return a
}

// interpLinearAxis follows PyTorch's area_pixel_compute_source_index and
// guard_index_and_lambda in float32: the source coordinate is o·(in−1)/(out−1)
// with aligned corners (0 when out is 1), otherwise max(0, (o+0.5)·in/out − 0.5);
// i0 = min(floor(src), in−1), i1 = i0+1 unless i0 is the last index, and the
// weights are 1−λ and λ for λ = clamp(src − i0, 0, 1).
func interpLinearAxis(in, out int, alignCorners bool) interpAxis {
	a := interpAxis{i0: make([]int, out), i1: make([]int, out), w0: make([]float32, out), w1: make([]float32, out), taps: 2}
	var scale float32
	if alignCorners {
		if out > 1 {
			scale = float32(in-1) / float32(out-1)
		}
	} else {
		scale = float32(in) / float32(out)
	}
	for o := range out {
		var src float32
		if alignCorners {
			src = float32(scale * float32(o))
		} else {
			src = float32(float32(scale*float32(float32(o)+0.5)) - 0.5)
			if src < 0 {
				src = 0
			}
		}
		i0 := min(int(math.Floor(float64(src))), in-1)
		lambda := min(max(float32(src-float32(i0)), 0), 1)
		off := 0
		if i0 < in-1 {
			off = 1
		}
		a.i0[o], a.i1[o] = i0, i0+off
		a.w0[o], a.w1[o] = 1-lambda, lambda
	}
	return a
}

// interpGeom is an interpolation of N·C planes, expanded to three spatial
// dimensions as in poolGeom.
type interpGeom struct {
	n, c, nd int
	in, out  [3]int
	axes     [3]interpAxis
}

func newInterpGeom(x *Tensor, size []int, mode InterpMode, alignCorners bool) interpGeom {
	const op = "Interpolate"
	pg := poolInput(op, x)
	if mode != InterpNearest && mode != InterpLinear {
		shapeErr(op, "unknown mode %d for input of shape %v", int(mode), x.shape)
	}
	if mode == InterpNearest && alignCorners {
		shapeErr(op, "align_corners given with nearest mode for input of shape %v; it applies to linear modes only", x.shape)
	}
	out, ok := poolArg(op, "size", x, size, pg.nd, 1)
	if !ok {
		shapeErr(op, "no output size given for input of shape %v", x.shape)
	}
	for i := 3 - pg.nd; i < 3; i++ {
		if out[i] < 1 {
			shapeErr(op, "size %v for input of shape %v: sizes must be positive", size, x.shape)
		}
	}
	if out[0]*out[1]*out[2] > math.MaxInt32 {
		shapeErr(op, "size %v for input of shape %v: output plane exceeds %d elements", size, x.shape, math.MaxInt32)
	}
	g := interpGeom{n: pg.n, c: pg.c, nd: pg.nd, in: pg.in, out: out}
	for i := range 3 {
		if i < 3-g.nd || mode == InterpNearest {
			g.axes[i] = interpNearestAxis(g.in[i], g.out[i])
		} else {
			g.axes[i] = interpLinearAxis(g.in[i], g.out[i], alignCorners)
		}
	}
	return g
}

func (g *interpGeom) outShape() []int {
	return append([]int{g.n, g.c}, g.out[3-g.nd:]...)
}

// tap returns input index and weight t (0 or 1) of output index o on axis a.
func (a *interpAxis) tap(o, t int) (int, float32) {
	if t == 0 {
		return a.i0[o], a.w0[o]
	}
	return a.i1[o], a.w1[o]
}

// nearest reports whether every axis reads a single tap of weight 1, so
// that the interpolation is a gather.
func (g *interpGeom) nearest() bool {
	for i := range g.axes {
		if g.axes[i].taps != 1 {
			return false
		}
	}
	return true
}

// forward computes y[o] = Σ_d w_d·(Σ_h w_h·(Σ_w w_w·x[d,h,w])) over the taps
// of each axis, nested as in PyTorch (innermost axis first), one output row
// at a time. Nearest interpolation copies the selected samples.
func (g *interpGeom) forward(x, y []float32) {
	isz := g.in[0] * g.in[1] * g.in[2]
	osz := g.out[0] * g.out[1] * g.out[2]
	H, W, oW := g.in[1], g.in[2], g.out[2]
	ad, ah, aw := &g.axes[0], &g.axes[1], &g.axes[2]
	nearest := g.nearest()
	ParallelFor(g.n*g.c, poolGrain(osz*8), func(lo, hi int) {
		vh := make([]float32, oW)
		for pl := lo; pl < hi; pl++ {
			src := x[pl*isz : (pl+1)*isz]
			dst := y[pl*osz : (pl+1)*osz]
			for od := range g.out[0] {
				for oh := range g.out[1] {
					out := dst[(od*g.out[1]+oh)*oW : (od*g.out[1]+oh+1)*oW]
					if nearest {
						row := src[(ad.i0[od]*H+ah.i0[oh])*W:]
						for ow, iw := range aw.i0 {
							out[ow] = row[iw]
						}
						continue
					}
					for td := range ad.taps {
						id, wd := ad.tap(od, td)
						for th := range ah.taps {
							ih, wh := ah.tap(oh, th)
							row := src[(id*H+ih)*W : (id*H+ih+1)*W]
							i0, w0 := aw.i0, aw.w0
							for ow := range vh {
								vw := float32(row[i0[ow]] * w0[ow])
								if aw.taps == 2 {
									vw += float32(row[aw.i1[ow]] * aw.w1[ow])
								}
								if th == 0 {
									vh[ow] = float32(vw * wh)
								} else {
									vh[ow] += float32(vw * wh)
								}
							}
						}
						if td == 0 {
							for ow, v := range vh {
								out[ow] = float32(v * wd)
							}
						} else {
							for ow, v := range vh {
								out[ow] += float32(v * wd)
							}
						}
					}
				}
			}
		}
	})
}

// backward adds gy·w_d·w_h·w_w to each input tap of each output.
func (g *interpGeom) backward(gy, gx []float32) {
	isz := g.in[0] * g.in[1] * g.in[2]
	osz := g.out[0] * g.out[1] * g.out[2]
	H, W, oW := g.in[1], g.in[2], g.out[2]
	ad, ah, aw := &g.axes[0], &g.axes[1], &g.axes[2]
	ParallelFor(g.n*g.c, poolGrain(osz*8), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := gy[pl*osz : (pl+1)*osz]
			dst := gx[pl*isz : (pl+1)*isz]
			for od := range g.out[0] {
				for oh := range g.out[1] {
					gr := src[(od*g.out[1]+oh)*oW : (od*g.out[1]+oh+1)*oW]
					for td := range ad.taps {
						id, wd := ad.tap(od, td)
						for th := range ah.taps {
							ih, wh := ah.tap(oh, th)
							row := dst[(id*H+ih)*W : (id*H+ih+1)*W]
							s := float32(wd * wh)
							for ow, v := range gr {
								row[aw.i0[ow]] += float32(s*aw.w0[ow]) * v
								if aw.taps == 2 {
									row[aw.i1[ow]] += float32(s*aw.w1[ow]) * v
								}
							}
						}
					}
				}
			}
		}
	})
}
