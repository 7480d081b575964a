package tensor

// PoolOpts configures MaxPool and AvgPool. Slices hold one entry per spatial
// dimension or a single entry for all; Stride nil means Stride = Kernel.
type PoolOpts struct {
	Kernel          []int
	Stride          []int
	Padding         []int
	Dilation        []int // MaxPool only; nil means 1
	CeilMode        bool
	CountIncludePad bool // AvgPool only: count padded zeros in the divisor
}

// MaxPool returns the N-D max pooling of x (N×C×spatial…, 1–3 spatial dims),
// as torch.nn.functional.max_pool1d/2d/3d.
func MaxPool(x *Tensor, o PoolOpts) *Tensor { panic("unimplemented") }

// AvgPool returns the N-D average pooling of x, as
// torch.nn.functional.avg_pool1d/2d/3d.
func AvgPool(x *Tensor, o PoolOpts) *Tensor { panic("unimplemented") }

// AdaptiveAvgPool averages x (N×C×spatial…) into the output spatial size out,
// with PyTorch's bin edges floor(i*in/out) and ceil((i+1)*in/out).
func AdaptiveAvgPool(x *Tensor, out ...int) *Tensor { panic("unimplemented") }

// BatchNorm normalises x (N×C×…) per channel. In training it uses the batch
// statistics and updates runMean and runVar in place (unbiased variance,
// new = (1-momentum)*old + momentum*batch); otherwise it uses them. weight and
// bias (C) may be nil. runMean/runVar may be nil in training.
func BatchNorm(x, weight, bias, runMean, runVar *Tensor, training bool, momentum, eps float32) *Tensor {
	panic("unimplemented")
}

// LayerNorm normalises x over its last normDims dimensions and applies
// weight and bias of that trailing shape (either may be nil).
func LayerNorm(x, weight, bias *Tensor, normDims int, eps float32) *Tensor { panic("unimplemented") }

// InterpMode selects the interpolation kernel.
type InterpMode int

const (
	// InterpNearest picks the nearest input sample (PyTorch's "nearest").
	InterpNearest InterpMode = iota
	// InterpLinear is linear, bilinear or trilinear by the number of spatial dims.
	InterpLinear
)

// Interpolate resizes x (N×C×spatial…, 1–3 spatial dims) to size, as
// torch.nn.functional.interpolate with mode "nearest", "linear",
// "bilinear" or "trilinear" and the given align_corners.
func Interpolate(x *Tensor, size []int, mode InterpMode, alignCorners bool) *Tensor {
	panic("unimplemented")
}
