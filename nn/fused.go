package nn

import (
	"math"

	"github.com/ctlens/ctlens/tensor"
)

// Inference fusion.
//
// In evaluation mode, with no gradient wanted, a convolution followed by a
// BatchNorm, an optional residual addition and an optional ReLU or ReLU6
// is one affine map per output channel after the convolution:
//
//	act(bn(conv(x) + b) + r) = act(s ⊙ conv(x) + t + r),
//	s = γ/√(σ² + ε), t = β − μ·s + b·s
//
// ConvBNAct computes it with tensor.ConvFused, which applies the epilogue to
// each block of output positions while it is still in cache and allocates
// one output instead of four. The folded s and t are computed from the
// current parameters and running statistics at every call (O(channels)), so
// nothing is cached and a changed or reloaded weight is always seen; the
// state dict and parameter names are untouched.
//
// Fusion happens only when it cannot change what a caller observes: every
// module involved is in evaluation mode, the BatchNorm tracks running
// statistics, and neither the input, the residual nor any parameter involved
// requires gradients. Otherwise the functions below run the modules one by
// one, exactly as their Forward methods, so training, Grad-CAM gradients and
// taps see the same tensors as without fusion. Outputs equal the unfused
// ones up to float32 rounding.

// canFuse reports whether conv (and bn, when not nil) may run fused on x
// and residual.
func canFuse(conv *Conv, bn *BatchNorm, x, residual *tensor.Tensor) bool {
	if conv.Training() || x.RequiresGrad() || conv.Weight.RequiresGrad() ||
		(conv.Bias != nil && conv.Bias.RequiresGrad()) || (residual != nil && residual.RequiresGrad()) {
		return false
	}
	return bn == nil || bnFoldable(bn)
}

// bnFoldable reports whether bn is an evaluation-mode affine map with
// frozen parameters.
func bnFoldable(bn *BatchNorm) bool {
	return !bn.Training() && bn.RunningMean != nil && bn.RunningVar != nil &&
		(bn.Weight == nil || !bn.Weight.RequiresGrad()) && (bn.Bias == nil || !bn.Bias.RequiresGrad())
}

// bnAffine returns the per-channel scale s and shift t of an
// evaluation-mode bn preceded by a bias b (nil: 0): bn(v + b) = s·v + t.
func bnAffine(bn *BatchNorm, b *tensor.Tensor) (s, t []float32) {
	s, t = make([]float32, bn.Channels), make([]float32, bn.Channels)
	mean, vr := bn.RunningMean.Data(), bn.RunningVar.Data()
	for c := range s {
		sc := 1 / math.Sqrt(float64(vr[c])+float64(bn.Eps))
		if bn.Weight != nil {
			sc *= float64(bn.Weight.Data()[c])
		}
		sh := -float64(mean[c]) * sc
		if bn.Bias != nil {
			sh += float64(bn.Bias.Data()[c])
		}
		if b != nil {
			sh += float64(b.Data()[c]) * sc
		}
		s[c], t[c] = float32(sc), float32(sh)
	}
	return s, t
}

// ConvBNAct returns act(bn(conv(x)) + residual) for x of shape
// N×In×spatial…: bn may be nil (no normalisation), residual nil (no
// addition; otherwise the output's shape) and act tensor.ActNone, ActReLU
// or ActReLU6. It runs fused (see the package's inference fusion notes)
// when the modules are in evaluation mode and nothing requires gradients,
// and as conv.Forward, bn.Forward, tensor.Add and tensor.ReLU/ReLU6
// otherwise. Shape misuse panics with a *tensor.ShapeError.
func ConvBNAct(conv *Conv, bn *BatchNorm, x, residual *tensor.Tensor, act tensor.Activation) *tensor.Tensor {
	if bn != nil && bn.Channels != conv.Out {
		shapePanic("nn.ConvBNAct", "BatchNorm of %d channels after a convolution to %d", bn.Channels, conv.Out)
	}
	if !canFuse(conv, bn, x, residual) {
		y := conv.Forward(x)
		if bn != nil {
			y = bn.Forward(y)
		}
		return addAct(y, residual, act)
	}
	e := tensor.ConvEpilogue{Residual: residual, Act: act}
	if bn != nil {
		e.Scale, e.Shift = bnAffine(bn, conv.Bias)
	} else if conv.Bias != nil {
		e.Shift = conv.Bias.Data()
	}
	return tensor.ConvFused(x, conv.Weight, tensor.ConvOpts{
		Stride: conv.Stride, Padding: conv.Padding, Dilation: conv.Dilation, Groups: conv.Groups,
	}, e)
}

// BatchNormAct returns act(bn(x)) (act tensor.ActNone, ActReLU or
// ActReLU6). In evaluation mode with nothing requiring gradients it is one
// pass y = act(s·x + t) per channel (s, t as in ConvBNAct); otherwise
// bn.Forward followed by tensor.ReLU/ReLU6.
func BatchNormAct(bn *BatchNorm, x *tensor.Tensor, act tensor.Activation) *tensor.Tensor {
	if x.RequiresGrad() || !bnFoldable(bn) {
		return addAct(bn.Forward(x), nil, act)
	}
	if x.Dim() < 2 || x.Size(1) != bn.Channels {
		shapePanic("nn.BatchNorm", "input of shape %v for %d channels: want N×%d×…", x.Shape(), bn.Channels, bn.Channels)
	}
	s, t := bnAffine(bn, nil)
	y := tensor.Zeros(x.Shape()...)
	n, c := x.Size(0), bn.Channels
	inner := x.Len() / max(n*c, 1)
	xd, yd := x.Data(), y.Data()
	tensor.ParallelFor(n*c, max(1, (32<<10)/max(inner, 1)), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			sc, sh := s[pl%c], t[pl%c]
			dst := yd[pl*inner : (pl+1)*inner]
			src := xd[pl*inner : (pl+1)*inner]
			switch act {
			case tensor.ActReLU:
				for i, v := range src {
					dst[i] = max(sc*v+sh, 0)
				}
			case tensor.ActReLU6:
				for i, v := range src {
					dst[i] = min(max(sc*v+sh, 0), 6)
				}
			default:
				for i, v := range src {
					dst[i] = sc*v + sh
				}
			}
		}
	})
	return y
}

// addAct returns act(y + residual) with the unfused ops (residual may be nil).
func addAct(y, residual *tensor.Tensor, act tensor.Activation) *tensor.Tensor {
	if residual != nil {
		y = tensor.Add(y, residual)
	}
	switch act {
	case tensor.ActReLU:
		y = tensor.ReLU(y)
	case tensor.ActReLU6:
		y = tensor.ReLU6(y)
	case tensor.ActNone:
	default:
		shapePanic("nn.ConvBNAct", "unknown activation %d", act)
	}
	return y
}

// FusedForward returns act(mods(x) + residual): the modules applied in
// order (a *Sequential among them stands for its own modules, recursively),
// then residual added (nil: nothing) and act applied. Each run
// Conv → [BatchNorm] → [ReLU | ReLU6], and each BatchNorm → [ReLU | ReLU6]
// not preceded by a convolution, goes through ConvBNAct or BatchNormAct,
// so it is fused exactly when those fuse; the residual and act join the
// last convolution when nothing follows it. Every other module runs its
// Forward. The result equals applying the modules' Forward methods, then
// tensor.Add and the activation, up to float32 rounding.
func FusedForward(x, residual *tensor.Tensor, act tensor.Activation, mods ...Module) *tensor.Tensor {
	flat := flatten(nil, mods)
	for i := 0; i < len(flat); {
		switch m := flat[i].(type) {
		case *Conv:
			j := i + 1
			var bn *BatchNorm
			if j < len(flat) {
				if b, ok := flat[j].(*BatchNorm); ok {
					bn, j = b, j+1
				}
			}
			a, j := actAt(flat, j)
			if j == len(flat) && a == tensor.ActNone {
				// The last convolution takes the residual and act.
				return ConvBNAct(m, bn, x, residual, act)
			}
			x = ConvBNAct(m, bn, x, nil, a)
			i = j
		case *BatchNorm:
			a, j := actAt(flat, i+1)
			x = BatchNormAct(m, x, a)
			i = j
		default:
			x = m.Forward(x)
			i++
		}
	}
	return addAct(x, residual, act)
}

// actAt returns the activation module at flat[j], if any, and the index
// after it.
func actAt(flat []Module, j int) (tensor.Activation, int) {
	if j < len(flat) {
		switch flat[j].(type) {
		case *ReLU:
			return tensor.ActReLU, j + 1
		case *ReLU6:
			return tensor.ActReLU6, j + 1
		}
	}
	return tensor.ActNone, j
}

// flatten appends mods to dst with every *Sequential replaced by its
// modules.
func flatten(dst []Module, mods []Module) []Module {
	for _, m := range mods {
		if s, ok := m.(*Sequential); ok {
			dst = flatten(dst, s.mods)
			continue
		}
		dst = append(dst, m)
	}
	return dst
}
