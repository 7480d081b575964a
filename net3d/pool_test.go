package net3d

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// lseByHand computes the LSEPoolLinear logits in float64 from the formula.
func lseByHand(f *tensor.Tensor, fc *nn.Linear, r float64) [][]float64 {
	n, c := f.Size(0), f.Size(1)
	p := f.Len() / (n * c)
	w, b := fc.Weight.Data(), fc.Bias.Data()
	k := fc.Weight.Size(0)
	out := make([][]float64, n)
	for i := 0; i < n; i++ {
		out[i] = make([]float64, k)
		for cl := 0; cl < k; cl++ {
			sum := 0.0
			for q := 0; q < p; q++ {
				s := float64(b[cl])
				for ch := 0; ch < c; ch++ {
					s += float64(w[cl*c+ch]) * float64(f.Data()[(i*c+ch)*p+q])
				}
				sum += math.Exp(r * s)
			}
			out[i][cl] = math.Log(sum/float64(p)) / r
		}
	}
	return out
}

func TestLSEPoolLinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 2))
	fc := nn.NewLinear(rng, 5, 3, true)
	f := tensortest.Rand(rng, 2, 5, 3, 4, 2)
	for i, v := range f.Data() {
		f.Data()[i] = 4 * v // scores of a few units, so that r matters
	}
	for _, r := range []float64{0.5, 5, 20} {
		got := LSEPoolLinear(f, nil, fc, r)
		want := lseByHand(f, fc, r)
		if !tensor.SameShape(got.Shape(), []int{2, 3}) {
			t.Fatalf("shape %v", got.Shape())
		}
		for i := range want {
			for c := range want[i] {
				if d := math.Abs(float64(got.At(i, c)) - want[i][c]); d > 1e-5*math.Max(1, math.Abs(want[i][c])) {
					t.Errorf("r %g: logit (%d,%d) %v, want %v", r, i, c, got.At(i, c), want[i][c])
				}
			}
		}
	}
	// r → 0 is average pooling; large r the maximum score.
	avg := GlobalPoolLinear(f, nil, fc)
	if err := tensortest.AllClose(LSEPoolLinear(f, nil, fc, 1e-4), avg, 1e-3, 1e-3); err != nil {
		t.Errorf("r → 0 against average pooling: %v", err)
	}
	sharp := LSEPoolLinear(f, nil, fc, 100)
	for i := 0; i < 2; i++ {
		for c := 0; c < 3; c++ {
			best := math.Inf(-1)
			p := f.Len() / (2 * 5)
			for q := 0; q < p; q++ {
				s := float64(fc.Bias.Data()[c])
				for ch := 0; ch < 5; ch++ {
					s += float64(fc.Weight.Data()[c*5+ch]) * float64(f.Data()[(i*5+ch)*p+q])
				}
				best = math.Max(best, s)
			}
			// max − log(P)/r ≤ LSE ≤ max
			if v := float64(sharp.At(i, c)); v > best+1e-4 || v < best-math.Log(float64(p))/100-1e-4 {
				t.Errorf("r 100: logit (%d,%d) %v, max score %v", i, c, v, best)
			}
		}
	}
	tensortest.GradCheck(t, "LSEPoolLinear", func(in []*tensor.Tensor) *tensor.Tensor {
		return LSEPoolLinear(in[0], nil, &nn.Linear{Weight: in[1], Bias: in[2]}, 3)
	}, []*tensor.Tensor{f.Clone(), fc.Weight.Clone(), fc.Bias.Clone()}, tensortest.GradCheckOpts{Eps: 1e-3})
}

// TestCovidNet3DLSEHead: a covidnet3d-small with pool "lse" scores what
// LSEPoolLinear of its feature map scores, and round-trips its config.
func TestCovidNet3DLSEHead(t *testing.T) {
	cfg := json.RawMessage(`{"width_stages":[8,8],"n_cell_stages":[1,1],"stride_stages":[2,1],"feature_mix":16,"pool":"lse","pool_r":4}`)
	m, err := Build(Spec{Arch: "covidnet3d-small", InChannels: 1, Classes: 3, Config: cfg}, 3)
	if err != nil {
		t.Fatal(err)
	}
	nn.SetTraining(m, false)
	x := tensortest.Rand(rand.New(rand.NewPCG(1, 5)), 2, 1, 8, 16, 16)
	f := m.Features(x, nil)
	got := m.Head(f)
	want := LSEPoolLinear(f, nil, m.Linear(), 4)
	if err := tensortest.AllClose(got, want, 0, 0); err != nil {
		t.Error(err)
	}
	if err := tensortest.AllClose(got, GlobalPoolLinear(f, nil, m.Linear()), 0, 1e-6); err == nil {
		t.Error("the lse head scores as average pooling does")
	}
	var back CovidNet3DConfig
	if err := json.Unmarshal(m.Spec().Config, &back); err != nil || back.Pool != "lse" || back.PoolR != 4 {
		t.Errorf("spec config %s: %v", m.Spec().Config, err)
	}
}
