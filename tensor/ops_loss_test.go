package tensor_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// near reports whether got is within tol (relative, at least absolute tol)
// of want.
func near(got float32, want, tol float64) bool {
	return math.Abs(float64(got)-want) <= tol*math.Max(1, math.Abs(want))
}

func checkVals(t *testing.T, what string, got []float32, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !near(got[i], want[i], 1e-6) {
			t.Errorf("%s[%d] = %.8g, want %.8g", what, i, got[i], want[i])
		}
	}
}

// ceInput is the hand-worked case: logits [[0,0],[0,ln3]] give softmax rows
// [1/2,1/2] and [1/4,3/4]; targets [0,1]; weights [1,3]; smoothing 0.2.
func ceInput() *tensor.Tensor {
	return tensor.New([]float32{0, 0, 0, float32(math.Log(3))}, 2, 2)
}

func TestCrossEntropyHandWorked(t *testing.T) {
	ln2, ln43 := math.Ln2, math.Log(4.0/3)
	opts := tensor.CEOpts{Weight: []float32{1, 3}, LabelSmoothing: 0.2}
	// l0 = 0.8·ln2 + 0.2·(1·ln2 + 3·ln2)/2 = 1.2·ln2
	// l1 = 0.8·3·ln(4/3) + 0.2·(ln4 + 3·ln(4/3))/2 = 2.7·ln(4/3) + 0.2·ln2
	l0, l1 := 1.2*ln2, 2.7*ln43+0.2*ln2
	cases := []struct {
		name string
		red  tensor.Reduction
		want []float64
	}{
		{"none", tensor.ReduceNone, []float64{l0, l1}},
		{"sum", tensor.ReduceSum, []float64{l0 + l1}},
		{"mean", tensor.ReduceMean, []float64{(l0 + l1) / 4}}, // Σ w_y = 1 + 3
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := opts
			o.Reduction = c.red
			x := ceInput().SetRequiresGrad(true)
			y := tensor.CrossEntropy(x, []int{0, 1}, o)
			checkVals(t, "loss", y.Data(), c.want)
			if c.red != tensor.ReduceNone && y.Dim() != 0 {
				t.Errorf("reduced loss has shape %v, want scalar", y.Shape())
			}
		})
	}
	// Gradient of the mean: sample 0 has a = (0.8+0.1, 0.3), A = 1.2 and
	// p = (1/2, 1/2), so dl0/dx = p·A - a = (-0.3, 0.3), divided by 4.
	// Sample 1: a = (0.1, 2.4+0.3), A = 2.8, p = (1/4, 3/4):
	// (0.7-0.1, 2.1-2.7) = (0.6, -0.6), divided by 4.
	x := ceInput().SetRequiresGrad(true)
	opts.Reduction = tensor.ReduceMean
	tensor.CrossEntropy(x, []int{0, 1}, opts).Backward()
	checkVals(t, "grad", x.Grad().Data(), []float64{-0.075, 0.075, 0.15, -0.15})

	// Without weights or smoothing: plain -log p_y averaged over N.
	plain := tensor.CrossEntropy(ceInput(), []int{1, 0}, tensor.CEOpts{})
	checkVals(t, "plain", plain.Data(), []float64{(ln2 + math.Log(4)) / 2})
}

func TestCrossEntropyStable(t *testing.T) {
	// Logits far outside exp's float32 range: log_softmax([1000, 0]) = [0, -1000].
	x := tensor.New([]float32{1000, 0, -1000, 0}, 2, 2)
	y := tensor.CrossEntropy(x, []int{1, 0}, tensor.CEOpts{Reduction: tensor.ReduceNone})
	checkVals(t, "loss", y.Data(), []float64{1000, 1000})
}

func TestCrossEntropyGradCheck(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	target := []int{2, 0, 4, 1, 3, 2}
	for _, c := range []struct {
		name string
		o    tensor.CEOpts
	}{
		{"mean", tensor.CEOpts{}},
		{"mean weighted smoothed", tensor.CEOpts{Weight: []float32{0.5, 2, 1, 0.25, 1.5}, LabelSmoothing: 0.1}},
		{"sum smoothed", tensor.CEOpts{LabelSmoothing: 0.3, Reduction: tensor.ReduceSum}},
		{"none weighted smoothed", tensor.CEOpts{Weight: []float32{1, 2, 3, 4, 5}, LabelSmoothing: 0.2, Reduction: tensor.ReduceNone}},
	} {
		x := tensortest.Rand(rng, 6, 5)
		tensortest.GradCheck(t, "CrossEntropy "+c.name, func(in []*tensor.Tensor) *tensor.Tensor {
			return tensor.CrossEntropy(in[0], target, c.o)
		}, []*tensor.Tensor{x}, tensortest.GradCheckOpts{Eps: 1e-2, Tol: 1e-3, Seed: 3})
	}
}

func TestCrossEntropyBadInput(t *testing.T) {
	x := tensor.Zeros(2, 3)
	for _, c := range []struct {
		name   string
		x      *tensor.Tensor
		target []int
		o      tensor.CEOpts
	}{
		{"3-D logits", tensor.Zeros(2, 3, 1), []int{0, 1}, tensor.CEOpts{}},
		{"target count", x, []int{0}, tensor.CEOpts{}},
		{"target range", x, []int{0, 3}, tensor.CEOpts{}},
		{"negative target", x, []int{-1, 0}, tensor.CEOpts{}},
		{"weight count", x, []int{0, 1}, tensor.CEOpts{Weight: []float32{1, 2}}},
		{"smoothing", x, []int{0, 1}, tensor.CEOpts{LabelSmoothing: 1}},
		{"reduction", x, []int{0, 1}, tensor.CEOpts{Reduction: 7}},
	} {
		err := tensor.Catch(func() { tensor.CrossEntropy(c.x, c.target, c.o) })
		var se *tensor.ShapeError
		if !errors.As(err, &se) || se.Op != "CrossEntropy" {
			t.Errorf("%s: error %v, want a CrossEntropy *ShapeError", c.name, err)
		}
	}
}

func TestSmoothL1HandWorked(t *testing.T) {
	// beta 2: d = 0, 1, 3, -2 give 0, 0.5·1/2, 3-1, 2-1: mean 3.25/4.
	x := tensor.New([]float32{0, 1, 3, -2}, 2, 2).SetRequiresGrad(true)
	y := tensor.Zeros(2, 2).SetRequiresGrad(true)
	l := tensor.SmoothL1(x, y, 2)
	checkVals(t, "loss", l.Data(), []float64{0.8125})
	l.Backward()
	// d/beta inside, sign(d) outside (|d| = beta counts as outside), over 4.
	checkVals(t, "dx", x.Grad().Data(), []float64{0, 0.125, 0.25, -0.25})
	checkVals(t, "dy", y.Grad().Data(), []float64{0, -0.125, -0.25, 0.25})
	// beta 0 is the L1 loss.
	checkVals(t, "L1", tensor.SmoothL1(x.Detach(), y.Detach(), 0).Data(), []float64{1.5})
}

func TestMSEHandWorked(t *testing.T) {
	x := tensor.New([]float32{1, 2, 3}, 3).SetRequiresGrad(true)
	y := tensor.New([]float32{1, 0, -1}, 3).SetRequiresGrad(true)
	l := tensor.MSE(x, y)
	checkVals(t, "loss", l.Data(), []float64{20.0 / 3})
	l.Backward()
	checkVals(t, "dx", x.Grad().Data(), []float64{0, 4.0 / 3, 8.0 / 3})
	checkVals(t, "dy", y.Grad().Data(), []float64{0, -4.0 / 3, -8.0 / 3})
}

func TestRegressionLossGradCheck(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	x, y := tensortest.Rand(rng, 3, 4, 5), tensortest.Rand(rng, 3, 4, 5)
	tensortest.GradCheck(t, "MSE", func(in []*tensor.Tensor) *tensor.Tensor {
		return tensor.MSE(in[0], in[1])
	}, []*tensor.Tensor{x, y}, tensortest.GradCheckOpts{Tol: 1e-3})
	tensortest.GradCheck(t, "SmoothL1", func(in []*tensor.Tensor) *tensor.Tensor {
		return tensor.SmoothL1(in[0], in[1], 0.7)
	}, []*tensor.Tensor{x, y}, tensortest.GradCheckOpts{Eps: 1e-3, Tol: 1e-2})
}

func TestRegressionLossBadInput(t *testing.T) {
	a, b := tensor.Zeros(2, 3), tensor.Zeros(3, 2)
	if err := tensor.Catch(func() { tensor.MSE(a, b) }); err == nil {
		t.Error("MSE of shapes [2 3] and [3 2]: no error")
	}
	if err := tensor.Catch(func() { tensor.SmoothL1(a, b, 1) }); err == nil {
		t.Error("SmoothL1 of shapes [2 3] and [3 2]: no error")
	}
	if err := tensor.Catch(func() { tensor.SmoothL1(a, a, -1) }); err == nil {
		t.Error("SmoothL1 with beta -1: no error")
	}
}

func TestDropout(t *testing.T) {
	const n, p = 20000, 0.3
	x := tensor.Full(2, n).SetRequiresGrad(true)
	if tensor.Dropout(x, p, false, nil) != x || tensor.Dropout(x, 0, true, nil) != x {
		t.Error("Dropout in eval mode or with p = 0 does not return its input")
	}
	y := tensor.Dropout(x, p, true, rand.New(rand.NewPCG(7, 8)))
	zeros := 0
	for i, v := range y.Data() {
		switch {
		case v == 0:
			zeros++
		case !near(v, 2/0.7, 1e-6):
			t.Fatalf("element %d = %v, want 0 or 2/0.7", i, v)
		}
	}
	// Binomial(20000, 0.3): standard deviation 65 zeros; allow 5 of them.
	if zeros < n*p-325 || zeros > n*p+325 {
		t.Errorf("%d of %d zeroed, want about %v", zeros, n, n*p)
	}
	g := tensor.Full(1, n)
	y.BackwardWith(g)
	for i, v := range x.Grad().Data() {
		if (v == 0) != (y.Data()[i] == 0) || (v != 0 && !near(v, 1/0.7, 1e-6)) {
			t.Fatalf("gradient %d = %v for output %v", i, v, y.Data()[i])
		}
	}
	all := tensor.Dropout(tensor.Full(5, 10), 1, true, nil)
	for _, v := range all.Data() {
		if v != 0 {
			t.Fatalf("p = 1 left %v", v)
		}
	}
	if err := tensor.Catch(func() { tensor.Dropout(x, 1.5, true, nil) }); err == nil {
		t.Error("p = 1.5: no error")
	}
}

func TestStochasticDepthRows(t *testing.T) {
	const rows, p = 4000, 0.25
	x := tensortest.Rand(rand.New(rand.NewPCG(1, 1)), rows, 2, 3)
	y := tensor.StochasticDepth(x, p, false, true, rand.New(rand.NewPCG(9, 9)))
	dropped := 0
	for r := range rows {
		row, in := y.Data()[r*6:(r+1)*6], x.Data()[r*6:(r+1)*6]
		if row[0] == 0 {
			dropped++
		}
		for k := range row {
			if row[0] == 0 && row[k] != 0 || row[0] != 0 && !near(row[k], float64(in[k])/0.75, 1e-6) {
				t.Fatalf("row %d = %v from %v: not all dropped or all scaled by 1/0.75", r, row, in)
			}
		}
	}
	// Binomial(4000, 0.25): standard deviation 27; allow 5 of them.
	if dropped < rows*p-137 || dropped > rows*p+137 {
		t.Errorf("%d of %d rows dropped, want about %v", dropped, rows, rows*p)
	}
	if tensor.StochasticDepth(x, p, false, false, nil) != x {
		t.Error("eval mode does not return its input")
	}
}

func TestStochasticDepthBatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	dropped := 0
	const trials, p = 2000, 0.5
	for range trials {
		x := tensor.Full(1, 3, 2).SetRequiresGrad(true)
		y := tensor.StochasticDepth(x, p, true, true, rng)
		d := y.Data()
		for _, v := range d {
			if v != d[0] || (v != 0 && v != 2) {
				t.Fatalf("batch mode output %v: want all 0 or all 2", d)
			}
		}
		if d[0] == 0 {
			dropped++
		}
		y.BackwardWith(tensor.Ones(y.Shape()...))
		if x.Grad().Data()[0] != d[0] {
			t.Fatalf("gradient %v for output %v", x.Grad().Data(), d)
		}
	}
	// Binomial(2000, 0.5): standard deviation 22; allow 5 of them.
	if dropped < 890 || dropped > 1110 {
		t.Errorf("%d of %d batches dropped", dropped, trials)
	}
}
