package tensor

// ConvOpts configures Conv. Each slice has one entry per spatial dimension,
// or a single entry used for all; nil means stride 1, padding 0, dilation 1.
type ConvOpts struct {
	Stride   []int
	Padding  []int
	Dilation []int
	Groups   int // 0 or 1: dense convolution; == in channels == out channels/k: depthwise
}

// ConvColumnLimit is the most bytes of im2col column buffers that one Conv
// forward or backward pass holds at once. Output positions are processed in
// chunks (of a few MB when that fits, at least one position), so a
// convolution over a large volume never materialises its whole
// (Cin/groups·kernel)×positions column matrix. Change it only while no Conv
// is running.
var ConvColumnLimit = 64 << 20

// Conv returns the N-D cross-correlation of x (N×Cin×spatial…, 1–3 spatial
// dims) with w (Cout×Cin/groups×kernel…) plus b (Cout, or nil), as
// torch.nn.functional.conv1d/2d/3d:
//
//	y[n, o, p] = b[o] + Σ_{c, t} w[o, c, t] · x[n, g·Cin/groups + c, p·stride − padding + t·dilation]
//
// where g = o / (Cout/groups), t runs over the kernel offsets and positions
// outside x read as zero. Each output spatial size is
// floor((in + 2·padding − dilation·(kernel−1) − 1)/stride) + 1.
//
// It panics with a *ShapeError when the shapes or options are inconsistent
// (channel counts, group divisibility, option lengths or values, a
// non-positive output size). Gradients flow to x, w and b as they require.
func Conv(x, w, b *Tensor, o ConvOpts) *Tensor {
	g := newConvGeom(x, w, b, o)
	y := Zeros(g.outShape()...)
	addMACs(len(y.data) * (len(w.data) / w.shape[0])) // per output: Cin/groups · prod(kernel)
	if g.depthwise() {
		g.depthwiseForward(x.data, w.data, y.data, nil)
	} else {
		g.denseForward(x.data, w.data, y.data, nil)
	}
	if b != nil {
		g.addBias(y.data, b.data)
	}
	return record(y, func(gy *Tensor) {
		var dx, dw []float32
		if x.requiresGrad {
			dx = make([]float32, len(x.data))
		}
		if w.requiresGrad {
			dw = make([]float32, len(w.data))
		}
		if dx != nil || dw != nil {
			if g.depthwise() {
				g.depthwiseBackward(x.data, w.data, gy.data, dx, dw)
			} else {
				g.denseBackward(x.data, w.data, gy.data, dx, dw)
			}
		}
		if dx != nil {
			accumulateOwned(x, dx)
		}
		if dw != nil {
			accumulateOwned(w, dw)
		}
		if b != nil && b.requiresGrad {
			accumulateOwned(b, g.biasGrad(gy.data))
		}
	}, x, w, b)
}

// accumulateOwned adds gradient values g (p's shape, freshly allocated and
// not referenced elsewhere) into p's gradient, adopting g as the gradient
// when p has none yet instead of copying it as accumulate does.
func accumulateOwned(p *Tensor, g []float32) {
	if p.requiresGrad && p.grad == nil {
		p.grad = &Tensor{shape: p.shape, data: g}
		return
	}
	accumulate(p, &Tensor{shape: p.shape, data: g})
}
