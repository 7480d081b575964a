package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ctlens/ctlens/net2d"
	"github.com/ctlens/ctlens/train"
)

// train2DFlags holds the `ctlens train` flags that only 2D runs take.
type train2DFlags struct {
	preset, resolutions, window, labels, aggregation string
	size, topK, sliceStride                          int
	scaleAlpha, minLesion, minLung                   float64
	flip                                             bool
}

// register adds the 2D flags to f.
func (t2 *train2DFlags) register(f *pflag.FlagSet) {
	f.StringVar(&t2.preset, "preset", "", "2D training recipe: resnetrs (ResNet-RS) or resformer (ResFormer multi-resolution); implies a 2D run")
	f.IntVar(&t2.size, "size", 0, "2D: slice size in pixels (default 128)")
	f.StringVar(&t2.resolutions, "resolutions", "", "2D: multi-resolution training sizes, descending, the first = --size, e.g. 64,48,32")
	f.Float64Var(&t2.scaleAlpha, "scale-alpha", 0, "2D: weight α of the scale-consistency loss (default 1)")
	f.StringVar(&t2.window, "window", "", "2D: window as CENTER,WIDTH in HU, or lung / mediastinum (default lung: -600,1500)")
	f.StringVar(&t2.labels, "labels", "", "2D: slice labels: scan (every slice takes its scan's class) or lesion (diseased scans' slices only where a lesion shows; phantoms)")
	f.Float64Var(&t2.minLesion, "min-lesion", 0, "2D: lesion share of a slice for --labels lesion (default 0.002)")
	f.Float64Var(&t2.minLung, "min-lung", 0, "2D: keep slices at least this share of which is lung")
	f.IntVar(&t2.sliceStride, "slice-stride", 0, "2D: keep every n-th selected slice")
	f.BoolVar(&t2.flip, "flip", false, "2D: mirror training slices left-right at random")
	f.StringVar(&t2.aggregation, "aggregation", "", "2D: slice-to-scan aggregation of logits: mean, max or topk (default mean)")
	f.IntVar(&t2.topK, "top-k", 0, "2D: k of --aggregation topk (default 5)")
}

// train2DOnly are the flags that make a run 2D; flags3DOnly those a 2D run
// rejects.
var (
	train2DOnly = []string{"preset", "size", "resolutions", "scale-alpha", "window", "labels", "min-lesion", "min-lung", "slice-stride", "flip", "aggregation", "top-k"}
	flags3DOnly = []string{"input", "pipeline", "mixup", "cache", "phantom-slices", "arch"}
)

// is2D reports whether the command line asks for a 2D run: a 2D flag, a
// --model that is a 2D architecture, or a --recipe (or, on --resume, a
// saved recipe) that names one.
func (tf *trainFlags) is2D() bool {
	f := tf.flagSet
	for _, name := range train2DOnly {
		if f.Changed(name) {
			return true
		}
	}
	if f.Changed("model") {
		_, ok := net2d.Lookup(tf.model)
		return ok
	}
	path := tf.recipe
	if path == "" && tf.resume && tf.out != "" {
		path = filepath.Join(tf.out, train.RecipeFile)
	}
	if path != "" {
		if b, err := os.ReadFile(path); err == nil {
			return train.IsRecipe2D(b)
		}
	}
	return false
}

// toRecipe2D builds a 2D recipe: --recipe or the defaults, then the model,
// data and size flags, then --preset, then every other flag given (so that
// flags override the preset).
func (tf *trainFlags) toRecipe2D(t2 *train2DFlags) (train.Recipe2D, error) {
	f := tf.flagSet
	r := train.DefaultRecipe2D()
	if tf.recipe != "" {
		var err error
		if r, err = train.ReadRecipe2D(tf.recipe); err != nil {
			return r, err
		}
	}
	fe := flagErrs{f: f}
	add := fe.add
	for _, name := range flags3DOnly {
		add(name, func() error { return errors.New("does not apply to a 2D model (see --size, --window, --resolutions)") })
	}
	if tf.resume {
		fe.errs = append(fe.errs, errors.New("train: --resume: 2D runs cannot be resumed"))
	}
	add("out", func() error { r.Out = tf.out; return nil })
	add("model", func() error {
		if r.Model.Arch != tf.model {
			r.Model.Config = nil
		}
		r.Model.Arch = tf.model
		return nil
	})
	if !f.Changed("model") && t2.preset != "" && tf.recipe == "" {
		r.Model.Arch = "" // the preset's own default architecture
	}
	add("model-config", func() error {
		if !json.Valid([]byte(tf.modelConfig)) {
			return fmt.Errorf("%q is not JSON", tf.modelConfig)
		}
		r.Model.Config = json.RawMessage(tf.modelConfig)
		return nil
	})
	add("in-channels", func() error { r.Model.InChannels = tf.inChannels; return nil })
	add("classes", func() error { r.Model.Classes = tf.classes; return nil })
	add("size", func() error { r.Size = t2.size; return nil })
	add("epochs", func() error { r.Epochs = tf.epochs; return nil })
	add("batch", func() error { r.BatchSize = tf.batch; return nil })
	add("resolutions", func() error {
		rs, err := parseSizes(t2.resolutions)
		r.Resolutions = rs
		return err
	})
	tf.applyDataFlags(&r.Train, &r.Val, &r.Test, &r.Seed)
	if t2.preset != "" {
		if err := train.ApplyPreset(&r, t2.preset); err != nil {
			return r, err
		}
	} else if r.Model.Arch == "" {
		r.Model.Arch = train.DefaultRecipe2D().Model.Arch
	}
	add("scale-alpha", func() error { r.ScaleAlpha = t2.scaleAlpha; return nil })
	add("window", func() error {
		c, w, err := parseWindow(t2.window)
		r.WindowCenter, r.WindowWidth = c, w
		return err
	})
	add("labels", func() error { r.Labels = strings.ToLower(t2.labels); return nil })
	add("min-lesion", func() error { r.MinLesionFraction = t2.minLesion; return nil })
	add("min-lung", func() error { r.MinLungFraction = t2.minLung; return nil })
	add("slice-stride", func() error { r.SliceStride = t2.sliceStride; return nil })
	add("flip", func() error { r.Flip = t2.flip; return nil })
	add("aggregation", func() error { r.Aggregation = strings.ToLower(t2.aggregation); return nil })
	add("top-k", func() error { r.TopK = t2.topK; return nil })
	add("val-fraction", func() error { r.ValFraction = tf.valFraction; return nil })
	add("optimizer", func() error { r.Optimizer = strings.ToLower(tf.optimizer); return nil })
	add("lr", func() error { r.LR = tf.lr; return nil })
	add("momentum", func() error { r.Momentum = tf.momentum; return nil })
	add("nesterov", func() error { r.Nesterov = tf.nesterov; return nil })
	add("wd", func() error { r.WeightDecay = tf.wd; return nil })
	add("decay-all", func() error { r.DecayAll = tf.decayAll; return nil })
	add("schedule", func() error { r.Schedule = strings.ToLower(tf.schedule); return nil })
	add("warmup", func() error { r.WarmupEpochs = tf.warmup; return nil })
	add("min-lr", func() error { r.MinLR = tf.minLR; return nil })
	add("step-epochs", func() error { r.StepEpochs = tf.stepEpochs; return nil })
	add("gamma", func() error { r.Gamma = tf.gamma; return nil })
	add("label-smoothing", func() error { r.LabelSmoothing = tf.labelSmoothing; return nil })
	add("class-weights", func() error {
		if !strings.EqualFold(tf.weights, "balanced") {
			return errors.New("2D runs take only \"balanced\"")
		}
		r.BalanceClasses = true
		return nil
	})
	add("clip", func() error { r.ClipNorm = tf.clip; return nil })
	add("ema", func() error { r.EMADecay = tf.ema; return nil })
	add("best-metric", func() error { r.BestMetric = tf.bestMetric; return nil })
	add("workers", func() error { r.Workers = tf.workers; return nil })
	return r, errors.Join(fe.errs...)
}

// parseSizes reads comma-separated positive sizes, e.g. "64,48,32".
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v < 1 || v > 4096 {
			return nil, fmt.Errorf("%q: want comma-separated sizes in 1..4096, e.g. 64,48,32", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// parseWindow reads "CENTER,WIDTH" in HU or a preset name (lung, mediastinum).
func parseWindow(s string) (center, width float64, err error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "lung":
		return -600, 1500, nil
	case "mediastinum", "mediastinal":
		return 50, 350, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) == 2 {
		c, err1 := strconv.ParseFloat(strings.TrimSpace(parts[0]), 64)
		w, err2 := strconv.ParseFloat(strings.TrimSpace(parts[1]), 64)
		if err1 == nil && err2 == nil && w > 0 {
			return c, w, nil
		}
	}
	return 0, 0, fmt.Errorf("%q: want CENTER,WIDTH in HU (width > 0), lung or mediastinum", s)
}

// runTrain2D runs `ctlens train` for a 2D model.
func runTrain2D(cmd *cobra.Command, tf *trainFlags, t2 *train2DFlags) error {
	r, err := tf.toRecipe2D(t2)
	if err != nil {
		return err
	}
	interrupted := fmt.Errorf("train: interrupted; the checkpoints of the completed epochs are in %s", r.Out)
	return runRecipe(cmd, tf, r, r.Validate, interrupted, func(ctx context.Context, progress io.Writer) error {
		res, err := train.Run2D(ctx, r, train.Options{Progress: progress})
		if err != nil {
			return err
		}
		printTrain2DResult(cmd.OutOrStdout(), res)
		return nil
	})
}

// printTrain2DResult prints the summary of a finished 2D run.
func printTrain2DResult(w io.Writer, res *train.Result2D) {
	fmt.Fprintf(w, "classes: %s\n", strings.Join(res.Classes, ", "))
	fmt.Fprintf(w, "slices: %d training (%d scans), %d validation (%d scans)", res.TrainSlices, res.TrainScans, res.ValSlices, res.ValScans)
	if res.Test != nil {
		fmt.Fprintf(w, ", %d test (%d scans)", res.TestSlices, res.TestScans)
	}
	fmt.Fprintln(w)
	if len(res.Skipped) > 0 {
		fmt.Fprintf(w, "skipped %d:\n", len(res.Skipped))
		for _, s := range res.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", s.Path, s.Reason)
		}
	}
	fmt.Fprintf(w, "best epoch %d of %d", res.BestEpoch, len(res.History))
	if res.Val != nil {
		fmt.Fprintf(w, ": validation slice accuracy %.4f, loss %.4f, scan accuracy %.4f", res.Val.Accuracy, res.Val.Loss, res.Val.ScanAccuracy)
	}
	fmt.Fprintln(w)
	if res.Test != nil {
		fmt.Fprintf(w, "test (best epoch): slice accuracy %.4f, loss %.4f, scan accuracy %.4f\n", res.Test.Accuracy, res.Test.Loss, res.Test.ScanAccuracy)
	}
	fmt.Fprintf(w, "wrote %s, %s, %s and %s in %s\n", train.BestFile, train.LastFile, train.LogFile, train.CurvesFile, res.Dir)
}

// multiresFlags are the flags of `ctlens multires`.
type multiresFlags struct {
	trainPhantoms, testPhantoms, phantomSize, size int
	patch, depth, epochs, batch, workers           int
	resolutions, testSizes, out, labels            string
	lr, wd, alpha, minLesion, minLung, valFraction float64
	seed                                           uint64
	asJSON, noProgress, flip                       bool
}

// multiresRow is one test resolution of the experiment.
type multiresRow struct {
	Size int `json:"size"`
	// SeenSingle and SeenMulti say whether the models trained at this size.
	SeenSingle bool `json:"seen_single"`
	SeenMulti  bool `json:"seen_multi"`
	// Single and Multi are the test slice accuracies.
	Single float64 `json:"single_acc"`
	Multi  float64 `json:"multi_acc"`
	// SingleDrop and MultiDrop are the accuracy lost against each model's
	// accuracy at the training size: acc(size) − acc(r).
	SingleDrop float64 `json:"single_drop"`
	MultiDrop  float64 `json:"multi_drop"`
}

// multiresReport is the experiment's outcome.
type multiresReport struct {
	Command              string         `json:"command"`
	Recipe               train.Recipe2D `json:"recipe_single"`
	Resolutions          []int          `json:"resolutions_multi"`
	TestSlices           int            `json:"test_slices"`
	TestScans            int            `json:"test_scans"`
	Rows                 []multiresRow  `json:"rows"`
	MeanDropSingleUnseen float64        `json:"mean_drop_single_unseen"`
	MeanDropMultiUnseen  float64        `json:"mean_drop_multi_unseen"`
	TrainSeconds         [2]float64     `json:"train_seconds"`
	LoadAverage          string         `json:"load_average,omitempty"`
}

func init() { rootCmd.AddCommand(newMultiresCmd()) }

// newMultiresCmd returns `ctlens multires`, the multi-resolution
// experiment of ResFormer on phantom slices.
func newMultiresCmd() *cobra.Command {
	var mf multiresFlags
	cmd := &cobra.Command{
		Use:   "multires",
		Short: "Compare a ResFormer trained at one resolution with one trained at several, across test resolutions",
		Long: `multires trains two ResFormers on the axial slices of synthetic phantoms with the same data, seed
and recipe: one at --size only, one at --resolutions (descending, the first = --size) with the
scale-consistency loss (ResFormer's multi-resolution training). Without --val-fraction the weights of
the last epoch are kept; with it, those of the epoch best on the held-out phantoms at --size. Both are
then tested on the slices of other phantoms at every --test-sizes resolution (resized from the
phantoms' own size), and the table gives each model's accuracy and its drop against its accuracy at
--size. A resolution is unseen when neither model trained at it; the last line averages the drops
over those.

Everything is seeded (--seed): the same command gives the same numbers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runMultires(cmd, &mf) },
	}
	f := cmd.Flags()
	f.IntVar(&mf.trainPhantoms, "train-phantoms", 48, "training phantoms")
	f.Float64Var(&mf.valFraction, "val-fraction", 0, "hold out this fraction of the training phantoms and test the epoch best on them (0: test the last epoch)")
	f.IntVar(&mf.testPhantoms, "test-phantoms", 24, "test phantoms (another seed stream)")
	f.IntVar(&mf.phantomSize, "phantom-size", 64, "phantom in-plane size in pixels")
	f.IntVar(&mf.size, "size", 32, "training size of both models")
	f.StringVar(&mf.resolutions, "resolutions", "32,24,16", "multi-resolution training sizes, descending, the first = --size")
	f.StringVar(&mf.testSizes, "test-sizes", "16,24,32,40,48,64", "test resolutions")
	f.IntVar(&mf.patch, "patch", 8, "ResFormer patch size (every size must be a multiple)")
	f.IntVar(&mf.depth, "depth", 2, "ResFormer depth (resformer-ti width 192, 3 heads)")
	f.IntVar(&mf.epochs, "epochs", 12, "epochs")
	f.IntVar(&mf.batch, "batch", 32, "slices per step")
	f.Float64Var(&mf.lr, "lr", 1e-3, "AdamW peak learning rate (cosine, 1 warmup epoch)")
	f.Float64Var(&mf.wd, "wd", 0.05, "AdamW weight decay")
	f.Float64Var(&mf.alpha, "alpha", 1, "scale-consistency weight α")
	f.StringVar(&mf.labels, "labels", train.LabelsLesion, "slice labels: lesion or scan")
	f.Float64Var(&mf.minLesion, "min-lesion", 0.01, "lesion share from which a diseased scan's slice shows its lesion (--labels lesion)")
	f.Float64Var(&mf.minLung, "min-lung", 0.05, "keep only slices at least this share of which is lung")
	f.BoolVar(&mf.flip, "flip", true, "mirror training slices left-right at random")
	f.Uint64Var(&mf.seed, "seed", 1, "seed of the phantoms, the split, the initialisation and the shuffles")
	f.IntVar(&mf.workers, "workers", 0, "phantoms generated in parallel (default: CPUs)")
	f.StringVar(&mf.out, "out", "", "folder for the two runs (default: a temporary folder, removed)")
	f.BoolVar(&mf.asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&mf.noProgress, "no-progress", false, "no per-epoch lines")
	return cmd
}

// runMultires runs the experiment.
func runMultires(cmd *cobra.Command, mf *multiresFlags) error {
	res, err := parseSizes(mf.resolutions)
	if err != nil {
		return fmt.Errorf("multires: --resolutions %w", err)
	}
	tests, err := parseSizes(mf.testSizes)
	if err != nil {
		return fmt.Errorf("multires: --test-sizes %w", err)
	}
	for _, s := range append(append([]int{mf.size}, res...), tests...) {
		if mf.patch < 1 || s%mf.patch != 0 {
			return fmt.Errorf("multires: size %d is not a multiple of the patch size %d", s, mf.patch)
		}
	}
	if len(res) < 2 {
		return fmt.Errorf("multires: --resolutions %q: give at least two sizes", mf.resolutions)
	}
	out := mf.out
	if out == "" {
		if out, err = os.MkdirTemp("", "ctlens-multires-"); err != nil {
			return err
		}
		defer os.RemoveAll(out)
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, _ := json.Marshal(net2d.ResFormerConfig{Patch: mf.patch, Depth: mf.depth})
	r := train.DefaultRecipe2D()
	r.Model = net2d.Spec{Arch: "resformer-ti", InChannels: 1, Config: cfg}
	r.Size, r.Labels, r.ScaleAlpha = mf.size, mf.labels, mf.alpha
	r.MinLesionFraction, r.MinLungFraction, r.Flip = mf.minLesion, mf.minLung, mf.flip
	r.Train = train.DataSource{Phantoms: mf.trainPhantoms, PhantomSeed: mf.seed, PhantomCols: mf.phantomSize, PhantomRows: mf.phantomSize}
	r.Epochs, r.BatchSize, r.Optimizer, r.LR, r.WeightDecay = mf.epochs, mf.batch, "adamw", mf.lr, mf.wd
	r.Schedule, r.WarmupEpochs, r.LabelSmoothing, r.BalanceClasses = "cosine", 1, 0.1, true
	r.Seed, r.Workers, r.ValFraction = mf.seed, mf.workers, mf.valFraction
	multi := r
	multi.Resolutions = res
	r.Out, multi.Out = filepath.Join(out, "single"), filepath.Join(out, "multi")
	var progress io.Writer
	if !mf.noProgress {
		progress = cmd.ErrOrStderr()
	}
	rep := multiresReport{Command: "ctlens " + strings.Join(os.Args[1:], " "), Recipe: r, Resolutions: res, LoadAverage: loadAverage()}
	var models [2]net2d.Classifier
	for i, rc := range []train.Recipe2D{r, multi} {
		o := train.Options{}
		if progress != nil {
			sizes := []int{rc.Size}
			if len(rc.Resolutions) > 0 {
				sizes = rc.Resolutions
			}
			fmt.Fprintf(progress, "training the %s model at %v\n", []string{"single-resolution", "multi-resolution"}[i], sizes)
			o.Progress = epochLines{progress}
		}
		start := time.Now()
		rr, err := train.Run2D(ctx, rc, o)
		if err != nil {
			return fmt.Errorf("multires: %w", err)
		}
		rep.TrainSeconds[i] = time.Since(start).Seconds()
		if models[i], _, err = net2d.LoadCheckpoint(rr.Best); err != nil {
			return fmt.Errorf("multires: %w", err)
		}
	}
	testSrc := train.DataSource{Phantoms: mf.testPhantoms, PhantomSeed: mf.seed ^ 0x7e57, PhantomCols: mf.phantomSize, PhantomRows: mf.phantomSize}
	so := r.SliceOptions()
	so.Size = mf.phantomSize
	set, err := train.LoadSlices(ctx, testSrc, so)
	if err != nil {
		return fmt.Errorf("multires: %w", err)
	}
	rep.TestSlices, rep.TestScans = set.Len(), len(set.ScanNames)
	acc := func(m net2d.Classifier, s int) (float64, error) {
		ev, err := train.EvaluateSlices(m, set, train.EvalSlicesOptions{Size: s, Batch: mf.batch})
		return ev.Accuracy, err
	}
	var base [2]float64
	for i, m := range models {
		if base[i], err = acc(m, mf.size); err != nil {
			return fmt.Errorf("multires: %w", err)
		}
	}
	seenMulti := map[int]bool{}
	for _, s := range res {
		seenMulti[s] = true
	}
	var sumS, sumM float64
	unseen := 0
	for _, s := range tests {
		row := multiresRow{Size: s, SeenSingle: s == mf.size, SeenMulti: seenMulti[s]}
		if row.Single, err = acc(models[0], s); err != nil {
			return fmt.Errorf("multires: %w", err)
		}
		if row.Multi, err = acc(models[1], s); err != nil {
			return fmt.Errorf("multires: %w", err)
		}
		row.SingleDrop, row.MultiDrop = base[0]-row.Single, base[1]-row.Multi
		if !row.SeenSingle && !row.SeenMulti {
			sumS += row.SingleDrop
			sumM += row.MultiDrop
			unseen++
		}
		rep.Rows = append(rep.Rows, row)
	}
	if unseen > 0 {
		rep.MeanDropSingleUnseen, rep.MeanDropMultiUnseen = sumS/float64(unseen), sumM/float64(unseen)
	}
	w := cmd.OutOrStdout()
	if mf.asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(w, "test: %d slices of %d phantoms (%d px); single trained at %d, multi at %v; load average %s\n",
		rep.TestSlices, rep.TestScans, mf.phantomSize, mf.size, res, rep.LoadAverage)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SIZE\tSEEN BY\tSINGLE ACC\tDROP\tMULTI ACC\tDROP")
	for _, row := range rep.Rows {
		seen := "—"
		switch {
		case row.SeenSingle && row.SeenMulti:
			seen = "both"
		case row.SeenMulti:
			seen = "multi"
		case row.SeenSingle:
			seen = "single"
		}
		fmt.Fprintf(tw, "%d\t%s\t%.4f\t%+.4f\t%.4f\t%+.4f\n", row.Size, seen, row.Single, row.SingleDrop, row.Multi, row.MultiDrop)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if unseen > 0 {
		fmt.Fprintf(w, "mean drop at the %d resolutions neither model saw: single %.4f, multi %.4f\n", unseen, rep.MeanDropSingleUnseen, rep.MeanDropMultiUnseen)
	}
	fmt.Fprintf(w, "training time: single %.0f s, multi %.0f s\n", rep.TrainSeconds[0], rep.TrainSeconds[1])
	return nil
}

// epochLines passes on the per-epoch summary lines of a run and drops its
// progress bars (nil: nothing).
type epochLines struct{ w io.Writer }

func (e epochLines) Write(p []byte) (int, error) {
	if e.w != nil && strings.HasPrefix(string(p), "epoch ") && strings.Contains(string(p), "train loss") {
		if _, err := e.w.Write(p); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// loadAverage returns the 1, 5 and 15-minute load averages of Linux
// (/proc/loadavg) with the CPU count, or "" elsewhere.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return fmt.Sprintf("%s %s %s on %d CPUs", f[0], f[1], f[2], runtime.NumCPU())
}
