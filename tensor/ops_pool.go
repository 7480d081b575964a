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
// as torch.nn.functional.max_pool1d/2d/3d:
//
//	y[n, c, p] = max_{t < kernel} x[n, c, p·stride − padding + t·dilation]
//
// over the positions inside x (padding acts as −∞; NaN propagates). Each
// output size is floor((in + 2·padding − dilation·(kernel−1) − 1 + r)/stride) + 1
// with r = stride−1 in ceil mode (0 otherwise), less one in ceil mode when
// the last window would start in the right padding. The gradient flows to
// the first maximum of each window. A window whose dilated taps all fall in
// the padding yields −∞ and passes no gradient (PyTorch sends that gradient
// to an unrelated element).
//
// It panics with a *ShapeError for an input that is not N×C×spatial, option
// slices of the wrong length, a non-positive kernel, stride or dilation,
// padding above kernel/2, or an output size below 1.
func MaxPool(x *Tensor, o PoolOpts) *Tensor {
	g := newPoolGeom("MaxPool", x, o, true)
	y := Zeros(g.outShape()...)
	var idx []int32
	if x.requiresGrad {
		idx = make([]int32, len(y.data))
	}
	g.maxForward(x.data, y.data, idx)
	return record(y, func(gy *Tensor) {
		gx := make([]float32, len(x.data))
		g.maxBackward(gy.data, gx, idx)
		accumulate(x, &Tensor{shape: x.shape, data: gx})
	}, x)
}

// AvgPool returns the N-D average pooling of x, as
// torch.nn.functional.avg_pool1d/2d/3d:
//
//	y[n, c, p] = Σ_{t < kernel} x[n, c, p·stride − padding + t] / divisor
//
// summing the positions inside x. The output size is MaxPool's with
// dilation 1. Per axis, a window [s, s+kernel) is first clipped to the padded
// input [−padding, in+padding) and then to the input [0, in); the divisor is
// the product over axes of the first clipped length when CountIncludePad is
// set, of the second otherwise. Dilation must be nil or all 1.
//
// It panics with a *ShapeError under MaxPool's conditions, when a dilation
// other than 1 is given, or, with 3 spatial dims only (as avg_pool3d), when
// the input is smaller than the kernel along some axis.
func AvgPool(x *Tensor, o PoolOpts) *Tensor {
	g := newPoolGeom("AvgPool", x, o, false)
	y := Zeros(g.outShape()...)
	g.avgForward(x.data, y.data)
	return record(y, func(gy *Tensor) {
		gx := make([]float32, len(x.data))
		g.avgBackward(gy.data, gx)
		accumulate(x, &Tensor{shape: x.shape, data: gx})
	}, x)
}

// AdaptiveAvgPool averages x (N×C×spatial…) into the output spatial size out,
// with PyTorch's bin edges floor(i*in/out) and ceil((i+1)*in/out):
//
//	y[n, c, i] = mean_{floor(i·in/out) ≤ j < ceil((i+1)·in/out)} x[n, c, j]
//
// per axis, as torch.nn.functional.adaptive_avg_pool1d/2d/3d. out holds one
// size per spatial dimension or one for all. It panics with a *ShapeError
// for an input that is not N×C×spatial (1–3 dims) or a wrong or
// non-positive out.
func AdaptiveAvgPool(x *Tensor, out ...int) *Tensor {
	g := newAdaptiveGeom(x, out)
	y := Zeros(g.outShape()...)
	g.avgForward(x.data, y.data)
	return record(y, func(gy *Tensor) {
		gx := make([]float32, len(x.data))
		g.avgBackward(gy.data, gx)
		accumulate(x, &Tensor{shape: x.shape, data: gx})
	}, x)
}

// BatchNorm normalises x (N×C×…) per channel. In training it uses the batch
// statistics and updates runMean and runVar in place (unbiased variance,
// new = (1-momentum)*old + momentum*batch); otherwise it uses them. weight and
// bias (C) may be nil. runMean/runVar may be nil in training.
//
// As torch.nn.functional.batch_norm:
//
//	y = (x − μ_c)/sqrt(σ²_c + eps)·weight_c + bias_c
//
// where in training μ_c and σ²_c are the mean and biased variance of channel c
// over the batch and all spatial positions (the running variance is updated
// with the unbiased σ²_c·m/(m−1), m values per channel), and in evaluation
// they are runMean_c and runVar_c. The gradient of training mode flows
// through the batch statistics; the running statistics get no gradient.
//
// It panics with a *ShapeError when x has fewer than 2 dimensions, a vector
// is not of shape [C], training sees only 1 value per channel, or evaluation
// lacks a running statistic.
func BatchNorm(x, weight, bias, runMean, runVar *Tensor, training bool, momentum, eps float32) *Tensor {
	return batchNorm(x, weight, bias, runMean, runVar, training, momentum, eps)
}

// LayerNorm normalises x over its last normDims dimensions and applies
// weight and bias of that trailing shape (either may be nil):
//
//	y = (x − μ)/sqrt(σ² + eps)·weight + bias
//
// with μ and the biased variance σ² taken over the trailing normDims
// dimensions of each leading index, as torch.nn.functional.layer_norm. It
// panics with a *ShapeError when normDims is not in [1, x.Dim()] or weight or
// bias does not have the trailing shape.
func LayerNorm(x, weight, bias *Tensor, normDims int, eps float32) *Tensor {
	return layerNorm(x, weight, bias, normDims, eps)
}

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
//
// Per axis, output index o reads source coordinate
//
//	nearest:                  min(floor(o·in/out), in−1)
//	linear, alignCorners:     o·(in−1)/(out−1)  (0 when out = 1)
//	linear, not alignCorners: max(0, (o+0.5)·in/out − 0.5)
//
// and linear modes blend samples floor(src) and floor(src)+1 (clamped to
// in−1) with weights 1−λ and λ, λ = src − floor(src), as a tensor product
// over the axes. size holds one entry per spatial dimension or one for all.
//
// It panics with a *ShapeError for an input that is not N×C×spatial, a wrong
// or non-positive size, an unknown mode, or alignCorners with
// InterpNearest (which PyTorch rejects too).
func Interpolate(x *Tensor, size []int, mode InterpMode, alignCorners bool) *Tensor {
	g := newInterpGeom(x, size, mode, alignCorners)
	y := Zeros(g.outShape()...)
	g.forward(x.data, y.data)
	return record(y, func(gy *Tensor) {
		gx := make([]float32, len(x.data))
		g.backward(gy.data, gx)
		accumulate(x, &Tensor{shape: x.shape, data: gx})
	}, x)
}
