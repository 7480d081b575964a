package train

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// mixBatch computes λ·x_i + (1−λ)·x_π(i); values worked by hand.
func TestMixBatch(t *testing.T) {
	x := tensor.New([]float32{1, 2, 3, 4}, 2, 2)
	out, yb := mixBatch(x, []int{0, 1}, []int{1, 0}, 0.25)
	want := []float32{0.25*1 + 0.75*3, 0.25*2 + 0.75*4, 0.25*3 + 0.75*1, 0.25*4 + 0.75*2}
	if !reflect.DeepEqual(out.Data(), want) || !reflect.DeepEqual(yb, []int{1, 0}) {
		t.Fatalf("mixed %v labels %v, want %v [1 0]", out.Data(), yb, want)
	}
	if !reflect.DeepEqual(x.Data(), []float32{1, 2, 3, 4}) {
		t.Fatal("input modified")
	}
}

// newTestTrainer builds a trainer over six items labelled 0 0 1 2 2 2.
func newTestTrainer(t *testing.T, edit func(r *Recipe)) *trainer {
	t.Helper()
	r := validRecipe()
	r.Model.Classes = 3
	edit(&r)
	tr := &trainer{r: r, classes: []string{"a", "b", "c"}}
	for i, l := range []int{0, 0, 1, 2, 2, 2} {
		tr.items = append(tr.items, scanItem{label: l})
		tr.trainIdx = append(tr.trainIdx, i)
	}
	if err := tr.buildModel(); err != nil {
		t.Fatal(err)
	}
	if err := tr.buildLoss(); err != nil {
		t.Fatal(err)
	}
	return tr
}

// With a zero gradient, an SGD step with weight decay wd and rate lr
// scales a decayed parameter by 1 − lr·wd and leaves an exempt one alone;
// biases and BatchNorm weights are exempt unless DecayAll.
func TestWeightDecayExclusions(t *testing.T) {
	for _, all := range []bool{false, true} {
		tr := newTestTrainer(t, func(r *Recipe) {
			r.Optimizer, r.LR, r.Momentum, r.WeightDecay, r.DecayAll = "sgd", 0.1, 0, 0.5, all
		})
		before := map[string][]float32{}
		for _, p := range tr.params {
			before[p.Name] = append([]float32(nil), p.Tensor.Data()...)
			p.Tensor.SetGrad(tensor.ZerosLike(p.Tensor))
		}
		tr.opt.Step()
		exempt := map[string]bool{"bn1.weight": true, "bn1.bias": true, "bn2.weight": true, "bn2.bias": true, "fc.bias": true}
		for _, p := range tr.params {
			f := 1 - 0.1*0.5
			if exempt[p.Name] && !all {
				f = 1
			}
			for i, v := range p.Tensor.Data() {
				if w := float64(before[p.Name][i]) * f; math.Abs(float64(v)-w) > 1e-6*math.Abs(w) {
					t.Fatalf("decay_all=%v: %s[%d] = %v, want %v", all, p.Name, i, v, w)
				}
			}
		}
	}
}

// Balanced class weights are n/(K·n_c): 6/(3·2), 6/(3·1), 6/(3·3).
func TestClassWeights(t *testing.T) {
	tr := newTestTrainer(t, func(r *Recipe) { r.BalanceClasses = true })
	want := []float32{1, 2, float32(6.0 / 9)}
	if !reflect.DeepEqual(tr.ce.Weight, want) {
		t.Fatalf("balanced weights %v, want %v", tr.ce.Weight, want)
	}
	tr = newTestTrainer(t, func(r *Recipe) { r.ClassWeights = []float64{0.5, 1, 3} })
	if !reflect.DeepEqual(tr.ce.Weight, []float32{0.5, 1, 3}) {
		t.Fatalf("given weights %v", tr.ce.Weight)
	}
}

// A last batch of one scan is left out; others are kept.
func TestEpochScans(t *testing.T) {
	for _, tc := range []struct{ n, bs, scans, steps int }{
		{9, 4, 8, 2}, {9, 3, 9, 3}, {10, 4, 10, 3}, {1, 4, 1, 1}, {5, 1, 5, 5},
	} {
		tr := &trainer{r: Recipe{BatchSize: tc.bs}, trainIdx: make([]int, tc.n)}
		if s, st := tr.epochScans(), tr.stepsPerEpoch(); s != tc.scans || st != tc.steps {
			t.Errorf("n %d batch %d: %d scans in %d steps, want %d in %d", tc.n, tc.bs, s, st, tc.scans, tc.steps)
		}
	}
}

// Every dropout layer gets a generator that depends on (seed, epoch) only.
func TestReseedRandomLayers(t *testing.T) {
	m, err := net3d.Build(net3d.Spec{Arch: tinyArch, InChannels: 1, Classes: 3}, 1)
	if err != nil {
		t.Fatal(err)
	}
	drop := m.(*tinyNet).Drop
	draw := func(epoch int) uint64 {
		reseedRandomLayers(m, 4, epoch)
		return drop.Rng.Uint64()
	}
	a, b, c := draw(1), draw(2), draw(1)
	if a != c || a == b {
		t.Fatalf("draws %d %d %d: want epoch 1 repeatable and different from epoch 2", a, b, c)
	}
	// A module with a generator of its own is reseeded through Reseeder.
	probe := &reseedProbe{}
	seq := nn.NewSequential(nn.NewSequential(probe))
	drawProbe := func(epoch int) uint64 {
		reseedRandomLayers(seq, 4, epoch)
		return probe.rng.Uint64()
	}
	a, b, c = drawProbe(1), drawProbe(2), drawProbe(1)
	if a != c || a == b {
		t.Fatalf("Reseeder draws %d %d %d: want epoch 1 repeatable and different from epoch 2", a, b, c)
	}
}

type reseedProbe struct {
	nn.Base
	rng *rand.Rand
}

func (p *reseedProbe) Forward(x *tensor.Tensor) *tensor.Tensor { return x }
func (p *reseedProbe) Reseed(rng *rand.Rand)                   { p.rng = rng }

func TestBetter(t *testing.T) {
	for _, tc := range []struct {
		metric              string
		acc, loss, bAcc, bL float64
		want                bool
	}{
		{"val_acc", 0.8, 0.9, 0.7, 0.1, true},
		{"val_acc", 0.7, 0.5, 0.7, 0.6, true},
		{"val_acc", 0.7, 0.6, 0.7, 0.6, false},
		{"val_acc", 0.6, 0.1, 0.7, 0.6, false},
		{"val_loss", 0.1, 0.5, 0.9, 0.6, true},
		{"val_loss", 0.9, 0.7, 0.1, 0.6, false},
	} {
		if got := better(tc.metric, tc.acc, tc.loss, tc.bAcc, tc.bL); got != tc.want {
			t.Errorf("better(%+v) = %v", tc, got)
		}
	}
}
