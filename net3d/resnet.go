package net3d

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// ResNet3DDepths are the depths of the 3D ResNet family, as in Hara's
// generate_model and MedicalNet: 10, 18 and 34 use BasicBlock, 50 and
// above Bottleneck.
var ResNet3DDepths = []int{10, 18, 34, 50, 101, 152, 200}

// resnetDepth gives the block type and number of blocks per layer of a depth.
type resnetDepth struct {
	bottleneck bool
	blocks     [4]int
}

var resnetDepths = map[int]resnetDepth{
	10:  {false, [4]int{1, 1, 1, 1}},
	18:  {false, [4]int{2, 2, 2, 2}},
	34:  {false, [4]int{3, 4, 6, 3}},
	50:  {true, [4]int{3, 4, 6, 3}},
	101: {true, [4]int{3, 4, 23, 3}},
	152: {true, [4]int{3, 8, 36, 3}},
	200: {true, [4]int{3, 24, 36, 3}},
}

// medicalNetShortcut is the shortcut type of each pretrained MedicalNet
// model (its README).
var medicalNetShortcut = map[int]string{10: "B", 18: "A", 34: "A", 50: "B", 101: "B", 152: "B", 200: "B"}

// ResNet3DConfig holds the options of Kensho Hara's 3D ResNet
// (3D-ResNets-PyTorch models/resnet.py, generate_model): the Config of the
// "resnet3d-N" architectures.
type ResNet3DConfig struct {
	// Shortcut is "A" (stride-s subsampling and zero channel padding, no
	// parameters) or "B" (1×1×1 convolution with stride s, then BatchNorm),
	// used where a block changes stride or channels.
	Shortcut string `json:"shortcut"`
	// Conv1TSize is the temporal (depth) kernel size of conv1, whose kernel
	// is Conv1TSize×7×7 with padding Conv1TSize/2×3×3.
	Conv1TSize int `json:"conv1_t_size"`
	// Conv1TStride is the temporal stride of conv1 (spatial stride 2).
	Conv1TStride int `json:"conv1_t_stride"`
	// NoMaxPool drops the 3×3×3 stride-2 max-pool after conv1.
	NoMaxPool bool `json:"no_max_pool"`
	// WidenFactor scales the block widths 64, 128, 256, 512 (each truncated
	// to an integer, as int(x·widen_factor)).
	WidenFactor float64 `json:"widen_factor"`
	// Dropout is the drop probability before fc in training (0: none).
	Dropout float64 `json:"dropout"`
}

// DefaultResNet3DConfig returns the reference defaults: shortcut B,
// conv1_t_size 7, conv1_t_stride 1, max-pool, widen factor 1, no dropout.
func DefaultResNet3DConfig() ResNet3DConfig {
	return ResNet3DConfig{Shortcut: "B", Conv1TSize: 7, Conv1TStride: 1, WidenFactor: 1}
}

// MedicalNetConfig holds the options of Tencent MedicalNet's 3D ResNet: the
// Config of the "medicalnet-resnet-N" architectures.
type MedicalNetConfig struct {
	// Shortcut is "A" or "B" (see ResNet3DConfig); empty selects the type
	// of the pretrained model of that depth (10 B, 18 A, 34 A, 50 and
	// deeper B).
	Shortcut string `json:"shortcut,omitempty"`
	// Dropout is the drop probability before fc in training (0: none).
	Dropout float64 `json:"dropout"`
}

// resnetLayout is the full description of one ResNet3D body.
type resnetLayout struct {
	depth                  int
	inChannels, classes    int
	widths                 [4]int
	conv1K, conv1S, conv1P []int
	maxPool                bool
	strides, dilations     [4]int
	shortcutA              bool
	dropout                float64
}

// ResNet3D is the 3D ResNet of Hara et al. ("resnet3d-N") and of
// MedicalNet ("medicalnet-resnet-N"): conv1 → bn1 → ReLU → [max-pool 3,
// stride 2, padding 1] → layer1…layer4 → global average pool → [dropout]
// → fc, mapping N×C×D×H×W to N×K. Its state-dict keys are the reference's:
// conv1.weight, bn1.*, layerL.b.{conv1,bn1,conv2,bn2[,conv3,bn3]}.*,
// layerL.0.downsample.{0,1}.* (shortcut B) and fc.*.
type ResNet3D struct {
	nn.Base
	Conv1   *nn.Conv
	BN1     *nn.BatchNorm
	MaxPool *nn.MaxPool       // nil with no_max_pool
	Layers  [4]*nn.Sequential // layer1 … layer4, of *BasicBlock3D or *Bottleneck3D
	Drop    *nn.Dropout       // "dropout", nil without dropout
	FC      *nn.Linear
	spec    Spec
}

// NewResNet3D returns Hara's 3D ResNet of the given depth (one of
// ResNet3DDepths) for inChannels input channels and classes outputs:
// widths w = (64, 128, 256, 512)·WidenFactor, layer strides 1, 2, 2, 2 in
// all three axes, final features w₄·expansion (expansion 1 for BasicBlock,
// 4 for Bottleneck). Convolutions are initialised Kaiming-normal (fan_out,
// ReLU gain), BatchNorms to weight 1, bias 0, and fc as PyTorch's default
// Linear, drawing from rng. Invalid arguments are an error.
func NewResNet3D(rng *rand.Rand, depth, inChannels, classes int, cfg ResNet3DConfig) (*ResNet3D, error) {
	if _, ok := resnetDepths[depth]; !ok {
		return nil, fmt.Errorf("net3d: resnet3d: depth %d: want one of %v", depth, ResNet3DDepths)
	}
	switch {
	case cfg.Shortcut != "A" && cfg.Shortcut != "B":
		return nil, fmt.Errorf("net3d: resnet3d-%d: shortcut %q: want \"A\" or \"B\"", depth, cfg.Shortcut)
	case cfg.Conv1TSize < 1 || cfg.Conv1TStride < 1:
		return nil, fmt.Errorf("net3d: resnet3d-%d: conv1_t_size %d and conv1_t_stride %d must be positive", depth, cfg.Conv1TSize, cfg.Conv1TStride)
	case !(cfg.WidenFactor > 0) || int(64*cfg.WidenFactor) < 1 || cfg.WidenFactor > 64:
		return nil, fmt.Errorf("net3d: resnet3d-%d: widen_factor %g: want 1/64 ≤ widen_factor ≤ 64", depth, cfg.WidenFactor)
	}
	l := resnetLayout{
		depth: depth, inChannels: inChannels, classes: classes,
		conv1K:    []int{cfg.Conv1TSize, 7, 7},
		conv1S:    []int{cfg.Conv1TStride, 2, 2},
		conv1P:    []int{cfg.Conv1TSize / 2, 3, 3},
		maxPool:   !cfg.NoMaxPool,
		strides:   [4]int{1, 2, 2, 2},
		dilations: [4]int{1, 1, 1, 1},
		shortcutA: cfg.Shortcut == "A",
		dropout:   cfg.Dropout,
	}
	for i, w := range [4]int{64, 128, 256, 512} {
		l.widths[i] = int(float64(w) * cfg.WidenFactor)
	}
	cj, _ := json.Marshal(cfg)
	spec := Spec{Arch: fmt.Sprintf("resnet3d-%d", depth), InChannels: inChannels, Classes: classes, Config: cj}
	return buildResNet(rng, l, spec)
}

// NewMedicalNet returns MedicalNet's 3D ResNet of the given depth (one of
// ResNet3DDepths) with a classification head: conv1 7×7×7 with stride 2
// and padding 3 from inChannels channels, max-pool, layer1 and layer2
// (stride 1 and 2) as Hara's, layer3 and layer4 with stride 1 and dilation
// 2 and 4 (their 3×3×3 convolutions padded by the dilation), then global
// average pooling and fc (in place of MedicalNet's segmentation head
// conv_seg). Initialisation as NewResNet3D. MedicalNet's checkpoints carry
// the DataParallel prefix "module.", which nn.Load strips.
func NewMedicalNet(rng *rand.Rand, depth, inChannels, classes int, cfg MedicalNetConfig) (*ResNet3D, error) {
	l, err := medicalNetLayout(depth, inChannels, classes, cfg)
	if err != nil {
		return nil, err
	}
	cj, _ := json.Marshal(cfg)
	spec := Spec{Arch: fmt.Sprintf("medicalnet-resnet-%d", depth), InChannels: inChannels, Classes: classes, Config: cj}
	return buildResNet(rng, l, spec)
}

func medicalNetLayout(depth, inChannels, classes int, cfg MedicalNetConfig) (resnetLayout, error) {
	if _, ok := resnetDepths[depth]; !ok {
		return resnetLayout{}, fmt.Errorf("net3d: medicalnet-resnet: depth %d: want one of %v", depth, ResNet3DDepths)
	}
	sc := cfg.Shortcut
	if sc == "" {
		sc = medicalNetShortcut[depth]
	}
	if sc != "A" && sc != "B" {
		return resnetLayout{}, fmt.Errorf("net3d: medicalnet-resnet-%d: shortcut %q: want \"A\", \"B\" or empty", depth, cfg.Shortcut)
	}
	return resnetLayout{
		depth: depth, inChannels: inChannels, classes: classes,
		widths:    [4]int{64, 128, 256, 512},
		conv1K:    []int{7, 7, 7},
		conv1S:    []int{2, 2, 2},
		conv1P:    []int{3, 3, 3},
		maxPool:   true,
		strides:   [4]int{1, 2, 1, 1},
		dilations: [4]int{1, 1, 2, 4},
		shortcutA: sc == "A",
		dropout:   cfg.Dropout,
	}, nil
}

// buildResNet constructs and initialises the network of layout l.
func buildResNet(rng *rand.Rand, l resnetLayout, spec Spec) (r *ResNet3D, err error) {
	switch {
	case l.inChannels < 1 || l.classes < 1:
		return nil, fmt.Errorf("net3d: %s: in_channels %d and classes %d must be positive", spec.Arch, l.inChannels, l.classes)
	case !(l.dropout >= 0 && l.dropout < 1):
		return nil, fmt.Errorf("net3d: %s: dropout %g: want 0 ≤ dropout < 1", spec.Arch, l.dropout)
	}
	err = tensor.Catch(func() { r = newResNet(rng, l, spec) })
	if err != nil {
		return nil, fmt.Errorf("net3d: %s: %w", spec.Arch, err)
	}
	return r, nil
}

func newResNet(rng *rand.Rand, l resnetLayout, spec Spec) *ResNet3D {
	d := resnetDepths[l.depth]
	r := &ResNet3D{spec: spec}
	r.Conv1 = nn.Child(r, "conv1", nn.NewConv(rng, l.inChannels, l.widths[0], l.conv1K,
		nn.ConvOpts{Stride: l.conv1S, Padding: l.conv1P, NoBias: true}))
	r.BN1 = nn.Child(r, "bn1", nn.NewBatchNorm(l.widths[0], nn.BatchNormOpts{}))
	if l.maxPool {
		r.MaxPool = nn.NewMaxPool(tensor.PoolOpts{Kernel: []int{3}, Stride: []int{2}, Padding: []int{1}})
	}
	expansion := 1
	if d.bottleneck {
		expansion = 4
	}
	in := l.widths[0]
	for i := range 4 {
		planes, stride, dil := l.widths[i], l.strides[i], l.dilations[i]
		out := planes * expansion
		var down nn.Module
		var downB *nn.Sequential
		if stride != 1 || in != out {
			if l.shortcutA {
				down = &ShortcutA{Planes: out, Stride: stride}
			} else {
				downB = nn.NewSequential(
					nn.NewConv(rng, in, out, []int{1, 1, 1}, nn.ConvOpts{Stride: []int{stride}, NoBias: true}),
					nn.NewBatchNorm(out, nn.BatchNormOpts{}))
				down = downB
			}
		}
		layer := nn.NewSequential()
		for b := range d.blocks[i] {
			s := 1
			if b == 0 {
				s = stride
			}
			if d.bottleneck {
				layer.Append(newBottleneck3D(rng, in, planes, s, dil, down, downB))
			} else {
				layer.Append(newBasicBlock3D(rng, in, planes, s, dil, down, downB))
			}
			in, down, downB = out, nil, nil
		}
		r.Layers[i] = nn.Child(r, layerNames[i], layer)
	}
	if l.dropout > 0 {
		r.Drop = nn.Child(r, "dropout", nn.NewDropout(float32(l.dropout), rng))
	}
	r.FC = nn.Child(r, "fc", nn.NewLinear(rng, in, l.classes, true))
	initConvs(rng, r)
	return r
}

// layerNames are the attribute names of the four residual stages.
var layerNames = [4]string{"layer1", "layer2", "layer3", "layer4"}

// initConvs re-initialises every convolution of m as torch.nn.init.
// kaiming_normal_(mode="fan_out", nonlinearity="relu"), bias 0.
func initConvs(rng *rand.Rand, m nn.Module) {
	for _, nm := range nn.NamedModules(m) {
		if c, ok := nm.Module.(*nn.Conv); ok {
			nn.KaimingNormal(rng, c.Weight, nn.FanOut, nn.GainReLU)
			if c.Bias != nil {
				nn.Zeros(c.Bias)
			}
		}
	}
}

// asClassifier returns c as a Classifier, or a nil interface (not a typed
// nil pointer) with err.
func asClassifier[C Classifier](c C, err error) (Classifier, error) {
	if err != nil {
		return nil, err
	}
	return c, nil
}

// checkInput panics with a *tensor.ShapeError unless x is N×c×D×H×W.
func checkInput(op string, x *tensor.Tensor, c int) {
	if x.Dim() != 5 || x.Size(1) != c {
		panic(&tensor.ShapeError{Op: op, Msg: fmt.Sprintf("input of shape %v: want N×%d×D×H×W", x.Shape(), c)})
	}
}

// Features returns the layer4 feature map N×C₄×d×h×w, reporting to tap
// "conv1" (the stem: conv1 → bn1 → ReLU → max-pool) and "layer1" …
// "layer4".
func (r *ResNet3D) Features(x *tensor.Tensor, tap Tap) *tensor.Tensor {
	checkInput("net3d."+r.spec.Arch, x, r.Conv1.In)
	x = nn.ConvBNAct(r.Conv1, r.BN1, x, nil, tensor.ActReLU)
	if r.MaxPool != nil {
		x = r.MaxPool.Forward(x)
	}
	x = callTap(tap, "conv1", x)
	for i, l := range r.Layers {
		x = callTap(tap, layerNames[i], l.Forward(x))
	}
	return x
}

// Head returns fc(dropout(mean over D, H, W of f)), N×K.
func (r *ResNet3D) Head(f *tensor.Tensor) *tensor.Tensor { return GlobalPoolLinear(f, r.Drop, r.FC) }

// Forward returns the logits Head(Features(x, nil)), N×K.
func (r *ResNet3D) Forward(x *tensor.Tensor) *tensor.Tensor { return r.Head(r.Features(x, nil)) }

// Linear returns fc.
func (r *ResNet3D) Linear() *nn.Linear { return r.FC }

// TapLayers returns "conv1", "layer1", "layer2", "layer3", "layer4".
func (r *ResNet3D) TapLayers() []string {
	return []string{"conv1", "layer1", "layer2", "layer3", "layer4"}
}

// Spec returns the architecture, channels, classes and full config.
func (r *ResNet3D) Spec() Spec { return r.spec }

// ShortcutA is the parameter-free type-A shortcut:
// y = concat(x[:, :, ::s, ::s, ::s], 0) along channels, zero-padded to
// Planes channels. As the reference (which concatenates out.data), no
// gradient flows back through it to x.
type ShortcutA struct {
	nn.Base
	Planes, Stride int
}

// Forward subsamples x (N×C×D×H×W) by Stride and pads it with zero
// channels to N×Planes×d×h×w.
func (s *ShortcutA) Forward(x *tensor.Tensor) *tensor.Tensor {
	out := x
	if s.Stride != 1 {
		out = tensor.AvgPool(x, tensor.PoolOpts{Kernel: []int{1}, Stride: []int{s.Stride}})
	}
	out = out.Detach()
	if pad := s.Planes - out.Size(1); pad > 0 {
		sh := append([]int(nil), out.Shape()...)
		sh[1] = pad
		out = tensor.Concat(1, out, tensor.Zeros(sh...))
	}
	return out
}

// BasicBlock3D is the residual block of depths 10, 18 and 34:
// y = ReLU(bn2(conv2(ReLU(bn1(conv1(x))))) + shortcut(x)), with 3×3×3
// convolutions (conv1 carrying the stride; both dilated, padding =
// dilation). Keys: conv1, bn1, conv2, bn2 and, for shortcut B,
// downsample.{0,1}.
type BasicBlock3D struct {
	nn.Base
	Conv1      *nn.Conv
	BN1        *nn.BatchNorm
	Conv2      *nn.Conv
	BN2        *nn.BatchNorm
	Downsample nn.Module // *nn.Sequential (B), *ShortcutA or nil (identity)
}

func newBasicBlock3D(rng *rand.Rand, in, planes, stride, dil int, down nn.Module, downB *nn.Sequential) *BasicBlock3D {
	b := &BasicBlock3D{Downsample: down}
	o := nn.ConvOpts{Stride: []int{stride}, Padding: []int{dil}, Dilation: []int{dil}, NoBias: true}
	b.Conv1 = nn.Child(b, "conv1", nn.NewConv(rng, in, planes, []int{3, 3, 3}, o))
	b.BN1 = nn.Child(b, "bn1", nn.NewBatchNorm(planes, nn.BatchNormOpts{}))
	o.Stride = nil
	b.Conv2 = nn.Child(b, "conv2", nn.NewConv(rng, planes, planes, []int{3, 3, 3}, o))
	b.BN2 = nn.Child(b, "bn2", nn.NewBatchNorm(planes, nn.BatchNormOpts{}))
	if downB != nil {
		nn.Child(b, "downsample", downB)
	}
	return b
}

// Forward returns the block's output.
// In evaluation mode without gradients each convolution runs fused with its
// BatchNorm, ReLU and the residual addition (nn.ConvBNAct).
func (b *BasicBlock3D) Forward(x *tensor.Tensor) *tensor.Tensor {
	out := nn.ConvBNAct(b.Conv1, b.BN1, x, nil, tensor.ActReLU)
	return nn.ConvBNAct(b.Conv2, b.BN2, out, shortcut(b.Downsample, x), tensor.ActReLU)
}

// shortcut returns down(x) (x for a nil down), a shortcut-B Sequential
// running fused as nn.FusedForward.
func shortcut(down nn.Module, x *tensor.Tensor) *tensor.Tensor {
	if down == nil {
		return x
	}
	return nn.FusedForward(x, nil, tensor.ActNone, down)
}

// Bottleneck3D is the residual block of depths 50 and above:
// y = ReLU(bn3(conv3(ReLU(bn2(conv2(ReLU(bn1(conv1(x))))))) + shortcut(x)),
// conv1 1×1×1 to planes, conv2 3×3×3 (stride, dilation, padding =
// dilation), conv3 1×1×1 to 4·planes. Keys: conv1, bn1, conv2, bn2, conv3,
// bn3 and, for shortcut B, downsample.{0,1}.
type Bottleneck3D struct {
	nn.Base
	Conv1      *nn.Conv
	BN1        *nn.BatchNorm
	Conv2      *nn.Conv
	BN2        *nn.BatchNorm
	Conv3      *nn.Conv
	BN3        *nn.BatchNorm
	Downsample nn.Module // *nn.Sequential (B), *ShortcutA or nil (identity)
}

func newBottleneck3D(rng *rand.Rand, in, planes, stride, dil int, down nn.Module, downB *nn.Sequential) *Bottleneck3D {
	b := &Bottleneck3D{Downsample: down}
	one := []int{1, 1, 1}
	b.Conv1 = nn.Child(b, "conv1", nn.NewConv(rng, in, planes, one, nn.ConvOpts{NoBias: true}))
	b.BN1 = nn.Child(b, "bn1", nn.NewBatchNorm(planes, nn.BatchNormOpts{}))
	b.Conv2 = nn.Child(b, "conv2", nn.NewConv(rng, planes, planes, []int{3, 3, 3},
		nn.ConvOpts{Stride: []int{stride}, Padding: []int{dil}, Dilation: []int{dil}, NoBias: true}))
	b.BN2 = nn.Child(b, "bn2", nn.NewBatchNorm(planes, nn.BatchNormOpts{}))
	b.Conv3 = nn.Child(b, "conv3", nn.NewConv(rng, planes, 4*planes, one, nn.ConvOpts{NoBias: true}))
	b.BN3 = nn.Child(b, "bn3", nn.NewBatchNorm(4*planes, nn.BatchNormOpts{}))
	if downB != nil {
		nn.Child(b, "downsample", downB)
	}
	return b
}

// Forward returns the block's output.
// In evaluation mode without gradients each convolution runs fused with its
// BatchNorm, ReLU and the residual addition (nn.ConvBNAct).
func (b *Bottleneck3D) Forward(x *tensor.Tensor) *tensor.Tensor {
	out := nn.ConvBNAct(b.Conv1, b.BN1, x, nil, tensor.ActReLU)
	out = nn.ConvBNAct(b.Conv2, b.BN2, out, nil, tensor.ActReLU)
	return nn.ConvBNAct(b.Conv3, b.BN3, out, shortcut(b.Downsample, x), tensor.ActReLU)
}

func init() {
	for _, depth := range ResNet3DDepths {
		d := resnetDepths[depth]
		block := "BasicBlock"
		if d.bottleneck {
			block = "Bottleneck"
		}
		name := fmt.Sprintf("resnet3d-%d", depth)
		cj, _ := json.Marshal(DefaultResNet3DConfig())
		Register(Entry{
			Name:   name,
			Family: "resnet3d",
			Description: fmt.Sprintf("3D ResNet-%d of Hara et al. (3D-ResNets-PyTorch), %s blocks %v; "+
				"shortcut A/B, conv1 temporal size/stride, optional max-pool, widen factor", depth, block, d.blocks),
			DefaultSpec: Spec{Arch: name, InChannels: 1, Classes: 3, Config: cj},
			Build: func(s Spec, rng *rand.Rand) (Classifier, error) {
				cfg := DefaultResNet3DConfig()
				if err := DecodeConfig(s, &cfg); err != nil {
					return nil, err
				}
				return asClassifier(NewResNet3D(rng, depth, s.InChannels, s.Classes, cfg))
			},
		})
		mname := fmt.Sprintf("medicalnet-resnet-%d", depth)
		mj, _ := json.Marshal(MedicalNetConfig{})
		Register(Entry{
			Name:   mname,
			Family: "medicalnet",
			Description: fmt.Sprintf("MedicalNet (Tencent Med3D) ResNet-%d, %s blocks %v, conv1 7×7×7/2, "+
				"dilated layer3/layer4, shortcut %s; pool + fc head", depth, block, d.blocks, medicalNetShortcut[depth]),
			DefaultSpec: Spec{Arch: mname, InChannels: 1, Classes: 3, Config: mj},
			Build: func(s Spec, rng *rand.Rand) (Classifier, error) {
				var cfg MedicalNetConfig
				if err := DecodeConfig(s, &cfg); err != nil {
					return nil, err
				}
				return asClassifier(NewMedicalNet(rng, depth, s.InChannels, s.Classes, cfg))
			},
		})
	}
}
