package nn

import (
	"math/rand/v2"

	"github.com/ctlens/ctlens/tensor"
)

// Parameter-free modules. Their zero values are ready to use (&nn.ReLU{}),
// except where a constructor is documented.

// ReLU is max(x, 0) (torch.nn.ReLU).
type ReLU struct{ Base }

// Forward returns max(x, 0).
func (*ReLU) Forward(x *tensor.Tensor) *tensor.Tensor { return tensor.ReLU(x) }

// ReLU6 is min(max(x, 0), 6) (torch.nn.ReLU6).
type ReLU6 struct{ Base }

// Forward returns min(max(x, 0), 6).
func (*ReLU6) Forward(x *tensor.Tensor) *tensor.Tensor { return tensor.ReLU6(x) }

// GELU is x·Φ(x) with the exact Gaussian CDF (torch.nn.GELU()).
type GELU struct{ Base }

// Forward returns x·Φ(x).
func (*GELU) Forward(x *tensor.Tensor) *tensor.Tensor { return tensor.GELU(x) }

// SiLU is x·sigmoid(x) (torch.nn.SiLU, "swish").
type SiLU struct{ Base }

// Forward returns x·sigmoid(x).
func (*SiLU) Forward(x *tensor.Tensor) *tensor.Tensor { return tensor.SiLU(x) }

// Sigmoid is 1/(1 + e^−x) (torch.nn.Sigmoid).
type Sigmoid struct{ Base }

// Forward returns 1/(1 + e^−x).
func (*Sigmoid) Forward(x *tensor.Tensor) *tensor.Tensor { return tensor.Sigmoid(x) }

// Identity returns its input unchanged (torch.nn.Identity).
type Identity struct{ Base }

// Forward returns x.
func (*Identity) Forward(x *tensor.Tensor) *tensor.Tensor { return x }

// Flatten merges dimensions StartDim… into one (torch.nn.Flatten with
// end_dim −1). The zero value has StartDim 0; NewFlatten gives PyTorch's
// default 1.
type Flatten struct {
	Base
	StartDim int
}

// NewFlatten returns a Flatten from dimension 1 (N×C×… → N×(C·…)).
func NewFlatten() *Flatten { return &Flatten{StartDim: 1} }

// Forward returns x reshaped to x.Shape()[:StartDim] × prod(x.Shape()[StartDim:]).
func (f *Flatten) Forward(x *tensor.Tensor) *tensor.Tensor { return tensor.Flatten(x, f.StartDim) }

// Dropout zeroes each element with probability P and scales the others by
// 1/(1 − P) in training; it is the identity in evaluation
// (torch.nn.Dropout).
type Dropout struct {
	Base
	P   float32
	Rng *rand.Rand
}

// NewDropout returns a Dropout with probability p drawing from rng. It
// panics with a *tensor.ShapeError unless 0 ≤ p < 1 and, for p > 0, rng is
// non-nil.
func NewDropout(p float32, rng *rand.Rand) *Dropout {
	if !(p >= 0 && p < 1) || (p > 0 && rng == nil) {
		shapePanic("nn.NewDropout", "p %g (want 0 ≤ p < 1) with rng %v", p, rng != nil)
	}
	return &Dropout{P: p, Rng: rng}
}

// Forward applies dropout to x in training.
func (d *Dropout) Forward(x *tensor.Tensor) *tensor.Tensor {
	if d.P == 0 || !d.Training() {
		return x
	}
	return tensor.Dropout(x, d.P, true, d.Rng)
}

// StochasticDepth drops whole residual branches with probability P in
// training, scaling survivors by 1/(1 − P) (torchvision.ops.StochasticDepth:
// mode "row" drops each sample of the batch independently, "batch"
// (WholeBatch) the whole batch); it is the identity in evaluation.
type StochasticDepth struct {
	Base
	P          float32
	WholeBatch bool
	Rng        *rand.Rand
}

// NewStochasticDepth returns a StochasticDepth with probability p in "row"
// mode (wholeBatch false) or "batch" mode. It panics with a
// *tensor.ShapeError unless 0 ≤ p < 1 and, for p > 0, rng is non-nil.
func NewStochasticDepth(p float32, wholeBatch bool, rng *rand.Rand) *StochasticDepth {
	if !(p >= 0 && p < 1) || (p > 0 && rng == nil) {
		shapePanic("nn.NewStochasticDepth", "p %g (want 0 ≤ p < 1) with rng %v", p, rng != nil)
	}
	return &StochasticDepth{P: p, WholeBatch: wholeBatch, Rng: rng}
}

// Forward applies stochastic depth to x (N×…) in training.
func (s *StochasticDepth) Forward(x *tensor.Tensor) *tensor.Tensor {
	if s.P == 0 || !s.Training() {
		return x
	}
	return tensor.StochasticDepth(x, s.P, s.WholeBatch, true, s.Rng)
}

// MaxPool is N-D max pooling (torch.nn.MaxPool1d/2d/3d by the input's
// number of spatial dimensions) with options Opts.
type MaxPool struct {
	Base
	Opts tensor.PoolOpts
}

// NewMaxPool returns a MaxPool; o.Stride nil means the kernel size, as
// PyTorch.
func NewMaxPool(o tensor.PoolOpts) *MaxPool { return &MaxPool{Opts: o} }

// Forward max-pools x (N×C×spatial…).
func (p *MaxPool) Forward(x *tensor.Tensor) *tensor.Tensor { return tensor.MaxPool(x, p.Opts) }

// AvgPool is N-D average pooling (torch.nn.AvgPool1d/2d/3d) with options
// Opts; note that PyTorch's default count_include_pad=True is
// Opts.CountIncludePad = true here.
type AvgPool struct {
	Base
	Opts tensor.PoolOpts
}

// NewAvgPool returns an AvgPool with options o, used as given.
func NewAvgPool(o tensor.PoolOpts) *AvgPool { return &AvgPool{Opts: o} }

// Forward average-pools x (N×C×spatial…).
func (p *AvgPool) Forward(x *tensor.Tensor) *tensor.Tensor { return tensor.AvgPool(x, p.Opts) }

// AdaptiveAvgPool averages its input into the spatial output size Out
// (torch.nn.AdaptiveAvgPool1d/2d/3d); Out has one entry per spatial
// dimension.
type AdaptiveAvgPool struct {
	Base
	Out []int
}

// NewAdaptiveAvgPool returns an AdaptiveAvgPool to the given output size,
// e.g. NewAdaptiveAvgPool(1, 1, 1) for global 3-D pooling.
func NewAdaptiveAvgPool(out ...int) *AdaptiveAvgPool {
	for _, o := range out {
		if o <= 0 {
			shapePanic("nn.NewAdaptiveAvgPool", "output size %v: want positive sizes", out)
		}
	}
	return &AdaptiveAvgPool{Out: append([]int(nil), out...)}
}

// Forward pools x (N×C×spatial…) to N×C×Out….
func (p *AdaptiveAvgPool) Forward(x *tensor.Tensor) *tensor.Tensor {
	return tensor.AdaptiveAvgPool(x, p.Out...)
}

// Func wraps a parameter-free function of one tensor as a module, for use in
// a Sequential (e.g. a permutation between layers).
type Func struct {
	Base
	F func(x *tensor.Tensor) *tensor.Tensor
}

// NewFunc returns a Func module computing f(x).
func NewFunc(f func(x *tensor.Tensor) *tensor.Tensor) *Func { return &Func{F: f} }

// Forward returns F(x).
func (f *Func) Forward(x *tensor.Tensor) *tensor.Tensor { return f.F(x) }
