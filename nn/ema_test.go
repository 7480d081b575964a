package nn

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/tensor"
)

func emaModel() (*Sequential, *Linear, *BatchNorm) {
	rng := rand.New(rand.NewPCG(1, 1))
	l := NewLinear(rng, 2, 1, true)
	bn := NewBatchNorm(1, BatchNormOpts{})
	copy(l.Weight.Data(), []float32{1, 2})
	l.Bias.Data()[0] = 3
	bn.RunningMean.Data()[0] = 10
	return NewSequential(l, bn), l, bn
}

// setEMAValues sets every parameter and buffer of the model to v (the
// counter to k).
func setEMAValues(l *Linear, bn *BatchNorm, v float32, k float32) {
	Constant(l.Weight, v)
	Constant(l.Bias, v)
	Constant(bn.Weight, v)
	Constant(bn.Bias, v)
	Constant(bn.RunningMean, v)
	Constant(bn.RunningVar, v)
	bn.NumBatchesTracked.Data()[0] = k
}

func TestEMAFormula(t *testing.T) {
	m, l, bn := emaModel()
	e := NewEMA(m, 0.9, EMAOpts{})
	setEMAValues(l, bn, 0, 1)
	e.Update()
	setEMAValues(l, bn, 0, 2)
	e.Update()
	// shadow = 0.9²·initial + 0 for averaged tensors; counter copied.
	want := map[string][]float32{
		"0.weight": {0.81, 1.62}, "0.bias": {2.43}, "1.weight": {0.81}, "1.bias": {0},
		"1.running_mean": {8.1}, "1.running_var": {0.81}, "1.num_batches_tracked": {2},
	}
	for _, s := range e.State() {
		w := want[s.Name]
		if len(w) != s.Tensor.Len() {
			t.Fatalf("%s: %d values, want %d", s.Name, s.Tensor.Len(), len(w))
		}
		for i, v := range s.Tensor.Data() {
			if !closeTo(float64(v), float64(w[i]), 1e-6) {
				t.Errorf("%s[%d] = %v, want %v", s.Name, i, v, w[i])
			}
		}
	}
	if e.Updates() != 2 {
		t.Errorf("Updates = %d", e.Updates())
	}

	// Apply swaps the averages in, Restore swaps the trained values back.
	e.Apply()
	if got := l.Weight.Data()[1]; !closeTo(float64(got), 1.62, 1e-6) {
		t.Errorf("applied weight %v, want 1.62", got)
	}
	e.Apply() // no-op
	e.Restore()
	if got := l.Weight.Data()[1]; got != 0 {
		t.Errorf("restored weight %v, want 0", got)
	}
	e.Restore() // no-op
	if got := l.Weight.Data()[1]; got != 0 {
		t.Errorf("second Restore changed weight to %v", got)
	}
}

func TestEMAWarmupAndCopyBuffers(t *testing.T) {
	m, l, bn := emaModel()
	e := NewEMA(m, 0.99, EMAOpts{Warmup: true, CopyBuffers: true})
	// Decays min(0.99, (1+n)/(10+n)): 0.1, 2/11, 0.25.
	wantDecay := []float64{0.1, 2.0 / 11, 0.25}
	shadow := 3.0 // bias starts at 3
	for n, d := range wantDecay {
		if got := e.CurrentDecay(); !closeTo(got, d, 1e-15) {
			t.Errorf("update %d: decay %v, want %v", n, got, d)
		}
		v := float32(n + 1)
		setEMAValues(l, bn, v, 0)
		e.Update()
		shadow = d*shadow + (1-d)*float64(v)
	}
	st := e.State()
	for _, s := range st {
		switch s.Name {
		case "0.bias":
			if !closeTo(float64(s.Tensor.Data()[0]), shadow, 1e-6) {
				t.Errorf("bias shadow %v, want %v", s.Tensor.Data()[0], shadow)
			}
		case "1.running_mean", "1.running_var":
			if s.Tensor.Data()[0] != 3 {
				t.Errorf("%s = %v, want the copied 3", s.Name, s.Tensor.Data()[0])
			}
		}
	}
	// Decay is capped by Decay once (1+n)/(10+n) exceeds it.
	e2 := NewEMA(m, 0.5, EMAOpts{Warmup: true})
	for range 20 {
		e2.Update()
	}
	if d := e2.CurrentDecay(); d != 0.5 {
		t.Errorf("capped decay %v, want 0.5", d)
	}

	// Resume: a fresh EMA loaded from State continues identically.
	e3 := NewEMA(m, 0.99, EMAOpts{Warmup: true, CopyBuffers: true})
	if err := e3.LoadState(st, e.Updates()); err != nil {
		t.Fatal(err)
	}
	setEMAValues(l, bn, 7, 0)
	e.Update()
	e3.Update()
	a, b := e.State(), e3.State()
	for i := range a {
		if a[i].Tensor.Data()[0] != b[i].Tensor.Data()[0] {
			t.Errorf("resumed %s = %v, want %v", a[i].Name, b[i].Tensor.Data()[0], a[i].Tensor.Data()[0])
		}
	}
}

func TestEMALoadStateErrors(t *testing.T) {
	m, _, _ := emaModel()
	e := NewEMA(m, 0.9, EMAOpts{})
	st := e.State()
	cases := []struct {
		name  string
		state []Named
		want  string
	}{
		{"missing", st[1:], "missing 0.weight"},
		{"unexpected", append(append([]Named{}, st...), Named{"extra", tensor.Zeros(1)}), "unexpected extra"},
		{"shape", append([]Named{{"0.weight", tensor.Zeros(2)}}, st[1:]...), "load state 0.weight: shape [1 2], state has [2]"},
	}
	for _, c := range cases {
		if err := e.LoadState(c.state, 0); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}
