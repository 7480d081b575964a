package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/nas"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/train"
	"github.com/ctlens/ctlens/volume"
)

// runSearchCmd executes a fresh `ctlens search` command with args.
func runSearchCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newSearchCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

const searchTinySupernet = `{"width_stages":[8,8,16],"n_cell_stages":[1,2,1],"stride_stages":[2,1,2],` +
	`"first_width":8,"first_cell_width":8,"feature_mix":16,"dropout":0}`

// TestSearchTrainScoreCommands runs `ctlens search` under a size budget,
// trains its final.json with `ctlens train --arch`, scores a DICOM series
// with the checkpoint through `ctlens score`, and draws a random
// architecture of equal size with --random-like.
func TestSearchTrainScoreCommands(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "search")
	const budget = 0.06
	text, err := runSearchCmd(t, "--supernet-config", searchTinySupernet, "--input", "4x16x16",
		"--phantoms", "12", "--phantom-size", "32", "--phantom-slices", "12", "--epochs", "2", "--batch", "3",
		"--max-mb", strconv.FormatFloat(budget, 'g', -1, 64), "--arch-lr", "0.01", "--tau-start", "2", "--tau-end", "1", "--tau-decay", "0.5",
		"--quiet", "--out", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if !strings.Contains(text, "architecture: ") || !strings.Contains(text, "ctlens train --arch") {
		t.Fatalf("output:\n%s", text)
	}
	var sum struct {
		Config nas.Config
		Result nas.Result
	}
	b, err := os.ReadFile(filepath.Join(out, nas.SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	c := sum.Config
	if c.Resource != (nas.Resource{Metric: nas.MetricSize, Weight: 1, Target: budget}) || c.Temperature != (nas.Temperature{Start: 2, End: 1, Decay: 0.5}) ||
		c.Data.Phantoms != 12 || c.Data.PhantomSeed != 1 || c.Input != [3]int{4, 16, 16} || c.ArchLR != 0.01 || c.Mode != nas.ModeHard {
		t.Fatalf("configuration %+v", c)
	}
	if sum.Result.SizeMB > budget {
		t.Errorf("final architecture %g MB over the budget %g", sum.Result.SizeMB, budget)
	}
	final := filepath.Join(out, nas.FinalFile)

	run1 := filepath.Join(dir, "run")
	text, err = runTrain(t, "--arch", final, "--input", "4x16x16", "--phantoms", "9", "--phantom-size", "32", "--phantom-slices", "12",
		"--epochs", "1", "--batch", "3", "--val-fraction", "0.34", "--workers", "1", "--no-progress", "--out", run1)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	saved, err := train.ReadRecipe(filepath.Join(run1, train.RecipeFile))
	if err != nil {
		t.Fatal(err)
	}
	var spec net3d.Spec
	if b, err = os.ReadFile(final); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	var got, want bytes.Buffer
	if err := json.Compact(&got, saved.Model.Config); err != nil {
		t.Fatal(err)
	}
	if err := json.Compact(&want, spec.Config); err != nil {
		t.Fatal(err)
	}
	if saved.Model.Arch != spec.Arch || got.String() != want.String() {
		t.Fatalf("trained model %s %s, spec %s %s", saved.Model.Arch, got.String(), spec.Arch, want.String())
	}
	ckpt := filepath.Join(run1, train.BestFile)
	m, _, err := net3d.LoadCheckpoint(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	if got := nas.SizeMB(nn.NumParams(m)); got != sum.Result.SizeMB {
		t.Errorf("trained model %g MB, search reported %g", got, sum.Result.SizeMB)
	}

	ph, err := volume.NewPhantom(volume.PhantomOptions{Class: volume.CP, Seed: 4, Cols: 32, Rows: 32, Slices: 12})
	if err != nil {
		t.Fatal(err)
	}
	study := filepath.Join(dir, "study")
	if _, err := dicomio.WriteSeries(study, ph.CT, dicomio.WriteOptions{Seed: 4, SeriesDescription: "chest"}); err != nil {
		t.Fatal(err)
	}
	text, err = run(t, "score", study, "--model", ckpt, "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	var res struct {
		Series []struct {
			Probabilities map[string]float64 `json:"probabilities"`
			Predicted     string             `json:"predicted"`
		} `json:"series"`
	}
	if err := json.Unmarshal([]byte(text[strings.Index(text, "{"):]), &res); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if len(res.Series) != 1 || len(res.Series[0].Probabilities) != 3 || res.Series[0].Predicted == "" {
		t.Fatalf("score result %+v", res)
	}

	text, err = runSearchCmd(t, "--random-like", final, "--input", "4x16x16", "--out", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	rs, err := readArchSpec(filepath.Join(out, RandomFile))
	if err != nil {
		t.Fatal(err)
	}
	rm, err := net3d.Build(rs, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := nas.SizeMB(nn.NumParams(rm)); got > budget*1.2 || got < sum.Result.SizeMB*0.8 {
		t.Errorf("random architecture %g MB, searched %g MB", got, sum.Result.SizeMB)
	}
}

func TestSearchCommandErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"arch":"covidnet3d","layers":3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--phantoms", "6", "--mode", "bool", "--out", dir}, "mode"},
		{[]string{"--phantoms", "6", "--max-mb", "1", "--max-mmacs", "1", "--out", dir}, "one of --max-mb"},
		{[]string{"--phantoms", "6", "--max-mb", "-1", "--out", dir}, "--max-mb"},
		{[]string{"--phantoms", "6", "--input", "4x16", "--out", dir}, "--input"},
		{[]string{"--random-like", bad, "--out", dir}, "bad.json"},
		{[]string{"--out", dir}, "exactly one"},
	} {
		if _, err := runSearchCmd(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
	if _, err := runTrain(t, "--arch", bad, "--print-recipe"); err == nil || !strings.Contains(err.Error(), "--arch") {
		t.Errorf("train --arch with an unknown field: error %v", err)
	}
}
