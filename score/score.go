package score

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

// Files written for a series' heatmap under its output folder (see
// Options.OutDir), besides one overlay per plane through the hottest voxel,
// named "<plane>_<index>.png" with the slice index in three or more digits
// (e.g. "axial_012.png").
const (
	// HeatFile is the heat volume, float32 NIfTI in [0, 1] (hot = 1) on the
	// scan's grid with its affine.
	HeatFile = "heat.nii.gz"
	// MontageFile tiles the hottest axial slices with the heat overlaid.
	MontageFile = "montage.png"
	// SummaryFile is cam.Summary as JSON.
	SummaryFile = "summary.json"
)

// Progress stages, in order.
const (
	StageDiscover   = "discover"
	StageLoad       = "load"
	StagePreprocess = "preprocess"
	StageInfer      = "infer"
	StageHeatmap    = "heatmap"
	StageDone       = "done"
)

// Options configures scoring.
type Options struct {
	// Model scores the scans; nil means DefaultModel().
	Model *Model
	// Heatmap explains the predicted class of each series with a
	// class-activation map.
	Heatmap bool
	// Method is the heatmap method: "gradcam" (the default when empty),
	// "gradcampp" (Grad-CAM++) or "cam"; see ParseMethod.
	Method string
	// OutDir, when set with Heatmap, receives the heatmap files (HeatFile,
	// MontageFile, SummaryFile, overlays): ScorePath writes series n (its
	// index in Result.Series) under OutDir/<n>/, ScoreVolume and ScoreInput
	// directly under OutDir.
	OutDir string
	// Limits bounds what reading the input may use (see dicomio.Limits).
	Limits dicomio.Limits
	// Progress, when set, is called from the scoring goroutine at the
	// start of each stage (StageDiscover ... StageDone) with the fraction
	// of the whole call done so far, from 0 to 1.
	Progress func(stage string, frac float64)
	// Keep stores the loaded scan and the heat volume in
	// SeriesResult.Scan and SeriesResult.Heat (they are not serialised).
	Keep bool
}

// Timings are the milliseconds spent in each stage of one series.
type Timings struct {
	Load       float64 `json:"load"`
	Preprocess float64 `json:"preprocess"`
	Infer      float64 `json:"infer"`
	Heatmap    float64 `json:"heatmap"`
}

// HeatmapResult describes a series' heatmap of its predicted class.
type HeatmapResult struct {
	// Method is "cam", "gradcam" or "gradcampp"; Layer the explained layer.
	Method string `json:"method"`
	Layer  string `json:"layer"`
	// Class names the explained (predicted) class.
	Class string `json:"class"`
	// PeakMM is the LPS position in mm of the hottest voxel, PeakVoxel
	// its (i, j, k) index on the scan's grid (the first in voxel order on a
	// tie).
	PeakMM    [3]float64 `json:"peak_mm"`
	PeakVoxel [3]int     `json:"peak_voxel"`
	// LungShare is Σ_{lung} heat / Σ heat over the scan's lung mask
	// (volume.LungMask with its defaults, the scan in HU); null when no
	// mask could be made.
	LungShare *float64 `json:"lung_share"`
	// Files are the written files relative to Options.OutDir, with
	// forward slashes; empty when nothing was written.
	Files []string `json:"files,omitempty"`
}

// SeriesResult is the outcome for one series.
type SeriesResult struct {
	// SeriesUID is the DICOM SeriesInstanceUID ("" for a NIfTI volume).
	SeriesUID string `json:"series_uid"`
	// Kind is KindDICOM or KindNIfTI ("" for ScoreVolume).
	Kind string `json:"kind,omitempty"`
	// Source is where the series lies under the scored path (Input.Source).
	Source string `json:"source,omitempty"`
	// Description is the DICOM SeriesDescription.
	Description string `json:"description"`
	// Dims are columns, rows and slices of the scan; Spacing the voxel
	// size in mm along them.
	Dims    [3]int     `json:"dims"`
	Spacing [3]float64 `json:"spacing"`
	// Probabilities maps each class name to its probability; Predicted
	// is the most probable class. Both are empty when Error is set.
	Probabilities map[string]float64 `json:"probabilities"`
	Predicted     string             `json:"predicted"`
	// Preprocessing is the model's pipeline, as applied.
	Preprocessing volume.Pipeline `json:"preprocessing"`
	// TimingsMS holds the time spent per stage.
	TimingsMS Timings `json:"timings_ms"`
	// Heatmap is null unless a heatmap was asked for and made.
	Heatmap *HeatmapResult `json:"heatmap"`
	// Warnings are problems that did not stop scoring (irregular slices,
	// a heatmap that could not be made, ...).
	Warnings []string `json:"warnings"`
	// Error is why the series could not be scored.
	Error string `json:"error,omitempty"`

	// Scan and Heat are the loaded scan (HU) and the heat on its grid,
	// kept only with Options.Keep.
	Scan *volume.Volume `json:"-"`
	Heat *volume.Volume `json:"-"`
}

// Result is the outcome of scoring a path.
type Result struct {
	// StudyID is left for the caller (the REST server) to fill.
	StudyID string `json:"study_id"`
	// Model identifies the model and its caveat.
	Model Info `json:"model"`
	// Series holds one result per scan found, in Inputs order.
	Series []SeriesResult `json:"series"`
	// Skipped lists the files that were not scored, with the reason.
	Skipped []Skipped `json:"skipped"`
	// TimingsMS holds "discover" and "total" milliseconds.
	TimingsMS map[string]float64 `json:"timings_ms"`
}

// ParseMethod maps a heatmap method name to a cam.Method: "" or "gradcam"
// (also "grad-cam") is Grad-CAM, "gradcampp" (also "gradcam++",
// "grad-cam++") Grad-CAM++, "cam" CAM.
func ParseMethod(s string) (cam.Method, error) {
	if strings.TrimSpace(s) == "" {
		return cam.GradCAM, nil
	}
	m, err := cam.ParseMethod(s)
	if err != nil {
		return 0, fmt.Errorf("score: heatmap method %q: want gradcam, gradcampp or cam", s)
	}
	return m, nil
}

// MethodName returns the name ParseMethod reads for m: "cam", "gradcam" or
// "gradcampp".
func MethodName(m cam.Method) string { return strings.ReplaceAll(m.String(), "+", "p") }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// resolve fills the model and checks the method.
func (o Options) resolve() (*Model, cam.Method, error) {
	method, err := ParseMethod(o.Method)
	if err != nil {
		return nil, 0, err
	}
	m := o.Model
	if m == nil {
		if m, err = DefaultModel(); err != nil {
			return nil, 0, err
		}
	}
	return m, method, nil
}

// ScoreVolume scores one scan v (HU, not modified) with the options' model:
// preprocessing, inference and, with Options.Heatmap, the heatmap of the
// predicted class (written under Options.OutDir when set). A failure is
// returned and also recorded in the result's Error; a heatmap that cannot
// be made is a warning only.
func ScoreVolume(ctx context.Context, v *volume.Volume, o Options) (SeriesResult, error) {
	m, method, err := o.resolve()
	if err != nil {
		return SeriesResult{Warnings: []string{}, Error: err.Error()}, err
	}
	r := newSeriesResult(m)
	err = scoreVolume(ctx, m, method, v, o, o.OutDir, "", &r, progressFunc(o.Progress, 0, 1))
	if err == nil && o.Progress != nil {
		o.Progress(StageDone, 1)
	}
	return r, err
}

// ScoreInput loads one scan found by Find and scores it as ScoreVolume
// does, filling the series' identity (UID, description, source, warnings)
// and the load time.
func ScoreInput(ctx context.Context, in *Input, o Options) (SeriesResult, error) {
	m, method, err := o.resolve()
	if err != nil {
		return SeriesResult{Warnings: []string{}, Error: err.Error()}, err
	}
	r, err := scoreInput(ctx, m, method, in, o, o.OutDir, "", progressFunc(o.Progress, 0, 1))
	if err == nil && o.Progress != nil {
		o.Progress(StageDone, 1)
	}
	return r, err
}

// ScorePath finds every scan under path (see Find: a folder, a .zip, a
// DICOM file or a .nii/.nii.gz file) and scores each as ScoreInput does. A
// series that cannot be loaded or scored is recorded with its Error and
// the others go on. The returned error is for the call as a whole: a path
// that does not exist or holds nothing to score (wrapping ErrNoSeries),
// a bad option, or ctx's error when it is cancelled (with the series
// scored so far).
func ScorePath(ctx context.Context, path string, o Options) (*Result, error) {
	start := time.Now()
	m, method, err := o.resolve()
	if err != nil {
		return nil, err
	}
	if o.Progress != nil {
		o.Progress(StageDiscover, 0)
	}
	res := &Result{Model: m.Info(), Series: []SeriesResult{}, Skipped: []Skipped{}, TimingsMS: map[string]float64{}}
	ins, err := Find(path, o.Limits)
	if ins != nil {
		defer ins.Close()
		res.Skipped = append(res.Skipped, ins.Skipped...)
	}
	res.TimingsMS[StageDiscover] = ms(time.Since(start))
	if err != nil {
		res.TimingsMS["total"] = ms(time.Since(start))
		return res, err
	}
	root := filepath.Clean(path)
	n := len(ins.Items)
	for i, in := range ins.Items {
		out := ""
		if o.OutDir != "" {
			out = filepath.Join(o.OutDir, strconv.Itoa(i))
		}
		r, err := scoreInput(ctx, m, method, in, o, out, strconv.Itoa(i)+"/", progressFunc(o.Progress, float64(i)/float64(n), 1/float64(n)))
		if ctx.Err() != nil {
			res.TimingsMS["total"] = ms(time.Since(start))
			return res, fmt.Errorf("score: %s: %w", filepath.Base(root), ctx.Err())
		}
		if err != nil {
			r.Error = relativize(r.Error, root)
		}
		for w := range r.Warnings {
			r.Warnings[w] = relativize(r.Warnings[w], root)
		}
		res.Series = append(res.Series, r)
	}
	res.TimingsMS["total"] = ms(time.Since(start))
	if o.Progress != nil {
		o.Progress(StageDone, 1)
	}
	return res, nil
}

// relativize removes the scored root from the paths in an error message,
// so that results do not show where the server keeps its files.
func relativize(msg, root string) string {
	msg = strings.ReplaceAll(msg, root+string(filepath.Separator), "")
	return strings.ReplaceAll(msg, root, filepath.Base(root))
}

// progressFunc maps a series-local fraction f to base + f·span of the whole.
func progressFunc(p func(string, float64), base, span float64) func(string, float64) {
	if p == nil {
		return func(string, float64) {}
	}
	return func(stage string, f float64) { p(stage, base+f*span) }
}

func newSeriesResult(m *Model) SeriesResult {
	return SeriesResult{Preprocessing: m.Pipeline, Warnings: []string{}}
}

func scoreInput(ctx context.Context, m *Model, method cam.Method, in *Input, o Options, outDir, filePrefix string, progress func(string, float64)) (SeriesResult, error) {
	r := newSeriesResult(m)
	r.Kind, r.Source = in.Kind, in.Source
	if in.Series != nil {
		r.SeriesUID, r.Description = in.Series.UID, in.Series.Description
	}
	progress(StageLoad, 0)
	t := time.Now()
	v, warnings, err := in.Load(ctx)
	r.TimingsMS.Load = ms(time.Since(t))
	r.Warnings = append(r.Warnings, warnings...)
	if err != nil {
		r.Error = fmt.Sprintf("load %s: %v", in.Source, err)
		return r, fmt.Errorf("score: load %s: %w", in.Source, err)
	}
	err = scoreVolume(ctx, m, method, v, o, outDir, filePrefix, &r, func(stage string, f float64) { progress(stage, 0.4+0.6*f) })
	return r, err
}

// scoreVolume fills r for scan v; heatmap files go under outDir and are
// listed with filePrefix.
func scoreVolume(ctx context.Context, m *Model, method cam.Method, v *volume.Volume, o Options, outDir, filePrefix string, r *SeriesResult, progress func(string, float64)) error {
	fail := func(stage string, err error) error {
		r.Error = fmt.Sprintf("%s: %v", stage, err)
		return err
	}
	if v == nil {
		return fail(StagePreprocess, errors.New("score: nil volume"))
	}
	if err := v.Validate(); err != nil {
		return fail(StagePreprocess, fmt.Errorf("score: %w", err))
	}
	r.Dims, r.Spacing = v.Dims, v.Spacing
	if o.Keep {
		r.Scan = v
	}
	if err := ctx.Err(); err != nil {
		return fail(StagePreprocess, err)
	}
	progress(StagePreprocess, 0)
	t := time.Now()
	pre, tr, err := m.Prepare(v)
	r.TimingsMS.Preprocess = ms(time.Since(t))
	if err != nil {
		return fail(StagePreprocess, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(StageInfer, err)
	}
	progress(StageInfer, 1.0/3)
	t = time.Now()
	_, probs, err := m.Predict(pre)
	r.TimingsMS.Infer = ms(time.Since(t))
	if err != nil {
		return fail(StageInfer, err)
	}
	best := 0
	r.Probabilities = make(map[string]float64, len(probs))
	for c, p := range probs {
		r.Probabilities[m.ClassNames[c]] = p
		if p > probs[best] {
			best = c
		}
	}
	r.Predicted = m.ClassNames[best]
	if !o.Heatmap {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fail(StageHeatmap, err)
	}
	progress(StageHeatmap, 2.0/3)
	t = time.Now()
	hr, heat, err := heatmap(m, method, v, pre, tr, best, outDir, filePrefix)
	r.TimingsMS.Heatmap = ms(time.Since(t))
	if err != nil {
		r.Warnings = append(r.Warnings, "heatmap: "+err.Error())
		return nil
	}
	r.Heatmap = hr
	if o.Keep {
		r.Heat = heat
	}
	return nil
}

// heatmap explains class on scan v and writes the files under outDir when
// it is set.
func heatmap(m *Model, method cam.Method, v, pre *volume.Volume, tr volume.Trace, class int, outDir, filePrefix string) (*HeatmapResult, *volume.Volume, error) {
	h, err := m.Explain(v, pre, tr, method, class)
	if err != nil {
		return nil, nil, err
	}
	var lungs *volume.Mask
	if lm, err := volume.LungMask(v, volume.DefaultLungMaskOptions); err == nil {
		lungs = lm
	}
	var sum *cam.Summary
	var files []string
	if outDir != "" {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return nil, nil, fmt.Errorf("score: heatmap: %w", err)
		}
		// The prefix "./" makes cam.Write's names plain: filepath.Join
		// cleans "dir/./heat.nii.gz" to "dir/heat.nii.gz".
		paths, s, err := cam.Write(outDir, v, h, cam.WriteOptions{Prefix: "./", ClassNames: m.ClassNames, Lungs: lungs})
		if err != nil {
			return nil, nil, err
		}
		sum = s
		for _, p := range paths {
			files = append(files, filePrefix+filepath.Base(p))
		}
	} else if sum, err = cam.Summarize(h, v, lungs, m.ClassNames); err != nil {
		return nil, nil, err
	}
	return &HeatmapResult{
		Method: MethodName(method), Layer: h.Layer, Class: m.ClassNames[class],
		PeakMM: sum.Peak.PatientMM, PeakVoxel: sum.Peak.Voxel, LungShare: sum.LungShare, Files: files,
	}, h.Heat, nil
}
