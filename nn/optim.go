package nn

import (
	"fmt"
	"math"
	"strings"

	"github.com/ctlens/ctlens/tensor"
)

// Optimizer updates parameters from their accumulated gradients.
// Parameters whose gradient is nil (unused, or frozen) are skipped, as in
// PyTorch.
type Optimizer interface {
	// Step applies one update to every parameter that has a gradient.
	Step()
	// ZeroGrad clears every parameter's gradient (set_to_none=True).
	ZeroGrad()
	// LR returns the current learning rate.
	LR() float64
	// SetLR sets the learning rate used by the next Step (for schedules).
	SetLR(lr float64)
	// State returns the optimizer's per-parameter state as named tensors
	// (copies) for a resumable checkpoint; see each optimizer for names.
	State() []Named
	// LoadState restores state saved by State for the same parameter names.
	LoadState(state []Named) error
}

// DecayFilter reports whether weight decay is skipped for a parameter.
type DecayFilter func(name string, p *tensor.Tensor) bool

// NameContains returns a DecayFilter that skips parameters whose name
// contains any of subs, e.g. NameContains("bn", "bias").
func NameContains(subs ...string) DecayFilter {
	subs = append([]string(nil), subs...)
	return func(name string, _ *tensor.Tensor) bool {
		for _, s := range subs {
			if strings.Contains(name, s) {
				return true
			}
		}
		return false
	}
}

// SkipOneDim is a DecayFilter that skips parameters of at most one
// dimension: biases and normalisation weights (timm's convention).
func SkipOneDim(_ string, p *tensor.Tensor) bool { return p.Dim() <= 1 }

// paramSet is the parameter list shared by the optimizers.
type paramSet struct {
	names []string
	ts    []*tensor.Tensor
	decay []bool // weight decay applies
	index map[string]int
}

func newParamSet(op string, params []Named, wd float64, skip DecayFilter) (paramSet, error) {
	ps := paramSet{index: map[string]int{}}
	seen := map[*tensor.Tensor]string{}
	for _, p := range params {
		if p.Tensor == nil {
			return ps, fmt.Errorf("nn: %s: parameter %q is nil", op, p.Name)
		}
		if _, dup := ps.index[p.Name]; dup {
			return ps, fmt.Errorf("nn: %s: parameter name %q given twice", op, p.Name)
		}
		if other, dup := seen[p.Tensor]; dup {
			return ps, fmt.Errorf("nn: %s: parameters %q and %q are the same tensor", op, other, p.Name)
		}
		seen[p.Tensor] = p.Name
		ps.index[p.Name] = len(ps.names)
		ps.names = append(ps.names, p.Name)
		ps.ts = append(ps.ts, p.Tensor)
		ps.decay = append(ps.decay, wd != 0 && (skip == nil || !skip(p.Name, p.Tensor)))
	}
	return ps, nil
}

// ZeroGrad clears every parameter's gradient.
func (ps *paramSet) ZeroGrad() {
	for _, t := range ps.ts {
		t.ZeroGrad()
	}
}

// lookupState splits a state name "<param>.<suffix>" and checks that the
// parameter exists and the shape matches.
func (ps *paramSet) lookupState(op string, s Named, suffixes ...string) (idx int, suffix string, err error) {
	for _, suf := range suffixes {
		pname, ok := strings.CutSuffix(s.Name, "."+suf)
		if !ok {
			continue
		}
		i, ok := ps.index[pname]
		if !ok {
			return 0, "", fmt.Errorf("nn: %s: load state %s: no parameter %q", op, s.Name, pname)
		}
		want := ps.ts[i].Shape()
		if suf == "step" {
			want = []int{}
		}
		if s.Tensor == nil || !tensor.SameShape(s.Tensor.Shape(), want) {
			return 0, "", fmt.Errorf("nn: %s: load state %s: shape %v, state has %s", op, s.Name, want, shapeString(s.Tensor))
		}
		return i, suf, nil
	}
	return 0, "", fmt.Errorf("nn: %s: load state %s: unknown state name (want <param>.%s)", op, s.Name, strings.Join(suffixes, "|"))
}

// shapeString formats t's shape as [2 3], or "nil".
func shapeString(t *tensor.Tensor) string {
	if t == nil {
		return "nil"
	}
	return fmt.Sprint(t.Shape())
}

func copyTensor(src []float32, shape []int) *tensor.Tensor {
	return tensor.New(append([]float32(nil), src...), shape...)
}

// SGDConfig configures NewSGD. LR is required; the rest default to 0/false
// as torch.optim.SGD.
type SGDConfig struct {
	LR          float64
	Momentum    float64
	Dampening   float64
	WeightDecay float64     // L2 penalty added to the gradient
	Nesterov    bool        // needs Momentum > 0 and Dampening 0
	NoDecay     DecayFilter // parameters exempt from WeightDecay, or nil
}

// SGD is stochastic gradient descent with momentum, as torch.optim.SGD: for
// each parameter p with gradient g,
//
//	g ← g + wd·p
//	b ← g (first step), b ← μ·b + (1 − dampening)·g (later steps)
//	g ← g + μ·b (Nesterov) or g ← b (momentum μ ≠ 0)
//	p ← p − lr·g
//
// State: "<param>.momentum_buffer" (the parameter's shape) once a parameter
// has been stepped with momentum.
type SGD struct {
	paramSet
	c   SGDConfig
	buf [][]float32
}

// NewSGD returns an SGD optimizer over params. It returns an error for an
// invalid configuration or parameter list.
func NewSGD(params []Named, c SGDConfig) (*SGD, error) {
	switch {
	case !(c.LR >= 0):
		return nil, fmt.Errorf("nn: SGD: learning rate %g: want ≥ 0", c.LR)
	case !(c.Momentum >= 0):
		return nil, fmt.Errorf("nn: SGD: momentum %g: want ≥ 0", c.Momentum)
	case !(c.WeightDecay >= 0):
		return nil, fmt.Errorf("nn: SGD: weight decay %g: want ≥ 0", c.WeightDecay)
	case c.Nesterov && (c.Momentum <= 0 || c.Dampening != 0):
		return nil, fmt.Errorf("nn: SGD: Nesterov momentum needs momentum > 0 and dampening 0, have %g and %g", c.Momentum, c.Dampening)
	}
	ps, err := newParamSet("SGD", params, c.WeightDecay, c.NoDecay)
	if err != nil {
		return nil, err
	}
	return &SGD{paramSet: ps, c: c, buf: make([][]float32, len(ps.ts))}, nil
}

// LR returns the learning rate.
func (o *SGD) LR() float64 { return o.c.LR }

// SetLR sets the learning rate.
func (o *SGD) SetLR(lr float64) { o.c.LR = lr }

// Step applies one SGD update.
func (o *SGD) Step() {
	lr, mu, damp := o.c.LR, o.c.Momentum, o.c.Dampening
	for i, p := range o.ts {
		gt := p.Grad()
		if gt == nil {
			continue
		}
		wd := 0.0
		if o.decay[i] {
			wd = o.c.WeightDecay
		}
		d, g := p.Data(), gt.Data()
		buf := o.buf[i]
		first := buf == nil && mu != 0
		if first {
			buf = make([]float32, len(d))
			o.buf[i] = buf
		}
		for j := range d {
			gj := float64(g[j]) + wd*float64(d[j])
			if mu != 0 {
				var b float64
				if first {
					b = gj
				} else {
					b = mu*float64(buf[j]) + (1-damp)*gj
				}
				buf[j] = float32(b)
				if o.c.Nesterov {
					gj += mu * b
				} else {
					gj = b
				}
			}
			d[j] = float32(float64(d[j]) - lr*gj)
		}
	}
}

// State returns the momentum buffers.
func (o *SGD) State() []Named {
	var out []Named
	for i, b := range o.buf {
		if b != nil {
			out = append(out, Named{o.names[i] + ".momentum_buffer", copyTensor(b, o.ts[i].Shape())})
		}
	}
	return out
}

// LoadState restores momentum buffers saved by State; parameters absent
// from state start afresh. Unknown names and wrong shapes are errors, and
// then nothing is changed.
func (o *SGD) LoadState(state []Named) error {
	bufs := make([][]float32, len(o.ts))
	for _, s := range state {
		i, _, err := o.lookupState("SGD", s, "momentum_buffer")
		if err != nil {
			return err
		}
		bufs[i] = append([]float32(nil), s.Tensor.Data()...)
	}
	o.buf = bufs
	return nil
}

// AdamConfig configures NewAdam and NewAdamW. LR is required; zero Beta1,
// Beta2 and Eps select PyTorch's defaults 0.9, 0.999 and 1e-8. WeightDecay
// 0 means none (note torch.optim.AdamW's default is 0.01: set it).
type AdamConfig struct {
	LR          float64
	Beta1       float64
	Beta2       float64
	Eps         float64
	WeightDecay float64
	NoDecay     DecayFilter // parameters exempt from WeightDecay, or nil
}

// Adam is torch.optim.Adam (L2 weight decay, NewAdam) or torch.optim.AdamW
// (decoupled weight decay, NewAdamW), without amsgrad: at a parameter's
// step t (1, 2, …) with gradient g,
//
//	p ← p − lr·wd·p                      (AdamW only)
//	g ← g + wd·p                         (Adam only)
//	m ← β1·m + (1 − β1)·g
//	v ← β2·v + (1 − β2)·g²
//	p ← p − lr/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + eps)
//
// State: "<param>.step" (0-D, exact up to 2²⁴ steps), "<param>.exp_avg" and
// "<param>.exp_avg_sq" (the parameter's shape), as PyTorch's state names.
type Adam struct {
	paramSet
	c         AdamConfig
	decoupled bool
	step      []int
	m, v      [][]float32
}

// NewAdam returns an Adam optimizer (weight decay as an L2 gradient term).
func NewAdam(params []Named, c AdamConfig) (*Adam, error) { return newAdam("Adam", params, c, false) }

// NewAdamW returns an AdamW optimizer (decoupled weight decay p ← p − lr·wd·p).
func NewAdamW(params []Named, c AdamConfig) (*Adam, error) { return newAdam("AdamW", params, c, true) }

func newAdam(op string, params []Named, c AdamConfig, decoupled bool) (*Adam, error) {
	if c.Beta1 == 0 {
		c.Beta1 = 0.9
	}
	if c.Beta2 == 0 {
		c.Beta2 = 0.999
	}
	if c.Eps == 0 {
		c.Eps = 1e-8
	}
	switch {
	case !(c.LR >= 0):
		return nil, fmt.Errorf("nn: %s: learning rate %g: want ≥ 0", op, c.LR)
	case !(c.Beta1 > 0 && c.Beta1 < 1) || !(c.Beta2 > 0 && c.Beta2 < 1):
		return nil, fmt.Errorf("nn: %s: betas (%g, %g): want in (0, 1)", op, c.Beta1, c.Beta2)
	case !(c.Eps > 0):
		return nil, fmt.Errorf("nn: %s: eps %g: want > 0", op, c.Eps)
	case !(c.WeightDecay >= 0):
		return nil, fmt.Errorf("nn: %s: weight decay %g: want ≥ 0", op, c.WeightDecay)
	}
	ps, err := newParamSet(op, params, c.WeightDecay, c.NoDecay)
	if err != nil {
		return nil, err
	}
	n := len(ps.ts)
	return &Adam{paramSet: ps, c: c, decoupled: decoupled,
		step: make([]int, n), m: make([][]float32, n), v: make([][]float32, n)}, nil
}

func (o *Adam) name() string {
	if o.decoupled {
		return "AdamW"
	}
	return "Adam"
}

// LR returns the learning rate.
func (o *Adam) LR() float64 { return o.c.LR }

// SetLR sets the learning rate.
func (o *Adam) SetLR(lr float64) { o.c.LR = lr }

// Step applies one Adam or AdamW update.
func (o *Adam) Step() {
	lr, b1, b2, eps := o.c.LR, o.c.Beta1, o.c.Beta2, o.c.Eps
	for i, p := range o.ts {
		gt := p.Grad()
		if gt == nil {
			continue
		}
		d, g := p.Data(), gt.Data()
		if o.m[i] == nil {
			o.m[i] = make([]float32, len(d))
			o.v[i] = make([]float32, len(d))
		}
		o.step[i]++
		t := float64(o.step[i])
		bc1 := 1 - math.Pow(b1, t)
		bc2sqrt := math.Sqrt(1 - math.Pow(b2, t))
		stepSize := lr / bc1
		wd := 0.0
		if o.decay[i] {
			wd = o.c.WeightDecay
		}
		m, v := o.m[i], o.v[i]
		for j := range d {
			pj := float64(d[j])
			gj := float64(g[j])
			if o.decoupled {
				pj *= 1 - lr*wd
			} else {
				gj += wd * pj
			}
			mj := b1*float64(m[j]) + (1-b1)*gj
			vj := b2*float64(v[j]) + (1-b2)*gj*gj
			m[j], v[j] = float32(mj), float32(vj)
			d[j] = float32(pj - stepSize*mj/(math.Sqrt(vj)/bc2sqrt+eps))
		}
	}
}

// State returns the step counts and moment estimates.
func (o *Adam) State() []Named {
	var out []Named
	for i, name := range o.names {
		if o.m[i] == nil {
			continue
		}
		sh := o.ts[i].Shape()
		out = append(out,
			Named{name + ".step", tensor.Scalar(float32(o.step[i]))},
			Named{name + ".exp_avg", copyTensor(o.m[i], sh)},
			Named{name + ".exp_avg_sq", copyTensor(o.v[i], sh)})
	}
	return out
}

// LoadState restores state saved by State; parameters absent from state
// start afresh. A parameter must have all three entries or none. Unknown
// names and wrong shapes are errors, and then nothing is changed.
func (o *Adam) LoadState(state []Named) error {
	n := len(o.ts)
	step := make([]int, n)
	m, v := make([][]float32, n), make([][]float32, n)
	have := make([]int, n)
	for _, s := range state {
		i, suf, err := o.lookupState(o.name(), s, "step", "exp_avg_sq", "exp_avg")
		if err != nil {
			return err
		}
		have[i]++
		switch suf {
		case "step":
			f := s.Tensor.Item()
			if f < 1 || f != float32(math.Trunc(float64(f))) {
				return fmt.Errorf("nn: %s: load state %s: step %g: want a positive integer", o.name(), s.Name, f)
			}
			step[i] = int(f)
		case "exp_avg":
			m[i] = append([]float32(nil), s.Tensor.Data()...)
		case "exp_avg_sq":
			v[i] = append([]float32(nil), s.Tensor.Data()...)
		}
	}
	for i, h := range have {
		if h != 0 && (step[i] == 0 || m[i] == nil || v[i] == nil || h != 3) {
			return fmt.Errorf("nn: %s: load state: parameter %q needs step, exp_avg and exp_avg_sq exactly once", o.name(), o.names[i])
		}
	}
	o.step, o.m, o.v = step, m, v
	return nil
}

// ClipGradNorm scales the gradients of params in place so that their global
// L2 norm is at most maxNorm, as torch.nn.utils.clip_grad_norm_: with
// total = √(Σ g²) over all elements of all gradients, every gradient is
// multiplied by min(1, maxNorm/(total + 1e-6)). It returns total (before
// clipping). Parameters without gradients are ignored.
func ClipGradNorm(params []Named, maxNorm float64) float64 {
	var ss float64
	for _, p := range params {
		if g := p.Tensor.Grad(); g != nil {
			for _, v := range g.Data() {
				ss += float64(v) * float64(v)
			}
		}
	}
	total := math.Sqrt(ss)
	coef := maxNorm / (total + 1e-6)
	if coef < 1 {
		for _, p := range params {
			if g := p.Tensor.Grad(); g != nil {
				d := g.Data()
				for j := range d {
					d[j] = float32(float64(d[j]) * coef)
				}
			}
		}
	}
	return total
}
