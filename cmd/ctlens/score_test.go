package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/score"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// scPipeline prepares a scan for the small test model: lung-range window,
// 8 symmetric slices, 32×32, z-score.
func scPipeline() volume.Pipeline {
	return volume.Pipeline{
		{Op: "window", Center: -300, Width: 1800},
		{Op: "sample_slices", N: 8, Mode: "symmetric"},
		{Op: "resize", Cols: 32, Rows: 32},
		{Op: "normalize", Method: "zscore"},
	}
}

// scPhantom draws a 32×32×20 synthetic chest CT.
func scPhantom(t *testing.T, class volume.PhantomClass, seed uint64) *volume.Volume {
	t.Helper()
	p, err := volume.NewPhantom(volume.PhantomOptions{Class: class, Seed: seed, Cols: 32, Slices: 20})
	if err != nil {
		t.Fatal(err)
	}
	return p.CT
}

// scCheckpoint writes a small covidnet3d-small checkpoint (total stride 8,
// input 8×32×32) whose BatchNorm statistics are calibrated on phantoms so
// that its outputs depend on the scan, and returns its path.
func scCheckpoint(t *testing.T, dir string) string {
	t.Helper()
	spec := net3d.Spec{Arch: "covidnet3d-small", InChannels: 1, Classes: 3, Config: json.RawMessage(`{"stride_stages":[2,2,1,1,1,1]}`)}
	c, err := net3d.Build(spec, 9)
	if err != nil {
		t.Fatal(err)
	}
	var batch []float32
	for i := 0; i < 4; i++ {
		pre, _, err := scPipeline().Apply(scPhantom(t, volume.PhantomClass(i%3), 500+uint64(i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, pre.Voxels...)
	}
	x := tensor.New(batch, 4, 1, 8, 32, 32)
	nn.SetRequiresGrad(c, false)
	for i := 0; i < 30; i++ {
		net3d.Forward(c, x) // training mode: updates the running statistics
	}
	pl, _ := json.Marshal(scPipeline())
	cls, _ := json.Marshal(volume.PhantomClassNames)
	path := filepath.Join(dir, "small.safetensors")
	if err := net3d.SaveCheckpoint(path, c, map[string]string{
		score.MetaPipeline: string(pl), score.MetaInput: "[8,32,32]", net3d.MetaClassNames: string(cls),
	}); err != nil {
		t.Fatal(err)
	}
	return path
}

// scWriteSeries writes v as a DICOM series with a patient name and ID that
// must not appear in any output.
func scWriteSeries(t *testing.T, dir string, v *volume.Volume, seed uint64) {
	t.Helper()
	if _, err := dicomio.WriteSeries(dir, v, dicomio.WriteOptions{
		Seed: seed, PatientName: "ROE^RICHARD", PatientID: "MRN-778899", SeriesDescription: "chest",
	}); err != nil {
		t.Fatal(err)
	}
}

func TestScoreCommand(t *testing.T) {
	dir := t.TempDir()
	ckpt := scCheckpoint(t, dir)
	root := filepath.Join(dir, "study")
	scWriteSeries(t, filepath.Join(root, "a"), scPhantom(t, volume.NCP, 1), 1)
	scWriteSeries(t, filepath.Join(root, "b"), scPhantom(t, volume.Normal, 2), 2)
	if err := os.WriteFile(filepath.Join(root, "notes.txt"), []byte("notes"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := score.LoadModel(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := score.ScorePath(context.Background(), root, score.Options{Model: m})
	if err != nil {
		t.Fatal(err)
	}

	out, err := run(t, "score", root, "--model", ckpt)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if strings.Contains(out, "ROE") || strings.Contains(out, "778899") {
		t.Errorf("output shows patient data:\n%s", out)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "model small (covidnet3d-small, sha256:") || !strings.Contains(out, "skipped 1 file(s):\n  notes.txt: not DICOM") ||
		!strings.Contains(out, score.GenericCaveat) {
		t.Errorf("output:\n%s", out)
	}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != "# SOURCE SERIES UID DIMS CP NCP Normal PREDICTED" {
		t.Errorf("header %q", lines[1])
	}
	for i, s := range ref.Series {
		f := strings.Fields(lines[2+i])
		if len(f) != 8 || f[0] != strconv.Itoa(i) || f[1] != s.Source || f[2] != s.SeriesUID || f[3] != "32x32x20" || f[7] != s.Predicted {
			t.Fatalf("row %d %q, want series %+v", i, lines[2+i], s)
		}
		total := 0.0
		for k, c := range []string{"CP", "NCP", "Normal"} {
			p, err := strconv.ParseFloat(f[4+k], 64)
			if err != nil || f[4+k] != fmt.Sprintf("%.4f", s.Probabilities[c]) {
				t.Errorf("row %d p(%s) = %q, want %.4f", i, c, f[4+k], s.Probabilities[c])
			}
			total += p
		}
		if total < 1-2e-4 || total > 1+2e-4 {
			t.Errorf("row %d probabilities sum to %v", i, total)
		}
	}

	heat := filepath.Join(dir, "heat")
	out, err = run(t, "score", root, "--model", ckpt, "--json", "--heatmap", heat, "--method", "gradcampp")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var res score.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(res.Series) != 2 || res.Model.Name != "small" || res.Model.Caveat != score.GenericCaveat {
		t.Fatalf("JSON result %+v", res)
	}
	for i, s := range res.Series {
		if s.Heatmap == nil || s.Heatmap.Method != "gradcampp" || s.Probabilities["CP"] != ref.Series[i].Probabilities["CP"] {
			t.Errorf("series %d: %+v", i, s)
		}
		if _, err := dicomio.ReadNIfTI(filepath.Join(heat, strconv.Itoa(i), score.HeatFile), dicomio.Limits{}); err != nil {
			t.Error(err)
		}
	}

	// Flags of the previous run do not stick: this one prints a table.
	out, err = run(t, "score", filepath.Join(root, "a"), "--model", ckpt)
	if err != nil || strings.HasPrefix(out, "{") || strings.Contains(out, "heatmap") {
		t.Errorf("third run: %v\n%s", err, out)
	}

	junk := filepath.Join(dir, "junk")
	if err := os.MkdirAll(junk, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(junk, "x.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "score", junk, "--model", ckpt); err == nil || !strings.Contains(err.Error(), "no CT series") || !strings.Contains(out, "x.txt") {
		t.Errorf("junk folder: %v\n%s", err, out)
	}
	if _, err := run(t, "score", root, "--model", ckpt, "--method", "lime"); err == nil || !strings.Contains(err.Error(), "lime") {
		t.Errorf("bad method: %v", err)
	}
	if _, err := run(t, "score", root, "--model", filepath.Join(dir, "none.safetensors")); err == nil || !strings.Contains(err.Error(), "none.safetensors") {
		t.Errorf("missing model: %v", err)
	}
}
