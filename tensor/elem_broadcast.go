package tensor

import "fmt"

// elemGrain is the number of elements below which elementwise kernels run
// on a single goroutine, and the chunk size they are split into above it.
const elemGrain = 32 << 10

// binOp selects the arithmetic of a broadcasting binary kernel.
type binOp int

const (
	opAdd binOp = iota
	opSub
	opMul
	opDiv
	opSecond // out = y (x ignored): broadcast copy
)

func (op binOp) String() string {
	return [...]string{"Add", "Sub", "Mul", "Div", "Expand"}[op]
}

// broadcastShape returns the NumPy broadcast of shapes a and b, or panics
// with a *ShapeError naming both.
func broadcastShape(op string, a, b []int) []int {
	n := max(len(a), len(b))
	out := make([]int, n)
	for i := 0; i < n; i++ {
		da, db := 1, 1
		if j := i - (n - len(a)); j >= 0 {
			da = a[j]
		}
		if j := i - (n - len(b)); j >= 0 {
			db = b[j]
		}
		switch {
		case da == db, db == 1:
			out[i] = da
		case da == 1:
			out[i] = db
		default:
			shapeErr(op, "shapes %v and %v do not broadcast (dim %d of the result: %d vs %d)", a, b, i, da, db)
		}
	}
	return out
}

// bplan is a broadcasting iteration over an output shape with two inputs,
// with size-1 dimensions removed and adjacent dimensions merged wherever
// both inputs allow it. The last (inner) dimension is walked by the row
// kernels with input strides ia, ib ∈ {0, 1}.
type bplan struct {
	dims   []int // collapsed output dims, innermost last; at least one
	sa, sb []int // strides of a and b per collapsed dim (0 where broadcast)
	inner  int   // dims[len-1]
	rows   int   // product of dims[:len-1]
}

// newBPlan prepares the iteration of out (already the broadcast of aShape
// and bShape) over inputs of shapes aShape and bShape.
func newBPlan(out, aShape, bShape []int) *bplan {
	n := len(out)
	stA := alignedStrides(aShape, out)
	stB := alignedStrides(bShape, out)
	p := &bplan{}
	for i := 0; i < n; i++ {
		if out[i] == 1 {
			continue
		}
		k := len(p.dims) - 1
		if k >= 0 && p.sa[k] == stA[i]*out[i] && p.sb[k] == stB[i]*out[i] {
			p.dims[k] *= out[i]
			p.sa[k], p.sb[k] = stA[i], stB[i]
			continue
		}
		p.dims = append(p.dims, out[i])
		p.sa = append(p.sa, stA[i])
		p.sb = append(p.sb, stB[i])
	}
	if len(p.dims) == 0 {
		p.dims, p.sa, p.sb = []int{1}, []int{0}, []int{0}
	}
	p.inner = p.dims[len(p.dims)-1]
	p.rows = 1
	for _, d := range p.dims[:len(p.dims)-1] {
		p.rows *= d
	}
	return p
}

// alignedStrides returns, for each dim of out, the row-major stride of
// shape (right-aligned with out), or 0 where shape broadcasts.
func alignedStrides(shape, out []int) []int {
	st := make([]int, len(out))
	off := len(out) - len(shape)
	acc := 1
	for i := len(shape) - 1; i >= 0; i-- {
		if shape[i] != 1 {
			st[i+off] = acc
		}
		acc *= shape[i]
	}
	return st
}

// run computes dst = op(a, b) over the plan, in parallel over rows.
func (p *bplan) run(op binOp, dst, a, b []float32) {
	ia, ib := p.sa[len(p.sa)-1], p.sb[len(p.sb)-1]
	outer := p.dims[:len(p.dims)-1]
	grain := max(1, elemGrain/max(p.inner, 1))
	ParallelFor(p.rows, grain, func(lo, hi int) {
		idx := make([]int, len(outer))
		oa, ob := 0, 0
		r := lo
		for k := len(outer) - 1; k >= 0; k-- {
			idx[k] = r % outer[k]
			r /= outer[k]
			oa += idx[k] * p.sa[k]
			ob += idx[k] * p.sb[k]
		}
		for r := lo; r < hi; r++ {
			binRow(op, dst[r*p.inner:(r+1)*p.inner], a[oa:], b[ob:], ia, ib)
			for k := len(outer) - 1; k >= 0; k-- {
				idx[k]++
				oa += p.sa[k]
				ob += p.sb[k]
				if idx[k] < outer[k] {
					break
				}
				oa -= idx[k] * p.sa[k]
				ob -= idx[k] * p.sb[k]
				idx[k] = 0
			}
		}
	})
}

// binRow computes d[i] = op(x[i*ix], y[i*iy]) for ix, iy ∈ {0, 1}.
func binRow(op binOp, d, x, y []float32, ix, iy int) {
	n := len(d)
	switch {
	case ix == 1 && iy == 1:
		x, y = x[:n], y[:n]
		switch op {
		case opAdd:
			for i := range d {
				d[i] = x[i] + y[i]
			}
		case opSub:
			for i := range d {
				d[i] = x[i] - y[i]
			}
		case opMul:
			for i := range d {
				d[i] = x[i] * y[i]
			}
		case opDiv:
			for i := range d {
				d[i] = x[i] / y[i]
			}
		case opSecond:
			copy(d, y)
		}
	case ix == 1:
		x = x[:n]
		s := y[0]
		switch op {
		case opAdd:
			for i := range d {
				d[i] = x[i] + s
			}
		case opSub:
			for i := range d {
				d[i] = x[i] - s
			}
		case opMul:
			for i := range d {
				d[i] = x[i] * s
			}
		case opDiv:
			for i := range d {
				d[i] = x[i] / s
			}
		case opSecond:
			fill(d, s)
		}
	case iy == 1:
		y = y[:n]
		s := x[0]
		switch op {
		case opAdd:
			for i := range d {
				d[i] = s + y[i]
			}
		case opSub:
			for i := range d {
				d[i] = s - y[i]
			}
		case opMul:
			for i := range d {
				d[i] = s * y[i]
			}
		case opDiv:
			for i := range d {
				d[i] = s / y[i]
			}
		case opSecond:
			copy(d, y)
		}
	default:
		var v float32
		switch op {
		case opAdd:
			v = x[0] + y[0]
		case opSub:
			v = x[0] - y[0]
		case opMul:
			v = x[0] * y[0]
		case opDiv:
			v = x[0] / y[0]
		case opSecond:
			v = y[0]
		}
		fill(d, v)
	}
}

func fill(d []float32, v float32) {
	for i := range d {
		d[i] = v
	}
}

// binary returns op(a, b) with broadcasting, without recording a gradient.
func binary(op binOp, a, b *Tensor) *Tensor {
	shape := broadcastShape(op.String(), a.shape, b.shape)
	out := Zeros(shape...)
	if len(out.data) == 0 {
		return out
	}
	if SameShape(a.shape, b.shape) {
		ParallelFor(len(out.data), elemGrain, func(lo, hi int) {
			binRow(op, out.data[lo:hi], a.data[lo:hi], b.data[lo:hi], 1, 1)
		})
		return out
	}
	newBPlan(shape, a.shape, b.shape).run(op, out.data, a.data, b.data)
	return out
}

// expand broadcasts g to shape (g's shape must broadcast to exactly shape),
// without recording a gradient.
func expand(g *Tensor, shape []int) *Tensor {
	if SameShape(g.shape, shape) {
		return g.Clone()
	}
	bs := broadcastShape("Expand", shape, g.shape)
	if !SameShape(bs, shape) {
		shapeErr("Expand", "cannot expand shape %v to %v", g.shape, shape)
	}
	out := Zeros(shape...)
	if len(out.data) == 0 {
		return out
	}
	dummy := []float32{0}
	newBPlan(shape, nil, g.shape).run(opSecond, out.data, dummy, g.data)
	return out
}

// sumTo reduces g (a broadcast result) back to shape by summing over the
// broadcast dimensions. It returns g itself when the shapes already match.
func sumTo(g *Tensor, shape []int) *Tensor {
	if SameShape(g.shape, shape) {
		return g
	}
	lead := len(g.shape) - len(shape)
	if lead < 0 {
		panic(&ShapeError{Op: "backward", Msg: fmt.Sprintf("gradient of shape %v for input of shape %v", g.shape, shape)})
	}
	red := make([]bool, len(g.shape))
	for i := range g.shape {
		if i < lead {
			red[i] = true
			continue
		}
		if s := shape[i-lead]; s == 1 && g.shape[i] != 1 {
			red[i] = true
		} else if s != g.shape[i] {
			shapeErr("backward", "gradient of shape %v does not reduce to input shape %v", g.shape, shape)
		}
	}
	out := reduceSum(g.data, g.shape, red, 1)
	return &Tensor{shape: append([]int(nil), shape...), data: out}
}
