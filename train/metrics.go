package train

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
)

// probSumTolerance is how far a probability row may sum from 1.
const probSumTolerance = 1e-4

// ErrUndefinedAUC says an ROC AUC does not exist because the scored samples
// contain no positives or no negatives. Errors that report it wrap it.
var ErrUndefinedAUC = errors.New("ROC AUC undefined")

// ROCCurve is a receiver operating characteristic curve: point i is
// (FPR[i], TPR[i]) when samples scoring ≥ Thresholds[i] are called positive.
//
// Thresholds are the distinct scores in decreasing order, preceded by +Inf for
// the point (0, 0); every distinct threshold is kept (sklearn.metrics.roc_curve
// with drop_intermediate=False; sklearn ≥ 1.3 also starts with +Inf, older
// versions with max score + 1). In JSON, +Inf is written as the string "+Inf".
type ROCCurve struct {
	FPR        []float64 `json:"fpr"`
	TPR        []float64 `json:"tpr"`
	Thresholds []float64 `json:"thresholds"`
}

// ClassMetrics holds the one-vs-rest metrics of one class.
type ClassMetrics struct {
	// Class is the class name.
	Class string `json:"class"`
	// Support is the number of samples whose true label is the class.
	Support int `json:"support"`
	// TP, FP, FN and TN count the samples by true label (class or rest) and
	// predicted label (class or rest).
	TP int `json:"tp"`
	FP int `json:"fp"`
	FN int `json:"fn"`
	TN int `json:"tn"`
	// Precision = TP/(TP+FP), 0 when nothing is predicted as the class.
	Precision float64 `json:"precision"`
	// Recall (sensitivity) = TP/(TP+FN), 0 when the class has no support.
	Recall float64 `json:"recall"`
	// Specificity = TN/(TN+FP), 0 when every sample belongs to the class.
	Specificity float64 `json:"specificity"`
	// F1 = 2·precision·recall/(precision+recall) = 2TP/(2TP+FP+FN), 0 when
	// the denominator is 0.
	F1 float64 `json:"f1"`
	// AUC is the one-vs-rest ROC AUC from the class's probability column;
	// NaN (null in JSON) when undefined, with the reason in AUCUndefined.
	AUC float64 `json:"auc"`
	// AUCUndefined says why AUC is NaN; empty when AUC is defined.
	AUCUndefined string `json:"auc_undefined,omitempty"`
	// ROC is the one-vs-rest ROC curve; empty when AUC is undefined.
	ROC ROCCurve `json:"roc"`
}

// Averages are class-averaged metrics.
type Averages struct {
	// Precision, Recall, Specificity and F1 average the per-class values.
	Precision   float64 `json:"precision"`
	Recall      float64 `json:"recall"`
	Specificity float64 `json:"specificity"`
	F1          float64 `json:"f1"`
	// AUC averages only the classes whose AUC is defined (the macro mean, or
	// the support-weighted mean); NaN (null in JSON) when none is. With every
	// class defined it equals sklearn's roc_auc_score(multi_class="ovr",
	// average="macro" or "weighted").
	AUC float64 `json:"auc"`
}

// Metrics evaluates a classifier's probabilities against the true labels of
// N samples over K classes.
//
// The definitions follow scikit-learn (sklearn.metrics), so that numbers
// agree with a Python reference to rounding:
//
//   - The predicted class of a sample is the argmax of its probability row;
//     ties go to the lowest class index (numpy.argmax).
//   - Per class k, with TP, FP, FN, TN counted one-vs-rest from the confusion
//     matrix: precision = TP/(TP+FP), recall (sensitivity) = TP/(TP+FN),
//     specificity = TN/(TN+FP), F1 = 2TP/(2TP+FP+FN). A zero denominator gives
//     0 (sklearn's zero_division=0).
//   - Macro average = unweighted mean over all K classes (classes without
//     support included, as sklearn with labels=range(K)); weighted average =
//     mean weighted by support.
//   - ROC AUC of class k = one-vs-rest area under the ROC curve scored by
//     column k of the probabilities, by the trapezoid rule over the distinct
//     thresholds (sklearn.metrics.roc_auc_score). This equals the
//     Mann-Whitney U statistic P(s⁺ > s⁻) + ½·P(s⁺ = s⁻) over all
//     (positive, negative) pairs: tied scores count one half.
type Metrics struct {
	// Classes names the K classes; class k is index k of the labels and of
	// each probability row.
	Classes []string `json:"classes"`
	// N is the number of samples.
	N int `json:"n"`
	// Accuracy is the fraction of samples whose argmax class is the label.
	Accuracy float64 `json:"accuracy"`
	// PerClass holds one entry per class, in class order.
	PerClass []ClassMetrics `json:"per_class"`
	// Macro is the unweighted mean over classes (AUC: over defined classes).
	Macro Averages `json:"macro"`
	// Weighted is the support-weighted mean over classes (AUC: over defined
	// classes, renormalised).
	Weighted Averages `json:"weighted"`
	// AUCNote lists the classes left out of the AUC averages and why; empty
	// when every class's AUC is defined.
	AUCNote string `json:"auc_note,omitempty"`
	// Confusion[t][p] counts samples with true class t predicted as p.
	Confusion [][]int `json:"confusion"`
}

// ComputeMetrics evaluates the predictions of a K-class classifier:
// labels[i] ∈ [0, K) is the true class of sample i and probs[i] (length K,
// entries ≥ 0 summing to 1 within 1e-4) its predicted probabilities;
// classes names the K ≥ 2 classes. The definitions are sklearn's (see
// Metrics). Invalid
// input gives an error naming the sample and the fault.
func ComputeMetrics(labels []int, probs [][]float64, classes []string) (Metrics, error) {
	k := len(classes)
	if err := validatePredictions(labels, probs, k); err != nil {
		return Metrics{}, err
	}
	n := len(labels)
	pred := argmaxRows(probs)
	m := Metrics{
		Classes:   append([]string(nil), classes...),
		N:         n,
		Confusion: make([][]int, k),
		PerClass:  make([]ClassMetrics, k),
	}
	for t := range m.Confusion {
		m.Confusion[t] = make([]int, k)
	}
	correct := 0
	for i, y := range labels {
		m.Confusion[y][pred[i]]++
		if pred[i] == y {
			correct++
		}
	}
	m.Accuracy = float64(correct) / float64(n)

	weights := make([]int, n)
	for i := range weights {
		weights[i] = 1
	}
	var undefined []string
	var aucSum, aucWSum float64
	aucN, aucSupport := 0, 0
	for c := 0; c < k; c++ {
		cm := classCounts(m.Confusion, c)
		cm.Class = classes[c]
		fillRates(&cm)
		scores := column(probs, c)
		order := descendingOrder(scores)
		pos := make([]bool, n)
		for i, y := range labels {
			pos[i] = y == c
		}
		if auc, ok := weightedAUC(order, scores, pos, weights); ok {
			cm.AUC = auc
			cm.ROC = rocFromOrder(order, scores, pos)
			aucSum += auc
			aucWSum += auc * float64(cm.Support)
			aucN++
			aucSupport += cm.Support
		} else {
			cm.AUC = math.NaN()
			cm.AUCUndefined = undefinedReason(cm.Support, n-cm.Support)
			undefined = append(undefined, fmt.Sprintf("%s (%s)", classes[c], cm.AUCUndefined))
		}
		m.PerClass[c] = cm
	}
	for _, cm := range m.PerClass {
		w := float64(cm.Support) / float64(n)
		m.Macro.Precision += cm.Precision / float64(k)
		m.Macro.Recall += cm.Recall / float64(k)
		m.Macro.Specificity += cm.Specificity / float64(k)
		m.Macro.F1 += cm.F1 / float64(k)
		m.Weighted.Precision += cm.Precision * w
		m.Weighted.Recall += cm.Recall * w
		m.Weighted.Specificity += cm.Specificity * w
		m.Weighted.F1 += cm.F1 * w
	}
	m.Macro.AUC, m.Weighted.AUC = math.NaN(), math.NaN()
	if aucN > 0 {
		m.Macro.AUC = aucSum / float64(aucN)
		m.Weighted.AUC = aucWSum / float64(aucSupport)
	}
	if len(undefined) > 0 {
		m.AUCNote = "AUC averages leave out " + strings.Join(undefined, ", ")
	}
	return m, nil
}

// ROCAUC is the area under the ROC curve of scores for the binary truth
// positive (trapezoid rule over distinct thresholds, ties counted one half, as
// sklearn.metrics.roc_auc_score). It returns NaN and an error wrapping
// ErrUndefinedAUC when there are no positives or no negatives, and an error
// for mismatched lengths, no samples or non-finite scores.
func ROCAUC(positive []bool, scores []float64) (float64, error) {
	if err := validateBinary(positive, scores); err != nil {
		return math.NaN(), err
	}
	weights := make([]int, len(scores))
	for i := range weights {
		weights[i] = 1
	}
	auc, ok := weightedAUC(descendingOrder(scores), scores, positive, weights)
	if !ok {
		p := countTrue(positive)
		return math.NaN(), fmt.Errorf("train: %w: %s", ErrUndefinedAUC, undefinedReason(p, len(positive)-p))
	}
	return auc, nil
}

// OneVsRestAUC is the ROC AUC of class against the rest: the positives are
// the samples with labels[i] == class, scored by scores[i]. The scores may be
// any monotone score of the class — a probability, or a raw logit as in
// CovidNet3D's covid_auc (class 1 against the rest, scored by the class-1
// logit). Errors as ROCAUC.
func OneVsRestAUC(labels []int, class int, scores []float64) (float64, error) {
	if len(labels) != len(scores) {
		return math.NaN(), fmt.Errorf("train: one-vs-rest AUC: %d labels but %d scores", len(labels), len(scores))
	}
	pos := make([]bool, len(labels))
	for i, y := range labels {
		pos[i] = y == class
	}
	auc, err := ROCAUC(pos, scores)
	if err != nil {
		return auc, fmt.Errorf("train: class %d against the rest: %w", class, err)
	}
	return auc, nil
}

// ROC computes the ROC curve of scores for the binary truth positive (see
// ROCCurve). Errors as ROCAUC.
func ROC(positive []bool, scores []float64) (ROCCurve, error) {
	if err := validateBinary(positive, scores); err != nil {
		return ROCCurve{}, err
	}
	p := countTrue(positive)
	if p == 0 || p == len(positive) {
		return ROCCurve{}, fmt.Errorf("train: ROC curve: %w: %s", ErrUndefinedAUC, undefinedReason(p, len(positive)-p))
	}
	return rocFromOrder(descendingOrder(scores), scores, positive), nil
}

// validatePredictions checks labels and probability rows for k classes.
func validatePredictions(labels []int, probs [][]float64, k int) error {
	if k < 2 {
		return fmt.Errorf("train: metrics: %d class names, want at least 2", k)
	}
	if len(labels) == 0 {
		return errors.New("train: metrics: no samples")
	}
	if len(labels) != len(probs) {
		return fmt.Errorf("train: metrics: %d labels but %d probability rows", len(labels), len(probs))
	}
	for i, y := range labels {
		if y < 0 || y >= k {
			return fmt.Errorf("train: metrics: sample %d: label %d outside [0, %d)", i, y, k)
		}
		row := probs[i]
		if len(row) != k {
			return fmt.Errorf("train: metrics: sample %d: %d probabilities, want %d (one per class)", i, len(row), k)
		}
		sum := 0.0
		for c, p := range row {
			if math.IsNaN(p) || p < 0 || p > 1+probSumTolerance {
				return fmt.Errorf("train: metrics: sample %d: probability of class %d is %v, want in [0, 1]", i, c, p)
			}
			sum += p
		}
		if math.Abs(sum-1) > probSumTolerance {
			return fmt.Errorf("train: metrics: sample %d: probabilities sum to %v, want 1 (logits instead of softmax?)", i, sum)
		}
	}
	return nil
}

// validateBinary checks a binary truth and its scores.
func validateBinary(positive []bool, scores []float64) error {
	if len(positive) != len(scores) {
		return fmt.Errorf("train: ROC: %d labels but %d scores", len(positive), len(scores))
	}
	if len(scores) == 0 {
		return errors.New("train: ROC: no samples")
	}
	for i, s := range scores {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return fmt.Errorf("train: ROC: sample %d: score %v is not finite", i, s)
		}
	}
	return nil
}

// undefinedReason explains an undefined AUC from the positive and negative
// counts.
func undefinedReason(pos, neg int) string {
	if pos == 0 {
		return fmt.Sprintf("no positive samples (all %d are negative)", neg)
	}
	return fmt.Sprintf("no negative samples (all %d are positive)", pos)
}

func countTrue(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// argmaxRows returns the index of each row's largest entry, the lowest index
// on ties.
func argmaxRows(probs [][]float64) []int {
	pred := make([]int, len(probs))
	for i, row := range probs {
		best := 0
		for c, p := range row {
			if p > row[best] {
				best = c
			}
		}
		pred[i] = best
	}
	return pred
}

func column(probs [][]float64, c int) []float64 {
	col := make([]float64, len(probs))
	for i, row := range probs {
		col[i] = row[c]
	}
	return col
}

// descendingOrder returns the sample indices sorted by decreasing score
// (stable, so ties keep sample order).
func descendingOrder(scores []float64) []int {
	order := make([]int, len(scores))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] > scores[order[b]] })
	return order
}

// classCounts derives the one-vs-rest counts of class c from a confusion
// matrix (rows true, columns predicted).
func classCounts(conf [][]int, c int) ClassMetrics {
	var cm ClassMetrics
	for t, row := range conf {
		for p, v := range row {
			switch {
			case t == c && p == c:
				cm.TP += v
			case t == c:
				cm.FN += v
			case p == c:
				cm.FP += v
			default:
				cm.TN += v
			}
		}
	}
	cm.Support = cm.TP + cm.FN
	return cm
}

// fillRates sets precision, recall, specificity and F1 from the counts, with
// 0 for a zero denominator.
func fillRates(cm *ClassMetrics) {
	cm.Precision = safeRatio(cm.TP, cm.TP+cm.FP)
	cm.Recall = safeRatio(cm.TP, cm.TP+cm.FN)
	cm.Specificity = safeRatio(cm.TN, cm.TN+cm.FP)
	cm.F1 = safeRatio(2*cm.TP, 2*cm.TP+cm.FP+cm.FN)
}

func safeRatio(num, den int) float64 {
	if den == 0 {
		return 0
	}
	return float64(num) / float64(den)
}

// weightedAUC is the ROC AUC when sample i occurs weights[i] times (0 leaves
// it out), walking the samples in order (decreasing score). Each group of
// equal scores moves the curve from (fps, tps) to (fps+Δf, tps+Δt) and adds
// the trapezoid Δf·(2·tps+Δt)/2; the total, kept in integers, is divided by
// P·N at the end. ok is false when there are no weighted positives or
// negatives.
func weightedAUC(order []int, scores []float64, positive []bool, weights []int) (auc float64, ok bool) {
	var tps, fps, twiceArea int64
	for g := 0; g < len(order); {
		var dt, df int64
		s := scores[order[g]]
		for ; g < len(order) && scores[order[g]] == s; g++ {
			i := order[g]
			if positive[i] {
				dt += int64(weights[i])
			} else {
				df += int64(weights[i])
			}
		}
		twiceArea += df * (2*tps + dt)
		tps += dt
		fps += df
	}
	if tps == 0 || fps == 0 {
		return math.NaN(), false
	}
	return float64(twiceArea) / (2 * float64(tps) * float64(fps)), true
}

// rocFromOrder builds the ROC curve over every distinct threshold; the data
// must contain at least one positive and one negative.
func rocFromOrder(order []int, scores []float64, positive []bool) ROCCurve {
	p := countTrue(positive)
	neg := len(positive) - p
	r := ROCCurve{FPR: []float64{0}, TPR: []float64{0}, Thresholds: []float64{math.Inf(1)}}
	tps, fps := 0, 0
	for g := 0; g < len(order); {
		s := scores[order[g]]
		for ; g < len(order) && scores[order[g]] == s; g++ {
			if positive[order[g]] {
				tps++
			} else {
				fps++
			}
		}
		r.FPR = append(r.FPR, float64(fps)/float64(neg))
		r.TPR = append(r.TPR, float64(tps)/float64(p))
		r.Thresholds = append(r.Thresholds, s)
	}
	return r
}
