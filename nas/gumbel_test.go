package nas

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// tinySpec is a small search space: a first cell without a shortcut, two
// stride-1 cells with one (10 candidates each) and a last stride-2 cell.
func tinySpec() net3d.Spec {
	return net3d.Spec{Arch: "covidnet3d-small", InChannels: 1, Classes: 3, Config: json.RawMessage(
		`{"width_stages":[8,8,16],"n_cell_stages":[1,2,1],"stride_stages":[2,1,2],` +
			`"first_width":8,"first_cell_width":8,"feature_mix":16,"dropout":0}`)}
}

// softmax64 is softmax((a+g)/tau) worked in float64 by hand.
func gumbelSoft64(a, g []float64, tau float64) []float64 {
	z := make([]float64, len(a))
	for i := range a {
		z[i] = (a[i] + g[i]) / tau
	}
	m := math.Inf(-1)
	for _, v := range z {
		m = math.Max(m, v)
	}
	var s float64
	for i, v := range z {
		z[i] = math.Exp(v - m)
		s += z[i]
	}
	for i := range z {
		z[i] /= s
	}
	return z
}

func vec32(v []float64) *tensor.Tensor {
	f := make([]float32, len(v))
	for i, x := range v {
		f[i] = float32(x)
	}
	return tensor.New(f, len(f))
}

// TestGumbelSoftmaxSample checks the sample's values against the formula,
// the hard mask's exact one-hot value, and the straight-through gradient
// of Σ_j c_j·m_j against a float64 central difference of Σ_j c_j·y_j(α).
func TestGumbelSoftmaxSample(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	k := 9
	a := make([]float64, k)
	c := make([]float64, k)
	for i := range a {
		a[i] = rng.NormFloat64()
		c[i] = rng.NormFloat64()
	}
	g := SampleGumbel(rng, k)
	for _, tc := range []struct {
		name string
		tau  float64
		hard bool
	}{{"soft/tau1", 1, false}, {"soft/tau0.5", 0.5, false}, {"hard/tau1", 1, true}, {"hard/tau2", 2, true}} {
		t.Run(tc.name, func(t *testing.T) {
			alpha := vec32(a).SetRequiresGrad(true)
			m, idx, err := GumbelSoftmax(alpha, g, tc.tau, tc.hard)
			if err != nil {
				t.Fatal(err)
			}
			y := gumbelSoft64(a, g, tc.tau)
			best := 0
			for j := range y {
				if y[j] > y[best] {
					best = j
				}
			}
			if idx != best {
				t.Fatalf("index %d, want %d", idx, best)
			}
			for j, v := range m.Data() {
				want := y[j]
				if tc.hard {
					want = 0
					if j == best {
						want = 1
					}
					if j != best && v != 0 {
						t.Errorf("hard mask entry %d = %g, want exactly 0", j, v)
					}
				}
				if math.Abs(float64(v)-want) > 1e-6 {
					t.Errorf("mask[%d] = %g, want %g", j, v, want)
				}
			}
			tensor.SumAll(tensor.Mul(m, vec32(c))).Backward()
			grad := alpha.Grad().Data()
			const h = 1e-6
			for kk := range a {
				ap, am := append([]float64(nil), a...), append([]float64(nil), a...)
				ap[kk] += h
				am[kk] -= h
				var fp, fm float64
				for j, v := range gumbelSoft64(ap, g, tc.tau) {
					fp += c[j] * v
				}
				for j, v := range gumbelSoft64(am, g, tc.tau) {
					fm += c[j] * v
				}
				want := (fp - fm) / (2 * h)
				if math.Abs(float64(grad[kk])-want) > 1e-5+1e-4*math.Abs(want) {
					t.Errorf("∂/∂α[%d] = %g, finite difference %g", kk, grad[kk], want)
				}
			}
		})
	}
}

func TestGumbelSoftmaxErrors(t *testing.T) {
	if _, _, err := GumbelSoftmax(tensor.Zeros(3), []float64{0, 0}, 1, true); err == nil {
		t.Error("3 logits with 2 noise values: no error")
	}
	if _, _, err := GumbelSoftmax(tensor.Zeros(2, 2), []float64{0, 0}, 1, true); err == nil {
		t.Error("2-D logits: no error")
	}
	for _, tau := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		if _, _, err := GumbelSoftmax(tensor.Zeros(2), []float64{0, 0}, tau, false); err == nil {
			t.Errorf("temperature %g: no error", tau)
		}
	}
}

func TestTemperature(t *testing.T) {
	tt := Temperature{Start: 5, End: 0.5, Decay: 0.5}
	for _, c := range []struct {
		epoch, step int
		want        float64
	}{{0, 0, 5}, {1, 7, 2.5}, {2, 9, 1.25}, {3, 0, 0.625}, {4, 0, 0.5}, {40, 0, 0.5}} {
		if got := tt.At(c.epoch, c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("At(%d, %d) = %g, want %g", c.epoch, c.step, got, c.want)
		}
	}
	tt.PerStep = true
	if got := tt.At(0, 2); got != 1.25 {
		t.Errorf("per step At(0, 2) = %g, want 1.25", got)
	}
	for _, bad := range []Temperature{{0, 0, 1, false}, {1, 2, 1, false}, {1, 1, 0, false}, {1, 1, 1.5, false}, {1, 0, 1, false}} {
		if bad.Validate() == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// TestAlphaGradientFiniteDifference checks ∂L/∂α through the supernet in
// hard and soft modes with fixed Gumbel noise against a float64 central
// difference of the loss. The masks of the finite difference are worked
// by hand in float64: soft mode m(α) = y(α); hard mode (straight-through,
// only the selected path runs) m_sel(α) = 1 + y_sel(α) − y_sel(α₀) and 0
// for the other candidates, whose value at α₀ is the one-hot and whose
// derivative is the straight-through estimator's.
func TestAlphaGradientFiniteDifference(t *testing.T) {
	sn, err := net3d.NewSupernet(tinySpec(), 7)
	if err != nil {
		t.Fatal(err)
	}
	// Training mode: BatchNorm normalises with batch statistics, a fixed
	// function of the masks (dropout is 0), so the signal is O(1).
	nn.SetTraining(sn, true)
	rng := rand.New(rand.NewPCG(11, 12))
	xd := make([]float32, 2*4*8*8)
	for i := range xd {
		xd[i] = float32(rng.NormFloat64())
	}
	x := tensor.New(xd, 2, 1, 4, 8, 8)
	labels := []int{0, 2}
	cells := sn.Cells()
	alpha := make([][]float64, len(cells))
	noise := make([][]float64, len(cells))
	for i, c := range cells {
		for range c.Candidates {
			alpha[i] = append(alpha[i], 0.5*rng.NormFloat64())
		}
		noise[i] = SampleGumbel(rng, len(c.Candidates))
	}
	const tau = 0.8
	loss := func(masks []*tensor.Tensor, mode net3d.MaskMode) *tensor.Tensor {
		t.Helper()
		y, err := sn.ForwardWithMasks(x, masks, mode)
		if err != nil {
			t.Fatal(err)
		}
		return tensor.CrossEntropy(y, labels, tensor.CEOpts{})
	}
	for _, mode := range []net3d.MaskMode{net3d.MaskHard, net3d.MaskSoft} {
		t.Run(mode.String(), func(t *testing.T) {
			hard := mode == net3d.MaskHard
			leaves := make([]*tensor.Tensor, len(cells))
			masks := make([]*tensor.Tensor, len(cells))
			sel := make([]int, len(cells))
			for i := range cells {
				leaves[i] = vec32(alpha[i]).SetRequiresGrad(true)
				masks[i], sel[i], err = GumbelSoftmax(leaves[i], noise[i], tau, hard)
				if err != nil {
					t.Fatal(err)
				}
			}
			loss(masks, mode).Backward()
			// Float64 masks of the finite difference.
			y0 := make([][]float64, len(cells))
			for i := range cells {
				y0[i] = gumbelSoft64(alpha[i], noise[i], tau)
			}
			maskAt := func(a [][]float64) []*tensor.Tensor {
				out := make([]*tensor.Tensor, len(a))
				for i := range a {
					y := gumbelSoft64(a[i], noise[i], tau)
					if !hard {
						out[i] = vec32(y)
						continue
					}
					m := make([]float64, len(y))
					m[sel[i]] = 1 + y[sel[i]] - y0[i][sel[i]]
					out[i] = vec32(m)
				}
				return out
			}
			// h balances truncation (and ReLU6 kinks) against float32
			// rounding of the loss; checked: relative L2 error about 0.3 %
			// (hard) and 0.8 % (soft) for this network.
			const h = 1e-3
			var diff2, norm2 float64
			for i := range cells {
				g := leaves[i].Grad()
				if g == nil {
					t.Fatalf("cell %d: α has no gradient", i)
				}
				for k := range alpha[i] {
					ap := clone2(alpha)
					am := clone2(alpha)
					ap[i][k] += h
					am[i][k] -= h
					fd := (float64(loss(maskAt(ap), mode).Item()) - float64(loss(maskAt(am), mode).Item())) / (2 * h)
					got := float64(g.Data()[k])
					if got == 0 {
						t.Errorf("cell %d: ∂L/∂α[%d] is 0", i, k)
					}
					if math.Abs(got-fd) > 1.5e-3+0.05*math.Abs(fd) {
						t.Errorf("cell %d: ∂L/∂α[%d] = %.6g, finite difference %.6g", i, k, got, fd)
					}
					diff2 += (got - fd) * (got - fd)
					norm2 += fd * fd
				}
			}
			if rel := math.Sqrt(diff2 / norm2); !(rel < 0.02) {
				t.Errorf("relative L2 error of ∂L/∂α against the finite difference: %.4f, want < 0.02", rel)
			}
		})
	}
}

func clone2(a [][]float64) [][]float64 {
	out := make([][]float64, len(a))
	for i := range a {
		out[i] = append([]float64(nil), a[i]...)
	}
	return out
}
