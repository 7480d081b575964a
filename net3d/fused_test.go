package net3d

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// TestFusedInferenceMatchesUnfused runs every family in evaluation mode
// twice: with frozen parameters (the fused path: convolutions with their
// BatchNorm, ReLU/ReLU6 and residual addition in one pass) and with
// parameters requiring gradients (every module unfused, recording a graph,
// as in Grad-CAM). Logits and every tap output must agree within 1e-5 of
// their largest magnitude, and the fused outputs must not require
// gradients. BatchNorm parameters and running statistics are drawn at
// random so that folding them is far from the identity.
func TestFusedInferenceMatchesUnfused(t *testing.T) {
	cfg := func(v any) json.RawMessage {
		b, _ := json.Marshal(v)
		return b
	}
	smallDense := map[string]any{"growth_rate": 8, "bn_size": 4, "init_features": 16, "block_config": []int{2, 3, 2, 2}}
	cases := []struct {
		spec  Spec
		input []int
	}{
		{Spec{Arch: "resnet3d-18", InChannels: 1, Classes: 3, Config: cfg(map[string]any{"shortcut": "B", "conv1_t_size": 7, "conv1_t_stride": 1, "widen_factor": 0.25})}, []int{2, 1, 8, 24, 24}},
		{Spec{Arch: "resnet3d-50", InChannels: 1, Classes: 3, Config: cfg(map[string]any{"shortcut": "B", "conv1_t_size": 7, "conv1_t_stride": 1, "widen_factor": 0.125})}, []int{1, 1, 8, 24, 24}},
		{Spec{Arch: "resnet3d-10", InChannels: 2, Classes: 3, Config: cfg(map[string]any{"shortcut": "A", "conv1_t_size": 3, "conv1_t_stride": 1, "widen_factor": 0.25, "no_max_pool": true})}, []int{1, 2, 8, 16, 16}},
		{Spec{Arch: "medicalnet-resnet-10", InChannels: 1, Classes: 2}, []int{1, 1, 8, 16, 16}},
		{Spec{Arch: "r3d_18", InChannels: 3, Classes: 4}, []int{1, 3, 4, 16, 16}},
		{Spec{Arch: "mc3_18", InChannels: 3, Classes: 4}, []int{1, 3, 4, 16, 16}},
		{Spec{Arch: "r2plus1d_18", InChannels: 3, Classes: 4}, []int{1, 3, 4, 16, 16}},
		{Spec{Arch: "densenet3d-121", InChannels: 1, Classes: 3, Config: cfg(smallDense)}, []int{1, 1, 32, 32, 32}},
		{Spec{Arch: "hara-densenet3d-121", InChannels: 1, Classes: 3, Config: cfg(smallDense)}, []int{1, 1, 16, 32, 32}},
		{Spec{Arch: "covidnet3d-small", InChannels: 1, Classes: 3}, []int{2, 1, 16, 32, 32}},
		{Spec{Arch: "covidnet3d", InChannels: 1, Classes: 3, Config: cfg(map[string]any{
			"width_stages": []int{8, 16, 16, 24}, "n_cell_stages": []int{3, 4, 2, 3}, "stride_stages": []int{2, 2, 1, 2},
			"ops":         [][]string{{"identity", "mb3_e6", "mb3_e4"}, {"zero", "mb3_e3", "zero", "mb7_e3"}, {"mb7_e4", "mb5_e4"}, {"mb5_e3", "identity", "zero2"}},
			"first_width": 16, "first_cell_width": 8, "feature_mix": 32, "dropout": 0.5, "width_mult": 1, "bn_eps": 1e-3, "bn_momentum": 0.1,
		})}, []int{2, 1, 16, 32, 32}},
	}
	for i, c := range cases {
		t.Run(c.spec.Arch, func(t *testing.T) {
			m, err := Build(c.spec, uint64(i+1))
			if err != nil {
				t.Fatal(err)
			}
			randomiseBatchNorms(m, uint64(100+i))
			nn.SetTraining(m, false)
			rng := rand.New(rand.NewPCG(uint64(i), 3))
			x := tensor.Zeros(c.input...)
			for j := range x.Data() {
				x.Data()[j] = float32(rng.NormFloat64())
			}
			run := func() (*tensor.Tensor, map[string]*tensor.Tensor) {
				taps := map[string]*tensor.Tensor{}
				var logits *tensor.Tensor
				err := tensor.Catch(func() {
					f := m.Features(x, func(layer string, out *tensor.Tensor) *tensor.Tensor {
						taps[layer] = out
						return out
					})
					logits = m.Head(f)
				})
				if err != nil {
					t.Fatal(err)
				}
				return logits, taps
			}
			nn.SetRequiresGrad(m, true)
			want, wantTaps := run()
			if !want.RequiresGrad() {
				t.Fatal("unfused logits do not require gradients")
			}
			nn.SetRequiresGrad(m, false)
			got, gotTaps := run()
			if got.RequiresGrad() {
				t.Error("fused logits require gradients")
			}
			if err := closeRel(got, want, 1e-5); err != nil {
				t.Errorf("logits: %v", err)
			}
			if len(gotTaps) != len(m.TapLayers()) || len(wantTaps) != len(gotTaps) {
				t.Fatalf("taps %d fused, %d unfused, want %d", len(gotTaps), len(wantTaps), len(m.TapLayers()))
			}
			for _, name := range m.TapLayers() {
				if err := closeRel(gotTaps[name], wantTaps[name], 1e-5); err != nil {
					t.Errorf("tap %s: %v", name, err)
				}
			}
			// Forward (no taps) is the same as Head(Features(x, tap)).
			if err := closeRel(m.Forward(x), want, 1e-5); err != nil {
				t.Errorf("Forward: %v", err)
			}
		})
	}
}

// randomiseBatchNorms draws every BatchNorm's weight, bias and running
// statistics.
func randomiseBatchNorms(m nn.Module, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 17))
	for _, nm := range nn.NamedModules(m) {
		bn, ok := nm.Module.(*nn.BatchNorm)
		if !ok {
			continue
		}
		for c := range bn.Channels {
			bn.Weight.Data()[c] = float32(0.5 + rng.Float64())
			bn.Bias.Data()[c] = float32(0.3 * rng.NormFloat64())
			bn.RunningMean.Data()[c] = float32(0.3 * rng.NormFloat64())
			bn.RunningVar.Data()[c] = float32(0.4 + 1.2*rng.Float64())
		}
	}
}

// closeRel reports whether max|got − want| ≤ tol·max|want| (tol when want
// is all zero) and shapes agree.
func closeRel(got, want *tensor.Tensor, tol float64) error {
	if got == nil || want == nil || !tensor.SameShape(got.Shape(), want.Shape()) {
		return fmt.Errorf("got %v, want %v", got, want)
	}
	scale, worst, wi := 0.0, 0.0, 0
	for _, v := range want.Data() {
		scale = math.Max(scale, math.Abs(float64(v)))
	}
	for i, v := range want.Data() {
		if d := math.Abs(float64(got.Data()[i]) - float64(v)); d > worst || math.IsNaN(d) {
			worst, wi = d, i
		}
	}
	if worst > tol*math.Max(scale, 1e-30) || math.IsNaN(worst) {
		return fmt.Errorf("element %d of %v: got %v, want %v (max |diff| %.3g, max |want| %.3g)",
			wi, want.Shape(), got.Data()[wi], want.Data()[wi], worst, scale)
	}
	return nil
}
