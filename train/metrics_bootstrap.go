package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// DefaultResamples is the number of bootstrap resamples when
// BootstrapOptions.Resamples is 0.
const DefaultResamples = 1000

// BootstrapOptions configures Bootstrap. The zero value means 1000
// resamples, a 95% interval and seed 0.
type BootstrapOptions struct {
	// Resamples is B, the number of resamples (0: DefaultResamples).
	Resamples int `json:"resamples"`
	// Level is the two-sided coverage in (0, 1) (0: 0.95).
	Level float64 `json:"level"`
	// Seed seeds the resampling; equal seeds give equal intervals.
	Seed uint64 `json:"seed"`
}

// Interval is a percentile bootstrap confidence interval of one metric.
type Interval struct {
	// Point is the metric on the full data.
	Point float64 `json:"point"`
	// Lo and Hi are the (1−Level)/2 and (1+Level)/2 quantiles of the metric
	// over the resamples where it is defined (linear interpolation between
	// order statistics, numpy.percentile's default); NaN (null in JSON) when
	// it is defined in none.
	Lo float64 `json:"lo"`
	Hi float64 `json:"hi"`
	// Valid is the number of resamples that entered the quantiles.
	Valid int `json:"valid"`
}

// BootstrapCI holds percentile bootstrap confidence intervals of accuracy,
// macro F1 and macro AUC.
type BootstrapCI struct {
	// Resamples, Level and Seed are the options used (defaults filled in).
	Resamples int     `json:"resamples"`
	Level     float64 `json:"level"`
	Seed      uint64  `json:"seed"`
	// Accuracy is the interval of Metrics.Accuracy.
	Accuracy Interval `json:"accuracy"`
	// MacroF1 is the interval of Metrics.Macro.F1 (every class counts, a
	// class absent from a resample with F1 0, as in the point estimate).
	MacroF1 Interval `json:"macro_f1"`
	// MacroAUC is the interval of Metrics.Macro.AUC over the classes whose
	// AUC is defined on the full data; a resample in which one of them has no
	// positives or no negatives is left out (see Note).
	MacroAUC Interval `json:"macro_auc"`
	// Note says how many resamples the AUC interval left out, if any.
	Note string `json:"note,omitempty"`
}

// Bootstrap estimates confidence intervals of accuracy, macro F1 and macro
// AUC (as ComputeMetrics defines them) by the percentile bootstrap: B
// resamples of N samples drawn uniformly with replacement from the N
// (label, probability row) pairs, the metric computed on each, and the
// interval read off the resampled values' quantiles. The resampling is
// driven by a PCG generator seeded with opt.Seed, so equal inputs and seeds
// give equal intervals. Input is validated as by ComputeMetrics, with K the
// length of the probability rows.
func Bootstrap(labels []int, probs [][]float64, opt BootstrapOptions) (BootstrapCI, error) {
	if opt.Resamples == 0 {
		opt.Resamples = DefaultResamples
	}
	if opt.Level == 0 {
		opt.Level = 0.95
	}
	if opt.Resamples < 0 {
		return BootstrapCI{}, fmt.Errorf("train: bootstrap: %d resamples, want > 0", opt.Resamples)
	}
	if !(opt.Level > 0 && opt.Level < 1) {
		return BootstrapCI{}, fmt.Errorf("train: bootstrap: level %v, want in (0, 1)", opt.Level)
	}
	k := 0
	if len(probs) > 0 {
		k = len(probs[0])
	}
	if err := validatePredictions(labels, probs, k); err != nil {
		return BootstrapCI{}, fmt.Errorf("train: bootstrap: %w", err)
	}
	n := len(labels)
	pred := argmaxRows(probs)
	// Per class: the samples ordered by decreasing score and the truth.
	orders := make([][]int, k)
	scores := make([][]float64, k)
	truth := make([][]bool, k)
	for c := 0; c < k; c++ {
		scores[c] = column(probs, c)
		orders[c] = descendingOrder(scores[c])
		truth[c] = make([]bool, n)
		for i, y := range labels {
			truth[c][i] = y == c
		}
	}

	weights := make([]int, n)
	eval := func() (acc, f1 float64, auc float64, aucOK bool, defined []bool) {
		tp := make([]int, k)
		fp := make([]int, k)
		fn := make([]int, k)
		correct := 0
		for i, w := range weights {
			if w == 0 {
				continue
			}
			y, p := labels[i], pred[i]
			if y == p {
				correct += w
				tp[y] += w
			} else {
				fp[p] += w
				fn[y] += w
			}
		}
		acc = float64(correct) / float64(n)
		for c := 0; c < k; c++ {
			f1 += safeRatio(2*tp[c], 2*tp[c]+fp[c]+fn[c]) / float64(k)
		}
		defined = make([]bool, k)
		sum, m := 0.0, 0
		for c := 0; c < k; c++ {
			if a, ok := weightedAUC(orders[c], scores[c], truth[c], weights); ok {
				defined[c] = true
				sum += a
				m++
			}
		}
		if m == 0 {
			return acc, f1, math.NaN(), false, defined
		}
		return acc, f1, sum / float64(m), true, defined
	}

	for i := range weights {
		weights[i] = 1
	}
	acc0, f10, auc0, _, defined0 := eval()

	rng := rand.New(rand.NewPCG(opt.Seed, 0x9e3779b97f4a7c15))
	accs := make([]float64, 0, opt.Resamples)
	f1s := make([]float64, 0, opt.Resamples)
	aucs := make([]float64, 0, opt.Resamples)
	anyDefined := false
	for _, d := range defined0 {
		anyDefined = anyDefined || d
	}
	for b := 0; b < opt.Resamples; b++ {
		clear(weights)
		for j := 0; j < n; j++ {
			weights[rng.IntN(n)]++
		}
		acc, f1, auc, ok, defined := eval()
		accs = append(accs, acc)
		f1s = append(f1s, f1)
		if !ok || !anyDefined {
			continue
		}
		same := true
		for c := range defined {
			if defined0[c] && !defined[c] {
				same = false
			}
		}
		if same {
			aucs = append(aucs, auc)
		}
	}
	level := opt.Level
	ci := BootstrapCI{
		Resamples: opt.Resamples,
		Level:     level,
		Seed:      opt.Seed,
		Accuracy:  percentileInterval(acc0, accs, level),
		MacroF1:   percentileInterval(f10, f1s, level),
		MacroAUC:  percentileInterval(auc0, aucs, level),
	}
	switch {
	case !anyDefined:
		ci.Note = "macro AUC undefined: no class has both positive and negative samples"
	case len(aucs) < opt.Resamples:
		ci.Note = fmt.Sprintf("macro AUC: %d of %d resamples left out (a class lacked positives or negatives)",
			opt.Resamples-len(aucs), opt.Resamples)
	}
	return ci, nil
}

// percentileInterval is the interval of point from the resampled values at
// the two-sided level.
func percentileInterval(point float64, values []float64, level float64) Interval {
	iv := Interval{Point: point, Lo: math.NaN(), Hi: math.NaN(), Valid: len(values)}
	if len(values) == 0 {
		return iv
	}
	sorted := append([]float64(nil), values...)
	sort.Float64s(sorted)
	alpha := (1 - level) / 2
	iv.Lo = quantileSorted(sorted, alpha)
	iv.Hi = quantileSorted(sorted, 1-alpha)
	return iv
}

// quantileSorted is the q-quantile of ascending x by linear interpolation
// between order statistics: with h = (n−1)·q, x[⌊h⌋] + (h−⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋])
// (numpy.percentile's "linear" method, Hyndman-Fan type 7).
func quantileSorted(x []float64, q float64) float64 {
	h := float64(len(x)-1) * q
	lo := int(math.Floor(h))
	if lo >= len(x)-1 {
		return x[len(x)-1]
	}
	if lo < 0 {
		return x[0]
	}
	return x[lo] + (h-float64(lo))*(x[lo+1]-x[lo])
}
