package tensor

// Activation selects the pointwise nonlinearity of a fused convolution.
type Activation int

const (
	// ActNone is the identity.
	ActNone Activation = iota
	// ActReLU is max(v, 0).
	ActReLU
	// ActReLU6 is min(max(v, 0), 6).
	ActReLU6
)

// ConvEpilogue is the per-output pass that ConvFused applies to a
// convolution's result while it is still in cache: for output channel o,
//
//	y[n, o, p] = Act(Scale[o] · conv(x, w)[n, o, p] + Shift[o] + Residual[n, o, p])
//
// A nil Scale means 1, a nil Shift 0 and a nil Residual 0. An evaluation-mode
// BatchNorm after the convolution (and the convolution's bias b) fold into
// Scale = γ/√(σ² + ε) and Shift = β − μ·Scale + b·Scale.
type ConvEpilogue struct {
	Scale, Shift []float32
	Residual     *Tensor
	Act          Activation
}

// ConvFused returns Act(Scale·Conv(x, w, nil, o) + Shift + Residual) (see
// ConvEpilogue) in one pass: the convolution as Conv's, with the epilogue
// applied to each block of output positions as soon as it is computed.
// Its result is Conv's followed by the same elementwise ops up to float32
// rounding.
//
// It is an inference kernel and records no gradient: it panics with a
// *ShapeError when x, w or the residual requires gradients, when Scale or
// Shift does not have one entry per output channel, or when the residual's
// shape is not the output's (and for the shape errors of Conv).
func ConvFused(x, w *Tensor, o ConvOpts, e ConvEpilogue) *Tensor {
	g := newConvGeom(x, w, nil, o)
	outShape := g.outShape()
	switch {
	case x.requiresGrad || w.requiresGrad || (e.Residual != nil && e.Residual.requiresGrad):
		shapeErr("ConvFused", "input %v, weight %v or residual requires gradients; ConvFused is for inference (use Conv)", x.shape, w.shape)
	case e.Scale != nil && len(e.Scale) != g.cout:
		shapeErr("ConvFused", "%d scales for weight %v; want %d", len(e.Scale), w.shape, g.cout)
	case e.Shift != nil && len(e.Shift) != g.cout:
		shapeErr("ConvFused", "%d shifts for weight %v; want %d", len(e.Shift), w.shape, g.cout)
	case e.Residual != nil && !SameShape(e.Residual.shape, outShape):
		shapeErr("ConvFused", "residual %v for output %v", e.Residual.shape, outShape)
	case e.Act < ActNone || e.Act > ActReLU6:
		shapeErr("ConvFused", "unknown activation %d", e.Act)
	}
	y := Zeros(outShape...)
	addMACs(len(y.data) * (len(w.data) / w.shape[0]))
	var res []float32
	if e.Residual != nil {
		res = e.Residual.data
	}
	// row applies the epilogue to positions [l0, l1) of output plane pl.
	row := func(pl, l0, l1 int) {
		o := pl % g.cout
		scale, shift := float32(1), float32(0)
		if e.Scale != nil {
			scale = e.Scale[o]
		}
		if e.Shift != nil {
			shift = e.Shift[o]
		}
		off := pl*g.outVol + l0
		var r []float32
		if res != nil {
			r = res[off : off+l1-l0]
		}
		epilogueRow(y.data[off:off+l1-l0], r, scale, shift, e.Act)
	}
	if g.depthwise() {
		g.depthwiseForward(x.data, w.data, y.data, func(pl int) { row(pl, 0, g.outVol) })
		return y
	}
	g.denseForward(x.data, w.data, y.data, func(n, grp, l0, l1 int) {
		p0 := n*g.cout + grp*g.coutG
		ParallelFor(g.coutG, convGrain(l1-l0), func(lo, hi int) {
			for pl := p0 + lo; pl < p0+hi; pl++ {
				row(pl, l0, l1)
			}
		})
	})
	return y
}

// epilogueRow sets y[i] = act(scale·y[i] + shift + r[i]) (r nil: 0).
func epilogueRow(y, r []float32, scale, shift float32, act Activation) {
	if r != nil {
		r = r[:len(y)]
		for i, v := range y {
			y[i] = scale*v + shift + r[i]
		}
	} else if scale != 1 || shift != 0 {
		for i, v := range y {
			y[i] = scale*v + shift
		}
	}
	switch act {
	case ActReLU:
		for i, v := range y {
			if v < 0 {
				y[i] = 0
			}
		}
	case ActReLU6:
		for i, v := range y {
			y[i] = min(max(v, 0), 6)
		}
	}
}
