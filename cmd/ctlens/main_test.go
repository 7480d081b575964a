package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ctlens/ctlens/dicomio"
)

// resetFlags returns every flag of every command to its default, so that
// in-process runs do not inherit flags set by an earlier run.
func resetFlags(c *cobra.Command) {
	reset := func(f *pflag.Flag) {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			var vals []string
			if d := strings.Trim(f.DefValue, "[]"); d != "" {
				vals = strings.Split(d, ",")
			}
			sv.Replace(vals)
		} else {
			f.Value.Set(f.DefValue)
		}
		f.Changed = false
	}
	c.Flags().VisitAll(reset)
	c.PersistentFlags().VisitAll(reset)
	for _, sub := range c.Commands() {
		resetFlags(sub)
	}
}

// run executes the ctlens command line in-process and returns its output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	resetFlags(rootCmd)
	var out bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetErr(&out)
	rootCmd.SetArgs(args)
	err := rootCmd.Execute()
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "ctlens ") {
		t.Fatalf("version: %q, %v", out, err)
	}
}

func TestModels(t *testing.T) {
	out, err := run(t, "models", "--family", "covidnet3d-small", "--input", "1x1x16x32x32", "--json", "--in-channels", "1", "--classes", "3")
	if err != nil {
		t.Fatal(err)
	}
	var rows []modelInfo
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rows) != 1 || rows[0].Name != "covidnet3d-small" {
		t.Fatalf("rows %+v", rows)
	}
	r := rows[0]
	// 207,987 parameters: the MBConv formula of reference-models.md 1.5.3,
	// checked term by term in net3d's covidnet tests.
	if r.Params != 207987 || r.MACs <= 0 || r.SizeMB != float64(r.Params)*4/(1<<20) {
		t.Errorf("covidnet3d-small: %+v", r)
	}
	if _, err := run(t, "models", "--input", "1x1x16"); err == nil || !strings.Contains(err.Error(), "N x C x D x H x W") {
		t.Errorf("bad --input: %v", err)
	}
}

func TestSynthWritesDataset(t *testing.T) {
	dir := t.TempDir()
	out, err := run(t, "synth", "--out", dir, "--n", "3", "--size", "32", "--seed", "4")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	d, err := dicomio.ReadLayoutJSON(filepath.Join(dir, "dataset.json"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Scans) != 3 || len(d.Skipped) != 0 {
		t.Fatalf("scans %+v skipped %v", d.Scans, d.Skipped)
	}
	for i, s := range d.Scans {
		if s.Label != i || s.Kind != dicomio.KindDICOM || len(s.Slices) < 40 {
			t.Errorf("scan %d: %+v", i, s)
		}
	}
	var manifest []synthEntry
	b, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err := json.Unmarshal(b, &manifest); err != nil || len(manifest) != 3 {
		t.Fatalf("manifest: %v %s", err, b)
	}
	for _, m := range manifest {
		mask, err := dicomio.ReadNIfTI(filepath.Join(dir, m.Lesion), dicomio.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, v := range mask.Voxels {
			if v != 0 {
				n++
			}
		}
		if (m.Class == "Normal") != (n == 0) {
			t.Errorf("%s: %d lesion voxels", m.Class, n)
		}
	}
	if _, err := run(t, "synth", "--out", dir, "--classes", "Flu"); err == nil || !strings.Contains(err.Error(), "Flu") {
		t.Errorf("unknown class: %v", err)
	}
}

// TestModelsMACsMatchTorchvision compares the MAC counts of the video nets
// at 1x3x16x112x112 with the GFLOPS torchvision publishes in their weights'
// metadata (_ops: r3d_18 40.697, mc3_18 43.343, r2plus1d_18 40.519; it counts
// multiply-accumulates of convolutions and linear layers).
func TestModelsMACsMatchTorchvision(t *testing.T) {
	out, err := run(t, "models", "--family", "torchvision-video", "--input", "1x3x16x112x112", "--in-channels", "3", "--classes", "400", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []modelInfo
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"r3d_18": 40.697, "mc3_18": 43.343, "r2plus1d_18": 40.519}
	params := map[string]int{"r3d_18": 33371472, "mc3_18": 11695440, "r2plus1d_18": 31505325}
	for _, r := range rows {
		g := float64(r.MACs) / 1e9
		if d := g - want[r.Name]; d > 0.0005 || d < -0.0005 {
			t.Errorf("%s: %.4f GMACs, torchvision %.3f", r.Name, g, want[r.Name])
		}
		if r.Params != params[r.Name] {
			t.Errorf("%s: %d parameters, torchvision %d", r.Name, r.Params, params[r.Name])
		}
		delete(want, r.Name)
	}
	if len(want) != 0 {
		t.Errorf("missing %v", want)
	}
}

// TestModelsLists2D checks that the slice models are listed with timm's
// parameter count for ResNet-RS-50 at 1000 classes.
func TestModelsLists2D(t *testing.T) {
	out, err := run(t, "models", "--family", "resnetrs-50", "--in-channels", "3", "--classes", "1000", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []modelInfo
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Dims != 2 || rows[0].Params != 35691912 {
		t.Errorf("rows %+v, want resnetrs-50 (2D) with 35,691,912 parameters", rows)
	}
}
