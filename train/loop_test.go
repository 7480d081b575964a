package train

import (
	"context"
	"encoding/json"
	"errors"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// A run cancelled in the middle of epoch 2 and resumed ends with exactly
// the weights, optimizer state, EMA and history of an uninterrupted run.
func TestResumeAfterCrashMatchesUninterrupted(t *testing.T) {
	ctx := context.Background()
	ra := phantomRecipe(t)
	resA, err := Run(ctx, ra, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resA.History) != 3 || resA.TrainScans != 9 || resA.ValScans != 3 {
		t.Fatalf("uninterrupted run: %d epochs, %d train, %d val scans; want 3, 9, 3", len(resA.History), resA.TrainScans, resA.ValScans)
	}

	// Second run: crash (cancel) after the first batch of epoch 2.
	rb := phantomRecipe(t)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err = Run(cctx, rb, Options{OnBatch: func(epoch, b, _ int) {
		if epoch == 2 && b == 1 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run returned %v, want context.Canceled", err)
	}
	st, _, err := readStateMeta(filepath.Join(rb.Out, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Epoch != 1 || st.Step != 3 {
		t.Fatalf("state after the crash: epoch %d step %d, want 1 and 3", st.Epoch, st.Step)
	}
	// Starting over without Resume must not clobber the run.
	if _, err := Run(ctx, rb, Options{}); err == nil || !strings.Contains(err.Error(), "already holds a run") {
		t.Fatalf("rerun without resume: %v, want an 'already holds a run' error", err)
	}
	// A recipe that changes results is refused on resume.
	bad := rb
	bad.LR = 0.02
	if _, err := Run(ctx, bad, Options{Resume: true}); err == nil || !strings.Contains(err.Error(), "lr") {
		t.Fatalf("resume with another lr: %v, want an error naming lr", err)
	}
	// Resume with another worker count and caching: same results.
	rb.Workers, rb.Cache = 1, true
	resB, err := Run(ctx, rb, Options{Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if resB.ResumedAt != 1 || len(resB.History) != 3 {
		t.Fatalf("resumed run: resumed at %d with %d epochs, want 1 and 3", resB.ResumedAt, len(resB.History))
	}
	for _, f := range []string{LastFile, BestFile, StateFile} {
		a, _ := readTensors(t, filepath.Join(ra.Out, f))
		b, _ := readTensors(t, filepath.Join(rb.Out, f))
		sameBits(t, f, a, b)
	}
	for i := range resA.History {
		ha, hb := resA.History[i], resB.History[i]
		ha.Seconds, hb.Seconds, ha.ScansPerSecond, hb.ScansPerSecond = 0, 0, 0, 0
		if !reflect.DeepEqual(ha, hb) {
			t.Fatalf("epoch %d: uninterrupted %+v, resumed %+v", i+1, ha, hb)
		}
	}
	if resA.BestEpoch != resB.BestEpoch {
		t.Fatalf("best epoch %d vs %d", resA.BestEpoch, resB.BestEpoch)
	}
	// With EMA on, the saved model is the moving average, not the raw weights.
	state, _ := readTensors(t, filepath.Join(ra.Out, StateFile))
	last, lastMeta := readTensors(t, filepath.Join(ra.Out, LastFile))
	emaW, rawW := map[string][]float32{}, map[string][]float32{}
	for k, v := range state {
		if strings.HasPrefix(k, prefixEMA) {
			emaW[strings.TrimPrefix(k, prefixEMA)] = v
		}
		if strings.HasPrefix(k, prefixModel) {
			rawW[strings.TrimPrefix(k, prefixModel)] = v
		}
	}
	sameBits(t, "last checkpoint vs EMA averages", last, emaW)
	if lastMeta[MetaWeights] != "ema" || reflect.DeepEqual(rawW["fc.weight"], last["fc.weight"]) {
		t.Fatalf("last checkpoint holds %s weights; fc.weight equal to the raw one: %v", lastMeta[MetaWeights], reflect.DeepEqual(rawW["fc.weight"], last["fc.weight"]))
	}
	// The log of the resumed run holds each epoch once.
	logB, err := ReadLog(filepath.Join(rb.Out, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(logB) != 3 || logB[0].Epoch != 1 || logB[2].Epoch != 3 {
		t.Fatalf("resumed log has epochs %v, want 1 2 3", logB)
	}

	// Training changed the weights (the comparison above is not vacuous).
	init, err := net3d.Build(net3d.Spec{Arch: tinyArch, InChannels: 1, Classes: 3}, ra.Seed)
	if err != nil {
		t.Fatal(err)
	}
	trained, _ := readTensors(t, filepath.Join(ra.Out, StateFile))
	w0 := nn.StateDict(init)[0]
	w1 := trained[prefixModel+w0.Name]
	if reflect.DeepEqual(w0.Tensor.Data(), w1) {
		t.Fatalf("%s unchanged by training", w0.Name)
	}

	// Learning rates follow the warmup + cosine schedule, worked by hand:
	// 3 steps per epoch, warmup 3 steps, 9 in all; the last step of epoch
	// 1 is step 2 (lr·3/3), of epoch 2 step 5 (lr·(1+cos(π·2/6))/2), of
	// epoch 3 step 8 (lr·(1+cos(π·5/6))/2).
	want := []float64{0.01, 0.01 * 0.75, 0.01 * (1 - math.Sqrt(3)/2) / 2}
	for i, h := range resA.History {
		if math.Abs(h.LR-want[i]) > 1e-12 || h.Steps != 3 {
			t.Errorf("epoch %d: lr %.12g over %d steps, want %.12g over 3", i+1, h.LR, h.Steps, want[i])
		}
	}
}

// A phantom run produces checkpoints, log and curves; the best checkpoint
// reloads with net3d.LoadCheckpoint and, with its stored preprocessing,
// scores a scan deterministically and as the validation pass did.
func TestEndToEndPhantoms(t *testing.T) {
	r := phantomRecipe(t)
	r.Epochs = 2
	r.MixupAlpha, r.EMADecay = 0, 0
	r.Optimizer, r.Momentum = "sgd", 0.9
	r.Cache = true
	r.Test = DataSource{Phantoms: 3, PhantomSeed: 99, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 8}
	res, err := Run(context.Background(), r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{BestFile, LastFile, StateFile, LogFile, CurvesFile, RecipeFile} {
		if fi, err := os.Stat(filepath.Join(r.Out, f)); err != nil || fi.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	// Log: a dataset line, one line per epoch with the fields filled, a test line.
	b, err := os.ReadFile(filepath.Join(r.Out, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := jsonLines(b)
	if len(lines) != 4 || !strings.Contains(string(lines[3]), `"event":"test"`) {
		t.Fatalf("log has %d lines, want 4 ending with the test line:\n%s", len(lines), b)
	}
	var ds datasetRecord
	if err := json.Unmarshal(lines[0], &ds); err != nil || ds.Event != "dataset" || ds.Train != 9 || ds.Val != 3 {
		t.Fatalf("dataset line %s (%v)", lines[0], err)
	}
	// A 25 % split of 4 phantoms per class holds out one per class.
	if !reflect.DeepEqual(ds.ValPerClass, []int{1, 1, 1}) || !reflect.DeepEqual(ds.TrainPerClass, []int{3, 3, 3}) {
		t.Fatalf("split per class: train %v val %v, want [3 3 3] and [1 1 1]", ds.TrainPerClass, ds.ValPerClass)
	}
	for i, l := range lines[1:3] {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"event", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "scans_per_s"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("epoch line %d lacks %q: %s", i+1, k, l)
			}
		}
	}
	// Curves: a PNG.
	f, err := os.Open(filepath.Join(r.Out, CurvesFile))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil || img.Bounds().Dx() < 100 || img.Bounds().Dy() < 100 {
		t.Fatalf("curves PNG: %v %v", err, img)
	}

	// Reload the best checkpoint.
	model, meta, err := net3d.LoadCheckpoint(res.Best)
	if err != nil {
		t.Fatal(err)
	}
	pre, err := PreprocessingFromMeta(meta)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pre.Pipeline, r.Pipeline) || pre.Input != r.Input || pre.Channels != 1 ||
		!reflect.DeepEqual(pre.Classes, volume.PhantomClassNames) {
		t.Fatalf("stored preprocessing %+v differs from the recipe's", pre)
	}
	if meta[MetaEpoch] != itoa(res.BestEpoch) {
		t.Fatalf("best checkpoint epoch %q, best epoch %d", meta[MetaEpoch], res.BestEpoch)
	}
	nn.SetTraining(model, false)
	nn.SetRequiresGrad(model, false)
	score := func(v *volume.Volume) []float32 {
		x, err := pre.Tensor(v)
		if err != nil {
			t.Fatal(err)
		}
		var p *tensor.Tensor
		if err := tensor.Catch(func() { p = tensor.Softmax(net3d.Forward(model, x), 1) }); err != nil {
			t.Fatal(err)
		}
		return p.Data()
	}
	// Score each validation and test phantom (regenerated independently of
	// the run's loader and cache from its options) twice; compare with the
	// run's evaluation passes.
	byName := map[string]scanItem{}
	for _, src := range []DataSource{r.Train, r.Test} {
		ds, err := openSource(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range ds.items {
			byName[it.name] = it
		}
	}
	if len(byName) != 15 {
		t.Fatalf("%d distinct scan names for 12 training and 3 test phantoms", len(byName))
	}
	if res.Val == nil || len(res.Val.Names) != 3 || res.Test == nil || len(res.Test.Names) != 3 {
		t.Fatalf("validation result %+v, test result %+v", res.Val, res.Test)
	}
	for _, er := range []*EvalResult{res.Val, res.Test} {
		for i, name := range er.Names {
			p, err := volume.NewPhantom(*byName[name].phantom)
			if err != nil {
				t.Fatal(err)
			}
			a, b := score(p.CT), score(p.CT)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%s: scoring twice gave %v and %v", name, a, b)
			}
			var sum float64
			for c, v := range a {
				sum += float64(v)
				if d := math.Abs(float64(v) - er.Probs[i][c]); d > 1e-5 {
					t.Fatalf("%s class %d: scored %v, evaluation pass %v", name, c, v, er.Probs[i][c])
				}
			}
			if math.Abs(sum-1) > 1e-5 {
				t.Fatalf("%s: probabilities sum to %v", name, sum)
			}
		}
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// The loop learns: on six phantoms without augmentation, 25 epochs of two
// steps bring the training loss from about the chance level of three
// classes (ln 3 ≈ 1.0986) to well below it.
func TestTrainingLossFalls(t *testing.T) {
	r := phantomRecipe(t)
	r.Train = DataSource{Phantoms: 6, PhantomSeed: 5, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 8}
	r.Pipeline = volume.Pipeline{{Op: "window", Center: -300, Width: 1800}, {Op: "sample_slices", N: 8, Mode: "symmetric"},
		{Op: "resize", Cols: 16, Rows: 16}, {Op: "normalize", Method: "zscore"}}
	r.Epochs, r.BatchSize, r.ValFraction, r.Cache = 25, 3, 0, true
	r.MixupAlpha, r.EMADecay, r.LabelSmoothing, r.BalanceClasses, r.ClipNorm, r.WeightDecay = 0, 0, 0, false, 0, 0
	r.LR, r.Schedule, r.WarmupEpochs = 0.05, "constant", 0
	res, err := Run(context.Background(), r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first, last := res.History[0].TrainLoss, res.History[len(res.History)-1].TrainLoss
	t.Logf("loss %.3f → %.3f", first, last)
	if first < 0.9 || last > 0.6 {
		t.Fatalf("training loss %.3f → %.3f; want it to start near ln 3 and fall below 0.6", first, last)
	}
}
