package tensor

// ConvOpts configures Conv. Each slice has one entry per spatial dimension,
// or a single entry used for all; nil means stride 1, padding 0, dilation 1.
type ConvOpts struct {
	Stride   []int
	Padding  []int
	Dilation []int
	Groups   int // 0 or 1: dense convolution; == in channels == out channels/k: depthwise
}

// Conv returns the N-D cross-correlation of x (N×Cin×spatial…, 1–3 spatial
// dims) with w (Cout×Cin/groups×kernel…) plus b (Cout, or nil), as
// torch.nn.functional.conv1d/2d/3d.
func Conv(x, w, b *Tensor, o ConvOpts) *Tensor { panic("unimplemented") }
