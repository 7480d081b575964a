// Package train trains the registered 3D classifiers of package net3d on
// labelled CT scans (the CovidNet3D JSON layout, folder-per-class datasets of
// DICOM series, NIfTI files or slice stacks, or synthetic phantoms), and
// evaluates and reports them.
//
// A run is described by a Recipe. Run preprocesses every scan with the
// recipe's volume.Pipeline (random ops active in training, skipped at
// evaluation), trains with the optimizer and learning-rate schedule of
// package nn, evaluates on a validation split after every epoch, and writes
// into the output folder a resumable state after every epoch, the best and
// last model checkpoints (loadable with net3d.LoadCheckpoint, carrying the
// pipeline and class names), a JSONL log and a PNG of the curves.
//
// All randomness of epoch e — shuffling, augmentation, dropout, mixup — is
// drawn from generators seeded by (Recipe.Seed, e), never by worker timing,
// so a run interrupted at any point and resumed from its last checkpoint
// ends with the same weights as an uninterrupted one.
package train

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/volume"
)

// DataSource says where labelled scans come from. Exactly one of Folder,
// Layout and Phantoms is set.
type DataSource struct {
	// Folder is a dataset stored one folder per class (dicomio.ReadFolderLayout).
	Folder string `json:"folder,omitempty"`
	// Layout is a CovidNet3D JSON layout {class: {patient: {scan: [slices]}}}
	// (dicomio.ReadLayoutJSON) whose scans lie under Root (default: the
	// folder holding the JSON file).
	Layout string `json:"layout,omitempty"`
	Root   string `json:"root,omitempty"`
	// Phantoms is a number of synthetic chest CTs (volume.NewPhantom),
	// classes CP, NCP and Normal in turn, generated in memory. Phantom i
	// is drawn from a seed derived from (PhantomSeed, i); PhantomCols,
	// PhantomRows and PhantomSlices fix its size (0: the phantom defaults).
	Phantoms      int    `json:"phantoms,omitempty"`
	PhantomSeed   uint64 `json:"phantom_seed,omitempty"`
	PhantomCols   int    `json:"phantom_cols,omitempty"`
	PhantomRows   int    `json:"phantom_rows,omitempty"`
	PhantomSlices int    `json:"phantom_slices,omitempty"`
	// PhantomTwins makes every Normal phantom the healthy twin
	// (volume.PhantomOptions.Healthy) of a lesion phantom of its triple:
	// phantom 3t+2 is the twin of 3t (CP) for even t and of 3t+1 (NCP) for
	// odd t. A twin stays in its lesion phantom's split. The classes then
	// differ only where the lesions lie, so a model cannot separate them by
	// anything else (anatomy, crop, confounders).
	PhantomTwins bool `json:"phantom_twins,omitempty"`
}

// IsZero reports whether no source is set.
func (d DataSource) IsZero() bool { return d.Folder == "" && d.Layout == "" && d.Phantoms == 0 }

// String names the source for messages.
func (d DataSource) String() string {
	switch {
	case d.Folder != "":
		return "folder " + d.Folder
	case d.Layout != "":
		return "layout " + d.Layout
	case d.Phantoms > 0:
		if d.PhantomTwins {
			return fmt.Sprintf("%d phantoms (seed %d, Normal as healthy twins)", d.Phantoms, d.PhantomSeed)
		}
		return fmt.Sprintf("%d phantoms (seed %d)", d.Phantoms, d.PhantomSeed)
	}
	return "no data"
}

// Validate reports a source that sets none or several of Folder, Layout
// and Phantoms, a Root without a Layout, twins without phantoms, or
// phantom numbers out of range; errors name the source as what (e.g.
// "train").
func (d DataSource) Validate(what string) error {
	n := 0
	for _, set := range []bool{d.Folder != "", d.Layout != "", d.Phantoms != 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("train: recipe %s: set exactly one of folder, layout and phantoms (have %d)", what, n)
	}
	if d.Root != "" && d.Layout == "" {
		return fmt.Errorf("train: recipe %s: root %q given without a layout", what, d.Root)
	}
	if d.PhantomTwins && d.Phantoms == 0 {
		return fmt.Errorf("train: recipe %s: phantom_twins needs phantoms", what)
	}
	if d.Phantoms < 0 || d.Phantoms > 1_000_000 {
		return fmt.Errorf("train: recipe %s: phantoms %d outside 1..1000000", what, d.Phantoms)
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"phantom_cols", d.PhantomCols}, {"phantom_rows", d.PhantomRows}, {"phantom_slices", d.PhantomSlices}} {
		if v.n < 0 || v.n > 1024 {
			return fmt.Errorf("train: recipe %s: %s %d outside 0..1024", what, v.name, v.n)
		}
	}
	return nil
}

// Recipe describes a training run. JSON field names are given in the tags;
// fields absent from a JSON recipe keep the values of DefaultRecipe.
type Recipe struct {
	// Model is the architecture to train. Classes 0 takes the number of
	// classes of the training data; otherwise it must equal it.
	Model net3d.Spec `json:"model"`
	// Input is the network's input size per channel, [depth, height, width]
	// (slices, rows, columns). The pipeline must produce volumes of exactly
	// this size; a single-channel volume is replicated to Model.InChannels.
	Input [3]int `json:"input"`
	// Pipeline prepares each scan (HU volume) for the network; it is stored
	// in the checkpoints. Empty means volume.CovidNet3DPipeline(width, depth)
	// when height equals width.
	Pipeline volume.Pipeline `json:"pipeline,omitempty"`

	// Train is the training data. Val, when set, is the validation data;
	// otherwise ValFraction of Train's patients (stratified by class) are
	// held out for validation (0: no validation; the last epoch counts as
	// best). Test, when set, is evaluated once with the best model at the
	// end and never used to choose it.
	Train       DataSource `json:"train"`
	Val         DataSource `json:"val,omitzero"`
	Test        DataSource `json:"test,omitzero"`
	ValFraction float64    `json:"val_fraction"`

	// Epochs and BatchSize: the number of passes over the training split
	// and of scans per optimizer step (the last batch of an epoch may be
	// smaller; one of a single scan is skipped, as BatchNorm cannot train on it).
	Epochs    int `json:"epochs"`
	BatchSize int `json:"batch_size"`

	// Optimizer is "sgd", "adam" or "adamw"; LR the peak learning rate;
	// Momentum and Nesterov apply to SGD, Beta1 and Beta2 (0: 0.9, 0.999)
	// to Adam and AdamW.
	Optimizer string  `json:"optimizer"`
	LR        float64 `json:"lr"`
	Momentum  float64 `json:"momentum,omitempty"`
	Nesterov  bool    `json:"nesterov,omitempty"`
	Beta1     float64 `json:"beta1,omitempty"`
	Beta2     float64 `json:"beta2,omitempty"`
	// WeightDecay is the L2 (SGD, Adam) or decoupled (AdamW) weight decay.
	// Unless DecayAll, parameters of at most one dimension — biases and
	// normalisation (BatchNorm) weights — are exempt.
	WeightDecay float64 `json:"weight_decay"`
	DecayAll    bool    `json:"decay_all,omitempty"`

	// Schedule is "cosine" (linear warmup over WarmupEpochs, then cosine
	// decay to MinLR at the end of the last epoch, nn.WarmupCosineLR),
	// "step" (LR·Gamma^⌊epoch/StepEpochs⌋, per step, nn.StepLR) or
	// "constant". The rate is set before every optimizer step.
	Schedule     string  `json:"schedule"`
	WarmupEpochs float64 `json:"warmup_epochs,omitempty"`
	MinLR        float64 `json:"min_lr,omitempty"`
	StepEpochs   int     `json:"step_epochs,omitempty"`
	Gamma        float64 `json:"gamma,omitempty"`

	// LabelSmoothing ε in [0, 1) for the training loss (tensor.CEOpts).
	LabelSmoothing float64 `json:"label_smoothing,omitempty"`
	// ClassWeights weights the training loss per class (by label); with
	// BalanceClasses the weights are n/(K·n_c) from the training split
	// instead (n scans, K classes, n_c scans of class c).
	ClassWeights   []float64 `json:"class_weights,omitempty"`
	BalanceClasses bool      `json:"balance_classes,omitempty"`
	// ClipNorm, when positive, clips the global gradient norm (nn.ClipGradNorm).
	ClipNorm float64 `json:"clip_norm,omitempty"`
	// EMADecay, when positive, keeps an exponential moving average of the
	// weights (nn.EMA, with warmup) that is evaluated and saved instead of
	// the raw weights.
	EMADecay float64 `json:"ema_decay,omitempty"`
	// MixupAlpha, when positive, trains on mixup batches: x = λ·x + (1−λ)·x[π],
	// loss = λ·CE(y) + (1−λ)·CE(y[π]), λ ~ Beta(α, α), π a random permutation
	// of the batch.
	MixupAlpha float64 `json:"mixup_alpha,omitempty"`
	// LesionGuidance, when positive, adds LesionGuidance times a
	// lesion-guidance loss to the cross-entropy: the classifier's weights
	// applied at every position of the final feature map (the
	// class-activation map that CAM shows and Grad-CAM follows) are trained
	// with binary cross-entropy to be positive in the cells that hold the
	// scan's lesion, for its class, and negative elsewhere and for other
	// lesion classes (classes without lesions, such as Normal, are left
	// free). It needs a lesion mask for every training
	// scan (phantoms carry theirs; a scan file needs LesionPath), an input
	// that is a whole multiple of the feature map, and no mixup.
	LesionGuidance float64 `json:"lesion_guidance,omitempty"`

	// BestMetric chooses the best epoch on the validation split: "val_acc"
	// (highest accuracy, ties to the lower loss) or "val_loss" (lowest loss).
	BestMetric string `json:"best_metric"`

	// Seed determines the model's initialisation, the validation split and
	// all per-epoch randomness.
	Seed uint64 `json:"seed"`
	// Workers is the number of scans loaded and preprocessed in parallel
	// (0: GOMAXPROCS). It does not change results.
	Workers int `json:"workers,omitempty"`
	// Cache keeps loaded training volumes and preprocessed validation and
	// test inputs in memory between epochs (for datasets that fit).
	Cache bool `json:"cache,omitempty"`
	// Out is the output folder.
	Out string `json:"out"`
}

// DefaultRecipe returns the defaults: CovidNet3D on 32×128×128 inputs with
// the CovidNet3D pipeline, Adam (lr 1e-3, weight decay 5e-4, BN and biases
// exempt) with a cosine schedule over 100 epochs, batch 8, 20 % of patients
// held out for validation, best epoch by validation accuracy, seed 1.
func DefaultRecipe() Recipe {
	return Recipe{
		Model:       net3d.Spec{Arch: "covidnet3d", InChannels: 1},
		Input:       [3]int{32, 128, 128},
		ValFraction: 0.2,
		Epochs:      100,
		BatchSize:   8,
		Optimizer:   "adam",
		LR:          1e-3,
		WeightDecay: 5e-4,
		Schedule:    "cosine",
		Gamma:       0.1,
		StepEpochs:  30,
		Momentum:    0.9,
		BestMetric:  "val_acc",
		Seed:        1,
		Out:         "run",
	}
}

// ParseRecipe decodes a JSON recipe over DefaultRecipe (absent fields keep
// their defaults), rejecting unknown fields, and validates it.
func ParseRecipe(data []byte) (Recipe, error) {
	return decodeRecipe(data, DefaultRecipe(), "recipe", Recipe.Validate)
}

// ReadRecipe reads and parses the JSON recipe file at path.
func ReadRecipe(path string) (Recipe, error) { return readRecipe(path, "recipe", ParseRecipe) }

// decodeRecipe decodes data over the defaults r, rejecting unknown fields
// (errors name the recipe as what), and validates the result.
func decodeRecipe[R any](data []byte, r R, what string, validate func(R) error) (R, error) {
	var zero R
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return zero, fmt.Errorf("train: %s: %w", what, err)
	}
	if err := validate(r); err != nil {
		return zero, err
	}
	return r, nil
}

// readRecipe reads the file at path and parses it with parse, naming the
// file in errors.
func readRecipe[R any](path, what string, parse func([]byte) (R, error)) (R, error) {
	var zero R
	b, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("train: %s: %w", what, err)
	}
	r, err := parse(b)
	if err != nil {
		return zero, fmt.Errorf("%w (in %s)", err, path)
	}
	return r, nil
}

// EffectivePipeline returns the pipeline the run uses: Pipeline, or the
// default for Input when it is empty.
func (r Recipe) EffectivePipeline() (volume.Pipeline, error) {
	if len(r.Pipeline) > 0 {
		return r.Pipeline, nil
	}
	d, h, w := r.Input[0], r.Input[1], r.Input[2]
	if h != w {
		return nil, fmt.Errorf("train: recipe: no pipeline and input height %d ≠ width %d: the default CovidNet3D pipeline makes square slices; give a pipeline", h, w)
	}
	return volume.CovidNet3DPipeline(w, d), nil
}

// workers returns the effective worker count.
func (r Recipe) workers() int {
	if r.Workers > 0 {
		return r.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// Validate reports the first invalid field, naming it and its value.
func (r Recipe) Validate() error {
	bad := func(format string, a ...any) error { return fmt.Errorf("train: recipe: "+format, a...) }
	if r.Model.Arch == "" {
		return bad("model.arch is empty (see `ctlens models`)")
	}
	if _, ok := net3d.Lookup(r.Model.Arch); !ok {
		return bad("model.arch %q is not a registered architecture (see `ctlens models`)", r.Model.Arch)
	}
	if r.Model.InChannels < 1 || r.Model.InChannels > 16 {
		return bad("model.in_channels %d outside 1..16", r.Model.InChannels)
	}
	if r.Model.Classes < 0 {
		return bad("model.classes %d is negative", r.Model.Classes)
	}
	for i, n := range r.Input {
		if n < 1 || n > 4096 {
			return bad("input[%d] = %d outside 1..4096 (input is [depth, height, width])", i, n)
		}
	}
	if int64(r.Input[0])*int64(r.Input[1])*int64(r.Input[2]) > volume.MaxVoxels {
		return bad("input %v has more than %d voxels", r.Input, volume.MaxVoxels)
	}
	if len(r.Pipeline) > 0 {
		if err := r.Pipeline.Validate(); err != nil {
			return bad("pipeline: %w", err)
		}
	} else if _, err := r.EffectivePipeline(); err != nil {
		return err
	}
	if err := r.Train.Validate("train"); err != nil {
		return err
	}
	if !r.Val.IsZero() {
		if err := r.Val.Validate("val"); err != nil {
			return err
		}
	}
	if !r.Test.IsZero() {
		if err := r.Test.Validate("test"); err != nil {
			return err
		}
	}
	if !(r.ValFraction >= 0 && r.ValFraction < 1) {
		return bad("val_fraction %g outside [0, 1)", r.ValFraction)
	}
	if err := r.common().validate(); err != nil {
		return bad("%w", err)
	}
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	if len(r.ClassWeights) > 0 && r.BalanceClasses {
		return bad("class_weights and balance_classes are exclusive")
	}
	for i, w := range r.ClassWeights {
		if !(w >= 0) || !finite(w) {
			return bad("class_weights[%d] = %g must be ≥ 0", i, w)
		}
	}
	if len(r.ClassWeights) > 0 && r.Model.Classes > 0 && len(r.ClassWeights) != r.Model.Classes {
		return bad("%d class_weights for %d classes", len(r.ClassWeights), r.Model.Classes)
	}
	if !(r.MixupAlpha >= 0) || !finite(r.MixupAlpha) {
		return bad("mixup_alpha %g must be ≥ 0", r.MixupAlpha)
	}
	if !(r.LesionGuidance >= 0) || !finite(r.LesionGuidance) {
		return bad("lesion_guidance %g must be ≥ 0", r.LesionGuidance)
	}
	if r.LesionGuidance > 0 && r.MixupAlpha > 0 {
		return bad("lesion_guidance and mixup_alpha are exclusive (mixed scans have no lesion mask)")
	}
	return nil
}

// optimSettings are the recipe fields that 3D and 2D training share: epochs,
// batch, optimizer, schedule, regularisation, selection and output.
type optimSettings struct {
	Epochs, BatchSize                       int
	Optimizer, Schedule, BestMetric, Out    string
	LR, Momentum, Beta1, Beta2, WeightDecay float64
	Nesterov                                bool
	StepEpochs, Workers                     int
	Gamma, WarmupEpochs, MinLR              float64
	LabelSmoothing, ClipNorm, EMADecay      float64
}

// common returns r's shared training settings.
func (r Recipe) common() optimSettings {
	return optimSettings{Epochs: r.Epochs, BatchSize: r.BatchSize, Optimizer: r.Optimizer, Schedule: r.Schedule,
		BestMetric: r.BestMetric, Out: r.Out, LR: r.LR, Momentum: r.Momentum, Beta1: r.Beta1, Beta2: r.Beta2,
		WeightDecay: r.WeightDecay, Nesterov: r.Nesterov, StepEpochs: r.StepEpochs, Workers: r.Workers, Gamma: r.Gamma,
		WarmupEpochs: r.WarmupEpochs, MinLR: r.MinLR, LabelSmoothing: r.LabelSmoothing, ClipNorm: r.ClipNorm, EMADecay: r.EMADecay}
}

// validate checks the shared settings; the error names the field.
func (o optimSettings) validate() error {
	errf := fmt.Errorf
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	if o.Epochs < 1 || o.Epochs > 100000 {
		return errf("epochs %d outside 1..100000", o.Epochs)
	}
	if o.BatchSize < 1 || o.BatchSize > 4096 {
		return errf("batch_size %d outside 1..4096", o.BatchSize)
	}
	switch o.Optimizer {
	case "sgd", "adam", "adamw":
	default:
		return errf("optimizer %q: want sgd, adam or adamw", o.Optimizer)
	}
	if !(o.LR > 0) || !finite(o.LR) {
		return errf("lr %g must be positive", o.LR)
	}
	if !(o.Momentum >= 0 && o.Momentum < 1) {
		return errf("momentum %g outside [0, 1)", o.Momentum)
	}
	if o.Nesterov && (o.Optimizer != "sgd" || o.Momentum == 0) {
		return errf("nesterov needs optimizer sgd with momentum > 0")
	}
	for _, b := range []struct {
		name string
		v    float64
	}{{"beta1", o.Beta1}, {"beta2", o.Beta2}} {
		if !(b.v >= 0 && b.v < 1) {
			return errf("%s %g outside [0, 1)", b.name, b.v)
		}
	}
	if !(o.WeightDecay >= 0) || !finite(o.WeightDecay) {
		return errf("weight_decay %g must be ≥ 0", o.WeightDecay)
	}
	switch o.Schedule {
	case "cosine", "constant":
	case "step":
		if o.StepEpochs < 1 {
			return errf("step_epochs %d must be ≥ 1 for schedule step", o.StepEpochs)
		}
		if !(o.Gamma > 0 && o.Gamma <= 1) {
			return errf("gamma %g outside (0, 1]", o.Gamma)
		}
	default:
		return errf("schedule %q: want cosine, step or constant", o.Schedule)
	}
	if !(o.WarmupEpochs >= 0) || o.WarmupEpochs > float64(o.Epochs) {
		return errf("warmup_epochs %g outside [0, epochs=%d]", o.WarmupEpochs, o.Epochs)
	}
	if o.WarmupEpochs > 0 && o.Schedule != "cosine" {
		return errf("warmup_epochs needs schedule cosine")
	}
	if !(o.MinLR >= 0) || o.MinLR > o.LR {
		return errf("min_lr %g outside [0, lr=%g]", o.MinLR, o.LR)
	}
	if !(o.LabelSmoothing >= 0 && o.LabelSmoothing < 1) {
		return errf("label_smoothing %g outside [0, 1)", o.LabelSmoothing)
	}
	if !(o.ClipNorm >= 0) || !finite(o.ClipNorm) {
		return errf("clip_norm %g must be ≥ 0", o.ClipNorm)
	}
	if !(o.EMADecay >= 0 && o.EMADecay < 1) {
		return errf("ema_decay %g outside [0, 1)", o.EMADecay)
	}
	switch o.BestMetric {
	case "val_acc", "val_loss":
	default:
		return errf("best_metric %q: want val_acc or val_loss", o.BestMetric)
	}
	if o.Workers < 0 || o.Workers > 256 {
		return errf("workers %d outside 0..256", o.Workers)
	}
	if strings.TrimSpace(o.Out) == "" {
		return errf("out (output folder) is empty")
	}
	return nil
}

// sameRun reports why a resumed run's recipe differs from the saved one in
// a field that changes results (Workers, Cache and Out may differ), or "".
func sameRun(saved, now Recipe) string {
	a, b := saved, now
	for _, r := range []*Recipe{&a, &b} {
		r.Workers, r.Cache, r.Out = 0, false, ""
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if bytes.Equal(ja, jb) {
		return ""
	}
	var ma, mb map[string]json.RawMessage
	_ = json.Unmarshal(ja, &ma)
	_ = json.Unmarshal(jb, &mb)
	var diff []string
	for k, v := range ma {
		if !bytes.Equal(v, mb[k]) {
			diff = append(diff, fmt.Sprintf("%s (saved %s, now %s)", k, v, mb[k]))
		}
	}
	for k, v := range mb {
		if _, ok := ma[k]; !ok {
			diff = append(diff, fmt.Sprintf("%s (saved none, now %s)", k, v))
		}
	}
	sort.Strings(diff)
	return strings.Join(diff, "; ")
}
