package tensor

// Elementwise arithmetic with NumPy/PyTorch broadcasting, activations,
// reductions, softmax, matrix products and shape manipulation.

import (
	"math"

	"github.com/ctlens/ctlens/tensor/gemm"
)

// Add returns a + b with broadcasting: shapes are aligned on their last
// dimensions and each pair of sizes must be equal or contain a 1; the result
// has the larger size in each dimension.
func Add(a, b *Tensor) *Tensor {
	out := binary(opAdd, a, b)
	return record(out, func(g *Tensor) {
		if a.requiresGrad {
			accumulate(a, sumTo(g, a.shape))
		}
		if b.requiresGrad {
			accumulate(b, sumTo(g, b.shape))
		}
	}, a, b)
}

// Sub returns a - b with broadcasting (see Add).
func Sub(a, b *Tensor) *Tensor {
	out := binary(opSub, a, b)
	return record(out, func(g *Tensor) {
		if a.requiresGrad {
			accumulate(a, sumTo(g, a.shape))
		}
		if b.requiresGrad {
			gb := sumTo(g, b.shape).Clone()
			scaleInPlace(gb, -1)
			accumulate(b, gb)
		}
	}, a, b)
}

// Mul returns a * b elementwise with broadcasting (see Add).
func Mul(a, b *Tensor) *Tensor {
	out := binary(opMul, a, b)
	return record(out, func(g *Tensor) {
		if a.requiresGrad {
			accumulate(a, sumTo(binary(opMul, g, b), a.shape))
		}
		if b.requiresGrad {
			accumulate(b, sumTo(binary(opMul, g, a), b.shape))
		}
	}, a, b)
}

// Div returns a / b elementwise with broadcasting (see Add). The gradients
// are g/b for a and -g·a/b² for b.
func Div(a, b *Tensor) *Tensor {
	out := binary(opDiv, a, b)
	return record(out, func(g *Tensor) {
		if a.requiresGrad {
			accumulate(a, sumTo(binary(opDiv, g, b), a.shape))
		}
		if b.requiresGrad {
			// -g·(a/b)/b = -g·out/b
			gb := binary(opDiv, binary(opMul, g, out), b)
			gb = sumTo(gb, b.shape).Clone()
			scaleInPlace(gb, -1)
			accumulate(b, gb)
		}
	}, a, b)
}

// AddScalar returns a + s.
func AddScalar(a *Tensor, s float32) *Tensor {
	out := mapUnary(a, func(d, x []float32) {
		for i, v := range x {
			d[i] = v + s
		}
	})
	return record(out, func(g *Tensor) { accumulate(a, g) }, a)
}

// MulScalar returns a * s.
func MulScalar(a *Tensor, s float32) *Tensor {
	out := mapUnary(a, func(d, x []float32) {
		for i, v := range x {
			d[i] = v * s
		}
	})
	return record(out, func(g *Tensor) {
		ga := g.Clone()
		scaleInPlace(ga, s)
		accumulate(a, ga)
	}, a)
}

// Neg returns -a.
func Neg(a *Tensor) *Tensor { return MulScalar(a, -1) }

// Exp returns e^a; its derivative is e^a.
func Exp(a *Tensor) *Tensor {
	return unaryOp(a, func(d, x []float32) {
		for i, v := range x {
			d[i] = float32(math.Exp(float64(v)))
		}
	}, func(d, g, _, y []float32) {
		for i := range d {
			d[i] = g[i] * y[i]
		}
	})
}

// Log returns the natural logarithm of a (NaN for a < 0, -Inf at 0); its
// derivative is 1/a.
func Log(a *Tensor) *Tensor {
	return unaryOp(a, func(d, x []float32) {
		for i, v := range x {
			d[i] = float32(math.Log(float64(v)))
		}
	}, func(d, g, x, _ []float32) {
		for i := range d {
			d[i] = g[i] / x[i]
		}
	})
}

// Sqrt returns √a; its derivative is 1/(2√a).
func Sqrt(a *Tensor) *Tensor {
	return unaryOp(a, func(d, x []float32) {
		for i, v := range x {
			d[i] = float32(math.Sqrt(float64(v)))
		}
	}, func(d, g, _, y []float32) {
		for i := range d {
			d[i] = g[i] / (2 * y[i])
		}
	})
}

// Pow returns a^p for a constant exponent p; its derivative is p·a^(p-1)
// (0 everywhere when p is 0).
func Pow(a *Tensor, p float32) *Tensor {
	pp := float64(p)
	return unaryOp(a, func(d, x []float32) {
		switch p {
		case 2:
			for i, v := range x {
				d[i] = v * v
			}
		case 1:
			copy(d, x)
		default:
			for i, v := range x {
				d[i] = float32(math.Pow(float64(v), pp))
			}
		}
	}, func(d, g, x, _ []float32) {
		switch p {
		case 0:
			clear(d)
		case 2:
			for i := range d {
				d[i] = 2 * x[i] * g[i]
			}
		case 1:
			copy(d, g)
		default:
			for i := range d {
				d[i] = g[i] * float32(pp*math.Pow(float64(x[i]), pp-1))
			}
		}
	})
}

// Abs returns |a|; its derivative is sign(a), 0 at 0.
func Abs(a *Tensor) *Tensor {
	return unaryOp(a, func(d, x []float32) {
		for i, v := range x {
			d[i] = float32(math.Abs(float64(v)))
		}
	}, func(d, g, x, _ []float32) {
		for i, v := range x {
			switch {
			case v > 0:
				d[i] = g[i]
			case v < 0:
				d[i] = -g[i]
			default:
				d[i] = 0
			}
		}
	})
}

// ReLU returns max(a, 0); its derivative is 1 for a > 0 and 0 otherwise
// (0 at 0, as PyTorch).
func ReLU(a *Tensor) *Tensor {
	return unaryOp(a, func(d, x []float32) {
		for i, v := range x {
			d[i] = max(v, 0) // branch-free; NaN propagates
		}
	}, func(d, g, x, _ []float32) {
		for i, v := range x {
			d[i] = math.Float32frombits(math.Float32bits(g[i]) & posMask(v))
		}
	})
}

// ReLU6 returns min(max(a, 0), 6); its derivative is 1 on (0, 6) and 0
// elsewhere.
func ReLU6(a *Tensor) *Tensor {
	const bits6 = 0x40c00000 // math.Float32bits(6)
	return unaryOp(a, func(d, x []float32) {
		for i, v := range x {
			d[i] = min(max(v, 0), 6)
		}
	}, func(d, g, x, _ []float32) {
		for i, v := range x {
			// Positive floats order like their bit patterns: v < 6 ⇔ bits < bits6.
			below6 := uint32((int32(math.Float32bits(v)) - bits6) >> 31)
			d[i] = math.Float32frombits(math.Float32bits(g[i]) & posMask(v) & below6)
		}
	})
}

// GELU returns a·Φ(a) with the exact Gaussian CDF Φ(a) = (1+erf(a/√2))/2,
// as PyTorch's default; its derivative is Φ(a) + a·φ(a) with φ the Gaussian
// density.
func GELU(a *Tensor) *Tensor {
	return unaryOp(a, func(d, x []float32) {
		for i, v := range x {
			xv := float64(v)
			d[i] = float32(0.5 * xv * (1 + math.Erf(xv/math.Sqrt2)))
		}
	}, func(d, g, x, _ []float32) {
		const invSqrt2Pi = 0.3989422804014327
		for i, v := range x {
			xv := float64(v)
			cdf := 0.5 * (1 + math.Erf(xv/math.Sqrt2))
			pdf := invSqrt2Pi * math.Exp(-0.5*xv*xv)
			d[i] = g[i] * float32(cdf+xv*pdf)
		}
	})
}

// SiLU returns a·σ(a) with σ the logistic sigmoid; its derivative is
// σ(a)·(1 + a·(1-σ(a))).
func SiLU(a *Tensor) *Tensor {
	return unaryOp(a, func(d, x []float32) {
		for i, v := range x {
			d[i] = v * sigmoid32(v)
		}
	}, func(d, g, x, _ []float32) {
		for i, v := range x {
			s := sigmoid32(v)
			d[i] = g[i] * s * (1 + v*(1-s))
		}
	})
}

// Sigmoid returns σ(a) = 1 / (1 + e^-a); its derivative is σ(a)·(1-σ(a)).
func Sigmoid(a *Tensor) *Tensor {
	return unaryOp(a, func(d, x []float32) {
		for i, v := range x {
			d[i] = sigmoid32(v)
		}
	}, func(d, g, _, y []float32) {
		for i, s := range y {
			d[i] = g[i] * s * (1 - s)
		}
	})
}

// Tanh returns tanh(a); its derivative is 1 - tanh²(a).
func Tanh(a *Tensor) *Tensor {
	return unaryOp(a, func(d, x []float32) {
		for i, v := range x {
			d[i] = float32(math.Tanh(float64(v)))
		}
	}, func(d, g, _, y []float32) {
		for i, t := range y {
			d[i] = g[i] * (1 - t*t)
		}
	})
}

// reduceAxes validates axes for a (negative counting from the end; empty
// meaning all) and returns the reduce flags, the result shape with and
// without the reduced dims kept as 1, and the number of reduced elements.
func reduceAxes(op string, a *Tensor, axes []int) (red []bool, keep, drop []int, count int) {
	red = make([]bool, len(a.shape))
	if len(axes) == 0 {
		for i := range red {
			red[i] = true
		}
	}
	for _, ax := range axes {
		i := normAxis(op, ax, a.shape)
		if red[i] {
			shapeErr(op, "axis %d repeated in %v for shape %v", ax, axes, a.shape)
		}
		red[i] = true
	}
	count = 1
	keep = make([]int, len(a.shape))
	drop = []int{}
	for i, d := range a.shape {
		if red[i] {
			keep[i] = 1
			count *= d
		} else {
			keep[i] = d
			drop = append(drop, d)
		}
	}
	return red, keep, drop, count
}

// Sum returns Σ a over axes (negative axes count from the end; none means
// all), keeping reduced axes as size 1 when keepDim. Sums accumulate in
// float64.
func Sum(a *Tensor, axes []int, keepDim bool) *Tensor {
	return sumMean("Sum", a, axes, keepDim, false)
}

// Mean returns the average of a over axes, with axes and keepDim as in Sum
// (NaN when the reduced axes are empty).
func Mean(a *Tensor, axes []int, keepDim bool) *Tensor {
	return sumMean("Mean", a, axes, keepDim, true)
}

func sumMean(op string, a *Tensor, axes []int, keepDim, mean bool) *Tensor {
	red, keep, drop, count := reduceAxes(op, a, axes)
	scale := 1.0
	if mean {
		scale = 1 / float64(count)
	}
	data := reduceSum(a.data, a.shape, red, scale)
	if mean && count == 0 {
		fill(data, float32(math.NaN()))
	}
	shape := drop
	if keepDim {
		shape = keep
	}
	out := &Tensor{shape: shape, data: data}
	return record(out, func(g *Tensor) {
		ga := expand(view(g.data, keep), a.shape)
		if mean {
			scaleInPlace(ga, float32(scale))
		}
		accumulate(a, ga)
	}, a)
}

// SumAll returns Σ a over all elements as a 0-dimensional tensor.
func SumAll(a *Tensor) *Tensor { return Sum(a, nil, false) }

// MeanAll returns the mean of all elements as a 0-dimensional tensor.
func MeanAll(a *Tensor) *Tensor { return Mean(a, nil, false) }

// argmaxAlong returns the index along the middle axis of the maximum of
// each (outer, inner) position of x viewed as outer × n × inner (the first
// maximum; NaN counts as the maximum), and the maxima.
func argmaxAlong(x []float32, outer, n, inner int) ([]int32, []float32) {
	idx := make([]int32, outer*inner)
	val := make([]float32, outer*inner)
	axisJobs(outer, n, inner, func(o, i0, i1 int) {
		bv := val[o*inner+i0 : o*inner+i1]
		bi := idx[o*inner+i0 : o*inner+i1]
		copy(bv, x[o*n*inner+i0:o*n*inner+i1])
		for k := 1; k < n; k++ {
			row := x[(o*n+k)*inner+i0 : (o*n+k)*inner+i1]
			for j, v := range row {
				if b := bv[j]; v > b || (v != v && b == b) {
					bv[j] = v
					bi[j] = int32(k)
				}
			}
		}
	})
	return idx, val
}

// Max returns the maxima of a along axis (negative counts from the end),
// keeping the axis as size 1 when keepDim. The gradient flows to the first
// maximal element of each reduced line.
func Max(a *Tensor, axis int, keepDim bool) *Tensor {
	ax := normAxis("Max", axis, a.shape)
	outer, n, inner := axisSplit(a.shape, ax)
	if n == 0 {
		shapeErr("Max", "axis %d of shape %v is empty", axis, a.shape)
	}
	idx, val := argmaxAlong(a.data, outer, n, inner)
	shape := append([]int(nil), a.shape...)
	if keepDim {
		shape[ax] = 1
	} else {
		shape = append(shape[:ax], shape[ax+1:]...)
	}
	out := &Tensor{shape: shape, data: val}
	return record(out, func(g *Tensor) {
		ga := Zeros(a.shape...)
		for o := 0; o < outer; o++ {
			for i := 0; i < inner; i++ {
				j := o*inner + i
				ga.data[(o*n+int(idx[j]))*inner+i] = g.data[j]
			}
		}
		accumulate(a, ga)
	}, a)
}

// Argmax returns, for each position of the other axes in row-major order,
// the index of the first maximum along axis (no gradient).
func Argmax(a *Tensor, axis int) []int {
	ax := normAxis("Argmax", axis, a.shape)
	outer, n, inner := axisSplit(a.shape, ax)
	if n == 0 {
		shapeErr("Argmax", "axis %d of shape %v is empty", axis, a.shape)
	}
	idx, _ := argmaxAlong(a.data, outer, n, inner)
	res := make([]int, len(idx))
	for i, v := range idx {
		res[i] = int(v)
	}
	return res
}

// softmaxBlock computes softmax (or log-softmax) of x into y along the
// middle axis for the block o, [i0, i1) of an outer × n × inner layout,
// subtracting the maximum first for stability.
func softmaxBlock(y, x []float32, o, n, inner, i0, i1 int, logOut bool) {
	w := i1 - i0
	mx := make([]float32, w)
	sum := make([]float64, w)
	base := o * n * inner
	copy(mx, x[base+i0:base+i1])
	for k := 1; k < n; k++ {
		row := x[base+k*inner+i0 : base+k*inner+i1]
		for j, v := range row {
			mx[j] = max(mx[j], v)
		}
	}
	for k := 0; k < n; k++ {
		off := base + k*inner
		row, dst := x[off+i0:off+i1], y[off+i0:off+i1]
		for j, v := range row {
			e := math.Exp(float64(v - mx[j]))
			sum[j] += e
			if !logOut {
				dst[j] = float32(e)
			}
		}
	}
	for j := range sum {
		if logOut {
			sum[j] = math.Log(sum[j])
		} else {
			sum[j] = 1 / sum[j]
		}
	}
	for k := 0; k < n; k++ {
		off := base + k*inner
		row, dst := x[off+i0:off+i1], y[off+i0:off+i1]
		for j := range dst {
			if logOut {
				dst[j] = float32(float64(row[j]-mx[j]) - sum[j])
			} else {
				dst[j] = float32(float64(dst[j]) * sum[j])
			}
		}
	}
}

// Softmax returns exp(a) / Σ exp(a) along axis (negative counts from the
// end), computed stably by subtracting the maximum. Its backward is
// y·(g - Σ g·y).
func Softmax(a *Tensor, axis int) *Tensor { return softmax("Softmax", a, axis, false) }

// LogSoftmax returns a - log Σ exp(a) along axis (negative counts from the
// end), computed stably. Its backward is g - exp(y)·Σ g.
func LogSoftmax(a *Tensor, axis int) *Tensor { return softmax("LogSoftmax", a, axis, true) }

func softmax(op string, a *Tensor, axis int, logOut bool) *Tensor {
	ax := normAxis(op, axis, a.shape)
	outer, n, inner := axisSplit(a.shape, ax)
	out := Zeros(a.shape...)
	if len(out.data) > 0 {
		axisJobs(outer, n, inner, func(o, i0, i1 int) {
			softmaxBlock(out.data, a.data, o, n, inner, i0, i1, logOut)
		})
	}
	return record(out, func(g *Tensor) {
		ga := Zeros(a.shape...)
		y := out.data
		if len(y) == 0 {
			accumulate(a, ga)
			return
		}
		axisJobs(outer, n, inner, func(o, i0, i1 int) {
			s := make([]float64, i1-i0)
			base := o * n * inner
			for k := 0; k < n; k++ {
				off := base + k*inner
				gr, yr := g.data[off+i0:off+i1], y[off+i0:off+i1]
				for j, gv := range gr {
					if logOut {
						s[j] += float64(gv)
					} else {
						s[j] += float64(gv) * float64(yr[j])
					}
				}
			}
			for k := 0; k < n; k++ {
				off := base + k*inner
				gr, yr, dr := g.data[off+i0:off+i1], y[off+i0:off+i1], ga.data[off+i0:off+i1]
				for j, gv := range gr {
					if logOut {
						dr[j] = gv - float32(math.Exp(float64(yr[j]))*s[j])
					} else {
						dr[j] = yr[j] * (gv - float32(s[j]))
					}
				}
			}
		})
		accumulate(a, ga)
	}, a)
}

// MatMul returns the matrix product a·b. Both 2-D (m×k · k×n → m×n), or
// batched: a is B…×m×k and b is B…×k×n with the same batch dims (→ B…×m×n),
// or b is k×n and shared by every matrix of a.
func MatMul(a, b *Tensor) *Tensor {
	if a.Dim() < 2 || b.Dim() < 2 {
		shapeErr("MatMul", "operands of shapes %v and %v must have at least 2 dims", a.shape, b.shape)
	}
	m, k := a.shape[a.Dim()-2], a.shape[a.Dim()-1]
	k2, n := b.shape[b.Dim()-2], b.shape[b.Dim()-1]
	if k != k2 {
		shapeErr("MatMul", "inner dimensions differ: %v · %v (%d vs %d)", a.shape, b.shape, k, k2)
	}
	batch := a.shape[:a.Dim()-2]
	shared := b.Dim() == 2
	if !shared && !SameShape(batch, b.shape[:b.Dim()-2]) {
		shapeErr("MatMul", "batch dimensions differ: %v · %v", a.shape, b.shape)
	}
	nb := Numel(batch)
	shape := append(append([]int(nil), batch...), m, n)
	out := Zeros(shape...)
	addMACs(nb * m * n * k)
	if shared {
		gemm.Sgemm(false, false, nb*m, n, k, 1, a.data, k, b.data, n, 0, out.data, n)
	} else {
		batched(nb, m*n*k, func(i int) {
			gemm.Sgemm(false, false, m, n, k, 1, a.data[i*m*k:], k, b.data[i*k*n:], n, 0, out.data[i*m*n:], n)
		})
	}
	return record(out, func(g *Tensor) {
		if a.requiresGrad { // dA = dC·Bᵀ
			ga := Zeros(a.shape...)
			if shared {
				gemm.Sgemm(false, true, nb*m, k, n, 1, g.data, n, b.data, n, 0, ga.data, k)
			} else {
				batched(nb, m*n*k, func(i int) {
					gemm.Sgemm(false, true, m, k, n, 1, g.data[i*m*n:], n, b.data[i*k*n:], n, 0, ga.data[i*m*k:], k)
				})
			}
			accumulate(a, ga)
		}
		if b.requiresGrad { // dB = Aᵀ·dC
			gb := Zeros(b.shape...)
			if shared {
				gemm.Sgemm(true, false, k, n, nb*m, 1, a.data, k, g.data, n, 0, gb.data, n)
			} else {
				batched(nb, m*n*k, func(i int) {
					gemm.Sgemm(true, false, k, n, m, 1, a.data[i*m*k:], k, g.data[i*m*n:], n, 0, gb.data[i*k*n:], n)
				})
			}
			accumulate(b, gb)
		}
	}, a, b)
}

// batched runs f(i) for i in [0, nb): in parallel across matrices when each
// product (of work multiply-adds) is too small for the GEMM to parallelise
// itself, sequentially otherwise.
func batched(nb, work int, f func(i int)) {
	if work >= 1<<15 {
		for i := 0; i < nb; i++ {
			f(i)
		}
		return
	}
	ParallelFor(nb, max(1, (1<<15)/max(work, 1)), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			f(i)
		}
	})
}

// Linear returns x·wᵀ + b for x of shape …×in, w of shape out×in and b of
// shape out (or nil), giving …×out, as torch.nn.functional.linear.
func Linear(x, w, b *Tensor) *Tensor {
	if w.Dim() != 2 || x.Dim() < 1 || x.shape[x.Dim()-1] != w.shape[1] {
		shapeErr("Linear", "input of shape %v does not fit weight of shape %v (want …×in and out×in)", x.shape, w.shape)
	}
	nOut, nIn := w.shape[0], w.shape[1]
	if b != nil && (b.Dim() != 1 || b.shape[0] != nOut) {
		shapeErr("Linear", "bias of shape %v for weight of shape %v (want [%d])", b.shape, w.shape, nOut)
	}
	rows := Numel(x.shape[:x.Dim()-1])
	shape := append(append([]int(nil), x.shape[:x.Dim()-1]...), nOut)
	out := Zeros(shape...)
	var beta float32
	if b != nil {
		for r := 0; r < rows; r++ {
			copy(out.data[r*nOut:(r+1)*nOut], b.data)
		}
		beta = 1
	}
	addMACs(rows * nOut * nIn)
	gemm.Sgemm(false, true, rows, nOut, nIn, 1, x.data, nIn, w.data, nIn, beta, out.data, nOut)
	return record(out, func(g *Tensor) {
		if x.requiresGrad { // dx = g·w
			gx := Zeros(x.shape...)
			gemm.Sgemm(false, false, rows, nIn, nOut, 1, g.data, nOut, w.data, nIn, 0, gx.data, nIn)
			accumulate(x, gx)
		}
		if w.requiresGrad { // dw = gᵀ·x
			gw := Zeros(w.shape...)
			gemm.Sgemm(true, false, nOut, nIn, rows, 1, g.data, nOut, x.data, nIn, 0, gw.data, nIn)
			accumulate(w, gw)
		}
		if b != nil && b.requiresGrad {
			accumulate(b, view(reduceSum(g.data, []int{rows, nOut}, []bool{true, false}, 1), b.shape))
		}
	}, x, w, b)
}

// Reshape returns a with a new shape of the same element count, sharing
// a's storage; one dimension may be -1 and is inferred.
func Reshape(a *Tensor, shape ...int) *Tensor {
	ns := append([]int(nil), shape...)
	infer, known := -1, 1
	for i, d := range ns {
		switch {
		case d == -1 && infer < 0:
			infer = i
		case d < 0:
			shapeErr("Reshape", "invalid target shape %v for tensor of shape %v", shape, a.shape)
		default:
			known *= d
		}
	}
	if infer >= 0 {
		if known == 0 || a.Len()%known != 0 {
			shapeErr("Reshape", "cannot infer -1 in shape %v for tensor of shape %v (%d elements)", shape, a.shape, a.Len())
		}
		ns[infer] = a.Len() / known
		known *= ns[infer]
	}
	if known != a.Len() {
		shapeErr("Reshape", "shape %v (%d elements) for tensor of shape %v (%d elements)", shape, known, a.shape, a.Len())
	}
	out := view(a.data, ns)
	return record(out, func(g *Tensor) { accumulate(a, view(g.data, a.shape)) }, a)
}

// Flatten reshapes the dimensions from start (negative counts from the end)
// to the last into one: a d0×…×d(s-1)×ds×…×dn tensor becomes
// d0×…×d(s-1)×(ds·…·dn), sharing storage. A 0-dimensional tensor becomes
// shape [1].
func Flatten(a *Tensor, start int) *Tensor {
	if a.Dim() == 0 {
		if start != 0 && start != -1 {
			shapeErr("Flatten", "start %d out of range for shape %v", start, a.shape)
		}
		return Reshape(a, 1)
	}
	s := normAxis("Flatten", start, a.shape)
	shape := append(append([]int(nil), a.shape[:s]...), Numel(a.shape[s:]))
	return Reshape(a, shape...)
}

// Permute returns a with its dimensions reordered: result dim i is a's dim
// perm[i] (a fresh contiguous tensor).
func Permute(a *Tensor, perm ...int) *Tensor {
	if len(perm) != a.Dim() {
		shapeErr("Permute", "permutation %v for shape %v", perm, a.shape)
	}
	seen := make([]bool, len(perm))
	inv := make([]int, len(perm))
	shape := make([]int, len(perm))
	for i, p := range perm {
		if p < 0 {
			p += len(perm)
		}
		if p < 0 || p >= len(perm) || seen[p] {
			shapeErr("Permute", "%v is not a permutation of the dims of shape %v", perm, a.shape)
		}
		seen[p] = true
		inv[p] = i
		shape[i] = a.shape[p]
	}
	np := make([]int, len(perm))
	for p, i := range inv {
		np[i] = p
	}
	out := view(permuteData(a.data, a.shape, np), shape)
	return record(out, func(g *Tensor) {
		accumulate(a, view(permuteData(g.data, shape, inv), a.shape))
	}, a)
}

// Transpose swaps dimensions i and j (negative counts from the end).
func Transpose(a *Tensor, i, j int) *Tensor {
	i = normAxis("Transpose", i, a.shape)
	j = normAxis("Transpose", j, a.shape)
	perm := make([]int, a.Dim())
	for k := range perm {
		perm[k] = k
	}
	perm[i], perm[j] = j, i
	return Permute(a, perm...)
}

// Slice returns the elements lo ≤ index < hi along axis (negative counts
// from the end), with 0 ≤ lo ≤ hi ≤ size of that axis. The result is a view
// sharing storage when axis is 0 or all earlier dims are 1, a copy
// otherwise.
func Slice(a *Tensor, axis, lo, hi int) *Tensor {
	ax := normAxis("Slice", axis, a.shape)
	outer, n, inner := axisSplit(a.shape, ax)
	if lo < 0 || lo > hi || hi > n {
		shapeErr("Slice", "range [%d, %d) out of bounds for axis %d of shape %v", lo, hi, axis, a.shape)
	}
	shape := append([]int(nil), a.shape...)
	shape[ax] = hi - lo
	var out *Tensor
	if outer == 1 {
		out = view(a.data[lo*inner:hi*inner:hi*inner], shape)
	} else {
		out = Zeros(shape...)
		copyBlocks(out.data, (hi-lo)*inner, 0, a.data, n*inner, lo*inner, outer, (hi-lo)*inner)
	}
	return record(out, func(g *Tensor) {
		ga := Zeros(a.shape...)
		copyBlocks(ga.data, n*inner, lo*inner, g.data, (hi-lo)*inner, 0, outer, (hi-lo)*inner)
		accumulate(a, ga)
	}, a)
}

// Concat joins tensors along axis (negative counts from the end); all must
// have the same rank and agree in every other dimension.
func Concat(axis int, ts ...*Tensor) *Tensor {
	if len(ts) == 0 {
		shapeErr("Concat", "no tensors")
	}
	first := ts[0].shape
	ax := normAxis("Concat", axis, first)
	total := 0
	for _, t := range ts {
		ok := len(t.shape) == len(first)
		for i := 0; ok && i < len(first); i++ {
			ok = i == ax || t.shape[i] == first[i]
		}
		if !ok {
			shapeErr("Concat", "shapes %v and %v differ outside axis %d", first, t.shape, axis)
		}
		total += t.shape[ax]
	}
	shape := append([]int(nil), first...)
	shape[ax] = total
	outer, _, inner := axisSplit(shape, ax)
	out := Zeros(shape...)
	off := 0
	for _, t := range ts {
		w := t.shape[ax] * inner
		copyBlocks(out.data, total*inner, off, t.data, w, 0, outer, w)
		off += w
	}
	return record(out, func(g *Tensor) {
		off := 0
		for _, t := range ts {
			w := t.shape[ax] * inner
			if t.requiresGrad {
				gt := Zeros(t.shape...)
				copyBlocks(gt.data, w, 0, g.data, total*inner, off, outer, w)
				accumulate(t, gt)
			}
			off += w
		}
	}, ts...)
}

// Stack joins equally shaped tensors along a new axis (0 ≤ axis ≤ rank;
// negative counts from the end, -1 meaning a new last axis): k tensors of
// shape S give S with k inserted at axis.
func Stack(axis int, ts ...*Tensor) *Tensor {
	if len(ts) == 0 {
		shapeErr("Stack", "no tensors")
	}
	first := ts[0].shape
	ax := axis
	if ax < 0 {
		ax += len(first) + 1
	}
	if ax < 0 || ax > len(first) {
		shapeErr("Stack", "axis %d out of range for tensors of shape %v", axis, first)
	}
	for _, t := range ts {
		if !SameShape(t.shape, first) {
			shapeErr("Stack", "shapes %v and %v differ", first, t.shape)
		}
	}
	shape := append(append(append([]int(nil), first[:ax]...), len(ts)), first[ax:]...)
	outer, inner := Numel(first[:ax]), Numel(first[ax:])
	k := len(ts)
	out := Zeros(shape...)
	for i, t := range ts {
		copyBlocks(out.data, k*inner, i*inner, t.data, inner, 0, outer, inner)
	}
	return record(out, func(g *Tensor) {
		for i, t := range ts {
			if t.requiresGrad {
				gt := Zeros(t.shape...)
				copyBlocks(gt.data, inner, 0, g.data, k*inner, i*inner, outer, inner)
				accumulate(t, gt)
			}
		}
	}, ts...)
}
