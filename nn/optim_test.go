package nn

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/tensor"
)

// optStep holds the parameters after one optimizer step.
type optStep struct {
	w []float64
	b float64
}

// Reference values printed by testdata/optim_ref.py (torch.optim, PyTorch
// 1.13, float32). The first SGD-Nesterov value worked by hand:
// g = 1·1 + 0.01·1 = 1.01, buf = g, g' = g + 0.9·buf = 1.919,
// w = 1 − 0.1·1.919 = 0.8081.
var optimRef = map[string][]optStep{
	"sgd_nesterov": {
		{w: []float64{0.808099985, -1.80620003, 0.309049994}, b: 0.129000008},
		{w: []float64{0.57121563, -1.54855931, 0.109618813}, b: -0.0174299981},
		{w: []float64{0.321859717, -1.24953175, -0.0558255389}, b: -0.104451902},
	},
	"sgd_dampening": {
		{w: []float64{0.898999989, -1.898, 0.399500012}, b: 0.210000008},
		{w: []float64{0.762700498, -1.75780106, 0.268900275}, b: 0.0975000039},
		{w: []float64{0.601514578, -1.58679807, 0.124336027}, b: -0.0183749925},
	},
	"sgd_plain": {
		{w: []float64{0.899999976, -1.89999998, 0.400000006}, b: 0.210000008},
		{w: []float64{0.810000002, -1.80499995, 0.319999993}, b: 0.147000015},
		{w: []float64{0.728999972, -1.71474993, 0.255999982}, b: 0.102900013},
	},
	"adam": {
		{w: []float64{0.99000001, -1.99000001, 0.49000001}, b: 0.290000021},
		{w: []float64{0.98000443, -1.98000216, 0.480009168}, b: 0.280015945},
		{w: []float64{0.970016241, -1.9700079, 0.470033705}, b: 0.27005899},
	},
	"adamw": {
		{w: []float64{0.989000022, -1.98800004, 0.489500016}, b: 0.290000021},
		{w: []float64{0.978015959, -1.97601473, 0.479020149}, b: 0.280015945},
		{w: []float64{0.96705097, -1.96404564, 0.468566984}, b: 0.27005899},
	},
}

func optParams() (w, b *tensor.Tensor, params []Named) {
	w = tensor.New([]float32{1, -2, 0.5}, 3).SetRequiresGrad(true)
	b = tensor.New([]float32{0.3}, 1).SetRequiresGrad(true)
	return w, b, []Named{{"fc.weight", w}, {"fc.bias", b}}
}

// setQuadGrads sets the gradients of Σ c·p²/2 (c = [1, 0.5, 2] for w, 3 for b).
func setQuadGrads(w, b *tensor.Tensor) {
	cw := []float32{1, 0.5, 2}
	g := make([]float32, 3)
	for i, v := range w.Data() {
		g[i] = cw[i] * v
	}
	w.SetGrad(tensor.New(g, 3))
	b.SetGrad(tensor.New([]float32{3 * b.Data()[0]}, 1))
}

func newRefOptimizer(t *testing.T, name string, params []Named) Optimizer {
	t.Helper()
	noBias := NameContains("bias")
	var o Optimizer
	var err error
	switch name {
	case "sgd_nesterov":
		o, err = NewSGD(params, SGDConfig{LR: 0.1, Momentum: 0.9, Nesterov: true, WeightDecay: 0.01, NoDecay: noBias})
	case "sgd_dampening":
		o, err = NewSGD(params, SGDConfig{LR: 0.1, Momentum: 0.9, Dampening: 0.5, WeightDecay: 0.01, NoDecay: noBias})
	case "sgd_plain":
		o, err = NewSGD(params, SGDConfig{LR: 0.1})
	case "adam":
		o, err = NewAdam(params, AdamConfig{LR: 0.01, Beta1: 0.8, Beta2: 0.95, WeightDecay: 0.1, NoDecay: noBias})
	case "adamw":
		o, err = NewAdamW(params, AdamConfig{LR: 0.01, Beta1: 0.8, Beta2: 0.95, WeightDecay: 0.1, NoDecay: noBias})
	}
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func closeTo(a, b, tol float64) bool { return math.Abs(a-b) <= tol*math.Max(1, math.Abs(b)) }

func TestOptimizersMatchPyTorch(t *testing.T) {
	for name, steps := range optimRef {
		t.Run(name, func(t *testing.T) {
			w, b, params := optParams()
			o := newRefOptimizer(t, name, params)
			for s, want := range steps {
				setQuadGrads(w, b)
				o.Step()
				for i, v := range w.Data() {
					if !closeTo(float64(v), want.w[i], 2e-6) {
						t.Errorf("step %d: w[%d] = %.9g, want %.9g", s+1, i, v, want.w[i])
					}
				}
				if v := b.Data()[0]; !closeTo(float64(v), want.b, 2e-6) {
					t.Errorf("step %d: bias = %.9g, want %.9g", s+1, v, want.b)
				}
			}
		})
	}
}

// TestOptimizerResume checks that State/LoadState carry an optimizer across
// a restart: one step, save, fresh optimizer, load, two more steps must
// give PyTorch's third-step values.
func TestOptimizerResume(t *testing.T) {
	for name, steps := range optimRef {
		t.Run(name, func(t *testing.T) {
			w, b, params := optParams()
			o := newRefOptimizer(t, name, params)
			setQuadGrads(w, b)
			o.Step()
			state := o.State()
			o2 := newRefOptimizer(t, name, params)
			if err := o2.LoadState(state); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				setQuadGrads(w, b)
				o2.Step()
			}
			want := steps[2]
			for i, v := range w.Data() {
				if !closeTo(float64(v), want.w[i], 2e-6) {
					t.Errorf("w[%d] = %.9g, want %.9g", i, v, want.w[i])
				}
			}
			if v := b.Data()[0]; !closeTo(float64(v), want.b, 2e-6) {
				t.Errorf("bias = %.9g, want %.9g", v, want.b)
			}
		})
	}
}

func TestOptimizerStateNames(t *testing.T) {
	w, b, params := optParams()
	sgd, _ := NewSGD(params, SGDConfig{LR: 0.1, Momentum: 0.9})
	adam, _ := NewAdamW(params, AdamConfig{LR: 0.1})
	setQuadGrads(w, b)
	sgd.Step()
	adam.Step()
	names := func(ns []Named) string {
		var s []string
		for _, n := range ns {
			s = append(s, fmt.Sprint(n.Name, n.Tensor.Shape()))
		}
		return strings.Join(s, " ")
	}
	if got, want := names(sgd.State()), "fc.weight.momentum_buffer[3] fc.bias.momentum_buffer[1]"; got != want {
		t.Errorf("SGD state %q, want %q", got, want)
	}
	st := adam.State()
	if got, want := names(st), "fc.weight.step[] fc.weight.exp_avg[3] fc.weight.exp_avg_sq[3] fc.bias.step[] fc.bias.exp_avg[1] fc.bias.exp_avg_sq[1]"; got != want {
		t.Errorf("AdamW state %q, want %q", got, want)
	}
	if st[0].Tensor.Item() != 1 {
		t.Errorf("step = %v, want 1", st[0].Tensor.Item())
	}
	// Gradient of w[0] is 1: exp_avg = 0.1·1, exp_avg_sq = 0.001·1.
	if m, v := st[1].Tensor.Data()[0], st[2].Tensor.Data()[0]; !closeTo(float64(m), 0.1, 1e-6) || !closeTo(float64(v), 0.001, 1e-6) {
		t.Errorf("exp_avg %v, exp_avg_sq %v; want 0.1, 0.001", m, v)
	}
}

func TestOptimizerSkipsNilGradAndZeroGrad(t *testing.T) {
	w, b, params := optParams()
	o, err := NewAdam(params, AdamConfig{LR: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	w.SetGrad(tensor.Ones(3))
	o.Step()
	if b.Data()[0] != 0.3 {
		t.Errorf("bias without gradient changed to %v", b.Data()[0])
	}
	// First Adam step moves every element by lr·sign(g) (m̂/√v̂ = ±1).
	if got := w.Data()[0]; !closeTo(float64(got), 0.9, 1e-6) {
		t.Errorf("w[0] = %v, want 0.9", got)
	}
	if n := len(o.State()); n != 3 {
		t.Errorf("%d state tensors, want 3 (bias never stepped)", n)
	}
	o.ZeroGrad()
	if w.Grad() != nil {
		t.Error("ZeroGrad left a gradient")
	}
}

func TestOptimizerErrors(t *testing.T) {
	w, _, params := optParams()
	cases := []struct {
		name string
		make func() error
		want string
	}{
		{"nesterov without momentum", func() error { _, err := NewSGD(params, SGDConfig{LR: 0.1, Nesterov: true}); return err }, "Nesterov"},
		{"negative lr", func() error { _, err := NewSGD(params, SGDConfig{LR: -1}); return err }, "learning rate -1"},
		{"bad beta", func() error { _, err := NewAdam(params, AdamConfig{LR: 1, Beta1: 1}); return err }, "betas (1, 0.999)"},
		{"duplicate tensor", func() error {
			_, err := NewAdam([]Named{{"a", w}, {"b", w}}, AdamConfig{LR: 1})
			return err
		}, `"a" and "b" are the same tensor`},
		{"duplicate name", func() error {
			_, err := NewSGD([]Named{{"a", w}, {"a", tensor.Zeros(1)}}, SGDConfig{LR: 1})
			return err
		}, `"a" given twice`},
		{"unknown state", func() error {
			o, _ := NewSGD(params, SGDConfig{LR: 1, Momentum: 0.9})
			return o.LoadState([]Named{{"fc.nope.momentum_buffer", tensor.Zeros(3)}})
		}, `no parameter "fc.nope"`},
		{"bad state suffix", func() error {
			o, _ := NewSGD(params, SGDConfig{LR: 1, Momentum: 0.9})
			return o.LoadState([]Named{{"fc.weight.exp_avg", tensor.Zeros(3)}})
		}, "unknown state name"},
		{"state shape", func() error {
			o, _ := NewAdam(params, AdamConfig{LR: 1})
			return o.LoadState([]Named{{"fc.weight.exp_avg", tensor.Zeros(4)}})
		}, "load state fc.weight.exp_avg: shape [3], state has [4]"},
		{"incomplete adam state", func() error {
			o, _ := NewAdam(params, AdamConfig{LR: 1})
			return o.LoadState([]Named{{"fc.weight.exp_avg", tensor.Zeros(3)}})
		}, `parameter "fc.weight" needs step, exp_avg and exp_avg_sq`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.make()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestDecayFilters(t *testing.T) {
	f := NameContains("bn", "bias")
	for name, want := range map[string]bool{"layer1.0.bn1.weight": true, "fc.bias": true, "conv1.weight": false} {
		if got := f(name, tensor.Zeros(2, 2)); got != want {
			t.Errorf("NameContains(%q) = %v, want %v", name, got, want)
		}
	}
	if !SkipOneDim("x", tensor.Zeros(4)) || SkipOneDim("x", tensor.Zeros(4, 1)) {
		t.Error("SkipOneDim wrong")
	}
}

func TestClipGradNorm(t *testing.T) {
	a := tensor.Zeros(2).SetRequiresGrad(true)
	b := tensor.Zeros(1).SetRequiresGrad(true)
	c := tensor.Zeros(1).SetRequiresGrad(true) // no gradient
	a.SetGrad(tensor.New([]float32{3, 4}, 2))
	b.SetGrad(tensor.New([]float32{12}, 1))
	params := []Named{{"a", a}, {"b", b}, {"c", c}}
	// Total norm √(9 + 16 + 144) = 13; coefficient 6.5/(13 + 1e-6).
	total := ClipGradNorm(params, 6.5)
	if !closeTo(total, 13, 1e-9) {
		t.Errorf("total norm %v, want 13", total)
	}
	coef := 6.5 / (13 + 1e-6)
	want := []float64{3 * coef, 4 * coef, 12 * coef}
	got := []float32{a.Grad().Data()[0], a.Grad().Data()[1], b.Grad().Data()[0]}
	for i := range want {
		if !closeTo(float64(got[i]), want[i], 1e-6) {
			t.Errorf("clipped grad %d = %v, want %v", i, got[i], want[i])
		}
	}
	// Below the limit nothing changes.
	if total := ClipGradNorm(params, 100); !closeTo(total, 6.5, 1e-6) {
		t.Errorf("second total %v, want 6.5", total)
	}
	if g := a.Grad().Data()[0]; !closeTo(float64(g), 3*coef, 1e-6) {
		t.Errorf("unclipped gradient changed to %v", g)
	}
}

func TestSchedules(t *testing.T) {
	cos := WarmupCosineLR(1, 0.1, 4, 14)
	sl := StepLR(0.5, 0.1, 3)
	cases := []struct {
		name string
		got  float64
		want float64
	}{
		{"constant", ConstantLR(0.3)(1000), 0.3},
		{"warmup 0", cos(0), 0.25},
		{"warmup 2", cos(2), 0.75},
		{"warmup end", cos(4), 1},
		// (s−w)/(T−w) = 5/10: cos(π/2) = 0, so 0.1 + 0.9/2.
		{"cosine middle", cos(9), 0.55},
		// 1/10: 0.1 + 0.9·(1 + cos(0.1π))/2 = 0.1 + 0.45·1.9510565163
		{"cosine 5", cos(5), 0.1 + 0.45*1.9510565162951535},
		{"cosine end", cos(14), 0.1},
		{"after end", cos(100), 0.1},
		{"step 0", sl(0), 0.5},
		{"step 2", sl(2), 0.5},
		{"step 3", sl(3), 0.05},
		{"step 7", sl(7), 0.005},
		{"no warmup start", WarmupCosineLR(2, 0, 0, 10)(0), 2},
	}
	for _, c := range cases {
		if !closeTo(c.got, c.want, 1e-12) {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
}
