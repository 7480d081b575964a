package nn

import (
	"math"
	"math/rand/v2"

	"github.com/ctlens/ctlens/tensor"
)

// ConvOpts configures NewConv. Stride, Padding and Dilation hold one entry
// per spatial dimension or a single entry for all; nil means 1, 0 and 1.
// Groups 0 means 1. The zero value is PyTorch's default (with bias).
type ConvOpts struct {
	Stride   []int
	Padding  []int
	Dilation []int
	Groups   int
	NoBias   bool // bias=False
}

// Conv is a 1-, 2- or 3-D convolution (torch.nn.Conv1d/2d/3d, the
// dimension given by the kernel's length): y = W ⋆ x + b with x of shape
// N×In×spatial… and y of shape N×Out×spatial'…. Parameters: "weight"
// (Out×In/Groups×Kernel…) and, unless NoBias, "bias" (Out).
type Conv struct {
	Base
	Weight   *tensor.Tensor
	Bias     *tensor.Tensor // nil without bias
	In, Out  int
	Kernel   []int
	Stride   []int
	Padding  []int
	Dilation []int
	Groups   int
}

// NewConv returns a convolution from in to out channels with the given
// kernel size (1–3 entries), initialised as PyTorch: weight
// U(−1/√fanIn, 1/√fanIn) (kaiming_uniform with a = √5) and bias
// U(−1/√fanIn, 1/√fanIn), fanIn = in/groups·prod(kernel). It panics with a
// *tensor.ShapeError for invalid arguments.
func NewConv(rng *rand.Rand, in, out int, kernel []int, o ConvOpts) *Conv {
	nd := len(kernel)
	g := max(o.Groups, 1)
	switch {
	case nd < 1 || nd > 3:
		shapePanic("nn.NewConv", "kernel %v: want 1 to 3 spatial dimensions", kernel)
	case in <= 0 || out <= 0:
		shapePanic("nn.NewConv", "in %d, out %d channels: want positive", in, out)
	case o.Groups < 0 || in%g != 0 || out%g != 0:
		shapePanic("nn.NewConv", "groups %d must divide in %d and out %d channels", o.Groups, in, out)
	}
	for _, k := range kernel {
		if k <= 0 {
			shapePanic("nn.NewConv", "kernel %v: want positive sizes", kernel)
		}
	}
	checkPerDim("nn.NewConv", "stride", o.Stride, nd, 1)
	checkPerDim("nn.NewConv", "padding", o.Padding, nd, 0)
	checkPerDim("nn.NewConv", "dilation", o.Dilation, nd, 1)
	c := &Conv{
		In: in, Out: out, Kernel: append([]int(nil), kernel...),
		Stride: clone(o.Stride), Padding: clone(o.Padding), Dilation: clone(o.Dilation), Groups: g,
	}
	shape := append([]int{out, in / g}, kernel...)
	c.Weight = c.Param("weight", tensor.Zeros(shape...))
	KaimingUniform(rng, c.Weight, FanIn, LeakyReLUGain(math.Sqrt(5)))
	if !o.NoBias {
		c.Bias = c.Param("bias", tensor.Zeros(out))
		fanIn, _ := Fans(shape)
		b := 1 / math.Sqrt(float64(fanIn))
		Uniform(rng, c.Bias, -b, b)
	}
	return c
}

func clone(s []int) []int {
	if s == nil {
		return nil
	}
	return append([]int(nil), s...)
}

func checkPerDim(op, what string, s []int, nd, minV int) {
	if len(s) != 0 && len(s) != 1 && len(s) != nd {
		shapePanic(op, "%s %v: want 1 or %d entries", what, s, nd)
	}
	for _, v := range s {
		if v < minV {
			shapePanic(op, "%s %v: entries must be at least %d", what, s, minV)
		}
	}
}

// Forward returns the convolution of x (N×In×spatial…).
func (c *Conv) Forward(x *tensor.Tensor) *tensor.Tensor {
	return tensor.Conv(x, c.Weight, c.Bias, tensor.ConvOpts{
		Stride: c.Stride, Padding: c.Padding, Dilation: c.Dilation, Groups: c.Groups,
	})
}

// Linear is an affine map y = x·Wᵀ + b over the last dimension
// (torch.nn.Linear): x is …×In, y is …×Out. Parameters: "weight" (Out×In)
// and, with bias, "bias" (Out).
type Linear struct {
	Base
	Weight  *tensor.Tensor
	Bias    *tensor.Tensor // nil without bias
	In, Out int
}

// NewLinear returns a Linear layer initialised as PyTorch: weight and bias
// U(−1/√in, 1/√in). It panics with a *tensor.ShapeError for non-positive
// sizes.
func NewLinear(rng *rand.Rand, in, out int, bias bool) *Linear {
	if in <= 0 || out <= 0 {
		shapePanic("nn.NewLinear", "in %d, out %d features: want positive", in, out)
	}
	l := &Linear{In: in, Out: out}
	l.Weight = l.Param("weight", tensor.Zeros(out, in))
	KaimingUniform(rng, l.Weight, FanIn, LeakyReLUGain(math.Sqrt(5)))
	if bias {
		l.Bias = l.Param("bias", tensor.Zeros(out))
		b := 1 / math.Sqrt(float64(in))
		Uniform(rng, l.Bias, -b, b)
	}
	return l
}

// Forward returns x·Wᵀ + b for x of shape …×In.
func (l *Linear) Forward(x *tensor.Tensor) *tensor.Tensor {
	return tensor.Linear(x, l.Weight, l.Bias)
}

// BatchNormOpts configures NewBatchNorm. The zero value is PyTorch's
// default: eps 1e-5, momentum 0.1, affine, tracking running statistics.
type BatchNormOpts struct {
	Eps            float32 // 0 means 1e-5
	Momentum       float32 // 0 means 0.1
	NoAffine       bool    // affine=False: no weight and bias
	NoRunningStats bool    // track_running_stats=False: always batch statistics, no buffers
}

// BatchNorm normalises each channel of x (N×C×…, so it serves as
// BatchNorm1d, 2d and 3d): y = (x − μ)/√(σ² + eps)·weight + bias, with the
// batch's statistics in training (updating the running ones:
// new = (1 − momentum)·old + momentum·batch, unbiased variance) and the
// running ones in evaluation. Parameters "weight" (init 1) and "bias"
// (init 0); buffers "running_mean" (0), "running_var" (1) and
// "num_batches_tracked" (a 0-D count, stored as float32, incremented per
// training forward).
type BatchNorm struct {
	Base
	Weight, Bias      *tensor.Tensor // nil with NoAffine
	RunningMean       *tensor.Tensor // nil with NoRunningStats
	RunningVar        *tensor.Tensor // nil with NoRunningStats
	NumBatchesTracked *tensor.Tensor // nil with NoRunningStats
	Channels          int
	Eps, Momentum     float32
}

// NewBatchNorm returns a batch normalisation over c channels. It panics with
// a *tensor.ShapeError for c ≤ 0.
func NewBatchNorm(c int, o BatchNormOpts) *BatchNorm {
	if c <= 0 {
		shapePanic("nn.NewBatchNorm", "%d channels: want positive", c)
	}
	bn := &BatchNorm{Channels: c, Eps: o.Eps, Momentum: o.Momentum}
	if bn.Eps == 0 {
		bn.Eps = 1e-5
	}
	if bn.Momentum == 0 {
		bn.Momentum = 0.1
	}
	if !o.NoAffine {
		bn.Weight = bn.Param("weight", tensor.Ones(c))
		bn.Bias = bn.Param("bias", tensor.Zeros(c))
	}
	if !o.NoRunningStats {
		bn.RunningMean = bn.Buffer("running_mean", tensor.Zeros(c))
		bn.RunningVar = bn.Buffer("running_var", tensor.Ones(c))
		bn.NumBatchesTracked = bn.Buffer("num_batches_tracked", tensor.Scalar(0))
	}
	return bn
}

// Forward normalises x (N×C×…).
func (bn *BatchNorm) Forward(x *tensor.Tensor) *tensor.Tensor {
	if x.Dim() < 2 || x.Size(1) != bn.Channels {
		shapePanic("nn.BatchNorm", "input of shape %v for %d channels: want N×%d×…", x.Shape(), bn.Channels, bn.Channels)
	}
	training := bn.Training() || bn.RunningMean == nil
	y := tensor.BatchNorm(x, bn.Weight, bn.Bias, bn.RunningMean, bn.RunningVar, training, bn.Momentum, bn.Eps)
	if bn.Training() && bn.NumBatchesTracked != nil {
		bn.NumBatchesTracked.Data()[0]++
	}
	return y
}

// LayerNorm normalises over the trailing dimensions Shape of its input:
// y = (x − mean)/√(var + eps)·weight + bias with the biased variance
// (torch.nn.LayerNorm, elementwise affine). Parameters "weight" (Shape,
// init 1) and "bias" (Shape, init 0).
type LayerNorm struct {
	Base
	Weight, Bias *tensor.Tensor
	Shape        []int
	Eps          float32
}

// NewLayerNorm returns a LayerNorm over the trailing dimensions shape with
// the given eps (0 means PyTorch's 1e-5; torchvision's ViT uses 1e-6).
func NewLayerNorm(shape []int, eps float32) *LayerNorm {
	if len(shape) == 0 {
		shapePanic("nn.NewLayerNorm", "empty normalized shape")
	}
	for _, s := range shape {
		if s <= 0 {
			shapePanic("nn.NewLayerNorm", "normalized shape %v: want positive sizes", shape)
		}
	}
	if eps == 0 {
		eps = 1e-5
	}
	ln := &LayerNorm{Shape: append([]int(nil), shape...), Eps: eps}
	ln.Weight = ln.Param("weight", tensor.Ones(shape...))
	ln.Bias = ln.Param("bias", tensor.Zeros(shape...))
	return ln
}

// Forward normalises x (…×Shape).
func (ln *LayerNorm) Forward(x *tensor.Tensor) *tensor.Tensor {
	nd := len(ln.Shape)
	if x.Dim() < nd || !tensor.SameShape(x.Shape()[x.Dim()-nd:], ln.Shape) {
		shapePanic("nn.LayerNorm", "input of shape %v: want trailing dimensions %v", x.Shape(), ln.Shape)
	}
	return tensor.LayerNorm(x, ln.Weight, ln.Bias, nd, ln.Eps)
}
