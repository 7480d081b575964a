package train

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/volume"
)

func validRecipe() Recipe {
	r := DefaultRecipe()
	r.Model.Arch = tinyArch
	r.Train = DataSource{Phantoms: 6}
	return r
}

func TestParseRecipeKeepsDefaults(t *testing.T) {
	r, err := ParseRecipe([]byte(`{"model": {"arch": "train-test-tiny", "in_channels": 1}, "train": {"phantoms": 6}, "epochs": 3, "label_smoothing": 0.1}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Epochs != 3 || r.LabelSmoothing != 0.1 || r.Train.Phantoms != 6 {
		t.Fatalf("parsed fields: %+v", r)
	}
	// Absent fields keep the documented defaults.
	if r.LR != 1e-3 || r.WeightDecay != 5e-4 || r.Optimizer != "adam" || r.Schedule != "cosine" ||
		r.BatchSize != 8 || r.ValFraction != 0.2 || r.Input != [3]int{32, 128, 128} || r.BestMetric != "val_acc" {
		t.Fatalf("defaults lost: %+v", r)
	}
	if _, err := ParseRecipe([]byte(`{"model": {"arch": "train-test-tiny"}, "train": {"phantoms": 6}, "learning_rate": 0.1}`)); err == nil || !strings.Contains(err.Error(), "learning_rate") {
		t.Fatalf("unknown field: %v", err)
	}
}

func TestRecipeValidate(t *testing.T) {
	if err := validRecipe().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(r *Recipe)
		want string
	}{
		{"unknown arch", func(r *Recipe) { r.Model.Arch = "resnet3d-7" }, `"resnet3d-7"`},
		{"no data", func(r *Recipe) { r.Train = DataSource{} }, "recipe train: set exactly one"},
		{"two sources", func(r *Recipe) { r.Train.Folder = "x" }, "recipe train: set exactly one"},
		{"root without layout", func(r *Recipe) { r.Train = DataSource{Folder: "x", Root: "y"} }, "root"},
		{"input", func(r *Recipe) { r.Input[1] = 0 }, "input[1]"},
		{"epochs", func(r *Recipe) { r.Epochs = 0 }, "epochs 0"},
		{"batch", func(r *Recipe) { r.BatchSize = -1 }, "batch_size -1"},
		{"optimizer", func(r *Recipe) { r.Optimizer = "lamb" }, `optimizer "lamb"`},
		{"lr", func(r *Recipe) { r.LR = 0 }, "lr 0"},
		{"nesterov adam", func(r *Recipe) { r.Nesterov = true }, "nesterov"},
		{"schedule", func(r *Recipe) { r.Schedule = "poly" }, `schedule "poly"`},
		{"warmup", func(r *Recipe) { r.WarmupEpochs = 1000 }, "warmup_epochs"},
		{"warmup step", func(r *Recipe) { r.Schedule, r.WarmupEpochs = "step", 1 }, "warmup_epochs needs"},
		{"min lr", func(r *Recipe) { r.MinLR = 1 }, "min_lr"},
		{"smoothing", func(r *Recipe) { r.LabelSmoothing = 1 }, "label_smoothing 1"},
		{"weights and balance", func(r *Recipe) { r.ClassWeights, r.BalanceClasses = []float64{1, 1, 1}, true }, "exclusive"},
		{"negative weight", func(r *Recipe) { r.ClassWeights = []float64{1, -1, 1} }, "class_weights[1]"},
		{"weight count", func(r *Recipe) { r.Model.Classes, r.ClassWeights = 3, []float64{1, 1} }, "2 class_weights for 3 classes"},
		{"ema", func(r *Recipe) { r.EMADecay = 1 }, "ema_decay 1"},
		{"mixup", func(r *Recipe) { r.MixupAlpha = -1 }, "mixup_alpha"},
		{"val fraction", func(r *Recipe) { r.ValFraction = 1 }, "val_fraction 1"},
		{"best metric", func(r *Recipe) { r.BestMetric = "test_acc" }, `best_metric "test_acc"`},
		{"out", func(r *Recipe) { r.Out = " " }, "out"},
		{"bad pipeline", func(r *Recipe) { r.Pipeline = volume.Pipeline{{Op: "blur"}} }, "pipeline"},
		{"non-square default pipeline", func(r *Recipe) { r.Input = [3]int{8, 16, 32} }, "height 16 ≠ width 32"},
		{"phantom size", func(r *Recipe) { r.Train.PhantomCols = -2 }, "phantom_cols -2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := validRecipe()
			tc.edit(&r)
			err := r.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestEffectivePipeline(t *testing.T) {
	r := validRecipe()
	r.Input = [3]int{8, 48, 48}
	p, err := r.EffectivePipeline()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, volume.CovidNet3DPipeline(48, 8)) {
		t.Fatalf("default pipeline %+v", p)
	}
	r.Pipeline = volume.Pipeline{{Op: "resize", Cols: 48, Rows: 48}}
	if p, _ := r.EffectivePipeline(); !reflect.DeepEqual(p, r.Pipeline) {
		t.Fatalf("given pipeline replaced by %+v", p)
	}
}

// A resumed run may change only the fields that do not change results.
func TestSameRun(t *testing.T) {
	a := validRecipe()
	b := a
	b.Workers, b.Cache, b.Out = 7, true, "elsewhere"
	if why := sameRun(a, b); why != "" {
		t.Fatalf("workers/cache/out reported as a difference: %s", why)
	}
	b.Epochs, b.Seed = 5, 99
	why := sameRun(a, b)
	if !strings.Contains(why, "epochs (saved 100, now 5)") || !strings.Contains(why, "seed (saved 1, now 99)") {
		t.Fatalf("difference reported as %q", why)
	}
}
