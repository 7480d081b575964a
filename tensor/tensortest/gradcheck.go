// Package tensortest holds test helpers for code built on package tensor:
// gradient checks against central finite differences and tolerant
// comparisons.
package tensortest

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/ctlens/ctlens/tensor"
)

// TB is the part of testing.TB the helpers use.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Rand returns a tensor of the given shape with values uniform in [-1, 1)
// from a seeded generator.
func Rand(rng *rand.Rand, shape ...int) *tensor.Tensor {
	t := tensor.Zeros(shape...)
	for i := range t.Data() {
		t.Data()[i] = float32(rng.Float64()*2 - 1)
	}
	return t
}

// GradCheckOpts tunes GradCheck. Zero values select defaults.
type GradCheckOpts struct {
	Eps    float64 // finite-difference step; default 1e-2
	Tol    float64 // allowed |analytic - numeric| / max(1, |numeric|); default 2e-2
	MaxPts int     // elements checked per input (spread evenly); default 64
	Seed   uint64
}

// GradCheck compares the gradients that autograd computes for f at inputs
// with float64 central finite differences of the scalar L = Σ f(x)·r, where r
// is a fixed random projection. Inputs are marked as requiring gradients.
func GradCheck(t TB, name string, f func(in []*tensor.Tensor) *tensor.Tensor, inputs []*tensor.Tensor, o GradCheckOpts) {
	t.Helper()
	if o.Eps == 0 {
		o.Eps = 1e-2
	}
	if o.Tol == 0 {
		o.Tol = 2e-2
	}
	if o.MaxPts == 0 {
		o.MaxPts = 64
	}
	rng := rand.New(rand.NewPCG(o.Seed, 99))
	for _, in := range inputs {
		in.SetRequiresGrad(true)
		in.ZeroGrad()
	}
	out := f(inputs)
	proj := Rand(rng, out.Shape()...)
	loss := func() float64 {
		y := f(inputs)
		s := 0.0
		for i, v := range y.Data() {
			s += float64(v) * float64(proj.Data()[i])
		}
		return s
	}
	out.BackwardWith(proj)
	for k, in := range inputs {
		g := in.Grad()
		if g == nil {
			t.Errorf("%s: input %d: no gradient", name, k)
			continue
		}
		n := in.Len()
		step := 1
		if n > o.MaxPts {
			step = n / o.MaxPts
		}
		bad := 0
		for i := 0; i < n; i += step {
			d := in.Data()
			orig := d[i]
			d[i] = orig + float32(o.Eps)
			lp := loss()
			d[i] = orig - float32(o.Eps)
			lm := loss()
			d[i] = orig
			num := (lp - lm) / (float64(float32(orig+float32(o.Eps))) - float64(float32(orig-float32(o.Eps))))
			ana := float64(g.Data()[i])
			if math.Abs(ana-num)/math.Max(1, math.Abs(num)) > o.Tol {
				if bad < 5 {
					t.Errorf("%s: input %d %v elem %d: autograd %.6g, finite difference %.6g", name, k, in.Shape(), i, ana, num)
				}
				bad++
			}
		}
		if bad > 0 {
			t.Errorf("%s: input %d: %d mismatching elements", name, k, bad)
		}
	}
}

// AllClose reports the first element where |got-want| > atol + rtol*|want|,
// or nil when shapes and values agree.
func AllClose(got, want *tensor.Tensor, rtol, atol float64) error {
	if !tensor.SameShape(got.Shape(), want.Shape()) {
		return fmt.Errorf("shape %v, want %v", got.Shape(), want.Shape())
	}
	worst, wi := 0.0, -1
	for i, w := range want.Data() {
		d := math.Abs(float64(got.Data()[i]) - float64(w))
		lim := atol + rtol*math.Abs(float64(w))
		if d > lim && d-lim > worst {
			worst, wi = d-lim, i
		}
		if math.IsNaN(float64(got.Data()[i])) != math.IsNaN(float64(w)) {
			return fmt.Errorf("element %d: got %v, want %v", i, got.Data()[i], w)
		}
	}
	if wi >= 0 {
		return fmt.Errorf("element %d: got %v, want %v (shape %v)", wi, got.Data()[wi], want.Data()[wi], want.Shape())
	}
	return nil
}
