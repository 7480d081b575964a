package net3d

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/nn/safetensors"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// denseGoldenFile is written by testdata/pytorch/golden_densenet3d.py from
// PyTorch implementations of both layouts; the tests only read it.
const denseGoldenFile = "testdata/golden_densenet3d.safetensors"

// denseGoldenCase is one entry of the file's "cases" metadata.
type denseGoldenCase struct {
	Name          string          `json:"name"`
	Layout        string          `json:"layout"`
	InChannels    int             `json:"in_channels"`
	Classes       int             `json:"classes"`
	Config        json.RawMessage `json:"config"`
	Keys          []denseKey      `json:"keys"`
	Taps          []string        `json:"taps"`
	Params        int             `json:"params"`
	StoredWeights bool            `json:"stored_weights"`
	TrainGrads    []string        `json:"train_grads"`
	TrainState    []string        `json:"train_state"`
}

// denseKey is a state-dict key with its shape, stored as [name, shape].
type denseKey struct {
	Name  string
	Shape []int
}

func (k *denseKey) UnmarshalJSON(b []byte) error {
	var raw [2]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if err := json.Unmarshal(raw[0], &k.Name); err != nil {
		return err
	}
	return json.Unmarshal(raw[1], &k.Shape)
}

func denseReadGolden(t *testing.T) (*safetensors.File, []denseGoldenCase, map[string]int) {
	t.Helper()
	f, err := safetensors.ReadFile(denseGoldenFile)
	if err != nil {
		t.Fatal(err)
	}
	var cases []denseGoldenCase
	if err := json.Unmarshal([]byte(f.Metadata["cases"]), &cases); err != nil {
		t.Fatalf("%s: cases metadata: %v", denseGoldenFile, err)
	}
	var params map[string]int
	if err := json.Unmarshal([]byte(f.Metadata["params"]), &params); err != nil {
		t.Fatalf("%s: params metadata: %v", denseGoldenFile, err)
	}
	return f, cases, params
}

func denseGet(t *testing.T, f *safetensors.File, name string) *tensor.Tensor {
	t.Helper()
	st, ok := f.Get(name)
	if !ok {
		t.Fatalf("%s: no tensor %q", denseGoldenFile, name)
	}
	return tensor.New(st.Data, st.Shape...)
}

// denseClose compares within 1e-4 relative to the largest |want|.
func denseClose(got, want *tensor.Tensor) error {
	m := 0.0
	for _, v := range want.Data() {
		m = math.Max(m, math.Abs(float64(v)))
	}
	return tensortest.AllClose(got, want, 1e-4, 1e-4*m)
}

// denseHashUnit is the golden script's hash_unit: n values in [-1, 1) from
// MurmurHash3's fmix32 of i·0x9E3779B1 + fnv1a32(name) (mod 2^32).
func denseHashUnit(name string, n int) []float64 {
	h := fnv.New32a()
	h.Write([]byte(name))
	seed := h.Sum32()
	out := make([]float64, n)
	for i := range out {
		x := uint32(i)*0x9E3779B1 + seed
		x ^= x >> 16
		x *= 0x85EBCA6B
		x ^= x >> 13
		x *= 0xC2B2AE35
		x ^= x >> 16
		out[i] = float64(x>>8)/float64(1<<24)*2 - 1
	}
	return out
}

// denseFormulaWeights is the golden script's formula_fill: the value of each
// state-dict tensor from its key and shape, computed in float64 and rounded
// once to float32.
func denseFormulaWeights(t *testing.T, keys []denseKey) []nn.Named {
	t.Helper()
	out := make([]nn.Named, 0, len(keys))
	for _, k := range keys {
		n := tensor.Numel(k.Shape)
		d := make([]float32, n)
		if !strings.HasSuffix(k.Name, "num_batches_tracked") {
			v := denseHashUnit(k.Name, n)
			var f func(float64) float64
			switch {
			case strings.HasSuffix(k.Name, "running_var") || (strings.HasSuffix(k.Name, "weight") && len(k.Shape) == 1):
				f = func(v float64) float64 { return 1 + v/4 }
			case strings.HasSuffix(k.Name, "running_mean") || strings.HasSuffix(k.Name, "bias"):
				f = func(v float64) float64 { return v / 10 }
			case strings.HasSuffix(k.Name, "weight") && len(k.Shape) == 5:
				s := math.Sqrt(6 / float64(n/k.Shape[0]))
				f = func(v float64) float64 { return v * s }
			case strings.HasSuffix(k.Name, "weight") && len(k.Shape) == 2:
				s := math.Sqrt(float64(k.Shape[1]))
				f = func(v float64) float64 { return v / s }
			default:
				t.Fatalf("no formula for %s", k.Name)
			}
			for i := range d {
				d[i] = float32(f(v[i]))
			}
		}
		out = append(out, nn.Named{Name: k.Name, Tensor: tensor.New(d, k.Shape...)})
	}
	return out
}

// denseSubFile returns the tensors of f under prefix, with the prefix
// removed.
func denseSubFile(f *safetensors.File, prefix string) *safetensors.File {
	sub := &safetensors.File{}
	for _, st := range f.Tensors {
		if name, ok := strings.CutPrefix(st.Name, prefix); ok {
			st.Name = name
			sub.Tensors = append(sub.Tensors, st)
		}
	}
	return sub
}

func denseArch(layout string) string {
	if layout == "hara" {
		return "hara-densenet3d-121"
	}
	return "densenet3d-121"
}

// TestDenseNetGolden builds each network of the golden file, checks its
// state-dict keys, shapes and order against PyTorch's, loads the weights
// strictly by name and compares tap outputs, the feature map and the logits
// with PyTorch's in eval mode.
func TestDenseNetGolden(t *testing.T) {
	f, cases, _ := denseReadGolden(t)
	if len(cases) != 6 {
		t.Fatalf("%s holds %d cases, want 6", denseGoldenFile, len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			spec := Spec{Arch: denseArch(c.Layout), InChannels: c.InChannels, Classes: c.Classes, Config: c.Config}
			m, err := Build(spec, 1)
			if err != nil {
				t.Fatal(err)
			}
			d := m.(*DenseNet3D)
			sd := nn.StateDict(d)
			if len(sd) != len(c.Keys) {
				t.Fatalf("%d state-dict keys, PyTorch has %d", len(sd), len(c.Keys))
			}
			for i, k := range c.Keys {
				if sd[i].Name != k.Name || !tensor.SameShape(sd[i].Tensor.Shape(), k.Shape) {
					t.Fatalf("state-dict entry %d: %s %v, PyTorch has %s %v", i, sd[i].Name, sd[i].Tensor.Shape(), k.Name, k.Shape)
				}
			}
			if got := nn.NumParams(d); got != c.Params {
				t.Errorf("%d parameters, PyTorch has %d", got, c.Params)
			}
			if got := d.TapLayers(); fmt.Sprint(got) != fmt.Sprint(c.Taps) {
				t.Fatalf("TapLayers %v, want %v", got, c.Taps)
			}

			var rep *nn.LoadReport
			if c.StoredWeights {
				rep, err = nn.LoadFile(denseSubFile(f, c.Name+"/w/"), d, nn.LoadOpts{Strict: true})
			} else {
				rep, err = nn.LoadState(denseFormulaWeights(t, c.Keys), d, nn.LoadOpts{Strict: true})
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.Loaded != len(c.Keys) {
				t.Errorf("loaded %d tensors, want %d", rep.Loaded, len(c.Keys))
			}

			nn.SetTraining(d, false)
			nn.SetRequiresGrad(d, false)
			x := denseGet(t, f, c.Name+"/x")
			taps := map[string]*tensor.Tensor{}
			var order []string
			var feat *tensor.Tensor
			if err := tensor.Catch(func() {
				feat = d.Features(x, func(layer string, out *tensor.Tensor) *tensor.Tensor {
					order = append(order, layer)
					taps[layer] = out
					return out
				})
			}); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(order) != fmt.Sprint(c.Taps) {
				t.Errorf("taps called for %v, want %v", order, c.Taps)
			}
			if taps[c.Taps[len(c.Taps)-1]] != feat {
				t.Error("the last tap is not the returned feature map")
			}
			if err := denseClose(feat, denseGet(t, f, c.Name+"/features")); err != nil {
				t.Errorf("features: %v", err)
			}
			if c.StoredWeights {
				for _, l := range c.Taps {
					if err := denseClose(taps[l], denseGet(t, f, c.Name+"/tap/"+l)); err != nil {
						t.Errorf("tap %s: %v", l, err)
					}
				}
			}
			logits, err := nn.Run(d, x)
			if err != nil {
				t.Fatal(err)
			}
			if err := denseClose(logits, denseGet(t, f, c.Name+"/logits")); err != nil {
				t.Errorf("logits: %v", err)
			}
			if err := tensortest.AllClose(d.Head(feat), logits, 0, 0); err != nil {
				t.Errorf("Head(Features(x)) differs from Forward(x): %v", err)
			}
			if len(c.TrainGrads) > 0 {
				denseCheckTrain(t, f, c, d)
			}
		})
	}
}

// denseCheckTrain runs one training-mode pass from the loaded weights and
// compares the logits, the gradients of sum(logits·r) with respect to the
// input and to some parameters, and the updated BN buffers with PyTorch's.
func denseCheckTrain(t *testing.T, f *safetensors.File, c denseGoldenCase, d *DenseNet3D) {
	t.Helper()
	pre := c.Name + "/train/"
	nn.SetTraining(d, true)
	nn.SetRequiresGrad(d, true)
	x := denseGet(t, f, pre+"x").SetRequiresGrad(true)
	var logits *tensor.Tensor
	err := tensor.Catch(func() {
		logits = d.Forward(x)
		tensor.SumAll(tensor.Mul(logits, denseGet(t, f, pre+"r"))).Backward()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := denseClose(logits, denseGet(t, f, pre+"logits")); err != nil {
		t.Errorf("train logits: %v", err)
	}
	if err := denseClose(x.Grad(), denseGet(t, f, pre+"grad_x")); err != nil {
		t.Errorf("train gradient of the input: %v", err)
	}
	params := map[string]*tensor.Tensor{}
	for _, p := range nn.NamedParameters(d) {
		params[p.Name] = p.Tensor
	}
	for _, k := range c.TrainGrads {
		p := params[k]
		if p == nil || p.Grad() == nil {
			t.Errorf("train: no gradient for %s", k)
			continue
		}
		if err := denseClose(p.Grad(), denseGet(t, f, pre+"grad/"+k)); err != nil {
			t.Errorf("train gradient of %s: %v", k, err)
		}
	}
	buffers := map[string]*tensor.Tensor{}
	for _, b := range nn.NamedBuffers(d) {
		buffers[b.Name] = b.Tensor
	}
	for _, k := range c.TrainState {
		if err := denseClose(buffers[k], denseGet(t, f, pre+"state/"+k)); err != nil {
			t.Errorf("train: %s after the step: %v", k, err)
		}
	}
}

// TestDenseNetParamCount checks parameter counts against the reference
// document (HKBU DenseNet3D121, 3 channels, 2 classes: 11,288,578, §1.4) and
// against the PyTorch script's counts.
func TestDenseNetParamCount(t *testing.T) {
	_, _, params := denseReadGolden(t)
	for _, tc := range []struct {
		arch     string
		in, cls  int
		want     int
		wantFrom string
	}{
		{"hara-densenet3d-121", 3, 2, 11_288_578, "reference-models.md §1.4"},
		{"hara-densenet3d-121", 3, 2, params["hara121_in3_out2"], "PyTorch"},
		{"hara-densenet3d-121", 1, 2, params["hara121_in1_out2"], "PyTorch"},
		{"densenet3d-121", 1, 2, params["monai121_in1_out2"], "PyTorch"},
		{"densenet3d-121", 3, 2, params["monai121_in3_out2"], "PyTorch"},
	} {
		t.Run(fmt.Sprintf("%s/in%d/out%d/%s", tc.arch, tc.in, tc.cls, tc.wantFrom), func(t *testing.T) {
			if tc.want == 0 {
				t.Fatalf("%s lacks the count", denseGoldenFile)
			}
			m, err := Build(Spec{Arch: tc.arch, InChannels: tc.in, Classes: tc.cls}, 7)
			if err != nil {
				t.Fatal(err)
			}
			if got := nn.NumParams(m); got != tc.want {
				t.Errorf("%d parameters, want %d (%s)", got, tc.want, tc.wantFrom)
			}
		})
	}
}

// TestDenseNetDepths checks each depth's layers per block (Huang et al.,
// Table 1; Hara's and MONAI's builders) and the channel count after the last
// block, c = (((64 + 32·b1)/2 + 32·b2)/2 + 32·b3)/2 + 32·b4, worked by hand:
// 121 → 1024, 169 → 1664, 201 → 1920, 264 → 2688.
func TestDenseNetDepths(t *testing.T) {
	for _, tc := range []struct {
		depth    int
		blocks   []int
		channels int
	}{
		{121, []int{6, 12, 24, 16}, 1024},
		{169, []int{6, 12, 32, 32}, 1664},
		{201, []int{6, 12, 48, 32}, 1920},
		{264, []int{6, 12, 64, 48}, 2688},
	} {
		for _, prefix := range []string{"", "hara-"} {
			arch := fmt.Sprintf("%sdensenet3d-%d", prefix, tc.depth)
			// bn_size 1 narrows only the bottlenecks, keeping the build
			// cheap without changing the channel arithmetic.
			m, err := Build(Spec{Arch: arch, InChannels: 1, Classes: 2, Config: json.RawMessage(`{"bn_size":1}`)}, 3)
			if err != nil {
				t.Fatal(err)
			}
			d := m.(*DenseNet3D)
			if d.FC.In != tc.channels {
				t.Errorf("%s: linear layer has %d inputs, want %d", arch, d.FC.In, tc.channels)
			}
			if len(d.Blocks) != len(tc.blocks) {
				t.Fatalf("%s: %d dense blocks, want %d", arch, len(d.Blocks), len(tc.blocks))
			}
			for i, b := range d.Blocks {
				if b.Len() != tc.blocks[i] {
					t.Errorf("%s: denseblock%d has %d layers, want %d", arch, i+1, b.Len(), tc.blocks[i])
				}
			}
			if got, _ := DenseNetBlocks(tc.depth); fmt.Sprint(got) != fmt.Sprint(tc.blocks) {
				t.Errorf("DenseNetBlocks(%d) = %v, want %v", tc.depth, got, tc.blocks)
			}
		}
	}
}

// denseTiny is a small DenseNet3D (growth 4) for gradient and dropout tests.
func denseTiny(t *testing.T, arch string, dropout float32) *DenseNet3D {
	t.Helper()
	cfg := fmt.Sprintf(`{"growth_rate":4,"bn_size":2,"init_features":6,"dropout":%g,"block_config":[2,3]}`, dropout)
	m, err := Build(Spec{Arch: arch, InChannels: 2, Classes: 3, Config: json.RawMessage(cfg)}, 11)
	if err != nil {
		t.Fatal(err)
	}
	return m.(*DenseNet3D)
}

// TestDenseNetGradCheck compares autograd's gradient with respect to the
// input through a tiny DenseNet (growth 4, blocks 2 and 3) in training mode
// (batch statistics) with float64 central finite differences. The input is
// large enough that norm5 normalises 16 values per channel (with 2 it would
// saturate at ±1 and pass no gradient), and the logits are scaled by 25 so
// that the largest input gradients are of order 1 and the tolerance is
// relative to them. (Parameter gradients in training mode are compared with
// PyTorch's in TestDenseNetGolden.)
func TestDenseNetGradCheck(t *testing.T) {
	for _, tc := range []struct {
		arch  string
		shape []int
	}{
		{"densenet3d-121", []int{2, 2, 16, 16, 16}},
		{"hara-densenet3d-121", []int{2, 2, 8, 16, 16}},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			d := denseTiny(t, tc.arch, 0)
			x := tensortest.Rand(rand.New(rand.NewPCG(5, 6)), tc.shape...)
			tensortest.GradCheck(t, tc.arch, func(in []*tensor.Tensor) *tensor.Tensor {
				return tensor.MulScalar(d.Forward(in[0]), 25)
			}, []*tensor.Tensor{x}, tensortest.GradCheckOpts{Eps: 1e-2, Tol: 2e-2, MaxPts: 64, Seed: 3})
			m := 0.0
			for _, v := range x.Grad().Data() {
				m = math.Max(m, math.Abs(float64(v)))
			}
			if m < 0.2 {
				t.Errorf("largest input gradient %.3g: the check is vacuous", m)
			}
		})
	}
}

// TestDenseNetTapReplace takes gradients with respect to an intermediate
// activation, as Grad-CAM does, by replacing it in a tap.
func TestDenseNetTapReplace(t *testing.T) {
	d := denseTiny(t, "hara-densenet3d-121", 0)
	nn.SetTraining(d, false)
	x := tensortest.Rand(rand.New(rand.NewPCG(1, 2)), 1, 2, 12, 12, 12)
	var act *tensor.Tensor
	logits := d.Head(d.Features(x, func(layer string, out *tensor.Tensor) *tensor.Tensor {
		if layer == "features.transition1" {
			act = out.Detach().SetRequiresGrad(true)
			return act
		}
		return out
	}))
	tensor.SumAll(tensor.Slice(logits, 1, 0, 1)).Backward()
	if act == nil || act.Grad() == nil || !tensor.SameShape(act.Grad().Shape(), act.Shape()) {
		t.Fatal("no gradient reached the replaced activation")
	}
	nz := 0
	for _, v := range act.Grad().Data() {
		if v != 0 {
			nz++
		}
	}
	if nz == 0 {
		t.Error("gradient at features.transition1 is all zero")
	}
}

// TestDenseNetDropout checks the two dropout kinds in training: MONAI's
// Dropout3d zeroes whole channels of a dense layer's new features, Hara's
// F.dropout single elements, each with probability p; evaluation is
// deterministic.
func TestDenseNetDropout(t *testing.T) {
	x := tensor.Ones(4, 64, 2, 2, 2)
	d := &dropout3d{p: 0.5, rng: rand.New(rand.NewPCG(9, 9))}
	y := d.Forward(x)
	zeros := 0
	for nc := range 4 * 64 {
		blk := y.Data()[nc*8 : nc*8+8]
		for _, v := range blk {
			if v != blk[0] {
				t.Fatalf("channel %d not dropped as a whole: %v", nc, blk)
			}
		}
		switch blk[0] {
		case 0:
			zeros++
		case 2:
		default:
			t.Fatalf("channel %d scaled to %v, want 0 or 2", nc, blk[0])
		}
	}
	if zeros < 96 || zeros > 160 { // 256 Bernoulli(0.5): mean 128, sd 8
		t.Errorf("%d of 256 channels dropped at p 0.5", zeros)
	}
	nn.SetTraining(d, false)
	if d.Forward(x) != x {
		t.Error("Dropout3d is not the identity in evaluation")
	}

	for _, arch := range []string{"densenet3d-121", "hara-densenet3d-121"} {
		net := denseTiny(t, arch, 0.5)
		in := tensortest.Rand(rand.New(rand.NewPCG(4, 4)), 2, 2, 12, 12, 12)
		var blk *tensor.Tensor
		net.Features(in, func(layer string, out *tensor.Tensor) *tensor.Tensor {
			if layer == "features.denseblock1" {
				blk = out
			}
			return out
		})
		// Channels 6..13 of denseblock1 are the two layers' new features
		// (growth 4); spatial size 6×3×3 (Hara) or 3×3×3 (MONAI).
		s := tensor.Numel(blk.Shape()[2:])
		chanZero, elemZero := 0, 0
		for n := range 2 {
			for c := 6; c < 14; c++ {
				v := blk.Data()[(n*14+c)*s : (n*14+c+1)*s]
				z := 0
				for _, e := range v {
					if e == 0 {
						z++
					}
				}
				elemZero += z
				if z == s {
					chanZero++
				}
			}
		}
		if arch == "densenet3d-121" && (chanZero == 0 || elemZero != chanZero*s) {
			t.Errorf("%s: %d zero elements, %d whole zero channels of 16 (%d elements each): want channel dropout", arch, elemZero, chanZero, s)
		}
		if arch == "hara-densenet3d-121" && (elemZero == 0 || elemZero == chanZero*s) {
			t.Errorf("%s: %d zero elements, %d whole zero channels of 16: want element dropout", arch, elemZero, chanZero)
		}
		nn.SetTraining(net, false)
		a, b := net.Forward(in), net.Forward(in)
		if err := tensortest.AllClose(a, b, 0, 0); err != nil {
			t.Errorf("%s: eval forward not deterministic: %v", arch, err)
		}
	}
}

// TestDenseNetNames spot-checks module paths that are not state-dict keys
// (parameter-free modules) and the MONAI dropout module's place.
func TestDenseNetNames(t *testing.T) {
	for _, tc := range []struct {
		arch    string
		dropout float32
		want    []string
	}{
		{"densenet3d-121", 0.5, []string{"features.pool0", "features.denseblock1.denselayer2.layers.relu2",
			"features.denseblock1.denselayer2.layers.dropout", "features.transition1.pool", "class_layers.relu",
			"class_layers.pool", "class_layers.flatten", "class_layers.out"}},
		{"hara-densenet3d-121", 0.5, []string{"features.pool1", "features.denseblock2.denselayer3.relu1",
			"features.transition1.pool", "features.norm5", "classifier"}},
	} {
		d := denseTiny(t, tc.arch, tc.dropout)
		have := map[string]bool{}
		for _, nm := range nn.NamedModules(d) {
			have[nm.Name] = true
		}
		for _, w := range tc.want {
			if !have[w] {
				t.Errorf("%s: no module %s", tc.arch, w)
			}
		}
		if tc.arch == "hara-densenet3d-121" && have["features.denseblock1.denselayer1.dropout"] {
			t.Errorf("%s: the Hara layout has no dropout module", tc.arch)
		}
	}
}

// TestDenseNetSpecErrors checks that bad specs are errors naming the
// field, never panics.
func TestDenseNetSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		name, arch, cfg string
		in, cls         int
		want            string
	}{
		{"unknown depth", "densenet3d-100", "", 1, 2, "not a DenseNet3D architecture"},
		{"zero growth", "densenet3d-121", `{"growth_rate":0}`, 1, 2, "growth_rate 0"},
		{"huge growth", "densenet3d-121", `{"growth_rate":100000}`, 1, 2, "growth_rate 100000"},
		{"bn_size", "hara-densenet3d-169", `{"bn_size":-1}`, 1, 2, "bn_size -1"},
		{"init", "densenet3d-201", `{"init_features":0}`, 1, 2, "init_features 0"},
		{"dropout 1", "densenet3d-121", `{"dropout":1}`, 1, 2, "dropout 1"},
		{"negative dropout", "hara-densenet3d-121", `{"dropout":-0.1}`, 1, 2, "dropout -0.1"},
		{"empty block", "densenet3d-121", `{"block_config":[2,0]}`, 1, 2, "block_config [2 0]"},
		{"unknown field", "densenet3d-121", `{"growth":4}`, 1, 2, `unknown field "growth"`},
		{"zero classes", "densenet3d-264", "", 1, 0, "classes 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Spec{Arch: tc.arch, InChannels: tc.in, Classes: tc.cls}
			if tc.cfg != "" {
				s.Config = json.RawMessage(tc.cfg)
			}
			_, err := NewDenseNet3D(rand.New(rand.NewPCG(1, 1)), s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
			// The registry's builder passes the error on with an untyped
			// nil network.
			if e, ok := Lookup(tc.arch); ok {
				c, err := e.Build(s, rand.New(rand.NewPCG(1, 1)))
				if c != nil || err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("registry Build: %v, %v; want nil and an error containing %q", c, err, tc.want)
				}
			}
		})
	}
	_, err := NewDenseNet3D(rand.New(rand.NewPCG(1, 1)), Spec{Arch: "resnet3d-101", InChannels: 1, Classes: 2})
	if err == nil || !strings.Contains(err.Error(), "not a DenseNet3D") {
		t.Errorf("NewDenseNet3D(resnet3d-101): %v", err)
	}

	// An input too small for the transitions' pooling is an error from
	// nn.Run, not a panic.
	d := denseTiny(t, "densenet3d-121", 0)
	var se *tensor.ShapeError
	if _, err := nn.Run(d, tensor.Zeros(1, 2, 4, 4, 4)); !errors.As(err, &se) {
		t.Errorf("4×4×4 input: error %v, want a *tensor.ShapeError", err)
	}
	if _, err := nn.Run(d, tensor.Zeros(1, 2, 16, 16)); !errors.As(err, &se) {
		t.Errorf("4-D input: error %v, want a *tensor.ShapeError", err)
	}
}

// TestDenseNetRegistry checks the eight registered names, their layouts and
// that a network's Spec rebuilds it.
func TestDenseNetRegistry(t *testing.T) {
	for _, depth := range []int{121, 169, 201, 264} {
		for _, tc := range []struct {
			prefix, layout, word string
		}{{"", "monai", "MONAI"}, {"hara-", "hara", "Hara/HKBU"}} {
			name := fmt.Sprintf("%sdensenet3d-%d", tc.prefix, depth)
			e, ok := Lookup(name)
			if !ok {
				t.Errorf("%s not registered", name)
				continue
			}
			if e.Family != "densenet3d" || e.DefaultSpec.Arch != name || !strings.Contains(e.Description, tc.word+" layout") {
				t.Errorf("%s: entry %+v", name, e)
			}
		}
	}
	d := denseTiny(t, "hara-densenet3d-121", 0.25)
	if d.Layout() != DenseNetHara || d.Layout().String() != "hara" {
		t.Errorf("layout %v", d.Layout())
	}
	again, err := Build(d.Spec(), 11)
	if err != nil {
		t.Fatal(err)
	}
	a, b := nn.StateDict(d), nn.StateDict(again)
	if len(a) != len(b) {
		t.Fatalf("rebuilt from Spec %s: %d tensors, want %d", d.Spec().Config, len(b), len(a))
	}
	for i := range a {
		if a[i].Name != b[i].Name || tensortest.AllClose(a[i].Tensor, b[i].Tensor, 0, 0) != nil {
			t.Fatalf("rebuilt from Spec: %s differs", a[i].Name)
		}
	}
	var cfg DenseNetConfig
	if err := json.Unmarshal(d.Spec().Config, &cfg); err != nil || cfg.Dropout != 0.25 || cfg.GrowthRate != 4 || cfg.BNSize != 2 {
		t.Errorf("Spec().Config %s (%v)", d.Spec().Config, err)
	}
}
