package tensor

import "sync"

// convGeom is the validated geometry of one convolution. 1-D and 2-D
// convolutions are stored as 3-D ones with leading spatial dims of size 1
// (kernel 1, stride 1, padding 0, dilation 1), so every kernel has a single
// code path over (D, H, W).
type convGeom struct {
	nsp                  int // spatial dims of the caller's tensors (1–3)
	n, cin, cout, groups int
	cinG, coutG          int // channels per group

	in, k, s, p, d, out [3]int // D, H, W
	inVol, kVol, outVol int    // products of in, k, out
}

// newConvGeom validates Conv's arguments and returns their geometry. It
// panics with a *ShapeError naming the shapes when they are inconsistent.
func newConvGeom(x, w, b *Tensor, o ConvOpts) *convGeom {
	if x == nil || w == nil {
		shapeErr("Conv", "nil input or weight")
	}
	xs, ws := x.shape, w.shape
	if len(xs) < 3 || len(xs) > 5 {
		shapeErr("Conv", "input %v: want N×C×spatial with 1 to 3 spatial dims", xs)
	}
	if len(ws) != len(xs) {
		shapeErr("Conv", "weight %v has %d dims, input %v has %d; want Cout×Cin/groups×kernel with one kernel size per spatial dim", ws, len(ws), xs, len(xs))
	}
	for i, v := range ws {
		if v <= 0 {
			shapeErr("Conv", "weight %v has non-positive size in dim %d", ws, i)
		}
	}
	g := &convGeom{nsp: len(xs) - 2, n: xs[0], cin: xs[1], cout: ws[0], groups: o.Groups}
	if g.groups == 0 {
		g.groups = 1
	}
	if g.groups < 0 {
		shapeErr("Conv", "groups %d must be positive", o.Groups)
	}
	if g.cin%g.groups != 0 {
		shapeErr("Conv", "groups %d does not divide the %d input channels of input %v", g.groups, g.cin, xs)
	}
	if g.cout%g.groups != 0 {
		shapeErr("Conv", "groups %d does not divide the %d output channels of weight %v", g.groups, g.cout, ws)
	}
	if ws[1]*g.groups != g.cin {
		shapeErr("Conv", "input %v has %d channels, weight %v with groups %d expects %d", xs, g.cin, ws, g.groups, ws[1]*g.groups)
	}
	g.cinG, g.coutG = g.cin/g.groups, g.cout/g.groups
	if b != nil && (len(b.shape) != 1 || b.shape[0] != g.cout) {
		shapeErr("Conv", "bias %v for weight %v; want [%d]", b.shape, ws, g.cout)
	}
	stride := convOpt("stride", o.Stride, 1, 1, g.nsp, xs)
	pad := convOpt("padding", o.Padding, 0, 0, g.nsp, xs)
	dil := convOpt("dilation", o.Dilation, 1, 1, g.nsp, xs)
	lead := 3 - g.nsp
	for i := range 3 {
		g.in[i], g.k[i], g.s[i], g.p[i], g.d[i] = 1, 1, 1, 0, 1
		if i >= lead {
			j := i - lead
			g.in[i], g.k[i] = xs[2+j], ws[2+j]
			g.s[i], g.p[i], g.d[i] = stride[j], pad[j], dil[j]
		}
		num := g.in[i] + 2*g.p[i] - g.d[i]*(g.k[i]-1) - 1
		g.out[i] = convFloorDiv(num, g.s[i]) + 1
		if g.out[i] <= 0 {
			shapeErr("Conv", "input %v with weight %v, stride %v, padding %v, dilation %v: output size %d in spatial dim %d is not positive",
				xs, ws, stride, pad, dil, g.out[i], i-lead)
		}
	}
	g.inVol = g.in[0] * g.in[1] * g.in[2]
	g.kVol = g.k[0] * g.k[1] * g.k[2]
	g.outVol = g.out[0] * g.out[1] * g.out[2]
	return g
}

// convOpt expands a per-spatial-dim option (nil, one entry, or one per dim)
// and checks its values are at least lo.
func convOpt(name string, v []int, def, lo, nsp int, xs []int) []int {
	out := make([]int, nsp)
	switch len(v) {
	case 0:
		for i := range out {
			out[i] = def
		}
	case 1:
		for i := range out {
			out[i] = v[0]
		}
	case nsp:
		copy(out, v)
	default:
		shapeErr("Conv", "%s %v has %d entries for the %d spatial dims of input %v; want 1 or %d", name, v, len(v), nsp, xs, nsp)
	}
	for _, e := range out {
		if e < lo {
			shapeErr("Conv", "%s %v for input %v: entries must be at least %d", name, v, xs, lo)
		}
	}
	return out
}

// outShape returns N×Cout×spatial with the caller's number of spatial dims.
func (g *convGeom) outShape() []int {
	s := []int{g.n, g.cout}
	return append(s, g.out[3-g.nsp:]...)
}

// depthwise reports whether each group holds one input channel (and a
// multiplier of output channels), which a direct kernel computes.
func (g *convGeom) depthwise() bool { return g.groups > 1 && g.cinG == 1 }

// pointwise reports whether the convolution is a plain matrix product over
// positions: a 1×1×1 kernel, stride 1 and no padding.
func (g *convGeom) pointwise() bool {
	return g.kVol == 1 && g.s == [3]int{1, 1, 1} && g.p == [3]int{}
}

// kRows is the number of rows of a group's column matrix: Cin/groups·kernel.
func (g *convGeom) kRows() int { return g.cinG * g.kVol }

// Column chunking: Conv aims for column buffers of about convChunkBytes, so
// that im2col's writes are still in cache when the GEMM packs them, but never
// fewer than convMinChunk positions, so that each GEMM call amortises packing
// the weights; ConvColumnLimit caps both.
const (
	convChunkBytes = 4 << 20
	convMinChunk   = 512
)

// chunkLen returns how many output positions to process at once with bufs
// column buffers: at least 1, at most outVol, within ConvColumnLimit.
func (g *convGeom) chunkLen(bufs int) int {
	per := 4 * g.kRows() * max(bufs, 1) // bytes per output position
	c := max(convChunkBytes/per, convMinChunk)
	if c >= 32 {
		c &^= 15 // whole 16-column GEMM tiles
	}
	c = min(c, ConvColumnLimit/per)
	return min(max(c, 1), g.outVol)
}

// tapRange returns the output indices [lo, hi) along dim i for which kernel
// offset t reads inside the input, and the input offset off such that the
// input index is o·s + off.
func (g *convGeom) tapRange(i, t int) (lo, hi, off int) {
	off = t*g.d[i] - g.p[i]
	lo = max(0, convCeilDiv(-off, g.s[i]))
	hi = min(g.out[i], convFloorDiv(g.in[i]-1-off, g.s[i])+1)
	return lo, max(hi, lo), off
}

// tap splits a flat kernel index into its (kd, kh, kw) offsets.
func (g *convGeom) tap(t int) (kd, kh, kw int) {
	return t / (g.k[1] * g.k[2]), t / g.k[2] % g.k[1], t % g.k[2]
}

// addBias adds b[o] to every position of output channel o.
func (g *convGeom) addBias(y, b []float32) {
	ParallelFor(g.n*g.cout, convGrain(g.outVol), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			bv := b[pl%g.cout]
			row := y[pl*g.outVol : (pl+1)*g.outVol]
			for i := range row {
				row[i] += bv
			}
		}
	})
}

// biasGrad returns db[o] = Σ_{n, p} dy[n, o, p].
func (g *convGeom) biasGrad(dy []float32) []float32 {
	db := make([]float32, g.cout)
	ParallelFor(g.cout, convGrain(g.n*g.outVol), func(lo, hi int) {
		for o := lo; o < hi; o++ {
			var s float64
			for n := range g.n {
				var r float32
				for _, v := range dy[(n*g.cout+o)*g.outVol : (n*g.cout+o+1)*g.outVol] {
					r += v
				}
				s += float64(r)
			}
			db[o] = float32(s)
		}
	})
	return db
}

// convGrain returns a ParallelFor grain that gives each goroutine at least
// about 32K elements of work when one item costs cost elements.
func convGrain(cost int) int { return max(1, (32<<10)/max(cost, 1)) }

func convFloorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func convCeilDiv(a, b int) int { return -convFloorDiv(-a, b) }

// convBufs recycles column buffers between Conv calls.
var convBufs sync.Pool

// getConvBuf returns a buffer of n float32 with unspecified contents. New
// buffers hold at least convChunkBytes, the size chunkLen aims for, so that
// one pooled buffer serves the convolutions of a whole network instead of
// each larger one discarding it (which, over a forward pass, would leave
// hundreds of MB of garbage for the collector).
func getConvBuf(n int) *[]float32 {
	if p, ok := convBufs.Get().(*[]float32); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := make([]float32, n, max(n, convChunkBytes/4))
	return &s
}

func putConvBuf(p *[]float32) { convBufs.Put(p) }
