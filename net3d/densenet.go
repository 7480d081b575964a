package net3d

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// DenseNet3D (DenseNet-BC, Huang et al. 2017, in 3D) in two checkpoint
// layouts:
//
//   - MONAI's DenseNet(spatial_dims=3) (monai/networks/nets/densenet.py),
//     registered as "densenet3d-121", "-169", "-201", "-264";
//   - Kensho Hara's 3D-ResNets-PyTorch models/densenet.py, as copied into the
//     HKBU COVID-19 benchmark (covid19_pipeline/models/densenet.py), registered
//     as "hara-densenet3d-121", … .
//
// Both are: stem conv 7 → BN → ReLU → MaxPool(3, 2, 1); dense blocks whose
// layers compute BN → ReLU → conv 1×1×1 (C → bn_size·growth) → BN → ReLU →
// conv 3×3×3 (→ growth) [→ dropout] and concatenate that to their input;
// between blocks a transition BN → ReLU → conv 1×1×1 (C → ⌊C/2⌋) →
// AvgPool(2, 2); a final BN "norm5", ReLU, global average pooling and a
// linear layer. They differ in the stem, the names, the dropout kind and the
// initialisation:
//
//	                 MONAI                                  Hara/HKBU
//	stem conv        features.conv0, k 7, stride 2, pad 3   features.conv1, k (7,7,7), stride (1,2,2), pad 3
//	stem BN, pool    features.norm0, features.pool0         features.norm1, features.pool1
//	dense layer      features.denseblockB.denselayerJ       features.denseblockB.denselayerJ
//	                   .layers.{norm1,conv1,norm2,conv2}      .{norm1,conv1,norm2,conv2}
//	dropout          nn.Dropout3d (whole channels)          F.dropout (elements)
//	transition       features.transitionT.{norm,conv}       features.transitionT.{norm,conv}
//	final ReLU       class_layers.relu (a module)           F.relu in forward (no module)
//	linear           class_layers.out                       classifier
//	conv init        kaiming_normal_, fan_in, gain √2       kaiming_normal_, fan_out, gain √2
//
// In both, BN weights start at 1 and biases at 0, and the linear layer has
// PyTorch's default weight and a zero bias.

// DenseNetLayout selects the module names, stem and dropout of a DenseNet3D.
type DenseNetLayout int

const (
	// DenseNetMONAI is MONAI's DenseNet(spatial_dims=3) layout.
	DenseNetMONAI DenseNetLayout = iota
	// DenseNetHara is Kensho Hara's 3D DenseNet as used by the HKBU
	// COVID-19 baselines.
	DenseNetHara
)

// String returns "monai" or "hara".
func (l DenseNetLayout) String() string {
	if l == DenseNetHara {
		return "hara"
	}
	return "monai"
}

// DenseNetConfig holds a DenseNet3D's options (Spec.Config, JSON). Absent
// fields take the defaults of DefaultDenseNetConfig.
type DenseNetConfig struct {
	// GrowthRate is the number of channels each dense layer adds (k; 32).
	GrowthRate int `json:"growth_rate"`
	// BNSize multiplies GrowthRate to give the bottleneck width (4).
	BNSize int `json:"bn_size"`
	// InitFeatures is the stem convolution's output channel count (64).
	InitFeatures int `json:"init_features"`
	// Dropout is the probability of the dropout after each dense layer's
	// second convolution, active in training only (0 ≤ p < 1; default 0).
	Dropout float32 `json:"dropout"`
	// BlockConfig, when set, replaces the depth's layers per dense block
	// (121: 6, 12, 24, 16); the name's depth then no longer describes the
	// network. Used for small test networks.
	BlockConfig []int `json:"block_config,omitempty"`
}

// DefaultDenseNetConfig returns the reference options: growth 32, bn_size 4,
// 64 initial features, no dropout.
func DefaultDenseNetConfig() DenseNetConfig {
	return DenseNetConfig{GrowthRate: 32, BNSize: 4, InitFeatures: 64}
}

// Limits on DenseNetConfig values, against specs (e.g. from a checkpoint)
// that would exhaust memory.
const (
	maxDenseWidth  = 4096 // growth_rate·bn_size, init_features
	maxDenseLayers = 256  // per block
	maxDenseBlocks = 8
)

// denseNetDepths maps a depth to its layers per dense block.
var denseNetDepths = map[int][]int{
	121: {6, 12, 24, 16},
	169: {6, 12, 32, 32},
	201: {6, 12, 48, 32},
	264: {6, 12, 64, 48},
}

// DenseNetBlocks returns the layers per dense block of a DenseNet depth
// (121, 169, 201 or 264) and whether the depth is known.
func DenseNetBlocks(depth int) ([]int, bool) {
	b, ok := denseNetDepths[depth]
	return append([]int(nil), b...), ok
}

// parseDenseArch splits "densenet3d-121" / "hara-densenet3d-121" into layout
// and depth.
func parseDenseArch(arch string) (DenseNetLayout, int, error) {
	layout := DenseNetMONAI
	rest := arch
	if r, ok := strings.CutPrefix(rest, "hara-"); ok {
		layout, rest = DenseNetHara, r
	}
	d, ok := strings.CutPrefix(rest, "densenet3d-")
	depth, err := strconv.Atoi(d)
	if !ok || err != nil || denseNetDepths[depth] == nil {
		return 0, 0, fmt.Errorf("net3d: %q is not a DenseNet3D architecture (want [hara-]densenet3d-121, -169, -201 or -264)", arch)
	}
	return layout, depth, nil
}

// validate reports the first out-of-range option.
func (c *DenseNetConfig) validate(arch string) error {
	bad := func(field string, v any, want string) error {
		return fmt.Errorf("net3d: %s config: %s %v: want %s", arch, field, v, want)
	}
	switch {
	case c.GrowthRate < 1 || c.GrowthRate > maxDenseWidth:
		return bad("growth_rate", c.GrowthRate, fmt.Sprintf("1 to %d", maxDenseWidth))
	case c.BNSize < 1 || c.BNSize*c.GrowthRate > maxDenseWidth:
		return bad("bn_size", c.BNSize, fmt.Sprintf("at least 1, with bn_size·growth_rate at most %d", maxDenseWidth))
	case c.InitFeatures < 1 || c.InitFeatures > maxDenseWidth:
		return bad("init_features", c.InitFeatures, fmt.Sprintf("1 to %d", maxDenseWidth))
	case !(c.Dropout >= 0 && c.Dropout < 1):
		return bad("dropout", c.Dropout, "0 ≤ p < 1")
	case len(c.BlockConfig) > maxDenseBlocks:
		return bad("block_config", c.BlockConfig, fmt.Sprintf("1 to %d blocks", maxDenseBlocks))
	}
	for _, n := range c.BlockConfig {
		if n < 1 || n > maxDenseLayers {
			return bad("block_config", c.BlockConfig, fmt.Sprintf("1 to %d layers per block", maxDenseLayers))
		}
	}
	return nil
}

// DenseLayer is one layer of a dense block: with
// h = conv2(relu(norm2(conv1(relu(norm1(x)))))) and dropout in training,
// it returns concat(x, h) along channels: N×C×d×h×w → N×(C+growth)×d×h×w.
// In the MONAI layout its modules sit under "layers." and the dropout is
// channel-wise (nn.Dropout3d); in the Hara layout they are direct children
// and the dropout is element-wise (F.dropout).
type DenseLayer struct {
	nn.Base
	Norm1 *nn.BatchNorm
	Conv1 *nn.Conv // 1×1×1, C → bn_size·growth, no bias
	Norm2 *nn.BatchNorm
	Conv2 *nn.Conv // 3×3×3, pad 1, bn_size·growth → growth, no bias

	Layers *nn.Sequential // MONAI layout: the "layers" child; nil in the Hara layout

	drop      float32
	rng       *rand.Rand
	dropout3d *dropout3d // MONAI layout with dropout: the "layers.dropout" child
}

func newDenseLayer(rng *rand.Rand, layout DenseNetLayout, in int, c DenseNetConfig) *DenseLayer {
	mid := c.BNSize * c.GrowthRate
	l := &DenseLayer{
		Norm1: nn.NewBatchNorm(in, nn.BatchNormOpts{}),
		Conv1: nn.NewConv(rng, in, mid, []int{1, 1, 1}, nn.ConvOpts{NoBias: true}),
		Norm2: nn.NewBatchNorm(mid, nn.BatchNormOpts{}),
		Conv2: nn.NewConv(rng, mid, c.GrowthRate, []int{3, 3, 3}, nn.ConvOpts{Padding: []int{1}, NoBias: true}),
		drop:  c.Dropout,
		rng:   rng,
	}
	add := l.AddChild
	if layout == DenseNetMONAI {
		l.Layers = nn.Child(l, "layers", nn.NewSequential())
		add = func(name string, m nn.Module) { l.Layers.Add(name, m) }
	}
	add("norm1", l.Norm1)
	add("relu1", &nn.ReLU{})
	add("conv1", l.Conv1)
	add("norm2", l.Norm2)
	add("relu2", &nn.ReLU{})
	add("conv2", l.Conv2)
	if layout == DenseNetMONAI && c.Dropout > 0 {
		l.dropout3d = &dropout3d{p: c.Dropout, rng: rng}
		add("dropout", l.dropout3d)
	}
	return l
}

// Forward returns concat(x, dropout(conv2(relu(norm2(conv1(relu(norm1(x)))))))).
func (l *DenseLayer) Forward(x *tensor.Tensor) *tensor.Tensor {
	// In evaluation mode without gradients norm1 and relu1 run as one pass
	// and conv1, norm2 and relu2 as one fused convolution.
	h := nn.BatchNormAct(l.Norm1, x, tensor.ActReLU)
	h = l.Conv2.Forward(nn.ConvBNAct(l.Conv1, l.Norm2, h, nil, tensor.ActReLU))
	if l.dropout3d != nil {
		h = l.dropout3d.Forward(h)
	} else if l.drop > 0 && l.Training() {
		h = tensor.Dropout(h, l.drop, true, l.rng)
	}
	// Concatenating copies the block's features once per layer; that copy
	// costs about 1/(bn_size·growth) of the following 1×1×1 convolution.
	return tensor.Concat(1, x, h)
}

// dropout3d is torch.nn.Dropout3d: channel dropout in training, the
// identity in evaluation.
type dropout3d struct {
	nn.Base
	p   float32
	rng *rand.Rand
}

// Forward applies channel dropout in training.
func (d *dropout3d) Forward(x *tensor.Tensor) *tensor.Tensor {
	if d.p == 0 || !d.Training() {
		return x
	}
	return channelDropout(x, d.p, d.rng)
}

// channelDropout zeroes each channel x[n, c, …] as a whole with probability
// p and scales the others by 1/(1 − p) (F.dropout3d in training).
func channelDropout(x *tensor.Tensor, p float32, rng *rand.Rand) *tensor.Tensor {
	if x.Dim() < 2 {
		panic(&tensor.ShapeError{Op: "net3d.Dropout3d", Msg: fmt.Sprintf("input of shape %v: want N×C×…", x.Shape())})
	}
	shape := make([]int, x.Dim())
	for i := range shape {
		shape[i] = 1
	}
	shape[0], shape[1] = x.Size(0), x.Size(1)
	mask := tensor.Zeros(shape...)
	scale := 1 / (1 - p)
	for i := range mask.Data() {
		if rng.Float32() >= p {
			mask.Data()[i] = scale
		}
	}
	return tensor.Mul(x, mask)
}

// DenseNet3D is a 3D DenseNet-BC classifier in the MONAI or the Hara/HKBU
// layout (see DenseNetLayout): N×C×D×H×W → logits N×K. Its parameter names
// are the PyTorch state-dict keys of that layout.
//
// Features returns relu(norm5(…)), N×C'×d×h×w with C' the channels after
// the last dense block (1024 for DenseNet-121) and each spatial size reduced
// by the stem (÷2, in the Hara layout ÷1 in depth), the max pool (÷2) and
// each transition (÷2, floored). TapLayers are "features.denseblock1",
// "features.transition1", …, "features.denseblockB" (each module's output)
// followed by the final feature map, which is named "class_layers.relu" in
// the MONAI layout (that module's output, the map MONAI's CAM examples use)
// and "features.norm5" in the Hara layout (that module's output after the
// forward's functional ReLU: the input of HKBU's glob_avg_pool, the map its
// CAM3D reads).
//
// As PyTorch's default (not memory-efficient) DenseNet, a training forward
// pass keeps every layer's concatenated input for the backward pass, so
// activation memory grows with the square of a block's depth; evaluation
// with frozen parameters keeps none of them.
type DenseNet3D struct {
	nn.Base
	// Feat is the "features" Sequential: stem, dense blocks, transitions
	// and norm5.
	Feat *nn.Sequential
	// ClassLayers is MONAI's "class_layers" (relu, pool, flatten, out); nil
	// in the Hara layout.
	ClassLayers *nn.Sequential
	// FC is the final linear layer: class_layers.out (MONAI) or classifier
	// (Hara).
	FC *nn.Linear
	// Blocks are the dense blocks, each a Sequential of *DenseLayer named
	// "denselayer1", ….
	Blocks []*nn.Sequential

	layout DenseNetLayout
	spec   Spec
	steps  []denseStep
	taps   []string
	relu   nn.Module
}

// denseStep is one child of features, with its tap name ("" for none).
type denseStep struct {
	m   nn.Module
	tap string
}

// NewDenseNet3D builds the DenseNet3D that s describes: s.Arch one of
// "densenet3d-121", "-169", "-201", "-264" (MONAI layout) or the same with
// the prefix "hara-" (Hara/HKBU layout), s.Config a DenseNetConfig,
// s.InChannels and s.Classes positive. Weights are drawn from rng as in the
// layout's reference code. Invalid specs are errors.
func NewDenseNet3D(rng *rand.Rand, s Spec) (*DenseNet3D, error) {
	layout, depth, err := parseDenseArch(s.Arch)
	if err != nil {
		return nil, err
	}
	if s.InChannels < 1 || s.Classes < 1 {
		return nil, fmt.Errorf("net3d: %s: in_channels %d and classes %d must be positive", s.Arch, s.InChannels, s.Classes)
	}
	cfg := DefaultDenseNetConfig()
	if err := DecodeConfig(s, &cfg); err != nil {
		return nil, err
	}
	if err := cfg.validate(s.Arch); err != nil {
		return nil, err
	}
	blocks := cfg.BlockConfig
	if len(blocks) == 0 {
		blocks = denseNetDepths[depth]
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("net3d: %s config: %w", s.Arch, err)
	}
	s.Config = raw
	var d *DenseNet3D
	if err := tensor.Catch(func() { d = buildDenseNet(rng, layout, blocks, s, cfg) }); err != nil {
		return nil, fmt.Errorf("net3d: build %s: %w", s.Arch, err)
	}
	return d, nil
}

func buildDenseNet(rng *rand.Rand, layout DenseNetLayout, blocks []int, s Spec, cfg DenseNetConfig) *DenseNet3D {
	d := &DenseNet3D{layout: layout, spec: s}
	d.Feat = nn.Child(d, "features", nn.NewSequential())
	add := func(name string, m nn.Module, tap bool) {
		d.Feat.Add(name, m)
		st := denseStep{m: m}
		if tap {
			st.tap = "features." + name
			d.taps = append(d.taps, st.tap)
		}
		d.steps = append(d.steps, st)
	}
	c0 := cfg.InitFeatures
	if layout == DenseNetMONAI {
		add("conv0", nn.NewConv(rng, s.InChannels, c0, []int{7, 7, 7}, nn.ConvOpts{Stride: []int{2}, Padding: []int{3}, NoBias: true}), false)
		add("norm0", nn.NewBatchNorm(c0, nn.BatchNormOpts{}), false)
		add("relu0", &nn.ReLU{}, false)
		add("pool0", nn.NewMaxPool(tensor.PoolOpts{Kernel: []int{3}, Stride: []int{2}, Padding: []int{1}}), false)
	} else {
		add("conv1", nn.NewConv(rng, s.InChannels, c0, []int{7, 7, 7}, nn.ConvOpts{Stride: []int{1, 2, 2}, Padding: []int{3}, NoBias: true}), false)
		add("norm1", nn.NewBatchNorm(c0, nn.BatchNormOpts{}), false)
		add("relu1", &nn.ReLU{}, false)
		add("pool1", nn.NewMaxPool(tensor.PoolOpts{Kernel: []int{3}, Stride: []int{2}, Padding: []int{1}}), false)
	}
	ch := c0
	for i, n := range blocks {
		block := nn.NewSequential()
		for j := range n {
			block.Add(fmt.Sprintf("denselayer%d", j+1), newDenseLayer(rng, layout, ch+j*cfg.GrowthRate, cfg))
		}
		d.Blocks = append(d.Blocks, block)
		add(fmt.Sprintf("denseblock%d", i+1), block, true)
		ch += n * cfg.GrowthRate
		if i == len(blocks)-1 {
			break
		}
		t := nn.NewSequential()
		t.Add("norm", nn.NewBatchNorm(ch, nn.BatchNormOpts{}))
		t.Add("relu", &nn.ReLU{})
		t.Add("conv", nn.NewConv(rng, ch, ch/2, []int{1, 1, 1}, nn.ConvOpts{NoBias: true}))
		t.Add("pool", nn.NewAvgPool(tensor.PoolOpts{Kernel: []int{2}, Stride: []int{2}, CountIncludePad: true}))
		add(fmt.Sprintf("transition%d", i+1), t, true)
		ch /= 2
	}
	add("norm5", nn.NewBatchNorm(ch, nn.BatchNormOpts{}), false)
	d.relu = &nn.ReLU{}
	d.FC = nn.NewLinear(rng, ch, s.Classes, true)
	if layout == DenseNetMONAI {
		d.ClassLayers = nn.Child(d, "class_layers", nn.NewSequential())
		d.ClassLayers.Add("relu", d.relu)
		d.ClassLayers.Add("pool", nn.NewAdaptiveAvgPool(1, 1, 1))
		d.ClassLayers.Add("flatten", nn.NewFlatten())
		d.ClassLayers.Add("out", d.FC)
		d.taps = append(d.taps, "class_layers.relu")
	} else {
		nn.Child(d, "classifier", d.FC)
		d.taps = append(d.taps, "features.norm5")
	}

	// Initialisation of the reference code.
	for _, nm := range nn.NamedModules(d) {
		switch m := nm.Module.(type) {
		case *nn.Conv:
			if layout == DenseNetMONAI {
				nn.KaimingNormal(rng, m.Weight, nn.FanIn, nn.GainReLU)
			} else {
				nn.KaimingNormal(rng, m.Weight, nn.FanOut, nn.GainReLU)
			}
		case *nn.BatchNorm:
			nn.Ones(m.Weight)
			nn.Zeros(m.Bias)
		}
	}
	nn.Zeros(d.FC.Bias)
	return d
}

// Layout returns the network's checkpoint layout.
func (d *DenseNet3D) Layout() DenseNetLayout { return d.layout }

// Features runs the stem, dense blocks, transitions and norm5 and returns
// relu(norm5(…)), N×C'×d×h×w, reporting each tap layer's output to tap
// (see DenseNet3D).
func (d *DenseNet3D) Features(x *tensor.Tensor, tap Tap) *tensor.Tensor {
	if x.Dim() != 5 {
		panic(&tensor.ShapeError{Op: "net3d.DenseNet3D", Msg: fmt.Sprintf("input of shape %v: want N×C×D×H×W", x.Shape())})
	}
	// The steps between two taps run as one nn.FusedForward, which fuses the
	// stem's conv, norm and ReLU and each BatchNorm with its ReLU in
	// evaluation mode without gradients.
	var run []nn.Module
	for _, st := range d.steps {
		run = append(run, st.m)
		if st.tap != "" {
			x = callTap(tap, st.tap, nn.FusedForward(x, nil, tensor.ActNone, run...))
			run = run[:0]
		}
	}
	x = nn.FusedForward(x, nil, tensor.ActNone, append(run, d.relu)...)
	return callTap(tap, d.taps[len(d.taps)-1], x)
}

// Head returns FC(mean over d×h×w of f): N×C'×d×h×w → N×K.
func (d *DenseNet3D) Head(f *tensor.Tensor) *tensor.Tensor { return GlobalPoolLinear(f, nil, d.FC) }

// Forward returns Head(Features(x, nil)), the logits N×K.
func (d *DenseNet3D) Forward(x *tensor.Tensor) *tensor.Tensor { return d.Head(d.Features(x, nil)) }

// Linear returns the final linear layer (K×C').
func (d *DenseNet3D) Linear() *nn.Linear { return d.FC }

// TapLayers returns "features.denseblock1", "features.transition1", …,
// "features.denseblockB" and the final feature map's name
// ("class_layers.relu" or "features.norm5"; see DenseNet3D).
func (d *DenseNet3D) TapLayers() []string { return append([]string(nil), d.taps...) }

// Spec returns the spec the network was built from, its Config holding the
// full DenseNetConfig in effect.
func (d *DenseNet3D) Spec() Spec { return d.spec }

func init() {
	cfg, _ := json.Marshal(DefaultDenseNetConfig())
	for _, depth := range []int{121, 169, 201, 264} {
		blocks := fmt.Sprint(denseNetDepths[depth])
		for _, l := range []DenseNetLayout{DenseNetMONAI, DenseNetHara} {
			name := fmt.Sprintf("densenet3d-%d", depth)
			desc := fmt.Sprintf("DenseNet-%d 3D (blocks %s, growth 32), MONAI layout: DenseNet(spatial_dims=3) keys "+
				"features.conv0 (k7 s2), features.denseblockB.denselayerJ.layers.*, class_layers.out", depth, blocks)
			if l == DenseNetHara {
				name = "hara-" + name
				desc = fmt.Sprintf("DenseNet-%d 3D (blocks %s, growth 32), Hara/HKBU layout: 3D-ResNets-PyTorch densenet.py keys "+
					"features.conv1 (k7 s(1,2,2)), features.denseblockB.denselayerJ.*, classifier", depth, blocks)
			}
			Register(Entry{
				Name:        name,
				Family:      "densenet3d",
				Description: desc,
				DefaultSpec: Spec{Arch: name, InChannels: 1, Classes: 3, Config: cfg},
				Build: func(s Spec, rng *rand.Rand) (Classifier, error) {
					d, err := NewDenseNet3D(rng, s)
					if err != nil {
						return nil, err // an untyped nil, not a nil *DenseNet3D
					}
					return d, nil
				},
			})
		}
	}
}
