package net3d

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// goldenResNetPath is written by testdata/pytorch/golden_resnet3d.py.
const goldenResNetPath = "testdata/golden_resnet3d.safetensors"

// goldenParam is one state-dict entry of a golden case, in PyTorch's
// state_dict order, with the bounds of its uniform values.
type goldenParam struct {
	Key    string
	Shape  []int
	Lo, Hi float64 // bounds of the hashed uniform values
}

// goldenCase is one PyTorch model run of the golden file.
type goldenCase struct {
	Name       string          `json:"name"`
	Arch       string          `json:"arch"`
	InChannels int             `json:"in_channels"`
	Classes    int             `json:"classes"`
	Config     json.RawMessage `json:"config"`
	Weights    string          `json:"weights"` // "stored" or "hashed"
	Taps       []string        `json:"taps"`
	Params     []goldenParam   `json:"params"`
}

// goldenStructure is the PyTorch state-dict layout of one architecture at
// reduced width.
type goldenStructure struct {
	Arch       string          `json:"arch"`
	InChannels int             `json:"in_channels"`
	Classes    int             `json:"classes"`
	Config     json.RawMessage `json:"config"`
	WidthScale int             `json:"width_scale"` // MedicalNet widths divided by this
	// Keys holds [key, shape] pairs in state_dict order.
	Keys [][2]json.RawMessage `json:"keys"`
}

type goldenFile struct {
	tensors    map[string]*tensor.Tensor
	cases      map[string]goldenCase
	structures []goldenStructure
}

var (
	goldenOnce sync.Once
	golden     *goldenFile
	goldenErr  error
)

// loadGolden reads the golden file once.
func loadGolden(t *testing.T) *goldenFile {
	t.Helper()
	goldenOnce.Do(func() {
		ts, meta, err := nn.ReadTensors(goldenResNetPath)
		if err != nil {
			goldenErr = err
			return
		}
		g := &goldenFile{tensors: map[string]*tensor.Tensor{}, cases: map[string]goldenCase{}}
		for _, n := range ts {
			g.tensors[n.Name] = n.Tensor
		}
		var cases []goldenCase
		if err := json.Unmarshal([]byte(meta["cases"]), &cases); err != nil {
			goldenErr = fmt.Errorf("%s: metadata cases: %w", goldenResNetPath, err)
			return
		}
		for _, c := range cases {
			g.cases[c.Name] = c
		}
		if err := json.Unmarshal([]byte(meta["structures"]), &g.structures); err != nil {
			goldenErr = fmt.Errorf("%s: metadata structures: %w", goldenResNetPath, err)
			return
		}
		golden = g
	})
	if goldenErr != nil {
		t.Fatal(goldenErr)
	}
	return golden
}

// UnmarshalJSON reads {"key", "shape", "lo", "hi"}.
func (p *goldenParam) UnmarshalJSON(b []byte) error {
	var v struct {
		Key   string  `json:"key"`
		Shape []int   `json:"shape"`
		Lo    float64 `json:"lo"`
		Hi    float64 `json:"hi"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = goldenParam{v.Key, v.Shape, v.Lo, v.Hi}
	return nil
}

// hashedUniform fills n values lo + (hi−lo)·u, u = the top 24 bits of
// SplitMix64's output function of fnv1a64(key) + (i+1)·0x9E3779B97F4A7C15,
// over 2²⁴: the formula of hashed_uniform in golden_resnet3d.py.
func hashedUniform(key string, n int, lo, hi float64) []float32 {
	seed := uint64(0xCBF29CE484222325)
	for i := 0; i < len(key); i++ {
		seed ^= uint64(key[i])
		seed *= 0x100000001B3
	}
	out := make([]float32, n)
	for i := range out {
		z := seed + uint64(i+1)*0x9E3779B97F4A7C15
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		z ^= z >> 31
		u := float64(z>>40) / (1 << 24)
		out[i] = float32(lo + float64((hi-lo)*u))
	}
	return out
}

// goldenState returns the state dict of case c: read from the file, or
// recomputed from the hash.
func goldenState(t *testing.T, g *goldenFile, c goldenCase) []nn.Named {
	t.Helper()
	var state []nn.Named
	for _, p := range c.Params {
		var v *tensor.Tensor
		if c.Weights == "stored" {
			v = g.tensors[c.Name+"/state/"+p.Key]
			if v == nil {
				t.Fatalf("%s: golden file lacks %s", c.Name, p.Key)
			}
		} else {
			v = tensor.New(hashedUniform(p.Key, tensor.Numel(p.Shape), p.Lo, p.Hi), p.Shape...)
		}
		state = append(state, nn.Named{Name: p.Key, Tensor: v})
	}
	return state
}

// compareKeys checks that m's state dict has exactly the given keys (with
// any "module." prefix removed) and shapes, in the same order.
func compareKeys(t *testing.T, what string, m nn.Module, keys []string, shapes [][]int) {
	t.Helper()
	sd := nn.StateDict(m)
	for i := range max(len(sd), len(keys)) {
		switch {
		case i >= len(sd):
			t.Fatalf("%s: Go state dict ends at %d keys; PyTorch continues with %s %v", what, len(sd), keys[i], shapes[i])
		case i >= len(keys):
			t.Fatalf("%s: PyTorch state dict ends at %d keys; Go continues with %s %v", what, len(keys), sd[i].Name, sd[i].Tensor.Shape())
		}
		k := strings.TrimPrefix(keys[i], nn.AutoPrefix)
		if sd[i].Name != k || !tensor.SameShape(sd[i].Tensor.Shape(), shapes[i]) {
			t.Fatalf("%s: state-dict entry %d is %s %v, PyTorch has %s %v", what, i, sd[i].Name, sd[i].Tensor.Shape(), k, shapes[i])
		}
	}
}

// closeTo compares got with want within 1e-4 relative to max|want|.
func closeTo(got, want *tensor.Tensor) error {
	m := 0.0
	for _, v := range want.Data() {
		m = max(m, math.Abs(float64(v)))
	}
	return tensortest.AllClose(got, want, 1e-4, 1e-4*m)
}

// checkGolden builds the network of golden case name, loads its PyTorch
// weights strictly by key and compares every tap output (layer4 being the
// pre-pool feature map) and the logits with PyTorch's in eval mode.
func checkGolden(t *testing.T, name string) {
	t.Helper()
	g := loadGolden(t)
	c, ok := g.cases[name]
	if !ok {
		t.Fatalf("golden file has no case %q", name)
	}
	net, err := Build(Spec{Arch: c.Arch, InChannels: c.InChannels, Classes: c.Classes, Config: c.Config}, 7)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(c.Params))
	shapes := make([][]int, len(c.Params))
	for i, p := range c.Params {
		keys[i], shapes[i] = p.Key, p.Shape
	}
	compareKeys(t, name, net, keys, shapes)
	rep, err := nn.LoadState(goldenState(t, g, c), net, nn.LoadOpts{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Loaded != len(c.Params) {
		t.Errorf("loaded %d of %d keys", rep.Loaded, len(c.Params))
	}
	if strings.HasPrefix(c.Params[0].Key, nn.AutoPrefix) != slices.Contains(rep.Stripped, nn.AutoPrefix) {
		t.Errorf("first key %s, stripped prefixes %q", c.Params[0].Key, rep.Stripped)
	}
	nn.SetTraining(net, false)
	nn.SetRequiresGrad(net, false)

	x := g.tensors[name+"/x"]
	var order []string
	var f, logits *tensor.Tensor
	err = tensor.Catch(func() {
		f = net.Features(x, func(layer string, out *tensor.Tensor) *tensor.Tensor {
			order = append(order, layer)
			if want := g.tensors[name+"/tap/"+layer]; want == nil {
				t.Errorf("tap %s: not in the golden file", layer)
			} else if err := closeTo(out, want); err != nil {
				t.Errorf("tap %s: %v", layer, err)
			}
			return out
		})
		logits = net.Head(f)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, c.Taps) || !slices.Equal(order, net.TapLayers()) {
		t.Errorf("taps reported %q, TapLayers %q, PyTorch %q", order, net.TapLayers(), c.Taps)
	}
	if err := closeTo(f, g.tensors[name+"/tap/layer4"]); err != nil {
		t.Errorf("feature map: %v", err)
	}
	if err := closeTo(logits, g.tensors[name+"/logits"]); err != nil {
		t.Errorf("logits: %v", err)
	}
	t.Logf("max |Go − PyTorch| / max|PyTorch|: feature map %.2g, logits %.2g",
		relDiff(f, g.tensors[name+"/tap/layer4"]), relDiff(logits, g.tensors[name+"/logits"]))
}

// relDiff returns max|got − want| / max|want|.
func relDiff(got, want *tensor.Tensor) float64 {
	d, m := 0.0, 0.0
	for i, w := range want.Data() {
		d = max(d, math.Abs(float64(got.Data()[i])-float64(w)))
		m = max(m, math.Abs(float64(w)))
	}
	return d / m
}

func TestResNet3DGolden(t *testing.T) {
	for _, name := range []string{
		"resnet3d-10-A",        // BasicBlock, shortcut A, max-pool, batch 2
		"resnet3d-18-B",        // shortcut B, conv1_t_size 3, conv1_t_stride 2, no max-pool, 3 channels
		"resnet3d-50-B",        // Bottleneck, shortcut B
		"resnet3d-50-A",        // Bottleneck, shortcut A (stride-1 padding in layer1), dropout (eval: off)
		"medicalnet-resnet-10", // dilated layer3/4, shortcut B, "module." keys
		"medicalnet-resnet-18", // dilated layer3/4, shortcut A at stride 1
	} {
		t.Run(name, func(t *testing.T) { checkGolden(t, name) })
	}
}

// TestResNet3DForwardIsHeadOfFeatures checks Forward and nn.Run against
// PyTorch's logits on a loaded network.
func TestResNet3DForwardIsHeadOfFeatures(t *testing.T) {
	g := loadGolden(t)
	c := g.cases["resnet3d-10-A"]
	net, err := NewResNet3D(rand.New(rand.NewPCG(1, 2)), 10, 1, 3, ResNet3DConfig{Shortcut: "A", Conv1TSize: 7, Conv1TStride: 1, WidenFactor: 0.125})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nn.LoadState(goldenState(t, g, c), net, nn.LoadOpts{Strict: true}); err != nil {
		t.Fatal(err)
	}
	nn.SetTraining(net, false)
	y, err := nn.Run(net, g.tensors["resnet3d-10-A/x"])
	if err != nil {
		t.Fatal(err)
	}
	if err := closeTo(y, g.tensors["resnet3d-10-A/logits"]); err != nil {
		t.Error(err)
	}
	// A tap that zeroes layer4 leaves fc's bias as the logits.
	var z *tensor.Tensor
	err = tensor.Catch(func() {
		z = net.Head(net.Features(g.tensors["resnet3d-10-A/x"], func(layer string, out *tensor.Tensor) *tensor.Tensor {
			if layer == "layer4" {
				return tensor.ZerosLike(out)
			}
			return out
		}))
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		for k := range 3 {
			if z.At(i, k) != net.FC.Bias.At(k) {
				t.Fatalf("zeroed features: logit [%d %d] = %v, fc.bias %v", i, k, z.At(i, k), net.FC.Bias.At(k))
			}
		}
	}
}

// TestResNet3DStructure compares the state-dict keys and shapes, in order,
// of every depth and shortcut with PyTorch's at a reduced width.
func TestResNet3DStructure(t *testing.T) {
	g := loadGolden(t)
	if len(g.structures) != 3*len(ResNet3DDepths) {
		t.Fatalf("%d structures in the golden file", len(g.structures))
	}
	for _, s := range g.structures {
		keys := make([]string, len(s.Keys))
		shapes := make([][]int, len(s.Keys))
		for i, kv := range s.Keys {
			if err := json.Unmarshal(kv[0], &keys[i]); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(kv[1], &shapes[i]); err != nil {
				t.Fatal(err)
			}
		}
		name := s.Arch + string(s.Config)
		t.Run(name, func(t *testing.T) {
			var net Classifier
			var err error
			spec := Spec{Arch: s.Arch, InChannels: s.InChannels, Classes: s.Classes, Config: s.Config}
			if strings.HasPrefix(s.Arch, "medicalnet-") {
				var depth int
				fmt.Sscanf(s.Arch, "medicalnet-resnet-%d", &depth)
				l, lerr := medicalNetLayout(depth, s.InChannels, s.Classes, MedicalNetConfig{})
				if lerr != nil {
					t.Fatal(lerr)
				}
				for i := range l.widths {
					l.widths[i] /= s.WidthScale
				}
				net, err = asClassifier(buildResNet(rand.New(rand.NewPCG(1, 2)), l, spec))
			} else {
				net, err = Build(spec, 1)
			}
			if err != nil {
				t.Fatal(err)
			}
			compareKeys(t, name, net, keys, shapes)
		})
	}
}

// TestResNet3DParamCount checks the parameter count of the CovidNet3D
// baseline ResNet3D-101 (3 channels, 3 classes; reference-models.md §1.4)
// and the reference initialisation.
func TestResNet3DParamCount(t *testing.T) {
	net, err := Build(Spec{Arch: "resnet3d-101", InChannels: 3, Classes: 3}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if n := nn.NumParams(net); n != 85_251_267 {
		t.Errorf("resnet3d-101: %d parameters, want 85,251,267", n)
	}
	r := net.(*ResNet3D)
	// Kaiming normal, fan_out, ReLU gain: std √(2 / (256·27)).
	checkMoments(t, "layer3.0.conv2.weight", r.Layers[2].At(0).(*Bottleneck3D).Conv2.Weight, 0, math.Sqrt(2.0/(256*27)), 0.02)
	checkMoments(t, "conv1.weight", r.Conv1.Weight, 0, math.Sqrt(2.0/(64*7*7*7)), 0.05)
	// PyTorch's default Linear: U(−1/√2048, 1/√2048), std bound/√3.
	b := 1 / math.Sqrt(2048)
	checkMoments(t, "fc.weight", r.FC.Weight, 0, b/math.Sqrt(3), 0.05)
	for _, v := range append(slices.Clone(r.FC.Weight.Data()), r.FC.Bias.Data()...) {
		if math.Abs(float64(v)) > b {
			t.Fatalf("fc value %v outside ±%v", v, b)
		}
	}
	for _, p := range nn.StateDict(net) {
		if strings.Contains(p.Name, "bn") || strings.HasSuffix(p.Name, "downsample.1.weight") || strings.HasSuffix(p.Name, "downsample.1.bias") {
			want := float32(0)
			if strings.HasSuffix(p.Name, ".weight") || strings.HasSuffix(p.Name, ".running_var") {
				want = 1
			}
			for _, v := range p.Tensor.Data() {
				if v != want {
					t.Fatalf("%s has %v, want %v", p.Name, v, want)
				}
			}
		}
	}
}

// checkMoments compares the sample mean and standard deviation of t with
// mean and std, within rel·std.
func checkMoments(t *testing.T, name string, x *tensor.Tensor, mean, std, rel float64) {
	t.Helper()
	var s, s2 float64
	for _, v := range x.Data() {
		s += float64(v)
		s2 += float64(v) * float64(v)
	}
	n := float64(x.Len())
	m := s / n
	sd := math.Sqrt(s2/n - m*m)
	if math.Abs(m-mean) > rel*std || math.Abs(sd-std) > rel*std {
		t.Errorf("%s: mean %.4g std %.4g, want %.4g and %.4g", name, m, sd, mean, std)
	}
}

// TestShortcutA checks the type-A shortcut on a hand-worked case: stride-2
// subsampling, zero channels, and no gradient to the input.
func TestShortcutA(t *testing.T) {
	data := make([]float32, 2*3*3*3)
	for i := range data {
		data[i] = float32(i + 1)
	}
	x := tensor.New(data, 1, 2, 3, 3, 3).SetRequiresGrad(true)
	y := (&ShortcutA{Planes: 5, Stride: 2}).Forward(x)
	if !tensor.SameShape(y.Shape(), []int{1, 5, 2, 2, 2}) {
		t.Fatalf("shape %v, want [1 5 2 2 2]", y.Shape())
	}
	for c := range 5 {
		for i := range 2 {
			for j := range 2 {
				for k := range 2 {
					want := float32(0)
					if c < 2 {
						want = float32(c*27 + 2*i*9 + 2*j*3 + 2*k + 1)
					}
					if got := y.At(0, c, i, j, k); got != want {
						t.Fatalf("y[0 %d %d %d %d] = %v, want %v", c, i, j, k, got, want)
					}
				}
			}
		}
	}
	if y.RequiresGrad() {
		t.Error("shortcut A output requires grad; the reference detaches it")
	}
	same := (&ShortcutA{Planes: 2, Stride: 1}).Forward(x)
	if !slices.Equal(same.Data(), x.Data()) {
		t.Error("stride 1, same channels: not the identity")
	}
}

// TestLoadWrongCheckpoint checks that a checkpoint with a wrong shape and a
// missing key fails naming the key and both shapes.
func TestLoadWrongCheckpoint(t *testing.T) {
	g := loadGolden(t)
	c := g.cases["resnet3d-10-A"]
	net, err := Build(Spec{Arch: c.Arch, InChannels: c.InChannels, Classes: c.Classes, Config: c.Config}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var state []nn.Named
	for _, s := range goldenState(t, g, c) {
		switch s.Name {
		case "fc.bias":
			continue
		case "layer2.0.conv1.weight":
			s.Tensor = tensor.Zeros(16, 8, 1, 3, 3)
		}
		state = append(state, s)
	}
	before := slices.Clone(net.(*ResNet3D).Conv1.Weight.Data())
	_, err = nn.LoadState(state, net, nn.LoadOpts{Strict: true})
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{"layer2.0.conv1.weight", "[16 8 3 3 3]", "[16 8 1 3 3]", "missing", "fc.bias"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	var se *nn.LoadShapeError
	if !errors.As(err, &se) || se.Key != "layer2.0.conv1.weight" {
		t.Errorf("error %v: want a *nn.LoadShapeError for layer2.0.conv1.weight", err)
	}
	if !slices.Equal(before, net.(*ResNet3D).Conv1.Weight.Data()) {
		t.Error("a failed load changed the model")
	}
}

func TestResNet3DRegistry(t *testing.T) {
	for _, d := range ResNet3DDepths {
		for _, name := range []string{fmt.Sprintf("resnet3d-%d", d), fmt.Sprintf("medicalnet-resnet-%d", d)} {
			e, ok := Lookup(name)
			if !ok {
				t.Errorf("%s not registered", name)
				continue
			}
			if e.DefaultSpec.Arch != name || e.Description == "" || e.Build == nil {
				t.Errorf("%s: entry %+v", name, e)
			}
		}
	}
	// MedicalNet's shortcut per depth (its README), and the override.
	for d, want := range map[int]bool{10: false, 18: true, 34: true, 50: false, 101: false, 152: false, 200: false} {
		l, err := medicalNetLayout(d, 1, 2, MedicalNetConfig{})
		if err != nil || l.shortcutA != want {
			t.Errorf("medicalnet-resnet-%d: shortcut A %v (%v), want %v", d, l.shortcutA, err, want)
		}
	}
	if l, err := medicalNetLayout(18, 1, 2, MedicalNetConfig{Shortcut: "B"}); err != nil || l.shortcutA {
		t.Errorf("medicalnet-resnet-18 with shortcut B: shortcut A %v (%v)", l.shortcutA, err)
	}
	// Shortcut A leaves no downsample keys.
	for _, tc := range []struct {
		cfg  string
		down bool
	}{
		{`{"shortcut":"A","widen_factor":0.0625}`, false},
		{`{"widen_factor":0.0625}`, true},
	} {
		net, err := buildEntry(Spec{Arch: "resnet3d-18", InChannels: 1, Classes: 2, Config: json.RawMessage(tc.cfg)})
		if err != nil {
			t.Fatal(err)
		}
		has := false
		for _, p := range nn.StateDict(net) {
			has = has || strings.Contains(p.Name, "downsample")
		}
		if has != tc.down {
			t.Errorf("resnet3d-18 %s: downsample keys %v, want %v", tc.cfg, has, tc.down)
		}
	}
}

// buildEntry builds spec through its registry entry's Build function
// (what Build calls, with a fixed generator).
func buildEntry(s Spec) (Classifier, error) {
	e, ok := Lookup(s.Arch)
	if !ok {
		return nil, fmt.Errorf("unknown architecture %q", s.Arch)
	}
	return e.Build(s, rand.New(rand.NewPCG(1, 2)))
}

func TestResNet3DBadSpecs(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{Arch: "resnet3d-18", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"shortcut":"C"}`)}, `shortcut "C"`},
		{Spec{Arch: "resnet3d-18", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"widen":2}`)}, `unknown field "widen"`},
		{Spec{Arch: "resnet3d-18", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"widen_factor":0}`)}, "widen_factor 0"},
		{Spec{Arch: "resnet3d-18", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"conv1_t_size":0}`)}, "conv1_t_size 0"},
		{Spec{Arch: "resnet3d-18", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"dropout":1}`)}, "dropout 1"},
		{Spec{Arch: "medicalnet-resnet-10", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"shortcut":"b"}`)}, `shortcut "b"`},
		{Spec{Arch: "resnet3d-19", InChannels: 1, Classes: 2}, "unknown architecture"},
	} {
		_, err := buildEntry(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: error %v, want one mentioning %q", tc.spec.Arch, tc.spec.Config, err, tc.want)
		}
	}
	if _, err := NewResNet3D(nil, 12, 1, 2, DefaultResNet3DConfig()); err == nil || !strings.Contains(err.Error(), "depth 12") {
		t.Errorf("depth 12: %v", err)
	}
	net, err := Build(Spec{Arch: "resnet3d-10", InChannels: 2, Classes: 2, Config: json.RawMessage(`{"widen_factor":0.0625}`)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nn.Run(net, tensor.Zeros(1, 1, 8, 16, 16)); err == nil || !strings.Contains(err.Error(), "want N×2×D×H×W") {
		t.Errorf("1-channel input to a 2-channel net: %v", err)
	}
	var got ResNet3DConfig
	if err := json.Unmarshal(net.Spec().Config, &got); err != nil || got.WidenFactor != 0.0625 || got.Shortcut != "B" || got.Conv1TSize != 7 {
		t.Errorf("spec config %s (%v)", net.Spec().Config, err)
	}
}

// TestResNet3DTrainBackward runs a training-mode forward and backward pass
// through a narrow network with shortcut A and dropout: every parameter
// receives a finite gradient.
func TestResNet3DTrainBackward(t *testing.T) {
	for _, arch := range []string{"resnet3d-18", "resnet3d-50"} {
		net, err := buildEntry(Spec{Arch: arch, InChannels: 2, Classes: 3,
			Config: json.RawMessage(`{"shortcut":"A","widen_factor":0.0625,"dropout":0.5}`)})
		if err != nil {
			t.Fatal(err)
		}
		x := tensor.New(hashedUniform("x", 2*2*8*16*16, -1, 1), 2, 2, 8, 16, 16)
		err = tensor.Catch(func() {
			loss := tensor.CrossEntropy(Forward(net, x), []int{0, 2}, tensor.CEOpts{})
			loss.Backward()
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range nn.NamedParameters(net) {
			g := p.Tensor.Grad()
			if g == nil {
				t.Errorf("%s %s: no gradient", arch, p.Name)
				continue
			}
			for _, v := range g.Data() {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s %s: gradient %v", arch, p.Name, v)
				}
			}
		}
	}
}
