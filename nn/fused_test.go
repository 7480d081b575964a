package nn

import (
	"fmt"
	"math"
	"testing"

	"github.com/ctlens/ctlens/tensor"
)

// randomiseBN gives bn drawn affine parameters and running statistics, so
// that folding it is not the identity.
func randomiseBN(seed uint64, bn *BatchNorm) {
	rng := randFor(seed)
	for c := range bn.Channels {
		bn.Weight.Data()[c] = float32(0.5 + rng.Float64())
		bn.Bias.Data()[c] = float32(rng.NormFloat64() * 0.3)
		bn.RunningMean.Data()[c] = float32(rng.NormFloat64() * 0.3)
		bn.RunningVar.Data()[c] = float32(0.4 + 1.2*rng.Float64())
	}
}

func randTensor(seed uint64, shape ...int) *tensor.Tensor {
	rng := randFor(seed)
	t := tensor.Zeros(shape...)
	for i := range t.Data() {
		t.Data()[i] = float32(rng.NormFloat64())
	}
	return t
}

// unfused is the reference composition: the modules' Forward methods and
// the tensor ops, each checked against PyTorch in its own tests.
func unfused(conv *Conv, bn *BatchNorm, x, res *tensor.Tensor, act tensor.Activation) *tensor.Tensor {
	y := conv.Forward(x)
	if bn != nil {
		y = bn.Forward(y)
	}
	if res != nil {
		y = tensor.Add(y, res)
	}
	switch act {
	case tensor.ActReLU:
		y = tensor.ReLU(y)
	case tensor.ActReLU6:
		y = tensor.ReLU6(y)
	}
	return y
}

// relClose reports whether max|got − want| ≤ tol·max(1, max|want|).
func relClose(got, want *tensor.Tensor, tol float64) error {
	if !tensor.SameShape(got.Shape(), want.Shape()) {
		return fmt.Errorf("shape %v, want %v", got.Shape(), want.Shape())
	}
	scale, worst, wi := 1.0, 0.0, 0
	for _, v := range want.Data() {
		scale = math.Max(scale, math.Abs(float64(v)))
	}
	for i, v := range want.Data() {
		if d := math.Abs(float64(got.Data()[i]) - float64(v)); d > worst || math.IsNaN(d) {
			worst, wi = d, i
		}
	}
	if worst > tol*scale || math.IsNaN(worst) {
		return fmt.Errorf("element %d: got %v, want %v (max |diff| %.3g, scale %.3g)", wi, got.Data()[wi], want.Data()[wi], worst, scale)
	}
	return nil
}

func TestConvBNActMatchesUnfused(t *testing.T) {
	type convCase struct {
		name      string
		in, out   int
		kernel    []int
		o         ConvOpts
		spatial   []int
		bn, res   bool
		act       tensor.Activation
		wantShape []int
	}
	cases := []convCase{
		{"3x3x3/bn/relu", 3, 4, []int{3, 3, 3}, ConvOpts{Padding: []int{1}, NoBias: true}, []int{5, 6, 7}, true, false, tensor.ActReLU, []int{2, 4, 5, 6, 7}},
		{"3x3x3-stride2/bn/residual/relu", 4, 6, []int{3, 3, 3}, ConvOpts{Stride: []int{2}, Padding: []int{1}, NoBias: true}, []int{6, 6, 6}, true, true, tensor.ActReLU, []int{2, 6, 3, 3, 3}},
		{"1x1x1-bias/bn/residual", 6, 5, []int{1, 1, 1}, ConvOpts{}, []int{3, 4, 5}, true, true, tensor.ActNone, []int{2, 5, 3, 4, 5}},
		{"1x1x1-bias/no-bn", 6, 5, []int{1, 1, 1}, ConvOpts{Stride: []int{2}}, []int{3, 4, 5}, false, false, tensor.ActNone, []int{2, 5, 2, 2, 3}},
		{"depthwise/bn/relu6", 6, 6, []int{3, 3, 3}, ConvOpts{Padding: []int{1}, Groups: 6, NoBias: true}, []int{4, 5, 6}, true, false, tensor.ActReLU6, []int{2, 6, 4, 5, 6}},
		{"1x7x7/bn/relu", 3, 4, []int{1, 7, 7}, ConvOpts{Stride: []int{1, 2, 2}, Padding: []int{0, 3, 3}, NoBias: true}, []int{3, 9, 10}, true, false, tensor.ActReLU, []int{2, 4, 3, 5, 5}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seed := uint64(10 * (i + 1))
			conv := NewConv(randFor(seed), c.in, c.out, c.kernel, c.o)
			var bn *BatchNorm
			if c.bn {
				bn = NewBatchNorm(c.out, BatchNormOpts{Eps: 1e-3})
				randomiseBN(seed+1, bn)
			}
			x := randTensor(seed+2, append([]int{2, c.in}, c.spatial...)...)
			var res *tensor.Tensor
			if c.res {
				res = randTensor(seed+3, c.wantShape...)
			}
			SetTraining(conv, false)
			SetRequiresGrad(conv, false)
			if bn != nil {
				SetTraining(bn, false)
				SetRequiresGrad(bn, false)
			}
			if !canFuse(conv, bn, x, res) {
				t.Fatal("eval-mode frozen modules: canFuse false")
			}
			got := ConvBNAct(conv, bn, x, res, c.act)
			want := unfused(conv, bn, x, res, c.act)
			if err := relClose(got, want, 1e-5); err != nil {
				t.Fatal(err)
			}
			if got.RequiresGrad() {
				t.Error("fused output requires gradients")
			}
		})
	}
}

// TestConvBNActFallsBack checks that ConvBNAct does not fuse when training,
// without running statistics or when anything requires gradients, and that
// it then behaves as the modules: running statistics update and gradients
// reach the parameters and input.
func TestConvBNActFallsBack(t *testing.T) {
	mk := func() (*Conv, *BatchNorm, *tensor.Tensor) {
		conv := NewConv(randFor(3), 2, 3, []int{3, 3, 3}, ConvOpts{Padding: []int{1}, NoBias: true})
		bn := NewBatchNorm(3, BatchNormOpts{})
		randomiseBN(4, bn)
		SetTraining(conv, false)
		SetTraining(bn, false)
		SetRequiresGrad(conv, false)
		SetRequiresGrad(bn, false)
		return conv, bn, randTensor(5, 2, 2, 4, 4, 4)
	}
	cases := []struct {
		name  string
		setup func(conv *Conv, bn *BatchNorm, x *tensor.Tensor) (*BatchNorm, *tensor.Tensor, *tensor.Tensor)
		grads bool
	}{
		{"conv training", func(c *Conv, bn *BatchNorm, x *tensor.Tensor) (*BatchNorm, *tensor.Tensor, *tensor.Tensor) {
			SetTraining(c, true)
			return bn, x, nil
		}, false},
		{"bn training", func(c *Conv, bn *BatchNorm, x *tensor.Tensor) (*BatchNorm, *tensor.Tensor, *tensor.Tensor) {
			SetTraining(bn, true)
			return bn, x, nil
		}, false},
		{"bn without running stats", func(c *Conv, _ *BatchNorm, x *tensor.Tensor) (*BatchNorm, *tensor.Tensor, *tensor.Tensor) {
			bn := NewBatchNorm(3, BatchNormOpts{NoRunningStats: true})
			SetTraining(bn, false)
			SetRequiresGrad(bn, false)
			return bn, x, nil
		}, false},
		{"input requires grad", func(c *Conv, bn *BatchNorm, x *tensor.Tensor) (*BatchNorm, *tensor.Tensor, *tensor.Tensor) {
			return bn, x.SetRequiresGrad(true), nil
		}, true},
		{"weight requires grad", func(c *Conv, bn *BatchNorm, x *tensor.Tensor) (*BatchNorm, *tensor.Tensor, *tensor.Tensor) {
			c.Weight.SetRequiresGrad(true)
			return bn, x, nil
		}, true},
		{"bn weight requires grad", func(c *Conv, bn *BatchNorm, x *tensor.Tensor) (*BatchNorm, *tensor.Tensor, *tensor.Tensor) {
			bn.Weight.SetRequiresGrad(true)
			return bn, x, nil
		}, true},
		{"residual requires grad", func(c *Conv, bn *BatchNorm, x *tensor.Tensor) (*BatchNorm, *tensor.Tensor, *tensor.Tensor) {
			return bn, x, randTensor(6, 2, 3, 4, 4, 4).SetRequiresGrad(true)
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conv, bn, x := mk()
			bn, x, res := c.setup(conv, bn, x)
			if canFuse(conv, bn, x, res) {
				t.Fatal("canFuse true")
			}
			// The same modules and inputs, built again, through the
			// unfused composition.
			rconv, rbn, rx := mk()
			rbn, rx, rres := c.setup(rconv, rbn, rx)
			want := unfused(rconv, rbn, rx, rres, tensor.ActReLU)
			before := float32(0)
			if bn.NumBatchesTracked != nil {
				before = bn.NumBatchesTracked.Data()[0]
			}
			got := ConvBNAct(conv, bn, x, res, tensor.ActReLU)
			if err := relClose(got, want, 1e-6); err != nil {
				t.Fatal(err)
			}
			if bn.Training() && bn.NumBatchesTracked.Data()[0] != before+1 {
				t.Error("training BatchNorm did not count the batch")
			}
			if got.RequiresGrad() != c.grads {
				t.Fatalf("output RequiresGrad %v, want %v", got.RequiresGrad(), c.grads)
			}
			if c.grads {
				tensor.Sum(got, nil, false).Backward()
				for _, p := range []*tensor.Tensor{x, conv.Weight, bn.Weight, res} {
					if p != nil && p.RequiresGrad() && p.Grad() == nil {
						t.Error("a tensor requiring gradients got none")
					}
				}
			}
		})
	}
}

func TestBatchNormAct(t *testing.T) {
	for _, act := range []tensor.Activation{tensor.ActNone, tensor.ActReLU, tensor.ActReLU6} {
		bn := NewBatchNorm(4, BatchNormOpts{})
		randomiseBN(7, bn)
		SetTraining(bn, false)
		SetRequiresGrad(bn, false)
		x := randTensor(8, 2, 4, 3, 4, 5)
		for i := range x.Data() {
			x.Data()[i] *= 4 // reach ReLU6's upper clamp
		}
		want := bn.Forward(x)
		switch act {
		case tensor.ActReLU:
			want = tensor.ReLU(want)
		case tensor.ActReLU6:
			want = tensor.ReLU6(want)
		}
		if err := relClose(BatchNormAct(bn, x, act), want, 1e-6); err != nil {
			t.Errorf("act %d: %v", act, err)
		}
	}
}

// TestFusedForward runs a nested Sequential with every fusable pattern and
// modules that are not, with a residual and a final ReLU, against the
// modules' own Forward.
func TestFusedForward(t *testing.T) {
	rng := randFor(11)
	bn := func(c int, seed uint64) *BatchNorm {
		b := NewBatchNorm(c, BatchNormOpts{})
		randomiseBN(seed, b)
		return b
	}
	inner := NewSequential(
		NewConv(rng, 3, 5, []int{1, 3, 3}, ConvOpts{Padding: []int{0, 1, 1}, NoBias: true}), bn(5, 1), &ReLU{},
		NewConv(rng, 5, 6, []int{3, 1, 1}, ConvOpts{Padding: []int{1, 0, 0}, NoBias: true}))
	seqs := map[string]*Sequential{
		"r2plus1d-like": NewSequential(inner, bn(6, 2)),
		"pre-activation": NewSequential(bn(3, 3), &ReLU6{},
			NewConv(rng, 3, 6, []int{1, 1, 1}, ConvOpts{}),
			NewMaxPool(tensor.PoolOpts{Kernel: []int{1}}),
			NewDropout(0.5, rng)),
		"conv-relu-last": NewSequential(NewConv(rng, 3, 6, []int{3, 3, 3}, ConvOpts{Padding: []int{1}}), &ReLU{}),
	}
	x := randTensor(12, 2, 3, 4, 5, 6)
	res := randTensor(13, 2, 6, 4, 5, 6)
	for name, s := range seqs {
		t.Run(name, func(t *testing.T) {
			SetTraining(s, false)
			SetRequiresGrad(s, false)
			want := tensor.ReLU(tensor.Add(s.Forward(x), res))
			got := FusedForward(x, res, tensor.ActReLU, s)
			if err := relClose(got, want, 1e-5); err != nil {
				t.Fatal(err)
			}
			if err := relClose(FusedForward(x, nil, tensor.ActNone, s), s.Forward(x), 1e-5); err != nil {
				t.Fatalf("no residual: %v", err)
			}
		})
	}
}
