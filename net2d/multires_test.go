package net2d

import (
	"math"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// TestMultiResolutionLossHandWorked checks L = (1/n)Σ task + (α/n)·S on
// values worked by hand: teacher f0 = (1, 3) whitens to (−1, 1)
// (eps 10⁻⁶ aside); student f1 = (−1, 3) has differences (0, 2), smooth-L1
// terms 0 and 1.5, mean 0.75. With tasks 0.5 and 1.5 and α = 2:
// L = (0.5 + 1.5)/2 + 2·0.75/2 = 1.75.
func TestMultiResolutionLossHandWorked(t *testing.T) {
	f0 := tensor.New([]float32{1, 3}, 1, 2)
	f1 := tensor.New([]float32{-1, 3}, 1, 2).SetRequiresGrad(true)
	s, err := ScaleConsistencyLoss([]*tensor.Tensor{f0, f1})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(s.Item())-0.75) > 1e-5 {
		t.Errorf("scale-consistency loss %v, want 0.75", s.Item())
	}
	l, err := MultiResolutionLoss([]*tensor.Tensor{tensor.Scalar(0.5), tensor.Scalar(1.5)}, []*tensor.Tensor{f0, f1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(l.Item())-1.75) > 1e-5 {
		t.Errorf("multi-resolution loss %v, want 1.75", l.Item())
	}
	// ∂L/∂f1 = (α/n)·(1/2)·(d/β clipped to ±1) = 0.5·(0, 1).
	l.Backward()
	if err := tensortest.AllClose(f1.Grad(), tensor.New([]float32{0, 0.5}, 1, 2), 0, 1e-5); err != nil {
		t.Errorf("gradient: %v", err)
	}
}

func TestMultiResolutionLossErrors(t *testing.T) {
	f := tensor.Zeros(2, 4)
	cases := []struct {
		name  string
		task  []*tensor.Tensor
		feats []*tensor.Tensor
		want  string
	}{
		{"count", []*tensor.Tensor{tensor.Scalar(1)}, []*tensor.Tensor{f, f}, "1 task losses and 2 features"},
		{"rank", []*tensor.Tensor{tensor.Scalar(1)}, []*tensor.Tensor{tensor.Zeros(4)}, "feature 0 of shape [4]"},
		{"shapes", []*tensor.Tensor{tensor.Scalar(1), tensor.Scalar(1)}, []*tensor.Tensor{f, tensor.Zeros(2, 5)}, "differs from feature 0"},
		{"task", []*tensor.Tensor{tensor.Zeros(2)}, []*tensor.Tensor{f}, "task loss 0 is not a scalar"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := MultiResolutionLoss(c.task, c.feats, 1)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestForwardResolutionsTrains runs one multi-resolution step on a small
// ResFormer: every parameter gets a gradient, and resolutions must
// descend.
func TestForwardResolutionsTrains(t *testing.T) {
	r, err := NewResFormer(newRng(11), "ti", 1, 3, ResFormerConfig{Depth: 1, Patch: 8})
	if err != nil {
		t.Fatal(err)
	}
	big := tensortest.Rand(newRng(12), 2, 1, 32, 32)
	small := tensor.Interpolate(big, []int{16, 16}, tensor.InterpLinear, false)
	if _, _, err := ForwardResolutions(r, []*tensor.Tensor{small, big}); err == nil || !strings.Contains(err.Error(), "must descend") {
		t.Fatalf("ascending resolutions: error %v", err)
	}
	logits, cls, err := ForwardResolutions(r, []*tensor.Tensor{big, small})
	if err != nil {
		t.Fatal(err)
	}
	var task []*tensor.Tensor
	for _, l := range logits {
		task = append(task, tensor.CrossEntropy(l, []int{0, 2}, tensor.CEOpts{LabelSmoothing: 0.1}))
	}
	loss, err := MultiResolutionLoss(task, cls, 1)
	if err != nil {
		t.Fatal(err)
	}
	loss.Backward()
	for _, p := range nn.NamedParameters(r) {
		if p.Tensor.Grad() == nil {
			t.Errorf("%s got no gradient", p.Name)
		}
	}
}
