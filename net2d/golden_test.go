package net2d

import (
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// goldenPath is written by testdata/pytorch/golden_net2d.py.
const goldenPath = "testdata/golden_net2d.safetensors"

// goldenParam is one state-dict entry of a golden case, in PyTorch's
// state_dict order, with the bounds of its hashed uniform values.
type goldenParam struct {
	Key   string  `json:"key"`
	Shape []int   `json:"shape"`
	Lo    float64 `json:"lo"`
	Hi    float64 `json:"hi"`
}

// goldenCase is one PyTorch model run of the golden file.
type goldenCase struct {
	Name         string          `json:"name"`
	Arch         string          `json:"arch"`
	InChannels   int             `json:"in_channels"`
	Classes      int             `json:"classes"`
	Config       json.RawMessage `json:"config"`
	Taps         []string        `json:"taps"`
	GradCAMLayer string          `json:"gradcam_layer"`
	GradCAMClass int             `json:"gradcam_class"`
	Params       []goldenParam   `json:"params"`
}

type goldenFile struct {
	tensors     map[string]*tensor.Tensor
	cases       map[string]goldenCase
	attnParams  []goldenParam
	paramCounts map[string]int
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
		ts, meta, err := nn.ReadTensors(goldenPath)
		if err != nil {
			goldenErr = err
			return
		}
		g := &goldenFile{tensors: map[string]*tensor.Tensor{}, cases: map[string]goldenCase{}}
		for _, n := range ts {
			g.tensors[n.Name] = n.Tensor
		}
		var cases []goldenCase
		for key, dst := range map[string]any{"cases": &cases, "attnpool_params": &g.attnParams, "param_counts": &g.paramCounts} {
			if err := json.Unmarshal([]byte(meta[key]), dst); err != nil {
				goldenErr = fmt.Errorf("%s: metadata %s: %w", goldenPath, key, err)
				return
			}
		}
		for _, c := range cases {
			g.cases[c.Name] = c
		}
		golden = g
	})
	if goldenErr != nil {
		t.Fatal(goldenErr)
	}
	return golden
}

// tensorOf returns a tensor of the golden file.
func (g *goldenFile) tensorOf(t *testing.T, name string) *tensor.Tensor {
	t.Helper()
	v, ok := g.tensors[name]
	if !ok {
		t.Fatalf("golden file lacks %s", name)
	}
	return v
}

// hashedUniform fills n values lo + (hi−lo)·u, u = the top 24 bits of
// SplitMix64's output function of fnv1a64(key) + (i+1)·0x9E3779B97F4A7C15,
// over 2²⁴: the formula of hashed_uniform in golden_net2d.py.
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

// loadHashed checks that m's state dict has exactly the keys and shapes of
// params, in order, and loads their hashed values strictly.
func loadHashed(t *testing.T, what string, m nn.Module, params []goldenParam) {
	t.Helper()
	sd := nn.StateDict(m)
	for i := range max(len(sd), len(params)) {
		switch {
		case i >= len(sd):
			t.Fatalf("%s: Go state dict ends at %d keys; PyTorch continues with %s %v", what, len(sd), params[i].Key, params[i].Shape)
		case i >= len(params):
			t.Fatalf("%s: PyTorch state dict ends at %d keys; Go continues with %s %v", what, len(params), sd[i].Name, sd[i].Tensor.Shape())
		}
		if sd[i].Name != params[i].Key || !tensor.SameShape(sd[i].Tensor.Shape(), params[i].Shape) {
			t.Fatalf("%s: state-dict entry %d is %s %v, PyTorch has %s %v", what, i, sd[i].Name, sd[i].Tensor.Shape(), params[i].Key, params[i].Shape)
		}
	}
	state := make([]nn.Named, len(params))
	for i, p := range params {
		state[i] = nn.Named{Name: p.Key, Tensor: tensor.New(hashedUniform(p.Key, tensor.Numel(p.Shape), p.Lo, p.Hi), p.Shape...)}
	}
	if _, err := nn.LoadState(state, m, nn.LoadOpts{Strict: true}); err != nil {
		t.Fatalf("%s: %v", what, err)
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

// goldenModel builds the network of a golden case with its PyTorch weights,
// in evaluation mode.
func goldenModel(t *testing.T, g *goldenFile, c goldenCase) Classifier {
	t.Helper()
	cfg := c.Config
	if string(cfg) == "{}" {
		cfg = nil
	}
	net, err := BuildShapes(Spec{Arch: c.Arch, InChannels: c.InChannels, Classes: c.Classes, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	loadHashed(t, c.Name, net, c.Params)
	nn.SetTraining(net, false)
	return net
}

// checkGolden compares every stored tap, the pooled features, the logits
// and the Grad-CAM map of class 1 at the case's layer with PyTorch's.
func checkGolden(t *testing.T, name string) {
	g := loadGolden(t)
	c, ok := g.cases[name]
	if !ok {
		t.Fatalf("golden file has no case %q", name)
	}
	net := goldenModel(t, g, c)
	x := g.tensorOf(t, name+"/x")
	taps := map[string]*tensor.Tensor{}
	f := net.Features(x, func(layer string, out *tensor.Tensor) *tensor.Tensor {
		taps[layer] = out
		return out
	})
	for _, layer := range c.Taps {
		got, ok := taps[layer]
		if !ok {
			t.Fatalf("%s: the network reported no tap %q (it has %v)", name, layer, net.TapLayers())
		}
		if err := closeTo(got, g.tensorOf(t, name+"/tap/"+layer)); err != nil {
			t.Errorf("%s: tap %s: %v", name, layer, err)
		}
	}
	if err := closeTo(net.Pool(f), g.tensorOf(t, name+"/pooled")); err != nil {
		t.Errorf("%s: pooled: %v", name, err)
	}
	if err := closeTo(net.Head(f), g.tensorOf(t, name+"/logits")); err != nil {
		t.Errorf("%s: logits: %v", name, err)
	}
	if net.CAMLayer() != c.GradCAMLayer {
		t.Errorf("%s: CAMLayer %q, the reference explains %q", name, net.CAMLayer(), c.GradCAMLayer)
	}
	res, err := cam.Compute(net, x, cam.Options{Method: cam.GradCAM, Layer: c.GradCAMLayer, Classes: []int{c.GradCAMClass}})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := closeTo(res.Maps[0].Raw, g.tensorOf(t, name+"/gradcam")); err != nil {
		t.Errorf("%s: Grad-CAM at %s: %v", name, c.GradCAMLayer, err)
	}
}

func TestGoldenResNetRS(t *testing.T) {
	for _, name := range []string{"resnetrs-18", "resnetrs-50"} {
		t.Run(name, func(t *testing.T) { checkGolden(t, name) })
	}
}

func TestGoldenResFormer(t *testing.T) {
	for _, name := range []string{"resformer-ti-64", "resformer-ti-96", "resformer-ti-rect"} {
		t.Run(name, func(t *testing.T) { checkGolden(t, name) })
	}
}

// TestParamCounts compares the parameter counts at 1000 classes and 3
// input channels with those of the PyTorch definitions (the script builds
// every depth on the meta device). ResNet-RS-50 and -101 are timm's
// 35,691,912 and 63,618,696 (its published 35.69M and 63.62M). The deep
// ResNet-RS and ResFormer-B are not built here: hundreds of MB each.
func TestParamCounts(t *testing.T) {
	g := loadGolden(t)
	fixed := map[string]int{"resnetrs-50": 35_691_912, "resnetrs-101": 63_618_696}
	for arch, n := range fixed {
		if g.paramCounts[arch] != n {
			t.Errorf("golden file: %s has %d parameters in PyTorch, want timm's %d", arch, g.paramCounts[arch], n)
		}
	}
	for _, arch := range []string{"resnetrs-18", "resnetrs-26", "resnetrs-50", "resnetrs-101", "resformer-ti", "resformer-s"} {
		want, ok := g.paramCounts[arch]
		if !ok {
			t.Fatalf("golden file has no parameter count for %s", arch)
		}
		net, err := BuildShapes(Spec{Arch: arch, InChannels: 3, Classes: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if got := nn.NumParams(net); got != want {
			t.Errorf("%s: %d parameters, PyTorch has %d", arch, got, want)
		}
	}
}

func TestGoldenScaleConsistencyLoss(t *testing.T) {
	g := loadGolden(t)
	var feats []*tensor.Tensor
	for i := 0; i < 3; i++ {
		feats = append(feats, g.tensorOf(t, fmt.Sprintf("scale_loss/feat%d", i)).Clone().SetRequiresGrad(true))
	}
	loss, err := ScaleConsistencyLoss(feats)
	if err != nil {
		t.Fatal(err)
	}
	if err := closeTo(loss, g.tensorOf(t, "scale_loss/loss")); err != nil {
		t.Errorf("loss: %v", err)
	}
	loss.Backward()
	for i, f := range feats {
		want := g.tensorOf(t, fmt.Sprintf("scale_loss/grad%d", i))
		got := f.Grad()
		if got == nil {
			got = tensor.ZerosLike(f)
		}
		if err := tensortest.AllClose(got, want, 1e-4, 1e-6); err != nil {
			t.Errorf("gradient of feature %d: %v", i, err)
		}
	}
}

func TestGoldenAttentionPool(t *testing.T) {
	g := loadGolden(t)
	p := NewAttentionPool(nil, 6, 4, 3)
	loadHashed(t, "attnpool", p, g.attnParams)
	logits, weights := p.Pool(g.tensorOf(t, "attnpool/h"))
	if err := closeTo(logits, g.tensorOf(t, "attnpool/logits")); err != nil {
		t.Errorf("logits: %v", err)
	}
	if err := closeTo(weights, g.tensorOf(t, "attnpool/weights")); err != nil {
		t.Errorf("attention weights: %v", err)
	}
}
