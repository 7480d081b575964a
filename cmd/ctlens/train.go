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
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ctlens/ctlens/train"
	"github.com/ctlens/ctlens/volume"
)

// trainFlags holds the values of `ctlens train` flags; only flags given on
// the command line override the recipe.
type trainFlags struct {
	recipe, out                              string
	resume, noProgress, printRecipe          bool
	model, modelConfig, input, pipeline      string
	arch                                     string
	inChannels, classes                      int
	data, layout, root                       string
	phantoms, phantomSize, phantomSlices     int
	phantomSeed                              uint64
	valData, valLayout, valRoot              string
	testData, testLayout, testRoot           string
	testPhantoms                             int
	valFraction                              float64
	epochs, batch, stepEpochs, workers       int
	optimizer, schedule, bestMetric, weights string
	lr, momentum, wd, warmup, minLR, gamma   float64
	labelSmoothing, clip, ema, mixup         float64
	lesionGuidance                           float64
	nesterov, decayAll, cache, phantomTwins  bool
	seed                                     uint64
	flagSet                                  *pflag.FlagSet
}

func init() { rootCmd.AddCommand(newTrainCmd()) }

// newTrainCmd returns the `ctlens train` command.
func newTrainCmd() *cobra.Command {
	var tf trainFlags
	var t2 train2DFlags
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train a registered 3D model, or a 2D model on axial slices, on CT scans or synthetic phantoms",
		Long: `train trains any registered model (see ctlens models) on a dataset: a folder with one
sub-folder per class (DICOM series, NIfTI files or slice stacks: --data), the CovidNet3D JSON
layout (--layout, --root), or synthetic phantoms generated in memory (--phantoms N).

Settings come from a JSON recipe (--recipe; see --print-recipe for every field) and flags, flags
winning. Every scan goes through the preprocessing pipeline (--pipeline, a JSON array of ops;
default: the CovidNet3D pipeline for --input), which is stored in the checkpoints so that scoring
repeats it exactly. Scans that cannot be read are left out and listed with the reason.

The output folder receives best.safetensors (the best epoch on the validation split), last.safetensors,
state.safetensors (for --resume), log.jsonl (one line per epoch), curves.png and recipe.json.
A run that was interrupted continues with: ctlens train --resume --out DIR
(the saved recipe.json is used unless --recipe or flags are given; the results are the same as
an uninterrupted run's).

2D models (ResNet-RS resnetrs-N, ResFormer resformer-ti/-s/-b) train on the axial slices of the
scans, windowed (--window) and resized to --size; --preset resnetrs or resformer applies the
published training recipe (flags given override it), --resolutions trains a ResFormer at several
resolutions with the scale-consistency loss, and --labels chooses the slice labels. Their
checkpoints score whole scans with ctlens score (slice scores aggregated by --aggregation). 2D runs
cannot be resumed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tf.flagSet = cmd.Flags()
			if tf.is2D() {
				return runTrain2D(cmd, &tf, &t2)
			}
			r, err := tf.toRecipe()
			if err != nil {
				return err
			}
			interrupted := fmt.Errorf("train: interrupted; the last completed epoch is saved: continue with `ctlens train --resume --out %s`", r.Out)
			return runRecipe(cmd, &tf, r, r.Validate, interrupted, func(ctx context.Context, progress io.Writer) error {
				res, err := train.Run(ctx, r, train.Options{Resume: tf.resume, Progress: progress})
				if err != nil {
					return err
				}
				printTrainResult(cmd.OutOrStdout(), res)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&tf.recipe, "recipe", "", "JSON recipe file (flags given override its fields)")
	f.StringVar(&tf.out, "out", "", "output folder (default \"run\")")
	f.BoolVar(&tf.resume, "resume", false, "continue the run saved in --out")
	f.BoolVar(&tf.noProgress, "no-progress", false, "no progress bars")
	f.BoolVar(&tf.printRecipe, "print-recipe", false, "print the effective recipe as JSON and exit")

	f.StringVar(&tf.arch, "arch", "", "architecture spec JSON file, e.g. final.json of ctlens search (--model, --model-config, --in-channels, --classes override its fields)")
	f.StringVar(&tf.model, "model", "", "architecture (see ctlens models; default covidnet3d)")
	f.StringVar(&tf.modelConfig, "model-config", "", "architecture options as JSON, e.g. '{\"dropout\":0.2}'")
	f.IntVar(&tf.inChannels, "in-channels", 0, "input channels (the scan is replicated; default 1)")
	f.IntVar(&tf.classes, "classes", 0, "number of classes (default: the data's)")
	f.StringVar(&tf.input, "input", "", "network input size DEPTHxHEIGHTxWIDTH (default 32x128x128)")
	f.StringVar(&tf.pipeline, "pipeline", "", "preprocessing pipeline: a JSON file or inline JSON array of ops")

	f.StringVar(&tf.data, "data", "", "training data: folder with one sub-folder per class")
	f.StringVar(&tf.layout, "layout", "", "training data: CovidNet3D JSON layout {class: {patient: {scan: [slices]}}}")
	f.StringVar(&tf.root, "root", "", "folder the --layout scans lie under (default: the JSON's folder)")
	f.IntVar(&tf.phantoms, "phantoms", 0, "training data: N synthetic phantoms (CP, NCP, Normal in turn)")
	f.Uint64Var(&tf.phantomSeed, "phantom-seed", 0, "seed of the phantoms (default: --seed)")
	f.IntVar(&tf.phantomSize, "phantom-size", 0, "phantom in-plane size in pixels (default 128)")
	f.IntVar(&tf.phantomSlices, "phantom-slices", 0, "phantom slices (default: by slice spacing, 40–72)")
	f.BoolVar(&tf.phantomTwins, "phantom-twins", false, "make every Normal phantom the healthy twin of a CP or NCP phantom (the classes then differ only in the lesions)")
	f.StringVar(&tf.valData, "val-data", "", "validation data folder (instead of --val-fraction)")
	f.StringVar(&tf.valLayout, "val-layout", "", "validation data JSON layout")
	f.StringVar(&tf.valRoot, "val-root", "", "folder of the --val-layout scans")
	f.Float64Var(&tf.valFraction, "val-fraction", 0, "fraction of training patients held out for validation (default 0.2)")
	f.StringVar(&tf.testData, "test-data", "", "test data folder, evaluated once with the best model")
	f.StringVar(&tf.testLayout, "test-layout", "", "test data JSON layout")
	f.StringVar(&tf.testRoot, "test-root", "", "folder of the --test-layout scans")
	f.IntVar(&tf.testPhantoms, "test-phantoms", 0, "test data: N phantoms drawn from another seed stream than training's")

	f.IntVar(&tf.epochs, "epochs", 0, "epochs (default 100)")
	f.IntVar(&tf.batch, "batch", 0, "scans per step (default 8)")
	f.StringVar(&tf.optimizer, "optimizer", "", "sgd, adam or adamw (default adam)")
	f.Float64Var(&tf.lr, "lr", 0, "peak learning rate (default 1e-3)")
	f.Float64Var(&tf.momentum, "momentum", 0, "SGD momentum (default 0.9)")
	f.BoolVar(&tf.nesterov, "nesterov", false, "Nesterov momentum (SGD)")
	f.Float64Var(&tf.wd, "wd", 0, "weight decay (default 5e-4)")
	f.BoolVar(&tf.decayAll, "decay-all", false, "apply weight decay to biases and BatchNorm weights too")
	f.StringVar(&tf.schedule, "schedule", "", "cosine, step or constant (default cosine)")
	f.Float64Var(&tf.warmup, "warmup", 0, "linear warmup epochs (cosine)")
	f.Float64Var(&tf.minLR, "min-lr", 0, "final learning rate of the cosine schedule")
	f.IntVar(&tf.stepEpochs, "step-epochs", 0, "epochs between decays (step schedule; default 30)")
	f.Float64Var(&tf.gamma, "gamma", 0, "decay factor (step schedule; default 0.1)")
	f.Float64Var(&tf.labelSmoothing, "label-smoothing", 0, "label smoothing ε")
	f.StringVar(&tf.weights, "class-weights", "", "loss weights by class, e.g. 1,2,1, or \"balanced\"")
	f.Float64Var(&tf.clip, "clip", 0, "clip the global gradient norm to this value")
	f.Float64Var(&tf.ema, "ema", 0, "EMA decay of the weights, e.g. 0.999 (evaluated and saved)")
	f.Float64Var(&tf.mixup, "mixup", 0, "mixup α (0: off)")
	f.Float64Var(&tf.lesionGuidance, "lesion-guidance", 0, "weight of the lesion-guidance loss that trains the class-score map (CAM) on the lesion masks (0: off; needs masks: phantoms or <scan>.lesion.nii.gz)")
	f.StringVar(&tf.bestMetric, "best-metric", "", "val_acc or val_loss (default val_acc)")
	f.Uint64Var(&tf.seed, "seed", 0, "random seed (default 1)")
	f.IntVar(&tf.workers, "workers", 0, "scans loaded in parallel (default: CPUs)")
	f.BoolVar(&tf.cache, "cache", false, "keep loaded scans in memory between epochs")
	t2.register(f)
	return cmd
}

// toRecipe builds the recipe: --recipe, or on --resume the output folder's
// recipe.json, or the defaults; then every flag given on the command line.
func (tf *trainFlags) toRecipe() (train.Recipe, error) {
	f := tf.flagSet
	r := train.DefaultRecipe()
	switch {
	case tf.recipe != "":
		var err error
		if r, err = train.ReadRecipe(tf.recipe); err != nil {
			return r, err
		}
	case tf.resume:
		if tf.out == "" {
			return r, errors.New("train: --resume needs --out (the folder of the run)")
		}
		saved := filepath.Join(tf.out, train.RecipeFile)
		if _, err := os.Stat(saved); err == nil {
			if r, err = train.ReadRecipe(saved); err != nil {
				return r, err
			}
		}
	}
	fe := flagErrs{f: f}
	add := fe.add
	add("out", func() error { r.Out = tf.out; return nil })
	add("arch", func() error {
		spec, err := readArchSpec(tf.arch)
		r.Model = spec
		return err
	})
	add("model", func() error { r.Model.Arch = tf.model; return nil })
	add("model-config", func() error {
		if !json.Valid([]byte(tf.modelConfig)) {
			return fmt.Errorf("%q is not JSON", tf.modelConfig)
		}
		r.Model.Config = json.RawMessage(tf.modelConfig)
		return nil
	})
	add("in-channels", func() error { r.Model.InChannels = tf.inChannels; return nil })
	add("classes", func() error { r.Model.Classes = tf.classes; return nil })
	add("input", func() error {
		in, err := parseTrainInput(tf.input)
		r.Input = in
		return err
	})
	add("pipeline", func() error {
		data := []byte(tf.pipeline)
		if !strings.HasPrefix(strings.TrimSpace(tf.pipeline), "[") {
			b, err := os.ReadFile(tf.pipeline)
			if err != nil {
				return err
			}
			data = b
		}
		p, err := volume.ParsePipeline(data)
		r.Pipeline = p
		return err
	})
	tf.applyDataFlags(&r.Train, &r.Val, &r.Test, &r.Seed)
	add("phantom-slices", func() error { r.Train.PhantomSlices = tf.phantomSlices; return nil })
	add("phantom-twins", func() error { r.Train.PhantomTwins = tf.phantomTwins; return nil })
	if f.Changed("test-phantoms") {
		// 3D test phantoms have the training phantoms' slices too.
		r.Test.PhantomSlices = r.Train.PhantomSlices
	}
	add("val-fraction", func() error { r.ValFraction = tf.valFraction; return nil })
	add("epochs", func() error { r.Epochs = tf.epochs; return nil })
	add("batch", func() error { r.BatchSize = tf.batch; return nil })
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
		r.ClassWeights, r.BalanceClasses = nil, false
		if strings.EqualFold(tf.weights, "balanced") {
			r.BalanceClasses = true
			return nil
		}
		for _, s := range strings.Split(tf.weights, ",") {
			w, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return fmt.Errorf("%q: want comma-separated numbers or \"balanced\"", tf.weights)
			}
			r.ClassWeights = append(r.ClassWeights, w)
		}
		return nil
	})
	add("clip", func() error { r.ClipNorm = tf.clip; return nil })
	add("ema", func() error { r.EMADecay = tf.ema; return nil })
	add("mixup", func() error { r.MixupAlpha = tf.mixup; return nil })
	add("lesion-guidance", func() error { r.LesionGuidance = tf.lesionGuidance; return nil })
	add("best-metric", func() error { r.BestMetric = tf.bestMetric; return nil })
	add("workers", func() error { r.Workers = tf.workers; return nil })
	add("cache", func() error { r.Cache = tf.cache; return nil })
	return r, errors.Join(fe.errs...)
}

// flagErrs applies the flags given on the command line and collects the
// errors of applying them.
type flagErrs struct {
	f    *pflag.FlagSet
	errs []error
}

// add runs apply if flag name was given, keeping its error as "train: --name: …".
func (fe *flagErrs) add(name string, apply func() error) {
	if !fe.f.Changed(name) {
		return
	}
	if err := apply(); err != nil {
		fe.errs = append(fe.errs, fmt.Errorf("train: --%s: %w", name, err))
	}
}

// applyDataFlags applies the data flags given (--data, --layout, --root,
// --phantoms, --phantom-size, --seed, --phantom-seed, --val-*, --test-*) to
// a recipe's training, validation and test sources and seed.
func (tf *trainFlags) applyDataFlags(trainSrc, val, test *train.DataSource, seed *uint64) {
	f := tf.flagSet
	if f.Changed("data") || f.Changed("layout") || f.Changed("phantoms") {
		*trainSrc = train.DataSource{Folder: tf.data, Layout: tf.layout, Root: tf.root, Phantoms: tf.phantoms}
	} else if f.Changed("root") {
		trainSrc.Root = tf.root
	}
	if f.Changed("phantom-size") {
		trainSrc.PhantomCols, trainSrc.PhantomRows = tf.phantomSize, tf.phantomSize
	}
	if f.Changed("seed") {
		*seed = tf.seed
	}
	if trainSrc.Phantoms > 0 {
		if f.Changed("phantom-seed") {
			trainSrc.PhantomSeed = tf.phantomSeed
		} else if f.Changed("phantoms") || f.Changed("seed") {
			trainSrc.PhantomSeed = *seed
		}
	}
	if f.Changed("val-data") || f.Changed("val-layout") {
		*val = train.DataSource{Folder: tf.valData, Layout: tf.valLayout, Root: tf.valRoot}
	}
	if f.Changed("test-data") || f.Changed("test-layout") {
		*test = train.DataSource{Folder: tf.testData, Layout: tf.testLayout, Root: tf.testRoot}
	}
	if f.Changed("test-phantoms") {
		// Test phantoms come from a seed no training phantom uses.
		*test = train.DataSource{Phantoms: tf.testPhantoms, PhantomSeed: trainSrc.PhantomSeed ^ 0x7e57,
			PhantomCols: trainSrc.PhantomCols, PhantomRows: trainSrc.PhantomRows}
	}
}

// runRecipe finishes both paths of `ctlens train` once the recipe is built:
// it prints the recipe as JSON (--print-recipe) or validates it and calls
// run with a context cancelled by SIGINT or SIGTERM and the progress writer
// (nil with --no-progress), returning interrupted if the run was cancelled.
func runRecipe(cmd *cobra.Command, tf *trainFlags, recipe any, validate func() error, interrupted error, run func(ctx context.Context, progress io.Writer) error) error {
	if tf.printRecipe {
		b, err := json.MarshalIndent(recipe, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), string(b))
		return nil
	}
	if err := validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var progress io.Writer = cmd.ErrOrStderr()
	if tf.noProgress {
		progress = nil
	}
	if err := run(ctx, progress); err != nil {
		if errors.Is(err, context.Canceled) {
			return interrupted
		}
		return err
	}
	return nil
}

// parseTrainInput reads "DxHxW", e.g. "32x128x128".
func parseTrainInput(s string) ([3]int, error) {
	var out [3]int
	parts := strings.Split(strings.ToLower(s), "x")
	if len(parts) != 3 {
		return out, fmt.Errorf("%q: want DEPTHxHEIGHTxWIDTH, e.g. 32x128x128", s)
	}
	for i, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v < 1 || v > 4096 {
			return out, fmt.Errorf("%q: size %d (%q) must be an integer in 1..4096", s, i, p)
		}
		out[i] = v
	}
	return out, nil
}

// printTrainResult prints the summary of a finished run.
func printTrainResult(w io.Writer, res *train.Result) {
	fmt.Fprintf(w, "classes: %s\n", strings.Join(res.Classes, ", "))
	fmt.Fprintf(w, "scans: %d training, %d validation", res.TrainScans, res.ValScans)
	if res.Test != nil {
		fmt.Fprintf(w, ", %d test", res.TestScans)
	}
	fmt.Fprintln(w)
	if len(res.Skipped) > 0 {
		fmt.Fprintf(w, "skipped %d:\n", len(res.Skipped))
		for _, s := range res.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", s.Path, s.Reason)
		}
	}
	if res.BestEpoch > 0 && res.BestEpoch <= len(res.History) {
		h := res.History[res.BestEpoch-1]
		fmt.Fprintf(w, "best epoch %d of %d", res.BestEpoch, len(res.History))
		if h.ValAcc != nil {
			fmt.Fprintf(w, ": validation accuracy %.4f, loss %.4f", *h.ValAcc, *h.ValLoss)
		}
		fmt.Fprintln(w)
	}
	if res.Test != nil {
		fmt.Fprintf(w, "test (best epoch): accuracy %.4f, loss %.4f on %d scans\n", res.Test.Accuracy, res.Test.Loss, res.TestScans)
	}
	fmt.Fprintf(w, "wrote %s, %s, %s and %s in %s\n", train.BestFile, train.LastFile, train.LogFile, train.CurvesFile, res.Dir)
}
