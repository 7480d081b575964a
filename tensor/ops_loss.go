package tensor

import (
	"math"
	"math/rand/v2"
)

// Reduction selects how a loss reduces per-element values.
type Reduction int

const (
	// ReduceMean averages (for weighted cross-entropy: divides by the sum of
	// the targets' weights, as PyTorch).
	ReduceMean Reduction = iota
	// ReduceSum adds.
	ReduceSum
	// ReduceNone returns per-sample values.
	ReduceNone
)

// CEOpts configures CrossEntropy.
type CEOpts struct {
	Weight         []float32 // per-class weights, or nil
	LabelSmoothing float32   // in [0, 1)
	Reduction      Reduction
}

// CrossEntropy returns the cross-entropy between logits (N×C) and class
// indices target (length N, each in [0, C)), as
// torch.nn.functional.cross_entropy with weight, label_smoothing and
// reduction. With logp = log_softmax(logits) along the classes, class
// weights w (all 1 when nil) and smoothing ε, sample n with target y has
//
//	l_n = -(1-ε)·w_y·logp[n,y] - (ε/C)·Σ_c w_c·logp[n,c]
//
// ReduceNone returns l (shape N), ReduceSum the scalar Σ_n l_n, and
// ReduceMean the scalar Σ_n l_n / Σ_n w_{y_n}.
func CrossEntropy(logits *Tensor, target []int, o CEOpts) *Tensor {
	const op = "CrossEntropy"
	if logits.Dim() != 2 {
		shapeErr(op, "logits of shape %v; want N×C", logits.shape)
	}
	n, c := logits.shape[0], logits.shape[1]
	if len(target) != n {
		shapeErr(op, "%d targets for logits of shape %v", len(target), logits.shape)
	}
	if o.Weight != nil && len(o.Weight) != c {
		shapeErr(op, "%d class weights for %d classes", len(o.Weight), c)
	}
	eps := float64(o.LabelSmoothing)
	if !(eps >= 0 && eps < 1) {
		shapeErr(op, "label smoothing %v outside [0, 1)", o.LabelSmoothing)
	}
	if o.Reduction < ReduceMean || o.Reduction > ReduceNone {
		shapeErr(op, "unknown reduction %d", o.Reduction)
	}
	for i, y := range target {
		if y < 0 || y >= c {
			shapeErr(op, "target %d of sample %d outside [0, %d)", y, i, c)
		}
	}
	if c == 0 {
		shapeErr(op, "logits of shape %v have no classes", logits.shape)
	}
	w := func(k int) float64 {
		if o.Weight == nil {
			return 1
		}
		return float64(o.Weight[k])
	}
	wAll := 0.0
	for k := range c {
		wAll += w(k)
	}
	// prob holds softmax(logits) for the backward pass; loss the per-sample
	// values; wSum the normaliser of ReduceMean.
	prob := make([]float64, n*c)
	loss := make([]float64, n)
	wSum := 0.0
	x := logits.data
	for i := range n {
		row := x[i*c : (i+1)*c]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, float64(v))
		}
		s := 0.0
		for k, v := range row {
			e := math.Exp(float64(v) - m)
			prob[i*c+k] = e
			s += e
		}
		lse := m + math.Log(s)
		smooth := 0.0
		for k, v := range row {
			prob[i*c+k] /= s
			if eps != 0 {
				smooth -= w(k) * (float64(v) - lse)
			}
		}
		y := target[i]
		loss[i] = -(1-eps)*w(y)*(float64(row[y])-lse) + eps/float64(c)*smooth
		wSum += w(y)
	}

	var out *Tensor
	switch o.Reduction {
	case ReduceNone:
		out = Zeros(n)
		for i, v := range loss {
			out.data[i] = float32(v)
		}
	default:
		s := 0.0
		for _, v := range loss {
			s += v
		}
		if o.Reduction == ReduceMean {
			s /= wSum
		}
		out = Scalar(float32(s))
	}
	return record(out, func(g *Tensor) {
		// dl_n/dx[n,j] = p_j·A - a_j with a_k = (1-ε)·w_y·[k=y] + (ε/C)·w_k
		// and A = Σ_k a_k = (1-ε)·w_y + (ε/C)·Σ_k w_k.
		gx := Zeros(n, c)
		for i := range n {
			var scale float64
			switch o.Reduction {
			case ReduceNone:
				scale = float64(g.data[i])
			case ReduceSum:
				scale = float64(g.data[0])
			default:
				scale = float64(g.data[0]) / wSum
			}
			y := target[i]
			a := (1-eps)*w(y) + eps/float64(c)*wAll
			for k := range c {
				d := prob[i*c+k] * a
				if eps != 0 {
					d -= eps / float64(c) * w(k)
				}
				if k == y {
					d -= (1 - eps) * w(y)
				}
				gx.data[i*c+k] = float32(scale * d)
			}
		}
		accumulate(logits, gx)
	}, logits)
}

// lossPair checks that x and y have the same shape for op.
func lossPair(op string, x, y *Tensor) {
	if !SameShape(x.shape, y.shape) {
		shapeErr(op, "input of shape %v and target of shape %v differ", x.shape, y.shape)
	}
}

// lossGrads accumulates d·g into x's gradient and -d·g into y's, for a
// scalar upstream gradient g and per-element derivatives d of a loss with
// respect to x (which are the negated derivatives with respect to y).
func lossGrads(x, y *Tensor, d []float64, g float64) {
	if x.requiresGrad {
		gx := ZerosLike(x)
		for i, v := range d {
			gx.data[i] = float32(g * v)
		}
		accumulate(x, gx)
	}
	if y.requiresGrad {
		gy := ZerosLike(y)
		for i, v := range d {
			gy.data[i] = float32(-g * v)
		}
		accumulate(y, gy)
	}
}

// SmoothL1 returns the mean smooth-L1 (Huber with threshold beta) loss
// between x and y (same shapes), as torch.nn.functional.smooth_l1_loss:
// the scalar mean over elements of 0.5·d²/beta where |d| < beta and
// |d| - 0.5·beta elsewhere, d = x - y (beta = 0 gives the L1 loss).
func SmoothL1(x, y *Tensor, beta float32) *Tensor {
	lossPair("SmoothL1", x, y)
	if !(beta >= 0) {
		shapeErr("SmoothL1", "beta %v is negative", beta)
	}
	b := float64(beta)
	n := x.Len()
	d := make([]float64, n) // derivative of each term with respect to x
	s := 0.0
	for i := range n {
		diff := float64(x.data[i]) - float64(y.data[i])
		ad := math.Abs(diff)
		if ad < b {
			s += 0.5 * diff * diff / b
			d[i] = diff / b
		} else {
			s += ad - 0.5*b
			switch {
			case diff > 0:
				d[i] = 1
			case diff < 0:
				d[i] = -1
			}
		}
	}
	out := Scalar(float32(s / float64(n)))
	return record(out, func(g *Tensor) {
		lossGrads(x, y, d, float64(g.data[0])/float64(n))
	}, x, y)
}

// MSE returns the mean squared error between x and y (same shapes): the
// scalar mean over elements of (x - y)², as torch.nn.functional.mse_loss.
func MSE(x, y *Tensor) *Tensor {
	lossPair("MSE", x, y)
	n := x.Len()
	d := make([]float64, n)
	s := 0.0
	for i := range n {
		diff := float64(x.data[i]) - float64(y.data[i])
		s += diff * diff
		d[i] = 2 * diff
	}
	out := Scalar(float32(s / float64(n)))
	return record(out, func(g *Tensor) {
		lossGrads(x, y, d, float64(g.data[0])/float64(n))
	}, x, y)
}

// lossUniform draws from rng, or from the global generator when rng is nil.
func lossUniform(rng *rand.Rand) float64 {
	if rng == nil {
		return rand.Float64()
	}
	return rng.Float64()
}

// maskScale returns x·m elementwise, m broadcast over blocks of block
// consecutive elements (m[i] applies to x[i·block : (i+1)·block]), with the
// matching gradient g·m.
func maskScale(x *Tensor, m []float32, block int) *Tensor {
	out := ZerosLike(x)
	for i, v := range x.data {
		out.data[i] = v * m[i/block]
	}
	return record(out, func(g *Tensor) {
		gx := ZerosLike(x)
		for i, v := range g.data {
			gx.data[i] = v * m[i/block]
		}
		accumulate(x, gx)
	}, x)
}

// bernoulliScale returns n multipliers: 0 with probability p, 1/(1-p)
// otherwise (all 0 when p = 1).
func bernoulliScale(n int, p float32, rng *rand.Rand) []float32 {
	m := make([]float32, n)
	if p >= 1 {
		return m
	}
	keep := 1 / (1 - p)
	for i := range m {
		if lossUniform(rng) >= float64(p) {
			m[i] = keep
		}
	}
	return m
}

// Dropout returns x with each element zeroed with probability p and the rest
// scaled by 1/(1-p) when training (all zeros when p = 1), as
// torch.nn.functional.dropout; otherwise, or when p = 0, it returns x
// itself. Draws come from rng, or the global generator when rng is nil.
// p outside [0, 1] panics with a *ShapeError.
func Dropout(x *Tensor, p float32, training bool, rng *rand.Rand) *Tensor {
	if !(p >= 0 && p <= 1) {
		shapeErr("Dropout", "probability %v outside [0, 1]", p)
	}
	if !training || p == 0 {
		return x
	}
	return maskScale(x, bernoulliScale(x.Len(), p, rng), 1)
}

// StochasticDepth drops whole samples (batch mode false: each sample of the
// first dim independently, torchvision's "row") or the whole batch (true)
// with probability p and scales survivors by 1/(1-p) when training, as
// torchvision.ops.stochastic_depth; otherwise, or when p = 0, it returns x
// itself. Draws come from rng, or the global generator when rng is nil.
// p outside [0, 1] panics with a *ShapeError.
func StochasticDepth(x *Tensor, p float32, wholeBatch, training bool, rng *rand.Rand) *Tensor {
	if !(p >= 0 && p <= 1) {
		shapeErr("StochasticDepth", "probability %v outside [0, 1]", p)
	}
	if !training || p == 0 {
		return x
	}
	if x.Dim() == 0 || wholeBatch || x.shape[0] == 0 {
		return maskScale(x, bernoulliScale(1, p, rng), max(x.Len(), 1))
	}
	return maskScale(x, bernoulliScale(x.shape[0], p, rng), x.Len()/x.shape[0])
}
