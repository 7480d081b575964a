package train

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
)

// sklearnPython is Debian's interpreter, the one python3-sklearn installs into.
const sklearnPython = "/usr/bin/python3"

// needSklearn skips the test when scikit-learn is unavailable outside CI;
// under CI (CTLENS_CI set) a missing scikit-learn is a failure.
func needSklearn(t *testing.T) {
	t.Helper()
	out, err := exec.Command(sklearnPython, "-c", "import sklearn, numpy").CombinedOutput()
	if err == nil {
		return
	}
	if os.Getenv("CTLENS_CI") == "" {
		t.Skipf("%s cannot import sklearn and numpy (%v: %s); CTLENS_CI is unset", sklearnPython, err, out)
	}
	t.Fatalf("%s cannot import sklearn and numpy (install python3-sklearn): %v: %s", sklearnPython, err, out)
}

type refCase struct {
	Name   string      `json:"name"`
	K      int         `json:"k"`
	Labels []int       `json:"labels"`
	Probs  [][]float64 `json:"probs"`
}

type refQuantiles struct {
	Values []float64 `json:"values"`
	Q      []float64 `json:"q"`
}

type refAverages struct {
	Precision, Recall, F1, Specificity float64
}

type refROC struct {
	FPR        []float64  `json:"fpr"`
	TPR        []float64  `json:"tpr"`
	Thresholds []*float64 `json:"thresholds"`
}

type refResult struct {
	Name          string      `json:"name"`
	Pred          []int       `json:"pred"`
	Accuracy      float64     `json:"accuracy"`
	Precision     []float64   `json:"precision"`
	Recall        []float64   `json:"recall"`
	F1            []float64   `json:"f1"`
	Specificity   []float64   `json:"specificity"`
	Support       []int       `json:"support"`
	Macro         refAverages `json:"macro"`
	Weighted      refAverages `json:"weighted"`
	Confusion     [][]int     `json:"confusion"`
	AUC           []*float64  `json:"auc"`
	ROC           []*refROC   `json:"roc"`
	MacroAUC      *float64    `json:"macro_auc"`
	WeightedAUC   *float64    `json:"weighted_auc"`
	SkOVRMacro    *float64    `json:"sk_ovr_macro"`
	SkOVRWeighted *float64    `json:"sk_ovr_weighted"`
}

// tiedProbs draws a probability row of k entries that are multiples of 0.1
// summing to 1: ten tenths dealt to random classes. Such rows tie often,
// both across samples (AUC ties) and within a row (argmax ties).
func tiedProbs(rng *rand.Rand, k int) []float64 {
	counts := make([]int, k)
	for range 10 {
		counts[rng.IntN(k)]++
	}
	row := make([]float64, k)
	for c, n := range counts {
		row[c] = float64(n) / 10
	}
	return row
}

// smoothProbs draws a probability row from normalised exponentials, biased
// towards the true class so that the metrics are not all near chance.
func smoothProbs(rng *rand.Rand, k, label int) []float64 {
	row := make([]float64, k)
	sum := 0.0
	for c := range row {
		row[c] = rng.ExpFloat64()
		if c == label {
			row[c] *= 2.5
		}
		sum += row[c]
	}
	for c := range row {
		row[c] /= sum
	}
	return row
}

// refCases builds the random and edge cases compared with scikit-learn.
func refCases() []refCase {
	rng := rand.New(rand.NewPCG(20240601, 7))
	var cases []refCase
	for i := range 36 {
		k := 2 + i%4           // 2, 3, 4, 5 classes
		n := 5 + rng.IntN(150) // 5..154 samples
		tied := i%3 != 2       // two thirds heavily tied
		c := refCase{Name: fmt.Sprintf("random%02d_k%d_n%d_tied%v", i, k, n, tied), K: k}
		for range n {
			y := rng.IntN(k)
			c.Labels = append(c.Labels, y)
			if tied {
				row := tiedProbs(rng, k)
				// Lean towards the truth: move a tenth to the true class.
				for j := range row {
					if j != y && row[j] >= 0.1 && rng.IntN(2) == 0 {
						row[j] = float64(int(math.Round(row[j]*10))-1) / 10
						row[y] = float64(int(math.Round(row[y]*10))+1) / 10
						break
					}
				}
				c.Probs = append(c.Probs, row)
			} else {
				c.Probs = append(c.Probs, smoothProbs(rng, k, y))
			}
		}
		cases = append(cases, c)
	}
	// A class absent from the labels (AUC undefined, recall 0/0) and never
	// predicted (precision 0/0).
	absent := refCase{Name: "absent_class", K: 3}
	for i := range 40 {
		y := i % 2
		absent.Labels = append(absent.Labels, y)
		row := tiedProbs(rng, 2)
		absent.Probs = append(absent.Probs, []float64{row[0], row[1], 0})
	}
	cases = append(cases, absent)
	// Binary with one class only: every AUC undefined.
	one := refCase{Name: "one_class", K: 2}
	for range 12 {
		one.Labels = append(one.Labels, 1)
		one.Probs = append(one.Probs, tiedProbs(rng, 2))
	}
	cases = append(cases, one)
	// Constant scores: every AUC is exactly 1/2, every argmax class 0.
	flat := refCase{Name: "constant", K: 4}
	for i := range 20 {
		flat.Labels = append(flat.Labels, i%4)
		flat.Probs = append(flat.Probs, []float64{0.25, 0.25, 0.25, 0.25})
	}
	cases = append(cases, flat)
	// Perfect separation.
	perfect := refCase{Name: "perfect", K: 3}
	for i := range 15 {
		row := []float64{0.1, 0.1, 0.1}
		row[i%3] = 0.8
		perfect.Labels = append(perfect.Labels, i%3)
		perfect.Probs = append(perfect.Probs, row)
	}
	cases = append(cases, perfect)
	return cases
}

func refQuantileCases() []refQuantiles {
	rng := rand.New(rand.NewPCG(99, 1))
	qs := []float64{0, 0.025, 0.1, 0.5, 0.9, 0.975, 1}
	var out []refQuantiles
	for _, n := range []int{1, 2, 3, 7, 40, 1000} {
		v := make([]float64, n)
		for i := range v {
			v[i] = math.Round(rng.NormFloat64()*10) / 10 // ties
		}
		out = append(out, refQuantiles{Values: v, Q: qs})
	}
	return out
}

// TestMetricsMatchSklearn compares every metric of ComputeMetrics, ROC
// curves and the bootstrap quantile rule with scikit-learn and numpy
// (testdata/metrics/sklearn_ref.py) on random binary and multi-class cases,
// two thirds with probabilities in tenths (heavy ties), and edge cases.
func TestMetricsMatchSklearn(t *testing.T) {
	needSklearn(t)
	const tol = 1e-9
	cases := refCases()
	quants := refQuantileCases()
	dir := t.TempDir()
	in, outPath := filepath.Join(dir, "cases.json"), filepath.Join(dir, "ref.json")
	b, err := json.Marshal(map[string]any{"cases": cases, "quantiles": quants})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join("..", "testdata", "metrics", "sklearn_ref.py")
	if msg, err := exec.Command(sklearnPython, script, in, outPath).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, msg)
	}
	raw, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Sklearn   string      `json:"sklearn"`
		Cases     []refResult `json:"cases"`
		Quantiles [][]float64 `json:"quantiles"`
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatalf("%s output: %v", script, err)
	}
	if len(ref.Cases) != len(cases) || len(ref.Quantiles) != len(quants) {
		t.Fatalf("reference has %d cases and %d quantile sets, want %d and %d", len(ref.Cases), len(ref.Quantiles), len(cases), len(quants))
	}
	t.Logf("scikit-learn %s, %d cases", ref.Sklearn, len(cases))

	near := func(t *testing.T, what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > tol {
			t.Errorf("%s = %.17g, sklearn %.17g (diff %.3g)", what, got, want, got-want)
		}
	}
	nearOpt := func(t *testing.T, what string, got float64, want *float64) {
		t.Helper()
		switch {
		case want == nil && !math.IsNaN(got):
			t.Errorf("%s = %v, sklearn: undefined", what, got)
		case want != nil && math.IsNaN(got):
			t.Errorf("%s undefined, sklearn %v", what, *want)
		case want != nil:
			near(t, what, got, *want)
		}
	}
	for ci, c := range cases {
		r := ref.Cases[ci]
		t.Run(c.Name, func(t *testing.T) {
			classes := make([]string, c.K)
			for k := range classes {
				classes[k] = fmt.Sprintf("c%d", k)
			}
			m, err := ComputeMetrics(c.Labels, c.Probs, classes)
			if err != nil {
				t.Fatal(err)
			}
			pred := argmaxRows(c.Probs)
			for i := range pred {
				if pred[i] != r.Pred[i] {
					t.Fatalf("sample %d %v: argmax %d, numpy %d", i, c.Probs[i], pred[i], r.Pred[i])
				}
			}
			near(t, "accuracy", m.Accuracy, r.Accuracy)
			for k, cm := range m.PerClass {
				if cm.Support != r.Support[k] {
					t.Errorf("class %d support %d, sklearn %d", k, cm.Support, r.Support[k])
				}
				near(t, fmt.Sprintf("class %d precision", k), cm.Precision, r.Precision[k])
				near(t, fmt.Sprintf("class %d recall", k), cm.Recall, r.Recall[k])
				near(t, fmt.Sprintf("class %d specificity", k), cm.Specificity, r.Specificity[k])
				near(t, fmt.Sprintf("class %d F1", k), cm.F1, r.F1[k])
				nearOpt(t, fmt.Sprintf("class %d AUC", k), cm.AUC, r.AUC[k])
				if (cm.AUCUndefined != "") != (r.AUC[k] == nil) {
					t.Errorf("class %d: AUCUndefined %q, sklearn AUC %v", k, cm.AUCUndefined, r.AUC[k])
				}
				compareROC(t, k, cm.ROC, r.ROC[k])
				for p := range c.K {
					if m.Confusion[k][p] != r.Confusion[k][p] {
						t.Errorf("confusion[%d][%d] = %d, sklearn %d", k, p, m.Confusion[k][p], r.Confusion[k][p])
					}
				}
			}
			for _, a := range []struct {
				name string
				got  Averages
				want refAverages
				auc  *float64
				ovr  *float64
			}{{"macro", m.Macro, r.Macro, r.MacroAUC, r.SkOVRMacro}, {"weighted", m.Weighted, r.Weighted, r.WeightedAUC, r.SkOVRWeighted}} {
				near(t, a.name+" precision", a.got.Precision, a.want.Precision)
				near(t, a.name+" recall", a.got.Recall, a.want.Recall)
				near(t, a.name+" specificity", a.got.Specificity, a.want.Specificity)
				near(t, a.name+" F1", a.got.F1, a.want.F1)
				nearOpt(t, a.name+" AUC", a.got.AUC, a.auc)
				if a.ovr != nil {
					// sklearn's own multi-class (or binary) roc_auc_score.
					if c.K == 2 {
						nearOpt(t, "class 1 AUC vs roc_auc_score(y, p[:,1])", m.PerClass[1].AUC, a.ovr)
					} else {
						nearOpt(t, a.name+" AUC vs roc_auc_score(multi_class=ovr)", a.got.AUC, a.ovr)
					}
				}
			}
		})
	}
	for qi, qc := range quants {
		sorted := append([]float64(nil), qc.Values...)
		sort.Float64s(sorted)
		for j, q := range qc.Q {
			near(t, fmt.Sprintf("quantile set %d (n=%d) q=%v", qi, len(sorted), q), quantileSorted(sorted, q), ref.Quantiles[qi][j])
		}
	}
}

// compareROC checks an ROC curve against sklearn's roc_curve with
// drop_intermediate=False; the first threshold is +Inf by definition.
func compareROC(t *testing.T, k int, got ROCCurve, want *refROC) {
	t.Helper()
	if want == nil {
		if len(got.FPR)+len(got.TPR)+len(got.Thresholds) != 0 {
			t.Errorf("class %d: ROC curve of %d points, sklearn: undefined", k, len(got.FPR))
		}
		return
	}
	if len(got.FPR) != len(want.FPR) || len(got.TPR) != len(want.TPR) || len(got.Thresholds) != len(want.Thresholds) {
		t.Errorf("class %d: ROC curve of %d/%d/%d points, sklearn %d/%d/%d", k,
			len(got.FPR), len(got.TPR), len(got.Thresholds), len(want.FPR), len(want.TPR), len(want.Thresholds))
		return
	}
	if !math.IsInf(got.Thresholds[0], 1) {
		t.Errorf("class %d: first threshold %v, want +Inf", k, got.Thresholds[0])
	}
	for i := range got.FPR {
		if math.Abs(got.FPR[i]-want.FPR[i]) > 1e-12 || math.Abs(got.TPR[i]-want.TPR[i]) > 1e-12 {
			t.Errorf("class %d: ROC point %d = (%v, %v), sklearn (%v, %v)", k, i, got.FPR[i], got.TPR[i], want.FPR[i], want.TPR[i])
		}
		if i > 0 && got.Thresholds[i] != *want.Thresholds[i] {
			t.Errorf("class %d: threshold %d = %v, sklearn %v", k, i, got.Thresholds[i], *want.Thresholds[i])
		}
	}
}
