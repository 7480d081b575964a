package net3d

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// VideoConfig holds the options of torchvision's video ResNets (the Config
// of "r3d_18", "mc3_18" and "r2plus1d_18").
type VideoConfig struct {
	// FCBias gives fc a bias (torchvision's default; the CovidNet3D MC3_18
	// baseline uses Linear(512, classes, bias=False)).
	FCBias bool `json:"fc_bias"`
	// Dropout is the drop probability before fc in training (0: none, as
	// torchvision).
	Dropout float64 `json:"dropout"`
}

// DefaultVideoConfig returns torchvision's defaults: fc with bias, no
// dropout.
func DefaultVideoConfig() VideoConfig { return VideoConfig{FCBias: true} }

// videoConv is one of torchvision's convolution builders.
type videoConv int

const (
	conv3DSimple     videoConv = iota // 3×3×3, stride s in all axes
	conv3DNoTemporal                  // 1×3×3, stride (1, s, s)
	conv2Plus1D                       // 1×3×3 to midplanes, BN, ReLU, 3×1×1
)

// build returns the builder's convolution from in to out channels with
// stride s (midplanes used by conv2Plus1D only).
func (k videoConv) build(rng *rand.Rand, in, out, mid, s int) nn.Module {
	switch k {
	case conv3DNoTemporal:
		return nn.NewConv(rng, in, out, []int{1, 3, 3},
			nn.ConvOpts{Stride: []int{1, s, s}, Padding: []int{0, 1, 1}, NoBias: true})
	case conv2Plus1D:
		return nn.NewSequential(
			nn.NewConv(rng, in, mid, []int{1, 3, 3}, nn.ConvOpts{Stride: []int{1, s, s}, Padding: []int{0, 1, 1}, NoBias: true}),
			nn.NewBatchNorm(mid, nn.BatchNormOpts{}),
			&nn.ReLU{},
			nn.NewConv(rng, mid, out, []int{3, 1, 1}, nn.ConvOpts{Stride: []int{s, 1, 1}, Padding: []int{1, 0, 0}, NoBias: true}))
	default:
		return nn.NewConv(rng, in, out, []int{3, 3, 3}, nn.ConvOpts{Stride: []int{s}, Padding: []int{1}, NoBias: true})
	}
}

// downsampleStride is the stride of the 1×1×1 shortcut convolution of a
// layer with stride s built by k.
func (k videoConv) downsampleStride(s int) []int {
	if k == conv3DNoTemporal {
		return []int{1, s, s}
	}
	return []int{s, s, s}
}

// VideoResNet is torchvision's VideoResNet with BasicBlocks [2, 2, 2, 2]
// (r3d_18, mc3_18, r2plus1d_18): stem → layer1…layer4 (widths 64, 128,
// 256, 512; strides 1, 2, 2, 2; no max-pool) → global average pool →
// [dropout] → fc, mapping N×C×T×H×W to N×K. Its state-dict keys are
// torchvision's: stem.0.weight, stem.1.* (r2plus1d_18 also stem.3, stem.4),
// layerL.b.conv{1,2}.0.weight and layerL.b.conv{1,2}.1.* (r2plus1d_18:
// layerL.b.conv{1,2}.0.{0,1,3}.*), layerL.0.downsample.{0,1}.* for L ≥ 2,
// fc.weight and, with FCBias, fc.bias.
type VideoResNet struct {
	nn.Base
	Stem   *nn.Sequential
	Layers [4]*nn.Sequential // layer1 … layer4, of *VideoBasicBlock
	Drop   *nn.Dropout       // "dropout", nil without dropout
	FC     *nn.Linear
	spec   Spec
}

// VideoBasicBlock is torchvision's video BasicBlock:
// y = ReLU(conv2(conv1(x)) + shortcut(x)) with conv1 = [builder (stride),
// BN, ReLU] and conv2 = [builder, BN], and the shortcut downsample =
// [1×1×1 conv, BN] or the identity.
type VideoBasicBlock struct {
	nn.Base
	Conv1      *nn.Sequential
	Conv2      *nn.Sequential
	Downsample *nn.Sequential // nil for the identity shortcut
}

// Forward returns the block's output. In evaluation mode without gradients
// each convolution runs fused with its BatchNorm, ReLU and the residual
// addition (nn.FusedForward).
func (b *VideoBasicBlock) Forward(x *tensor.Tensor) *tensor.Tensor {
	res := x
	if b.Downsample != nil {
		res = nn.FusedForward(x, nil, tensor.ActNone, b.Downsample)
	}
	out := nn.FusedForward(x, nil, tensor.ActNone, b.Conv1)
	return nn.FusedForward(out, res, tensor.ActReLU, b.Conv2)
}

// VideoMidplanes returns torchvision's midplanes of a BasicBlock from
// inplanes to planes, ⌊inplanes·planes·27 / (9·inplanes + 3·planes)⌋: the
// width of the 2D step of both of its (2+1)D convolutions, chosen so that a
// (2+1)D convolution has about as many parameters as a 3×3×3 one.
func VideoMidplanes(inplanes, planes int) int {
	return inplanes * planes * 27 / (9*inplanes + 3*planes)
}

func newVideoBasicBlock(rng *rand.Rand, k videoConv, in, planes, stride int, down *nn.Sequential) *VideoBasicBlock {
	mid := VideoMidplanes(in, planes)
	b := &VideoBasicBlock{}
	b.Conv1 = nn.Child(b, "conv1", nn.NewSequential(k.build(rng, in, planes, mid, stride),
		nn.NewBatchNorm(planes, nn.BatchNormOpts{}), &nn.ReLU{}))
	b.Conv2 = nn.Child(b, "conv2", nn.NewSequential(k.build(rng, planes, planes, mid, 1),
		nn.NewBatchNorm(planes, nn.BatchNormOpts{})))
	if down != nil {
		b.Downsample = nn.Child(b, "downsample", down)
	}
	return b
}

// newVideoResNet builds a VideoResNet with the given stem and per-layer
// convolution builders, initialised as torchvision: convolutions
// Kaiming-normal (fan_out, ReLU gain), BatchNorm weight 1 and bias 0, fc
// weight N(0, 0.01²) and bias 0.
func newVideoResNet(rng *rand.Rand, arch string, inChannels, classes int, cfg VideoConfig, r2plus1dStem bool, convs [4]videoConv) (v *VideoResNet, err error) {
	switch {
	case inChannels < 1 || classes < 1:
		return nil, fmt.Errorf("net3d: %s: in_channels %d and classes %d must be positive", arch, inChannels, classes)
	case !(cfg.Dropout >= 0 && cfg.Dropout < 1):
		return nil, fmt.Errorf("net3d: %s: dropout %g: want 0 ≤ dropout < 1", arch, cfg.Dropout)
	}
	cj, _ := json.Marshal(cfg)
	v = &VideoResNet{spec: Spec{Arch: arch, InChannels: inChannels, Classes: classes, Config: cj}}
	err = tensor.Catch(func() {
		if r2plus1dStem {
			v.Stem = nn.NewSequential(
				nn.NewConv(rng, inChannels, 45, []int{1, 7, 7}, nn.ConvOpts{Stride: []int{1, 2, 2}, Padding: []int{0, 3, 3}, NoBias: true}),
				nn.NewBatchNorm(45, nn.BatchNormOpts{}), &nn.ReLU{},
				nn.NewConv(rng, 45, 64, []int{3, 1, 1}, nn.ConvOpts{Padding: []int{1, 0, 0}, NoBias: true}),
				nn.NewBatchNorm(64, nn.BatchNormOpts{}), &nn.ReLU{})
		} else {
			v.Stem = nn.NewSequential(
				nn.NewConv(rng, inChannels, 64, []int{3, 7, 7}, nn.ConvOpts{Stride: []int{1, 2, 2}, Padding: []int{1, 3, 3}, NoBias: true}),
				nn.NewBatchNorm(64, nn.BatchNormOpts{}), &nn.ReLU{})
		}
		nn.Child(v, "stem", v.Stem)
		in := 64
		for i, planes := range [4]int{64, 128, 256, 512} {
			stride := 1
			if i > 0 {
				stride = 2
			}
			var down *nn.Sequential
			if stride != 1 || in != planes {
				down = nn.NewSequential(
					nn.NewConv(rng, in, planes, []int{1, 1, 1}, nn.ConvOpts{Stride: convs[i].downsampleStride(stride), NoBias: true}),
					nn.NewBatchNorm(planes, nn.BatchNormOpts{}))
			}
			layer := nn.NewSequential(
				newVideoBasicBlock(rng, convs[i], in, planes, stride, down),
				newVideoBasicBlock(rng, convs[i], planes, planes, 1, nil))
			v.Layers[i] = nn.Child(v, layerNames[i], layer)
			in = planes
		}
		if cfg.Dropout > 0 {
			v.Drop = nn.Child(v, "dropout", nn.NewDropout(float32(cfg.Dropout), rng))
		}
		v.FC = nn.Child(v, "fc", nn.NewLinear(rng, 512, classes, cfg.FCBias))
		initConvs(rng, v)
		nn.Normal(rng, v.FC.Weight, 0, 0.01)
		if v.FC.Bias != nil {
			nn.Zeros(v.FC.Bias)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("net3d: %s: %w", arch, err)
	}
	return v, nil
}

// NewR3D18 returns torchvision's r3d_18 (R3D, "A Closer Look at
// Spatiotemporal Convolutions", Tran et al. 2018) for inChannels input
// channels and classes outputs: stem Conv3d(3×7×7, stride (1, 2, 2),
// padding (1, 3, 3)) → BN → ReLU, and 3×3×3 convolutions in every block
// (33,371,472 parameters for 3 channels and 400 classes).
func NewR3D18(rng *rand.Rand, inChannels, classes int, cfg VideoConfig) (*VideoResNet, error) {
	return newVideoResNet(rng, "r3d_18", inChannels, classes, cfg, false,
		[4]videoConv{conv3DSimple, conv3DSimple, conv3DSimple, conv3DSimple})
}

// NewMC318 returns torchvision's mc3_18 (mixed convolutions): r3d_18's stem,
// 3×3×3 convolutions in layer1 and 1×3×3 ones (stride (1, s, s),
// downsample stride (1, 2, 2)) in layer2…layer4, so the temporal size is
// never reduced (11,695,440 parameters for 3 channels and 400 classes).
func NewMC318(rng *rand.Rand, inChannels, classes int, cfg VideoConfig) (*VideoResNet, error) {
	return newVideoResNet(rng, "mc3_18", inChannels, classes, cfg, false,
		[4]videoConv{conv3DSimple, conv3DNoTemporal, conv3DNoTemporal, conv3DNoTemporal})
}

// NewR2Plus1D18 returns torchvision's r2plus1d_18: stem Conv3d(1×7×7 to
// 45, stride (1, 2, 2)) → BN → ReLU → Conv3d(3×1×1 to 64) → BN → ReLU, and
// (2+1)D convolutions [1×3×3 (stride (1, s, s)) to VideoMidplanes, BN,
// ReLU, 3×1×1 (stride (s, 1, 1))] in every block (31,505,325 parameters for
// 3 channels and 400 classes).
func NewR2Plus1D18(rng *rand.Rand, inChannels, classes int, cfg VideoConfig) (*VideoResNet, error) {
	return newVideoResNet(rng, "r2plus1d_18", inChannels, classes, cfg, true,
		[4]videoConv{conv2Plus1D, conv2Plus1D, conv2Plus1D, conv2Plus1D})
}

// Features returns the layer4 feature map N×512×t×h×w, reporting to tap
// "stem" and "layer1" … "layer4".
func (v *VideoResNet) Features(x *tensor.Tensor, tap Tap) *tensor.Tensor {
	checkInput("net3d."+v.spec.Arch, x, v.spec.InChannels)
	x = callTap(tap, "stem", nn.FusedForward(x, nil, tensor.ActNone, v.Stem))
	for i, l := range v.Layers {
		x = callTap(tap, layerNames[i], l.Forward(x))
	}
	return x
}

// Head returns fc(dropout(mean over T, H, W of f)), N×K.
func (v *VideoResNet) Head(f *tensor.Tensor) *tensor.Tensor { return GlobalPoolLinear(f, v.Drop, v.FC) }

// Forward returns the logits Head(Features(x, nil)), N×K.
func (v *VideoResNet) Forward(x *tensor.Tensor) *tensor.Tensor { return v.Head(v.Features(x, nil)) }

// Linear returns fc.
func (v *VideoResNet) Linear() *nn.Linear { return v.FC }

// TapLayers returns "stem", "layer1", "layer2", "layer3", "layer4".
func (v *VideoResNet) TapLayers() []string {
	return []string{"stem", "layer1", "layer2", "layer3", "layer4"}
}

// Spec returns the architecture, channels, classes and full config.
func (v *VideoResNet) Spec() Spec { return v.spec }

func init() {
	for _, e := range []struct {
		name, desc string
		build      func(*rand.Rand, int, int, VideoConfig) (*VideoResNet, error)
	}{
		{"r3d_18", "torchvision r3d_18: 18-layer ResNet with 3×3×3 convolutions (Tran et al. 2018)", NewR3D18},
		{"mc3_18", "torchvision mc3_18: mixed convolutions, 3×3×3 in layer1, 1×3×3 in layer2–4 " +
			"(CovidNet3D baseline with fc_bias false)", NewMC318},
		{"r2plus1d_18", "torchvision r2plus1d_18: (2+1)D convolutions, 1×3×3 then 3×1×1", NewR2Plus1D18},
	} {
		cj, _ := json.Marshal(DefaultVideoConfig())
		Register(Entry{
			Name:        e.name,
			Family:      "torchvision-video",
			Description: e.desc,
			DefaultSpec: Spec{Arch: e.name, InChannels: 1, Classes: 3, Config: cj},
			Build: func(s Spec, rng *rand.Rand) (Classifier, error) {
				cfg := DefaultVideoConfig()
				if err := DecodeConfig(s, &cfg); err != nil {
					return nil, err
				}
				return asClassifier(e.build(rng, s.InChannels, s.Classes, cfg))
			},
		})
	}
}
