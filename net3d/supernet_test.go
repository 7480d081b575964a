package net3d

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// TestSupernetGolden loads the reference state dict strictly into the
// supernet and compares the fixed-choice logits, and the soft and hard
// masked logits and mask gradients, with PyTorch's.
func TestSupernetGolden(t *testing.T) {
	g := covidReadGolden(t)
	sn, err := NewSupernet(g.spec, 1)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := nn.LoadState(g.state, sn, nn.LoadOpts{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Loaded != len(g.state) {
		t.Errorf("loaded %d of %d keys", rep.Loaded, len(g.state))
	}
	if !slices.Equal(sn.Choices(), g.choices) {
		t.Fatalf("choices %v, golden %v", sn.Choices(), g.choices)
	}
	nn.SetTraining(sn, false)
	nn.SetRequiresGrad(sn, false)
	y, err := nn.Run(sn, g.io["input"])
	if err != nil {
		t.Fatal(err)
	}
	covidClose(t, "supernet fixed logits", y, g.io["logits"])

	for _, mode := range []MaskMode{MaskSoft, MaskHard} {
		p := mode.String() + "/"
		masks := make([]*tensor.Tensor, sn.NumCells())
		for i := range masks {
			masks[i] = g.io[p+"mask."+strconv.Itoa(i)].Clone().SetRequiresGrad(true)
		}
		y, err := sn.ForwardWithMasks(g.io[p+"input"], masks, mode)
		if err != nil {
			t.Fatal(err)
		}
		covidClose(t, p+"logits", y, g.io[p+"logits"])
		if err := tensor.Catch(func() { tensor.SumAll(tensor.Mul(y, g.io[p+"proj"])).Backward() }); err != nil {
			t.Fatal(err)
		}
		for i, m := range masks {
			got := m.Grad()
			if got == nil {
				got = tensor.ZerosLike(m)
			}
			want := g.io[p+"grad."+strconv.Itoa(i)]
			covidClose(t, p+"grad mask "+strconv.Itoa(i), got, want)
			if mode == MaskHard {
				for j, v := range got.Data() {
					if m.Data()[j] == 0 && v != 0 {
						t.Errorf("hard mask %d: unselected entry %d has gradient %v", i, j, v)
					}
				}
			}
		}
	}
}

// covidTinySpec is a small supernet spec with a first cell without a
// shortcut, one with (stage 2, stride 1, same width) and later cells.
func covidTinySpec(cells string) Spec {
	return Spec{Arch: "covidnet3d-small", InChannels: 1, Classes: 3, Config: json.RawMessage(
		`{"width_stages":[8,16,16],"n_cell_stages":` + cells + `,"stride_stages":[2,2,1],` +
			`"first_width":8,"first_cell_width":8,"feature_mix":16}`)}
}

// covidRandomizeBN draws BatchNorm affine parameters and running statistics
// so that eval-mode comparisons are not trivially the identity.
func covidRandomizeBN(m nn.Module, rng *rand.Rand) {
	for _, nm := range nn.NamedModules(m) {
		bn, ok := nm.Module.(*nn.BatchNorm)
		if !ok {
			continue
		}
		nn.Uniform(rng, bn.Weight, 0.5, 1.5)
		nn.Normal(rng, bn.Bias, 0, 0.3)
		nn.Normal(rng, bn.RunningMean, 0, 0.3)
		nn.Uniform(rng, bn.RunningVar, 0.4, 1.6)
	}
}

func covidRandomChoices(rng *rand.Rand, cells []CellInfo) []int {
	out := make([]int, len(cells))
	for i, c := range cells {
		out[i] = rng.IntN(len(c.Candidates))
	}
	return out
}

// TestSupernetDeriveMatchesFixed checks, for random choices, that the
// derived single-path network, the supernet with the choices fixed and the
// supernet with hard one-hot masks of ones compute the same logits.
func TestSupernetDeriveMatchesFixed(t *testing.T) {
	sn, err := NewSupernet(covidTinySpec("[2,2,2]"), 11)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	covidRandomizeBN(sn, rng)
	nn.SetTraining(sn, false)
	nn.SetRequiresGrad(sn, false)
	x := tensortest.Rand(rng, 2, 1, 8, 16, 16)
	cells := sn.Cells()
	if len(cells) != 6 || cells[4].Key != "s2_c0" || !cells[4].Shortcut || len(cells[4].Candidates) != 10 || len(cells[0].Candidates) != 9 {
		t.Fatalf("cells %+v", cells)
	}
	trials := [][]int{
		{7, 8, 8, 9, 7, 0}, // identity/zero in first and later cells
		{0, 1, 2, 3, 4, 5}, // MBConvs
		{6, 7, 6, 8, 9, 7}, // zero in a first cell with a shortcut (s2_c0 is 9), identity 2x
		covidRandomChoices(rng, cells),
		covidRandomChoices(rng, cells),
	}
	for _, ch := range trials {
		d, err := sn.Derive(ch)
		if err != nil {
			t.Fatal(err)
		}
		if d.Training() != sn.Training() || d.Training() {
			t.Errorf("derived network not in eval mode")
		}
		if err := sn.SetChoices(ch); err != nil {
			t.Fatal(err)
		}
		yFixed, err := nn.Run(sn, x)
		if err != nil {
			t.Fatal(err)
		}
		yDerived, err := nn.Run(d, x)
		if err != nil {
			t.Fatal(err)
		}
		if err := tensortest.AllClose(yDerived, yFixed, 1e-6, 1e-6); err != nil {
			t.Errorf("choices %v: derived vs supernet: %v", ch, err)
		}
		masks := make([]*tensor.Tensor, len(ch))
		for i, j := range ch {
			masks[i] = tensor.Zeros(len(cells[i].Candidates))
			masks[i].Data()[j] = 1
		}
		yMask, err := sn.ForwardWithMasks(x, masks, MaskHard)
		if err != nil {
			t.Fatal(err)
		}
		if err := tensortest.AllClose(yMask, yFixed, 0, 0); err != nil {
			t.Errorf("choices %v: hard one-hot mask vs fixed: %v", ch, err)
		}
		// The spec of the choice rebuilds the derived architecture.
		spec, err := sn.SpecFor(ch)
		if err != nil {
			t.Fatal(err)
		}
		if string(spec.Config) != string(d.Spec().Config) || string(sn.Spec().Config) != string(spec.Config) {
			t.Errorf("SpecFor %s, derived Spec %s, supernet Spec %s", spec.Config, d.Spec().Config, sn.Spec().Config)
		}
		c, err := Build(spec, 99)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nn.LoadState(nn.StateDict(d), c, nn.LoadOpts{Strict: true}); err != nil {
			t.Errorf("derived state dict into Build(SpecFor): %v", err)
		}
	}
	// Derive copies: changing the derived weights leaves the supernet alone.
	d, _ := sn.Derive(trials[1])
	before := sn.FirstConv.Conv.Weight.Clone()
	d.FirstConv.Conv.Weight.Data()[0] += 1
	if tensortest.AllClose(sn.FirstConv.Conv.Weight, before, 0, 0) != nil {
		t.Error("Derive shares weights with the supernet")
	}
}

func covidTinyMaskSetup(t *testing.T) (*Supernet, *tensor.Tensor) {
	t.Helper()
	sn, err := NewSupernet(covidTinySpec("[1,1,2]"), 21)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	covidRandomizeBN(sn, rng)
	nn.SetTraining(sn, false)
	nn.SetRequiresGrad(sn, false)
	return sn, tensortest.Rand(rng, 1, 1, 8, 16, 16)
}

// TestSupernetSoftMaskGradCheck compares the mask gradients of the soft
// mode, and of architecture logits through a softmax, with float64 finite
// differences.
func TestSupernetSoftMaskGradCheck(t *testing.T) {
	sn, x := covidTinyMaskSetup(t)
	rng := rand.New(rand.NewPCG(7, 8))
	cells := sn.Cells()
	masks := make([]*tensor.Tensor, len(cells))
	alphas := make([]*tensor.Tensor, len(cells))
	for i, c := range cells {
		alphas[i] = tensortest.Rand(rng, len(c.Candidates))
		masks[i] = tensor.Softmax(alphas[i], 0).Detach()
	}
	f := func(in []*tensor.Tensor) *tensor.Tensor {
		y, err := sn.ForwardWithMasks(x, in, MaskSoft)
		if err != nil {
			t.Fatal(err)
		}
		return y
	}
	tensortest.GradCheck(t, "soft masks", f, masks, tensortest.GradCheckOpts{Eps: 1e-3, Seed: 1})
	for i, m := range masks {
		nz := 0
		for _, v := range m.Grad().Data() {
			if v != 0 {
				nz++
			}
		}
		if nz == 0 {
			t.Errorf("mask %d (%s): all gradients zero", i, cells[i].Key)
		}
	}
	fa := func(in []*tensor.Tensor) *tensor.Tensor {
		ms := make([]*tensor.Tensor, len(in))
		for i, a := range in {
			ms[i] = tensor.Softmax(a, 0)
		}
		return f(ms)
	}
	tensortest.GradCheck(t, "soft alphas", fa, alphas, tensortest.GradCheckOpts{Eps: 1e-3, Seed: 2})
}

// TestSupernetHardMaskGradient checks, for hard one-hot masks, that the
// gradient of the selected entry equals the finite difference of the loss
// in that entry (d L/d m_j = ⟨dL/dy, g_j(x)⟩, the op still selected) and that
// the other entries get 0.
func TestSupernetHardMaskGradient(t *testing.T) {
	sn, x := covidTinyMaskSetup(t)
	cells := sn.Cells()
	proj := tensortest.Rand(rand.New(rand.NewPCG(9, 10)), 1, 3)
	loss := func(masks []*tensor.Tensor) float64 {
		y, err := sn.ForwardWithMasks(x, masks, MaskHard)
		if err != nil {
			t.Fatal(err)
		}
		s := 0.0
		for i, v := range y.Data() {
			s += float64(v) * float64(proj.Data()[i])
		}
		return s
	}
	// s0_c0 and s1_c0 have no shortcut (zero passes x on), s2_c0 and s2_c1 do.
	for _, ch := range [][]int{{8, 7, 2, 9}, {7, 3, 8, 7}, {5, 8, 6, 0}} {
		masks := make([]*tensor.Tensor, len(ch))
		for i, j := range ch {
			masks[i] = tensor.Zeros(len(cells[i].Candidates))
			masks[i].Data()[j] = 1
			masks[i].SetRequiresGrad(true)
		}
		y, err := sn.ForwardWithMasks(x, masks, MaskHard)
		if err != nil {
			t.Fatal(err)
		}
		if err := tensor.Catch(func() { tensor.SumAll(tensor.Mul(y, proj)).Backward() }); err != nil {
			t.Fatal(err)
		}
		for i, j := range ch {
			g := masks[i].Grad()
			if g == nil {
				g = tensor.ZerosLike(masks[i])
			}
			const eps = 1e-3
			d := masks[i].Data()
			d[j] = 1 + eps
			lp := loss(masks)
			d[j] = 1 - eps
			lm := loss(masks)
			d[j] = 1
			num := (lp - lm) / (float64(float32(1+eps)) - float64(float32(1-eps)))
			ana := float64(g.Data()[j])
			if math.Abs(ana-num) > 2e-3*math.Max(1, math.Abs(num)) {
				t.Errorf("choices %v cell %s op %d: gradient %.6g, finite difference %.6g", ch, cells[i].Key, j, ana, num)
			}
			zeroOp := isZeroOp(j) && cells[i].Shortcut
			if !zeroOp && num == 0 {
				t.Errorf("choices %v cell %s op %d: loss does not depend on the mask", ch, cells[i].Key, j)
			}
			for k, v := range g.Data() {
				if k != j && v != 0 {
					t.Errorf("choices %v cell %s: unselected entry %d has gradient %v", ch, cells[i].Key, k, v)
				}
			}
		}
	}
}

func TestSupernetErrors(t *testing.T) {
	sn, x := covidTinyMaskSetup(t)
	cells := sn.Cells()
	good := func() []*tensor.Tensor {
		ms := make([]*tensor.Tensor, len(cells))
		for i, c := range cells {
			ms[i] = tensor.Zeros(len(c.Candidates))
			ms[i].Data()[0] = 1
		}
		return ms
	}
	if _, err := sn.ForwardWithMasks(x, good(), MaskHard); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name  string
		masks func() []*tensor.Tensor
		mode  MaskMode
		x     *tensor.Tensor
		want  string
	}{
		{"count", func() []*tensor.Tensor { return good()[:2] }, MaskHard, x, "2 masks for 4 cells"},
		{"nil", func() []*tensor.Tensor { m := good(); m[1] = nil; return m }, MaskSoft, x, "mask for cell s1_c0 has shape [], want [9]"},
		{"shape", func() []*tensor.Tensor { m := good(); m[3] = tensor.Zeros(9); return m }, MaskSoft, x, "mask for cell s2_c1 has shape [9], want [10]"},
		{"nan", func() []*tensor.Tensor { m := good(); m[0].Data()[2] = float32(math.NaN()); return m }, MaskSoft, x, "entry 2 is NaN"},
		{"all zero", func() []*tensor.Tensor { m := good(); m[2].Data()[0] = 0; return m }, MaskHard, x, "hard mask for cell s2_c0 selects no candidate"},
		{"mode", good, MaskMode(5), x, "unknown mask mode 5"},
		{"input", good, MaskSoft, tensor.Zeros(1, 2, 8, 16, 16), "want N×1×D×H×W"},
	}
	for _, tc := range bad {
		if _, err := sn.ForwardWithMasks(tc.x, tc.masks(), tc.mode); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := sn.SetChoices([]int{0, 0, 0}); err == nil || !strings.Contains(err.Error(), "3 choices for 4 cells") {
		t.Errorf("SetChoices count: %v", err)
	}
	if err := sn.SetChoices([]int{9, 0, 0, 0}); err == nil || !strings.Contains(err.Error(), "choice 9 for cell s0_c0: want 0–8") {
		t.Errorf("SetChoices range: %v", err)
	}
	if _, err := sn.Derive([]int{0, 0, 0, 10}); err == nil {
		t.Error("Derive accepted choice 10")
	}
	if _, err := sn.SpecFor([]int{0, -1, 0, 0}); err == nil {
		t.Error("SpecFor accepted choice -1")
	}
	if got := sn.Choices(); !slices.Equal(got, []int{0, 0, 0, 0}) {
		t.Errorf("failed SetChoices changed choices to %v", got)
	}
	var _ Classifier = sn
}
