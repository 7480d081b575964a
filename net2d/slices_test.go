package net2d

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
	"github.com/ctlens/ctlens/volume"
)

// testVolume returns a cols×rows×slices volume with voxel (i, j, k) =
// 100·i − 30·j + 500·k − 900 HU and a non-trivial geometry.
func testVolume(cols, rows, slices int) *volume.Volume {
	v := volume.New(cols, rows, slices)
	v.Spacing = [3]float64{0.7, 0.8, 2.5}
	v.Origin = [3]float64{-10, 20, 30}
	for k := 0; k < slices; k++ {
		for j := 0; j < rows; j++ {
			for i := 0; i < cols; i++ {
				v.Set(i, j, k, float32(100*i-30*j+500*k-900))
			}
		}
	}
	return v
}

// TestSliceInput checks the layout, windowing and normalisation against
// the formula worked per voxel, and a 2× bilinear reduction against the
// 2×2 block means it equals (align_corners false, scale exactly 2).
func TestSliceInput(t *testing.T) {
	v := testVolume(4, 6, 3)
	cfg := SliceConfig{Window: volume.WindowLevel{Center: -400, Width: 1000}, Mean: 0.25, Std: 0.5}
	x, err := SliceInput(v, []int{2, 0}, 2, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(x.Shape(), []int{2, 2, 6, 4}) {
		t.Fatalf("shape %v, want [2 2 6 4]", x.Shape())
	}
	want := func(i, j, k int) float64 {
		hu := float64(100*i - 30*j + 500*k - 900)
		w := math.Max(0, math.Min(1, (hu+900)/1000))
		return (w - 0.25) / 0.5
	}
	for n, k := range []int{2, 0} {
		for c := 0; c < 2; c++ {
			for j := 0; j < 6; j++ {
				for i := 0; i < 4; i++ {
					if got := float64(x.At(n, c, j, i)); math.Abs(got-want(i, j, k)) > 1e-6 {
						t.Fatalf("x[%d, %d, %d, %d] = %v, want %v", n, c, j, i, got, want(i, j, k))
					}
				}
			}
		}
	}
	cfg.Size = [2]int{3, 2}
	small, err := SliceInput(v, []int{1}, 1, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for j := 0; j < 3; j++ {
		for i := 0; i < 2; i++ {
			m := (want(2*i, 2*j, 1) + want(2*i+1, 2*j, 1) + want(2*i, 2*j+1, 1) + want(2*i+1, 2*j+1, 1)) / 4
			if got := float64(small.At(0, 0, j, i)); math.Abs(got-m) > 1e-5 {
				t.Errorf("resized[%d, %d] = %v, want %v", j, i, got, m)
			}
		}
	}
}

func TestSliceInputErrors(t *testing.T) {
	v := testVolume(4, 4, 2)
	cases := []struct {
		name string
		ks   []int
		cfg  SliceConfig
		want string
	}{
		{"slice range", []int{2}, SliceConfig{}, "slice 2 out of range (the volume has 2)"},
		{"size", []int{0}, SliceConfig{Size: [2]int{8, 0}}, "size [8 0]"},
		{"window", []int{0}, SliceConfig{Window: volume.WindowLevel{Width: -1}}, "window width -1"},
		{"no slices", nil, SliceConfig{}, "0 slices"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := SliceInput(v, c.ks, 1, c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	bad := testVolume(4, 4, 2)
	bad.Voxels = bad.Voxels[:5]
	if _, err := SliceInput(bad, []int{0}, 1, SliceConfig{}); err == nil || !strings.Contains(err.Error(), "5 voxels") {
		t.Fatalf("inconsistent volume: error %v", err)
	}
}

func TestAggregate(t *testing.T) {
	// 4 slices × 2 classes.
	scores := tensor.New([]float32{
		1, 8,
		5, 2,
		3, 6,
		-1, 4,
	}, 4, 2)
	cases := []struct {
		agg  Aggregation
		k    int
		want []float32
	}{
		{AggMean, 0, []float32{2, 5}},
		{AggMax, 0, []float32{5, 8}},
		{AggTopKMean, 2, []float32{4, 7}},
		{AggTopKMean, 9, []float32{2, 5}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s-%d", c.agg, c.k), func(t *testing.T) {
			got, err := Aggregate(scores, c.agg, c.k)
			if err != nil {
				t.Fatal(err)
			}
			if err := tensortest.AllClose(got, tensor.New(c.want, 2), 0, 1e-6); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Top-2 gradient: 1/2 on the chosen slices of each class.
	s := scores.Clone().SetRequiresGrad(true)
	y, err := Aggregate(s, AggTopKMean, 2)
	if err != nil {
		t.Fatal(err)
	}
	tensor.SumAll(y).Backward()
	if err := tensortest.AllClose(s.Grad(), tensor.New([]float32{0, 0.5, 0.5, 0, 0.5, 0.5, 0, 0}, 4, 2), 0, 0); err != nil {
		t.Errorf("top-k gradient: %v", err)
	}
	for _, a := range []string{"mean", "MAX", "top-k"} {
		if _, err := ParseAggregation(a); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseAggregation("median"); err == nil {
		t.Error("median accepted")
	}
	if _, err := Aggregate(scores, AggTopKMean, 0); err == nil {
		t.Error("top-k with k 0 accepted")
	}
	if _, err := Aggregate(tensor.Zeros(3), AggMean, 0); err == nil {
		t.Error("1-D scores accepted")
	}
}

// TestAttentionPoolGrad checks the pool's gradients against finite
// differences.
func TestAttentionPoolGrad(t *testing.T) {
	p := NewAttentionPool(newRng(21), 5, 3, 2)
	h := tensortest.Rand(newRng(22), 2, 4, 5)
	tensortest.GradCheck(t, "attention pool", func(in []*tensor.Tensor) *tensor.Tensor { return p.Forward(in[0]) },
		[]*tensor.Tensor{h}, tensortest.GradCheckOpts{})
	y, w := p.Pool(tensortest.Rand(newRng(23), 4, 5))
	if !tensor.SameShape(y.Shape(), []int{1, 2}) || !tensor.SameShape(w.Shape(), []int{1, 4}) {
		t.Fatalf("one scan: logits %v, weights %v", y.Shape(), w.Shape())
	}
	sum := 0.0
	for _, v := range w.Data() {
		sum += float64(v)
	}
	if math.Abs(sum-1) > 1e-6 {
		t.Errorf("attention weights sum to %v", sum)
	}
}

// TestScoreSlices checks that ScoreSlices (batched, resized) gives, for
// each slice, the model's output on that slice built by hand, and restores
// the training mode.
func TestScoreSlices(t *testing.T) {
	m, err := Build(Spec{Arch: "resformer-ti", InChannels: 2, Classes: 3, Config: json.RawMessage(`{"depth":1,"patch":8}`)}, 31)
	if err != nil {
		t.Fatal(err)
	}
	v := testVolume(12, 20, 5)
	cfg := SliceConfig{Window: volume.LungWindow, Size: [2]int{16, 8}, Batch: 2}
	got, err := ScoreSlices(m, v, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !m.(*ResFormer).Training() {
		t.Error("ScoreSlices left the model in evaluation mode")
	}
	nn.SetTraining(m, false)
	for k := 0; k < 5; k++ {
		x := tensor.Zeros(1, 2, 20, 12)
		for c := 0; c < 2; c++ {
			for j := 0; j < 20; j++ {
				for i := 0; i < 12; i++ {
					hu := float64(v.At(i, j, k))
					x.Set(float32(math.Max(0, math.Min(1, (hu+1350)/1500))), 0, c, j, i)
				}
			}
		}
		x = tensor.Interpolate(x, []int{16, 8}, tensor.InterpLinear, false)
		f := m.Features(x, nil)
		if err := tensortest.AllClose(tensor.Slice(got.Logits, 0, k, k+1), m.Head(f), 1e-5, 1e-5); err != nil {
			t.Errorf("slice %d logits: %v", k, err)
		}
		if err := tensortest.AllClose(tensor.Slice(got.Pooled, 0, k, k+1), m.Pool(f), 1e-5, 1e-5); err != nil {
			t.Errorf("slice %d pooled: %v", k, err)
		}
	}
	if _, err := ScoreSlices(m, v, SliceConfig{Size: [2]int{15, 8}}); err == nil || !strings.Contains(err.Error(), "patch size") {
		t.Errorf("size not divisible by the patch: error %v", err)
	}
}

// linearProbe is a tiny 2D classifier whose Grad-CAM is known in closed
// form: its features are its input (C×H×W), logits = W·mean(x) + b. For
// class c, ∂y_c/∂x = W[c]/S everywhere (S = H·W), so Grad-CAM is
// ReLU(Σ_k W[c,k]/S · x_k).
type linearProbe struct {
	nn.Base
	fc   *nn.Linear
	spec Spec
}

func newLinearProbe(w []float32, channels, classes int) *linearProbe {
	p := &linearProbe{spec: Spec{Arch: "probe", InChannels: channels, Classes: classes}}
	p.fc = nn.Child(p, "fc", nn.NewLinear(nil, channels, classes, true))
	copy(p.fc.Weight.Data(), w)
	return p
}

func (p *linearProbe) Features(x *tensor.Tensor, tap Tap) *tensor.Tensor { return callTap(tap, "x", x) }
func (p *linearProbe) Pool(f *tensor.Tensor) *tensor.Tensor {
	return tensor.Reshape(tensor.Mean(f, []int{2, 3}, false), f.Size(0), f.Size(1))
}
func (p *linearProbe) Head(f *tensor.Tensor) *tensor.Tensor    { return p.fc.Forward(p.Pool(f)) }
func (p *linearProbe) Forward(x *tensor.Tensor) *tensor.Tensor { return p.Head(x) }
func (p *linearProbe) Linear() *nn.Linear                      { return p.fc }
func (p *linearProbe) TapLayers() []string                     { return []string{"x"} }
func (p *linearProbe) CAMLayer() string                        { return "x" }
func (p *linearProbe) Spec() Spec                              { return p.spec }

// TestSliceHeatmapStacking checks the stacked heatmap of the linear probe
// voxel by voxel against its closed form, in a volume with rows ≠ columns
// so that a transposed or misordered slice would show, and the geometry.
func TestSliceHeatmapStacking(t *testing.T) {
	// Two channels carrying the same slice: Σ_k W[1,k] = 0.5 + 1.5 = 2.
	p := newLinearProbe([]float32{1, -1, 0.5, 1.5}, 2, 2)
	v := testVolume(5, 3, 4)
	cfg := SliceConfig{Window: volume.WindowLevel{Center: 0, Width: 4000}, Mean: 0.5, Batch: 3}
	h, err := ComputeSliceHeatmap(p, v, cfg, cam.Options{Method: cam.GradCAM, Classes: []int{1}})
	if err != nil {
		t.Fatal(err)
	}
	if h.Heat.Dims != v.Dims || h.Heat.Spacing != v.Spacing || h.Heat.Origin != v.Origin || h.Heat.Direction != v.Direction {
		t.Fatalf("heat geometry %v %v %v, scan %v %v %v", h.Heat.Dims, h.Heat.Spacing, h.Heat.Origin, v.Dims, v.Spacing, v.Origin)
	}
	if h.Layer != "x" || len(h.Classes) != 4 || len(h.Scores) != 4 {
		t.Fatalf("layer %q, classes %v, scores %v", h.Layer, h.Classes, h.Scores)
	}
	const s = 15.0
	for k := 0; k < 4; k++ {
		for j := 0; j < 3; j++ {
			for i := 0; i < 5; i++ {
				x := (float64(v.At(i, j, k))+2000)/4000 - 0.5
				want := math.Max(0, 2*x/s)
				if got := float64(h.Heat.At(i, j, k)); math.Abs(got-want) > 1e-6 {
					t.Fatalf("heat(%d, %d, %d) = %v, want %v", i, j, k, got, want)
				}
			}
		}
	}
	// Two classes, or a 1-D layer, are refused.
	if _, err := ComputeSliceHeatmap(p, v, cfg, cam.Options{Method: cam.GradCAM, Classes: []int{0, 1}}); err == nil {
		t.Error("two classes accepted")
	}
	rf, err := Build(Spec{Arch: "resformer-ti", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"depth":1,"patch":4}`)}, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ComputeSliceHeatmap(rf, testVolume(8, 8, 1), SliceConfig{}, cam.Options{Method: cam.CAM, Layer: "norm"}); err == nil || !strings.Contains(err.Error(), "not 2D") {
		t.Errorf("CAM on ResFormer tokens: error %v", err)
	}
}

// TestSliceHeatmapResFormer runs the default Grad-CAM of a small
// ResFormer over a scan with a resize: the maps have the scan's size, are
// non-negative and not all zero (the gradient reaches the explained layer).
func TestSliceHeatmapResFormer(t *testing.T) {
	m, err := Build(Spec{Arch: "resformer-ti", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"depth":2,"patch":4}`)}, 8)
	if err != nil {
		t.Fatal(err)
	}
	v := testVolume(10, 14, 3)
	h, err := ComputeSliceHeatmap(m, v, SliceConfig{Window: volume.LungWindow, Size: [2]int{16, 12}}, cam.Options{Method: cam.GradCAM})
	if err != nil {
		t.Fatal(err)
	}
	if h.Layer != "blocks.1.norm1" {
		t.Errorf("layer %q, want blocks.1.norm1", h.Layer)
	}
	for k := 0; k < 3; k++ {
		peak := float32(0)
		for _, x := range h.Heat.Voxels[k*140 : (k+1)*140] {
			if x < 0 {
				t.Fatalf("slice %d: negative Grad-CAM value %v", k, x)
			}
			peak = max(peak, x)
		}
		if peak == 0 {
			t.Errorf("slice %d: all-zero map", k)
		}
	}
}
