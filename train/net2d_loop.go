package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ctlens/ctlens/net2d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// EpochRecord2D is one epoch of a 2D run, as logged (one line of LogFile).
type EpochRecord2D struct {
	Event string `json:"event"` // "epoch"
	Epoch int    `json:"epoch"` // 1-based
	// TrainLoss is the mean training loss over the epoch's slices (the
	// multi-resolution loss when training at several resolutions);
	// TrainAcc the fraction of training slices classified correctly at Size.
	TrainLoss float64 `json:"train_loss"`
	TrainAcc  float64 `json:"train_acc"`
	// ValLoss and ValAcc are the mean cross-entropy and the accuracy over
	// the validation slices at Size; ValScanAcc the accuracy of the scans'
	// aggregated scores (Recipe2D.Aggregation). Absent without validation.
	ValLoss    *float64 `json:"val_loss,omitempty"`
	ValAcc     *float64 `json:"val_acc,omitempty"`
	ValScanAcc *float64 `json:"val_scan_acc,omitempty"`
	// LR is the learning rate of the epoch's last step; GradNorm the mean
	// global gradient norm before clipping.
	LR       float64 `json:"lr"`
	GradNorm float64 `json:"grad_norm"`
	Steps    int     `json:"steps"`
	// Seconds is the epoch's wall time; SlicesPerSecond the training throughput.
	Seconds         float64 `json:"seconds"`
	SlicesPerSecond float64 `json:"slices_per_s"`
	// Best reports that the epoch improved on every earlier one.
	Best bool `json:"best"`
}

// SliceEval is a 2D model's outcome on a SliceSet at one resolution.
type SliceEval struct {
	// Size is the resolution (height = width) the slices were shown at.
	Size int `json:"size"`
	// Loss is the mean cross-entropy (no smoothing) and Accuracy the
	// fraction of correctly classified slices, over Slices slices.
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
	Slices   int     `json:"slices"`
	// ScanAccuracy is the fraction of the Scans scans whose aggregated
	// logits' argmax is the scan's class.
	ScanAccuracy float64 `json:"scan_accuracy"`
	Scans        int     `json:"scans"`
}

// EvalSlicesOptions configures EvaluateSlices.
type EvalSlicesOptions struct {
	// Size is the resolution; 0 means the set's own Size. Slices are resized
	// bilinearly (align_corners false) from the stored size.
	Size int
	// Batch is the number of slices per forward pass (0: 32).
	Batch int
	// Aggregation and TopK turn slice logits into scan logits
	// (net2d.ParseAggregation; "" means mean).
	Aggregation string
	TopK        int
}

// EvaluateSlices runs m in evaluation mode (restored afterwards) without
// gradients on every slice of s at the chosen resolution.
func EvaluateSlices(m net2d.Classifier, s *SliceSet, o EvalSlicesOptions) (SliceEval, error) {
	if m == nil || s == nil || s.Len() == 0 {
		return SliceEval{}, errors.New("train: evaluate slices: nil model or no slices")
	}
	size, bs := o.Size, o.Batch
	if size == 0 {
		size = s.Size
	}
	if bs <= 0 {
		bs = 32
	}
	aggName := o.Aggregation
	if aggName == "" {
		aggName = "mean"
	}
	agg, err := net2d.ParseAggregation(aggName)
	if err != nil {
		return SliceEval{}, err
	}
	restore := freeze(m)
	defer restore()
	k := m.Spec().Classes
	all := make([]float32, 0, s.Len()*k)
	var lossSum float64
	correct := 0
	for b := 0; b < s.Len(); b += bs {
		idx := sliceRange2D(b, min(b+bs, s.Len()))
		x, y := s.Batch(idx, m.Spec().InChannels, nil)
		if x, err = net2d.ResizeBatch(x, size); err != nil {
			return SliceEval{}, err
		}
		var logits *tensor.Tensor
		var l float32
		err = tensor.Catch(func() {
			logits = net2d.Forward(m, x)
			l = tensor.CrossEntropy(logits, y, tensor.CEOpts{Reduction: tensor.ReduceSum}).Item()
		})
		if err != nil {
			return SliceEval{}, fmt.Errorf("train: evaluate %s at %d×%d: %w", m.Spec().Arch, size, size, err)
		}
		lossSum += float64(l)
		for i, p := range tensor.Argmax(logits, 1) {
			if p == y[i] {
				correct++
			}
		}
		all = append(all, logits.Data()...)
	}
	ev := SliceEval{Size: size, Loss: lossSum / float64(s.Len()), Accuracy: float64(correct) / float64(s.Len()), Slices: s.Len(), Scans: len(s.ScanNames)}
	// Scan scores: each scan's slice logits, aggregated.
	byScan := make([][]float32, len(s.ScanNames))
	for n, sc := range s.Scan {
		byScan[sc] = append(byScan[sc], all[n*k:(n+1)*k]...)
	}
	right := 0
	for sc, rows := range byScan {
		z, err := net2d.Aggregate(tensor.New(rows, len(rows)/k, k), agg, o.TopK)
		if err != nil {
			return SliceEval{}, fmt.Errorf("train: evaluate %s: scan %s: %w", m.Spec().Arch, s.ScanNames[sc], err)
		}
		if tensor.Argmax(tensor.Reshape(z, 1, k), 1)[0] == s.ScanLabels[sc] {
			right++
		}
	}
	ev.ScanAccuracy = float64(right) / float64(len(byScan))
	return ev, nil
}

func sliceRange2D(lo, hi int) []int {
	out := make([]int, hi-lo)
	for i := range out {
		out[i] = lo + i
	}
	return out
}

// freeze puts m in evaluation mode without gradients and returns the
// function that puts it back in training mode with gradients.
func freeze(m nn.Module) func() {
	nn.SetTraining(m, false)
	nn.SetRequiresGrad(m, false)
	return func() {
		nn.SetRequiresGrad(m, true)
		nn.SetTraining(m, true)
	}
}

// Result2D describes a finished 2D run.
type Result2D struct {
	Classes []string
	// Scans and slices of each split (TestScans 0 without a test set).
	TrainScans, ValScans, TestScans    int
	TrainSlices, ValSlices, TestSlices int
	// Skipped lists scans left out, with the reason.
	Skipped []SkippedScan
	// History holds every epoch; BestEpoch is the one saved as BestFile.
	History   []EpochRecord2D
	BestEpoch int
	// Dir is the output folder; Best and Last the model checkpoints
	// (net2d.LoadCheckpoint; scored by `ctlens score`).
	Dir, Best, Last string
	// Val and Test are the best model on the validation and test slices
	// at Size (nil without them).
	Val, Test *SliceEval
}

// dataset2DRecord is the first line of a 2D run's LogFile.
type dataset2DRecord struct {
	Event         string          `json:"event"` // "dataset"
	Classes       []string        `json:"classes"`
	TrainScans    int             `json:"train_scans"`
	ValScans      int             `json:"val_scans"`
	TrainSlices   int             `json:"train_slices"`
	ValSlices     int             `json:"val_slices"`
	TrainPerClass []int           `json:"train_slices_per_class"`
	ValPerClass   []int           `json:"val_slices_per_class"`
	Parameters    int             `json:"parameters"`
	Resolutions   []int           `json:"resolutions"`
	SkippedScans  []SkippedScan   `json:"skipped"`
	Preprocessing net2d.SlicePrep `json:"preprocessing"`
}

// trainer2D holds a 2D run in progress.
type trainer2D struct {
	r        Recipe2D
	o        Options
	classes  []string
	train    *SliceSet
	val      *SliceSet
	model    net2d.Classifier
	params   []nn.Named
	opt      nn.Optimizer
	ema      *nn.EMA
	sched    nn.Schedule
	ce       tensor.CEOpts
	step     int
	history  []EpochRecord2D
	best     int
	bestLoss float64
	bestAcc  float64
	dsRec    dataset2DRecord
	testRec  *testRecord
}

// Run2D trains a 2D model as r describes on the axial slices of its scans
// and writes into r.Out the best and last model checkpoints (with
// net2d.MetaSlices and class names, so that `ctlens score` scores scans
// with them), LogFile, CurvesFile and RecipeFile. A 2D run is not
// resumable: Options.Resume is an error, and so is an output folder that
// holds a run already. Cancelling ctx stops it between steps.
func Run2D(ctx context.Context, r Recipe2D, o Options) (*Result2D, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if o.Resume {
		return nil, errors.New("train: 2D runs cannot be resumed; start a new run in another output folder")
	}
	if exists(filepath.Join(r.Out, RecipeFile)) {
		return nil, fmt.Errorf("train: %s already holds a run (%s): choose another output folder", r.Out, RecipeFile)
	}
	t := &trainer2D{r: r, o: o}
	if err := t.loadData(ctx); err != nil {
		return nil, err
	}
	if err := t.buildModel(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(r.Out, 0o755); err != nil {
		return nil, fmt.Errorf("train: output folder: %w", err)
	}
	rj, err := json.MarshalIndent(t.r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("train: recipe: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(r.Out, RecipeFile), append(rj, '\n')); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if err := t.writeLog(); err != nil {
		return nil, err
	}
	for epoch := 1; epoch <= r.Epochs; epoch++ {
		if err := t.epoch(ctx, epoch); err != nil {
			return nil, err
		}
	}
	res := &Result2D{
		Classes: t.classes, TrainScans: len(t.train.ScanNames), TrainSlices: t.train.Len(),
		Skipped: t.dsRec.SkippedScans, History: t.history, BestEpoch: t.best, Dir: r.Out,
		Best: filepath.Join(r.Out, BestFile), Last: filepath.Join(r.Out, LastFile),
	}
	if _, err := nn.Load(res.Best, t.model, nn.LoadOpts{Strict: true}); err != nil {
		return nil, fmt.Errorf("train: reload best model: %w", err)
	}
	if t.val != nil {
		res.ValScans, res.ValSlices = len(t.val.ScanNames), t.val.Len()
		v, err := EvaluateSlices(t.model, t.val, t.evalOpts())
		if err != nil {
			return nil, err
		}
		res.Val = &v
	}
	if !r.Test.IsZero() {
		ts, err := t.loadSplit(ctx, r.Test, "test")
		if err != nil {
			return nil, err
		}
		if ts.Len() == 0 {
			return nil, fmt.Errorf("train: %s: no test slice selected", r.Test)
		}
		res.Skipped = append(res.Skipped, ts.Skipped...)
		te, err := EvaluateSlices(t.model, ts, t.evalOpts())
		if err != nil {
			return nil, err
		}
		res.Test, res.TestScans, res.TestSlices = &te, len(ts.ScanNames), ts.Len()
		t.testRec = &testRecord{Event: "test", Epoch: t.best, Loss: te.Loss, Accuracy: te.Accuracy, Scans: len(ts.ScanNames)}
		if err := t.writeLog(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (t *trainer2D) evalOpts() EvalSlicesOptions {
	return EvalSlicesOptions{Size: t.r.Size, Batch: t.r.BatchSize, Aggregation: t.r.Aggregation, TopK: t.r.TopK}
}

// loadSplit opens src, maps its classes onto the training classes and
// prepares its slices.
func (t *trainer2D) loadSplit(ctx context.Context, src DataSource, what string) (*SliceSet, error) {
	ds, err := openSource(src)
	if err != nil {
		return nil, err
	}
	if err := ds.relabel(t.classes, what); err != nil {
		return nil, err
	}
	set, err := buildSlices(ctx, ds.items, allIndices(len(ds.items)), t.classes, t.r.SliceOptions())
	if err != nil {
		return nil, err
	}
	set.Skipped = append(ds.skipped, set.Skipped...)
	return set, nil
}

func allIndices(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// loadData lists the training data, splits off validation by scan
// (patient) and prepares the slices of both splits.
func (t *trainer2D) loadData(ctx context.Context) error {
	r := t.r
	ds, err := openSource(r.Train)
	if err != nil {
		return err
	}
	t.classes = ds.classes
	skipped := append([]SkippedScan{}, ds.skipped...)
	var trainIdx, valIdx []int
	valItems := ds.items
	if !r.Val.IsZero() {
		vs, err := openSource(r.Val)
		if err != nil {
			return err
		}
		if err := vs.relabel(t.classes, "validation"); err != nil {
			return err
		}
		skipped = append(skipped, vs.skipped...)
		trainIdx, valItems, valIdx = allIndices(len(ds.items)), vs.items, allIndices(len(vs.items))
	} else {
		trainIdx, valIdx = splitVal(ds.items, r.ValFraction, r.Seed)
	}
	if r.Model.Classes == 0 {
		t.r.Model.Classes = len(t.classes)
	} else if r.Model.Classes != len(t.classes) {
		return fmt.Errorf("train: 2D recipe model.classes %d, but the training data has %d classes (%s)", r.Model.Classes, len(t.classes), strings.Join(t.classes, ", "))
	}
	so := r.SliceOptions()
	if t.train, err = buildSlices(ctx, ds.items, trainIdx, t.classes, so); err != nil {
		return err
	}
	skipped = append(skipped, t.train.Skipped...)
	if t.train.Len() == 0 {
		return fmt.Errorf("train: %s: no training slice selected (%d scans skipped; first: %s: %s)", r.Train, len(skipped), firstPath(skipped), firstReason(skipped))
	}
	if len(valIdx) > 0 {
		if t.val, err = buildSlices(ctx, valItems, valIdx, t.classes, so); err != nil {
			return err
		}
		skipped = append(skipped, t.val.Skipped...)
		if t.val.Len() == 0 {
			t.val = nil
		}
	}
	t.dsRec = dataset2DRecord{
		Event: "dataset", Classes: t.classes, TrainScans: len(t.train.ScanNames), TrainSlices: t.train.Len(),
		TrainPerClass: t.train.classCounts(), SkippedScans: skipped, Resolutions: t.resolutions(),
		Preprocessing: r.SlicePrep(),
	}
	if t.val != nil {
		t.dsRec.ValScans, t.dsRec.ValSlices, t.dsRec.ValPerClass = len(t.val.ScanNames), t.val.Len(), t.val.classCounts()
	}
	return nil
}

// resolutions returns the training resolutions (descending).
func (t *trainer2D) resolutions() []int {
	if t.r.multiRes() {
		return append([]int(nil), t.r.Resolutions...)
	}
	return []int{t.r.Size}
}

// noDecay2D is the weight-decay exemption of a 2D run: parameters of at
// most one dimension, and those a ResFormer exempts by name.
func noDecay2D(m net2d.Classifier) nn.DecayFilter {
	rf, _ := m.(*net2d.ResFormer)
	return func(name string, p *tensor.Tensor) bool {
		return nn.SkipOneDim(name, p) || (rf != nil && rf.NoWeightDecay(name))
	}
}

// buildModel constructs the model, optimizer, EMA, schedule and loss.
func (t *trainer2D) buildModel() error {
	r := t.r
	m, err := net2d.Build(r.Model, r.Seed)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if rf, ok := m.(*net2d.ResFormer); ok {
		for _, s := range t.resolutions() {
			if s%rf.Patch != 0 {
				return fmt.Errorf("train: 2D recipe: resolution %d is not a multiple of %s's patch size %d", s, r.Model.Arch, rf.Patch)
			}
		}
	}
	t.model = m
	t.dsRec.Parameters = nn.NumParams(m)
	t.params = nn.NamedParameters(m)
	var nd nn.DecayFilter
	if !r.DecayAll {
		nd = noDecay2D(m)
	}
	switch r.Optimizer {
	case "sgd":
		t.opt, err = nn.NewSGD(t.params, nn.SGDConfig{LR: r.LR, Momentum: r.Momentum, Nesterov: r.Nesterov, WeightDecay: r.WeightDecay, NoDecay: nd})
	case "adam":
		t.opt, err = nn.NewAdam(t.params, nn.AdamConfig{LR: r.LR, Beta1: r.Beta1, Beta2: r.Beta2, WeightDecay: r.WeightDecay, NoDecay: nd})
	case "adamw":
		t.opt, err = nn.NewAdamW(t.params, nn.AdamConfig{LR: r.LR, Beta1: r.Beta1, Beta2: r.Beta2, WeightDecay: r.WeightDecay, NoDecay: nd})
	}
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if r.EMADecay > 0 {
		t.ema = nn.NewEMA(m, r.EMADecay, nn.EMAOpts{Warmup: true})
	}
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
	t.ce = tensor.CEOpts{LabelSmoothing: float32(r.LabelSmoothing)}
	if r.BalanceClasses {
		counts := t.train.classCounts()
		for _, c := range counts {
			w := 0.0
			if c > 0 {
				w = float64(t.train.Len()) / float64(len(counts)*c)
			}
			t.ce.Weight = append(t.ce.Weight, float32(w))
		}
	}
	return nil
}

// epochSlices is the number of training slices an epoch uses: all, except
// that a last batch of a single slice is left out (BatchNorm cannot train
// on it).
func (t *trainer2D) epochSlices() int {
	n := t.train.Len()
	if n > 1 && t.r.BatchSize > 1 && n%t.r.BatchSize == 1 {
		n--
	}
	return n
}

func (t *trainer2D) stepsPerEpoch() int {
	return (t.epochSlices() + t.r.BatchSize - 1) / t.r.BatchSize
}

// epoch trains one epoch, validates, and writes the checkpoints and log.
func (t *trainer2D) epoch(ctx context.Context, epoch int) error {
	r := t.r
	start := time.Now()
	rec, err := t.trainEpoch(ctx, epoch)
	if err != nil {
		return err
	}
	rec.SlicesPerSecond = float64(t.epochSlices()) / time.Since(start).Seconds()
	improved := true
	if t.val != nil {
		if t.ema != nil {
			t.ema.Apply()
		}
		v, err := EvaluateSlices(t.model, t.val, t.evalOpts())
		if t.ema != nil {
			t.ema.Restore()
		}
		if err != nil {
			return err
		}
		rec.ValLoss, rec.ValAcc, rec.ValScanAcc = &v.Loss, &v.Accuracy, &v.ScanAccuracy
		if t.best > 0 {
			improved = better(r.BestMetric, v.Accuracy, v.Loss, t.bestAcc, t.bestLoss)
		}
		if improved {
			t.bestLoss, t.bestAcc = v.Loss, v.Accuracy
		}
	}
	rec.Best = improved
	rec.Seconds = time.Since(start).Seconds()
	if improved {
		t.best = epoch
		if err := t.saveModel(filepath.Join(r.Out, BestFile), epoch); err != nil {
			return err
		}
	}
	if err := t.saveModel(filepath.Join(r.Out, LastFile), epoch); err != nil {
		return err
	}
	t.history = append(t.history, rec)
	if t.o.Progress != nil {
		fmt.Fprintln(t.o.Progress, formatEpoch2D(rec, r.Epochs))
	}
	return t.writeLog()
}

// formatEpoch2D is the one-line summary of an epoch.
func formatEpoch2D(rec EpochRecord2D, epochs int) string {
	s := fmt.Sprintf("epoch %d/%d: train loss %.4f acc %.3f", rec.Epoch, epochs, rec.TrainLoss, rec.TrainAcc)
	if rec.ValLoss != nil {
		s += fmt.Sprintf(", val loss %.4f acc %.3f scan acc %.3f", *rec.ValLoss, *rec.ValAcc, *rec.ValScanAcc)
	}
	s += fmt.Sprintf(", lr %.3g, %.1f slices/s, %.1fs", rec.LR, rec.SlicesPerSecond, rec.Seconds)
	if rec.Best {
		s += " (best)"
	}
	return s
}

// trainEpoch runs the optimizer steps of one epoch.
func (t *trainer2D) trainEpoch(ctx context.Context, epoch int) (EpochRecord2D, error) {
	r := t.r
	rec := EpochRecord2D{Event: "epoch", Epoch: epoch}
	nn.SetTraining(t.model, true)
	reseedRandomLayers(t.model, r.Seed, epoch)
	order := newRand(r.Seed, streamShuffle, uint64(epoch)).Perm(t.train.Len())[:t.epochSlices()]
	aug := newRand(r.Seed, streamAugment, uint64(epoch))
	nb := t.stepsPerEpoch()
	bar := newBar(t.o.Progress, nb, fmt.Sprintf("epoch %d/%d", epoch, r.Epochs))
	defer barFinish(bar)
	var lossSum, gnSum float64
	correct, seen := 0, 0
	for b := 0; b < nb; b++ {
		if err := ctx.Err(); err != nil {
			return rec, err
		}
		idx := order[b*r.BatchSize : min((b+1)*r.BatchSize, len(order))]
		var flip []bool
		if r.Flip {
			flip = make([]bool, len(idx))
			for i := range flip {
				flip[i] = aug.IntN(2) == 1
			}
		}
		x, y := t.train.Batch(idx, r.Model.InChannels, flip)
		lr := t.sched(t.step)
		loss, c, gn, err := t.trainStep(x, y, lr)
		if err != nil {
			return rec, fmt.Errorf("train: epoch %d batch %d: %w", epoch, b+1, err)
		}
		t.step++
		seen += len(idx)
		lossSum += loss * float64(len(idx))
		correct += c
		gnSum += gn
		rec.LR = lr
		rec.Steps++
		barAdd(bar)
		if t.o.OnBatch != nil {
			t.o.OnBatch(epoch, b+1, nb)
		}
	}
	rec.TrainLoss = lossSum / float64(seen)
	rec.TrainAcc = float64(correct) / float64(seen)
	rec.GradNorm = gnSum / float64(rec.Steps)
	return rec, nil
}

// trainStep runs one optimizer step on the batch x (at Size) with labels
// y: the cross-entropy at Size or, with several resolutions, the
// multi-resolution loss over x resized to each. It returns the loss, the
// number of slices classified correctly at Size and the gradient norm
// before clipping.
func (t *trainer2D) trainStep(x *tensor.Tensor, y []int, lr float64) (loss float64, correct int, gradNorm float64, err error) {
	r := t.r
	xs := []*tensor.Tensor{x}
	for _, s := range t.resolutions()[1:] {
		xr, err := net2d.ResizeBatch(x, s)
		if err != nil {
			return 0, 0, 0, err
		}
		xs = append(xs, xr)
	}
	t.opt.SetLR(lr)
	t.opt.ZeroGrad()
	var logits, feats []*tensor.Tensor
	if rf, ok := t.model.(*net2d.ResFormer); ok && len(xs) > 1 {
		if logits, feats, err = net2d.ForwardResolutions(rf, xs); err != nil {
			return 0, 0, 0, err
		}
	} else {
		err = tensor.Catch(func() {
			for _, xi := range xs {
				f := t.model.Features(xi, nil)
				logits = append(logits, t.model.Head(f))
				feats = append(feats, t.model.Pool(f))
			}
		})
		if err != nil {
			return 0, 0, 0, err
		}
	}
	var l *tensor.Tensor
	task := make([]*tensor.Tensor, len(logits))
	err = tensor.Catch(func() {
		for i, z := range logits {
			task[i] = tensor.CrossEntropy(z, y, t.ce)
		}
	})
	if err != nil {
		return 0, 0, 0, err
	}
	if len(task) == 1 {
		l = task[0]
	} else if l, err = net2d.MultiResolutionLoss(task, feats, float32(r.ScaleAlpha)); err != nil {
		return 0, 0, 0, err
	}
	if err = tensor.Catch(func() { l.Backward() }); err != nil {
		return 0, 0, 0, err
	}
	loss = float64(l.Item())
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
	for i, p := range tensor.Argmax(logits[0], 1) {
		if p == y[i] {
			correct++
		}
	}
	return loss, correct, gradNorm, nil
}

// saveModel writes the evaluated weights (EMA when enabled) as a 2D
// checkpoint of epoch.
func (t *trainer2D) saveModel(path string, epoch int) error {
	weights := "raw"
	if t.ema != nil {
		weights = "ema"
		t.ema.Apply()
		defer t.ema.Restore()
	}
	meta, err := t.r.SlicePrep().Meta(t.classes)
	if err != nil {
		return fmt.Errorf("train: save %s: %w", path, err)
	}
	rj, err := json.Marshal(t.r)
	if err != nil {
		return fmt.Errorf("train: save %s: %w", path, err)
	}
	meta[MetaRecipe] = string(rj)
	meta[MetaEpoch] = strconv.Itoa(epoch)
	meta[MetaWeights] = weights
	if err := net2d.SaveCheckpoint(path, t.model, meta); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	return nil
}

// writeLog rewrites LogFile from the dataset record, the history and the
// test record, and redraws CurvesFile.
func (t *trainer2D) writeLog() error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if err := enc.Encode(t.dsRec); err != nil {
		return fmt.Errorf("train: log: %w", err)
	}
	for _, h := range t.history {
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
	if len(t.history) == 0 {
		return nil
	}
	hist := make([]EpochRecord, len(t.history))
	for i, h := range t.history {
		hist[i] = EpochRecord{Epoch: h.Epoch, TrainLoss: h.TrainLoss, TrainAcc: h.TrainAcc, ValLoss: h.ValLoss, ValAcc: h.ValAcc}
	}
	if err := plotHistory(filepath.Join(t.r.Out, CurvesFile), hist); err != nil {
		return fmt.Errorf("train: curves: %w", err)
	}
	return nil
}
