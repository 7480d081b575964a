package score

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/net2d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/volume"
)

// slice2DModel writes a random one-block ResFormer (patch 8) with 2D
// scoring metadata: 32×32 slices in the lung window, top-3 aggregation.
func slice2DModel(t *testing.T, dir string) (string, net2d.Classifier, net2d.SlicePrep) {
	t.Helper()
	spec := net2d.Spec{Arch: "resformer-ti", InChannels: 1, Classes: 3, Config: json.RawMessage(`{"patch":8,"depth":1}`)}
	c, err := net2d.Build(spec, 11)
	if err != nil {
		t.Fatal(err)
	}
	prep := net2d.SlicePrep{WindowCenter: -600, WindowWidth: 1500, Size: [2]int{32, 32}, Aggregation: "topk", TopK: 3}
	meta, err := prep.Meta(volume.PhantomClassNames)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "slices2d.safetensors")
	if err := net2d.SaveCheckpoint(path, c, meta); err != nil {
		t.Fatal(err)
	}
	nn.SetTraining(c, false)
	return path, c, prep
}

// TestScore2DEndToEnd scores a phantom DICOM series with a 2D checkpoint
// and checks the probabilities against the slices scored one by one and
// aggregated by hand, and the heatmap files against the stacked slice
// maps normalised by hand.
func TestScore2DEndToEnd(t *testing.T) {
	dir := t.TempDir()
	path, c, prep := slice2DModel(t, dir)
	p, err := volume.NewPhantom(volume.PhantomOptions{Class: volume.NCP, Seed: 21, Cols: 40, Rows: 48, Slices: 9})
	if err != nil {
		t.Fatal(err)
	}
	series := filepath.Join(dir, "series")
	writeSeries(t, series, p.CT, "1.2.826.0.1.3680043.2.1125.2")
	m, err := LoadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	if m.Classifier2D == nil || m.Classifier != nil || m.Arch != "resformer-ti" || m.Input != [3]int{1, 32, 32} ||
		m.Channels != 1 || !strings.HasPrefix(m.Description, "ResFormer-Ti") || m.Params != nn.NumParams(c) {
		t.Fatalf("model %+v", m)
	}
	if pj, _ := json.Marshal(m.Pipeline); string(pj) != `[{"op":"window","center":-600,"width":1500},{"op":"resize","cols":32,"rows":32,"interp":"linear"}]` {
		t.Errorf("pipeline %s", pj)
	}
	out := filepath.Join(dir, "heat")
	res, err := ScorePath(context.Background(), series, Options{Model: m, Heatmap: true, OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Series) != 1 || res.Series[0].Error != "" {
		t.Fatalf("result %+v", res)
	}
	r := res.Series[0]
	// The scan as read back from DICOM, scored slice by slice.
	v, _, err := dicomio.LoadVolume(series, dicomio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Dims != v.Dims {
		t.Fatalf("dims %v, want %v", r.Dims, v.Dims)
	}
	cols := make([][]float64, 3)
	for k := 0; k < v.Dims[2]; k++ {
		x, err := net2d.SliceInput(v, []int{k}, 1, prep.Config())
		if err != nil {
			t.Fatal(err)
		}
		z := net2d.Forward(c, x)
		for cl := 0; cl < 3; cl++ {
			cols[cl] = append(cols[cl], float64(z.At(0, cl)))
		}
	}
	want := make([]float64, 3)
	den := 0.0
	for cl, col := range cols {
		sort.Sort(sort.Reverse(sort.Float64Slice(col)))
		want[cl] = (col[0] + col[1] + col[2]) / 3
		den += math.Exp(want[cl])
	}
	best := 0
	for cl, name := range volume.PhantomClassNames {
		pw := math.Exp(want[cl]) / den
		if !near(r.Probabilities[name], pw, 1e-5) {
			t.Errorf("P(%s) = %v, want %v", name, r.Probabilities[name], pw)
		}
		if want[cl] > want[best] {
			best = cl
		}
	}
	if r.Predicted != volume.PhantomClassNames[best] {
		t.Errorf("predicted %s, want %s", r.Predicted, volume.PhantomClassNames[best])
	}
	// Heatmap: the stacked Grad-CAM of the predicted class, min–max scaled
	// over the volume, written as heat.nii.gz on the scan's grid.
	h := r.Heatmap
	if h == nil {
		t.Fatalf("no heatmap; warnings %v", r.Warnings)
	}
	if h.Method != "gradcam" || h.Layer != "blocks.0.norm1" || h.Class != r.Predicted {
		t.Errorf("heatmap %+v", h)
	}
	for _, f := range []string{"0/heat.nii.gz", "0/montage.png", "0/summary.json"} {
		found := false
		for _, g := range h.Files {
			found = found || g == f
		}
		if _, err := os.Stat(filepath.Join(out, filepath.FromSlash(f))); err != nil || !found {
			t.Errorf("%s: listed %v, %v", f, found, err)
		}
	}
	heat, err := dicomio.ReadNIfTI(filepath.Join(out, "0", HeatFile), dicomio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if heat.Dims != v.Dims {
		t.Fatalf("heat dims %v, want %v", heat.Dims, v.Dims)
	}
	for a := 0; a < 3; a++ {
		if math.Abs(heat.Spacing[a]-v.Spacing[a]) > 1e-4 || math.Abs(heat.Origin[a]-v.Origin[a]) > 1e-3 {
			t.Errorf("heat geometry %v %v, scan %v %v", heat.Spacing, heat.Origin, v.Spacing, v.Origin)
		}
	}
	ref, err := net2d.ComputeSliceHeatmap(c, v, prep.Config(), cam.Options{Method: cam.GradCAM, Classes: []int{best}})
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range ref.Heat.Voxels {
		lo, hi = math.Min(lo, float64(x)), math.Max(hi, float64(x))
	}
	if !(hi > lo) {
		t.Fatal("flat reference heatmap")
	}
	peak, peakV := 0, -1.0
	for i, x := range heat.Voxels {
		w := (float64(ref.Heat.Voxels[i]) - lo) / (hi - lo)
		if math.Abs(float64(x)-w) > 1e-4 {
			t.Fatalf("heat voxel %d = %v, want %v", i, x, w)
		}
		if float64(x) > peakV {
			peak, peakV = i, float64(x)
		}
	}
	plane := v.Dims[0] * v.Dims[1]
	wantPeak := [3]int{peak % v.Dims[0], peak % plane / v.Dims[0], peak / plane}
	if h.PeakVoxel != wantPeak {
		t.Errorf("peak voxel %v, want %v", h.PeakVoxel, wantPeak)
	}
}

// TestLoad2DErrors checks that a 2D checkpoint without its slice
// metadata, or with a bad one, is refused with a message naming it.
func TestLoad2DErrors(t *testing.T) {
	dir := t.TempDir()
	c, err := net2d.Build(net2d.Spec{Arch: "resformer-ti", InChannels: 1, Classes: 3, Config: json.RawMessage(`{"patch":8,"depth":1}`)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	cls, _ := json.Marshal(volume.PhantomClassNames)
	cases := []struct {
		name string
		meta map[string]string
		want string
	}{
		{"no slices", map[string]string{"ctlens.class_names": string(cls)}, "no ctlens.slices metadata"},
		{"bad aggregation", map[string]string{"ctlens.class_names": string(cls), net2d.MetaSlices: `{"window_width":1500,"aggregation":"vote"}`}, `unknown aggregation "vote"`},
		{"class names", map[string]string{"ctlens.class_names": `["a","a","b"]`, net2d.MetaSlices: `{"window_width":1500,"aggregation":"mean"}`}, "must be distinct"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".safetensors")
			if err := net2d.SaveCheckpoint(path, c, tc.meta); err != nil {
				t.Fatal(err)
			}
			_, err := LoadModel(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v, want one naming %s and containing %q", err, path, tc.want)
			}
		})
	}
	// A 2D model scores a volume directly too, and a scan too small for
	// the patch grid is a clear error, not a panic.
	path, _, _ := slice2DModel(t, dir)
	m, err := LoadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	m.Slices.Size = [2]int{30, 30}
	_, err = ScoreVolume(context.Background(), phantom(t, volume.CP, 3, 0), Options{Model: m})
	if err == nil || !strings.Contains(err.Error(), "patch size") {
		t.Fatalf("size not a multiple of the patch: %v", err)
	}
}
