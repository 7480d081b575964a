package tensor_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// ---- helpers (independent reference computations) ----

func elemRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 7)) }

// elemEach calls f with every multi-index of shape in row-major order.
func elemEach(shape []int, f func(idx []int)) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	idx := make([]int, len(shape))
	for i := 0; i < n; i++ {
		r := i
		for k := len(shape) - 1; k >= 0; k-- {
			idx[k] = r % shape[k]
			r /= shape[k]
		}
		f(idx)
	}
}

// elemBcastIndex maps an index of the broadcast result to an index of a tensor
// of shape s (right-aligned, size-1 dims pinned to 0).
func elemBcastIndex(idx, s []int) []int {
	off := len(idx) - len(s)
	j := make([]int, len(s))
	for i := range s {
		if s[i] != 1 {
			j[i] = idx[i+off]
		}
	}
	return j
}

// elemRefBinary computes f(a, b) with broadcasting in float64, given the
// expected result shape.
func elemRefBinary(a, b *tensor.Tensor, out []int, f func(x, y float64) float64) *tensor.Tensor {
	r := tensor.Zeros(out...)
	elemEach(out, func(idx []int) {
		x := float64(a.At(elemBcastIndex(idx, a.Shape())...))
		y := float64(b.At(elemBcastIndex(idx, b.Shape())...))
		r.Set(float32(f(x, y)), idx...)
	})
	return r
}

func elemClose(t *testing.T, name string, got, want *tensor.Tensor, rtol, atol float64) {
	t.Helper()
	if err := tensortest.AllClose(got, want, rtol, atol); err != nil {
		t.Errorf("%s: %v", name, err)
	}
}

// elemShapeErr checks that f panics with a *ShapeError whose message
// contains every part.
func elemShapeErr(t *testing.T, name string, f func(), parts ...string) {
	t.Helper()
	err := tensor.Catch(f)
	var se *tensor.ShapeError
	if !errors.As(err, &se) {
		t.Errorf("%s: got error %v, want *ShapeError", name, err)
		return
	}
	for _, p := range parts {
		if !strings.Contains(se.Error(), p) {
			t.Errorf("%s: error %q does not mention %q", name, se.Error(), p)
		}
	}
}

// elemAway moves the values of t that lie within margin of any kink to
// kink ± margin (keeping their side), so that finite differences do not
// straddle a non-differentiable point.
func elemAway(t *tensor.Tensor, margin float32, kinks ...float32) *tensor.Tensor {
	d := t.Data()
	for i, v := range d {
		for _, k := range kinks {
			if v-k < margin && k-v < margin {
				if v >= k {
					d[i] = k + margin
				} else {
					d[i] = k - margin
				}
			}
		}
	}
	return t
}

// elemShift returns t with s added to every element (in place).
func elemShift(t *tensor.Tensor, s float32) *tensor.Tensor {
	for i := range t.Data() {
		t.Data()[i] += s
	}
	return t
}

func elemLit(data []float32, shape ...int) *tensor.Tensor { return tensor.New(data, shape...) }

func elemGrad(t *testing.T, name string, f func(in []*tensor.Tensor) *tensor.Tensor, in ...*tensor.Tensor) {
	t.Helper()
	tensortest.GradCheck(t, name, f, in, tensortest.GradCheckOpts{Seed: 3})
}

// ---- broadcasting arithmetic ----

var elemBinOps = []struct {
	name string
	f    func(a, b *tensor.Tensor) *tensor.Tensor
	ref  func(x, y float64) float64
}{
	{"Add", tensor.Add, func(x, y float64) float64 { return x + y }},
	{"Sub", tensor.Sub, func(x, y float64) float64 { return x - y }},
	{"Mul", tensor.Mul, func(x, y float64) float64 { return x * y }},
	{"Div", tensor.Div, func(x, y float64) float64 { return x / y }},
}

var elemBcastCases = []struct {
	a, b, out []int
}{
	{[]int{3, 5}, []int{3, 5}, []int{3, 5}},
	{[]int{3, 1, 5}, []int{4, 1}, []int{3, 4, 5}},
	{[]int{2, 3, 4, 5}, []int{1, 3, 1, 1}, []int{2, 3, 4, 5}},
	{[]int{2, 3, 2, 3, 5}, []int{3, 1, 1, 1}, []int{2, 3, 2, 3, 5}},
	{[]int{2, 3, 2, 3, 5}, []int{1, 3, 1, 1, 1}, []int{2, 3, 2, 3, 5}},
	{[]int{1, 3, 1, 1}, []int{2, 3, 4, 5}, []int{2, 3, 4, 5}},
	{[]int{4, 7}, []int{}, []int{4, 7}},
	{[]int{}, []int{2, 3}, []int{2, 3}},
	{[]int{5, 1}, []int{1, 6}, []int{5, 6}},
	{[]int{7}, []int{3, 1}, []int{3, 7}},
	{[]int{2, 1, 3}, []int{2, 4, 1}, []int{2, 4, 3}},
	{[]int{1}, []int{1, 1}, []int{1, 1}},
}

func TestBinaryForward(t *testing.T) {
	rng := elemRNG(1)
	for _, op := range elemBinOps {
		for _, c := range elemBcastCases {
			a := tensortest.Rand(rng, c.a...)
			b := elemShift(tensortest.Rand(rng, c.b...), 2) // keep divisors away from 0
			name := fmt.Sprintf("%s %v %v", op.name, c.a, c.b)
			elemClose(t, name, op.f(a, b), elemRefBinary(a, b, c.out, op.ref), 1e-6, 1e-6)
		}
	}
	// Large enough for the parallel paths: the per-channel bias pattern.
	a := tensortest.Rand(rng, 2, 16, 8, 16, 17)
	b := tensortest.Rand(rng, 16, 1, 1, 1)
	elemClose(t, "Add large channel", tensor.Add(a, b), elemRefBinary(a, b, a.Shape(), func(x, y float64) float64 { return x + y }), 1e-6, 1e-6)
	c := tensortest.Rand(rng, a.Shape()...)
	elemClose(t, "Mul large same", tensor.Mul(a, c), elemRefBinary(a, c, a.Shape(), func(x, y float64) float64 { return x * y }), 1e-6, 1e-6)
}

func TestBinaryLiteral(t *testing.T) {
	a := elemLit([]float32{1, 2, 3, 4}, 2, 2)
	elemClose(t, "Add row", tensor.Add(a, elemLit([]float32{10, 20}, 2)), elemLit([]float32{11, 22, 13, 24}, 2, 2), 0, 0)
	elemClose(t, "Sub col", tensor.Sub(a, elemLit([]float32{1, 2}, 2, 1)), elemLit([]float32{0, 1, 1, 2}, 2, 2), 0, 0)
	elemClose(t, "Mul scalar", tensor.Mul(tensor.Scalar(3), a), elemLit([]float32{3, 6, 9, 12}, 2, 2), 0, 0)
	elemClose(t, "Div outer", tensor.Div(elemLit([]float32{1, 2}, 2, 1), elemLit([]float32{1, 4}, 1, 2)), elemLit([]float32{1, 0.25, 2, 0.5}, 2, 2), 0, 0)
	elemClose(t, "AddScalar", tensor.AddScalar(a, -1), elemLit([]float32{0, 1, 2, 3}, 2, 2), 0, 0)
	elemClose(t, "MulScalar", tensor.MulScalar(a, 0.5), elemLit([]float32{0.5, 1, 1.5, 2}, 2, 2), 0, 0)
	elemClose(t, "Neg", tensor.Neg(a), elemLit([]float32{-1, -2, -3, -4}, 2, 2), 0, 0)
}

func TestBinaryGrad(t *testing.T) {
	rng := elemRNG(2)
	for _, op := range elemBinOps {
		for _, c := range elemBcastCases {
			a := tensortest.Rand(rng, c.a...)
			b := elemShift(tensortest.Rand(rng, c.b...), 2)
			f := op.f
			elemGrad(t, fmt.Sprintf("%s %v %v", op.name, c.a, c.b), func(in []*tensor.Tensor) *tensor.Tensor { return f(in[0], in[1]) }, a, b)
		}
	}
	// The same tensor on both sides: d(a·a)/da = 2a, d(a-a)/da = 0.
	a := tensortest.Rand(rng, 3, 4).SetRequiresGrad(true)
	tensor.SumAll(tensor.Mul(a, a)).Backward()
	elemClose(t, "Mul(a,a) grad", a.Grad(), tensor.MulScalar(a.Detach(), 2), 1e-6, 0)
	a.ZeroGrad()
	tensor.SumAll(tensor.Sub(a, a)).Backward()
	elemClose(t, "Sub(a,a) grad", a.Grad(), tensor.Zeros(3, 4), 0, 0)
}

func TestScalarOpsGrad(t *testing.T) {
	rng := elemRNG(3)
	elemGrad(t, "AddScalar", func(in []*tensor.Tensor) *tensor.Tensor { return tensor.AddScalar(in[0], 2.5) }, tensortest.Rand(rng, 3, 5))
	elemGrad(t, "MulScalar", func(in []*tensor.Tensor) *tensor.Tensor { return tensor.MulScalar(in[0], -1.5) }, tensortest.Rand(rng, 7))
	elemGrad(t, "Neg", func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Neg(in[0]) }, tensortest.Rand(rng, 2, 3))
}

func TestBinaryShapeError(t *testing.T) {
	for _, op := range elemBinOps {
		f := op.f
		elemShapeErr(t, op.name, func() { f(tensor.Zeros(3, 4), tensor.Zeros(2, 4)) }, op.name, "[3 4]", "[2 4]")
		elemShapeErr(t, op.name+" rank", func() { f(tensor.Zeros(2, 3, 4), tensor.Zeros(3, 3)) }, "[2 3 4]", "[3 3]")
	}
}

func TestNoGradNoRecord(t *testing.T) {
	a, b := tensor.Ones(2, 3), tensor.Ones(3)
	for _, r := range []*tensor.Tensor{tensor.Add(a, b), tensor.Exp(a), tensor.Sum(a, nil, false), tensor.MatMul(a, tensor.Ones(3, 2)), tensor.Reshape(a, 6)} {
		if r.RequiresGrad() || !r.IsLeaf() {
			t.Errorf("result %v of inputs without gradients records a graph", r)
		}
	}
	a.SetRequiresGrad(true)
	if r := tensor.Add(a, b); !r.RequiresGrad() {
		t.Errorf("Add of a tensor requiring gradients does not require them")
	}
}

// ---- unary ops ----

func elemGELU64(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }
func elemSig64(x float64) float64  { return 1 / (1 + math.Exp(-x)) }

var elemUnaryOps = []struct {
	name   string
	f      func(*tensor.Tensor) *tensor.Tensor
	ref    func(float64) float64
	lo, hi float32   // input domain for the tests
	kinks  []float32 // points to keep finite differences away from
}{
	{"Exp", tensor.Exp, math.Exp, -2, 2, nil},
	{"Log", tensor.Log, math.Log, 0.3, 3, nil},
	{"Sqrt", tensor.Sqrt, math.Sqrt, 0.3, 3, nil},
	{"Pow3", func(a *tensor.Tensor) *tensor.Tensor { return tensor.Pow(a, 3) }, func(x float64) float64 { return x * x * x }, -2, 2, nil},
	{"Pow2", func(a *tensor.Tensor) *tensor.Tensor { return tensor.Pow(a, 2) }, func(x float64) float64 { return x * x }, -2, 2, nil},
	{"Pow-1.5", func(a *tensor.Tensor) *tensor.Tensor { return tensor.Pow(a, -1.5) }, func(x float64) float64 { return 1 / (x * math.Sqrt(x)) }, 0.5, 2, nil},
	{"Pow0.5", func(a *tensor.Tensor) *tensor.Tensor { return tensor.Pow(a, 0.5) }, math.Sqrt, 0.3, 3, nil},
	{"Abs", tensor.Abs, math.Abs, -2, 2, []float32{0}},
	{"ReLU", tensor.ReLU, func(x float64) float64 { return math.Max(x, 0) }, -2, 2, []float32{0}},
	{"ReLU6", tensor.ReLU6, func(x float64) float64 { return math.Min(math.Max(x, 0), 6) }, -3, 9, []float32{0, 6}},
	{"GELU", tensor.GELU, elemGELU64, -4, 4, nil},
	{"SiLU", tensor.SiLU, func(x float64) float64 { return x * elemSig64(x) }, -6, 6, nil},
	{"Sigmoid", tensor.Sigmoid, elemSig64, -6, 6, nil},
	{"Tanh", tensor.Tanh, math.Tanh, -3, 3, nil},
}

func elemRandRange(rng *rand.Rand, lo, hi float32, shape ...int) *tensor.Tensor {
	t := tensor.Zeros(shape...)
	for i := range t.Data() {
		t.Data()[i] = lo + (hi-lo)*rng.Float32()
	}
	return t
}

func TestUnaryForward(t *testing.T) {
	rng := elemRNG(4)
	for _, op := range elemUnaryOps {
		for _, shape := range [][]int{{}, {7}, {3, 1, 5}, {40, 1000}} {
			a := elemRandRange(rng, op.lo, op.hi, shape...)
			want := tensor.Zeros(shape...)
			for i, v := range a.Data() {
				want.Data()[i] = float32(op.ref(float64(v)))
			}
			elemClose(t, fmt.Sprintf("%s %v", op.name, shape), op.f(a), want, 2e-6, 1e-7)
		}
	}
}

func TestUnaryGrad(t *testing.T) {
	rng := elemRNG(5)
	for _, op := range elemUnaryOps {
		for _, shape := range [][]int{{9}, {2, 3, 5}} {
			a := elemAway(elemRandRange(rng, op.lo, op.hi, shape...), 0.05, op.kinks...)
			f := op.f
			elemGrad(t, fmt.Sprintf("%s %v", op.name, shape), func(in []*tensor.Tensor) *tensor.Tensor { return f(in[0]) }, a)
		}
	}
}

func TestUnaryLiteral(t *testing.T) {
	x := elemLit([]float32{-1, 0, 1, 2, -100, 100}, 6)
	// Φ(1) = 0.8413447460685429, Φ(2) = 0.9772498680518208 (tables).
	elemClose(t, "GELU", tensor.GELU(x), elemLit([]float32{-(1 - 0.8413447460685429), 0, 0.8413447460685429, 2 * 0.9772498680518208, 0, 100}, 6), 1e-6, 1e-7)
	elemClose(t, "Sigmoid", tensor.Sigmoid(x), elemLit([]float32{0.2689414213699951, 0.5, 0.7310585786300049, 0.8807970779778823, 0, 1}, 6), 1e-6, 1e-30)
	elemClose(t, "SiLU", tensor.SiLU(x), elemLit([]float32{-0.2689414213699951, 0, 0.7310585786300049, 1.7615941559557646, 0, 100}, 6), 1e-6, 1e-30)
	elemClose(t, "ReLU", tensor.ReLU(x), elemLit([]float32{0, 0, 1, 2, 0, 100}, 6), 0, 0)
	elemClose(t, "ReLU6", tensor.ReLU6(x), elemLit([]float32{0, 0, 1, 2, 0, 6}, 6), 0, 0)
	elemClose(t, "Abs", tensor.Abs(x), elemLit([]float32{1, 0, 1, 2, 100, 100}, 6), 0, 0)
	elemClose(t, "Pow0", tensor.Pow(x, 0), tensor.Ones(6), 0, 0)

	// Gradients at the kinks follow PyTorch: ReLU'(0) = 0, ReLU6' = 1 only
	// on (0, 6), |x|'(0) = 0.
	k := elemLit([]float32{-1, 0, 3, 6, 7}, 5)
	for _, c := range []struct {
		name string
		f    func(*tensor.Tensor) *tensor.Tensor
		want []float32
	}{
		{"ReLU", tensor.ReLU, []float32{0, 0, 1, 1, 1}},
		{"ReLU6", tensor.ReLU6, []float32{0, 0, 1, 0, 0}},
		{"Abs", tensor.Abs, []float32{-1, 0, 1, 1, 1}},
		{"Pow0", func(a *tensor.Tensor) *tensor.Tensor { return tensor.Pow(a, 0) }, []float32{0, 0, 0, 0, 0}},
	} {
		in := k.Clone().SetRequiresGrad(true)
		tensor.SumAll(c.f(in)).Backward()
		elemClose(t, c.name+" grad at kinks", in.Grad(), elemLit(c.want, 5), 0, 0)
	}
}

// ---- reductions ----

// elemRefSum sums a over the flagged axes in float64, keeping them as size 1.
func elemRefSum(a *tensor.Tensor, red []bool, mean bool) *tensor.Tensor {
	shape := append([]int(nil), a.Shape()...)
	count := 1
	for i, r := range red {
		if r {
			count *= shape[i]
			shape[i] = 1
		}
	}
	acc := make([]float64, tensor.Numel(shape))
	st := tensor.Strides(shape)
	elemEach(a.Shape(), func(idx []int) {
		o := 0
		for i, x := range idx {
			if !red[i] {
				o += x * st[i]
			}
		}
		acc[o] += float64(a.At(idx...))
	})
	out := tensor.Zeros(shape...)
	for i, v := range acc {
		if mean {
			v /= float64(count)
		}
		out.Data()[i] = float32(v)
	}
	return out
}

var elemReduceCases = []struct {
	shape []int
	axes  []int
}{
	{[]int{5}, nil},
	{[]int{3, 4}, []int{0}},
	{[]int{3, 4}, []int{1}},
	{[]int{3, 4}, []int{-1}},
	{[]int{2, 3, 4, 5}, []int{0, 2, 3}},
	{[]int{2, 3, 4, 5}, []int{1}},
	{[]int{2, 3, 4, 5}, []int{3, 1}},
	{[]int{2, 1, 4, 1}, []int{1, 2}},
	{[]int{3, 5, 2}, nil},
	{[]int{}, nil},
	{[]int{4, 16, 1100}, []int{0}},    // column chunks of a kept inner dim
	{[]int{2, 32, 1100}, []int{0, 2}}, // per-channel (bias gradient) pattern
	{[]int{3, 600, 70}, []int{2}},     // many short rows
}

func TestSumMeanForward(t *testing.T) {
	rng := elemRNG(6)
	for _, c := range elemReduceCases {
		a := tensortest.Rand(rng, c.shape...)
		red := make([]bool, len(c.shape))
		for i := range red {
			red[i] = len(c.axes) == 0
		}
		for _, ax := range c.axes {
			if ax < 0 {
				ax += len(c.shape)
			}
			red[ax] = true
		}
		for _, mean := range []bool{false, true} {
			f, name := tensor.Sum, "Sum"
			if mean {
				f, name = tensor.Mean, "Mean"
			}
			want := elemRefSum(a, red, mean)
			got := f(a, c.axes, true)
			elemClose(t, fmt.Sprintf("%s %v %v keep", name, c.shape, c.axes), got, want, 1e-5, 1e-5)
			var drop []int
			for i, d := range c.shape {
				if !red[i] {
					drop = append(drop, d)
				}
			}
			got = f(a, c.axes, false)
			if !tensor.SameShape(got.Shape(), drop) && !(len(drop) == 0 && got.Dim() == 0) {
				t.Errorf("%s %v %v: shape %v, want %v", name, c.shape, c.axes, got.Shape(), drop)
			}
		}
	}
	a := elemLit([]float32{1, 2, 3, 4, 5, 6}, 2, 3)
	elemClose(t, "Sum axis 0", tensor.Sum(a, []int{0}, false), elemLit([]float32{5, 7, 9}, 3), 0, 0)
	elemClose(t, "Sum axis 1", tensor.Sum(a, []int{1}, true), elemLit([]float32{6, 15}, 2, 1), 0, 0)
	elemClose(t, "MeanAll", tensor.MeanAll(a), tensor.Scalar(3.5), 0, 0)
	elemClose(t, "SumAll", tensor.SumAll(a), tensor.Scalar(21), 0, 0)
	if s := tensor.SumAll(a); s.Dim() != 0 {
		t.Errorf("SumAll shape %v, want []", s.Shape())
	}
	// Accumulation is accurate for long sums: 2^20 copies of float32(0.1).
	n := 1 << 20
	big := tensor.Full(0.1, n)
	want := float64(n) * float64(float32(0.1))
	if got := float64(tensor.SumAll(big).Item()); math.Abs(got-want) > 1e-6*want {
		t.Errorf("SumAll of %d × 0.1: %v, want %v", n, got, want)
	}
}

func TestSumMeanGrad(t *testing.T) {
	rng := elemRNG(7)
	for _, c := range elemReduceCases[:10] {
		axes := c.axes
		for _, keep := range []bool{false, true} {
			elemGrad(t, fmt.Sprintf("Sum %v %v %v", c.shape, axes, keep), func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Sum(in[0], axes, keep) }, tensortest.Rand(rng, c.shape...))
			elemGrad(t, fmt.Sprintf("Mean %v %v %v", c.shape, axes, keep), func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Mean(in[0], axes, keep) }, tensortest.Rand(rng, c.shape...))
		}
	}
	elemGrad(t, "SumAll", func(in []*tensor.Tensor) *tensor.Tensor { return tensor.SumAll(in[0]) }, tensortest.Rand(rng, 3, 4))
	elemGrad(t, "MeanAll", func(in []*tensor.Tensor) *tensor.Tensor { return tensor.MeanAll(in[0]) }, tensortest.Rand(rng, 3, 4))
}

func TestReduceErrors(t *testing.T) {
	elemShapeErr(t, "Sum axis", func() { tensor.Sum(tensor.Zeros(2, 3), []int{2}, false) }, "Sum", "axis 2", "[2 3]")
	elemShapeErr(t, "Sum repeated", func() { tensor.Sum(tensor.Zeros(2, 3), []int{1, -1}, false) }, "repeated", "[2 3]")
	elemShapeErr(t, "Mean axis", func() { tensor.Mean(tensor.Zeros(2, 3), []int{-3}, false) }, "Mean", "[2 3]")
	elemShapeErr(t, "Max axis", func() { tensor.Max(tensor.Zeros(2, 3), 5, false) }, "Max", "[2 3]")
	elemShapeErr(t, "Max empty", func() { tensor.Max(tensor.Zeros(2, 0), 1, false) }, "empty", "[2 0]")
	elemShapeErr(t, "Softmax axis", func() { tensor.Softmax(tensor.Zeros(2, 3), 2) }, "Softmax", "[2 3]")
}

// ---- max / argmax ----

func TestMaxArgmax(t *testing.T) {
	a := elemLit([]float32{1, 3, 3, 2, 0, 2}, 2, 3)
	elemClose(t, "Max axis 1", tensor.Max(a, 1, false), elemLit([]float32{3, 2}, 2), 0, 0)
	elemClose(t, "Max axis 0 keep", tensor.Max(a, 0, true), elemLit([]float32{2, 3, 3}, 1, 3), 0, 0)
	if got := tensor.Argmax(a, 1); fmt.Sprint(got) != "[1 0]" {
		t.Errorf("Argmax axis 1 = %v, want [1 0] (first maximum)", got)
	}
	if got := tensor.Argmax(a, -2); fmt.Sprint(got) != "[1 0 0]" {
		t.Errorf("Argmax axis 0 = %v, want [1 0 0]", got)
	}
	in := a.Clone().SetRequiresGrad(true)
	tensor.SumAll(tensor.Max(in, 1, false)).Backward()
	elemClose(t, "Max grad to first max", in.Grad(), elemLit([]float32{0, 1, 0, 1, 0, 0}, 2, 3), 0, 0)

	// Against an independent scan on a 3-D tensor, every axis.
	rng := elemRNG(8)
	x := tensortest.Rand(rng, 3, 4, 700)
	for ax := 0; ax < 3; ax++ {
		outShape := append([]int(nil), x.Shape()...)
		outShape[ax] = 1
		want := tensor.Full(float32(math.Inf(-1)), outShape...)
		wantIdx := make([]int, tensor.Numel(outShape))
		st := tensor.Strides(outShape)
		elemEach(x.Shape(), func(idx []int) {
			o := 0
			for i, v := range idx {
				if i != ax {
					o += v * st[i]
				}
			}
			if v := x.At(idx...); v > want.Data()[o] {
				want.Data()[o] = v
				wantIdx[o] = idx[ax]
			}
		})
		elemClose(t, fmt.Sprintf("Max axis %d", ax), tensor.Max(x, ax, true), want, 0, 0)
		if got := tensor.Argmax(x, ax); fmt.Sprint(got) != fmt.Sprint(wantIdx) {
			t.Errorf("Argmax axis %d differs from a direct scan", ax)
		}
	}
}

// elemDistinct returns a tensor holding a random permutation of 0.1·(0…n-1),
// so that maxima are unique and separated by more than GradCheck's step.
func elemDistinct(rng *rand.Rand, shape ...int) *tensor.Tensor {
	t := tensor.Zeros(shape...)
	for i, p := range rng.Perm(t.Len()) {
		t.Data()[i] = 0.1*float32(p) - 1
	}
	return t
}

func TestMaxGrad(t *testing.T) {
	rng := elemRNG(9)
	for _, c := range []struct {
		shape []int
		axis  int
	}{{[]int{7}, 0}, {[]int{3, 5}, 0}, {[]int{3, 5}, 1}, {[]int{2, 3, 4}, 1}, {[]int{2, 3, 4}, -1}} {
		axis := c.axis
		for _, keep := range []bool{false, true} {
			elemGrad(t, fmt.Sprintf("Max %v axis %d", c.shape, axis), func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Max(in[0], axis, keep) }, elemDistinct(rng, c.shape...))
		}
	}
}

// ---- softmax ----

func elemRefSoftmax(a *tensor.Tensor, axis int, logOut bool) *tensor.Tensor {
	if axis < 0 {
		axis += a.Dim()
	}
	out := tensor.Zeros(a.Shape()...)
	elemEach(a.Shape(), func(idx []int) {
		j := append([]int(nil), idx...)
		s := 0.0
		for k := 0; k < a.Shape()[axis]; k++ {
			j[axis] = k
			s += math.Exp(float64(a.At(j...)))
		}
		v := float64(a.At(idx...))
		if logOut {
			out.Set(float32(v-math.Log(s)), idx...)
		} else {
			out.Set(float32(math.Exp(v)/s), idx...)
		}
	})
	return out
}

func TestSoftmaxForward(t *testing.T) {
	rng := elemRNG(10)
	for _, c := range []struct {
		shape []int
		axis  int
	}{{[]int{5}, 0}, {[]int{3, 4}, 1}, {[]int{3, 4}, 0}, {[]int{2, 3, 4, 5}, 1}, {[]int{2, 3, 4, 5}, -1}, {[]int{2, 5, 1100}, 1}, {[]int{1, 4, 1}, 1}} {
		a := tensor.MulScalar(tensortest.Rand(rng, c.shape...), 4)
		elemClose(t, fmt.Sprintf("Softmax %v %d", c.shape, c.axis), tensor.Softmax(a, c.axis), elemRefSoftmax(a, c.axis, false), 1e-5, 1e-7)
		elemClose(t, fmt.Sprintf("LogSoftmax %v %d", c.shape, c.axis), tensor.LogSoftmax(a, c.axis), elemRefSoftmax(a, c.axis, true), 1e-5, 1e-6)
	}
	// Stability: large logits give the softmax of their differences.
	x := elemLit([]float32{1000, 1001, 1002, -1000, 0, -1e30}, 2, 3)
	e0, e1, e2 := 1.0, math.E, math.E*math.E
	s := e0 + e1 + e2
	want := elemLit([]float32{float32(e0 / s), float32(e1 / s), float32(e2 / s), 0, 1, 0}, 2, 3)
	elemClose(t, "Softmax large", tensor.Softmax(x, 1), want, 1e-6, 1e-30)
	wantLog := elemLit([]float32{float32(-math.Log(s)), float32(1 - math.Log(s)), float32(2 - math.Log(s)), -1000, 0, -1e30}, 2, 3)
	elemClose(t, "LogSoftmax large", tensor.LogSoftmax(x, 1), wantLog, 1e-6, 1e-6)
}

func TestSoftmaxGrad(t *testing.T) {
	rng := elemRNG(11)
	for _, c := range []struct {
		shape []int
		axis  int
	}{{[]int{6}, 0}, {[]int{3, 4}, 0}, {[]int{3, 4}, 1}, {[]int{2, 3, 4}, 1}, {[]int{2, 3, 5}, -1}} {
		axis := c.axis
		elemGrad(t, fmt.Sprintf("Softmax %v %d", c.shape, axis), func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Softmax(in[0], axis) }, tensortest.Rand(rng, c.shape...))
		elemGrad(t, fmt.Sprintf("LogSoftmax %v %d", c.shape, axis), func(in []*tensor.Tensor) *tensor.Tensor { return tensor.LogSoftmax(in[0], axis) }, tensortest.Rand(rng, c.shape...))
	}
}

// ---- matrix products ----

// elemRefMatMul multiplies the trailing matrices of a and b in float64; b may
// be a single matrix shared by every batch entry of a.
func elemRefMatMul(a, b *tensor.Tensor) *tensor.Tensor {
	r := a.Dim()
	m, k, n := a.Shape()[r-2], a.Shape()[r-1], b.Shape()[b.Dim()-1]
	shape := append(append([]int(nil), a.Shape()[:r-2]...), m, n)
	out := tensor.Zeros(shape...)
	elemEach(shape, func(idx []int) {
		s := 0.0
		ai := append([]int(nil), idx...)
		bi := append([]int(nil), idx...)
		if b.Dim() == 2 {
			bi = []int{0, 0}
		}
		for p := 0; p < k; p++ {
			ai[r-1] = p
			bi[len(bi)-2], bi[len(bi)-1] = p, idx[r-1]
			s += float64(a.At(ai...)) * float64(b.At(bi...))
		}
		out.Set(float32(s), idx...)
	})
	return out
}

var elemMatCases = []struct{ a, b []int }{
	{[]int{3, 4}, []int{4, 5}},
	{[]int{1, 7}, []int{7, 1}},
	{[]int{5, 3}, []int{3, 2}},
	{[]int{2, 3, 4}, []int{2, 4, 5}},
	{[]int{2, 2, 3, 4}, []int{2, 2, 4, 3}},
	{[]int{2, 3, 4}, []int{4, 6}},
	{[]int{64, 33}, []int{33, 70}}, // large enough for a parallel GEMM
}

func TestMatMul(t *testing.T) {
	rng := elemRNG(12)
	elemClose(t, "MatMul literal", tensor.MatMul(elemLit([]float32{1, 2, 3, 4}, 2, 2), elemLit([]float32{5, 6, 7, 8}, 2, 2)), elemLit([]float32{19, 22, 43, 50}, 2, 2), 0, 0)
	for _, c := range elemMatCases {
		a, b := tensortest.Rand(rng, c.a...), tensortest.Rand(rng, c.b...)
		elemClose(t, fmt.Sprintf("MatMul %v %v", c.a, c.b), tensor.MatMul(a, b), elemRefMatMul(a, b), 1e-5, 1e-5)
		if len(c.a)*len(c.b) < 100 && c.a[0] < 60 {
			elemGrad(t, fmt.Sprintf("MatMul grad %v %v", c.a, c.b), func(in []*tensor.Tensor) *tensor.Tensor { return tensor.MatMul(in[0], in[1]) }, a, b)
		}
	}
	// Only one operand requiring gradients.
	a, b := tensortest.Rand(rng, 3, 4), tensortest.Rand(rng, 4, 2).SetRequiresGrad(true)
	tensor.SumAll(tensor.MatMul(a, b)).Backward()
	if a.Grad() != nil || b.Grad() == nil {
		t.Errorf("MatMul: gradients a=%v b=%v, want only b's", a.Grad(), b.Grad())
	}
	elemShapeErr(t, "MatMul inner", func() { tensor.MatMul(tensor.Zeros(2, 3), tensor.Zeros(4, 5)) }, "MatMul", "[2 3]", "[4 5]")
	elemShapeErr(t, "MatMul batch", func() { tensor.MatMul(tensor.Zeros(2, 2, 3), tensor.Zeros(3, 3, 5)) }, "[2 2 3]", "[3 3 5]")
	elemShapeErr(t, "MatMul rank", func() { tensor.MatMul(tensor.Zeros(3), tensor.Zeros(3, 5)) }, "[3]", "[3 5]")
}

func TestLinear(t *testing.T) {
	rng := elemRNG(13)
	// [1 2; 3 4]·[1 0 1; 0 1 1]ᵀ + [10 20 30] (w is 3×2).
	x := elemLit([]float32{1, 2, 3, 4}, 2, 2)
	w := elemLit([]float32{1, 0, 0, 1, 1, 1}, 3, 2)
	elemClose(t, "Linear literal", tensor.Linear(x, w, elemLit([]float32{10, 20, 30}, 3)), elemLit([]float32{11, 22, 33, 13, 24, 37}, 2, 3), 0, 0)
	for _, xs := range [][]int{{5}, {4, 5}, {2, 3, 5}} {
		x := tensortest.Rand(rng, xs...)
		w := tensortest.Rand(rng, 6, 5)
		b := tensortest.Rand(rng, 6)
		// Reference: x·wᵀ via elemRefMatMul, then the bias row by row.
		x2 := tensor.Reshape(x.Detach(), -1, 5)
		ref := elemRefMatMul(x2, tensor.Permute(w.Detach(), 1, 0))
		refB := elemRefBinary(ref, b, ref.Shape(), func(p, q float64) float64 { return p + q })
		outShape := append(append([]int(nil), xs[:len(xs)-1]...), 6)
		elemClose(t, fmt.Sprintf("Linear %v", xs), tensor.Linear(x, w, b), tensor.Reshape(refB, outShape...), 1e-5, 1e-5)
		elemClose(t, fmt.Sprintf("Linear %v no bias", xs), tensor.Linear(x, w, nil), tensor.Reshape(ref, outShape...), 1e-5, 1e-5)
		elemGrad(t, fmt.Sprintf("Linear grad %v", xs), func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Linear(in[0], in[1], in[2]) }, x, w, b)
		elemGrad(t, fmt.Sprintf("Linear grad %v no bias", xs), func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Linear(in[0], in[1], nil) }, tensortest.Rand(rng, xs...), tensortest.Rand(rng, 3, 5))
	}
	elemShapeErr(t, "Linear in", func() { tensor.Linear(tensor.Zeros(2, 4), tensor.Zeros(3, 5), nil) }, "Linear", "[2 4]", "[3 5]")
	elemShapeErr(t, "Linear bias", func() { tensor.Linear(tensor.Zeros(2, 5), tensor.Zeros(3, 5), tensor.Zeros(4)) }, "bias", "[4]", "[3 5]")
}

// ---- shape ops ----

func TestReshapeFlatten(t *testing.T) {
	a := tensor.New([]float32{0, 1, 2, 3, 4, 5}, 2, 3)
	r := tensor.Reshape(a, 3, -1)
	if !tensor.SameShape(r.Shape(), []int{3, 2}) || r.At(2, 1) != 5 || r.At(1, 0) != 2 {
		t.Errorf("Reshape(2×3 → 3×-1) = %v", r)
	}
	a.Data()[0] = 42
	if r.At(0, 0) != 42 {
		t.Errorf("Reshape does not share storage")
	}
	if f := tensor.Flatten(tensor.Zeros(2, 3, 4, 5), 1); !tensor.SameShape(f.Shape(), []int{2, 60}) {
		t.Errorf("Flatten(2×3×4×5, 1) shape %v", f.Shape())
	}
	if f := tensor.Flatten(tensor.Zeros(2, 3, 4), -2); !tensor.SameShape(f.Shape(), []int{2, 12}) {
		t.Errorf("Flatten(2×3×4, -2) shape %v", f.Shape())
	}
	if f := tensor.Flatten(tensor.Scalar(2), 0); !tensor.SameShape(f.Shape(), []int{1}) {
		t.Errorf("Flatten(scalar) shape %v", f.Shape())
	}
	elemShapeErr(t, "Reshape count", func() { tensor.Reshape(tensor.Zeros(2, 3), 4, 2) }, "Reshape", "[4 2]", "[2 3]")
	elemShapeErr(t, "Reshape infer", func() { tensor.Reshape(tensor.Zeros(2, 3), 4, -1) }, "[4 -1]", "[2 3]")
	elemShapeErr(t, "Reshape two -1", func() { tensor.Reshape(tensor.Zeros(2, 3), -1, -1) }, "[-1 -1]")
	elemShapeErr(t, "Flatten start", func() { tensor.Flatten(tensor.Zeros(2, 3), 2) }, "Flatten", "[2 3]")

	rng := elemRNG(14)
	w := tensortest.Rand(rng, 4, 3, 2)
	elemGrad(t, "Reshape", func(in []*tensor.Tensor) *tensor.Tensor {
		return tensor.Mul(tensor.Reshape(in[0], 4, 3, 2), w.Detach())
	}, tensortest.Rand(rng, 2, 12))
	elemGrad(t, "Flatten", func(in []*tensor.Tensor) *tensor.Tensor {
		return tensor.Exp(tensor.Flatten(in[0], 1))
	}, tensortest.Rand(rng, 2, 3, 2))
}

func TestPermuteTranspose(t *testing.T) {
	rng := elemRNG(15)
	a := tensortest.Rand(rng, 2, 3, 4, 5)
	for _, perm := range [][]int{{0, 1, 2, 3}, {3, 2, 1, 0}, {0, 2, 3, 1}, {1, 0, 2, 3}, {0, 1, 3, 2}, {2, 3, 0, 1}, {0, -1, 1, 2}} {
		p := append([]int(nil), perm...)
		for i := range p {
			if p[i] < 0 {
				p[i] += 4
			}
		}
		got := tensor.Permute(a, perm...)
		shape := []int{a.Shape()[p[0]], a.Shape()[p[1]], a.Shape()[p[2]], a.Shape()[p[3]]}
		want := tensor.Zeros(shape...)
		elemEach(shape, func(idx []int) {
			src := make([]int, 4)
			for i, q := range p {
				src[q] = idx[i]
			}
			want.Set(a.At(src...), idx...)
		})
		elemClose(t, fmt.Sprintf("Permute %v", perm), got, want, 0, 0)
		elemGrad(t, fmt.Sprintf("Permute grad %v", perm), func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Permute(in[0], perm...) }, tensortest.Rand(rng, 2, 3, 4, 5))
	}
	big := tensortest.Rand(rng, 300, 257)
	tr := tensor.Transpose(big, 0, 1)
	if tr.At(256, 299) != big.At(299, 256) || tr.At(17, 3) != big.At(3, 17) {
		t.Errorf("Transpose of 300×257 misplaces elements")
	}
	elemGrad(t, "Transpose", func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Transpose(in[0], -1, 0) }, tensortest.Rand(rng, 3, 2, 5))
	elemShapeErr(t, "Permute dup", func() { tensor.Permute(tensor.Zeros(2, 3), 0, 0) }, "Permute", "[0 0]", "[2 3]")
	elemShapeErr(t, "Permute len", func() { tensor.Permute(tensor.Zeros(2, 3), 0) }, "[0]", "[2 3]")
	elemShapeErr(t, "Transpose", func() { tensor.Transpose(tensor.Zeros(2, 3), 0, 2) }, "Transpose", "[2 3]")
}

func TestSlice(t *testing.T) {
	rng := elemRNG(16)
	a := tensortest.Rand(rng, 4, 5, 6)
	for _, c := range []struct{ axis, lo, hi int }{{0, 1, 3}, {1, 0, 5}, {1, 2, 4}, {2, 5, 6}, {-1, 0, 3}, {1, 3, 3}} {
		got := tensor.Slice(a, c.axis, c.lo, c.hi)
		ax := (c.axis + 3) % 3
		shape := append([]int(nil), a.Shape()...)
		shape[ax] = c.hi - c.lo
		want := tensor.Zeros(shape...)
		elemEach(shape, func(idx []int) {
			src := append([]int(nil), idx...)
			src[ax] += c.lo
			want.Set(a.At(src...), idx...)
		})
		elemClose(t, fmt.Sprintf("Slice %+v", c), got, want, 0, 0)
		cc := c
		elemGrad(t, fmt.Sprintf("Slice grad %+v", c), func(in []*tensor.Tensor) *tensor.Tensor {
			return tensor.Mul(tensor.Slice(in[0], cc.axis, cc.lo, cc.hi), tensor.Slice(in[0], cc.axis, cc.lo, cc.hi))
		}, tensortest.Rand(rng, 4, 5, 6))
	}
	// Axis-0 slices (or slices after size-1 dims) are views.
	v := tensor.Slice(a, 0, 2, 3)
	a.Data()[2*30] = 7
	if v.At(0, 0, 0) != 7 {
		t.Errorf("Slice along axis 0 is not a view")
	}
	b := tensortest.Rand(rng, 1, 6, 2)
	if w := tensor.Slice(b, 1, 1, 3); &w.Data()[0] != &b.Data()[2] {
		t.Errorf("Slice after a size-1 dim is not a view")
	}
	elemShapeErr(t, "Slice range", func() { tensor.Slice(tensor.Zeros(2, 3), 1, 2, 4) }, "Slice", "[2, 4)", "[2 3]")
	elemShapeErr(t, "Slice reversed", func() { tensor.Slice(tensor.Zeros(2, 3), 1, 2, 1) }, "[2, 1)")
	elemShapeErr(t, "Slice axis", func() { tensor.Slice(tensor.Zeros(2, 3), 2, 0, 1) }, "axis 2", "[2 3]")
}

func TestConcatStack(t *testing.T) {
	rng := elemRNG(17)
	for _, axis := range []int{0, 1, 2, -2} {
		ax := (axis + 3) % 3
		shapes := [][]int{{2, 3, 4}, {2, 3, 4}, {2, 3, 4}}
		for i := range shapes {
			shapes[i][ax] = i + 1 // sizes 1, 2, 3 along the axis
		}
		ts := []*tensor.Tensor{tensortest.Rand(rng, shapes[0]...), tensortest.Rand(rng, shapes[1]...), tensortest.Rand(rng, shapes[2]...)}
		got := tensor.Concat(axis, ts...)
		shape := append([]int(nil), shapes[0]...)
		shape[ax] = 6
		want := tensor.Zeros(shape...)
		elemEach(shape, func(idx []int) {
			src := append([]int(nil), idx...)
			k := 0
			for src[ax] >= ts[k].Shape()[ax] {
				src[ax] -= ts[k].Shape()[ax]
				k++
			}
			want.Set(ts[k].At(src...), idx...)
		})
		elemClose(t, fmt.Sprintf("Concat axis %d", axis), got, want, 0, 0)
		elemGrad(t, fmt.Sprintf("Concat grad axis %d", axis), func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Concat(axis, in...) }, ts...)
	}
	for _, axis := range []int{0, 1, 2, 3, -1} {
		ax := (axis + 4) % 4
		ts := []*tensor.Tensor{tensortest.Rand(rng, 2, 3, 4), tensortest.Rand(rng, 2, 3, 4)}
		got := tensor.Stack(axis, ts...)
		shape := []int{2, 3, 4}
		shape = append(shape[:ax], append([]int{2}, shape[ax:]...)...)
		want := tensor.Zeros(shape...)
		elemEach(shape, func(idx []int) {
			src := append(append([]int(nil), idx[:ax]...), idx[ax+1:]...)
			want.Set(ts[idx[ax]].At(src...), idx...)
		})
		elemClose(t, fmt.Sprintf("Stack axis %d", axis), got, want, 0, 0)
		elemGrad(t, fmt.Sprintf("Stack grad axis %d", axis), func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Stack(axis, in...) }, ts...)
	}
	elemShapeErr(t, "Concat mismatch", func() { tensor.Concat(1, tensor.Zeros(2, 3), tensor.Zeros(3, 3)) }, "Concat", "[2 3]", "[3 3]")
	elemShapeErr(t, "Concat rank", func() { tensor.Concat(0, tensor.Zeros(2, 3), tensor.Zeros(2, 3, 1)) }, "[2 3]", "[2 3 1]")
	elemShapeErr(t, "Concat none", func() { tensor.Concat(0) }, "Concat")
	elemShapeErr(t, "Stack mismatch", func() { tensor.Stack(0, tensor.Zeros(2, 3), tensor.Zeros(3, 2)) }, "Stack", "[2 3]", "[3 2]")
	elemShapeErr(t, "Stack axis", func() { tensor.Stack(3, tensor.Zeros(2, 3)) }, "axis 3", "[2 3]")
}

// TestComposite checks gradients through a small network-like chain that
// mixes broadcasting, reductions, shape ops and matrix products.
func TestComposite(t *testing.T) {
	rng := elemRNG(18)
	x := tensortest.Rand(rng, 2, 3, 4)
	w := tensortest.Rand(rng, 5, 4)
	bias := tensortest.Rand(rng, 3, 1)
	elemGrad(t, "composite", func(in []*tensor.Tensor) *tensor.Tensor {
		h := tensor.Add(in[0], in[2])                         // 2×3×4 + 3×1
		h = tensor.GELU(tensor.Linear(h, in[1], nil))         // 2×3×5
		h = tensor.Transpose(h, 1, 2)                         // 2×5×3
		h = tensor.Concat(1, h, tensor.Slice(h, 1, 1, 3))     // 2×7×3
		s := tensor.LogSoftmax(tensor.Flatten(h, 1), 1)       // 2×21
		return tensor.Mean(tensor.Mul(s, s), []int{1}, false) // 2
	}, x, w, bias)
}

// TestEmpty checks that zero-size dimensions pass through every op family.
func TestEmpty(t *testing.T) {
	if s := tensor.Add(tensor.Zeros(0, 3), tensor.Ones(3)).Shape(); !tensor.SameShape(s, []int{0, 3}) {
		t.Errorf("Add 0×3 + 3: shape %v", s)
	}
	elemClose(t, "Sum over empty", tensor.Sum(tensor.Zeros(2, 0), []int{1}, false), tensor.Zeros(2), 0, 0)
	if v := tensor.MeanAll(tensor.Zeros(0)).Item(); !math.IsNaN(float64(v)) {
		t.Errorf("MeanAll of an empty tensor = %v, want NaN", v)
	}
	elemClose(t, "MatMul k=0", tensor.MatMul(tensor.Zeros(2, 0), tensor.Zeros(0, 3)), tensor.Zeros(2, 3), 0, 0)
	elemClose(t, "Concat empty piece", tensor.Concat(1, elemLit([]float32{1, 2}, 2, 1), tensor.Zeros(2, 0)), elemLit([]float32{1, 2}, 2, 1), 0, 0)
	if s := tensor.Softmax(tensor.Zeros(3, 0), 1).Shape(); !tensor.SameShape(s, []int{3, 0}) {
		t.Errorf("Softmax of 3×0: shape %v", s)
	}
	if s := tensor.Permute(tensor.Zeros(2, 0, 3), 2, 0, 1).Shape(); !tensor.SameShape(s, []int{3, 2, 0}) {
		t.Errorf("Permute of 2×0×3: shape %v", s)
	}
}
