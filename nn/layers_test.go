package nn

import (
	"math"
	"slices"
	"testing"

	"github.com/ctlens/ctlens/tensor"
)

func approxSlice(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !closeTo(float64(got[i]), want[i], tol) {
			t.Errorf("%s[%d] = %.7g, want %.7g", what, i, got[i], want[i])
		}
	}
}

func mustRun(t *testing.T, m Module, x *tensor.Tensor) *tensor.Tensor {
	t.Helper()
	y, err := Run(m, x)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

func TestConvForwardByHand(t *testing.T) {
	c := NewConv(randFor(1), 1, 1, []int{3}, ConvOpts{Stride: []int{2}, Padding: []int{1}})
	copy(c.Weight.Data(), []float32{1, 2, 3})
	c.Bias.Data()[0] = 0.5
	// x = [1 2 3 4 5] padded to [0 1 2 3 4 5 0]; windows at 0, 2, 4:
	// 0·1+1·2+2·3 = 8, 2+6+12 = 20, 4+10+0 = 14; plus 0.5.
	y := mustRun(t, c, tensor.New([]float32{1, 2, 3, 4, 5}, 1, 1, 5))
	if !slices.Equal(y.Shape(), []int{1, 1, 3}) {
		t.Fatalf("shape %v", y.Shape())
	}
	approxSlice(t, "conv1d", y.Data(), []float64{8.5, 20.5, 14.5}, 1e-6)

	// Depthwise 2-D, 2×2 kernel of ones with dilation 4 on 5×5 planes of
	// values v = 25c + 5i + j: each channel sums its plane's four corners,
	// 0 + 4 + 20 + 24 = 48 for c = 0 and 4·25 + 48 for c = 1.
	g := NewConv(randFor(1), 2, 2, []int{2, 2}, ConvOpts{Groups: 2, Dilation: []int{4}, NoBias: true})
	Ones(g.Weight)
	x := tensor.Zeros(1, 2, 5, 5)
	for i := range x.Data() {
		x.Data()[i] = float32(i)
	}
	y = mustRun(t, g, x)
	approxSlice(t, "depthwise", y.Data(), []float64{0 + 4 + 20 + 24, 25*4 + 48}, 1e-6)
}

func TestLinearAndNormsByHand(t *testing.T) {
	l := NewLinear(randFor(1), 2, 2, true)
	copy(l.Weight.Data(), []float32{1, 2, -1, 0.5})
	copy(l.Bias.Data(), []float32{0.1, -0.2})
	y := mustRun(t, l, tensor.New([]float32{3, 4}, 1, 2))
	approxSlice(t, "linear", y.Data(), []float64{3 + 8 + 0.1, -3 + 2 - 0.2}, 1e-6)

	// LayerNorm of [1 2 3 4]: mean 2.5, biased variance 1.25.
	ln := NewLayerNorm([]int{4}, 1e-6)
	copy(ln.Weight.Data(), []float32{1, 1, 2, 2})
	Constant(ln.Bias, 1)
	y = mustRun(t, ln, tensor.New([]float32{1, 2, 3, 4}, 1, 4))
	s := math.Sqrt(1.25 + 1e-6)
	approxSlice(t, "layernorm", y.Data(), []float64{1 - 1.5/s, 1 - 0.5/s, 1 + 2*0.5/s, 1 + 2*1.5/s}, 1e-5)

	// BatchNorm in evaluation: (x − running_mean)/√(running_var + eps)·w + b.
	bn := NewBatchNorm(2, BatchNormOpts{Eps: 1e-3})
	copy(bn.RunningMean.Data(), []float32{1, -1})
	copy(bn.RunningVar.Data(), []float32{4, 0.25})
	copy(bn.Weight.Data(), []float32{2, 1})
	copy(bn.Bias.Data(), []float32{0, 3})
	SetTraining(bn, false)
	y = mustRun(t, bn, tensor.New([]float32{3, 5, 0, 1}, 1, 2, 2))
	a, b := math.Sqrt(4.001), math.Sqrt(0.251)
	approxSlice(t, "batchnorm eval", y.Data(), []float64{2 * 2 / a, 2 * 4 / a, 3 + 1/b, 3 + 2/b}, 1e-5)
	if bn.NumBatchesTracked.Item() != 0 {
		t.Error("eval forward counted a batch")
	}

	// Training: batch statistics, running ones updated with momentum 0.5
	// (unbiased variance), counter incremented. Channel 0 holds 1, 3:
	// mean 2, biased var 1, unbiased 2.
	bn2 := NewBatchNorm(1, BatchNormOpts{Momentum: 0.5, Eps: 1e-9})
	y = mustRun(t, bn2, tensor.New([]float32{1, 3}, 2, 1))
	approxSlice(t, "batchnorm train", y.Data(), []float64{-1, 1}, 1e-6)
	approxSlice(t, "running mean", bn2.RunningMean.Data(), []float64{1}, 1e-6)
	approxSlice(t, "running var", bn2.RunningVar.Data(), []float64{1.5}, 1e-6)
	if bn2.NumBatchesTracked.Item() != 1 {
		t.Errorf("counter %v, want 1", bn2.NumBatchesTracked.Item())
	}

	// Without running statistics evaluation still uses the batch's.
	bn3 := NewBatchNorm(1, BatchNormOpts{NoRunningStats: true, NoAffine: true, Eps: 1e-9})
	SetTraining(bn3, false)
	y = mustRun(t, bn3, tensor.New([]float32{1, 3}, 2, 1))
	approxSlice(t, "batchnorm no stats", y.Data(), []float64{-1, 1}, 1e-6)
	if len(StateDict(bn3)) != 0 {
		t.Errorf("state %q, want none", names(StateDict(bn3)))
	}
}

func TestActivationsAndShapes(t *testing.T) {
	x := tensor.New([]float32{-2, 0.5, 7}, 1, 3)
	phi := func(v float64) float64 { return (1 + math.Erf(v/math.Sqrt2)) / 2 }
	sig := func(v float64) float64 { return 1 / (1 + math.Exp(-v)) }
	cases := []struct {
		name string
		m    Module
		want []float64
	}{
		{"relu", &ReLU{}, []float64{0, 0.5, 7}},
		{"relu6", &ReLU6{}, []float64{0, 0.5, 6}},
		{"gelu", &GELU{}, []float64{-2 * phi(-2), 0.5 * phi(0.5), 7 * phi(7)}},
		{"silu", &SiLU{}, []float64{-2 * sig(-2), 0.5 * sig(0.5), 7 * sig(7)}},
		{"sigmoid", &Sigmoid{}, []float64{sig(-2), sig(0.5), sig(7)}},
		{"identity", &Identity{}, []float64{-2, 0.5, 7}},
		{"func", NewFunc(tensor.Neg), []float64{2, -0.5, -7}},
		{"dropout eval", func() Module { d := NewDropout(0.5, randFor(1)); SetTraining(d, false); return d }(), []float64{-2, 0.5, 7}},
		{"stochastic depth eval", func() Module { d := NewStochasticDepth(0.5, false, randFor(1)); SetTraining(d, false); return d }(), []float64{-2, 0.5, 7}},
	}
	for _, c := range cases {
		approxSlice(t, c.name, mustRun(t, c.m, x).Data(), c.want, 1e-6)
	}

	// Dropout in training keeps about 1 − p of the elements, scaled by 1/(1 − p).
	d := NewDropout(0.25, randFor(2))
	y := mustRun(t, d, tensor.Ones(10000))
	kept := 0
	for _, v := range y.Data() {
		if v != 0 {
			kept++
			if !closeTo(float64(v), 4.0/3, 1e-6) {
				t.Fatalf("kept value %v, want 4/3", v)
			}
		}
	}
	if kept < 7250 || kept > 7750 {
		t.Errorf("dropout kept %d of 10000, want about 7500", kept)
	}

	// Stochastic depth in "batch" mode drops or keeps (scaled by 2) the whole batch.
	sd := NewStochasticDepth(0.5, true, randFor(4))
	seen := map[float32]bool{}
	for range 20 {
		out := mustRun(t, sd, tensor.Ones(3, 2)).Data()
		for _, v := range out {
			if v != out[0] {
				t.Fatalf("batch mode mixed values %v", out)
			}
		}
		seen[out[0]] = true
	}
	if len(seen) != 2 || !seen[0] || !seen[2] {
		t.Errorf("batch-mode outputs %v, want both 0 and 2", seen)
	}

	v := tensor.Zeros(2, 3, 4, 5)
	for i := range v.Data() {
		v.Data()[i] = float32(i)
	}
	if got := mustRun(t, NewFlatten(), v).Shape(); !slices.Equal(got, []int{2, 60}) {
		t.Errorf("flatten shape %v", got)
	}
	// 2×2 max and average pools of the first 4×5 plane (values 5i + j),
	// window at rows 0–1, columns 0–1 and 2–3.
	mp := mustRun(t, NewMaxPool(tensor.PoolOpts{Kernel: []int{2}}), v)
	if !slices.Equal(mp.Shape(), []int{2, 3, 2, 2}) {
		t.Fatalf("maxpool shape %v", mp.Shape())
	}
	approxSlice(t, "maxpool", mp.Data()[:2], []float64{6, 8}, 0)
	ap := mustRun(t, NewAvgPool(tensor.PoolOpts{Kernel: []int{2}}), v)
	approxSlice(t, "avgpool", ap.Data()[:2], []float64{3, 5}, 1e-6)
	// Global average of plane 0: mean of 0…19 = 9.5.
	gp := mustRun(t, NewAdaptiveAvgPool(1, 1), v)
	if !slices.Equal(gp.Shape(), []int{2, 3, 1, 1}) {
		t.Fatalf("adaptive pool shape %v", gp.Shape())
	}
	approxSlice(t, "adaptive", gp.Data()[:2], []float64{9.5, 29.5}, 1e-6)
}

// TestTrainingLoop fits y = 2x − 1 with a Linear layer through autograd,
// SGD with momentum, a warmup-cosine schedule and gradient clipping.
func TestTrainingLoop(t *testing.T) {
	l := NewLinear(randFor(3), 1, 1, true)
	opt, err := NewSGD(NamedParameters(l), SGDConfig{LR: 0.1, Momentum: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	sched := WarmupCosineLR(0.1, 0.001, 5, 200)
	x := tensor.New([]float32{-1, -0.5, 0, 0.5, 1}, 5, 1)
	y := tensor.New([]float32{-3, -2, -1, 0, 1}, 5, 1)
	var loss float32
	for s := range 200 {
		opt.ZeroGrad()
		l2 := tensor.MSE(l.Forward(x), y)
		l2.Backward()
		loss = l2.Item()
		ClipGradNorm(NamedParameters(l), 5)
		opt.SetLR(sched(s))
		opt.Step()
	}
	if loss > 1e-4 || !closeTo(float64(l.Weight.Item()), 2, 1e-2) || !closeTo(float64(l.Bias.Item()), -1, 1e-2) {
		t.Errorf("after training: loss %v, w %v, b %v; want 0, 2, −1", loss, l.Weight.Item(), l.Bias.Item())
	}
}
