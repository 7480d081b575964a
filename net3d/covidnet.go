package net3d

// CovidNet3D: the Mobile3DNet of the CovidNet3D paper's search space (He et
// al., AAAI 2021; reference code marsggbo/CovidNet3D networks/mobile3d_net.py
// and mobile3d_ops.py), built from an architecture spec that chooses one
// candidate operation per searchable cell. supernet.go holds the form with
// every candidate allocated.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// CandidateOp is one candidate operation of a searchable CovidNet3D cell.
// Every candidate maps W channels to W channels at stride 1.
type CandidateOp struct {
	// Name is the op's JSON name: "mb{k}_e{e}" for an MBConv with a k×k×k
	// depthwise kernel and expansion ratio e, "identity", "zero" or "zero2".
	Name string
	// Kernel and Expand are the MBConv kernel size and expansion ratio; both
	// are 0 for identity and zero.
	Kernel, Expand int
}

// Indices of the parameter-free candidates in the reference order.
const (
	// OpIdentity (7) returns its input.
	OpIdentity = 7
	// OpZero (8) is the reference's ZeroLayer: the cell passes its input on.
	OpZero = 8
	// OpZero2 (9) is the reference's second ZeroLayer, appended only in cells
	// with a shortcut; it behaves as OpZero.
	OpZero2 = 9
)

var covidCandidates = [...]CandidateOp{
	{"mb3_e3", 3, 3}, {"mb3_e4", 3, 4}, {"mb3_e6", 3, 6}, {"mb5_e3", 5, 3},
	{"mb5_e4", 5, 4}, {"mb7_e3", 7, 3}, {"mb7_e4", 7, 4},
	{"identity", 0, 0}, {"zero", 0, 0}, {"zero2", 0, 0},
}

// covidOpAliases maps the reference's OPS dictionary keys to candidate
// indices, so that op lists copied from the Python code decode too.
var covidOpAliases = map[string]int{
	"3x3_MBConv3": 0, "3x3_MBConv4": 1, "3x3_MBConv6": 2, "5x5_MBConv3": 3,
	"5x5_MBConv4": 4, "7x7_MBConv3": 5, "7x7_MBConv4": 6, "Identity": OpIdentity, "Zero": OpZero,
}

// CovidNet3DCandidates returns the ten candidate operations in the
// reference's order (index = position in a cell's LayerChoice):
//
//	0 mb3_e3   1 mb3_e4   2 mb3_e6   3 mb5_e3   4 mb5_e4   5 mb7_e3   6 mb7_e4
//	7 identity 8 zero     9 zero2 (only in cells with a shortcut)
func CovidNet3DCandidates() []CandidateOp { return append([]CandidateOp(nil), covidCandidates[:]...) }

// isZeroOp reports whether candidate index j is one of the Zero layers.
func isZeroOp(j int) bool { return j == OpZero || j == OpZero2 }

// OpChoice is the index of a candidate operation (see
// CovidNet3DCandidates). In JSON it is written as the op's name ("mb5_e4")
// and read from a name, a reference OPS key ("5x5_MBConv4") or the index
// itself (4).
type OpChoice int

// String returns the op's name, or "op(N)" for an index out of range.
func (c OpChoice) String() string {
	if c >= 0 && int(c) < len(covidCandidates) {
		return covidCandidates[c].Name
	}
	return fmt.Sprintf("op(%d)", int(c))
}

// MarshalJSON writes the op's name.
func (c OpChoice) MarshalJSON() ([]byte, error) {
	if c < 0 || int(c) >= len(covidCandidates) {
		return nil, fmt.Errorf("op index %d out of range 0–%d", int(c), len(covidCandidates)-1)
	}
	return json.Marshal(covidCandidates[c].Name)
}

// UnmarshalJSON reads an op name, a reference OPS key or an index 0–9.
func (c *OpChoice) UnmarshalJSON(b []byte) error {
	var name string
	if err := json.Unmarshal(b, &name); err == nil {
		j, ok := covidOpIndex(name)
		if !ok {
			return fmt.Errorf("unknown op %q (want one of %s, or an index 0–%d)", name, covidOpNames(), len(covidCandidates)-1)
		}
		*c = OpChoice(j)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("op %s: want a name or an index", b)
	}
	if f != math.Trunc(f) || f < 0 || f >= float64(len(covidCandidates)) {
		return fmt.Errorf("op index %s out of range 0–%d", b, len(covidCandidates)-1)
	}
	*c = OpChoice(f)
	return nil
}

func covidOpIndex(name string) (int, bool) {
	for j, o := range covidCandidates {
		if o.Name == name {
			return j, true
		}
	}
	j, ok := covidOpAliases[name]
	return j, ok
}

func covidOpNames() string {
	names := make([]string, len(covidCandidates))
	for j, o := range covidCandidates {
		names[j] = o.Name
	}
	return strings.Join(names, ", ")
}

// CovidNet3DConfig is the JSON configuration (Spec.Config) of the
// covidnet3d family: the Mobile3DNet hyperparameters of the reference
// (§1.5.1 of the reference notes) and the chosen op of every cell.
// InChannels and Classes come from the Spec.
//
// Widths are scaled as the reference does: every stage width, FirstWidth
// and FirstCellWidth become makeDivisible(v·WidthMult, 8) (the nearest
// multiple of 8, at least 8, plus 8 if that lost more than 10 %);
// FeatureMix is used as given for WidthMult ≤ 1 and scaled likewise above.
type CovidNet3DConfig struct {
	// WidthStages is the output width of each stage's cells.
	WidthStages []int `json:"width_stages"`
	// NCellStages is the number of searchable cells per stage.
	NCellStages []int `json:"n_cell_stages"`
	// StrideStages is the stride (1 or 2) of each stage's first cell,
	// applied by its calibration convolution.
	StrideStages []int `json:"stride_stages"`
	// Ops holds the chosen candidate of every cell, Ops[stage][cell].
	// Empty means candidate 0 (mb3_e3) everywhere.
	Ops [][]OpChoice `json:"ops,omitempty"`
	// FirstWidth is the stem width (first_conv and blocks.0's depthwise conv).
	FirstWidth int `json:"first_width"`
	// FirstCellWidth is the output width of blocks.0.
	FirstCellWidth int `json:"first_cell_width"`
	// FeatureMix is the width of feature_mix_layer (the CAM feature map).
	FeatureMix int `json:"feature_mix"`
	// Dropout is the classifier dropout probability, 0 ≤ p < 1.
	Dropout float64 `json:"dropout"`
	// Pool is how the head pools over positions: "" or "avg" is the
	// reference's global average pooling of feature_mix_layer before the
	// linear classifier; "lse" applies the classifier at every position and
	// pools the class scores with log-sum-exp of sharpness PoolR (see
	// LSEPoolLinear), so that a class is scored by where its evidence is
	// strongest and the class-activation map is that score map.
	Pool string `json:"pool,omitempty"`
	// PoolR is the log-sum-exp sharpness r for Pool "lse", 0 < r ≤ 100
	// (0 means 5): near 0 it averages, large r takes the maximum.
	PoolR float64 `json:"pool_r,omitempty"`
	// WidthMult scales every width (see above).
	WidthMult float64 `json:"width_mult"`
	// BNEps and BNMomentum are set on every BatchNorm.
	BNEps      float64 `json:"bn_eps"`
	BNMomentum float64 `json:"bn_momentum"`
}

// Limits on a CovidNet3D config, so that a spec from outside cannot ask for
// an unbounded network.
const (
	covidMaxWidth = 8192
	covidMaxCells = 256
	covidMaxMult  = 8
)

// DefaultCovidNet3DConfig returns the configuration of the reference's CT
// search (CTConfig and search_ct.yaml): widths [32 64 128 256 512 1024],
// cells [4 4 4 4 4 1], strides [2 2 2 1 2 1], stem 32, first cell 16,
// feature mix 1280, dropout 0.5, width multiplier 1, BatchNorm eps 1e-3 and
// momentum 0.1, every cell mb3_e3.
func DefaultCovidNet3DConfig() CovidNet3DConfig {
	return CovidNet3DConfig{
		WidthStages:    []int{32, 64, 128, 256, 512, 1024},
		NCellStages:    []int{4, 4, 4, 4, 4, 1},
		StrideStages:   []int{2, 2, 2, 1, 2, 1},
		FirstWidth:     32,
		FirstCellWidth: 16,
		FeatureMix:     1280,
		Dropout:        0.5,
		WidthMult:      1,
		BNEps:          1e-3,
		BNMomentum:     0.1,
	}
}

// SmallCovidNet3DConfig returns a configuration small enough to train on a
// CPU: widths [16 24 32 48 64 96], cells [1 2 2 2 1 1], the reference's
// strides, stem 16, first cell 8, feature mix 256, and otherwise as
// DefaultCovidNet3DConfig.
func SmallCovidNet3DConfig() CovidNet3DConfig {
	c := DefaultCovidNet3DConfig()
	c.WidthStages = []int{16, 24, 32, 48, 64, 96}
	c.NCellStages = []int{1, 2, 2, 2, 1, 1}
	c.FirstWidth, c.FirstCellWidth, c.FeatureMix = 16, 8, 256
	return c
}

// CellInfo describes one searchable cell of a CovidNet3D.
type CellInfo struct {
	// Key is the reference's LayerChoice key, "s{stage}_c{cell}".
	Key         string
	Stage, Cell int
	// Block is the cell's index in "blocks" (2i+2 for the i-th cell); its
	// calibration convolution is Block−1.
	Block int
	// In is the calibration input width, Width the cell width, Stride the
	// calibration stride.
	In, Width, Stride int
	// Shortcut is true when Stride == 1 and In == Width: the block then
	// adds its input to the op output (identity gives 2x, zero gives x).
	Shortcut bool
	// Candidates names the cell's candidates in index order: 9 without a
	// shortcut, 10 (with "zero2") with one.
	Candidates []string
}

// covidLayout is a validated configuration with widths resolved.
type covidLayout struct {
	first, firstCell, mix int
	widths                []int
	cells                 []CellInfo
	ops                   []int // chosen op per cell, in forward order
}

// makeDivisible8 is the reference's make_divisible(v, 8): v rounded to the
// nearest multiple of 8, at least 8, plus 8 when that is below 0.9·v.
func makeDivisible8(v float64) int {
	n := max(8, int(v+4)/8*8)
	if float64(n) < 0.9*v {
		n += 8
	}
	return n
}

// Validate checks the configuration and returns an error naming the first
// bad field.
func (c *CovidNet3DConfig) Validate() error {
	_, err := c.layout()
	return err
}

func (c *CovidNet3DConfig) layout() (*covidLayout, error) {
	bad := func(format string, args ...any) (*covidLayout, error) {
		return nil, fmt.Errorf("covidnet3d config: "+format, args...)
	}
	ns := len(c.WidthStages)
	switch {
	case ns == 0:
		return bad("width_stages is empty")
	case len(c.NCellStages) != ns:
		return bad("n_cell_stages has %d entries, width_stages %d", len(c.NCellStages), ns)
	case len(c.StrideStages) != ns:
		return bad("stride_stages has %d entries, width_stages %d", len(c.StrideStages), ns)
	case !(c.WidthMult > 0 && c.WidthMult <= covidMaxMult):
		return bad("width_mult %g: want 0 < width_mult ≤ %d", c.WidthMult, covidMaxMult)
	case c.FirstWidth < 1 || c.FirstWidth > covidMaxWidth:
		return bad("first_width %d: want 1 to %d", c.FirstWidth, covidMaxWidth)
	case c.FirstCellWidth < 1 || c.FirstCellWidth > covidMaxWidth:
		return bad("first_cell_width %d: want 1 to %d", c.FirstCellWidth, covidMaxWidth)
	case c.FeatureMix < 1 || c.FeatureMix > covidMaxWidth:
		return bad("feature_mix %d: want 1 to %d", c.FeatureMix, covidMaxWidth)
	case !(c.Dropout >= 0 && c.Dropout < 1):
		return bad("dropout %g: want 0 ≤ dropout < 1", c.Dropout)
	case c.Pool != "" && c.Pool != "avg" && c.Pool != "lse":
		return bad("pool %q: want avg or lse", c.Pool)
	case !(c.PoolR >= 0 && c.PoolR <= 100) || (c.PoolR != 0 && c.Pool != "lse"):
		return bad("pool_r %g: want 0 < pool_r ≤ 100, with pool lse", c.PoolR)
	case !(c.BNEps > 0 && c.BNEps < 1):
		return bad("bn_eps %g: want 0 < bn_eps < 1", c.BNEps)
	case !(c.BNMomentum > 0 && c.BNMomentum <= 1):
		return bad("bn_momentum %g: want 0 < bn_momentum ≤ 1", c.BNMomentum)
	}
	total := 0
	for s := range ns {
		if w := c.WidthStages[s]; w < 1 || w > covidMaxWidth {
			return bad("width_stages[%d] = %d: want 1 to %d", s, w, covidMaxWidth)
		}
		if n := c.NCellStages[s]; n < 1 || n > covidMaxCells {
			return bad("n_cell_stages[%d] = %d: want 1 to %d", s, n, covidMaxCells)
		}
		if st := c.StrideStages[s]; st != 1 && st != 2 {
			return bad("stride_stages[%d] = %d: want 1 or 2", s, st)
		}
		total += c.NCellStages[s]
	}
	if total > covidMaxCells {
		return bad("n_cell_stages sum to %d cells: at most %d", total, covidMaxCells)
	}
	if len(c.Ops) != 0 && len(c.Ops) != ns {
		return bad("ops has %d stages, width_stages %d", len(c.Ops), ns)
	}
	scale := func(v int) int { return makeDivisible8(float64(v) * c.WidthMult) }
	l := &covidLayout{first: scale(c.FirstWidth), firstCell: scale(c.FirstCellWidth), mix: c.FeatureMix}
	if c.WidthMult > 1 {
		l.mix = scale(c.FeatureMix)
	}
	for s := range ns {
		l.widths = append(l.widths, scale(c.WidthStages[s]))
	}
	for _, w := range append([]int{l.first, l.firstCell, l.mix}, l.widths...) {
		if w > covidMaxWidth {
			return bad("width %d after width_mult %g exceeds %d", w, c.WidthMult, covidMaxWidth)
		}
	}
	in := l.firstCell
	for s, w := range l.widths {
		if len(c.Ops) != 0 && len(c.Ops[s]) != c.NCellStages[s] {
			return bad("ops[%d] has %d cells, n_cell_stages[%d] = %d", s, len(c.Ops[s]), s, c.NCellStages[s])
		}
		for i := range c.NCellStages[s] {
			stride := 1
			if i == 0 {
				stride = c.StrideStages[s]
			}
			ci := CellInfo{
				Key: fmt.Sprintf("s%d_c%d", s, i), Stage: s, Cell: i, Block: 2*len(l.cells) + 2,
				In: in, Width: w, Stride: stride, Shortcut: stride == 1 && in == w,
			}
			n := OpZero + 1
			if ci.Shortcut {
				n = OpZero2 + 1
			}
			for j := range n {
				ci.Candidates = append(ci.Candidates, covidCandidates[j].Name)
			}
			op := 0
			if len(c.Ops) != 0 {
				op = int(c.Ops[s][i])
			}
			if op < 0 || op >= n {
				return bad("ops[%d][%d] = %d (%s): cell %s has %d candidates (0–%d)", s, i, op, OpChoice(op), ci.Key, n, n-1)
			}
			l.cells = append(l.cells, ci)
			l.ops = append(l.ops, op)
			in = w
		}
	}
	return l, nil
}

// withOps returns a copy of c whose Ops are the given per-cell choices (in
// forward order; len must match the layout).
func (c CovidNet3DConfig) withOps(l *covidLayout, ops []int) CovidNet3DConfig {
	c.WidthStages = slices.Clone(c.WidthStages)
	c.NCellStages = slices.Clone(c.NCellStages)
	c.StrideStages = slices.Clone(c.StrideStages)
	c.Ops = make([][]OpChoice, len(c.NCellStages))
	for i, ci := range l.cells {
		c.Ops[ci.Stage] = append(c.Ops[ci.Stage], OpChoice(ops[i]))
	}
	return c
}

// ApplyNNIArch sets c.Ops from an architecture file of the reference search
// (NNI's epoch_N.json: {"s0_c0": [false, true, …], …}, one entry per cell,
// each a one-hot list of 9 or 10 booleans or 0/1 numbers). Missing, extra or
// malformed keys are errors.
func (c *CovidNet3DConfig) ApplyNNIArch(data []byte) error {
	saved := c.Ops
	c.Ops = nil
	l, err := c.layout()
	c.Ops = saved
	if err != nil {
		return err
	}
	var raw map[string][]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("covidnet3d: NNI architecture: %w", err)
	}
	ops := make([]int, len(l.cells))
	for i, ci := range l.cells {
		mask, ok := raw[ci.Key]
		if !ok {
			return fmt.Errorf("covidnet3d: NNI architecture: no entry for cell %s", ci.Key)
		}
		if len(mask) != len(ci.Candidates) {
			return fmt.Errorf("covidnet3d: NNI architecture: %s has %d entries, cell has %d candidates", ci.Key, len(mask), len(ci.Candidates))
		}
		ops[i] = -1
		for j, m := range mask {
			v := string(bytes.TrimSpace(m))
			switch v {
			case "false", "0", "0.0":
				continue
			case "true", "1", "1.0":
			default:
				return fmt.Errorf("covidnet3d: NNI architecture: %s[%d] = %s: want a boolean or 0/1", ci.Key, j, v)
			}
			if ops[i] >= 0 {
				return fmt.Errorf("covidnet3d: NNI architecture: %s selects both %d and %d", ci.Key, ops[i], j)
			}
			ops[i] = j
		}
		if ops[i] < 0 {
			return fmt.Errorf("covidnet3d: NNI architecture: %s selects no candidate", ci.Key)
		}
		delete(raw, ci.Key)
	}
	if len(raw) > 0 {
		extra := slices.Sorted(func(yield func(string) bool) {
			for k := range raw {
				if !yield(k) {
					return
				}
			}
		})
		return fmt.Errorf("covidnet3d: NNI architecture: keys %s match no cell", strings.Join(extra, ", "))
	}
	*c = c.withOps(l, ops)
	return nil
}

// ---- layers ------------------------------------------------------------------

// MobileConvLayer is the reference's ConvLayer with ops order weight_bn_act
// (and each stage of an MBConv): y = act(bn(conv(x))) with a bias-free
// Conv3d "conv" (padding k/2), a BatchNorm3d "bn" and, when ReLU6 is set,
// min(max(·, 0), 6).
type MobileConvLayer struct {
	nn.Base
	Conv  *nn.Conv
	BN    *nn.BatchNorm
	ReLU6 bool
}

func newMobileConvLayer(rng *rand.Rand, in, out, k, stride, groups int, relu6 bool, bn nn.BatchNormOpts) *MobileConvLayer {
	l := &MobileConvLayer{ReLU6: relu6}
	l.Conv = nn.Child(l, "conv", nn.NewConv(rng, in, out, []int{k, k, k}, nn.ConvOpts{
		Stride: []int{stride}, Padding: []int{k / 2}, Groups: groups, NoBias: true,
	}))
	l.BN = nn.Child(l, "bn", nn.NewBatchNorm(out, bn))
	return l
}

// Forward returns act(bn(conv(x))) for x of shape N×In×D×H×W.
// In evaluation mode without gradients it is one fused convolution
// (nn.ConvBNAct).
func (l *MobileConvLayer) Forward(x *tensor.Tensor) *tensor.Tensor { return l.forward(x, nil) }

// forward returns act(bn(conv(x))), or bn(conv(x)) + residual when residual
// is not nil (point_linear has no activation).
func (l *MobileConvLayer) forward(x, residual *tensor.Tensor) *tensor.Tensor {
	act := tensor.ActNone
	if l.ReLU6 {
		act = tensor.ActReLU6
	}
	return nn.ConvBNAct(l.Conv, l.BN, x, residual, act)
}

// MBConv is the reference's MBInvertedConvLayer, an inverted residual
// without its residual: "inverted_bottleneck" (1×1×1 conv In→Mid, BN,
// ReLU6; absent when Expand is 1), "depth_conv" (k×k×k depthwise conv Mid→Mid
// at Stride, BN, ReLU6) and "point_linear" (1×1×1 conv Mid→Out, BN), with
// Mid = In·Expand. Its parameter count is
// [In·Mid + 2·Mid if Expand ≠ 1] + Mid·k³ + 2·Mid + Mid·Out + 2·Out.
type MBConv struct {
	nn.Base
	InvertedBottleneck *MobileConvLayer // nil when Expand == 1
	DepthConv          *MobileConvLayer
	PointLinear        *MobileConvLayer
	In, Mid, Out       int
	Kernel, Expand     int
}

func newMBConv(rng *rand.Rand, in, out, k, stride, expand int, bn nn.BatchNormOpts) *MBConv {
	m := &MBConv{In: in, Mid: in * expand, Out: out, Kernel: k, Expand: expand}
	if expand != 1 {
		m.InvertedBottleneck = nn.Child(m, "inverted_bottleneck", newMobileConvLayer(rng, in, m.Mid, 1, 1, 1, true, bn))
	}
	m.DepthConv = nn.Child(m, "depth_conv", newMobileConvLayer(rng, m.Mid, m.Mid, k, stride, m.Mid, true, bn))
	m.PointLinear = nn.Child(m, "point_linear", newMobileConvLayer(rng, m.Mid, out, 1, 1, 1, false, bn))
	return m
}

// Forward returns point_linear(depth_conv(inverted_bottleneck(x))).
func (m *MBConv) Forward(x *tensor.Tensor) *tensor.Tensor { return m.forward(x, nil) }

// forward returns Forward(x) + residual (residual nil: Forward(x)), the
// addition fused into point_linear when that runs fused.
func (m *MBConv) forward(x, residual *tensor.Tensor) *tensor.Tensor {
	if m.InvertedBottleneck != nil {
		x = m.InvertedBottleneck.Forward(x)
	}
	return m.PointLinear.forward(m.DepthConv.Forward(x), residual)
}

// CalibrationLayer is the reference's CalibrationLayer before every cell:
// a 1×1×1 Conv3d "conv" In→Width at the cell's stride, with bias, no BN or
// activation.
type CalibrationLayer struct {
	nn.Base
	Conv *nn.Conv
}

// Forward returns conv(x).
func (c *CalibrationLayer) Forward(x *tensor.Tensor) *tensor.Tensor {
	return nn.ConvBNAct(c.Conv, nil, x, nil, tensor.ActNone)
}

// IdentityOp is the identity candidate (the reference's parameter-free
// IdentityLayer).
type IdentityOp struct{ nn.Base }

// Forward returns x.
func (*IdentityOp) Forward(x *tensor.Tensor) *tensor.Tensor { return x }

// ZeroOp is the reference's ZeroLayer candidate: its own output is x·0, but
// a cell that chose it passes its input on (see
// MobileInvertedResidualBlock).
type ZeroOp struct{ nn.Base }

// Forward returns x·0.
func (*ZeroOp) Forward(x *tensor.Tensor) *tensor.Tensor { return tensor.MulScalar(x, 0) }

// CandidateList holds a cell's allocated candidates as children named by
// their candidate index ("0" … "9"), as NNI's LayerChoice.choices: all of
// them in a Supernet, only the chosen one in a CovidNet3D.
type CandidateList struct {
	nn.Base
	ops []nn.Module // indexed by candidate; nil where not allocated
}

// At returns candidate j, or nil when it is not allocated.
func (l *CandidateList) At(j int) nn.Module {
	if j < 0 || j >= len(l.ops) {
		return nil
	}
	return l.ops[j]
}

// Forward panics with a *tensor.ShapeError: the owning block selects and
// runs candidates.
func (l *CandidateList) Forward(*tensor.Tensor) *tensor.Tensor {
	panic(&tensor.ShapeError{Op: "net3d.CandidateList", Msg: "a candidate list has no Forward; the block runs its candidates"})
}

// LayerChoice mirrors NNI's LayerChoice as a module: its candidates are
// registered under "choices".
type LayerChoice struct {
	nn.Base
	Choices *CandidateList
}

// Forward panics with a *tensor.ShapeError: the owning block selects and
// runs candidates.
func (l *LayerChoice) Forward(*tensor.Tensor) *tensor.Tensor {
	panic(&tensor.ShapeError{Op: "net3d.LayerChoice", Msg: "a layer choice has no Forward; the block runs its candidates"})
}

// MobileInvertedResidualBlock is a searchable cell after its calibration
// layer: candidates under "mobile_inverted_conv.choices.{j}" and the
// reference's block semantics. With chosen op j and input x (the
// calibration output) its output is
//
//	y = x            if j is a Zero layer
//	y = op_j(x) + x  if Cell.Shortcut
//	y = op_j(x)      otherwise
//
// so identity gives 2x in cells with a shortcut and x in the others.
// Equivalently y = s·x + g_j(x) with s = 1 for a shortcut and the effective
// op g_j: an MBConv's output, x for identity, and for Zero 0 with a
// shortcut and x without one; the mask forms of Supernet weight g_j.
type MobileInvertedResidualBlock struct {
	nn.Base
	MobileInvertedConv *LayerChoice
	// Cell describes the cell's position, widths and candidates.
	Cell CellInfo
	// Choice is the candidate Forward runs.
	Choice int
}

func newCell(rng *rand.Rand, ci CellInfo, alloc []int, choice int, bn nn.BatchNormOpts) *MobileInvertedResidualBlock {
	b := &MobileInvertedResidualBlock{Cell: ci, Choice: choice}
	b.MobileInvertedConv = nn.Child(b, "mobile_inverted_conv", &LayerChoice{})
	list := nn.Child(b.MobileInvertedConv, "choices", &CandidateList{ops: make([]nn.Module, len(ci.Candidates))})
	b.MobileInvertedConv.Choices = list
	for _, j := range alloc {
		var op nn.Module
		switch {
		case j == OpIdentity:
			op = &IdentityOp{}
		case isZeroOp(j):
			op = &ZeroOp{}
		default:
			c := covidCandidates[j]
			op = newMBConv(rng, ci.Width, ci.Width, c.Kernel, 1, c.Expand, bn)
		}
		list.AddChild(strconv.Itoa(j), op)
		list.ops[j] = op
	}
	return b
}

// effective returns g_j(x) (see MobileInvertedResidualBlock), or nil when it
// is zero (a Zero candidate in a cell with a shortcut).
func (b *MobileInvertedResidualBlock) effective(j int, x *tensor.Tensor) *tensor.Tensor {
	switch {
	case j == OpIdentity:
		return x
	case isZeroOp(j):
		if b.Cell.Shortcut {
			return nil
		}
		return x
	}
	op := b.MobileInvertedConv.Choices.At(j)
	if op == nil {
		panic(&tensor.ShapeError{Op: "net3d.CovidNet3D", Msg: fmt.Sprintf("cell %s: candidate %d (%s) is not allocated", b.Cell.Key, j, OpChoice(j))})
	}
	return op.Forward(x)
}

// Forward returns the block output for the fixed Choice.
func (b *MobileInvertedResidualBlock) Forward(x *tensor.Tensor) *tensor.Tensor {
	if mb, ok := b.MobileInvertedConv.Choices.At(b.Choice).(*MBConv); ok && b.Cell.Shortcut {
		// g(x) + x with the addition in point_linear's output pass.
		return mb.forward(x, x)
	}
	g := b.effective(b.Choice, x)
	switch {
	case g == nil:
		return x
	case b.Cell.Shortcut:
		return tensor.Add(g, x)
	}
	return g
}

// MobileLinearLayer is the reference's LinearLayer classifier: "dropout"
// (only when the probability is positive; active in training) and "linear".
type MobileLinearLayer struct {
	nn.Base
	Dropout *nn.Dropout // nil without dropout
	Linear  *nn.Linear
}

// Forward returns linear(dropout(x)) for x of shape N×In.
func (l *MobileLinearLayer) Forward(x *tensor.Tensor) *tensor.Tensor {
	if l.Dropout != nil {
		x = l.Dropout.Forward(x)
	}
	return l.Linear.Forward(x)
}

// ---- the network skeleton shared by CovidNet3D and Supernet ---------------------

// Mobile3DNet holds the layers that CovidNet3D and Supernet share (it is
// not used alone): the reference Mobile3DNet's state-dict children
// "first_conv" (stem conv k3 s2, BN, ReLU6), "blocks" (blocks.0 the fixed
// *MBConv with expansion 1, then per cell a *CalibrationLayer at
// blocks.{2i+1} and a *MobileInvertedResidualBlock at blocks.{2i+2}),
// "feature_mix_layer" (1×1×1 conv, BN, ReLU6) and "classifier".
type Mobile3DNet struct {
	nn.Base
	FirstConv       *MobileConvLayer
	Blocks          *nn.ModuleList[nn.Module]
	FeatureMixLayer *MobileConvLayer
	Classifier      *MobileLinearLayer

	cells  []*MobileInvertedResidualBlock
	layout *covidLayout
	cfg    CovidNet3DConfig // validated, Ops as built
	spec   Spec             // Arch, InChannels, Classes (Config rebuilt from cfg)
	taps   []string
	tapAt  map[int]string // block index → tap name
}

// init builds the skeleton for spec s and validated layout l, whose ops
// give each cell's initial choice; all allocates every candidate (a
// supernet), otherwise only the chosen one.
func (n *Mobile3DNet) init(rng *rand.Rand, s Spec, cfg CovidNet3DConfig, l *covidLayout, all bool) {
	n.spec = Spec{Arch: s.Arch, InChannels: s.InChannels, Classes: s.Classes}
	n.cfg = cfg.withOps(l, l.ops)
	n.layout = l
	bn := nn.BatchNormOpts{Eps: float32(cfg.BNEps), Momentum: float32(cfg.BNMomentum)}

	n.FirstConv = newMobileConvLayer(rng, s.InChannels, l.first, 3, 2, 1, true, bn)
	n.AddChild("first_conv", n.FirstConv)
	n.Blocks = &nn.ModuleList[nn.Module]{}
	n.AddChild("blocks", n.Blocks)
	n.Blocks.Append(newMBConv(rng, l.first, l.firstCell, 3, 1, 1, bn))
	n.taps = []string{"first_conv", "blocks.0"}
	n.tapAt = map[int]string{}
	for i, ci := range l.cells {
		cal := &CalibrationLayer{}
		cal.Conv = nn.Child(cal, "conv", nn.NewConv(rng, ci.In, ci.Width, []int{1, 1, 1}, nn.ConvOpts{Stride: []int{ci.Stride}}))
		n.Blocks.Append(cal)
		alloc := []int{l.ops[i]}
		if all {
			alloc = make([]int, len(ci.Candidates))
			for j := range alloc {
				alloc[j] = j
			}
		}
		cell := newCell(rng, ci, alloc, l.ops[i], bn)
		n.Blocks.Append(cell)
		n.cells = append(n.cells, cell)
		if i == len(l.cells)-1 || l.cells[i+1].Stage != ci.Stage {
			name := "blocks." + strconv.Itoa(ci.Block)
			n.taps = append(n.taps, name)
			n.tapAt[ci.Block] = name
		}
	}
	n.taps = append(n.taps, "feature_mix_layer")
	last := l.firstCell
	if len(l.widths) > 0 {
		last = l.widths[len(l.widths)-1]
	}
	n.FeatureMixLayer = newMobileConvLayer(rng, last, l.mix, 1, 1, 1, true, bn)
	n.AddChild("feature_mix_layer", n.FeatureMixLayer)
	n.Classifier = &MobileLinearLayer{}
	if cfg.Dropout > 0 {
		dr := rand.New(rand.NewPCG(0, 0)) // shape-only build (nil rng)
		if rng != nil {
			dr = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		}
		n.Classifier.Dropout = nn.Child(n.Classifier, "dropout", nn.NewDropout(float32(cfg.Dropout), dr))
	}
	n.Classifier.Linear = nn.Child(n.Classifier, "linear", nn.NewLinear(rng, l.mix, s.Classes, true))
	n.AddChild("classifier", n.Classifier)
}

// features runs the skeleton up to feature_mix_layer, calling cell for
// every searchable cell (i in forward order).
func (n *Mobile3DNet) features(x *tensor.Tensor, tap Tap, cell func(i int, b *MobileInvertedResidualBlock, x *tensor.Tensor) *tensor.Tensor) *tensor.Tensor {
	if x.Dim() != 5 || x.Size(1) != n.spec.InChannels {
		panic(&tensor.ShapeError{Op: "net3d." + n.spec.Arch, Msg: fmt.Sprintf("input of shape %v: want N×%d×D×H×W", x.Shape(), n.spec.InChannels)})
	}
	x = callTap(tap, "first_conv", n.FirstConv.Forward(x))
	blocks := n.Blocks.All()
	x = callTap(tap, "blocks.0", blocks[0].Forward(x))
	ci := 0
	for k := 1; k < len(blocks); k++ {
		if b, ok := blocks[k].(*MobileInvertedResidualBlock); ok {
			x = cell(ci, b, x)
			ci++
		} else {
			x = blocks[k].Forward(x)
		}
		if name, ok := n.tapAt[k]; ok {
			x = callTap(tap, name, x)
		}
	}
	return callTap(tap, "feature_mix_layer", n.FeatureMixLayer.Forward(x))
}

func fixedCell(_ int, b *MobileInvertedResidualBlock, x *tensor.Tensor) *tensor.Tensor {
	return b.Forward(x)
}

func (n *Mobile3DNet) head(f *tensor.Tensor) *tensor.Tensor {
	if n.cfg.Pool == "lse" {
		r := n.cfg.PoolR
		if r == 0 {
			r = DefaultPoolR
		}
		return LSEPoolLinear(f, n.Classifier.Dropout, n.Classifier.Linear, r)
	}
	return GlobalPoolLinear(f, n.Classifier.Dropout, n.Classifier.Linear)
}

// specWith returns the spec with Config holding the full configuration and
// the given per-cell ops.
func (n *Mobile3DNet) specWith(ops []int) Spec {
	s := n.spec
	cfg := n.cfg.withOps(n.layout, ops)
	b, err := json.Marshal(cfg)
	if err != nil { // only invalid op indices fail, and ops were validated
		panic(&tensor.ShapeError{Op: "net3d.Spec", Msg: err.Error()})
	}
	s.Config = b
	return s
}

// ---- CovidNet3D -------------------------------------------------------------

// CovidNet3D is a single-path Mobile3DNet: one op per searchable cell, as
// the reference's retrained model runs it; its layers are those of
// Mobile3DNet. Parameter names are the reference's state-dict keys
// (§1.5.5 of the reference notes): first_conv.{conv,bn}.*,
// blocks.0.{depth_conv,point_linear}.{conv,bn}.*, blocks.{2i+1}.conv.* (the
// calibration before cell i), blocks.{2i+2}.mobile_inverted_conv.choices.{j}.*
// for the chosen op j of cell i only (parameter-free ops have no keys),
// feature_mix_layer.{conv,bn}.* and classifier.linear.*. Its state dict is
// therefore the reference's with the unchosen candidates left out;
// LoadReference loads a full reference state dict.
//
// The network maps N×InChannels×D×H×W to N×Classes; every spatial size is
// divided by 2 (rounding up) at first_conv and at each stride-2 stage.
type CovidNet3D struct {
	Mobile3DNet
}

// NewCovidNet3D builds a CovidNet3D for spec s (its Config decoded over
// base, e.g. DefaultCovidNet3DConfig()), with PyTorch's default
// initialisation drawn from rng.
func NewCovidNet3D(s Spec, base CovidNet3DConfig, rng *rand.Rand) (*CovidNet3D, error) {
	cfg, l, err := decodeCovidConfig(s, base)
	if err != nil {
		return nil, err
	}
	m := &CovidNet3D{}
	if err := tensor.Catch(func() { m.init(rng, s, cfg, l, false) }); err != nil {
		return nil, fmt.Errorf("net3d: %s: %w", s.Arch, err)
	}
	return m, nil
}

func decodeCovidConfig(s Spec, base CovidNet3DConfig) (CovidNet3DConfig, *covidLayout, error) {
	cfg := base
	cfg.WidthStages = slices.Clone(base.WidthStages)
	cfg.NCellStages = slices.Clone(base.NCellStages)
	cfg.StrideStages = slices.Clone(base.StrideStages)
	cfg.Ops = slices.Clone(base.Ops)
	if s.InChannels < 1 || s.Classes < 1 {
		return cfg, nil, fmt.Errorf("net3d: %s: in_channels %d and classes %d must be positive", s.Arch, s.InChannels, s.Classes)
	}
	if err := DecodeConfig(s, &cfg); err != nil {
		return cfg, nil, err
	}
	l, err := cfg.layout()
	if err != nil {
		return cfg, nil, fmt.Errorf("net3d: %s: %w", s.Arch, err)
	}
	return cfg, l, nil
}

// Forward returns the logits N×K: Head(Features(x, nil)).
func (m *CovidNet3D) Forward(x *tensor.Tensor) *tensor.Tensor { return m.Head(m.Features(x, nil)) }

// Features runs first_conv, the blocks and feature_mix_layer, reporting
// TapLayers to tap, and returns the feature_mix_layer output
// N×FeatureMix×d×h×w.
func (m *CovidNet3D) Features(x *tensor.Tensor, tap Tap) *tensor.Tensor {
	return m.features(x, tap, fixedCell)
}

// Head returns classifier(flatten(global_avg_pooling(f))) for a feature
// map f (N×FeatureMix×d×h×w): logits N×K, with dropout in training.
func (m *CovidNet3D) Head(f *tensor.Tensor) *tensor.Tensor { return m.head(f) }

// Linear returns classifier.linear (weight K×FeatureMix, bias K).
func (m *CovidNet3D) Linear() *nn.Linear { return m.Classifier.Linear }

// TapLayers returns "first_conv", "blocks.0", the block of each stage's
// last cell ("blocks.{2i+2}") and "feature_mix_layer" (the pre-pool map
// CAM uses), in forward order.
func (m *CovidNet3D) TapLayers() []string { return slices.Clone(m.taps) }

// Spec returns the spec the network was built from, with Config holding
// the full configuration including every cell's op.
func (m *CovidNet3D) Spec() Spec { return m.specWith(m.layout.ops) }

// Config returns the network's full configuration (Ops filled in).
func (m *CovidNet3D) Config() CovidNet3DConfig { return m.cfg.withOps(m.layout, m.layout.ops) }

// Cells describes the searchable cells in forward order.
func (m *CovidNet3D) Cells() []CellInfo { return cloneCells(m.layout.cells) }

// Choices returns the chosen op of every cell in forward order.
func (m *CovidNet3D) Choices() []int { return slices.Clone(m.layout.ops) }

func cloneCells(cs []CellInfo) []CellInfo {
	out := slices.Clone(cs)
	for i := range out {
		out[i].Candidates = slices.Clone(out[i].Candidates)
	}
	return out
}

// ReferenceLoadReport describes what LoadReference matched: the ordinary
// load report of the kept keys, and the keys of candidates that the model
// does not hold (unchosen ops of the reference's supernet-shaped state
// dict), which are skipped, not errors.
type ReferenceLoadReport struct {
	nn.LoadReport
	// UnusedCandidates lists the skipped keys
	// blocks.{b}.mobile_inverted_conv.choices.{j}.* of unchosen ops, sorted.
	UnusedCandidates []string
}

// LoadReference reads a safetensors state dict exported from the PyTorch
// reference (a Mobile3DNet with every candidate allocated and a fixed
// choice per cell) and loads it; see LoadReferenceState.
func (m *CovidNet3D) LoadReference(path string) (*ReferenceLoadReport, error) {
	state, _, err := nn.ReadTensors(path)
	if err != nil {
		return nil, err
	}
	return m.LoadReferenceState(state)
}

// LoadReferenceState loads a reference state dict by name: keys of the
// unchosen candidates of each cell are skipped and listed in
// UnusedCandidates; every other key must match the model exactly (a
// missing or unexpected key, or a shape mismatch, is an error and leaves m
// unchanged). A "module." prefix on every key is removed. A compact state
// dict (only the chosen ops) loads too.
func (m *CovidNet3D) LoadReferenceState(state []nn.Named) (*ReferenceLoadReport, error) {
	keys := make([]string, len(state))
	all := len(state) > 0
	for i, s := range state {
		keys[i] = s.Name
		all = all && strings.HasPrefix(s.Name, nn.AutoPrefix)
	}
	if all {
		for i := range keys {
			keys[i] = keys[i][len(nn.AutoPrefix):]
		}
	}
	cellAt := map[int]*MobileInvertedResidualBlock{}
	for _, c := range m.cells {
		cellAt[c.Cell.Block] = c
	}
	rep := &ReferenceLoadReport{}
	var kept []nn.Named
	for i, k := range keys {
		if b, j, ok := candidateKey(k); ok {
			if c := cellAt[b]; c != nil && j != c.Choice && j >= 0 && j < len(c.Cell.Candidates) {
				rep.UnusedCandidates = append(rep.UnusedCandidates, k)
				continue
			}
		}
		kept = append(kept, nn.Named{Name: k, Tensor: state[i].Tensor})
	}
	slices.Sort(rep.UnusedCandidates)
	r, err := nn.LoadState(kept, m, nn.LoadOpts{Strict: true})
	if r != nil {
		rep.LoadReport = *r
		if all {
			rep.Stripped = append([]string{nn.AutoPrefix}, rep.Stripped...)
		}
	}
	if err != nil {
		return rep, fmt.Errorf("net3d: %s: load reference state: %w", m.spec.Arch, err)
	}
	return rep, nil
}

// candidateKey parses "blocks.{b}.mobile_inverted_conv.choices.{j}.…".
func candidateKey(k string) (block, j int, ok bool) {
	p := strings.SplitN(k, ".", 6)
	if len(p) < 6 || p[0] != "blocks" || p[2] != "mobile_inverted_conv" || p[3] != "choices" {
		return 0, 0, false
	}
	b, err1 := strconv.Atoi(p[1])
	c, err2 := strconv.Atoi(p[4])
	return b, c, err1 == nil && err2 == nil
}

// ReferenceCost returns the model size and "FLOPs" as the reference's
// flops_size_counter reports them for one input of shape 1×C×d×h×w (§1.8):
// sizeMB = parameters·4/1024² (BatchNorm affine parameters included,
// running statistics not), and mflops = (Σ over executed convolutions of
// ⌊Cin·(output elements)·k_d·k_h/groups⌋ + Σ over linear layers of
// in·out)/10⁶ — the reference multiplies the first two kernel sizes of the
// weight, so for cubic kernels k·k, ignoring the third. An input too small
// for the network is an error.
func (m *CovidNet3D) ReferenceCost(d, h, w int) (mflops, sizeMB float64, err error) {
	sp := []int{d, h, w}
	for _, v := range sp {
		if v < 1 {
			return 0, 0, fmt.Errorf("net3d: %s: reference cost for input %dx%dx%d: want positive sizes", m.spec.Arch, d, h, w)
		}
	}
	var ops int64
	conv := func(c *nn.Conv) {
		st := 1
		if len(c.Stride) > 0 {
			st = c.Stride[0]
		}
		p := 0
		if len(c.Padding) > 0 {
			p = c.Padding[0]
		}
		outEl := int64(c.Out)
		for i := range sp {
			sp[i] = (sp[i]+2*p-c.Kernel[i])/st + 1
			if sp[i] < 1 {
				panic(&tensor.ShapeError{Op: "ReferenceCost", Msg: "feature map vanished"})
			}
			outEl *= int64(sp[i])
		}
		ops += int64(c.In) * outEl * int64(c.Kernel[0]*c.Kernel[1]) / int64(c.Groups)
	}
	mb := func(m *MBConv) {
		if m.InvertedBottleneck != nil {
			conv(m.InvertedBottleneck.Conv)
		}
		conv(m.DepthConv.Conv)
		conv(m.PointLinear.Conv)
	}
	err = tensor.Catch(func() {
		conv(m.FirstConv.Conv)
		for _, b := range m.Blocks.All() {
			switch b := b.(type) {
			case *MBConv:
				mb(b)
			case *CalibrationLayer:
				conv(b.Conv)
			case *MobileInvertedResidualBlock:
				if op, ok := b.MobileInvertedConv.Choices.At(b.Choice).(*MBConv); ok {
					mb(op)
				}
			}
		}
		conv(m.FeatureMixLayer.Conv)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("net3d: %s: input %dx%dx%d is too small for the network", m.spec.Arch, d, h, w)
	}
	ops += int64(m.Classifier.Linear.In * m.Classifier.Linear.Out)
	return float64(ops) / 1e6, float64(nn.NumParams(m)) * 4 / (1024 * 1024), nil
}

// ---- registry -----------------------------------------------------------------

// covidPresets maps the registered architecture names to their default
// configurations.
var covidPresets = map[string]func() CovidNet3DConfig{
	"covidnet3d":       DefaultCovidNet3DConfig,
	"covidnet3d-small": SmallCovidNet3DConfig,
}

func covidPreset(arch string) (CovidNet3DConfig, error) {
	f, ok := covidPresets[arch]
	if !ok {
		return CovidNet3DConfig{}, fmt.Errorf("net3d: %q is not a covidnet3d architecture (want covidnet3d or covidnet3d-small)", arch)
	}
	return f(), nil
}

func init() {
	Register(Entry{
		Name:   "covidnet3d",
		Family: "covidnet3d",
		Description: "CovidNet3D Mobile3DNet (He et al., AAAI 2021) from an architecture spec: CT search " +
			"space widths 32–1024, 21 cells, one MBConv/identity/zero op per cell (config \"ops\")",
		DefaultSpec: Spec{Arch: "covidnet3d", InChannels: 1, Classes: 3},
		Build:       buildCovidNet3D,
	})
	Register(Entry{
		Name:   "covidnet3d-small",
		Family: "covidnet3d",
		Description: "CovidNet3D Mobile3DNet with a CPU-sized preset: widths 16–96, 9 cells, " +
			"feature mix 256 (same config keys as covidnet3d)",
		DefaultSpec: Spec{Arch: "covidnet3d-small", InChannels: 1, Classes: 3},
		Build:       buildCovidNet3D,
	})
}

func buildCovidNet3D(s Spec, rng *rand.Rand) (Classifier, error) {
	base, err := covidPreset(s.Arch)
	if err != nil {
		return nil, err
	}
	m, err := NewCovidNet3D(s, base, rng)
	if err != nil {
		return nil, err // an untyped nil Classifier
	}
	return m, nil
}

var _ Classifier = (*CovidNet3D)(nil)
