package nas

import (
	"fmt"
	"math"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// Costs holds the parameter and multiply-accumulate counts of the
// candidates of a supernet at one input size, computed once, so that the
// cost of any single-path architecture is a sum:
//
//	params(c) = BaseParams + Σ_i Params[i][c_i]
//	MACs(c)   = BaseMACs   + Σ_i MACs[i][c_i]
//
// (every candidate maps W channels to W channels at stride 1, so a cell's
// choice changes nothing else). Base counts the stem, blocks.0, the
// calibration convolutions, feature_mix_layer and the classifier.
type Costs struct {
	// Input is the D×H×W input size the MACs are counted for (batch 1).
	Input [3]int `json:"input"`
	// BaseParams and BaseMACs count the layers every architecture has.
	BaseParams int   `json:"base_params"`
	BaseMACs   int64 `json:"base_macs"`
	// Params[i][j] and MACs[i][j] count candidate j of cell i (0 for the
	// identity and zero candidates).
	Params [][]int   `json:"params"`
	MACs   [][]int64 `json:"macs"`
}

// NewCosts counts the candidates of sn: parameters with nn.NumParams of
// each candidate module, MACs with tensor.CountMACs of one forward pass
// of each candidate on a zero input of its cell's shape (1×W×d×h×w, the
// spatial size after the stem and the stride-2 calibrations, each
// n → ⌊(n−1)/2⌋+1), and the base from one forward pass of the all-zero
// architecture derived from sn. sn's training mode is restored.
func NewCosts(sn *net3d.Supernet, input [3]int) (*Costs, error) {
	for _, v := range input {
		if v < 1 {
			return nil, fmt.Errorf("nas: costs: input %v: want positive sizes", input)
		}
	}
	c := &Costs{Input: input}
	cells := sn.Cells()
	var blocks []*net3d.MobileInvertedResidualBlock
	for _, b := range sn.Blocks.All() {
		if mb, ok := b.(*net3d.MobileInvertedResidualBlock); ok {
			blocks = append(blocks, mb)
		}
	}
	if len(blocks) != len(cells) {
		return nil, fmt.Errorf("nas: costs: supernet has %d cell blocks for %d cells", len(blocks), len(cells))
	}
	training := sn.Training()
	defer nn.SetTraining(sn, training)
	nn.SetTraining(sn, false)

	sp := input
	for i := range sp {
		sp[i] = (sp[i]-1)/2 + 1 // first_conv: k 3, pad 1, stride 2
	}
	total := nn.NumParams(sn)
	candParams := 0
	err := tensor.Catch(func() {
		for i, ci := range cells {
			if ci.Stride == 2 {
				for d := range sp {
					sp[d] = (sp[d]-1)/2 + 1
				}
			}
			var ps []int
			var ms []int64
			for j := range ci.Candidates {
				op := blocks[i].MobileInvertedConv.Choices.At(j)
				p, m := 0, int64(0)
				if _, ok := op.(*net3d.MBConv); ok {
					p = nn.NumParams(op)
					x := tensor.Zeros(1, ci.Width, sp[0], sp[1], sp[2])
					m = tensor.CountMACs(func() { op.Forward(x) })
				}
				ps = append(ps, p)
				ms = append(ms, m)
				candParams += p
			}
			c.Params = append(c.Params, ps)
			c.MACs = append(c.MACs, ms)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("nas: costs at input %v: %w", input, err)
	}
	c.BaseParams = total - candParams

	zero := make([]int, len(cells))
	for i := range zero {
		zero[i] = net3d.OpZero
	}
	m, err := sn.Derive(zero)
	if err != nil {
		return nil, err
	}
	nn.SetTraining(m, false)
	nn.SetRequiresGrad(m, false)
	x := tensor.Zeros(1, sn.Spec().InChannels, input[0], input[1], input[2])
	var ferr error
	c.BaseMACs = tensor.CountMACs(func() { _, ferr = nn.Run(m, x) })
	if ferr != nil {
		return nil, fmt.Errorf("nas: costs: input %v: %w", input, ferr)
	}
	return c, nil
}

// check verifies that choices fit the table.
func (c *Costs) check(choices []int) error {
	if len(choices) != len(c.Params) {
		return fmt.Errorf("nas: costs: %d choices for %d cells", len(choices), len(c.Params))
	}
	for i, j := range choices {
		if j < 0 || j >= len(c.Params[i]) {
			return fmt.Errorf("nas: costs: choice %d for cell %d: want 0–%d", j, i, len(c.Params[i])-1)
		}
	}
	return nil
}

// Of returns the parameter and MAC counts of the single-path architecture
// with the given choices (see Costs).
func (c *Costs) Of(choices []int) (params int, macs int64, err error) {
	if err := c.check(choices); err != nil {
		return 0, 0, err
	}
	params, macs = c.BaseParams, c.BaseMACs
	for i, j := range choices {
		params += c.Params[i][j]
		macs += c.MACs[i][j]
	}
	return params, macs, nil
}

// SizeMB converts a parameter count to the reference's model size,
// params·4/1024² (float32 weights).
func SizeMB(params int) float64 { return float64(params) * 4 / (1024 * 1024) }

// Metric names the resource a search penalises or bounds.
type Metric string

const (
	// MetricSize is the model size in MB, params·4/1024².
	MetricSize Metric = "size_mb"
	// MetricMACs is millions of multiply-accumulates per scan at the search input.
	MetricMACs Metric = "mmacs"
)

// Table returns the base cost and the per-candidate costs in the units of
// metric (MB or millions of MACs).
func (c *Costs) Table(metric Metric) (base float64, cand [][]float64, err error) {
	switch metric {
	case MetricSize:
		base = SizeMB(c.BaseParams)
	case MetricMACs:
		base = float64(c.BaseMACs) / 1e6
	default:
		return 0, nil, fmt.Errorf("nas: unknown cost metric %q (want %s or %s)", metric, MetricSize, MetricMACs)
	}
	for i := range c.Params {
		row := make([]float64, len(c.Params[i]))
		for j := range row {
			if metric == MetricSize {
				row[j] = SizeMB(c.Params[i][j])
			} else {
				row[j] = float64(c.MACs[i][j]) / 1e6
			}
		}
		cand = append(cand, row)
	}
	return base, cand, nil
}

// Cost returns the cost of choices in the units of metric.
func (c *Costs) Cost(choices []int, metric Metric) (float64, error) {
	p, m, err := c.Of(choices)
	if err != nil {
		return 0, err
	}
	switch metric {
	case MetricSize:
		return SizeMB(p), nil
	case MetricMACs:
		return float64(m) / 1e6, nil
	}
	return 0, fmt.Errorf("nas: unknown cost metric %q (want %s or %s)", metric, MetricSize, MetricMACs)
}

// Resource configures the resource term of the architecture loss. With
// p_i = softmax(α_i) the expected cost is
//
//	E[C] = base + Σ_i Σ_j p_ij·cost_ij
//
// in the units of Metric, and the term added to the architecture loss is
//
//	λ·E[C]                    when Target is 0 (a size penalty), or
//	λ·max(0, E[C]/Target − 1) when Target > 0 (a budget, e.g. --max-mb),
//
// λ = Weight. A budget term is applied only while the argmax architecture
// of α costs more than Target: E[C] over the still nearly uniform
// softmax(α) stays above the budget long after the argmax meets it, and
// pushing on would drive every cell to the parameter-free ops. The
// derived architecture is held under the budget (see Derive).
type Resource struct {
	Metric Metric  `json:"metric,omitempty"`
	Weight float64 `json:"weight,omitempty"`
	Target float64 `json:"target,omitempty"`
}

// Active reports whether the term is used.
func (r Resource) Active() bool { return r.Weight > 0 || r.Target > 0 }

// Validate checks the metric and that weight and target are finite and ≥ 0.
func (r Resource) Validate() error {
	if !r.Active() {
		return nil
	}
	if r.Metric != MetricSize && r.Metric != MetricMACs {
		return fmt.Errorf("nas: resource metric %q: want %s or %s", r.Metric, MetricSize, MetricMACs)
	}
	if !(r.Weight >= 0) || math.IsInf(r.Weight, 0) {
		return fmt.Errorf("nas: resource weight %g: want a finite value ≥ 0", r.Weight)
	}
	if !(r.Target >= 0) || math.IsInf(r.Target, 0) {
		return fmt.Errorf("nas: resource target %g: want a finite value ≥ 0", r.Target)
	}
	return nil
}

// ExpectedCost returns E[C] = base + Σ_i Σ_j softmax(α_i)_j·cand[i][j] as a
// graph of the architecture logits alphas (one [K_i] tensor per cell).
func ExpectedCost(alphas []*tensor.Tensor, base float64, cand [][]float64) (*tensor.Tensor, error) {
	if len(alphas) != len(cand) {
		return nil, fmt.Errorf("nas: expected cost: %d logit vectors for %d cells", len(alphas), len(cand))
	}
	var e *tensor.Tensor
	err := tensor.Catch(func() {
		e = tensor.Scalar(float32(base))
		for i, a := range alphas {
			if a.Dim() != 1 || a.Size(0) != len(cand[i]) {
				panic(&tensor.ShapeError{Op: "nas.ExpectedCost", Msg: fmt.Sprintf("cell %d: logits of shape %v for %d candidates", i, a.Shape(), len(cand[i]))})
			}
			c := make([]float32, len(cand[i]))
			for j, v := range cand[i] {
				c[j] = float32(v)
			}
			e = tensor.Add(e, tensor.SumAll(tensor.Mul(tensor.Softmax(a, 0), tensor.New(c, len(c)))))
		}
	})
	return e, err
}
