package nn

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/tensor"
)

// testBlock mirrors torchvision's 3-D BasicBlock with a downsample branch.
type testBlock struct {
	Base
	Conv1, Conv2 *Conv
	BN1, BN2     *BatchNorm
	Downsample   *Sequential
}

func newTestBlock(rng *rand.Rand, in, out, stride int) *testBlock {
	b := &testBlock{}
	k3 := []int{3, 3, 3}
	b.Conv1 = Child(b, "conv1", NewConv(rng, in, out, k3, ConvOpts{Stride: []int{stride}, Padding: []int{1}, NoBias: true}))
	b.BN1 = Child(b, "bn1", NewBatchNorm(out, BatchNormOpts{}))
	Child(b, "relu", &ReLU{})
	b.Conv2 = Child(b, "conv2", NewConv(rng, out, out, k3, ConvOpts{Padding: []int{1}, NoBias: true}))
	b.BN2 = Child(b, "bn2", NewBatchNorm(out, BatchNormOpts{}))
	b.Downsample = Child(b, "downsample", NewSequential(
		NewConv(rng, in, out, []int{1, 1, 1}, ConvOpts{Stride: []int{stride}, NoBias: true}),
		NewBatchNorm(out, BatchNormOpts{})))
	return b
}

func (b *testBlock) Forward(x *tensor.Tensor) *tensor.Tensor {
	y := tensor.ReLU(b.BN1.Forward(b.Conv1.Forward(x)))
	y = b.BN2.Forward(b.Conv2.Forward(y))
	return tensor.ReLU(tensor.Add(y, b.Downsample.Forward(x)))
}

// testNet mirrors a one-block torchvision 3-D ResNet.
type testNet struct {
	Base
	Conv1  *Conv
	BN1    *BatchNorm
	Layer1 *Sequential
	Pool   *AdaptiveAvgPool
	FC     *Linear
}

func newTestNet(seed uint64) *testNet {
	rng := rand.New(rand.NewPCG(seed, 1))
	n := &testNet{}
	n.Conv1 = Child(n, "conv1", NewConv(rng, 3, 8, []int{3, 3, 3}, ConvOpts{Padding: []int{1}, NoBias: true}))
	n.BN1 = Child(n, "bn1", NewBatchNorm(8, BatchNormOpts{}))
	Child(n, "relu", &ReLU{})
	n.Layer1 = Child(n, "layer1", NewSequential(newTestBlock(rng, 8, 16, 2)))
	n.Pool = Child(n, "avgpool", NewAdaptiveAvgPool(1, 1, 1))
	n.FC = Child(n, "fc", NewLinear(rng, 16, 2, true))
	return n
}

func (n *testNet) Forward(x *tensor.Tensor) *tensor.Tensor {
	y := tensor.ReLU(n.BN1.Forward(n.Conv1.Forward(x)))
	y = n.Pool.Forward(n.Layer1.Forward(y))
	return n.FC.Forward(tensor.Flatten(y, 1))
}

// testNetKeys is PyTorch's state_dict key order for the same network
// (printed by torch 1.13 for the equivalent nn.Module).
var testNetKeys = []string{
	"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
	"layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean",
	"layer1.0.bn1.running_var", "layer1.0.bn1.num_batches_tracked", "layer1.0.conv2.weight", "layer1.0.bn2.weight",
	"layer1.0.bn2.bias", "layer1.0.bn2.running_mean", "layer1.0.bn2.running_var", "layer1.0.bn2.num_batches_tracked",
	"layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight", "layer1.0.downsample.1.bias",
	"layer1.0.downsample.1.running_mean", "layer1.0.downsample.1.running_var",
	"layer1.0.downsample.1.num_batches_tracked", "fc.weight", "fc.bias",
}

func names(ns []Named) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return out
}

func TestStateDictKeys(t *testing.T) {
	n := newTestNet(1)
	if got := names(StateDict(n)); !slices.Equal(got, testNetKeys) {
		t.Errorf("state dict keys\n got %q\nwant %q", got, testNetKeys)
	}
	var wantParams, wantBuffers []string
	for _, k := range testNetKeys {
		if strings.Contains(k, "running_") || strings.HasSuffix(k, "num_batches_tracked") {
			wantBuffers = append(wantBuffers, k)
		} else {
			wantParams = append(wantParams, k)
		}
	}
	if got := names(NamedParameters(n)); !slices.Equal(got, wantParams) {
		t.Errorf("parameters\n got %q\nwant %q", got, wantParams)
	}
	if got := names(NamedBuffers(n)); !slices.Equal(got, wantBuffers) {
		t.Errorf("buffers\n got %q\nwant %q", got, wantBuffers)
	}
	var mods []string
	for _, m := range NamedModules(n) {
		mods = append(mods, m.Name)
	}
	wantMods := []string{"", "conv1", "bn1", "relu", "layer1", "layer1.0", "layer1.0.conv1", "layer1.0.bn1",
		"layer1.0.relu", "layer1.0.conv2", "layer1.0.bn2", "layer1.0.downsample", "layer1.0.downsample.0",
		"layer1.0.downsample.1", "avgpool", "fc"}
	if !slices.Equal(mods, wantMods) {
		t.Errorf("modules\n got %q\nwant %q", mods, wantMods)
	}
}

func TestShapesOfParameters(t *testing.T) {
	n := newTestNet(1)
	want := map[string][]int{
		"conv1.weight": {8, 3, 3, 3, 3}, "bn1.num_batches_tracked": {}, "bn1.running_var": {8},
		"layer1.0.downsample.0.weight": {16, 8, 1, 1, 1}, "fc.weight": {2, 16}, "fc.bias": {2},
	}
	for _, s := range StateDict(n) {
		if w, ok := want[s.Name]; ok && !slices.Equal(s.Tensor.Shape(), w) {
			t.Errorf("%s: shape %v, want %v", s.Name, s.Tensor.Shape(), w)
		}
	}
	bn := n.BN1
	for _, c := range []struct {
		name string
		t    *tensor.Tensor
		v    float32
	}{{"weight", bn.Weight, 1}, {"bias", bn.Bias, 0}, {"running_mean", bn.RunningMean, 0}, {"running_var", bn.RunningVar, 1}, {"num_batches_tracked", bn.NumBatchesTracked, 0}} {
		for _, v := range c.t.Data() {
			if v != c.v {
				t.Errorf("bn1.%s holds %v, want %v", c.name, v, c.v)
				break
			}
		}
	}
	if bn.Eps != 1e-5 || bn.Momentum != 0.1 {
		t.Errorf("BatchNorm eps %v momentum %v, want 1e-5 and 0.1", bn.Eps, bn.Momentum)
	}
}

func TestNumParams(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name string
		m    Module
		want int
	}{
		// Counted by hand (and by torch: sum(p.numel() for p in m.parameters())).
		// Conv3d(3,8,3): 8·3·27 + 8 = 656; BatchNorm3d(8): 16; Linear(8,2): 18.
		{"conv-bn-linear", NewSequential(NewConv(rng, 3, 8, []int{3, 3, 3}, ConvOpts{}), NewBatchNorm(8, BatchNormOpts{}), NewFlatten(), NewLinear(rng, 8, 2, true)), 690},
		// 648 + 16 + (3456 + 32 + 6912 + 32 + 128 + 32) + 34.
		{"resnet-like", newTestNet(1), 11290},
		// Grouped conv: 12·(6/3)·3·3 = 216, no bias; LayerNorm([4,5]): 40.
		{"grouped conv", NewConv(rng, 6, 12, []int{3, 3}, ConvOpts{Groups: 3, NoBias: true}), 216},
		{"layernorm", NewLayerNorm([]int{4, 5}, 0), 40},
		{"no affine bn", NewBatchNorm(8, BatchNormOpts{NoAffine: true}), 0},
		{"linear no bias", NewLinear(rng, 7, 3, false), 21},
		{"conv1d", NewConv(rng, 2, 4, []int{5}, ConvOpts{}), 44},
	}
	for _, c := range cases {
		if got := NumParams(c.m); got != c.want {
			t.Errorf("%s: %d parameters, want %d", c.name, got, c.want)
		}
	}
}

func TestSharedModuleCountedOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	l := NewLinear(rng, 3, 3, true)
	s := NewSequential(l, &ReLU{}, l)
	if got := NumParams(s); got != 12 {
		t.Errorf("NumParams = %d, want 12", got)
	}
	if got := names(NamedParameters(s)); !slices.Equal(got, []string{"0.weight", "0.bias"}) {
		t.Errorf("parameters %q", got)
	}
	if got := names(StateDict(s)); !slices.Equal(got, []string{"0.weight", "0.bias", "2.weight", "2.bias"}) {
		t.Errorf("state dict %q", got)
	}
}

func TestTrainingAndRequiresGrad(t *testing.T) {
	n := newTestNet(1)
	if !n.Training() || !n.Layer1.At(0).(*testBlock).BN2.Training() {
		t.Fatal("modules must start in training mode")
	}
	for _, p := range NamedParameters(n) {
		if !p.Tensor.RequiresGrad() {
			t.Fatalf("%s does not require grad after construction", p.Name)
		}
	}
	for _, b := range NamedBuffers(n) {
		if b.Tensor.RequiresGrad() {
			t.Fatalf("buffer %s requires grad", b.Name)
		}
	}
	SetTraining(n, false)
	for _, m := range NamedModules(n) {
		if m.Module.base().Training() {
			t.Errorf("%q still training", m.Name)
		}
	}
	SetRequiresGrad(n, false)
	for _, p := range NamedParameters(n) {
		if p.Tensor.RequiresGrad() {
			t.Errorf("%s requires grad after SetRequiresGrad(false)", p.Name)
		}
	}
}

func TestContainers(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := &Sequential{}
	s.Add("conv0", NewConv(rng, 1, 2, []int{3}, ConvOpts{})).Add("norm0", NewBatchNorm(2, BatchNormOpts{})).Append(&ReLU{})
	if got := names(StateDict(s)); !slices.Equal(got, []string{"conv0.weight", "conv0.bias", "norm0.weight", "norm0.bias", "norm0.running_mean", "norm0.running_var", "norm0.num_batches_tracked"}) {
		t.Errorf("named sequential keys %q", got)
	}
	if s.Len() != 3 || s.Children()[2].Name != "2" {
		t.Errorf("Append after named children: len %d, name %q", s.Len(), s.Children()[2].Name)
	}
	l := NewModuleList(NewLinear(rng, 2, 2, false), NewLinear(rng, 2, 3, false))
	l.Append(NewLinear(rng, 3, 1, false))
	if got := names(StateDict(l)); !slices.Equal(got, []string{"0.weight", "1.weight", "2.weight"}) {
		t.Errorf("module list keys %q", got)
	}
	if l.At(1).Out != 3 || len(l.All()) != 3 {
		t.Error("ModuleList At/All wrong")
	}
	if _, err := Run(l, tensor.Zeros(1, 2)); err == nil || !strings.Contains(err.Error(), "ModuleList has no Forward") {
		t.Errorf("ModuleList Forward error %v", err)
	}
	// An empty Sequential is the identity.
	x := tensor.Zeros(2)
	if y, err := Run(&Sequential{}, x); err != nil || y != x {
		t.Errorf("empty Sequential: %v, %v", y, err)
	}
}

func TestRegistrationErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name string
		f    func()
		want string
	}{
		{"duplicate param", func() {
			var b Identity
			b.Param("w", tensor.Zeros(1))
			b.Buffer("w", tensor.Zeros(1))
		}, `nn.Buffer: name "w" already registered as a parameter`},
		{"dotted name", func() { var b Identity; b.AddChild("a.b", &ReLU{}) }, `name "a.b" contains a dot`},
		{"nil child", func() { var b Identity; var c *Conv; Child(&b, "c", c) }, `nil value for "c"`},
		{"empty name", func() { var b Identity; b.Param("", tensor.Zeros(1)) }, "empty name"},
		{"conv groups", func() { NewConv(rng, 6, 4, []int{3}, ConvOpts{Groups: 4}) }, "groups 4 must divide in 6 and out 4"},
		{"conv kernel dims", func() { NewConv(rng, 1, 1, []int{1, 1, 1, 1}, ConvOpts{}) }, "want 1 to 3 spatial dimensions"},
		{"conv stride entries", func() { NewConv(rng, 1, 1, []int{3, 3}, ConvOpts{Stride: []int{1, 1, 1}}) }, "stride [1 1 1]: want 1 or 2 entries"},
		{"conv padding negative", func() { NewConv(rng, 1, 1, []int{3}, ConvOpts{Padding: []int{-1}}) }, "padding [-1]: entries must be at least 0"},
		{"linear size", func() { NewLinear(rng, 0, 1, true) }, "in 0, out 1 features"},
		{"batchnorm channels", func() { NewBatchNorm(0, BatchNormOpts{}) }, "0 channels"},
		{"dropout p", func() { NewDropout(1, rng) }, "p 1"},
		{"dropout rng", func() { NewDropout(0.5, nil) }, "p 0.5"},
		{"fans", func() { Fans([]int{3}) }, "at least 2 dimensions, shape is [3]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := tensor.Catch(c.f)
			var se *tensor.ShapeError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want a *tensor.ShapeError containing %q", err, c.want)
			}
		})
	}
}

func TestRunCatchesShapeErrors(t *testing.T) {
	bn := NewBatchNorm(4, BatchNormOpts{})
	_, err := Run(bn, tensor.Zeros(2, 3, 5))
	if err == nil || !strings.Contains(err.Error(), "nn: forward *nn.BatchNorm") || !strings.Contains(err.Error(), "input of shape [2 3 5] for 4 channels") {
		t.Errorf("error %v", err)
	}
	ln := NewLayerNorm([]int{4}, 1e-6)
	if _, err := Run(ln, tensor.Zeros(2, 3)); err == nil || !strings.Contains(err.Error(), "want trailing dimensions [4]") {
		t.Errorf("LayerNorm error %v", err)
	}
}

func randFor(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }
