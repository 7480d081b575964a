package train

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
)

// Files of the test report that Run writes into the output folder when the
// recipe has a test set (WriteEvalReport with the "test" prefix).
const (
	// TestReportMD is the Markdown report (Report.Markdown).
	TestReportMD = "test_report.md"
	// TestReportFile is the JSON report (WriteReportJSON).
	TestReportFile = "test_report.json"
	// TestROCFile is the ROC plot (PlotROC).
	TestROCFile = "test_roc.png"
	// TestPredictionsFile lists every test scan's label, prediction and
	// probabilities as CSV.
	TestPredictionsFile = "test_predictions.csv"
)

// ReportFromResult computes the metrics of res (ComputeMetrics over
// classes, which name res's probability columns), their bootstrap
// intervals with bo (none when bo.Resamples is negative) and the Report
// headed as average says (see NewReport).
func ReportFromResult(info ModelInfo, classes []string, res *EvalResult, bo BootstrapOptions, average string) (Report, error) {
	if res == nil || len(res.Labels) == 0 {
		return Report{}, fmt.Errorf("train: report %s: no scored scans", info.Model)
	}
	m, err := ComputeMetrics(res.Labels, res.Probs, classes)
	if err != nil {
		return Report{}, fmt.Errorf("train: report %s: %w", info.Model, err)
	}
	var ci *BootstrapCI
	if bo.Resamples >= 0 {
		c, err := Bootstrap(res.Labels, res.Probs, bo)
		if err != nil {
			return Report{}, fmt.Errorf("train: report %s: %w", info.Model, err)
		}
		ci = &c
	}
	return NewReport(info, m, ci, average)
}

// EvalFiles are the paths WriteEvalReport wrote.
type EvalFiles struct {
	Markdown, JSON, ROC, Predictions string
}

// WriteEvalReport writes into dir the report's Markdown (PREFIX_report.md,
// or report.md when prefix is empty), its JSON (WriteReportJSON), the ROC
// plot (PlotROC; left out when no class has a defined AUC) and the
// per-scan predictions of res as CSV (name, label, predicted, then one
// probability column per class).
func WriteEvalReport(dir, prefix string, rep Report, res *EvalResult) (EvalFiles, error) {
	name := func(s string) string {
		if prefix != "" {
			s = prefix + "_" + s
		}
		return filepath.Join(dir, s)
	}
	f := EvalFiles{Markdown: name("report.md"), JSON: name("report.json"), ROC: name("roc.png"), Predictions: name("predictions.csv")}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return f, fmt.Errorf("train: report folder: %w", err)
	}
	if err := os.WriteFile(f.Markdown, []byte(rep.Markdown()), 0o644); err != nil {
		return f, fmt.Errorf("train: write report: %w", err)
	}
	if err := WriteReportJSON(f.JSON, rep); err != nil {
		return f, err
	}
	if math.IsNaN(rep.Metrics.Macro.AUC) {
		f.ROC = ""
	} else {
		title := rep.Model
		if rep.Dataset != "" {
			title += " on " + rep.Dataset
		}
		if err := PlotROC(f.ROC, title, rep.Metrics); err != nil {
			return f, err
		}
	}
	if res != nil {
		if err := writePredictionsCSV(f.Predictions, rep.Metrics.Classes, res); err != nil {
			return f, err
		}
	} else {
		f.Predictions = ""
	}
	return f, nil
}

// writePredictionsCSV writes one row per scan of res: name, true class,
// predicted class (argmax, first on ties) and the probabilities.
func writePredictionsCSV(path string, classes []string, res *EvalResult) error {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	head := []string{"name", "label", "predicted"}
	for _, c := range classes {
		head = append(head, "p_"+c)
	}
	_ = w.Write(head)
	pred := argmaxRows(res.Probs)
	for i, name := range res.Names {
		row := []string{name, classes[res.Labels[i]], classes[pred[i]]}
		for _, p := range res.Probs[i] {
			row = append(row, strconv.FormatFloat(p, 'g', 8, 64))
		}
		_ = w.Write(row)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return fmt.Errorf("train: predictions %s: %w", path, err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("train: write predictions: %w", err)
	}
	return nil
}

// valSummary returns the macro F1 and macro AUC of a validation result
// (ComputeMetrics over classes); the AUC is nil when it is undefined, and
// both are nil when the metrics cannot be computed.
func valSummary(v EvalResult, classes []string) (f1, auc *float64) {
	if len(v.Labels) == 0 {
		return nil, nil
	}
	m, err := ComputeMetrics(v.Labels, v.Probs, classes)
	if err != nil {
		return nil, nil
	}
	f := m.Macro.F1
	f1 = &f
	if !math.IsNaN(m.Macro.AUC) {
		a := m.Macro.AUC
		auc = &a
	}
	return f1, auc
}

// writeTestReport writes the test report of the run (TestReportMD,
// TestReportFile, TestROCFile, TestPredictionsFile) for the best epoch's
// weights, with bootstrap intervals seeded by the recipe's seed.
func (t *trainer) writeTestReport(tr *EvalResult) (Report, error) {
	name := t.r.Model.Arch
	if base := filepath.Base(filepath.Clean(t.r.Out)); base != "." && base != string(filepath.Separator) {
		name = base + " (" + t.r.Model.Arch + ")"
	}
	info := ModelInfo{Model: name, Dataset: t.r.Test.String(), Params: int64(t.dsRec.Parameters)}
	rep, err := ReportFromResult(info, t.classes, tr, BootstrapOptions{Seed: t.r.Seed}, AverageMacro)
	if err != nil {
		return Report{}, err
	}
	if _, err := WriteEvalReport(t.r.Out, "test", rep, tr); err != nil {
		return Report{}, err
	}
	return rep, nil
}
