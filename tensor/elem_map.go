package tensor

import "math"

// mapUnary returns a tensor of a's shape whose storage f fills from a's,
// chunk by chunk (f(dst, src) with equal lengths), in parallel.
func mapUnary(a *Tensor, f func(d, x []float32)) *Tensor {
	out := Zeros(a.shape...)
	ParallelFor(len(a.data), elemGrain, func(lo, hi int) { f(out.data[lo:hi], a.data[lo:hi]) })
	return out
}

// mapGrad returns a tensor of g's shape filled chunk by chunk by
// f(dst, g, x, y), where x and y are the input and output of the op (same
// length as g), in parallel.
func mapGrad(g, x, y *Tensor, f func(d, g, x, y []float32)) *Tensor {
	out := Zeros(g.shape...)
	ParallelFor(len(g.data), elemGrain, func(lo, hi int) {
		f(out.data[lo:hi], g.data[lo:hi], x.data[lo:hi], y.data[lo:hi])
	})
	return out
}

// unaryOp returns f applied elementwise to a, recording the gradient
// df(dst, g, x, y) (x the input, y the output) when a requires it.
func unaryOp(a *Tensor, f func(d, x []float32), df func(d, g, x, y []float32)) *Tensor {
	out := mapUnary(a, f)
	return record(out, func(g *Tensor) { accumulate(a, mapGrad(g, a, out, df)) }, a)
}

// sigmoid32 returns 1/(1+e^-x) without overflow for either sign of x.
func sigmoid32(x float32) float32 {
	if x >= 0 {
		return float32(1 / (1 + math.Exp(-float64(x))))
	}
	e := math.Exp(float64(x))
	return float32(e / (1 + e))
}

// scaleInPlace multiplies every element of t by s.
func scaleInPlace(t *Tensor, s float32) {
	ParallelFor(len(t.data), elemGrain, func(lo, hi int) {
		d := t.data[lo:hi]
		for i := range d {
			d[i] *= s
		}
	})
}

// view returns a tensor with the given shape sharing data, outside any graph.
func view(data []float32, shape []int) *Tensor {
	return &Tensor{shape: shape, data: data}
}

// posMask returns all ones when v > 0 (including +NaN) and 0 otherwise
// (including ±0), without a data-dependent branch: for the bit pattern u of
// v as int32, v > 0 exactly when u > 0, i.e. when both -u and ^u are
// negative.
func posMask(v float32) uint32 {
	u := int32(math.Float32bits(v))
	return uint32((-u & ^u) >> 31)
}
