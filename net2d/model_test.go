package net2d

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// Compile-time checks: every network is a cam.Model.
var (
	_ cam.Model = (*ResNetRS)(nil)
	_ cam.Model = (*ResFormer)(nil)
	_ cam.Model = Classifier(nil)
)

func TestRegistry(t *testing.T) {
	want := []string{"resformer-b", "resformer-s", "resformer-ti", "resnetrs-101", "resnetrs-152", "resnetrs-18",
		"resnetrs-200", "resnetrs-26", "resnetrs-270", "resnetrs-350", "resnetrs-420", "resnetrs-50"}
	var got []string
	for _, e := range Entries() {
		got = append(got, e.Name)
		if e.DefaultSpec.Arch != e.Name || e.Description == "" {
			t.Errorf("%s: default spec %+v, description %q", e.Name, e.DefaultSpec, e.Description)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("entries %v, want %v", got, want)
	}
}

func TestBuildErrors(t *testing.T) {
	cases := []struct {
		name string
		spec Spec
		want string
	}{
		{"unknown", Spec{Arch: "resnetrs-34", InChannels: 3, Classes: 2}, `unknown architecture "resnetrs-34"`},
		{"channels", Spec{Arch: "resnetrs-18", InChannels: 0, Classes: 2}, "in_channels 0"},
		{"unknown field", Spec{Arch: "resnetrs-18", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"width":2}`)}, `unknown field "width"`},
		{"dropout", Spec{Arch: "resnetrs-18", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"dropout":1}`)}, "dropout 1"},
		{"drop path", Spec{Arch: "resformer-ti", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"drop_path":-0.1}`)}, "drop_path -0.1"},
		{"patch", Spec{Arch: "resformer-ti", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"patch":-2}`)}, "patch -2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(c.spec, 1)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	rs, err := Build(Spec{Arch: "resnetrs-18", InChannels: 1, Classes: 2}, 1)
	if err != nil {
		t.Fatal(err)
	}
	rf, err := Build(Spec{Arch: "resformer-ti", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"depth":1,"patch":8}`)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		m    Classifier
		x    *tensor.Tensor
		want string
	}{
		{"channels", rs, tensor.Zeros(1, 3, 32, 32), "want N×1×H×W"},
		{"rank", rs, tensor.Zeros(1, 1, 32), "want N×C×H×W"},
		{"patch multiple", rf, tensor.Zeros(1, 1, 32, 36), "multiples of the patch size 8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Run(c.m, c.x)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	if y, err := Run(rf, tensor.Zeros(2, 1, 24, 40)); err != nil || !tensor.SameShape(y.Shape(), []int{2, 2}) {
		t.Fatalf("rectangular ResFormer input: %v, %v", y, err)
	}
}

// TestResNetRSInit checks timm's initialisation: zero last-BN gamma, SE
// widths C/4, kaiming-normal (fan-out) convolutions, and the
// stochastic-depth schedules.
func TestResNetRSInit(t *testing.T) {
	r, err := NewResNetRS(newRng(3), 26, 3, 10, ResNetRSConfig{DropPath: 0.3})
	if err != nil {
		t.Fatal(err)
	}
	idx := 0
	for s, l := range r.Layers {
		for i := 0; i < l.Len(); i++ {
			b := l.At(i).(*RSBlock)
			for _, v := range b.BN3.Weight.Data() {
				if v != 0 {
					t.Fatalf("layer%d.%d.bn3.weight not zero", s+1, i)
				}
			}
			out := b.BN3.Channels
			if b.SE.FC1.Out != out/4 || b.SE.FC2.Out != out {
				t.Errorf("layer%d.%d.se: %d → %d → %d, want %d → %d → %d", s+1, i, out, b.SE.FC1.Out, b.SE.FC2.Out, out, out/4, out)
			}
			want := float32(0.3 * float64(idx) / 7)
			if math.Abs(float64(b.DropPath.P-want)) > 1e-7 {
				t.Errorf("layer%d.%d drop path %v, want %v", s+1, i, b.DropPath.P, want)
			}
			idx++
		}
	}
	// layer3.0.conv2: 256×256×3×3, std √(2/(256·9)).
	w := r.Layers[2].At(0).(*RSBlock).Conv2.Weight.Data()
	if sd, want := stddev(w), math.Sqrt(2.0/(256*9)); math.Abs(sd/want-1) > 0.02 {
		t.Errorf("conv2 weight std %v, want %v", sd, want)
	}
	tpu, err := NewResNetRS(nil, 18, 3, 10, ResNetRSConfig{DropPath: 0.2, DropPathPerStage: true})
	if err != nil {
		t.Fatal(err)
	}
	for s, l := range tpu.Layers {
		want := float32(0.2 * float64(s+2) / 5)
		for i := 0; i < l.Len(); i++ {
			if b := l.At(i).(*RSBlock); math.Abs(float64(b.DropPath.P-want)) > 1e-7 || b.BN2.Weight.Data()[0] != 0 {
				t.Errorf("layer%d.%d: drop path %v (want %v), bn2 gamma %v (want 0)", s+1, i, b.DropPath.P, want, b.BN2.Weight.Data()[0])
			}
		}
	}
}

// TestResFormerInit checks the reference's initialisation.
func TestResFormerInit(t *testing.T) {
	r, err := NewResFormer(newRng(4), "ti", 3, 10, ResFormerConfig{Depth: 3, DropPath: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range r.Blocks.All() {
		for _, v := range append(b.Attn.GetV.Weight.Data(), b.Attn.GetV.Bias.Data()...) {
			if v != 0 {
				t.Fatalf("blocks.%d.attn.get_v not zero", i)
			}
		}
		for _, v := range b.Attn.QKV.Bias.Data() {
			if v != 0 {
				t.Fatalf("blocks.%d.attn.qkv.bias not zero", i)
			}
		}
		if want := float32(0.1 * float64(i)); math.Abs(float64(b.DropPath.P-want)) > 1e-7 {
			t.Errorf("blocks.%d drop path %v, want %v", i, b.DropPath.P, want)
		}
	}
	for name, w := range map[string][]float32{"qkv": r.Blocks.At(0).Attn.QKV.Weight.Data(), "head": r.HeadFC.Weight.Data()} {
		if sd := stddev(w); math.Abs(sd/0.02-1) > 0.05 {
			t.Errorf("%s weight std %v, want 0.02", name, sd)
		}
	}
	for _, n := range []string{"cls_token", "pos_embed.embed_layer.weight", "blocks.1.attn.get_v.bias"} {
		if !r.NoWeightDecay(n) {
			t.Errorf("%s should be exempt from weight decay", n)
		}
	}
	if r.NoWeightDecay("blocks.1.attn.qkv.weight") {
		t.Error("qkv weight should be decayed")
	}
}

// TestSineCosineGrid checks the global embedding map against the formula
// worked in float64 at a few positions.
func TestSineCosineGrid(t *testing.T) {
	const dim, h, w = 8, 2, 3
	e := SineCosineGrid(dim, h, w)
	half := dim / 2
	for j := 0; j < dim; j++ {
		for r := 0; r < h; r++ {
			for c := 0; c < w; c++ {
				jj, pos := j, 2*math.Pi*float64(r+1)/float64(h)
				if j >= half {
					jj, pos = j-half, 2*math.Pi*float64(c+1)/float64(w)
				}
				arg := pos / math.Pow(10000, float64(2*(jj/2))/float64(half))
				want := math.Sin(arg)
				if jj%2 == 1 {
					want = math.Cos(arg)
				}
				if got := float64(e.At(0, j, r, c)); math.Abs(got-want) > 1e-5 {
					t.Errorf("E[%d, %d, %d] = %v, want %v", j, r, c, got, want)
				}
			}
		}
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	spec := Spec{Arch: "resformer-ti", InChannels: 1, Classes: 3, Config: json.RawMessage(`{"depth":2,"patch":8}`)}
	m, err := Build(spec, 9)
	if err != nil {
		t.Fatal(err)
	}
	// Give get_v non-zero weights so that they matter.
	for _, b := range m.(*ResFormer).Blocks.All() {
		copy(b.Attn.GetV.Weight.Data(), tensortest.Rand(newRng(5), b.Attn.GetV.Weight.Shape()...).Data())
	}
	path := filepath.Join(t.TempDir(), "rf.safetensors")
	if err := SaveCheckpoint(path, m, map[string]string{"note": "x"}); err != nil {
		t.Fatal(err)
	}
	back, meta, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if meta["note"] != "x" || back.Spec().Arch != spec.Arch {
		t.Fatalf("metadata %v, spec %+v", meta, back.Spec())
	}
	nn.SetTraining(m, false)
	nn.SetTraining(back, false)
	x := tensortest.Rand(newRng(6), 2, 1, 16, 24)
	if err := tensortest.AllClose(Forward(back, x), Forward(m, x), 0, 0); err != nil {
		t.Fatal(err)
	}
}

// TestTrainingModeRegularisers checks that dropout and stochastic depth act
// in training only.
func TestTrainingModeRegularisers(t *testing.T) {
	m, err := Build(Spec{Arch: "resformer-ti", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"depth":2,"patch":8,"drop_rate":0.3,"drop_path":0.5}`)}, 2)
	if err != nil {
		t.Fatal(err)
	}
	x := tensortest.Rand(newRng(7), 2, 1, 16, 16)
	a, b := Forward(m, x), Forward(m, x)
	if tensortest.AllClose(a, b, 0, 1e-6) == nil {
		t.Error("two training-mode passes agree: dropout inactive")
	}
	nn.SetTraining(m, false)
	a, b = Forward(m, x), Forward(m, x)
	if err := tensortest.AllClose(a, b, 0, 0); err != nil {
		t.Errorf("evaluation-mode passes differ: %v", err)
	}
}

func stddev(v []float32) float64 {
	var s, s2 float64
	for _, x := range v {
		s += float64(x)
		s2 += float64(x) * float64(x)
	}
	n := float64(len(v))
	return math.Sqrt(s2/n - (s/n)*(s/n))
}

func newRng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }

// TestResFormerGradCAMSeveralClasses checks that Grad-CAM of two classes
// at once (cam.Compute repeats the tapped map per class, so the CLS token
// and residual stream must follow) equals each class computed alone.
func TestResFormerGradCAMSeveralClasses(t *testing.T) {
	m, err := Build(Spec{Arch: "resformer-ti", InChannels: 1, Classes: 3, Config: json.RawMessage(`{"depth":2,"patch":4}`)}, 12)
	if err != nil {
		t.Fatal(err)
	}
	x := tensortest.Rand(newRng(13), 2, 1, 12, 16)
	both, err := cam.Compute(m, x, cam.Options{Method: cam.GradCAM, Layer: "blocks.0.norm1", Classes: []int{0, 2}})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []int{0, 2} {
		one, err := cam.Compute(m, x, cam.Options{Method: cam.GradCAM, Layer: "blocks.0.norm1", Classes: []int{c}})
		if err != nil {
			t.Fatal(err)
		}
		if err := tensortest.AllClose(both.Maps[i].Raw, one.Maps[0].Raw, 1e-5, 1e-7); err != nil {
			t.Errorf("class %d: %v", c, err)
		}
		if stddev(one.Maps[0].Raw.Data()) == 0 {
			t.Errorf("class %d: constant map", c)
		}
	}
}
