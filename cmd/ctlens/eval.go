package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/score"
	"github.com/ctlens/ctlens/train"
	"github.com/ctlens/ctlens/volume"
)

// evalFlags holds the values of `ctlens eval` flags.
type evalFlags struct {
	models                    []string
	out, datasetName, average string
	data, layout, root        string
	phantoms, phantomSize     int
	phantomSlices             int
	phantomSeed               uint64
	workers, batch, resamples int
	level                     float64
	bootSeed                  uint64
	noProgress                bool
	cam, camUseLabel          bool
	camMethod, camLayer       string
	camTolerance              float64
	camMax                    int
}

func init() { rootCmd.AddCommand(newEvalCmd()) }

// newEvalCmd returns the `ctlens eval` command.
func newEvalCmd() *cobra.Command {
	var ef evalFlags
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Evaluate checkpoints on a labelled dataset: metrics with bootstrap intervals, ROC curves, Grad-CAM localisation",
		Long: `eval scores every scan of a labelled dataset — a folder with one sub-folder per class (--data),
the CovidNet3D JSON layout (--layout, --root), or synthetic phantoms (--phantoms N --phantom-seed S,
drawn exactly as ctlens train draws them; use another seed than training's) — with each checkpoint
given by --model (default: the bundled model), preparing each scan with the checkpoint's own stored
preprocessing, the network in evaluation mode.

For each model it writes into --out a Markdown and a JSON report laid out like the CovidNet3D paper's
results table (accuracy, precision, recall/sensitivity, specificity, F1, one-vs-rest AUC, per class
and macro/weighted averages, confusion matrix, percentile bootstrap intervals of accuracy, macro F1 and
macro AUC), the ROC curves (PNG) and the per-scan predictions (CSV). With several --model flags each
model gets a sub-folder and comparison.md/comparison.json put their headline rows in one table.

--cam adds the localisation evaluation on every scan with a non-empty lesion mask (phantoms carry
theirs; a scan file's mask is the NIfTI next to it that ctlens synth writes, <scan>.lesion.nii.gz):
the pointing game (the hit rate of the heatmap's peak inside a lesion, or within --cam-tolerance mm)
and the share of heat inside the lesions against its chance level (the lesion's share of the scan).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runEval(cmd, &ef)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&ef.models, "model", nil, "checkpoint of ctlens train (repeat to compare models; default: the bundled model)")
	f.StringVar(&ef.out, "out", "eval", "output folder")
	f.StringVar(&ef.datasetName, "dataset-name", "", "name of the data in the report (default: the data source)")
	f.StringVar(&ef.average, "average", train.AverageMacro, "headline averaging: macro, weighted, or a class name (one-vs-rest)")
	f.StringVar(&ef.data, "data", "", "data: folder with one sub-folder per class")
	f.StringVar(&ef.layout, "layout", "", "data: CovidNet3D JSON layout {class: {patient: {scan: [slices]}}}")
	f.StringVar(&ef.root, "root", "", "folder the --layout scans lie under (default: the JSON's folder)")
	f.IntVar(&ef.phantoms, "phantoms", 0, "data: N synthetic phantoms (CP, NCP, Normal in turn)")
	f.Uint64Var(&ef.phantomSeed, "phantom-seed", 0, "seed of the phantoms (use another than the training run's)")
	f.IntVar(&ef.phantomSize, "phantom-size", 0, "phantom in-plane size in pixels (default 128; use the training run's)")
	f.IntVar(&ef.phantomSlices, "phantom-slices", 0, "phantom slices (default: by slice spacing, 40–72)")
	f.IntVar(&ef.workers, "workers", 0, "scans loaded in parallel (default: CPUs)")
	f.IntVar(&ef.batch, "batch", 8, "scans per forward pass")
	f.IntVar(&ef.resamples, "resamples", train.DefaultResamples, "bootstrap resamples (0: no intervals)")
	f.Float64Var(&ef.level, "ci-level", 0.95, "two-sided coverage of the bootstrap intervals")
	f.Uint64Var(&ef.bootSeed, "bootstrap-seed", 1, "seed of the bootstrap resampling")
	f.BoolVar(&ef.noProgress, "no-progress", false, "no progress bars")
	f.BoolVar(&ef.cam, "cam", false, "also evaluate heatmap localisation against the lesion masks (pointing game, energy share)")
	f.StringVar(&ef.camMethod, "cam-method", "gradcam", "heatmap method: cam, gradcam or gradcam++")
	f.StringVar(&ef.camLayer, "cam-layer", "", "layer to explain (default: the final feature map)")
	f.Float64Var(&ef.camTolerance, "cam-tolerance", 0, "pointing-game tolerance in mm (0: the peak must lie inside a lesion)")
	f.BoolVar(&ef.camUseLabel, "cam-use-label", false, "explain each scan's true class instead of the predicted one")
	f.IntVar(&ef.camMax, "cam-max", 0, "evaluate localisation on at most N lesion-positive scans (0: all)")
	return cmd
}

// evalModel is one loaded model with its output folder.
type evalModel struct {
	path string // "" for the bundled model
	m    *score.Model
	pre  train.Preprocessing
	dir  string
}

// evalCAMFile and evalCAMMarkdown hold the localisation evaluation.
const (
	evalCAMFile     = "cam.json"
	evalCAMMarkdown = "cam.md"
)

func runEval(cmd *cobra.Command, ef *evalFlags) error {
	f := cmd.Flags()
	src := train.DataSource{Folder: ef.data, Layout: ef.layout, Root: ef.root, Phantoms: ef.phantoms}
	if ef.phantoms > 0 {
		src.PhantomSeed, src.PhantomSlices = ef.phantomSeed, ef.phantomSlices
		src.PhantomCols, src.PhantomRows = ef.phantomSize, ef.phantomSize
	} else {
		for _, name := range []string{"phantom-seed", "phantom-size", "phantom-slices"} {
			if f.Changed(name) {
				return fmt.Errorf("eval: --%s needs --phantoms", name)
			}
		}
	}
	if src.IsZero() {
		return errors.New("eval: no data: give --data FOLDER, --layout JSON or --phantoms N")
	}
	if ef.resamples < 0 {
		return fmt.Errorf("eval: --resamples %d is negative", ef.resamples)
	}
	if !(ef.level > 0 && ef.level < 1) {
		return fmt.Errorf("eval: --ci-level %v outside (0, 1)", ef.level)
	}
	if ef.batch < 1 || ef.batch > 4096 {
		return fmt.Errorf("eval: --batch %d outside 1..4096", ef.batch)
	}
	if ef.workers < 0 || ef.workers > 256 {
		return fmt.Errorf("eval: --workers %d outside 0..256", ef.workers)
	}
	if ef.camMax < 0 {
		return fmt.Errorf("eval: --cam-max %d is negative", ef.camMax)
	}
	method, err := cam.ParseMethod(ef.camMethod)
	if err != nil {
		return fmt.Errorf("eval: --cam-method: %w", err)
	}
	if !(ef.camTolerance >= 0) {
		return fmt.Errorf("eval: --cam-tolerance %v mm is negative", ef.camTolerance)
	}
	ds, err := train.OpenDataset(src)
	if err != nil {
		return err
	}
	models, err := loadEvalModels(ef.models, ef.out)
	if err != nil {
		return err
	}
	ctx, stop := scoreContext(cmd)
	defer stop()
	var progress io.Writer = cmd.ErrOrStderr()
	if ef.noProgress {
		progress = nil
	}
	w := cmd.OutOrStdout()
	dataName := ef.datasetName
	if dataName == "" {
		dataName = src.String()
	}
	fmt.Fprintf(w, "data: %s: %d scans (%s)\n", dataName, len(ds.Scans), classCounts(ds))
	var reports []train.Report
	for _, em := range models {
		res, skipped, err := train.EvaluateModel(ctx, em.m.Classifier, em.pre, ds, train.EvalOptions{Workers: ef.workers, BatchSize: ef.batch, Progress: progress})
		if err != nil {
			return fmt.Errorf("eval: model %s: %w", em.m.Name, err)
		}
		info := train.ModelInfo{Model: em.m.Name, Dataset: dataName, Params: int64(em.m.Params)}
		bo := train.BootstrapOptions{Resamples: ef.resamples, Level: ef.level, Seed: ef.bootSeed}
		if ef.resamples == 0 {
			bo.Resamples = -1
		}
		rep, err := train.ReportFromResult(info, em.pre.Classes, res, bo, ef.average)
		if err != nil {
			return fmt.Errorf("eval: %w", err)
		}
		files, err := train.WriteEvalReport(em.dir, "", rep, res)
		if err != nil {
			return fmt.Errorf("eval: %w", err)
		}
		reports = append(reports, rep)
		printEvalSummary(w, em, rep, skipped, files)
		if ef.cam {
			opts := cam.EvalOptions{CAM: cam.Options{Method: method, Layer: ef.camLayer}, UseLabel: ef.camUseLabel, ToleranceMM: ef.camTolerance}
			cr, err := evalLocalisation(ctx, em, ds, opts, ef.camMax, ef.workers, progress)
			if err != nil {
				return fmt.Errorf("eval: model %s: %w", em.m.Name, err)
			}
			if err := writeCAMReport(em.dir, em.m.Name, dataName, em.pre.Classes, cr, ef.camUseLabel); err != nil {
				return fmt.Errorf("eval: %w", err)
			}
			printCAMSummary(w, em.pre.Classes, cr, filepath.Join(em.dir, evalCAMMarkdown))
		}
	}
	if len(reports) > 1 {
		c, err := train.MergeReports(reports...)
		if err != nil {
			return fmt.Errorf("eval: %w", err)
		}
		md := "# Model comparison on " + dataName + "\n\n" + c.Markdown()
		if err := os.WriteFile(filepath.Join(ef.out, "comparison.md"), []byte(md), 0o644); err != nil {
			return fmt.Errorf("eval: %w", err)
		}
		b, err := json.MarshalIndent(c, "", "  ")
		if err != nil {
			return fmt.Errorf("eval: comparison: %w", err)
		}
		if err := os.WriteFile(filepath.Join(ef.out, "comparison.json"), append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("eval: %w", err)
		}
		fmt.Fprintf(w, "\n%s\nwrote %s\n", c.Markdown(), filepath.Join(ef.out, "comparison.md"))
	}
	return nil
}

// loadEvalModels loads the checkpoints (the bundled model when none is
// given) and gives each an output folder: out itself for one model,
// out/NAME for several (names made unique).
func loadEvalModels(paths []string, out string) ([]*evalModel, error) {
	if len(paths) == 0 {
		paths = []string{""}
	}
	var ms []*evalModel
	used := map[string]int{}
	for _, p := range paths {
		m, err := scoreLoadModel(p)
		if err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		pre, err := train.PreprocessingFromMeta(m.Meta)
		if err != nil {
			return nil, fmt.Errorf("eval: model %s: %w", describeModelPath(p), err)
		}
		ms = append(ms, &evalModel{path: p, m: m, pre: pre, dir: out})
	}
	if len(ms) > 1 {
		// Models with equal names (run1/best.safetensors, run2/best.safetensors)
		// are named by their folder too, then numbered.
		count := map[string]int{}
		for _, em := range ms {
			count[em.m.Name]++
		}
		for _, em := range ms {
			if count[em.m.Name] > 1 && em.path != "" {
				em.m.Name = filepath.Base(filepath.Dir(em.path)) + "/" + em.m.Name
			}
		}
		for i, em := range ms {
			used[em.m.Name]++
			if used[em.m.Name] > 1 {
				em.m.Name = fmt.Sprintf("%s#%d", em.m.Name, i+1)
			}
			em.dir = filepath.Join(out, safeName(em.m.Name))
		}
	}
	return ms, nil
}

func describeModelPath(p string) string {
	if p == "" {
		return "bundled"
	}
	return p
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// safeName turns a model name into a folder name.
func safeName(s string) string {
	s = strings.Trim(unsafeChars.ReplaceAllString(s, "_"), "_.")
	if s == "" {
		return "model"
	}
	return s
}

// classCounts is "CP 10, NCP 10, Normal 10".
func classCounts(ds *train.Dataset) string {
	n := make([]int, len(ds.Classes))
	for _, s := range ds.Scans {
		n[s.Label]++
	}
	parts := make([]string, len(n))
	for i, c := range ds.Classes {
		parts[i] = fmt.Sprintf("%s %d", c, n[i])
	}
	return strings.Join(parts, ", ")
}

// printEvalSummary prints a model's headline numbers and per-class table.
func printEvalSummary(w io.Writer, em *evalModel, rep train.Report, skipped []train.SkippedScan, files train.EvalFiles) {
	m := rep.Metrics
	fmt.Fprintf(w, "\nmodel %s (%s, %d parameters, %s): %d scans scored", em.m.Name, em.m.Arch, em.m.Params, em.m.Version, m.N)
	if len(skipped) > 0 {
		fmt.Fprintf(w, ", %d skipped", len(skipped))
	}
	fmt.Fprintln(w)
	for i, s := range skipped {
		if i == 10 {
			fmt.Fprintf(w, "  ... and %d more (see %s)\n", len(skipped)-10, files.JSON)
			break
		}
		fmt.Fprintf(w, "  skipped %s: %s\n", s.Path, s.Reason)
	}
	acc := fmt.Sprintf("%.2f %%", 100*m.Accuracy)
	auc := fmt.Sprintf("%.4f", m.Macro.AUC)
	f1 := fmt.Sprintf("%.2f %%", 100*m.Macro.F1)
	if ci := rep.CI; ci != nil {
		lvl := fmt.Sprintf("%g%% CI", 100*ci.Level)
		acc += fmt.Sprintf(" (%s %.2f–%.2f)", lvl, 100*ci.Accuracy.Lo, 100*ci.Accuracy.Hi)
		f1 += fmt.Sprintf(" (%s %.2f–%.2f)", lvl, 100*ci.MacroF1.Lo, 100*ci.MacroF1.Hi)
		auc += fmt.Sprintf(" (%s %.4f–%.4f)", lvl, ci.MacroAUC.Lo, ci.MacroAUC.Hi)
	}
	fmt.Fprintf(w, "accuracy %s, macro F1 %s, macro AUC %s\n", acc, f1, auc)
	fmt.Fprintf(w, "%-10s %8s %10s %10s %12s %8s %8s\n", "class", "support", "precision", "recall", "specificity", "F1", "AUC")
	for _, c := range m.PerClass {
		fmt.Fprintf(w, "%-10s %8d %9.2f%% %9.2f%% %11.2f%% %7.2f%% %8.4f\n", c.Class, c.Support, 100*c.Precision, 100*c.Recall, 100*c.Specificity, 100*c.F1, c.AUC)
	}
	fmt.Fprintf(w, "wrote %s, %s", files.Markdown, files.JSON)
	if files.ROC != "" {
		fmt.Fprintf(w, ", %s", files.ROC)
	}
	fmt.Fprintf(w, " and %s\n", files.Predictions)
}

// evalLocalisation runs cam.Evaluate on the scans of ds whose lesion mask
// is not empty (at most limit of them when limit > 0, in dataset order).
// Scans whose mask cannot be read are listed as failed rows.
func evalLocalisation(ctx context.Context, em *evalModel, ds *train.Dataset, o cam.EvalOptions, limit, workers int, progress io.Writer) (*cam.EvalReport, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// Find the lesion-positive scans (masks are read in parallel, then dropped).
	counts := make([]int, len(ds.Scans))
	errs := make([]error, len(ds.Scans))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(workers, len(ds.Scans)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				_, mask, err := ds.Scans[i].LoadWithLesion()
				if err != nil {
					errs[i] = err
					continue
				}
				counts[i] = mask.Count()
			}
		}()
	}
	for i := range ds.Scans {
		if ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var cases []cam.Case
	var failed []cam.EvalRow
	lm := map[string]int{}
	for i, c := range em.pre.Classes {
		lm[c] = i
	}
	for i, s := range ds.Scans {
		label := -1
		if l, ok := lm[ds.Classes[s.Label]]; ok {
			label = l
		}
		if errs[i] != nil {
			failed = append(failed, cam.EvalRow{Name: s.Name, Label: label, Predicted: -1, Class: -1, Error: errs[i].Error()})
			continue
		}
		if counts[i] == 0 || (limit > 0 && len(cases) == limit) {
			continue
		}
		cases = append(cases, cam.Case{Name: s.Name, Label: label, Load: s.LoadWithLesion})
	}
	if len(cases) == 0 && len(failed) == 0 {
		return nil, fmt.Errorf("cam: %s has no scan with a non-empty lesion mask", ds.Source)
	}
	// cam.Evaluate runs the cases one after another; wrap Load to tick a bar
	// and to stop on cancellation.
	bar := newEvalBar(progress, len(cases), "heatmaps")
	for i := range cases {
		load := cases[i].Load
		cases[i].Load = func() (*volume.Volume, *volume.Mask, error) {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			bar()
			return load()
		}
	}
	rep, err := cam.Evaluate(em.m.Classifier, em.pre.Pipeline, cases, o)
	bar()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep.Rows = append(rep.Rows, failed...)
	rep.Summary.Scans += len(failed)
	rep.Summary.Failed += len(failed)
	return rep, nil
}

// camClassStats aggregates the pointing game per true class.
type camClassStats struct {
	Class       string  `json:"class"`
	WithLesion  int     `json:"with_lesion"`
	Hits        int     `json:"hits"`
	HitRate     float64 `json:"pointing_accuracy"`
	EnergyShare float64 `json:"mean_energy_share"`
	Chance      float64 `json:"mean_lesion_fraction"`
}

func camPerClass(classes []string, rep *cam.EvalReport) []camClassStats {
	byClass := map[int]*camClassStats{}
	for _, r := range rep.Rows {
		if r.Hit == nil || r.Label < 0 || r.Label >= len(classes) {
			continue
		}
		s := byClass[r.Label]
		if s == nil {
			s = &camClassStats{Class: classes[r.Label]}
			byClass[r.Label] = s
		}
		s.WithLesion++
		if *r.Hit {
			s.Hits++
		}
		s.EnergyShare += *r.EnergyShare
		s.Chance += r.LesionFraction
	}
	var keys []int
	for k := range byClass {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var out []camClassStats
	for _, k := range keys {
		s := byClass[k]
		n := float64(s.WithLesion)
		s.HitRate, s.EnergyShare, s.Chance = float64(s.Hits)/n, s.EnergyShare/n, s.Chance/n
		out = append(out, *s)
	}
	return out
}

// writeCAMReport writes cam.json (the rows, the summary and per-class
// figures) and cam.md into dir.
func writeCAMReport(dir, model, data string, classes []string, rep *cam.EvalReport, useLabel bool) error {
	per := camPerClass(classes, rep)
	b, err := json.MarshalIndent(struct {
		Model    string          `json:"model"`
		Dataset  string          `json:"dataset"`
		Summary  cam.EvalSummary `json:"summary"`
		PerClass []camClassStats `json:"per_class"`
		Rows     []cam.EvalRow   `json:"rows"`
	}{model, data, rep.Summary, per, rep.Rows}, "", "  ")
	if err != nil {
		return fmt.Errorf("cam report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, evalCAMFile), append(b, '\n'), 0o644); err != nil {
		return err
	}
	s := rep.Summary
	var md strings.Builder
	fmt.Fprintf(&md, "## Localisation: %s on %s\n\n", model, data)
	explained := "the predicted class"
	if useLabel {
		explained = "the true class"
	}
	fmt.Fprintf(&md, "Heatmaps: %s at layer %s, explaining %s; pointing game with tolerance %g mm "+
		"(a hit: the heatmap's peak voxel lies in a lesion", s.Method, s.Layer, explained, s.ToleranceMM)
	if s.ToleranceMM > 0 {
		fmt.Fprintf(&md, " or within %g mm of one", s.ToleranceMM)
	}
	md.WriteString(").\n\n")
	md.WriteString("| Class | Scans with lesion | Hits | Pointing accuracy % | Energy share in lesion % | Chance (lesion share of scan) % |\n|---|---:|---:|---:|---:|---:|\n")
	for _, c := range per {
		fmt.Fprintf(&md, "| %s | %d | %d | %.2f | %.2f | %.2f |\n", c.Class, c.WithLesion, c.Hits, 100*c.HitRate, 100*c.EnergyShare, 100*c.Chance)
	}
	if s.PointingAccuracy != nil {
		fmt.Fprintf(&md, "| *all* | %d | %d | %.2f | %.2f | %.2f |\n", s.WithLesion, s.Hits, 100**s.PointingAccuracy, 100**s.MeanEnergyShare, 100**s.MeanLesionFraction)
	}
	if s.Failed > 0 {
		fmt.Fprintf(&md, "\n%d scans failed (see %s).\n", s.Failed, evalCAMFile)
	}
	return os.WriteFile(filepath.Join(dir, evalCAMMarkdown), []byte(md.String()), 0o644)
}

// printCAMSummary prints the pointing-game figures.
func printCAMSummary(w io.Writer, classes []string, rep *cam.EvalReport, path string) {
	s := rep.Summary
	if s.PointingAccuracy == nil {
		fmt.Fprintf(w, "localisation (%s): no scan with a lesion could be explained (%d failed)\n", s.Method, s.Failed)
		return
	}
	fmt.Fprintf(w, "localisation (%s at %s): pointing game %d/%d = %.2f %% hits, energy share in lesion %.2f %% (chance %.2f %%)",
		s.Method, s.Layer, s.Hits, s.WithLesion, 100**s.PointingAccuracy, 100**s.MeanEnergyShare, 100**s.MeanLesionFraction)
	if s.Failed > 0 {
		fmt.Fprintf(w, ", %d failed", s.Failed)
	}
	fmt.Fprintln(w)
	for _, c := range camPerClass(classes, rep) {
		fmt.Fprintf(w, "  %-8s %d/%d = %.2f %% hits, energy share %.2f %% (chance %.2f %%)\n", c.Class, c.Hits, c.WithLesion, 100*c.HitRate, 100*c.EnergyShare, 100*c.Chance)
	}
	fmt.Fprintf(w, "wrote %s\n", path)
}

// newEvalBar returns a function that advances a "what i/n" counter on w
// (a no-op when w is nil); the call after the last case ends the line.
func newEvalBar(w io.Writer, n int, what string) func() {
	if w == nil {
		return func() {}
	}
	i := 0
	return func() {
		if i < n {
			i++
			fmt.Fprintf(w, "\r%s %d/%d", what, i, n)
			return
		}
		fmt.Fprintln(w)
	}
}
