package score

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

const uidA = "1.2.826.0.1.3680043.9.7.1"
const uidB = "1.2.826.0.1.3680043.9.7.2"

// TestScoreSeriesEndToEnd scores a phantom written as DICOM with a heatmap
// and checks the result JSON against the contract, the probabilities, the
// geometry of the written heat volume (read back as NIfTI) and the peak.
func TestScoreSeriesEndToEnd(t *testing.T) {
	m := tinyModel(t)
	dir := t.TempDir()
	ct := phantom(t, volume.NCP, 11, 0)
	writeSeries(t, filepath.Join(dir, "study", "S1"), ct, uidA)
	out := t.TempDir()
	type call struct {
		stage string
		frac  float64
	}
	var calls []call
	res, err := ScorePath(context.Background(), filepath.Join(dir, "study"), Options{
		Model: m, Heatmap: true, OutDir: out,
		Progress: func(s string, f float64) { calls = append(calls, call{s, f}) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Series) != 1 || len(res.Skipped) != 0 {
		t.Fatalf("%d series, skipped %v", len(res.Series), res.Skipped)
	}
	s := res.Series[0]
	if s.Error != "" {
		t.Fatal(s.Error)
	}
	if s.SeriesUID != uidA || s.Description != "chest 1" || s.Source != "S1" || s.Kind != KindDICOM || s.Dims != [3]int{32, 32, 20} {
		t.Errorf("identity %q %q %q %q %v", s.SeriesUID, s.Description, s.Source, s.Kind, s.Dims)
	}
	for a := 0; a < 3; a++ {
		if !near(s.Spacing[a], ct.Spacing[a], 1e-6) {
			t.Errorf("spacing %v, phantom %v", s.Spacing, ct.Spacing)
		}
	}
	if !near(sum(s.Probabilities), 1, 1e-9) {
		t.Errorf("probabilities %v sum to %v", s.Probabilities, sum(s.Probabilities))
	}
	for c, p := range s.Probabilities {
		if p > s.Probabilities[s.Predicted] {
			t.Errorf("predicted %s but p(%s) = %v is larger", s.Predicted, c, p)
		}
	}
	if !reflect.DeepEqual(s.Preprocessing, tinyPipeline()) || s.TimingsMS.Infer <= 0 || s.TimingsMS.Heatmap <= 0 || s.TimingsMS.Load <= 0 {
		t.Errorf("preprocessing %v timings %+v", s.Preprocessing, s.TimingsMS)
	}

	// Heatmap files and geometry.
	h := s.Heatmap
	if h == nil {
		t.Fatalf("no heatmap; warnings %v", s.Warnings)
	}
	if h.Method != "gradcam" || h.Class != s.Predicted || h.Layer == "" || h.LungShare == nil || *h.LungShare < 0 || *h.LungShare > 1 {
		t.Errorf("heatmap %+v", h)
	}
	for _, f := range []string{"0/" + HeatFile, "0/" + MontageFile, "0/" + SummaryFile} {
		found := false
		for _, g := range h.Files {
			found = found || g == f
		}
		if _, err := os.Stat(filepath.Join(out, f)); err != nil || !found {
			t.Errorf("file %s: listed %v, %v", f, found, err)
		}
	}
	heat, err := dicomio.ReadNIfTI(filepath.Join(out, "0", HeatFile), dicomio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if heat.Dims != ct.Dims {
		t.Fatalf("heat dims %v, scan %v", heat.Dims, ct.Dims)
	}
	for a := 0; a < 3; a++ {
		if !near(heat.Spacing[a], ct.Spacing[a], 1e-4) || !near(heat.Origin[a], ct.Origin[a], 1e-3) {
			t.Errorf("heat spacing %v origin %v, scan %v %v", heat.Spacing, heat.Origin, ct.Spacing, ct.Origin)
		}
		for c := 0; c < 3; c++ {
			if !near(heat.Direction[a][c], ct.Direction[a][c], 1e-6) {
				t.Errorf("heat direction %v, scan %v", heat.Direction, ct.Direction)
			}
		}
	}
	best, at := float32(-1), 0
	for p, x := range heat.Voxels {
		if x < 0 || x > 1 {
			t.Fatalf("heat %v at %d outside [0, 1]", x, p)
		}
		if x > best {
			best, at = x, p
		}
	}
	want := [3]int{at % 32, (at / 32) % 32, at / (32 * 32)}
	if best <= 0 || h.PeakVoxel != want {
		t.Errorf("peak voxel %v, hottest voxel of heat.nii.gz %v (%v)", h.PeakVoxel, want, best)
	}
	// The phantom's direction is the identity: position = origin + spacing·index.
	for a := 0; a < 3; a++ {
		if w := ct.Origin[a] + ct.Spacing[a]*float64(want[a]); !near(h.PeakMM[a], w, 1e-6) {
			t.Errorf("peak_mm %v, want axis %d = %v", h.PeakMM, a, w)
		}
	}

	// Progress: stages in order, fractions non-decreasing, ending at done 1.
	order := map[string]int{StageDiscover: 0, StageLoad: 1, StagePreprocess: 2, StageInfer: 3, StageHeatmap: 4, StageDone: 5}
	for i := 1; i < len(calls); i++ {
		if calls[i].frac < calls[i-1].frac || order[calls[i].stage] <= order[calls[i-1].stage] {
			t.Errorf("progress %v", calls)
		}
	}
	if len(calls) != 6 || calls[len(calls)-1] != (call{StageDone, 1}) {
		t.Errorf("progress %v", calls)
	}

	// The JSON has the contract's fields and no patient name or ID.
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "DOE") || strings.Contains(string(b), "424242") || strings.Contains(string(b), dir) {
		t.Errorf("result JSON leaks patient data or server paths: %s", b)
	}
	var js map[string]any
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	mustKeys(t, "result", js, "study_id", "model", "series")
	mustKeys(t, "model", js["model"].(map[string]any), "name", "version", "arch", "classes", "caveat")
	ser := js["series"].([]any)[0].(map[string]any)
	mustKeys(t, "series", ser, "series_uid", "description", "dims", "spacing", "probabilities", "predicted", "preprocessing", "timings_ms", "heatmap", "warnings")
	mustKeys(t, "timings_ms", ser["timings_ms"].(map[string]any), "load", "preprocess", "infer", "heatmap")
	mustKeys(t, "heatmap", ser["heatmap"].(map[string]any), "method", "layer", "class", "peak_mm", "peak_voxel", "lung_share")
	if pre := ser["preprocessing"].([]any); len(pre) != 4 || pre[0].(map[string]any)["op"] != "window" {
		t.Errorf("preprocessing JSON %v", pre)
	}
	if w, ok := ser["warnings"].([]any); !ok || w == nil {
		t.Errorf("warnings must be an array, got %v", ser["warnings"])
	}
}

func mustKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s JSON lacks %q: %v", what, k, m)
		}
	}
}

// TestScorePathContainers scores the same pixel data as a folder of two
// series and a text file, as a zip and as NIfTI: each container gives the
// same probabilities for the same scan.
func TestScorePathContainers(t *testing.T) {
	m := tinyModel(t)
	dir := t.TempDir()
	ctA, ctB := phantom(t, volume.CP, 21, 0), phantom(t, volume.Normal, 22, 0)
	filesA := writeSeries(t, filepath.Join(dir, "folder", "a"), ctA, uidA)
	writeSeries(t, filepath.Join(dir, "folder", "b"), ctB, uidB)
	if err := os.WriteFile(filepath.Join(dir, "folder", "notes.txt"), []byte("reading room notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := ScorePath(ctx, filepath.Join(dir, "folder"), Options{Model: m})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Series) != 2 || len(res.Skipped) != 1 || res.Skipped[0].Path != "notes.txt" || !strings.Contains(res.Skipped[0].Reason, "not DICOM") {
		t.Fatalf("series %d, skipped %v", len(res.Series), res.Skipped)
	}
	byUID := map[string]SeriesResult{}
	for _, s := range res.Series {
		if s.Error != "" || !near(sum(s.Probabilities), 1, 1e-9) {
			t.Fatalf("series %s: %q %v", s.SeriesUID, s.Error, s.Probabilities)
		}
		byUID[s.SeriesUID] = s
	}
	if byUID[uidA].Source != "a" || byUID[uidB].Source != "b" {
		t.Errorf("sources %q %q", byUID[uidA].Source, byUID[uidB].Source)
	}
	if reflect.DeepEqual(byUID[uidA].Probabilities, byUID[uidB].Probabilities) {
		t.Errorf("two different scans got identical probabilities %v", byUID[uidA].Probabilities)
	}

	// The same series in a zip (under a sub-folder).
	zipPath := filepath.Join(dir, "study.zip")
	writeZip(t, zipPath, "scan/", filesA)
	rz, err := ScorePath(ctx, zipPath, Options{Model: m})
	if err != nil {
		t.Fatal(err)
	}
	if len(rz.Series) != 1 || rz.Series[0].SeriesUID != uidA || rz.Series[0].Source != "study.zip!scan" {
		t.Fatalf("zip: %+v", rz.Series)
	}
	sameProbs(t, "zip", rz.Series[0].Probabilities, byUID[uidA].Probabilities, 0)

	// The same scan as NIfTI, alone and in a folder beside a DICOM series.
	nii := filepath.Join(dir, "mixed", "ct_a.nii.gz")
	if err := dicomio.WriteNIfTI(nii, ctA, dicomio.NIfTIInt16); err != nil {
		t.Fatal(err)
	}
	rn, err := ScorePath(ctx, nii, Options{Model: m})
	if err != nil {
		t.Fatal(err)
	}
	if len(rn.Series) != 1 || rn.Series[0].Kind != KindNIfTI || rn.Series[0].Source != "ct_a.nii.gz" || rn.Series[0].SeriesUID != "" || rn.Series[0].Dims != ctA.Dims {
		t.Fatalf("nifti: %+v", rn.Series)
	}
	sameProbs(t, "nifti", rn.Series[0].Probabilities, byUID[uidA].Probabilities, 1e-6)
	writeSeries(t, filepath.Join(dir, "mixed", "b"), ctB, uidB)
	rm, err := ScorePath(ctx, filepath.Join(dir, "mixed"), Options{Model: m})
	if err != nil {
		t.Fatal(err)
	}
	if len(rm.Series) != 2 || len(rm.Skipped) != 0 || rm.Series[0].SeriesUID != uidB || rm.Series[1].Source != "ct_a.nii.gz" {
		t.Fatalf("mixed folder: %+v, skipped %v", rm.Series, rm.Skipped)
	}

	// A single DICOM file is a one-slice series (the pipeline samples its
	// 8 slices symmetrically from that one); its source is the file.
	r1, err := ScorePath(ctx, filesA[0], Options{Model: m})
	if err != nil {
		t.Fatal(err)
	}
	if len(r1.Series) != 1 || r1.Series[0].Source != filepath.Base(filesA[0]) || r1.Series[0].Dims[2] != 1 {
		t.Fatalf("single file: %+v", r1.Series)
	}
}

func sameProbs(t *testing.T, what string, got, want map[string]float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: probabilities %v, want %v", what, got, want)
	}
	for k, w := range want {
		if !near(got[k], w, tol) {
			t.Errorf("%s: p(%s) = %v, want %v", what, k, got[k], w)
		}
	}
}

func writeZip(t *testing.T, path, prefix string, files []string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for _, p := range files {
		w, err := zw.Create(prefix + filepath.Base(p))
		if err != nil {
			t.Fatal(err)
		}
		src, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPerSeriesErrors: a corrupt NIfTI, a binary mask and a series with a
// missing middle slice are recorded as series errors while the good series
// is scored; a synth lesion mask is skipped; a folder with nothing to score
// is an ErrNoSeries error.
func TestPerSeriesErrors(t *testing.T) {
	m := tinyModel(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "in")
	writeSeries(t, filepath.Join(root, "good"), phantom(t, volume.CP, 31, 0), uidA)
	gap := writeSeries(t, filepath.Join(root, "gap"), phantom(t, volume.CP, 32, 0), uidB)
	if err := os.Remove(gap[9]); err != nil { // slice 10 of 20: a gap of two spacings
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "broken.nii.gz"), []byte{0x1f, 0x8b, 8, 0, 1, 2, 3}, 0o644); err != nil {
		t.Fatal(err)
	}
	mask := volume.New(32, 32, 20)
	mask.Set(10, 10, 10, 1)
	for _, name := range []string{"seg.nii.gz", "S1.lesion.nii.gz"} {
		if err := dicomio.WriteNIfTI(filepath.Join(root, name), mask, dicomio.NIfTIUint8); err != nil {
			t.Fatal(err)
		}
	}
	res, err := ScorePath(context.Background(), root, Options{Model: m, Heatmap: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Skipped) != 1 || res.Skipped[0].Path != "S1.lesion.nii.gz" || !strings.Contains(res.Skipped[0].Reason, "lesion mask") {
		t.Errorf("skipped %v", res.Skipped)
	}
	if len(res.Series) != 4 {
		t.Fatalf("%d series: %+v", len(res.Series), res.Series)
	}
	got := map[string]SeriesResult{}
	for _, s := range res.Series {
		got[s.Source] = s
		if strings.Contains(s.Error, root) {
			t.Errorf("error shows the server path: %s", s.Error)
		}
	}
	if g := got["good"]; g.Error != "" || g.Heatmap == nil || !near(sum(g.Probabilities), 1, 1e-9) {
		t.Errorf("good series: %+v", g)
	}
	if g := got["gap"]; !strings.Contains(g.Error, "gap") || g.Probabilities != nil || g.Predicted != "" || g.SeriesUID != uidB {
		t.Errorf("series with a missing slice: %+v", g)
	}
	if g := got["broken.nii.gz"]; !strings.Contains(g.Error, "broken.nii.gz") || g.Probabilities != nil {
		t.Errorf("broken NIfTI: %+v", g)
	}
	if g := got["seg.nii.gz"]; !strings.Contains(g.Error, "label mask") {
		t.Errorf("binary mask: %+v", g)
	}

	junk := filepath.Join(dir, "junk")
	if err := os.MkdirAll(junk, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(junk, "a.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err = ScorePath(context.Background(), junk, Options{Model: m})
	if !errors.Is(err, ErrNoSeries) || res == nil || len(res.Skipped) != 1 || !strings.Contains(err.Error(), "a.txt") {
		t.Fatalf("junk folder: %v, %+v", err, res)
	}
	if _, err := ScorePath(context.Background(), filepath.Join(dir, "missing"), Options{Model: m}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing path: %v", err)
	}
	if _, err := ScorePath(context.Background(), root, Options{Model: m, Method: "saliency"}); err == nil || !strings.Contains(err.Error(), "saliency") {
		t.Fatalf("bad method: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ScorePath(ctx, root, Options{Model: m}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	// A volume without slices is an error of that series.
	if r, err := ScoreVolume(context.Background(), &volume.Volume{Dims: [3]int{4, 4, 0}, Spacing: [3]float64{1, 1, 1}}, Options{Model: m}); err == nil || r.Error == "" {
		t.Fatalf("empty volume: %v %+v", err, r)
	}
}

// TestDeterministicAndConcurrent: the same scan scored repeatedly, from
// several goroutines at once and with every heatmap method, gives
// bit-identical probabilities and heat.
func TestDeterministicAndConcurrent(t *testing.T) {
	m := tinyModel(t)
	v := phantom(t, volume.NCP, 41, 0)
	ctx := context.Background()
	ref, err := ScoreVolume(ctx, v, Options{Model: m, Heatmap: true, Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]SeriesResult, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = ScoreVolume(ctx, v, Options{Model: m, Heatmap: true, Keep: true})
		}()
	}
	wg.Wait()
	for i, r := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !reflect.DeepEqual(r.Probabilities, ref.Probabilities) || !reflect.DeepEqual(r.Heat.Voxels, ref.Heat.Voxels) || r.Heatmap.PeakVoxel != ref.Heatmap.PeakVoxel {
			t.Errorf("run %d: %v, want %v", i, r.Probabilities, ref.Probabilities)
		}
	}
	// Every method explains the same prediction.
	for _, method := range []string{"cam", "gradcam", "gradcampp"} {
		r, err := ScoreVolume(ctx, v, Options{Model: m, Heatmap: true, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(r.Probabilities, ref.Probabilities) || r.Heatmap == nil || r.Heatmap.Method != method {
			t.Errorf("%s: %v %+v", method, r.Probabilities, r.Heatmap)
		}
	}
	// The input is not modified.
	w := phantom(t, volume.NCP, 41, 0)
	if !reflect.DeepEqual(v.Voxels, w.Voxels) {
		t.Error("scoring modified the scan")
	}
	keys := make([]string, 0, 3)
	for k := range ref.Probabilities {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !reflect.DeepEqual(keys, []string{"CP", "NCP", "Normal"}) || math.IsNaN(ref.Probabilities["CP"]) {
		t.Errorf("classes %v", keys)
	}
}
