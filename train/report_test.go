package train

import (
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func handReport(t *testing.T, info ModelInfo, average string, withCI bool) Report {
	t.Helper()
	m, err := ComputeMetrics(handLabels, handProbs, handClasses)
	if err != nil {
		t.Fatal(err)
	}
	var ci *BootstrapCI
	if withCI {
		c, err := Bootstrap(handLabels, handProbs, BootstrapOptions{Seed: 5, Resamples: 200})
		if err != nil {
			t.Fatal(err)
		}
		ci = &c
	}
	r, err := NewReport(info, m, ci, average)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReportMarkdown checks the report's tables against the hand-worked
// metrics of TestMetricsByHand, in percent with two decimals.
func TestReportMarkdown(t *testing.T) {
	r := handReport(t, ModelInfo{Model: "CovidNet3D-S", Dataset: "CC-CCII", Params: 3 << 20}, "", true)
	// 3·2^20 parameters · 4 bytes / 2^20 = 12 MB.
	if r.SizeMB != 12 {
		t.Errorf("SizeMB %v, want 12", r.SizeMB)
	}
	md := r.Markdown()
	for _, want := range []string{
		"## CovidNet3D-S on CC-CCII\n",
		"| Dataset | Model | Size MB | Params | N | Accuracy % | Precision % | Recall/Sensitivity % | Specificity % | F1 % | AUC |\n",
		// Accuracy 3/6, macro P 11/18, R 1/2, spec 3/4, F1 47/90, AUC 13/16.
		"| CC-CCII | CovidNet3D-S | 12.00 | 3.15 M | 6 | 50.00 | 61.11 | 50.00 | 75.00 | 52.22 | 0.8125 |\n",
		"unweighted (macro) mean over classes",
		"95% bootstrap intervals (percentile, 200 resamples, seed 5): accuracy ",
		"| Class | Support | Precision % | Recall/Sensitivity % | Specificity % | F1 % | AUC |\n",
		"| NiCT | 2 | 50.00 | 50.00 | 75.00 | 50.00 | 0.8750 |\n",
		"| pCT | 2 | 33.33 | 50.00 | 50.00 | 40.00 | 0.6875 |\n",
		"| NCP | 2 | 100.00 | 50.00 | 100.00 | 66.67 | 0.8750 |\n",
		"| *macro avg* | 6 | 61.11 | 50.00 | 75.00 | 52.22 | 0.8125 |\n",
		"| true \\ predicted | NiCT | pCT | NCP |\n|---|---:|---:|---:|\n| NiCT | 1 | 1 | 0 |\n| pCT | 1 | 1 | 0 |\n| NCP | 0 | 1 | 1 |\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}

	// One class against the rest: NCP P 1, R 1/2, spec 1, F1 2/3, AUC 7/8.
	r = handReport(t, ModelInfo{Model: "m"}, "NCP", false)
	md = r.Markdown()
	for _, want := range []string{
		"| m | 6 | 50.00 | 100.00 | 50.00 | 100.00 | 66.67 | 0.8750 |\n",
		"class NCP against the rest",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "bootstrap") || strings.Contains(md, "Size MB") {
		t.Errorf("Markdown without CI or size mentions them:\n%s", md)
	}
}

// TestNewReportErrors checks the inputs NewReport rejects.
func TestNewReportErrors(t *testing.T) {
	m, err := ComputeMetrics(handLabels, handProbs, handClasses)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		info    ModelInfo
		m       Metrics
		average string
		want    string
	}{
		{ModelInfo{}, m, "", "model name is empty"},
		{ModelInfo{Model: "x"}, m, "covid", `average "covid" is neither "macro", "weighted" nor a class (NiCT, pCT, NCP)`},
		{ModelInfo{Model: "x"}, Metrics{}, "", "0 classes and 0 per-class entries"},
		{ModelInfo{Model: "x", Params: -1}, m, "", "negative params"},
	} {
		if _, err := NewReport(tc.info, tc.m, nil, tc.average); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewReport(%+v, %q): %v, want error containing %q", tc.info, tc.average, err, tc.want)
		}
	}
}

// TestMergeReports checks the comparison table of several models.
func TestMergeReports(t *testing.T) {
	a := handReport(t, ModelInfo{Model: "A", SizeMB: 43.06}, AverageMacro, true)
	b := handReport(t, ModelInfo{Model: "B|x"}, AverageWeighted, false)
	c, err := MergeReports(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Rows) != 2 || c.Rows[0].Model != "A" || c.Rows[1].N != 6 {
		t.Fatalf("rows %+v", c.Rows)
	}
	md := c.Markdown()
	lines := strings.Split(strings.TrimSpace(md), "\n")
	if len(lines) != 4 {
		t.Fatalf("want header, separator and 2 rows, got:\n%s", md)
	}
	wantHead := "| Model | Size MB | N | Accuracy % | Precision % | Recall/Sensitivity % | Specificity % | F1 % | AUC | Average | Accuracy CI % | Macro F1 CI % | Macro AUC CI |"
	if lines[0] != wantHead {
		t.Errorf("header\n%s\nwant\n%s", lines[0], wantHead)
	}
	if lines[1] != "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" {
		t.Errorf("separator %s", lines[1])
	}
	// Equal supports, so the weighted row equals the macro row; the pipe in
	// the model name is escaped, and B has no size and no intervals.
	if !strings.HasPrefix(lines[2], "| A | 43.06 | 6 | 50.00 | 61.11 | 50.00 | 75.00 | 52.22 | 0.8125 | macro | ") {
		t.Errorf("row A: %s", lines[2])
	}
	if lines[3] != `| B\|x | – | 6 | 50.00 | 61.11 | 50.00 | 75.00 | 52.22 | 0.8125 | weighted | – | – | – |` {
		t.Errorf("row B: %s", lines[3])
	}
	if _, err := MergeReports(); err == nil {
		t.Error("no reports: no error")
	}
}

// TestReportJSON checks that a report survives a JSON file round trip,
// undefined AUCs included.
func TestReportJSON(t *testing.T) {
	m, err := ComputeMetrics([]int{0, 1, 0, 1}, [][]float64{{0.6, 0.4, 0}, {0.3, 0.7, 0}, {0.4, 0.6, 0}, {0.2, 0.8, 0}}, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	ci, err := Bootstrap([]int{1, 1}, [][]float64{{0.5, 0.5}, {0.1, 0.9}}, BootstrapOptions{Resamples: 10})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReport(ModelInfo{Model: "m", Dataset: "d", Params: 1000}, m, &ci, "c")
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(r.Summary.AUC) {
		t.Errorf("summary AUC of class c %v, want NaN", r.Summary.AUC)
	}
	if !strings.Contains(r.Markdown(), "| d | m | 0.00 | 0.00 M | 4 | 75.00 | 0.00 | 0.00 | 100.00 | 0.00 | – |") {
		t.Errorf("Markdown of undefined AUC:\n%s", r.Markdown())
	}
	path := filepath.Join(t.TempDir(), "report.json")
	if err := WriteReportJSON(path, r); err != nil {
		t.Fatal(err)
	}
	back, err := ReadReportJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Markdown() != r.Markdown() || !math.IsNaN(back.Summary.AUC) || !math.IsNaN(back.CI.MacroAUC.Lo) {
		t.Errorf("round trip changed the report:\n%s\n%s", r.Markdown(), back.Markdown())
	}
	back.Summary.AUC, r.Summary.AUC = 0, 0
	back.Metrics.PerClass[2].AUC, r.Metrics.PerClass[2].AUC = 0, 0
	back.CI, r.CI = nil, nil
	if !reflect.DeepEqual(back, r) {
		t.Errorf("round trip:\n%+v\n%+v", back, r)
	}
	if _, err := ReadReportJSON(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file: no error")
	}
}
