package train

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// bootstrapData draws n samples of a 3-class problem with informative,
// tie-heavy probabilities.
func bootstrapData(n int, seed uint64) ([]int, [][]float64) {
	rng := rand.New(rand.NewPCG(seed, 3))
	labels := make([]int, n)
	probs := make([][]float64, n)
	for i := range labels {
		labels[i] = rng.IntN(3)
		probs[i] = smoothProbs(rng, 3, labels[i])
		for c := range probs[i] {
			probs[i][c] = math.Round(probs[i][c]*20) / 20
		}
		sum := probs[i][0] + probs[i][1] + probs[i][2]
		for c := range probs[i] {
			probs[i][c] /= sum
		}
	}
	return labels, probs
}

// TestBootstrap checks determinism under a seed, that the intervals contain
// the point estimates (which equal ComputeMetrics'), that a different seed
// moves them, and that a narrower level gives a narrower interval.
func TestBootstrap(t *testing.T) {
	labels, probs := bootstrapData(300, 11)
	m, err := ComputeMetrics(labels, probs, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	ci, err := Bootstrap(labels, probs, BootstrapOptions{Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	if ci.Resamples != 1000 || ci.Level != 0.95 || ci.Seed != 42 {
		t.Errorf("defaults: %d resamples, level %v, seed %d", ci.Resamples, ci.Level, ci.Seed)
	}
	again, err := Bootstrap(labels, probs, BootstrapOptions{Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ci, again) {
		t.Errorf("same seed, different intervals:\n%+v\n%+v", ci, again)
	}
	for _, c := range []struct {
		name  string
		iv    Interval
		point float64
	}{{"accuracy", ci.Accuracy, m.Accuracy}, {"macro F1", ci.MacroF1, m.Macro.F1}, {"macro AUC", ci.MacroAUC, m.Macro.AUC}} {
		if math.Abs(c.iv.Point-c.point) > 1e-12 {
			t.Errorf("%s point %v, ComputeMetrics %v", c.name, c.iv.Point, c.point)
		}
		if !(c.iv.Lo <= c.iv.Point && c.iv.Point <= c.iv.Hi) || c.iv.Lo == c.iv.Hi {
			t.Errorf("%s interval [%v, %v] does not strictly bracket %v", c.name, c.iv.Lo, c.iv.Hi, c.iv.Point)
		}
		if c.iv.Valid != 1000 {
			t.Errorf("%s: %d valid resamples, want 1000", c.name, c.iv.Valid)
		}
		// The standard error of accuracy near 0.6 with n = 300 is about
		// 0.028, so a 95% interval is about 0.11 wide; all three should be
		// of that order.
		if w := c.iv.Hi - c.iv.Lo; w < 0.03 || w > 0.25 {
			t.Errorf("%s interval width %v implausible", c.name, w)
		}
	}
	other, err := Bootstrap(labels, probs, BootstrapOptions{Seed: 43})
	if err != nil {
		t.Fatal(err)
	}
	if other.Accuracy.Lo == ci.Accuracy.Lo && other.MacroAUC.Hi == ci.MacroAUC.Hi && other.MacroF1.Lo == ci.MacroF1.Lo {
		t.Error("seeds 42 and 43 gave the same intervals")
	}
	narrow, err := Bootstrap(labels, probs, BootstrapOptions{Seed: 42, Level: 0.5, Resamples: 400})
	if err != nil {
		t.Fatal(err)
	}
	if narrow.Accuracy.Hi-narrow.Accuracy.Lo >= ci.Accuracy.Hi-ci.Accuracy.Lo {
		t.Errorf("50%% interval %v–%v not narrower than 95%% %v–%v", narrow.Accuracy.Lo, narrow.Accuracy.Hi, ci.Accuracy.Lo, ci.Accuracy.Hi)
	}
	if _, err := json.Marshal(ci); err != nil {
		t.Errorf("JSON: %v", err)
	}
}

// TestBootstrapDegenerate checks resamples that make AUC undefined, data
// where every interval collapses, and bad options.
func TestBootstrapDegenerate(t *testing.T) {
	// Perfect predictions: every resample has accuracy 1 and (when both
	// classes are drawn) AUC 1, so the intervals are [1, 1].
	labels := []int{0, 1, 0, 1, 1}
	probs := [][]float64{{0.9, 0.1}, {0.2, 0.8}, {0.7, 0.3}, {0.4, 0.6}, {0, 1}}
	ci, err := Bootstrap(labels, probs, BootstrapOptions{Seed: 1, Resamples: 500})
	if err != nil {
		t.Fatal(err)
	}
	if ci.Accuracy.Lo != 1 || ci.Accuracy.Hi != 1 || ci.MacroAUC.Lo != 1 || ci.MacroAUC.Hi != 1 {
		t.Errorf("perfect predictions: accuracy %+v AUC %+v, want [1, 1]", ci.Accuracy, ci.MacroAUC)
	}
	// With n = 5 and 2 negatives, a resample has no negative with
	// probability (3/5)^5 ≈ 7.8%, and no positive with (2/5)^5 ≈ 1.0%:
	// about 44 of 500 resamples should be left out of the AUC.
	left := 500 - ci.MacroAUC.Valid
	if left < 20 || left > 75 || !strings.Contains(ci.Note, "resamples left out") {
		t.Errorf("AUC left out %d of 500 (note %q), want about 44", left, ci.Note)
	}
	if ci.Accuracy.Valid != 500 {
		t.Errorf("accuracy valid %d, want 500", ci.Accuracy.Valid)
	}

	// One class only: AUC undefined on the full data, interval NaN.
	ci, err = Bootstrap([]int{1, 1, 1}, [][]float64{{0.5, 0.5}, {0.2, 0.8}, {0.6, 0.4}}, BootstrapOptions{Resamples: 50})
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(ci.MacroAUC.Point) || !math.IsNaN(ci.MacroAUC.Lo) || ci.MacroAUC.Valid != 0 || ci.Note == "" {
		t.Errorf("one class: AUC interval %+v note %q, want NaN with a note", ci.MacroAUC, ci.Note)
	}
	if b, err := json.Marshal(ci); err != nil || !strings.Contains(string(b), `"macro_auc":{"valid":0,"point":null,"lo":null,"hi":null}`) {
		t.Errorf("JSON %s, %v", b, err)
	}

	for _, opt := range []BootstrapOptions{{Resamples: -1}, {Level: 1}, {Level: -0.5}, {Level: math.NaN()}} {
		if _, err := Bootstrap(labels, probs, opt); err == nil {
			t.Errorf("options %+v: no error", opt)
		}
	}
	if _, err := Bootstrap(labels, probs[:2], BootstrapOptions{}); err == nil || !strings.Contains(err.Error(), "5 labels but 2 probability rows") {
		t.Errorf("mismatch: %v", err)
	}
	if _, err := Bootstrap(nil, nil, BootstrapOptions{}); err == nil {
		t.Error("no samples: no error")
	}
}

// TestQuantileByHand checks the linear-interpolation quantile.
func TestQuantileByHand(t *testing.T) {
	x := []float64{1, 2, 4, 8, 16}
	// h = 4q: q = 0.5 → x[2] = 4; q = 0.1 → h = 0.4 → 1 + 0.4·1 = 1.4;
	// q = 0.975 → h = 3.9 → 8 + 0.9·8 = 15.2; q = 0, 1 → ends.
	for _, c := range []struct{ q, want float64 }{{0.5, 4}, {0.1, 1.4}, {0.975, 15.2}, {0, 1}, {1, 16}} {
		approx(t, "quantile", quantileSorted(x, c.q), c.want)
	}
	approx(t, "single value", quantileSorted([]float64{3}, 0.025), 3)
}
