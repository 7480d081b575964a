package nas

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// TestCostsFormula checks every MBConv candidate's count against the
// reference's formulas (§1.5.3 of the reference notes): parameters
// W·mid + 2·mid + mid·k³ + 2·mid + mid·W + 2·W and MACs
// positions·(W·mid + mid·k³ + mid·W), mid = W·e, with the cell's spatial
// size worked from the strides (n → ⌈n/2⌉ at the stem and each stride-2
// stage).
func TestCostsFormula(t *testing.T) {
	sn, err := net3d.NewSupernet(tinySpec(), 1)
	if err != nil {
		t.Fatal(err)
	}
	input := [3]int{6, 11, 16}
	c, err := NewCosts(sn, input)
	if err != nil {
		t.Fatal(err)
	}
	ops := net3d.CovidNet3DCandidates()
	sp := [3]int{3, 6, 8} // after the stem: ⌈6/2⌉, ⌈11/2⌉, ⌈16/2⌉
	for i, ci := range sn.Cells() {
		if ci.Stride == 2 {
			for d := range sp {
				sp[d] = (sp[d] + 1) / 2
			}
		}
		pos := int64(sp[0] * sp[1] * sp[2])
		for j := range ci.Candidates {
			op := ops[j]
			wantP, wantM := 0, int64(0)
			if op.Kernel > 0 {
				w, mid, k3 := ci.Width, ci.Width*op.Expand, op.Kernel*op.Kernel*op.Kernel
				wantP = w*mid + 2*mid + mid*k3 + 2*mid + mid*w + 2*w
				wantM = pos * int64(w*mid+mid*k3+mid*w)
			}
			if c.Params[i][j] != wantP || c.MACs[i][j] != wantM {
				t.Errorf("cell %s candidate %s: %d params, %d MACs; want %d, %d", ci.Key, op.Name, c.Params[i][j], c.MACs[i][j], wantP, wantM)
			}
		}
	}
}

// TestCostsAdditive checks Costs.Of against whole-network counts of the
// built single-path architecture (nn.NumParams and tensor.CountMACs of a
// forward pass) for random choices, and the size in MB.
func TestCostsAdditive(t *testing.T) {
	sn, err := net3d.NewSupernet(tinySpec(), 1)
	if err != nil {
		t.Fatal(err)
	}
	input := [3]int{4, 16, 16}
	c, err := NewCosts(sn, input)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	cells := sn.Cells()
	for trial := range 5 {
		ch := make([]int, len(cells))
		for i, ci := range cells {
			ch[i] = rng.IntN(len(ci.Candidates))
		}
		if trial == 0 {
			for i := range ch {
				ch[i] = net3d.OpIdentity
			}
		}
		spec, err := sn.SpecFor(ch)
		if err != nil {
			t.Fatal(err)
		}
		m, err := net3d.Build(spec, 1)
		if err != nil {
			t.Fatal(err)
		}
		nn.SetTraining(m, false)
		nn.SetRequiresGrad(m, false)
		x := tensor.Zeros(1, 1, input[0], input[1], input[2])
		wantM := tensor.CountMACs(func() { net3d.Forward(m, x) })
		p, macs, err := c.Of(ch)
		if err != nil {
			t.Fatal(err)
		}
		if wantP := nn.NumParams(m); p != wantP || macs != wantM {
			t.Errorf("choices %v: Of = %d params, %d MACs; built network %d, %d", ch, p, macs, wantP, wantM)
		}
		mb, err := c.Cost(ch, MetricSize)
		if err != nil {
			t.Fatal(err)
		}
		if want := float64(p) * 4 / 1048576; math.Abs(mb-want) > 1e-15 {
			t.Errorf("size %g MB, want %g", mb, want)
		}
	}
	if _, _, err := c.Of([]int{0}); err == nil {
		t.Error("one choice for four cells: no error")
	}
	if _, _, err := c.Of([]int{0, 0, 0, 9}); err == nil {
		t.Error("choice 9 for a 9-candidate cell: no error")
	}
	if _, err := NewCosts(sn, [3]int{0, 4, 4}); err == nil {
		t.Error("input depth 0: no error")
	}
}

// TestExpectedCost checks E[C] and its gradient against the formula
// worked in float64: ∂E/∂α_ij = p_ij·(c_ij − Σ_k p_ik·c_ik).
func TestExpectedCost(t *testing.T) {
	a := [][]float64{{0.1, -0.3, 0.7}, {1.2, 0.0}}
	cand := [][]float64{{1, 2, 0}, {0.5, 3}}
	const base = 4
	var alphas []*tensor.Tensor
	for _, v := range a {
		alphas = append(alphas, vec32(v).SetRequiresGrad(true))
	}
	e, err := ExpectedCost(alphas, base, cand)
	if err != nil {
		t.Fatal(err)
	}
	e.Backward()
	want := float64(base)
	for i := range a {
		p := Softmax64(a[i])
		var mean float64
		for j := range p {
			mean += p[j] * cand[i][j]
		}
		want += mean
		for j := range p {
			g := p[j] * (cand[i][j] - mean)
			if got := float64(alphas[i].Grad().Data()[j]); math.Abs(got-g) > 1e-6 {
				t.Errorf("∂E/∂α[%d][%d] = %g, want %g", i, j, got, g)
			}
		}
	}
	if got := float64(e.Item()); math.Abs(got-want) > 1e-5 {
		t.Errorf("E[C] = %g, want %g", got, want)
	}
	if _, err := ExpectedCost(alphas[:1], base, cand); err == nil {
		t.Error("one logit vector for two cells: no error")
	}
}

// TestDeriveBudget checks the argmax and the greedy budget rule on a case
// worked by hand.
func TestDeriveBudget(t *testing.T) {
	alpha := [][]float64{{2, 1, 0}, {0, 3, 2.9}}
	cand := [][]float64{{5, 1, 0}, {0, 4, 1}}
	ch, err := Derive(alpha, 1, cand, 0)
	if err != nil || ch[0] != 0 || ch[1] != 1 {
		t.Fatalf("argmax: %v, %v; want [0 1]", ch, err)
	}
	// Cost 1+5+4 = 10. Budget 7: cell 1 → candidate 2 gives up 0.1 of
	// log-probability for 3 saved (ratio 0.033); cell 0 → 1 gives up 1 for
	// 4 (0.25). The first move reaches 7.
	ch, err = Derive(alpha, 1, cand, 7)
	if err != nil || ch[0] != 0 || ch[1] != 2 {
		t.Fatalf("budget 7: %v, %v; want [0 2]", ch, err)
	}
	// Budget 3 needs cell 0 too: from candidate 0 (cost 5), candidate 1
	// costs 1 log-unit for 4 saved (0.25), candidate 2 costs 2 for 5 (0.4).
	ch, err = Derive(alpha, 1, cand, 3)
	if err != nil || ch[0] != 1 || ch[1] != 2 {
		t.Fatalf("budget 3: %v, %v; want [1 2]", ch, err)
	}
	if _, err := Derive(alpha, 1, cand, 0.5); err == nil {
		t.Error("budget below the cheapest architecture: no error")
	}
}
