package nas

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/ctlens/ctlens/net3d"
)

// Derive returns the architecture of the logits alpha (one vector per
// cell): the argmax candidate of each cell (the first on a tie). With a
// budget target > 0 on the cost C(c) = base + Σ_i cand[i][c_i], while C
// exceeds it, the cell change that gives up the least log-probability per
// unit of cost saved is made:
//
//	argmin over (i, j) with cand[i][j] < cand[i][c_i] of
//	(log p_i[c_i] − log p_i[j]) / (cand[i][c_i] − cand[i][j]),  p_i = softmax(α_i).
//
// A target below the cheapest architecture is an error.
func Derive(alpha [][]float64, base float64, cand [][]float64, target float64) ([]int, error) {
	if len(alpha) != len(cand) {
		return nil, fmt.Errorf("nas: derive: %d logit vectors for %d cells", len(alpha), len(cand))
	}
	choices := make([]int, len(alpha))
	logp := make([][]float64, len(alpha))
	cost := base
	for i, a := range alpha {
		if len(a) != len(cand[i]) || len(a) == 0 {
			return nil, fmt.Errorf("nas: derive: cell %d has %d logits for %d candidates", i, len(a), len(cand[i]))
		}
		choices[i] = argmax64(a)
		p := Softmax64(a)
		logp[i] = make([]float64, len(p))
		for j, v := range p {
			logp[i][j] = math.Log(v)
		}
		cost += cand[i][choices[i]]
	}
	if !(target > 0) {
		return choices, nil
	}
	if lo := minCost(base, cand); lo > target {
		return nil, fmt.Errorf("nas: derive: budget %g is below the cheapest architecture (%g)", target, lo)
	}
	const tol = 1e-12
	for cost > target*(1+tol) {
		bi, bj := -1, -1
		var bestRatio, bestSave float64
		for i := range cand {
			c := choices[i]
			for j, v := range cand[i] {
				save := cand[i][c] - v
				if save <= 0 {
					continue
				}
				ratio := (logp[i][c] - logp[i][j]) / save
				if bi < 0 || ratio < bestRatio || (ratio == bestRatio && save > bestSave) {
					bi, bj, bestRatio, bestSave = i, j, ratio, save
				}
			}
		}
		if bi < 0 {
			return nil, fmt.Errorf("nas: derive: budget %g cannot be met (cost %g)", target, cost)
		}
		cost -= bestSave
		choices[bi] = bj
	}
	return choices, nil
}

// NNIArch returns the architecture as the reference's NNI checkpoint
// writes it: {cell key: one-hot list of booleans over its candidates}.
func NNIArch(cells []net3d.CellInfo, choices []int) (map[string][]bool, error) {
	if len(cells) != len(choices) {
		return nil, fmt.Errorf("nas: %d choices for %d cells", len(choices), len(cells))
	}
	out := map[string][]bool{}
	for i, ci := range cells {
		if choices[i] < 0 || choices[i] >= len(ci.Candidates) {
			return nil, fmt.Errorf("nas: choice %d for cell %s: want 0–%d", choices[i], ci.Key, len(ci.Candidates)-1)
		}
		m := make([]bool, len(ci.Candidates))
		m[choices[i]] = true
		out[ci.Key] = m
	}
	return out, nil
}

// RandomLike draws tries architectures with a uniformly random candidate
// per cell and returns the one whose cost in metric is closest to target
// (the first on a tie), with that cost: a random single-path architecture
// of (nearly) equal size, for comparison with a searched one.
func RandomLike(c *Costs, metric Metric, target float64, tries int, rng *rand.Rand) ([]int, float64, error) {
	if tries < 1 {
		return nil, 0, fmt.Errorf("nas: random architecture: %d tries: want at least 1", tries)
	}
	base, cand, err := c.Table(metric)
	if err != nil {
		return nil, 0, err
	}
	var best []int
	bestCost := math.Inf(1)
	ch := make([]int, len(cand))
	for range tries {
		cost := base
		for i := range cand {
			ch[i] = rng.IntN(len(cand[i]))
			cost += cand[i][ch[i]]
		}
		if best == nil || math.Abs(cost-target) < math.Abs(bestCost-target) {
			best, bestCost = append([]int(nil), ch...), cost
		}
	}
	return best, bestCost, nil
}
