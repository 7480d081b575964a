package nas

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/ctlens/ctlens/tensor"
)

// SampleGumbel draws k independent standard Gumbel variables
// g = −log(−log u), u ~ U(0, 1) (u = 0 is redrawn).
func SampleGumbel(rng *rand.Rand, k int) []float64 {
	g := make([]float64, k)
	for i := range g {
		u := rng.Float64()
		for u == 0 {
			u = rng.Float64()
		}
		g[i] = -math.Log(-math.Log(u))
	}
	return g
}

// GumbelSoftmax returns the Gumbel-softmax sample of the architecture
// logits alpha (shape [K]) with the given noise (K Gumbel variables) and
// temperature tau > 0,
//
//	y_j = exp((α_j + g_j)/τ) / Σ_k exp((α_k + g_k)/τ),
//
// as a graph of alpha, and the index of its largest entry (the first on a
// tie). With hard set it returns the straight-through one-hot instead,
//
//	m = onehot(argmax y) − stop_grad(y) + y,
//
// whose value is the one-hot (unselected entries exactly 0, the selected
// one 1 up to rounding) and whose gradient is that of y: ∂L/∂α =
// (∂y/∂α)ᵀ·∂L/∂m. Shape errors are returned.
func GumbelSoftmax(alpha *tensor.Tensor, noise []float64, tau float64, hard bool) (mask *tensor.Tensor, index int, err error) {
	if alpha == nil || alpha.Dim() != 1 || alpha.Size(0) != len(noise) || len(noise) == 0 {
		var shape []int
		if alpha != nil {
			shape = alpha.Shape()
		}
		return nil, 0, fmt.Errorf("nas: gumbel-softmax: logits of shape %v with %d noise values", shape, len(noise))
	}
	if !(tau > 0) || math.IsInf(tau, 0) {
		return nil, 0, fmt.Errorf("nas: gumbel-softmax: temperature %g: want a positive finite value", tau)
	}
	g := make([]float32, len(noise))
	for i, v := range noise {
		g[i] = float32(v)
	}
	err = tensor.Catch(func() {
		y := tensor.Softmax(tensor.MulScalar(tensor.Add(alpha, tensor.New(g, len(g))), float32(1/tau)), 0)
		index = argmax32(y.Data())
		if !hard {
			mask = y
			return
		}
		// d = onehot − y as a constant: y_j + (−y_j) is exactly 0 in
		// floating point, so the unselected candidates are not run.
		d := make([]float32, len(g))
		for j, v := range y.Data() {
			d[j] = -v
		}
		d[index] = 1 - y.Data()[index]
		mask = tensor.Add(y, tensor.New(d, len(d)))
	})
	return mask, index, err
}

// OneHot returns a constant [k] tensor with 1 at index and 0 elsewhere.
func OneHot(k, index int) *tensor.Tensor {
	t := tensor.Zeros(k)
	t.Data()[index] = 1
	return t
}

func argmax32(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func argmax64(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// Softmax64 returns softmax(v) in float64: exp(v_j − max v)/Σ_k exp(v_k − max v).
func Softmax64(v []float64) []float64 {
	out := make([]float64, len(v))
	if len(v) == 0 {
		return out
	}
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	var s float64
	for i, x := range v {
		out[i] = math.Exp(x - m)
		s += out[i]
	}
	for i := range out {
		out[i] /= s
	}
	return out
}

// Temperature is the Gumbel-softmax temperature schedule
//
//	τ(t) = max(End, Start·Decay^t)   (Decay < 1; End ≤ Start)
//
// where t is the epoch index (0-based) or, with PerStep, the global step
// index. Decay 1 (or End = Start) keeps τ = Start; the reference search
// uses a constant τ = 1.
type Temperature struct {
	Start   float64 `json:"start"`
	End     float64 `json:"end"`
	Decay   float64 `json:"decay"`
	PerStep bool    `json:"per_step,omitempty"`
}

// At returns τ at the given epoch and global step.
func (t Temperature) At(epoch, step int) float64 {
	n := epoch
	if t.PerStep {
		n = step
	}
	return max(t.End, t.Start*math.Pow(t.Decay, float64(n)))
}

// Validate checks 0 < End ≤ Start and 0 < Decay ≤ 1.
func (t Temperature) Validate() error {
	switch {
	case !(t.Start > 0) || math.IsInf(t.Start, 0):
		return fmt.Errorf("nas: temperature start %g: want a positive finite value", t.Start)
	case !(t.End > 0) || t.End > t.Start:
		return fmt.Errorf("nas: temperature end %g: want 0 < end ≤ start (%g)", t.End, t.Start)
	case !(t.Decay > 0) || t.Decay > 1:
		return fmt.Errorf("nas: temperature decay %g: want 0 < decay ≤ 1", t.Decay)
	}
	return nil
}
