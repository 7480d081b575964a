package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/net2d"
	"github.com/ctlens/ctlens/score"
	"github.com/ctlens/ctlens/train"
	"github.com/ctlens/ctlens/volume"
)

// TestTrain2DPresetRecipe checks that --preset makes a 2D recipe with the
// ResNet-RS values (lr 0.1·32/256), that flags given override the preset,
// and that 3D-only flags are refused for a 2D model.
func TestTrain2DPresetRecipe(t *testing.T) {
	out, err := runTrain(t, "--preset", "resnetrs", "--model", "resnetrs-26", "--phantoms", "6", "--batch", "32",
		"--label-smoothing", "0.2", "--print-recipe")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var r train.Recipe2D
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var cfg net2d.ResNetRSConfig
	if err := net2d.DecodeConfig(r.Model, &cfg); err != nil {
		t.Fatal(err)
	}
	if r.Preset != "resnetrs" || r.Model.Arch != "resnetrs-26" || r.Optimizer != "sgd" || !r.Nesterov || r.LR != 0.0125 ||
		r.WeightDecay != 4e-5 || r.EMADecay != 0.9999 || r.LabelSmoothing != 0.2 || r.Train.Phantoms != 6 ||
		cfg.Dropout != 0.25 || cfg.DropPath != 0 {
		t.Errorf("recipe %+v", r)
	}
	if _, err := runTrain(t, "--model", "resnetrs-18", "--input", "8x32x32", "--phantoms", "3", "--print-recipe"); err == nil ||
		!strings.Contains(err.Error(), "--input: does not apply to a 2D model") {
		t.Errorf("--input for a 2D model: %v", err)
	}
	if _, err := runTrain(t, "--preset", "resformer", "--model", "resnetrs-18", "--phantoms", "3", "--print-recipe"); err == nil ||
		!strings.Contains(err.Error(), "not a ResFormer") {
		t.Errorf("resformer preset on ResNet-RS: %v", err)
	}
}

// TestTrain2DThenScore trains a tiny multi-resolution ResFormer with
// `ctlens train` and scores a phantom DICOM series with its checkpoint
// through `ctlens score`, heatmap included.
func TestTrain2DThenScore(t *testing.T) {
	dir := t.TempDir()
	run2D := filepath.Join(dir, "run")
	out, err := runTrain(t, "--model", "resformer-ti", "--model-config", `{"patch":8,"depth":1}`,
		"--size", "16", "--resolutions", "16,8", "--labels", "lesion", "--aggregation", "topk", "--top-k", "2",
		"--phantoms", "6", "--phantom-size", "32", "--slice-stride", "3", "--epochs", "1", "--batch", "8",
		"--val-fraction", "0.34", "--workers", "2", "--no-progress", "--out", run2D)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"classes: CP, NCP, Normal", "(3 scans), ", "validation (3 scans)", "best epoch 1 of 1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	p, err := volume.NewPhantom(volume.PhantomOptions{Class: volume.CP, Seed: 77, Cols: 32, Slices: 8})
	if err != nil {
		t.Fatal(err)
	}
	series := filepath.Join(dir, "series")
	if _, err := dicomio.WriteSeries(series, p.CT, dicomio.WriteOptions{Seed: 5}); err != nil {
		t.Fatal(err)
	}
	heat := filepath.Join(dir, "heat")
	text, err := run(t, "score", "--model", filepath.Join(run2D, train.BestFile), "--heatmap", heat, "--json", series)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	var res score.Result
	if err := json.Unmarshal([]byte(text), &res); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if res.Model.Arch != "resformer-ti" || len(res.Series) != 1 {
		t.Fatalf("result %s", text)
	}
	r := res.Series[0]
	s := 0.0
	for _, v := range r.Probabilities {
		s += v
	}
	if math.Abs(s-1) > 1e-9 || r.Predicted == "" || r.Heatmap == nil || r.Dims != [3]int{32, 32, 8} {
		t.Fatalf("series result %s", text)
	}
	h, err := dicomio.ReadNIfTI(filepath.Join(heat, "0", score.HeatFile), dicomio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if h.Dims != r.Dims {
		t.Errorf("heat dims %v, scan %v", h.Dims, r.Dims)
	}
}

// TestMultiresCommand runs the experiment at toy size and checks the
// table's bookkeeping: which sizes each model saw, zero drop at the
// training size, and the mean over the unseen sizes.
func TestMultiresCommand(t *testing.T) {
	experiment := func(workers string) (multiresReport, string) {
		cmd := newMultiresCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"--train-phantoms", "6", "--test-phantoms", "3", "--phantom-size", "32", "--size", "16",
			"--resolutions", "16,8", "--test-sizes", "8,16,24,32", "--depth", "1", "--epochs", "1", "--batch", "8",
			"--workers", workers, "--json", "--no-progress"})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		var rep multiresReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		return rep, out.String()
	}
	rep, text := experiment("2")
	out := bytes.NewBufferString(text)
	if len(rep.Rows) != 4 || rep.TestScans != 3 || rep.TestSlices == 0 {
		t.Fatalf("report %s", out.String())
	}
	seen := map[int][2]bool{8: {false, true}, 16: {true, true}, 24: {false, false}, 32: {false, false}}
	for _, row := range rep.Rows {
		if w := seen[row.Size]; row.SeenSingle != w[0] || row.SeenMulti != w[1] {
			t.Errorf("size %d seen by single %v multi %v, want %v", row.Size, row.SeenSingle, row.SeenMulti, w)
		}
		for _, a := range []float64{row.Single, row.Multi} {
			if a < 0 || a > 1 || math.Abs(a*float64(rep.TestSlices)-math.Round(a*float64(rep.TestSlices))) > 1e-6 {
				t.Errorf("size %d: accuracy %v is not a fraction of %d slices", row.Size, a, rep.TestSlices)
			}
		}
		if row.Size == 16 && (row.SingleDrop != 0 || row.MultiDrop != 0) {
			t.Errorf("drop at the training size: %v, %v", row.SingleDrop, row.MultiDrop)
		}
	}
	if d := (rep.Rows[2].SingleDrop + rep.Rows[3].SingleDrop) / 2; math.Abs(rep.MeanDropSingleUnseen-d) > 1e-12 {
		t.Errorf("mean unseen drop (single) %v, want %v", rep.MeanDropSingleUnseen, d)
	}
	if d := (rep.Rows[2].MultiDrop + rep.Rows[3].MultiDrop) / 2; math.Abs(rep.MeanDropMultiUnseen-d) > 1e-12 {
		t.Errorf("mean unseen drop (multi) %v, want %v", rep.MeanDropMultiUnseen, d)
	}
	// Seeded: a second run, with another number of workers, gives the same table.
	again, _ := experiment("1")
	if a, b := fmt.Sprint(rep.Rows), fmt.Sprint(again.Rows); a != b {
		t.Errorf("second run differs:\n%s\n%s", a, b)
	}
	if _, err := os.Stat(rep.Recipe.Out); !os.IsNotExist(err) {
		t.Errorf("temporary runs left at %s (%v)", rep.Recipe.Out, err)
	}
}
