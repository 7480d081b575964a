package train

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// handLabels and handProbs are a 3-class, 6-sample case worked by hand.
//
//	sample true  probs (c0, c1, c2)  argmax
//	s0     0     0.7  0.2  0.1       0  correct
//	s1     0     0.3  0.4  0.3       1
//	s2     1     0.2  0.5  0.3       1  correct
//	s3     1     0.4  0.4  0.2       0  (tie 0/1 goes to the lower index)
//	s4     2     0.1  0.2  0.7       2  correct
//	s5     2     0.1  0.6  0.3       1
var (
	handLabels = []int{0, 0, 1, 1, 2, 2}
	handProbs  = [][]float64{
		{0.7, 0.2, 0.1},
		{0.3, 0.4, 0.3},
		{0.2, 0.5, 0.3},
		{0.4, 0.4, 0.2},
		{0.1, 0.2, 0.7},
		{0.1, 0.6, 0.3},
	}
	handClasses = []string{"NiCT", "pCT", "NCP"}
)

func approx(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-12 {
		t.Errorf("%s = %.15g, want %.15g", what, got, want)
	}
}

// TestMetricsByHand checks ComputeMetrics on the hand-worked case.
func TestMetricsByHand(t *testing.T) {
	m, err := ComputeMetrics(handLabels, handProbs, handClasses)
	if err != nil {
		t.Fatal(err)
	}
	// Confusion (rows true, columns predicted): t0: s0→0, s1→1; t1: s2→1,
	// s3→0; t2: s4→2, s5→1.
	wantConf := [][]int{{1, 1, 0}, {1, 1, 0}, {0, 1, 1}}
	if !reflect.DeepEqual(m.Confusion, wantConf) {
		t.Errorf("confusion %v, want %v", m.Confusion, wantConf)
	}
	approx(t, "accuracy", m.Accuracy, 3.0/6) // s0, s2, s4 correct
	want := []struct {
		tp, fp, fn, tn           int
		prec, rec, spec, f1, auc float64
	}{
		// Class 0: TP s0, FP s3, FN s1, TN s2 s4 s5.
		// P = 1/2, R = 1/2, spec = 3/4, F1 = 2/(2+1+1) = 1/2.
		// AUC: positives 0.7, 0.3 vs negatives 0.2, 0.4, 0.1, 0.1:
		// 0.7 beats all 4; 0.3 beats 3 and loses to 0.4 → 7/8.
		{1, 1, 1, 3, 0.5, 0.5, 0.75, 0.5, 7.0 / 8},
		// Class 1: TP s2, FP s1 s5, FN s3, TN s0 s4.
		// P = 1/3, R = 1/2, spec = 2/4, F1 = 2/(2+2+1) = 2/5.
		// AUC: positives 0.5, 0.4 vs negatives 0.2, 0.4, 0.2, 0.6:
		// 0.5 beats 3 (loses to 0.6); 0.4 beats 2, ties 0.4 (½) → 5.5/8.
		{1, 2, 1, 2, 1.0 / 3, 0.5, 0.5, 0.4, 5.5 / 8},
		// Class 2: TP s4, FN s5, TN s0..s3.
		// P = 1, R = 1/2, spec = 1, F1 = 2/(2+0+1) = 2/3.
		// AUC: positives 0.7, 0.3 vs negatives 0.1, 0.3, 0.3, 0.2:
		// 0.7 beats 4; 0.3 beats 0.1, 0.2 and ties two 0.3 (½ each) → 7/8.
		{1, 0, 1, 4, 1, 0.5, 1, 2.0 / 3, 7.0 / 8},
	}
	for c, w := range want {
		cm := m.PerClass[c]
		if cm.Class != handClasses[c] || cm.Support != 2 || cm.TP != w.tp || cm.FP != w.fp || cm.FN != w.fn || cm.TN != w.tn {
			t.Errorf("class %d: %s support %d TP %d FP %d FN %d TN %d, want %s 2 %d %d %d %d",
				c, cm.Class, cm.Support, cm.TP, cm.FP, cm.FN, cm.TN, handClasses[c], w.tp, w.fp, w.fn, w.tn)
		}
		approx(t, cm.Class+" precision", cm.Precision, w.prec)
		approx(t, cm.Class+" recall", cm.Recall, w.rec)
		approx(t, cm.Class+" specificity", cm.Specificity, w.spec)
		approx(t, cm.Class+" F1", cm.F1, w.f1)
		approx(t, cm.Class+" AUC", cm.AUC, w.auc)
		if cm.AUCUndefined != "" {
			t.Errorf("%s: AUCUndefined %q", cm.Class, cm.AUCUndefined)
		}
	}
	// Macro: P = (1/2 + 1/3 + 1)/3 = 11/18, R = 1/2, spec = (3/4+1/2+1)/3 = 3/4,
	// F1 = (1/2 + 2/5 + 2/3)/3 = 47/90, AUC = (7/8 + 11/16 + 7/8)/3 = 13/16.
	// Equal supports, so weighted = macro.
	for _, a := range []struct {
		name string
		v    Averages
	}{{"macro", m.Macro}, {"weighted", m.Weighted}} {
		approx(t, a.name+" precision", a.v.Precision, 11.0/18)
		approx(t, a.name+" recall", a.v.Recall, 0.5)
		approx(t, a.name+" specificity", a.v.Specificity, 0.75)
		approx(t, a.name+" F1", a.v.F1, 47.0/90)
		approx(t, a.name+" AUC", a.v.AUC, 13.0/16)
	}
	if m.AUCNote != "" {
		t.Errorf("AUCNote %q, want empty", m.AUCNote)
	}

	// ROC of class 1, thresholds 0.6, 0.5, 0.4, 0.2 (P = 2, N = 4):
	// ≥0.6 adds s5 (neg) → (1/4, 0); ≥0.5 adds s2 (pos) → (1/4, 1/2);
	// ≥0.4 adds s1 (neg), s3 (pos) → (1/2, 1); ≥0.2 adds s0, s4 (neg) → (1, 1).
	// Trapezoids: 0 + 0 + 1/4·(1/2+1)/2 + 1/2·(1+1)/2 = 11/16 = the AUC.
	roc := m.PerClass[1].ROC
	wantROC := ROCCurve{
		FPR:        []float64{0, 0.25, 0.25, 0.5, 1},
		TPR:        []float64{0, 0, 0.5, 1, 1},
		Thresholds: []float64{math.Inf(1), 0.6, 0.5, 0.4, 0.2},
	}
	if !reflect.DeepEqual(roc, wantROC) {
		t.Errorf("class 1 ROC %+v, want %+v", roc, wantROC)
	}
}

// TestROCAUCByHand checks the binary AUC against pair counts worked by hand.
func TestROCAUCByHand(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pos    []bool
		scores []float64
		want   float64
	}{
		// scikit-learn's roc_auc_score docstring example: positives 0.35,
		// 0.8 vs negatives 0.1, 0.4: 0.8 beats both, 0.35 beats 0.1 → 3/4.
		{"sklearn doc", []bool{false, false, true, true}, []float64{0.1, 0.4, 0.35, 0.8}, 0.75},
		// Positives 0.8, 0.4, 0.35 vs negatives 0.1, 0.4, 0.4:
		// 0.8 → 3; 0.4 → 1 + ½ + ½ = 2; 0.35 → 1. Total 6/9.
		{"ties", []bool{false, true, false, true, true, false}, []float64{0.1, 0.4, 0.4, 0.8, 0.35, 0.4}, 6.0 / 9},
		// Every score equal: every pair ties → 1/2.
		{"all tied", []bool{true, false, true, false, false}, []float64{3, 3, 3, 3, 3}, 0.5},
		// Perfectly reversed: 0.
		{"reversed", []bool{true, true, false}, []float64{-2, -1, 5}, 0},
		// Perfect: 1.
		{"perfect", []bool{false, true}, []float64{0.2, 0.9}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ROCAUC(tc.pos, tc.scores)
			if err != nil {
				t.Fatal(err)
			}
			approx(t, "AUC", got, tc.want)
		})
	}
}

// TestOneVsRestAUC checks the score-based one-vs-rest AUC (covid_auc style)
// on the hand case: class 2 scored by its probability column gives 7/8.
func TestOneVsRestAUC(t *testing.T) {
	scores := column(handProbs, 2)
	// Raw logits: any strictly increasing map of the scores keeps the AUC.
	for i := range scores {
		scores[i] = math.Log(scores[i]) * 3
	}
	got, err := OneVsRestAUC(handLabels, 2, scores)
	if err != nil {
		t.Fatal(err)
	}
	approx(t, "AUC", got, 7.0/8)
	if _, err := OneVsRestAUC(handLabels, 5, scores); !errors.Is(err, ErrUndefinedAUC) {
		t.Errorf("class 5 (absent): error %v, want ErrUndefinedAUC", err)
	}
	if _, err := OneVsRestAUC(handLabels[:2], 0, scores); err == nil {
		t.Error("mismatched lengths: no error")
	}
}

// TestMetricsUndefined covers a class absent from the labels and never
// predicted: recall and precision divide 0 by 0 (→ 0), its AUC is NaN with a
// reason, and the AUC averages leave it out.
func TestMetricsUndefined(t *testing.T) {
	labels := []int{0, 1, 0, 1}
	probs := [][]float64{{0.6, 0.4, 0}, {0.3, 0.7, 0}, {0.4, 0.6, 0}, {0.2, 0.8, 0}}
	m, err := ComputeMetrics(labels, probs, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	c := m.PerClass[2]
	if c.Precision != 0 || c.Recall != 0 || c.F1 != 0 || c.Specificity != 1 {
		t.Errorf("class c: P %v R %v F1 %v spec %v, want 0 0 0 1", c.Precision, c.Recall, c.F1, c.Specificity)
	}
	if !math.IsNaN(c.AUC) || c.AUCUndefined != "no positive samples (all 4 are negative)" || len(c.ROC.FPR) != 0 {
		t.Errorf("class c: AUC %v (%q), ROC %d points; want NaN with reason, no curve", c.AUC, c.AUCUndefined, len(c.ROC.FPR))
	}
	// Class a: positives 0.6, 0.4 vs negatives 0.3, 0.2 → 1; class b: mirror → 1.
	approx(t, "macro AUC", m.Macro.AUC, 1)
	approx(t, "weighted AUC", m.Weighted.AUC, 1)
	if !strings.Contains(m.AUCNote, "c (no positive samples") {
		t.Errorf("AUCNote %q does not name class c", m.AUCNote)
	}
	// Predictions: a, b, b, b → accuracy 3/4; macro F1 = (2/3 + 4/5 + 0)/3.
	approx(t, "accuracy", m.Accuracy, 0.75)
	approx(t, "macro F1", m.Macro.F1, (2.0/3+0.8)/3)

	// Every sample positive: AUC undefined everywhere, macro NaN, no panic.
	m, err = ComputeMetrics([]int{1, 1}, [][]float64{{0.5, 0.5}, {0.1, 0.9}}, []string{"neg", "pos"})
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(m.Macro.AUC) || !math.IsNaN(m.Weighted.AUC) || m.PerClass[1].AUCUndefined != "no negative samples (all 2 are positive)" {
		t.Errorf("macro AUC %v weighted %v reason %q", m.Macro.AUC, m.Weighted.AUC, m.PerClass[1].AUCUndefined)
	}
	if _, err := ROCAUC([]bool{true, true}, []float64{1, 2}); !errors.Is(err, ErrUndefinedAUC) {
		t.Errorf("ROCAUC all positive: %v, want ErrUndefinedAUC", err)
	}
	if _, err := ROC([]bool{false}, []float64{1}); !errors.Is(err, ErrUndefinedAUC) {
		t.Errorf("ROC all negative: %v, want ErrUndefinedAUC", err)
	}
}

// TestMetricsBadInput checks that invalid input gives an error naming the
// fault, never a panic.
func TestMetricsBadInput(t *testing.T) {
	two := []string{"a", "b"}
	for _, tc := range []struct {
		name    string
		labels  []int
		probs   [][]float64
		classes []string
		want    string
	}{
		{"one class", []int{0}, [][]float64{{1}}, []string{"a"}, "1 class names, want at least 2"},
		{"no samples", nil, nil, two, "no samples"},
		{"length mismatch", []int{0, 1}, [][]float64{{1, 0}}, two, "2 labels but 1 probability rows"},
		{"label range", []int{0, 2}, [][]float64{{1, 0}, {0, 1}}, two, "sample 1: label 2 outside [0, 2)"},
		{"negative label", []int{-1}, [][]float64{{1, 0}}, two, "sample 0: label -1"},
		{"row length", []int{0, 1}, [][]float64{{1, 0}, {0.2, 0.3, 0.5}}, two, "sample 1: 3 probabilities, want 2"},
		{"logits", []int{0}, [][]float64{{0.9, 0.9}}, two, "sample 0: probabilities sum to 1.8"},
		{"negative", []int{0}, [][]float64{{1.5, -0.5}}, two, "sample 0: probability of class 0 is 1.5"},
		{"NaN", []int{0}, [][]float64{{math.NaN(), 1}}, two, "probability of class 0 is NaN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ComputeMetrics(tc.labels, tc.probs, tc.classes)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := ROCAUC([]bool{true, false}, []float64{1, math.Inf(1)}); err == nil || !strings.Contains(err.Error(), "sample 1: score +Inf is not finite") {
		t.Errorf("ROCAUC infinite score: %v", err)
	}
	if _, err := ROCAUC(nil, nil); err == nil {
		t.Error("ROCAUC no samples: no error")
	}
}

// TestWeightedAUCIsDuplication checks the weighted AUC used by Bootstrap
// against the plain AUC of the sample with each item repeated weight times.
func TestWeightedAUCIsDuplication(t *testing.T) {
	scores := []float64{0.1, 0.4, 0.4, 0.8, 0.35, 0.4, 0.9}
	pos := []bool{false, true, false, true, true, false, false}
	weights := []int{2, 0, 3, 1, 2, 1, 1}
	var xs []float64
	var xp []bool
	for i, w := range weights {
		for range w {
			xs = append(xs, scores[i])
			xp = append(xp, pos[i])
		}
	}
	want, err := ROCAUC(xp, xs)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := weightedAUC(descendingOrder(scores), scores, pos, weights)
	if !ok {
		t.Fatal("weighted AUC undefined")
	}
	approx(t, "weighted AUC", got, want)
	// By hand: positives 0.8, 0.35, 0.35 vs negatives 0.1, 0.1, 0.4×4, 0.9:
	// 0.8 beats 6; each 0.35 beats the two 0.1s → (6+2+2)/(3·7) = 10/21.
	approx(t, "weighted AUC by hand", got, 10.0/21)
}

// TestMetricsJSON checks that Metrics with an undefined AUC and +Inf ROC
// thresholds encode to JSON (null, "+Inf") and decode unchanged.
func TestMetricsJSON(t *testing.T) {
	m, err := ComputeMetrics([]int{0, 1, 0, 1}, [][]float64{{0.6, 0.4, 0}, {0.3, 0.7, 0}, {0.4, 0.6, 0}, {0.2, 0.8, 0}}, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`"auc":null`, `"thresholds":["+Inf",0.6`, `"auc_undefined":"no positive samples (all 4 are negative)"`, `"confusion":[[1,1,0],[0,2,0],[0,0,0]]`} {
		if !strings.Contains(s, want) {
			t.Errorf("JSON lacks %s:\n%s", want, s)
		}
	}
	var back Metrics
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(back.PerClass[2].AUC) || !math.IsInf(back.PerClass[0].ROC.Thresholds[0], 1) {
		t.Errorf("decoded AUC %v threshold %v, want NaN and +Inf", back.PerClass[2].AUC, back.PerClass[0].ROC.Thresholds[0])
	}
	// NaN != NaN, so compare after re-encoding.
	b2, err := json.Marshal(back)
	if err != nil {
		t.Fatal(err)
	}
	if string(b2) != s {
		t.Errorf("JSON round trip differs:\n%s\n%s", s, b2)
	}
}

// TestROCAUCPairCount checks ROCAUC against the Mann-Whitney definition
// counted pair by pair — P(s⁺ > s⁻) + ½·P(s⁺ = s⁻) — on random tie-heavy
// scores (multiples of 0.1) and on continuous ones.
func TestROCAUCPairCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	for trial := range 200 {
		n := 2 + rng.IntN(60)
		pos := make([]bool, n)
		scores := make([]float64, n)
		for i := range scores {
			pos[i] = rng.IntN(3) == 0
			scores[i] = rng.Float64()
			if trial%2 == 0 {
				scores[i] = math.Round(scores[i]*10) / 10
			}
		}
		var wins float64
		var pairs int
		for i := range scores {
			for j := range scores {
				if !pos[i] || pos[j] {
					continue
				}
				pairs++
				switch {
				case scores[i] > scores[j]:
					wins++
				case scores[i] == scores[j]:
					wins += 0.5
				}
			}
		}
		got, err := ROCAUC(pos, scores)
		if pairs == 0 {
			if !errors.Is(err, ErrUndefinedAUC) || !math.IsNaN(got) {
				t.Errorf("trial %d: no pairs: %v, %v; want NaN, ErrUndefinedAUC", trial, got, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		if want := wins / float64(pairs); math.Abs(got-want) > 1e-12 {
			t.Errorf("trial %d (n=%d): AUC %v, pair count %v", trial, n, got, want)
		}
	}
}
