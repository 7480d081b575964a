package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
)

// Summary averages for NewReport.
const (
	// AverageMacro summarises precision, recall, specificity, F1 and AUC by
	// their unweighted mean over classes.
	AverageMacro = "macro"
	// AverageWeighted summarises them by their support-weighted mean.
	AverageWeighted = "weighted"
)

// ModelInfo describes the model and data a report is about.
type ModelInfo struct {
	// Model names the model (a table row's label); required.
	Model string `json:"model"`
	// Dataset names the test data, e.g. "CC-CCII"; optional.
	Dataset string `json:"dataset,omitempty"`
	// Params is the number of trainable parameters; 0 if unknown.
	Params int64 `json:"params,omitempty"`
	// SizeMB is the model size in MiB; if 0 and Params is set, NewReport
	// sets it to Params·4/1024² (float32 weights, the CovidNet3D paper's
	// "Size (MB)").
	SizeMB float64 `json:"size_mb,omitempty"`
}

// Summary is a report's headline row, laid out like the CovidNet3D paper's
// results table. Accuracy is overall; the other metrics are averaged as
// Average says: "macro", "weighted", or the name of one class whose
// one-vs-rest metrics are reported (e.g. "covid" on a binary data set).
type Summary struct {
	// Average is "macro", "weighted" or a class name.
	Average string `json:"average"`
	// Accuracy is Metrics.Accuracy.
	Accuracy float64 `json:"accuracy"`
	// Precision, Recall (sensitivity), Specificity and F1 are averaged as
	// Average says.
	Precision   float64 `json:"precision"`
	Recall      float64 `json:"recall"`
	Specificity float64 `json:"specificity"`
	F1          float64 `json:"f1"`
	// AUC is NaN (null in JSON) when undefined.
	AUC float64 `json:"auc"`
}

// Report is the evaluation of one model on one test set: the model, the
// headline Summary, the full Metrics (per class, confusion matrix, ROC
// curves) and optional bootstrap intervals. It encodes to and decodes from
// JSON without loss (NaN as null, +Inf as "+Inf").
type Report struct {
	ModelInfo
	Summary Summary      `json:"summary"`
	Metrics Metrics      `json:"metrics"`
	CI      *BootstrapCI `json:"ci,omitempty"`
}

// NewReport assembles a Report from metrics computed by ComputeMetrics and,
// if not nil, intervals from Bootstrap on the same predictions. average is
// AverageMacro (also for ""), AverageWeighted, or a class name of m.
func NewReport(info ModelInfo, m Metrics, ci *BootstrapCI, average string) (Report, error) {
	if strings.TrimSpace(info.Model) == "" {
		return Report{}, errors.New("train: report: model name is empty")
	}
	if len(m.PerClass) == 0 || len(m.PerClass) != len(m.Classes) {
		return Report{}, fmt.Errorf("train: report %s: metrics have %d classes and %d per-class entries (not from ComputeMetrics?)",
			info.Model, len(m.Classes), len(m.PerClass))
	}
	if info.Params < 0 || info.SizeMB < 0 {
		return Report{}, fmt.Errorf("train: report %s: negative params %d or size %v MB", info.Model, info.Params, info.SizeMB)
	}
	if info.SizeMB == 0 && info.Params > 0 {
		info.SizeMB = float64(info.Params) * 4 / (1024 * 1024)
	}
	if average == "" {
		average = AverageMacro
	}
	s := Summary{Average: average, Accuracy: m.Accuracy}
	switch average {
	case AverageMacro:
		s.Precision, s.Recall, s.Specificity, s.F1, s.AUC = m.Macro.Precision, m.Macro.Recall, m.Macro.Specificity, m.Macro.F1, m.Macro.AUC
	case AverageWeighted:
		w := m.Weighted
		s.Precision, s.Recall, s.Specificity, s.F1, s.AUC = w.Precision, w.Recall, w.Specificity, w.F1, w.AUC
	default:
		found := false
		for _, c := range m.PerClass {
			if c.Class == average {
				s.Precision, s.Recall, s.Specificity, s.F1, s.AUC = c.Precision, c.Recall, c.Specificity, c.F1, c.AUC
				found = true
				break
			}
		}
		if !found {
			return Report{}, fmt.Errorf("train: report %s: average %q is neither %q, %q nor a class (%s)",
				info.Model, average, AverageMacro, AverageWeighted, strings.Join(m.Classes, ", "))
		}
	}
	return Report{ModelInfo: info, Summary: s, Metrics: m, CI: ci}, nil
}

// WriteReportJSON writes r as indented JSON to path.
func WriteReportJSON(path string, r Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("train: report %s: %w", r.Model, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("train: write report: %w", err)
	}
	return nil
}

// ReadReportJSON reads a report written by WriteReportJSON.
func ReadReportJSON(path string) (Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Report{}, fmt.Errorf("train: read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return Report{}, fmt.Errorf("train: read report %s: %w", path, err)
	}
	if r.Model == "" || len(r.Metrics.PerClass) == 0 {
		return Report{}, fmt.Errorf("train: read report %s: no model name or per-class metrics (not a ctlens report?)", path)
	}
	return r, nil
}

// MarshalJSON writes an undefined (NaN) AUC as null.
func (s Summary) MarshalJSON() ([]byte, error) {
	type plain Summary
	return json.Marshal(struct {
		plain
		AUC jsonFloat `json:"auc"`
	}{plain(s), jsonFloat(s.AUC)})
}

// UnmarshalJSON reads what MarshalJSON writes (null AUC as NaN).
func (s *Summary) UnmarshalJSON(b []byte) error {
	type plain Summary
	aux := struct {
		*plain
		AUC jsonFloat `json:"auc"`
	}{plain: (*plain)(s), AUC: jsonFloat(math.NaN())}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	s.AUC = float64(aux.AUC)
	return nil
}

// Comparison is several models' headline rows in one table, like the
// CovidNet3D paper's results table.
type Comparison struct {
	Rows []ComparisonRow `json:"rows"`
}

// ComparisonRow is one model's row of a Comparison.
type ComparisonRow struct {
	ModelInfo
	// N is the number of test samples.
	N       int          `json:"n"`
	Summary Summary      `json:"summary"`
	CI      *BootstrapCI `json:"ci,omitempty"`
}

// MergeReports puts the reports' headline rows, in the order given, into
// one Comparison.
func MergeReports(reports ...Report) (Comparison, error) {
	if len(reports) == 0 {
		return Comparison{}, errors.New("train: merge reports: no reports")
	}
	c := Comparison{Rows: make([]ComparisonRow, len(reports))}
	for i, r := range reports {
		if strings.TrimSpace(r.Model) == "" {
			return Comparison{}, fmt.Errorf("train: merge reports: report %d has no model name", i)
		}
		c.Rows[i] = ComparisonRow{ModelInfo: r.ModelInfo, N: r.Metrics.N, Summary: r.Summary, CI: r.CI}
	}
	return c, nil
}

// Markdown renders the comparison as a Markdown table: one row per model
// with Dataset (if any row names one), Model, Size MB and Params (if any row
// has them), N, Accuracy, Precision, Recall/Sensitivity, Specificity and F1
// in percent (two decimals), AUC (four decimals), the Average column when
// rows average differently (otherwise a line under the table says which),
// and 95%-style bootstrap intervals when any row has them. Undefined values
// print as "–".
func (c Comparison) Markdown() string {
	var hasDataset, hasSize, hasParams, hasCI bool
	sameAverage := true
	for _, r := range c.Rows {
		hasDataset = hasDataset || r.Dataset != ""
		hasSize = hasSize || r.SizeMB > 0
		hasParams = hasParams || r.Params > 0
		hasCI = hasCI || r.CI != nil
		sameAverage = sameAverage && r.Summary.Average == c.Rows[0].Summary.Average
	}
	var head []string
	if hasDataset {
		head = append(head, "Dataset")
	}
	head = append(head, "Model")
	if hasSize {
		head = append(head, "Size MB")
	}
	if hasParams {
		head = append(head, "Params")
	}
	head = append(head, "N", "Accuracy %", "Precision %", "Recall/Sensitivity %", "Specificity %", "F1 %", "AUC")
	if !sameAverage {
		head = append(head, "Average")
	}
	if hasCI {
		head = append(head, "Accuracy CI %", "Macro F1 CI %", "Macro AUC CI")
	}
	var b strings.Builder
	writeRow(&b, head)
	writeAlign(&b, len(head), 1+btoi(hasDataset))
	for _, r := range c.Rows {
		var row []string
		if hasDataset {
			row = append(row, mdEscape(r.Dataset))
		}
		row = append(row, mdEscape(r.Model))
		if hasSize {
			row = append(row, fmtFixed(r.SizeMB, 2, r.SizeMB > 0))
		}
		if hasParams {
			row = append(row, fmtParams(r.Params))
		}
		s := r.Summary
		row = append(row, fmt.Sprint(r.N), pct(s.Accuracy), pct(s.Precision), pct(s.Recall), pct(s.Specificity), pct(s.F1), fmtAUC(s.AUC))
		if !sameAverage {
			row = append(row, mdEscape(s.Average))
		}
		if hasCI {
			if r.CI == nil {
				row = append(row, "–", "–", "–")
			} else {
				row = append(row, ciText(r.CI.Accuracy, true), ciText(r.CI.MacroF1, true), ciText(r.CI.MacroAUC, false))
			}
		}
		writeRow(&b, row)
	}
	if len(c.Rows) > 0 && sameAverage {
		b.WriteString("\n" + averageSentence(c.Rows[0].Summary.Average) + "\n")
	}
	return b.String()
}

// Markdown renders the report: a heading, the headline table (as
// Comparison.Markdown), the bootstrap intervals, the per-class table with
// macro and weighted averages, a note on undefined AUCs, and the confusion
// matrix (rows true class, columns predicted class).
func (r Report) Markdown() string {
	var b strings.Builder
	title := mdEscape(r.Model)
	if r.Dataset != "" {
		title += " on " + mdEscape(r.Dataset)
	}
	b.WriteString("## " + title + "\n\n")
	c := Comparison{Rows: []ComparisonRow{{ModelInfo: r.ModelInfo, N: r.Metrics.N, Summary: r.Summary}}}
	b.WriteString(c.Markdown())
	if r.CI != nil {
		fmt.Fprintf(&b, "\n%s bootstrap intervals (percentile, %d resamples, seed %d): accuracy %s %%, macro F1 %s %%, macro AUC %s.\n",
			levelText(r.CI.Level), r.CI.Resamples, r.CI.Seed,
			ciText(r.CI.Accuracy, true), ciText(r.CI.MacroF1, true), ciText(r.CI.MacroAUC, false))
		if r.CI.Note != "" {
			b.WriteString("Note: " + mdEscape(r.CI.Note) + ".\n")
		}
	}

	m := r.Metrics
	fmt.Fprintf(&b, "\n### Per class (N = %d)\n\n", m.N)
	head := []string{"Class", "Support", "Precision %", "Recall/Sensitivity %", "Specificity %", "F1 %", "AUC"}
	writeRow(&b, head)
	writeAlign(&b, len(head), 1)
	for _, cm := range m.PerClass {
		writeRow(&b, []string{mdEscape(cm.Class), fmt.Sprint(cm.Support), pct(cm.Precision), pct(cm.Recall),
			pct(cm.Specificity), pct(cm.F1), fmtAUC(cm.AUC)})
	}
	for _, a := range []struct {
		name string
		v    Averages
	}{{"macro avg", m.Macro}, {"weighted avg", m.Weighted}} {
		writeRow(&b, []string{"*" + a.name + "*", fmt.Sprint(m.N), pct(a.v.Precision), pct(a.v.Recall),
			pct(a.v.Specificity), pct(a.v.F1), fmtAUC(a.v.AUC)})
	}
	if m.AUCNote != "" {
		b.WriteString("\n" + mdEscape(m.AUCNote) + ".\n")
	}

	b.WriteString("\n### Confusion matrix (rows: true class, columns: predicted class)\n\n")
	head = []string{"true \\ predicted"}
	for _, name := range m.Classes {
		head = append(head, mdEscape(name))
	}
	writeRow(&b, head)
	writeAlign(&b, len(head), 1)
	for t, row := range m.Confusion {
		cells := []string{mdEscape(m.Classes[t])}
		for _, v := range row {
			cells = append(cells, fmt.Sprint(v))
		}
		writeRow(&b, cells)
	}
	return b.String()
}

func writeRow(b *strings.Builder, cells []string) {
	b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

// writeAlign writes the separator row: the first left columns left-aligned,
// the rest right-aligned.
func writeAlign(b *strings.Builder, n, left int) {
	cells := make([]string, n)
	for i := range cells {
		if i < left {
			cells[i] = "---"
		} else {
			cells[i] = "---:"
		}
	}
	b.WriteString("|" + strings.Join(cells, "|") + "|\n")
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

// mdEscape keeps a name from breaking a Markdown table row.
func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}

func fmtFixed(v float64, digits int, ok bool) string {
	if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.*f", digits, v)
}

// pct formats a fraction as a percentage with two decimals.
func pct(v float64) string { return fmtFixed(100*v, 2, true) }

// fmtAUC formats an AUC with four decimals.
func fmtAUC(v float64) string { return fmtFixed(v, 4, true) }

// fmtParams formats a parameter count in millions.
func fmtParams(p int64) string {
	if p <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f M", float64(p)/1e6)
}

// ciText formats an interval as "lo–hi", in percent when percent is set.
func ciText(iv Interval, percent bool) string {
	if math.IsNaN(iv.Lo) || math.IsNaN(iv.Hi) {
		return "–"
	}
	if percent {
		return pct(iv.Lo) + "–" + pct(iv.Hi)
	}
	return fmtAUC(iv.Lo) + "–" + fmtAUC(iv.Hi)
}

func levelText(level float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", 100*level), "0"), ".") + "%"
}

func averageSentence(avg string) string {
	switch avg {
	case AverageMacro:
		return "Precision, recall, specificity, F1 and AUC: unweighted (macro) mean over classes."
	case AverageWeighted:
		return "Precision, recall, specificity, F1 and AUC: support-weighted mean over classes."
	}
	return "Precision, recall, specificity, F1 and AUC: class " + mdEscape(avg) + " against the rest."
}
