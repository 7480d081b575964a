package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/train"
	"github.com/ctlens/ctlens/volume"
)

// runEvalCmd executes a fresh `ctlens eval` command with args.
func runEvalCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newEvalCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// evalCheckpoint writes a tiny untrained covidnet3d-small (8×32×32 input,
// classes as given) with the metadata of a `ctlens train` checkpoint.
func evalCheckpoint(t *testing.T, path string, seed uint64, classes ...string) string {
	t.Helper()
	if len(classes) == 0 {
		classes = volume.PhantomClassNames
	}
	cfg := `{"width_stages":[8,8,8,8,8,8],"n_cell_stages":[1,1,1,1,1,1],"feature_mix":16,"first_width":8,"first_cell_width":8}`
	m, err := net3d.Build(net3d.Spec{Arch: "covidnet3d-small", InChannels: 1, Classes: len(classes), Config: json.RawMessage(cfg)}, seed)
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := json.Marshal(volume.CovidNet3DPipeline(32, 8))
	cl, _ := json.Marshal(classes)
	meta := map[string]string{train.MetaPipeline: string(pl), train.MetaInput: "[8,32,32]", net3d.MetaClassNames: string(cl)}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := net3d.SaveCheckpoint(path, m, meta); err != nil {
		t.Fatal(err)
	}
	return path
}

// readPredictions reads predictions.csv: labels, predicted and argmax of
// the probability columns.
func readPredictions(t *testing.T, path string) (rows [][]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err = csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// camFile is the part of cam.json the tests read.
type camFile struct {
	Summary  cam.EvalSummary `json:"summary"`
	PerClass []struct {
		Class      string `json:"class"`
		WithLesion int    `json:"with_lesion"`
		Hits       int    `json:"hits"`
	} `json:"per_class"`
	Rows []cam.EvalRow `json:"rows"`
}

// One checkpoint on phantoms with --cam: the report agrees with the
// predictions CSV (accuracy counted here from the probabilities), and the
// localisation covers exactly the CP and NCP phantoms, each hit agreeing
// with the lesion mask at the reported peak.
func TestEvalCommandPhantomsWithCAM(t *testing.T) {
	dir := t.TempDir()
	ckpt := evalCheckpoint(t, filepath.Join(dir, "tiny.safetensors"), 2)
	out := filepath.Join(dir, "eval")
	src := []string{"--phantoms", "6", "--phantom-seed", "3", "--phantom-size", "32", "--phantom-slices", "8"}
	text, err := runEvalCmd(t, append(src, "--model", ckpt, "--cam", "--resamples", "50", "--workers", "2", "--no-progress", "--out", out)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	for _, want := range []string{"6 scans (CP 2, NCP 2, Normal 2)", "model tiny (covidnet3d-small", "accuracy", "macro AUC", "pointing game", "NCP"} {
		if !strings.Contains(text, want) {
			t.Fatalf("output lacks %q:\n%s", want, text)
		}
	}
	rep, err := train.ReadReportJSON(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	rows := readPredictions(t, filepath.Join(out, "predictions.csv"))
	if len(rows) != 7 || strings.Join(rows[0], ",") != "name,label,predicted,p_CP,p_NCP,p_Normal" {
		t.Fatalf("predictions.csv: %v", rows)
	}
	correct := 0
	for _, r := range rows[1:] {
		best, bestP := 0, -1.0
		for c := 0; c < 3; c++ {
			p, err := strconv.ParseFloat(r[3+c], 64)
			if err != nil {
				t.Fatal(err)
			}
			if p > bestP {
				best, bestP = c, p
			}
		}
		if volume.PhantomClassNames[best] != r[2] {
			t.Fatalf("row %v: predicted %s, argmax %s", r, r[2], volume.PhantomClassNames[best])
		}
		if r[1] == r[2] {
			correct++
		}
	}
	if rep.Metrics.N != 6 || rep.Summary.Accuracy != float64(correct)/6 || rep.CI == nil || rep.CI.Resamples != 50 || rep.Model != "tiny" {
		t.Fatalf("report N %d accuracy %v CI %+v model %q; CSV accuracy %v", rep.Metrics.N, rep.Summary.Accuracy, rep.CI, rep.Model, float64(correct)/6)
	}
	for _, c := range rep.Metrics.PerClass {
		if c.Support != 2 {
			t.Fatalf("class %s support %d, want 2", c.Class, c.Support)
		}
	}
	for _, f := range []string{"report.md", "roc.png", "cam.md"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}

	b, err := os.ReadFile(filepath.Join(out, evalCAMFile))
	if err != nil {
		t.Fatal(err)
	}
	var cf camFile
	if err := json.Unmarshal(b, &cf); err != nil {
		t.Fatal(err)
	}
	s := cf.Summary
	if s.Scans != 4 || s.WithLesion != 4 || s.Failed != 0 || s.Method != "gradcam" || len(cf.Rows) != 4 || s.PointingAccuracy == nil ||
		*s.PointingAccuracy != float64(s.Hits)/4 || len(cf.PerClass) != 2 || cf.PerClass[0].Class != "CP" || cf.PerClass[1].WithLesion != 2 {
		t.Fatalf("cam summary %+v per class %+v", s, cf.PerClass)
	}
	ds, err := train.OpenDataset(train.DataSource{Phantoms: 6, PhantomSeed: 3, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 8})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]train.DatasetScan{}
	for _, sc := range ds.Scans {
		byName[sc.Name] = sc
	}
	for _, r := range cf.Rows {
		sc, ok := byName[r.Name]
		if !ok || r.Hit == nil || sc.Label == 2 {
			t.Fatalf("row %+v: not a lesion-positive phantom of the data", r)
		}
		v, mask, err := sc.LoadWithLesion()
		if err != nil {
			t.Fatal(err)
		}
		p := r.Peak.Voxel
		inside := mask.Bits[v.Index(p[0], p[1], p[2])]
		if *r.Hit != inside {
			t.Fatalf("%s: hit %v, but the lesion mask at peak %v is %v", r.Name, *r.Hit, p, inside)
		}
	}
}

// Several checkpoints: one folder each (equal file names told apart by
// their folder), a comparison table, and no intervals with --resamples 0.
func TestEvalCommandCompare(t *testing.T) {
	dir := t.TempDir()
	a := evalCheckpoint(t, filepath.Join(dir, "a", "best.safetensors"), 1)
	b := evalCheckpoint(t, filepath.Join(dir, "b", "best.safetensors"), 2)
	out := filepath.Join(dir, "cmp")
	text, err := runEvalCmd(t, "--model", a, "--model", b, "--phantoms", "3", "--phantom-size", "32", "--phantom-slices", "8",
		"--resamples", "0", "--no-progress", "--dataset-name", "tiny phantoms", "--out", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	md, err := os.ReadFile(filepath.Join(out, "comparison.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a/best", "b/best", "tiny phantoms"} {
		if !strings.Contains(string(md), want) {
			t.Fatalf("comparison.md lacks %q:\n%s", want, md)
		}
	}
	var c train.Comparison
	cb, err := os.ReadFile(filepath.Join(out, "comparison.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(cb, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Rows) != 2 || c.Rows[0].Model != "a/best" || c.Rows[1].N != 3 {
		t.Fatalf("comparison %+v", c)
	}
	for _, sub := range []string{"a_best", "b_best"} {
		rep, err := train.ReadReportJSON(filepath.Join(out, sub, "report.json"))
		if err != nil {
			t.Fatal(err)
		}
		if rep.CI != nil || rep.Dataset != "tiny phantoms" {
			t.Fatalf("%s: CI %v dataset %q", sub, rep.CI, rep.Dataset)
		}
	}
}

// A dataset written by ctlens synth (NIfTI, JSON layout) is scored and its
// lesion masks are found next to the scans.
func TestEvalCommandSynthLayout(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if text, err := run(t, "synth", "--out", data, "--n", "2", "--size", "32", "--seed", "5", "--format", "nifti", "--classes", "CP,NCP"); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	ckpt := evalCheckpoint(t, filepath.Join(dir, "m.safetensors"), 3)
	out := filepath.Join(dir, "eval")
	text, err := runEvalCmd(t, "--model", ckpt, "--layout", filepath.Join(data, "dataset.json"), "--cam", "--cam-method", "gradcam++",
		"--cam-use-label", "--resamples", "20", "--no-progress", "--out", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	var cf camFile
	b, err := os.ReadFile(filepath.Join(out, evalCAMFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		t.Fatal(err)
	}
	if cf.Summary.WithLesion != 2 || cf.Summary.Failed != 0 || cf.Summary.Method != "gradcam++" {
		t.Fatalf("cam summary %+v", cf.Summary)
	}
	for _, r := range cf.Rows {
		if r.Class != r.Label {
			t.Fatalf("--cam-use-label explained class %d for label %d", r.Class, r.Label)
		}
	}
	rep, err := train.ReadReportJSON(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Two classes present, the model's third (Normal) without support.
	if rep.Metrics.N != 2 || rep.Metrics.PerClass[2].Support != 0 {
		t.Fatalf("report %+v", rep.Metrics)
	}
}

// The bundled model evaluates without --model.
func TestEvalCommandBundledModel(t *testing.T) {
	out := filepath.Join(t.TempDir(), "eval")
	text, err := runEvalCmd(t, "--phantoms", "3", "--phantom-size", "32", "--phantom-slices", "16", "--resamples", "10", "--no-progress", "--out", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if !strings.Contains(text, "model default") {
		t.Fatalf("output:\n%s", text)
	}
	if _, err := train.ReadReportJSON(filepath.Join(out, "report.json")); err != nil {
		t.Fatal(err)
	}
}

func TestEvalCommandErrors(t *testing.T) {
	dir := t.TempDir()
	ckpt := evalCheckpoint(t, filepath.Join(dir, "m.safetensors"), 1)
	other := evalCheckpoint(t, filepath.Join(dir, "covid.safetensors"), 1, "normal", "covid")
	noMeta := filepath.Join(dir, "plain.safetensors")
	m, err := net3d.Build(net3d.Spec{Arch: "covidnet3d-small", InChannels: 1, Classes: 3}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := net3d.SaveCheckpoint(noMeta, m, nil); err != nil {
		t.Fatal(err)
	}
	ph := []string{"--phantoms", "3", "--phantom-size", "32", "--phantom-slices", "8", "--no-progress", "--out", filepath.Join(dir, "e")}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--model", ckpt}, "no data"},
		{[]string{"--model", ckpt, "--data", dir, "--phantom-seed", "3"}, "--phantom-seed needs --phantoms"},
		{append([]string{"--model", ckpt, "--cam-method", "saliency"}, ph...), "--cam-method"},
		{append([]string{"--model", ckpt, "--ci-level", "1.5"}, ph...), "--ci-level"},
		{append([]string{"--model", ckpt, "--resamples", "-1"}, ph...), "--resamples"},
		{append([]string{"--model", filepath.Join(dir, "missing.safetensors")}, ph...), "missing.safetensors"},
		{append([]string{"--model", noMeta}, ph...), "ctlens.pipeline"},
		{append([]string{"--model", other}, ph...), `class "CP"`},
		{append([]string{"--model", ckpt, "--average", "covid"}, ph...), `average "covid"`},
		{append([]string{"--model", ckpt, "--phantoms", "0"}, ph[2:]...), "--phantom-size needs --phantoms"},
	} {
		text, err := runEvalCmd(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one containing %q\n%s", c.args, err, c.want, text)
		}
	}
}
