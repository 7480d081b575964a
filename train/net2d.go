package train

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/ctlens/ctlens/net2d"
	"github.com/ctlens/ctlens/volume"
)

// Slice labelling modes of a 2D run (Recipe2D.Labels).
const (
	// LabelsScan gives every selected axial slice the class of its scan:
	// the slice model learns the scan-level task directly and its slice
	// scores are aggregated into a scan score.
	LabelsScan = "scan"
	// LabelsLesion also gives each slice its scan's class, but keeps a
	// slice of a scan of a diseased class only when at least
	// MinLesionFraction of its pixels are lesion (phantom lesion masks,
	// so phantom data only); every selected slice of a Normal scan is
	// kept. It removes the lesion-free slices of diseased scans, whose
	// scan label the image does not show.
	LabelsLesion = "lesion"
)

// Recipe2D describes the training of a 2D network (package net2d) on the
// axial slices of labelled CT scans. JSON field names are in the tags;
// absent fields keep the values of DefaultRecipe2D.
//
// Every selected slice (see Labels, MinLungFraction, SliceStride) is
// windowed and resized to Size × Size once (net2d.SliceInput) and held in
// memory. A training batch of slices at Size is, with Resolutions,
// replicated at each smaller resolution by bilinear resizing and trained
// with net2d.MultiResolutionLoss (ResFormer's "co" mode with the
// scale-consistency term weighted by ScaleAlpha); otherwise with the
// cross-entropy at Size. Validation is at Size.
type Recipe2D struct {
	// Preset names the preset the recipe was made from ("resnetrs",
	// "resformer"), for the record; it changes nothing by itself.
	Preset string `json:"preset,omitempty"`
	// Model is the 2D architecture. Classes 0 takes the data's number of
	// classes; otherwise it must equal it.
	Model net2d.Spec `json:"model"`

	// WindowCenter and WindowWidth (HU) map each slice to [0, 1].
	WindowCenter float64 `json:"window_center"`
	WindowWidth  float64 `json:"window_width"`
	// Size is the slice size (height = width) of training and validation.
	Size int `json:"size"`
	// Resolutions, when set, are the training resolutions of
	// multi-resolution training, strictly descending, the first equal to
	// Size.
	Resolutions []int `json:"resolutions,omitempty"`
	// ScaleAlpha is α of the scale-consistency loss (multi-resolution only).
	ScaleAlpha float64 `json:"scale_alpha,omitempty"`
	// Labels is LabelsScan or LabelsLesion.
	Labels string `json:"labels"`
	// MinLesionFraction is the lesion share of a slice's pixels from which
	// a slice of a diseased scan counts as showing the lesion (LabelsLesion).
	MinLesionFraction float64 `json:"min_lesion_fraction,omitempty"`
	// MinLungFraction, when positive, keeps only slices at least this
	// share of whose pixels are lung (the phantom's lung mask, or
	// volume.LungMask with its defaults for scans read from files).
	MinLungFraction float64 `json:"min_lung_fraction,omitempty"`
	// SliceStride keeps every n-th selected slice of a scan (0 or 1: all).
	SliceStride int `json:"slice_stride,omitempty"`
	// Flip mirrors each training slice left–right with probability 1/2.
	Flip bool `json:"flip,omitempty"`
	// Aggregation ("mean", "max", "topk") and TopK reduce slice logits to
	// scan logits (net2d.Aggregate): for the scan accuracy of validation
	// and stored in the checkpoints for scoring.
	Aggregation string `json:"aggregation"`
	TopK        int    `json:"top_k,omitempty"`

	// Train, Val, Test, ValFraction: as Recipe (the split is by scan, so
	// slices of one patient never straddle training and validation).
	Train       DataSource `json:"train"`
	Val         DataSource `json:"val,omitzero"`
	Test        DataSource `json:"test,omitzero"`
	ValFraction float64    `json:"val_fraction"`

	// Epochs and BatchSize (slices per optimizer step).
	Epochs    int `json:"epochs"`
	BatchSize int `json:"batch_size"`

	// Optimizer and schedule fields: as Recipe.
	Optimizer    string  `json:"optimizer"`
	LR           float64 `json:"lr"`
	Momentum     float64 `json:"momentum,omitempty"`
	Nesterov     bool    `json:"nesterov,omitempty"`
	Beta1        float64 `json:"beta1,omitempty"`
	Beta2        float64 `json:"beta2,omitempty"`
	Schedule     string  `json:"schedule"`
	WarmupEpochs float64 `json:"warmup_epochs,omitempty"`
	MinLR        float64 `json:"min_lr,omitempty"`
	StepEpochs   int     `json:"step_epochs,omitempty"`
	Gamma        float64 `json:"gamma,omitempty"`
	// WeightDecay: as Recipe. Unless DecayAll, parameters of at most one
	// dimension (biases, BatchNorm and LayerNorm weights) and, for
	// ResFormer, the parameters the reference exempts (pos_embed, get_v,
	// cls_token) are exempt.
	WeightDecay float64 `json:"weight_decay"`
	DecayAll    bool    `json:"decay_all,omitempty"`

	// LabelSmoothing, BalanceClasses (weights n/(K·n_c) over training
	// slices), ClipNorm, EMADecay, BestMetric, Seed, Workers, Out: as Recipe.
	LabelSmoothing float64 `json:"label_smoothing,omitempty"`
	BalanceClasses bool    `json:"balance_classes,omitempty"`
	ClipNorm       float64 `json:"clip_norm,omitempty"`
	EMADecay       float64 `json:"ema_decay,omitempty"`
	BestMetric     string  `json:"best_metric"`
	Seed           uint64  `json:"seed"`
	Workers        int     `json:"workers,omitempty"`
	Out            string  `json:"out"`
}

// DefaultRecipe2D returns the defaults of a 2D run: ResNet-RS-18 on
// one-channel 128 × 128 slices in the lung window (W1500/L−600), slice
// labels from the scan, mean aggregation, AdamW (lr 1e-3, weight decay
// 0.05) with a cosine schedule over 30 epochs, batch 32, 20 % of scans held
// out for validation, best epoch by validation accuracy, seed 1.
func DefaultRecipe2D() Recipe2D {
	return Recipe2D{
		Model:        net2d.Spec{Arch: "resnetrs-18", InChannels: 1},
		WindowCenter: volume.LungWindow.Center,
		WindowWidth:  volume.LungWindow.Width,
		Size:         128,
		ScaleAlpha:   1,
		Labels:       LabelsScan,
		Aggregation:  "mean",
		TopK:         5,
		ValFraction:  0.2,
		Epochs:       30,
		BatchSize:    32,
		Optimizer:    "adamw",
		LR:           1e-3,
		WeightDecay:  0.05,
		Schedule:     "cosine",
		Momentum:     0.9,
		StepEpochs:   30,
		Gamma:        0.1,
		BestMetric:   "val_acc",
		Seed:         1,
		Out:          "run",
		// A lesion must cover 0.2 % of a slice to count (LabelsLesion).
		MinLesionFraction: 0.002,
	}
}

// Presets lists the named training recipes ApplyPreset knows.
var Presets = []string{"resnetrs", "resformer"}

// ApplyPreset sets the training hyperparameters of a published recipe on
// r, keeping its data, sizes, epochs and batch size:
//
// "resnetrs" — ResNet-RS (Bello et al. 2021; reference-models.md §2.3–2.4):
// SGD with Nesterov momentum 0.9, lr 0.1·batch/256, cosine decay after a
// linear warmup of 5 epochs (at most the run's epochs), label smoothing
// 0.1, weight decay 4e-5 as an L2 term on every weight except BatchNorm and
// biases, an EMA of the weights with decay 0.9999 (TensorFlow's num_updates
// warmup, so short runs average over fewer steps; BatchNorm statistics
// included) that is evaluated and saved, dropout 0.25 before the classifier
// (0.4 at slice size ≥ 320) and stochastic depth 0.1 for ResNet-RS-200 and
// deeper, 0 below. The model must be a "resnetrs-N" (empty: resnetrs-50).
//
// "resformer" — ResFormer (Tian et al. 2023; §3.2): AdamW, lr 5e-4·batch/512,
// weight decay 0.05 (pos_embed, get_v, cls_token, norms and biases
// exempt), cosine to 1e-5 after 5 warmup epochs (at most the run's),
// label smoothing 0.1, drop_path 0.1 (0.2 for resformer-b), and
// multi-resolution training at Size and the reference's 160/224 and
// 128/224 of it (rounded to the patch size) with the smooth-L1
// scale-consistency loss, α = 1, when Resolutions is empty. The model must
// be a "resformer-*" (empty: resformer-ti).
//
// Model options other than the regularisation ones are kept from r.Model.Config.
func ApplyPreset(r *Recipe2D, name string) error {
	warm := math.Min(5, float64(r.Epochs))
	switch name {
	case "resnetrs":
		if r.Model.Arch == "" {
			r.Model.Arch = "resnetrs-50"
		}
		var depth int
		if _, err := fmt.Sscanf(r.Model.Arch, "resnetrs-%d", &depth); err != nil {
			return fmt.Errorf("train: preset resnetrs: model %q is not a ResNet-RS (want resnetrs-N)", r.Model.Arch)
		}
		var cfg net2d.ResNetRSConfig
		if err := net2d.DecodeConfig(r.Model, &cfg); err != nil {
			return fmt.Errorf("train: preset resnetrs: %w", err)
		}
		cfg.Dropout = 0.25
		if r.Size >= 320 {
			cfg.Dropout = 0.4
		}
		cfg.DropPath = 0
		if depth >= 200 {
			cfg.DropPath = 0.1
		}
		raw, err := json.Marshal(cfg)
		if err != nil {
			return err
		}
		r.Model.Config = raw
		r.Optimizer, r.Momentum, r.Nesterov = "sgd", 0.9, true
		r.LR = 0.1 * float64(r.BatchSize) / 256
		r.Schedule, r.WarmupEpochs, r.MinLR = "cosine", warm, 0
		r.LabelSmoothing = 0.1
		r.WeightDecay, r.DecayAll = 4e-5, false
		r.EMADecay = 0.9999
	case "resformer":
		if r.Model.Arch == "" {
			r.Model.Arch = "resformer-ti"
		}
		if !strings.HasPrefix(r.Model.Arch, "resformer-") {
			return fmt.Errorf("train: preset resformer: model %q is not a ResFormer (want resformer-ti, -s or -b)", r.Model.Arch)
		}
		cfg := net2d.ResFormerConfig{}
		if err := net2d.DecodeConfig(r.Model, &cfg); err != nil {
			return fmt.Errorf("train: preset resformer: %w", err)
		}
		cfg.DropPath = 0.1
		if r.Model.Arch == "resformer-b" {
			cfg.DropPath = 0.2
		}
		raw, err := json.Marshal(cfg)
		if err != nil {
			return err
		}
		r.Model.Config = raw
		r.Optimizer, r.Beta1, r.Beta2 = "adamw", 0, 0
		r.LR = 5e-4 * float64(r.BatchSize) / 512
		r.Schedule, r.WarmupEpochs, r.MinLR = "cosine", warm, 1e-5
		if r.MinLR > r.LR {
			r.MinLR = r.LR
		}
		r.LabelSmoothing = 0.1
		r.WeightDecay, r.DecayAll = 0.05, false
		if len(r.Resolutions) == 0 {
			patch := cfg.Patch
			if patch == 0 {
				patch = 16
			}
			r.Resolutions = presetResolutions(r.Size, patch)
		}
		r.ScaleAlpha = 1
	default:
		return fmt.Errorf("train: unknown preset %q (want %s)", name, strings.Join(Presets, " or "))
	}
	r.Preset = name
	return nil
}

// presetResolutions returns size and the reference's 160/224 and 128/224
// of it, rounded to multiples of patch, without repeats or sizes below
// one patch.
func presetResolutions(size, patch int) []int {
	out := []int{size}
	for _, f := range []float64{160.0 / 224, 128.0 / 224} {
		r := int(math.Round(float64(size)*f/float64(patch))) * patch
		if r >= patch && r < out[len(out)-1] {
			out = append(out, r)
		}
	}
	return out
}

// ParseRecipe2D decodes a JSON recipe over DefaultRecipe2D (absent fields
// keep their defaults), rejecting unknown fields, and validates it.
func ParseRecipe2D(data []byte) (Recipe2D, error) {
	return decodeRecipe(data, DefaultRecipe2D(), "2D recipe", Recipe2D.Validate)
}

// ReadRecipe2D reads and parses the JSON 2D recipe file at path.
func ReadRecipe2D(path string) (Recipe2D, error) { return readRecipe(path, "2D recipe", ParseRecipe2D) }

// IsRecipe2D reports whether the JSON recipe in data names a 2D
// architecture (net2d) as its model.
func IsRecipe2D(data []byte) bool {
	var probe struct {
		Model struct {
			Arch string `json:"arch"`
		} `json:"model"`
	}
	if json.Unmarshal(data, &probe) != nil {
		return false
	}
	_, ok := net2d.Lookup(probe.Model.Arch)
	return ok
}

// SlicePrep returns the scoring preprocessing of the recipe's models.
func (r Recipe2D) SlicePrep() net2d.SlicePrep {
	return net2d.SlicePrep{
		WindowCenter: r.WindowCenter, WindowWidth: r.WindowWidth, Size: [2]int{r.Size, r.Size},
		Aggregation: r.Aggregation, TopK: r.TopK,
	}
}

// multiRes reports whether the recipe trains at several resolutions.
func (r Recipe2D) multiRes() bool { return len(r.Resolutions) > 1 }

// Validate reports the first invalid field, naming it and its value.
// common returns r's shared training settings.
func (r Recipe2D) common() optimSettings {
	return optimSettings{Epochs: r.Epochs, BatchSize: r.BatchSize, Optimizer: r.Optimizer, Schedule: r.Schedule,
		BestMetric: r.BestMetric, Out: r.Out, LR: r.LR, Momentum: r.Momentum, Beta1: r.Beta1, Beta2: r.Beta2,
		WeightDecay: r.WeightDecay, Nesterov: r.Nesterov, StepEpochs: r.StepEpochs, Workers: r.Workers, Gamma: r.Gamma,
		WarmupEpochs: r.WarmupEpochs, MinLR: r.MinLR, LabelSmoothing: r.LabelSmoothing, ClipNorm: r.ClipNorm, EMADecay: r.EMADecay}
}

func (r Recipe2D) Validate() error {
	bad := func(format string, a ...any) error { return fmt.Errorf("train: 2D recipe: "+format, a...) }
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	if r.Model.Arch == "" {
		return bad("model.arch is empty (resnetrs-18 … resnetrs-420, resformer-ti, -s, -b)")
	}
	if _, ok := net2d.Lookup(r.Model.Arch); !ok {
		return bad("model.arch %q is not a registered 2D architecture (resnetrs-N, resformer-ti, -s, -b)", r.Model.Arch)
	}
	if r.Model.InChannels < 1 || r.Model.InChannels > 16 {
		return bad("model.in_channels %d outside 1..16", r.Model.InChannels)
	}
	if r.Model.Classes < 0 {
		return bad("model.classes %d is negative", r.Model.Classes)
	}
	if !(r.WindowWidth > 0) || !finite(r.WindowWidth) || !finite(r.WindowCenter) {
		return bad("window width %g, center %g (want a finite positive width)", r.WindowWidth, r.WindowCenter)
	}
	if r.Size < 8 || r.Size > 1024 {
		return bad("size %d outside 8..1024", r.Size)
	}
	if len(r.Resolutions) > 0 {
		if r.Resolutions[0] != r.Size {
			return bad("resolutions %v: the first must equal size %d", r.Resolutions, r.Size)
		}
		for i, s := range r.Resolutions {
			if s < 1 {
				return bad("resolutions[%d] = %d must be positive", i, s)
			}
			if i > 0 && s >= r.Resolutions[i-1] {
				return bad("resolutions %v must be strictly descending", r.Resolutions)
			}
		}
	}
	if !(r.ScaleAlpha >= 0) || !finite(r.ScaleAlpha) {
		return bad("scale_alpha %g must be ≥ 0", r.ScaleAlpha)
	}
	switch r.Labels {
	case LabelsScan:
	case LabelsLesion:
		for _, d := range []DataSource{r.Train, r.Val, r.Test} {
			if !d.IsZero() && d.Phantoms == 0 {
				return bad("labels %q need lesion masks, which only phantom data has (%s)", LabelsLesion, d)
			}
		}
	default:
		return bad("labels %q: want %s or %s", r.Labels, LabelsScan, LabelsLesion)
	}
	if !(r.MinLesionFraction >= 0 && r.MinLesionFraction <= 1) {
		return bad("min_lesion_fraction %g outside [0, 1]", r.MinLesionFraction)
	}
	if !(r.MinLungFraction >= 0 && r.MinLungFraction <= 1) {
		return bad("min_lung_fraction %g outside [0, 1]", r.MinLungFraction)
	}
	if r.SliceStride < 0 || r.SliceStride > 1000 {
		return bad("slice_stride %d outside 0..1000", r.SliceStride)
	}
	if err := r.SlicePrep().Validate(); err != nil {
		return bad("%w", err)
	}
	if err := r.Train.Validate("train"); err != nil {
		return err
	}
	for _, d := range []struct {
		what string
		src  DataSource
	}{{"val", r.Val}, {"test", r.Test}} {
		if !d.src.IsZero() {
			if err := d.src.Validate(d.what); err != nil {
				return err
			}
		}
	}
	if !(r.ValFraction >= 0 && r.ValFraction < 1) {
		return bad("val_fraction %g outside [0, 1)", r.ValFraction)
	}
	if err := r.common().validate(); err != nil {
		return bad("%w", err)
	}
	return nil
}
