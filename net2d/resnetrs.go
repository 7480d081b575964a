package net2d

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// ResNetRSDepths are the depths of the ResNet-RS family. 50 to 420 are the
// published models (blocks per stage in resnetRSBlocks, Bottleneck); 18
// (BasicBlock, [2, 2, 2, 2]) and 26 (Bottleneck, [2, 2, 2, 2]) are small
// members built with the same recipe (deep stem, stride-2 conv in place of
// the max-pool, ResNet-D shortcut, squeeze-excitation) for CPU training;
// they have no published weights.
var ResNetRSDepths = []int{18, 26, 50, 101, 152, 200, 270, 350, 420}

var resnetRSBlocks = map[int]resnetDepth{
	18:  {false, [4]int{2, 2, 2, 2}},
	26:  {true, [4]int{2, 2, 2, 2}},
	50:  {true, [4]int{3, 4, 6, 3}},
	101: {true, [4]int{3, 4, 23, 3}},
	152: {true, [4]int{3, 8, 36, 3}},
	200: {true, [4]int{3, 24, 36, 3}},
	270: {true, [4]int{4, 29, 53, 4}},
	350: {true, [4]int{4, 36, 72, 4}},
	420: {true, [4]int{4, 44, 87, 4}},
}

// resnetDepth gives the block type and number of blocks per stage.
type resnetDepth struct {
	bottleneck bool
	blocks     [4]int
}

// ResNetRSConfig holds the options of a ResNet-RS: the Config of the
// "resnetrs-N" architectures. The zero value is timm's default (no
// dropout, no stochastic depth); the ResNet-RS training configurations use
// dropout 0.25 (0.4 at 320 px) and stochastic depth 0 (RS-50 to RS-152) or
// 0.1 (RS-200 and deeper).
type ResNetRSConfig struct {
	// Dropout is the drop probability before fc in training (timm's
	// drop_rate).
	Dropout float64 `json:"dropout"`
	// DropPath is the stochastic-depth rate: block b of B (counting from
	// 0 over the whole network) drops its residual branch with
	// probability DropPath·b/(B−1), timm's linear rule.
	DropPath float64 `json:"drop_path"`
	// DropPathPerStage selects the TPU reference's rule instead: every
	// block of stage s = 1…4 uses DropPath·(s+1)/5.
	DropPathPerStage bool `json:"drop_path_per_stage,omitempty"`
}

// SqueezeExcite is timm's SEModule as ResNet-RS uses it: with s the mean
// of x (N×C×H×W) over H×W, y = x·sigmoid(fc2(ReLU(fc1(s)))), fc1 a 1×1
// convolution C → R with bias and fc2 one R → C, R =
// make_divisible(C·0.25, 8) (C/4 for every ResNet-RS width). Keys:
// fc1.{weight,bias}, fc2.{weight,bias}.
type SqueezeExcite struct {
	nn.Base
	FC1, FC2 *nn.Conv
}

// NewSqueezeExcite returns the squeeze-excitation of c channels with
// reduction ratio 0.25.
func NewSqueezeExcite(rng *rand.Rand, c int) *SqueezeExcite {
	r := makeDivisible(float64(c)*0.25, 8)
	s := &SqueezeExcite{}
	s.FC1 = nn.Child(s, "fc1", nn.NewConv(rng, c, r, []int{1, 1}, nn.ConvOpts{}))
	s.FC2 = nn.Child(s, "fc2", nn.NewConv(rng, r, c, []int{1, 1}, nn.ConvOpts{}))
	return s
}

// makeDivisible is timm's make_divisible(v, divisor, round_limit=0):
// max(divisor, ⌊(v + divisor/2)/divisor⌋·divisor).
func makeDivisible(v float64, divisor int) int {
	return max(divisor, int(v+float64(divisor)/2)/divisor*divisor)
}

// Forward returns x scaled per channel by its excitation.
func (s *SqueezeExcite) Forward(x *tensor.Tensor) *tensor.Tensor {
	e := tensor.Mean(x, []int{2, 3}, true)
	e = tensor.Sigmoid(s.FC2.Forward(tensor.ReLU(s.FC1.Forward(e))))
	return tensor.Mul(x, e)
}

// RSBlock is one residual block of a ResNet-RS, timm's BasicBlock (two 3×3
// convolutions, the first with the stride) or Bottleneck (1×1, 3×3 with
// the stride, 1×1 to 4× the width), each convolution followed by
// BatchNorm and, except the last, ReLU; then squeeze-excitation, stochastic
// depth, the shortcut added, and ReLU. The last BatchNorm's weight starts
// at zero. Keys: conv1, bn1, conv2, bn2[, conv3, bn3], se.fc1, se.fc2 and,
// in a stage's first block, downsample.1 (1×1 conv) and downsample.2
// (BatchNorm) after the average pool downsample.0.
type RSBlock struct {
	nn.Base
	Conv1, Conv2, Conv3 *nn.Conv // Conv3 nil in a basic block
	BN1, BN2, BN3       *nn.BatchNorm
	SE                  *SqueezeExcite
	Downsample          *nn.Sequential // nil: identity shortcut
	DropPath            *nn.StochasticDepth
}

// newRSBlock builds a block from in channels with width planes (output
// planes·4 for a bottleneck) and the given stride.
func newRSBlock(rng *rand.Rand, bottleneck bool, in, planes, stride int, dropPath float64) *RSBlock {
	b := &RSBlock{}
	out := planes
	conv := func(cin, cout, k, s int) *nn.Conv {
		c := nn.NewConv(rng, cin, cout, []int{k, k}, nn.ConvOpts{Stride: []int{s}, Padding: []int{k / 2}, NoBias: true})
		kaimingOut(rng, c)
		return c
	}
	if bottleneck {
		out = planes * 4
		b.Conv1 = nn.Child(b, "conv1", conv(in, planes, 1, 1))
		b.BN1 = nn.Child(b, "bn1", nn.NewBatchNorm(planes, nn.BatchNormOpts{}))
		b.Conv2 = nn.Child(b, "conv2", conv(planes, planes, 3, stride))
		b.BN2 = nn.Child(b, "bn2", nn.NewBatchNorm(planes, nn.BatchNormOpts{}))
		b.Conv3 = nn.Child(b, "conv3", conv(planes, out, 1, 1))
		b.BN3 = nn.Child(b, "bn3", nn.NewBatchNorm(out, nn.BatchNormOpts{}))
		nn.Zeros(b.BN3.Weight)
	} else {
		b.Conv1 = nn.Child(b, "conv1", conv(in, planes, 3, stride))
		b.BN1 = nn.Child(b, "bn1", nn.NewBatchNorm(planes, nn.BatchNormOpts{}))
		b.Conv2 = nn.Child(b, "conv2", conv(planes, planes, 3, 1))
		b.BN2 = nn.Child(b, "bn2", nn.NewBatchNorm(planes, nn.BatchNormOpts{}))
		nn.Zeros(b.BN2.Weight)
	}
	b.SE = nn.Child(b, "se", NewSqueezeExcite(rng, out))
	kaimingOut(rng, b.SE.FC1)
	kaimingOut(rng, b.SE.FC2)
	if stride != 1 || in != out {
		var pool nn.Module = &nn.Identity{}
		if stride != 1 {
			pool = nn.NewAvgPool(tensor.PoolOpts{Kernel: []int{2}, Stride: []int{stride}, CeilMode: true})
		}
		b.Downsample = nn.Child(b, "downsample", nn.NewSequential(pool, conv(in, out, 1, 1), nn.NewBatchNorm(out, nn.BatchNormOpts{})))
	}
	b.DropPath = nn.Child(b, "drop_path", nn.NewStochasticDepth(float32(dropPath), false, dropRng(rng)))
	return b
}

// Forward returns ReLU(droppath(SE(branch(x))) + shortcut(x)).
func (b *RSBlock) Forward(x *tensor.Tensor) *tensor.Tensor {
	y := tensor.ReLU(b.BN1.Forward(b.Conv1.Forward(x)))
	y = b.BN2.Forward(b.Conv2.Forward(y))
	if b.Conv3 != nil {
		y = b.BN3.Forward(b.Conv3.Forward(tensor.ReLU(y)))
	}
	y = b.DropPath.Forward(b.SE.Forward(y))
	sc := x
	if b.Downsample != nil {
		sc = b.Downsample.Forward(x)
	}
	return tensor.ReLU(tensor.Add(y, sc))
}

// kaimingOut draws c's weight as timm's ResNet.init_weights:
// N(0, 2/fan_out), fan_out = out channels · kernel area.
func kaimingOut(rng *rand.Rand, c *nn.Conv) {
	nn.KaimingNormal(rng, c.Weight, nn.FanOut, math.Sqrt2)
}

// dropRng returns rng, or a fixed generator when rng is nil (a network
// built without drawing weights still needs one for dropout).
func dropRng(rng *rand.Rand) *rand.Rand {
	if rng == nil {
		return rand.New(rand.NewPCG(0, 0x2d))
	}
	return rng
}

// ResNetRS is ResNet-RS ("resnetrs-N") in timm's layout: a deep stem
// conv1 = [3×3 conv 32 stride 2, BN, ReLU, 3×3 conv 32, BN, ReLU, 3×3 conv
// 64] → bn1 → ReLU, the max-pool replaced by maxpool = [3×3 conv 64 stride
// 2, BN, ReLU], stages layer1…layer4 of RSBlocks with widths 64, 128, 256,
// 512 and strides 1, 2, 2, 2 (ResNet-D shortcut: 2×2 average pool with
// ceil mode, excluding padding, then a 1×1 conv and BN), global average
// pooling, dropout and fc. It maps N×C×H×W to N×K for any H, W ≥ 1 (the
// final map is ⌈H/32⌉×⌈W/32⌉ up to the convolutions' rounding). Keys:
// conv1.{0,1,3,4,6}, bn1, maxpool.{0,1}, layerS.B.*, fc.
type ResNetRS struct {
	nn.Base
	Stem    *nn.Sequential // "conv1"
	BN1     *nn.BatchNorm
	MaxPool *nn.Sequential // "maxpool": the stride-2 conv that replaces it
	Layers  [4]*nn.Sequential
	Drop    *nn.Dropout // "dropout" (no keys)
	FC      *nn.Linear
	spec    Spec
}

// NewResNetRS returns ResNet-RS of the given depth (one of ResNetRSDepths)
// for inChannels inputs and classes outputs, initialised as timm:
// convolutions N(0, 2/fan_out), BatchNorm weight 1 and bias 0 except the
// last BatchNorm of each block (weight 0), squeeze-excitation biases and fc
// as PyTorch's defaults. A nil rng draws nothing (weights stay zero).
func NewResNetRS(rng *rand.Rand, depth, inChannels, classes int, cfg ResNetRSConfig) (*ResNetRS, error) {
	d, ok := resnetRSBlocks[depth]
	switch {
	case !ok:
		return nil, fmt.Errorf("resnetrs: depth %d (want one of %v)", depth, ResNetRSDepths)
	case !(cfg.Dropout >= 0 && cfg.Dropout < 1):
		return nil, fmt.Errorf("resnetrs: dropout %v (want 0 ≤ p < 1)", cfg.Dropout)
	case !(cfg.DropPath >= 0 && cfg.DropPath < 1):
		return nil, fmt.Errorf("resnetrs: drop_path %v (want 0 ≤ p < 1)", cfg.DropPath)
	}
	r := &ResNetRS{}
	conv := func(cin, cout, s int) *nn.Conv {
		c := nn.NewConv(rng, cin, cout, []int{3, 3}, nn.ConvOpts{Stride: []int{s}, Padding: []int{1}, NoBias: true})
		kaimingOut(rng, c)
		return c
	}
	bn := func(c int) *nn.BatchNorm { return nn.NewBatchNorm(c, nn.BatchNormOpts{}) }
	r.Stem = nn.Child(r, "conv1", nn.NewSequential(conv(inChannels, 32, 2), bn(32), &nn.ReLU{},
		conv(32, 32, 1), bn(32), &nn.ReLU{}, conv(32, 64, 1)))
	r.BN1 = nn.Child(r, "bn1", bn(64))
	r.MaxPool = nn.Child(r, "maxpool", nn.NewSequential(conv(64, 64, 2), bn(64), &nn.ReLU{}))
	total := 0
	for _, n := range d.blocks {
		total += n
	}
	in, idx := 64, 0
	for s, planes := range []int{64, 128, 256, 512} {
		stage := nn.NewSequential()
		for b := 0; b < d.blocks[s]; b++ {
			stride := 1
			if s > 0 && b == 0 {
				stride = 2
			}
			p := 0.0
			switch {
			case cfg.DropPathPerStage:
				p = cfg.DropPath * float64(s+2) / 5
			case total > 1:
				p = cfg.DropPath * float64(idx) / float64(total-1)
			}
			blk := newRSBlock(rng, d.bottleneck, in, planes, stride, p)
			stage.Append(blk)
			in = planes
			if d.bottleneck {
				in = planes * 4
			}
			idx++
		}
		r.Layers[s] = nn.Child(r, fmt.Sprintf("layer%d", s+1), stage)
	}
	r.Drop = nn.Child(r, "dropout", nn.NewDropout(float32(cfg.Dropout), dropRng(rng)))
	r.FC = nn.Child(r, "fc", nn.NewLinear(rng, in, classes, true))
	r.spec = Spec{Arch: fmt.Sprintf("resnetrs-%d", depth), InChannels: inChannels, Classes: classes,
		Config: mustJSON(cfg)}
	return r, nil
}

// Features returns the layer4 map, N×(512·expansion)×h×w, reporting
// "maxpool" (the stem's output) and layer1…layer4 to tap.
func (r *ResNetRS) Features(x *tensor.Tensor, tap Tap) *tensor.Tensor {
	checkInput("net2d.ResNetRS", x, r.spec.InChannels)
	x = tensor.ReLU(r.BN1.Forward(r.Stem.Forward(x)))
	x = callTap(tap, "maxpool", r.MaxPool.Forward(x))
	for i, l := range r.Layers {
		x = callTap(tap, fmt.Sprintf("layer%d", i+1), l.Forward(x))
	}
	return x
}

// Pool returns the spatial mean of f, N×C.
func (r *ResNetRS) Pool(f *tensor.Tensor) *tensor.Tensor {
	return tensor.Reshape(tensor.Mean(f, []int{2, 3}, false), f.Size(0), f.Size(1))
}

// Head returns fc(dropout(Pool(f))).
func (r *ResNetRS) Head(f *tensor.Tensor) *tensor.Tensor {
	return r.FC.Forward(r.Drop.Forward(r.Pool(f)))
}

// Forward returns the logits N×K for x (N×C×H×W).
func (r *ResNetRS) Forward(x *tensor.Tensor) *tensor.Tensor { return r.Head(r.Features(x, nil)) }

// Linear returns fc.
func (r *ResNetRS) Linear() *nn.Linear { return r.FC }

// TapLayers returns maxpool, layer1, layer2, layer3, layer4.
func (r *ResNetRS) TapLayers() []string {
	return []string{"maxpool", "layer1", "layer2", "layer3", "layer4"}
}

// CAMLayer returns "layer4".
func (r *ResNetRS) CAMLayer() string { return "layer4" }

// Spec returns the network's architecture description.
func (r *ResNetRS) Spec() Spec { return r.spec }

func init() {
	for _, depth := range ResNetRSDepths {
		d := resnetRSBlocks[depth]
		kind := "bottleneck"
		if !d.bottleneck {
			kind = "basic"
		}
		desc := fmt.Sprintf("ResNet-RS-%d (Bello et al. 2021; timm layout), %s blocks %v, SE 0.25, ResNet-D", depth, kind, d.blocks)
		if depth < 50 {
			desc += "; small CPU variant, no published weights"
		}
		Register(Entry{
			Name: fmt.Sprintf("resnetrs-%d", depth), Family: "resnetrs", Description: desc,
			DefaultSpec: Spec{Arch: fmt.Sprintf("resnetrs-%d", depth), InChannels: 3, Classes: 1000},
			Build: func(s Spec, rng *rand.Rand) (Classifier, error) {
				var cfg ResNetRSConfig
				if err := DecodeConfig(s, &cfg); err != nil {
					return nil, err
				}
				return NewResNetRS(rng, depth, s.InChannels, s.Classes, cfg)
			},
		})
	}
}
