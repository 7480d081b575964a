package train

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"gonum.org/v1/gonum/stat/distuv"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// Options controls how Run runs, without changing its results.
type Options struct {
	// Resume continues the run whose state is in the output folder (its
	// recipe must match, except Workers, Cache and Out); without a state
	// there, the run starts afresh. Without Resume, an output folder that
	// holds a state is an error.
	Resume bool
	// Progress receives progress bars (nil: none).
	Progress io.Writer
	// OnBatch, when set, is called after every optimizer step with the
	// 1-based epoch, the 1-based batch and the number of batches of the epoch.
	OnBatch func(epoch, batch, batches int)
}

// EpochRecord is one epoch of training, as logged (one line of LogFile).
type EpochRecord struct {
	Event string `json:"event"` // "epoch"
	Epoch int    `json:"epoch"` // 1-based
	// TrainLoss is the mean training loss over the epoch's batches,
	// weighted by batch size (with label smoothing, class weights and
	// mixup as configured); TrainAcc the fraction of training scans whose
	// argmax matched the label (with mixup, λ-weighted over both labels).
	TrainLoss float64 `json:"train_loss"`
	TrainAcc  float64 `json:"train_acc"`
	// GuidanceLoss is the mean lesion-guidance term (before its weight is
	// applied; part of TrainLoss), present with Recipe.LesionGuidance.
	GuidanceLoss *float64 `json:"guidance_loss,omitempty"`
	// ValLoss (mean plain cross-entropy) and ValAcc are on the validation
	// split, with the evaluated weights (EMA when enabled); absent without
	// a validation split.
	ValLoss *float64 `json:"val_loss,omitempty"`
	ValAcc  *float64 `json:"val_acc,omitempty"`
	// ValF1 and ValAUC are the macro F1 and macro one-vs-rest ROC AUC on
	// the validation split (ComputeMetrics); ValAUC is absent when no
	// class's AUC is defined.
	ValF1  *float64 `json:"val_macro_f1,omitempty"`
	ValAUC *float64 `json:"val_macro_auc,omitempty"`
	// LR is the learning rate of the epoch's last step; GradNorm the mean
	// global gradient norm before clipping.
	LR       float64 `json:"lr"`
	GradNorm float64 `json:"grad_norm"`
	Steps    int     `json:"steps"`
	// Seconds is the wall time of the epoch (training and validation);
	// ScansPerSecond the training throughput.
	Seconds        float64 `json:"seconds"`
	ScansPerSecond float64 `json:"scans_per_s"`
	// Best reports that this epoch improved on every earlier one and was
	// written to BestFile.
	Best bool `json:"best"`
}

// datasetRecord is the first line of LogFile.
type datasetRecord struct {
	Event         string        `json:"event"` // "dataset"
	Classes       []string      `json:"classes"`
	Train         int           `json:"train_scans"`
	Val           int           `json:"val_scans"`
	Test          int           `json:"test_scans"`
	TrainPerClass []int         `json:"train_per_class"`
	ValPerClass   []int         `json:"val_per_class"`
	Parameters    int           `json:"parameters"`
	Skipped       []SkippedScan `json:"skipped"`
}

// testRecord is the last line of LogFile when a test set is given.
type testRecord struct {
	Event    string  `json:"event"` // "test"
	Epoch    int     `json:"epoch"` // the best epoch, whose weights were tested
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
	Scans    int     `json:"scans"`
}

// EvalResult is a model's output on an evaluation split.
type EvalResult struct {
	// Loss is the mean cross-entropy (no smoothing, no class weights) and
	// Accuracy the fraction of scans whose most probable class is the label.
	Loss     float64
	Accuracy float64
	// Names, Labels and Probs hold, per scan, its name, its label and its
	// softmax probabilities by class.
	Names  []string
	Labels []int
	Probs  [][]float64
}

// Result describes a finished run.
type Result struct {
	Classes []string
	// TrainScans, ValScans and TestScans count the readable scans of each split.
	TrainScans, ValScans, TestScans int
	// Skipped lists scans left out (unlisted, unreadable, or failing the
	// pipeline) with the reason.
	Skipped []SkippedScan
	// History holds every epoch, including those of a resumed run's
	// earlier sessions; ResumedAt is the number of epochs already done
	// when this session started.
	History   []EpochRecord
	ResumedAt int
	// BestEpoch is the epoch saved as BestFile.
	BestEpoch int
	// Dir is the output folder; Best and Last the model checkpoints.
	Dir, Best, Last string
	// Val is the best model on the validation split (nil without one);
	// Test the best model on the test set (nil without one).
	Val, Test *EvalResult
	// TestReport is the report of Test (nil without a test set), written
	// to TestReportMD, TestReportFile, TestROCFile and TestPredictionsFile.
	TestReport *Report
}

// trainer holds a run in progress.
type trainer struct {
	r        Recipe
	o        Options
	pipeline volume.Pipeline
	classes  []string
	items    []scanItem // training source; val items when split from it
	trainIdx []int
	valItems []scanItem
	valIdx   []int
	prep     *preparer
	model    net3d.Classifier
	params   []nn.Named
	opt      nn.Optimizer
	ema      *nn.EMA
	sched    nn.Schedule
	ce       tensor.CEOpts
	// lesionClass marks the classes with a lesion in some training scan
	// (set with lesion guidance).
	lesionClass []bool
	guide       float64 // the last step's lesion-guidance term
	st          trainState
	dsRec       datasetRecord
	testRec     *testRecord
}

// Run trains a model as r describes and writes its output folder (see the
// package documentation and StateFile, BestFile, LastFile, LogFile,
// CurvesFile, RecipeFile). Cancelling ctx stops it between steps with
// ctx's error; the state of the last completed epoch stays on disk for
// Options.Resume.
func Run(ctx context.Context, r Recipe, o Options) (*Result, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	pl, err := r.EffectivePipeline()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(r.Out, 0o755); err != nil {
		return nil, fmt.Errorf("train: output folder: %w", err)
	}
	t := &trainer{r: r, o: o, pipeline: pl}
	statePath := filepath.Join(r.Out, StateFile)
	var saved []nn.Named
	resuming := exists(statePath)
	if resuming {
		if !o.Resume {
			return nil, fmt.Errorf("train: %s already holds a run (%s): resume it or choose another output folder", r.Out, StateFile)
		}
		t.st, saved, err = readStateMeta(statePath)
		if err != nil {
			return nil, err
		}
		if why := sameRun(t.st.Recipe, r); why != "" {
			return nil, fmt.Errorf("train: resume %s: the recipe differs from the saved run's: %s", r.Out, why)
		}
	}
	if err := t.listData(); err != nil {
		return nil, err
	}
	if resuming && strings.Join(t.st.Classes, "\x00") != strings.Join(t.classes, "\x00") {
		return nil, fmt.Errorf("train: resume %s: the data's classes [%s] differ from the saved run's [%s]", r.Out, strings.Join(t.classes, ", "), strings.Join(t.st.Classes, ", "))
	}
	// The model is built (and a resumed state restored) before the scans
	// are read, so that a bad model config or state fails fast.
	if err := t.buildModel(); err != nil {
		return nil, err
	}
	if resuming {
		if err := restoreState(statePath, t.st, saved, t.model, t.opt, t.ema); err != nil {
			return nil, err
		}
	}
	if err := t.checkData(ctx); err != nil {
		return nil, err
	}
	if err := t.buildLoss(); err != nil {
		return nil, err
	}
	if !resuming {
		t.st = trainState{Classes: t.classes, Recipe: r}
		rj, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("train: recipe: %w", err)
		}
		if err := writeFileAtomic(filepath.Join(r.Out, RecipeFile), append(rj, '\n')); err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
	}
	res := &Result{
		Classes: t.classes, TrainScans: len(t.trainIdx), ValScans: len(t.valIdx),
		Skipped: t.dsRec.Skipped, ResumedAt: t.st.Epoch, Dir: r.Out,
		Best: filepath.Join(r.Out, BestFile), Last: filepath.Join(r.Out, LastFile),
	}
	if err := t.writeLog(); err != nil {
		return nil, err
	}
	for epoch := t.st.Epoch + 1; epoch <= r.Epochs; epoch++ {
		if err := t.epoch(ctx, epoch); err != nil {
			return nil, err
		}
	}
	res.History, res.BestEpoch = t.st.History, t.st.BestEpoch

	// Final evaluations use the best epoch's weights.
	if _, err := nn.Load(res.Best, t.model, nn.LoadOpts{Strict: true}); err != nil {
		return nil, fmt.Errorf("train: reload best model: %w", err)
	}
	if len(t.valIdx) > 0 {
		v, err := t.evaluate(ctx, t.valItems, t.valIdx, false, "validation")
		if err != nil {
			return nil, err
		}
		res.Val = &v
	}
	if !r.Test.IsZero() {
		tr, n, err := t.test(ctx)
		if err != nil {
			return nil, err
		}
		res.Test, res.TestScans = tr, n
		res.Skipped = t.dsRec.Skipped
		t.testRec = &testRecord{Event: "test", Epoch: t.st.BestEpoch, Loss: tr.Loss, Accuracy: tr.Accuracy, Scans: n}
		rep, err := t.writeTestReport(tr)
		if err != nil {
			return nil, err
		}
		res.TestReport = &rep
		if err := t.writeLog(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// listData lists and splits the training and validation scans (nothing
// is read yet) and settles the number of classes.
func (t *trainer) listData() error {
	r := t.r
	ds, err := openSource(r.Train)
	if err != nil {
		return err
	}
	t.classes = ds.classes
	t.dsRec.Skipped = append([]SkippedScan{}, ds.skipped...)
	var trainIdx, valIdx []int
	t.items = ds.items
	if !r.Val.IsZero() {
		vs, err := openSource(r.Val)
		if err != nil {
			return err
		}
		if err := vs.relabel(t.classes, "validation"); err != nil {
			return err
		}
		t.dsRec.Skipped = append(t.dsRec.Skipped, vs.skipped...)
		t.valItems = vs.items
		for i := range ds.items {
			trainIdx = append(trainIdx, i)
		}
		for i := range vs.items {
			valIdx = append(valIdx, i)
		}
	} else {
		trainIdx, valIdx = splitVal(ds.items, r.ValFraction, r.Seed)
		t.valItems = ds.items
	}
	t.trainIdx, t.valIdx = trainIdx, valIdx
	if t.r.Model.Classes == 0 {
		t.r.Model.Classes = len(t.classes)
	} else if t.r.Model.Classes != len(t.classes) {
		return fmt.Errorf("train: recipe model.classes %d, but the training data has %d classes (%s)", t.r.Model.Classes, len(t.classes), strings.Join(t.classes, ", "))
	}
	if n := len(r.ClassWeights); n > 0 && n != len(t.classes) {
		return fmt.Errorf("train: recipe: %d class_weights for %d classes (%s)", n, len(t.classes), strings.Join(t.classes, ", "))
	}
	return nil
}

// checkData loads and preprocesses every listed scan once (in parallel),
// keeping the readable ones and listing the others with their reasons.
func (t *trainer) checkData(ctx context.Context) error {
	r := t.r
	t.prep = newPreparer(t.pipeline, r.Input, r.Model.InChannels, r.workers(), r.Cache)
	t.prep.lesions = r.LesionGuidance > 0
	bar := newBar(t.o.Progress, len(t.trainIdx)+len(t.valIdx), "checking scans")
	tick := func() { barAdd(bar) }
	okTrain, bad, err := t.prep.check(ctx, t.items, t.trainIdx, true, tick)
	if err != nil {
		return err
	}
	skipped := append(t.dsRec.Skipped, bad...)
	okVal, bad, err := t.prep.check(ctx, t.valItems, t.valIdx, false, tick)
	if err != nil {
		return err
	}
	barFinish(bar)
	skipped = append(skipped, bad...)
	if len(okTrain) == 0 {
		return fmt.Errorf("train: %s: no readable training scan (%d skipped; first: %s: %s)", r.Train, len(skipped), firstPath(skipped), firstReason(skipped))
	}
	t.trainIdx, t.valIdx = okTrain, okVal
	if r.LesionGuidance > 0 {
		t.lesionClass = make([]bool, len(t.classes))
		found := false
		for _, i := range okTrain {
			if t.prep.hasLesion[i] {
				t.lesionClass[t.items[i].label], found = true, true
			}
		}
		if !found {
			return fmt.Errorf("train: lesion_guidance: none of the %d training scans of %s has a lesion in its mask", len(okTrain), r.Train)
		}
	}
	t.dsRec.Event, t.dsRec.Classes = "dataset", t.classes
	t.dsRec.Train, t.dsRec.Val = len(okTrain), len(okVal)
	t.dsRec.TrainPerClass = labelCounts(t.items, okTrain, len(t.classes))
	t.dsRec.ValPerClass = labelCounts(t.valItems, okVal, len(t.classes))
	t.dsRec.Skipped = skipped
	return nil
}

func firstPath(s []SkippedScan) string {
	if len(s) == 0 {
		return "-"
	}
	return s[0].Path
}

func firstReason(s []SkippedScan) string {
	if len(s) == 0 {
		return "-"
	}
	return s[0].Reason
}

// buildModel constructs the model (weights drawn from the seed), the
// optimizer and the EMA.
func (t *trainer) buildModel() error {
	r := t.r
	model, err := net3d.Build(r.Model, r.Seed)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	t.model = model
	t.dsRec.Parameters = nn.NumParams(model)
	t.params = nn.NamedParameters(model)
	var noDecay nn.DecayFilter
	if !r.DecayAll {
		noDecay = nn.SkipOneDim
	}
	switch r.Optimizer {
	case "sgd":
		t.opt, err = nn.NewSGD(t.params, nn.SGDConfig{LR: r.LR, Momentum: r.Momentum, Nesterov: r.Nesterov, WeightDecay: r.WeightDecay, NoDecay: noDecay})
	case "adam":
		t.opt, err = nn.NewAdam(t.params, nn.AdamConfig{LR: r.LR, Beta1: r.Beta1, Beta2: r.Beta2, WeightDecay: r.WeightDecay, NoDecay: noDecay})
	case "adamw":
		t.opt, err = nn.NewAdamW(t.params, nn.AdamConfig{LR: r.LR, Beta1: r.Beta1, Beta2: r.Beta2, WeightDecay: r.WeightDecay, NoDecay: noDecay})
	}
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if r.EMADecay > 0 {
		t.ema = nn.NewEMA(model, r.EMADecay, nn.EMAOpts{Warmup: true})
	}
	return nil
}

// buildLoss sets the loss options (label smoothing, class weights) and
// the learning-rate schedule, which depend on the readable training scans.
func (t *trainer) buildLoss() error {
	r := t.r
	spe := t.stepsPerEpoch()
	total := r.Epochs * spe
	switch r.Schedule {
	case "cosine":
		t.sched = nn.WarmupCosineLR(r.LR, r.MinLR, int(math.Round(r.WarmupEpochs*float64(spe))), total)
	case "step":
		t.sched = nn.StepLR(r.LR, r.Gamma, r.StepEpochs*spe)
	default:
		t.sched = nn.ConstantLR(r.LR)
	}
	k := len(t.classes)
	t.ce = tensor.CEOpts{LabelSmoothing: float32(r.LabelSmoothing)}
	switch {
	case len(r.ClassWeights) == k:
		for _, w := range r.ClassWeights {
			t.ce.Weight = append(t.ce.Weight, float32(w))
		}
	case r.BalanceClasses:
		counts := labelCounts(t.items, t.trainIdx, k)
		for _, c := range counts {
			w := 0.0
			if c > 0 {
				w = float64(len(t.trainIdx)) / float64(k*c)
			}
			t.ce.Weight = append(t.ce.Weight, float32(w))
		}
	}
	return nil
}

// epochScans is the number of training scans an epoch uses: all of them,
// except that a last batch of a single scan is left out (BatchNorm cannot
// train on a batch with one value per channel, which a single scan gives
// once the network has pooled it to 1×1×1); the shuffle changes which scan
// that is every epoch.
func (t *trainer) epochScans() int {
	n := len(t.trainIdx)
	if n > 1 && t.r.BatchSize > 1 && n%t.r.BatchSize == 1 {
		n--
	}
	return n
}

// stepsPerEpoch is the number of optimizer steps of an epoch.
func (t *trainer) stepsPerEpoch() int {
	return (t.epochScans() + t.r.BatchSize - 1) / t.r.BatchSize
}

// Reseeder is implemented by modules that draw random numbers from a
// generator of their own other than nn.Dropout's and nn.StochasticDepth's
// Rng (which Run replaces itself). At the start of every epoch Run calls
// Reseed on each such module of the model with a generator derived from
// (Recipe.Seed, epoch, the module's position), so that an epoch's random
// draws do not depend on earlier epochs and a resumed run is exact.
type Reseeder interface {
	Reseed(rng *rand.Rand)
}

// reseedRandomLayers gives every dropout and stochastic-depth layer of m,
// and every Reseeder, a generator seeded from (seed, epoch, module index).
func reseedRandomLayers(m nn.Module, seed uint64, epoch int) {
	for i, nm := range nn.NamedModules(m) {
		if rs, ok := nm.Module.(Reseeder); ok {
			rs.Reseed(newRand(seed, streamDropout, uint64(epoch), uint64(i)))
			continue
		}
		switch l := nm.Module.(type) {
		case *nn.Dropout:
			if l.Rng != nil {
				l.Rng = newRand(seed, streamDropout, uint64(epoch), uint64(i))
			}
		case *nn.StochasticDepth:
			if l.Rng != nil {
				l.Rng = newRand(seed, streamDropout, uint64(epoch), uint64(i))
			}
		}
	}
}

// epoch trains and evaluates one epoch and writes its checkpoints and log.
func (t *trainer) epoch(ctx context.Context, epoch int) error {
	r := t.r
	start := time.Now()
	rec, err := t.trainEpoch(ctx, epoch)
	if err != nil {
		return err
	}
	rec.ScansPerSecond = float64(t.epochScans()) / time.Since(start).Seconds()
	improved := true
	if len(t.valIdx) > 0 {
		v, err := t.evaluate(ctx, t.valItems, t.valIdx, true, fmt.Sprintf("epoch %d/%d validation", epoch, r.Epochs))
		if err != nil {
			return err
		}
		rec.ValLoss, rec.ValAcc = &v.Loss, &v.Accuracy
		rec.ValF1, rec.ValAUC = valSummary(v, t.classes)
		if t.st.BestEpoch > 0 {
			improved = better(r.BestMetric, v.Accuracy, v.Loss, t.st.BestAcc, t.st.BestLoss)
		}
		if improved {
			t.st.BestLoss, t.st.BestAcc = v.Loss, v.Accuracy
		}
	}
	rec.Best = improved
	rec.Seconds = time.Since(start).Seconds()
	if improved {
		t.st.BestEpoch = epoch
		if err := t.saveModel(filepath.Join(r.Out, BestFile), epoch); err != nil {
			return err
		}
	}
	if err := t.saveModel(filepath.Join(r.Out, LastFile), epoch); err != nil {
		return err
	}
	t.st.Epoch = epoch
	t.st.History = append(t.st.History, rec)
	if t.ema != nil {
		t.st.EMAUpdates = t.ema.Updates()
	}
	if err := saveState(filepath.Join(r.Out, StateFile), t.st, t.model, t.opt, t.ema); err != nil {
		return err
	}
	if t.o.Progress != nil {
		fmt.Fprintln(t.o.Progress, formatEpoch(rec, r.Epochs))
	}
	return t.writeLog()
}

// better reports whether validation accuracy acc and loss improve on the
// best so far: by accuracy, ties to the lower loss ("val_acc"), or by loss
// alone ("val_loss").
func better(metric string, acc, loss, bestAcc, bestLoss float64) bool {
	if metric == "val_loss" {
		return loss < bestLoss
	}
	return acc > bestAcc || (acc == bestAcc && loss < bestLoss)
}

// formatEpoch is the one-line summary of an epoch.
func formatEpoch(rec EpochRecord, epochs int) string {
	s := fmt.Sprintf("epoch %d/%d: train loss %.4f acc %.3f", rec.Epoch, epochs, rec.TrainLoss, rec.TrainAcc)
	if rec.ValLoss != nil {
		s += fmt.Sprintf(", val loss %.4f acc %.3f", *rec.ValLoss, *rec.ValAcc)
		if rec.ValF1 != nil {
			s += fmt.Sprintf(" macro F1 %.3f", *rec.ValF1)
		}
		if rec.ValAUC != nil {
			s += fmt.Sprintf(" AUC %.4f", *rec.ValAUC)
		}
	}
	s += fmt.Sprintf(", lr %.3g, %.1f scans/s, %.1fs", rec.LR, rec.ScansPerSecond, rec.Seconds)
	if rec.Best {
		s += " (best)"
	}
	return s
}

// trainEpoch runs the optimizer steps of one epoch.
func (t *trainer) trainEpoch(ctx context.Context, epoch int) (EpochRecord, error) {
	r := t.r
	rec := EpochRecord{Event: "epoch", Epoch: epoch}
	nn.SetTraining(t.model, true)
	reseedRandomLayers(t.model, r.Seed, epoch)
	order := append([]int(nil), t.trainIdx...)
	newRand(r.Seed, streamShuffle, uint64(epoch)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	order = order[:t.epochScans()]
	mix := newRand(r.Seed, streamMixup, uint64(epoch))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := t.prep.batches(ctx, t.items, order, r.BatchSize, func(item int) *rand.Rand {
		return newRand(r.Seed, streamAugment, uint64(epoch), uint64(item))
	})
	nb := t.stepsPerEpoch()
	bar := newBar(t.o.Progress, nb, fmt.Sprintf("epoch %d/%d", epoch, r.Epochs))
	defer barFinish(bar)
	start := time.Now()
	var lossSum, guideSum, correct, gnSum float64
	seen := 0
	for b := 0; b < nb; b++ {
		var bt batch
		var ok bool
		select {
		case bt, ok = <-batches:
		case <-ctx.Done():
			return rec, ctx.Err()
		}
		if !ok {
			if err := ctx.Err(); err != nil {
				return rec, err
			}
			return rec, fmt.Errorf("train: epoch %d: data loader stopped after %d of %d batches", epoch, b, nb)
		}
		if bt.err != nil {
			return rec, fmt.Errorf("train: epoch %d: %w", epoch, bt.err)
		}
		if err := ctx.Err(); err != nil {
			return rec, err
		}
		lr := t.sched(t.st.Step)
		loss, c, gn, err := t.step(bt, mix, lr)
		if err != nil {
			return rec, fmt.Errorf("train: epoch %d batch %d: %w", epoch, b+1, err)
		}
		t.st.Step++
		n := len(bt.labels)
		seen += n
		lossSum += loss * float64(n)
		guideSum += t.guide * float64(n)
		correct += c
		gnSum += gn
		rec.LR = lr
		rec.Steps++
		if bar != nil {
			el := time.Since(start).Seconds()
			bar.Describe(fmt.Sprintf("epoch %d/%d loss %.4f acc %.3f %.1f scans/s", epoch, r.Epochs, lossSum/float64(seen), correct/float64(seen), float64(seen)/el))
			barAdd(bar)
		}
		if t.o.OnBatch != nil {
			t.o.OnBatch(epoch, b+1, nb)
		}
	}
	rec.TrainLoss = lossSum / float64(seen)
	if r.LesionGuidance > 0 {
		g := guideSum / float64(seen)
		rec.GuidanceLoss = &g
	}
	rec.TrainAcc = correct / float64(seen)
	rec.GradNorm = gnSum / float64(rec.Steps)
	return rec, nil
}

// step runs one optimizer step on bt at learning rate lr. It returns the
// batch's loss, its number of correct predictions (λ-weighted with mixup)
// and the gradient norm before clipping.
func (t *trainer) step(bt batch, mix *rand.Rand, lr float64) (loss, correct, gradNorm float64, err error) {
	r := t.r
	x, ya := bt.x, bt.labels
	var yb []int
	lam := 1.0
	if r.MixupAlpha > 0 {
		lam = distuv.Beta{Alpha: r.MixupAlpha, Beta: r.MixupAlpha, Src: mix}.Rand()
		perm := mix.Perm(len(ya))
		x, yb = mixBatch(x, ya, perm, lam)
	}
	t.opt.SetLR(lr)
	var pred []int
	err = tensor.Catch(func() {
		t.opt.ZeroGrad()
		f := t.model.Features(x, nil)
		logits := t.model.Head(f)
		l := tensor.CrossEntropy(logits, ya, t.ce)
		if yb != nil {
			l = tensor.Add(tensor.MulScalar(l, float32(lam)), tensor.MulScalar(tensor.CrossEntropy(logits, yb, t.ce), float32(1-lam)))
		}
		if r.LesionGuidance > 0 {
			g, gerr := guidanceLoss(f, t.model.Linear(), bt.masks, ya, r.Input, t.lesionClass)
			if gerr != nil {
				panic(&tensor.ShapeError{Op: "train", Msg: gerr.Error()})
			}
			t.guide = float64(g.Item())
			l = tensor.Add(l, tensor.MulScalar(g, float32(r.LesionGuidance)))
		}
		l.Backward()
		loss = float64(l.Item())
		pred = tensor.Argmax(logits, 1)
	})
	if err != nil {
		return 0, 0, 0, err
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, 0, 0, fmt.Errorf("loss is %g (lower the learning rate, or set clip_norm)", loss)
	}
	maxNorm := math.Inf(1)
	if r.ClipNorm > 0 {
		maxNorm = r.ClipNorm
	}
	gradNorm = nn.ClipGradNorm(t.params, maxNorm)
	t.opt.Step()
	t.opt.ZeroGrad()
	if t.ema != nil {
		t.ema.Update()
	}
	for i, p := range pred {
		if p == ya[i] {
			correct += lam
		}
		if yb != nil && p == yb[i] {
			correct += 1 - lam
		}
	}
	return loss, correct, gradNorm, nil
}

// mixBatch returns λ·x + (1−λ)·x[perm] (along the batch axis) and the
// permuted labels.
func mixBatch(x *tensor.Tensor, labels []int, perm []int, lam float64) (*tensor.Tensor, []int) {
	n := len(labels)
	d := x.Data()
	per := len(d) / n
	out := make([]float32, len(d))
	a, b := float32(lam), float32(1-lam)
	yb := make([]int, n)
	for i, j := range perm {
		yb[i] = labels[j]
		xi, xj, oi := d[i*per:(i+1)*per], d[j*per:(j+1)*per], out[i*per:(i+1)*per]
		for k := range oi {
			oi[k] = a*xi[k] + b*xj[k]
		}
	}
	return tensor.New(out, x.Shape()...), yb
}

// evaluate runs the model in evaluation mode (with the EMA averages when
// useEMA and enabled) on items[idx], preprocessed in inference mode.
func (t *trainer) evaluate(ctx context.Context, items []scanItem, idx []int, useEMA bool, what string) (EvalResult, error) {
	res := EvalResult{}
	if len(idx) == 0 {
		return res, nil
	}
	nn.SetTraining(t.model, false)
	nn.SetRequiresGrad(t.model, false)
	defer func() {
		nn.SetRequiresGrad(t.model, true)
		nn.SetTraining(t.model, true)
	}()
	if useEMA && t.ema != nil {
		t.ema.Apply()
		defer t.ema.Restore()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bs := t.r.BatchSize
	nb := (len(idx) + bs - 1) / bs
	batches := t.prep.batches(ctx, items, idx, bs, nil)
	bar := newBar(t.o.Progress, nb, what)
	defer barFinish(bar)
	var lossSum float64
	correct := 0
	for b := 0; b < nb; b++ {
		bt, ok := <-batches
		if !ok {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			return res, fmt.Errorf("train: %s: data loader stopped after %d of %d batches", what, b, nb)
		}
		if bt.err != nil {
			return res, fmt.Errorf("train: %s: %w", what, bt.err)
		}
		var probs *tensor.Tensor
		var l float32
		err := tensor.Catch(func() {
			logits := net3d.Forward(t.model, bt.x)
			l = tensor.CrossEntropy(logits, bt.labels, tensor.CEOpts{Reduction: tensor.ReduceSum}).Item()
			probs = tensor.Softmax(logits, 1)
		})
		if err != nil {
			return res, fmt.Errorf("train: %s: %w", what, err)
		}
		lossSum += float64(l)
		k := probs.Size(1)
		pd := probs.Data()
		for i, it := range bt.items {
			row := make([]float64, k)
			best := 0
			for c := range row {
				row[c] = float64(pd[i*k+c])
				if row[c] > row[best] {
					best = c
				}
			}
			if best == bt.labels[i] {
				correct++
			}
			res.Names = append(res.Names, items[it].name)
			res.Labels = append(res.Labels, bt.labels[i])
			res.Probs = append(res.Probs, row)
		}
		barAdd(bar)
	}
	res.Loss = lossSum / float64(len(idx))
	res.Accuracy = float64(correct) / float64(len(idx))
	return res, nil
}

// test opens, checks and evaluates the test set with the current weights.
func (t *trainer) test(ctx context.Context) (*EvalResult, int, error) {
	ds, err := openSource(t.r.Test)
	if err != nil {
		return nil, 0, err
	}
	if err := ds.relabel(t.classes, "test"); err != nil {
		return nil, 0, err
	}
	t.dsRec.Skipped = append(t.dsRec.Skipped, ds.skipped...)
	all := make([]int, len(ds.items))
	for i := range all {
		all[i] = i
	}
	// The test items get a preparer of their own: cache keys are item
	// indices, which would collide with those of the validation items.
	t.prep = newPreparer(t.pipeline, t.r.Input, t.r.Model.InChannels, t.r.workers(), t.r.Cache)
	bar := newBar(t.o.Progress, len(all), "checking test scans")
	ok, bad, err := t.prep.check(ctx, ds.items, all, false, func() { barAdd(bar) })
	barFinish(bar)
	if err != nil {
		return nil, 0, err
	}
	t.dsRec.Skipped = append(t.dsRec.Skipped, bad...)
	t.dsRec.Test = len(ok)
	if len(ok) == 0 {
		return nil, 0, fmt.Errorf("train: %s: no readable test scan (%d skipped)", t.r.Test, len(bad)+len(ds.skipped))
	}
	res, err := t.evaluate(ctx, ds.items, ok, false, "test")
	if err != nil {
		return nil, 0, err
	}
	return &res, len(ok), nil
}

// saveModel writes the evaluated weights (EMA when enabled) as a model
// checkpoint of epoch.
func (t *trainer) saveModel(path string, epoch int) error {
	weights := "raw"
	if t.ema != nil {
		weights = "ema"
		t.ema.Apply()
		defer t.ema.Restore()
	}
	meta, err := modelMeta(t.r, t.pipeline, t.classes, epoch, weights)
	if err != nil {
		return fmt.Errorf("train: save %s: %w", path, err)
	}
	if err := net3d.SaveCheckpoint(path, t.model, meta); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	return nil
}

// writeLog rewrites LogFile (atomically) from the dataset record, the
// history and the test record, and redraws CurvesFile.
func (t *trainer) writeLog() error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if err := enc.Encode(t.dsRec); err != nil {
		return fmt.Errorf("train: log: %w", err)
	}
	for _, h := range t.st.History {
		if err := enc.Encode(h); err != nil {
			return fmt.Errorf("train: log: %w", err)
		}
	}
	if t.testRec != nil {
		if err := enc.Encode(t.testRec); err != nil {
			return fmt.Errorf("train: log: %w", err)
		}
	}
	if err := writeFileAtomic(filepath.Join(t.r.Out, LogFile), buf.Bytes()); err != nil {
		return fmt.Errorf("train: log: %w", err)
	}
	if len(t.st.History) == 0 {
		return nil
	}
	if err := plotHistory(filepath.Join(t.r.Out, CurvesFile), t.st.History); err != nil {
		return fmt.Errorf("train: curves: %w", err)
	}
	return nil
}

// plotHistory draws the loss and accuracy curves of history (training and,
// when measured, validation) into a PNG at path with PlotCurves.
func plotHistory(path string, history []EpochRecord) error {
	var tl, ta, vl, va []float64
	hasVal := false
	for _, h := range history {
		tl, ta = append(tl, h.TrainLoss), append(ta, h.TrainAcc)
		if h.ValLoss != nil && h.ValAcc != nil {
			vl, va = append(vl, *h.ValLoss), append(va, *h.ValAcc)
			hasVal = true
		} else {
			vl, va = append(vl, math.NaN()), append(va, math.NaN())
		}
	}
	loss := CurvePanel{Title: "Loss", YLabel: "cross-entropy", Series: map[string][]float64{"train": tl}}
	acc := CurvePanel{Title: "Accuracy", YLabel: "fraction correct", Series: map[string][]float64{"train": ta}}
	if hasVal {
		loss.Series["val"], acc.Series["val"] = vl, va
	}
	return PlotCurves(path, loss, acc)
}

// ReadLog reads the epoch records of a LogFile (other lines are skipped).
func ReadLog(path string) ([]EpochRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("train: log: %w", err)
	}
	var out []EpochRecord
	for i, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev struct {
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("train: log %s line %d: %w", path, i+1, err)
		}
		if ev.Event != "epoch" {
			continue
		}
		var rec EpochRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			return nil, fmt.Errorf("train: log %s line %d: %w", path, i+1, err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// newBar returns a progress bar of n steps on w, or nil when w is nil.
func newBar(w io.Writer, n int, desc string) *progressbar.ProgressBar {
	if w == nil {
		return nil
	}
	return progressbar.NewOptions(n,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(24),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

func barAdd(b *progressbar.ProgressBar) {
	if b != nil {
		_ = b.Add(1)
	}
}

func barFinish(b *progressbar.ProgressBar) {
	if b != nil && !b.IsFinished() {
		_ = b.Finish()
	}
}
