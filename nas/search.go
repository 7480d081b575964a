// Package nas searches the CovidNet3D space (the Mobile3DNet supernet of
// net3d) for an architecture: the differentiable Gumbel-softmax search the
// CovidNet3D paper describes (He et al., AAAI 2021), made to work, and the
// uniform random single-path search that the released code effectively
// runs, for comparison.
//
// Each searchable cell i has architecture logits α_i (K_i = 9 or 10
// entries, initialised to 1e-3·N(0, 1)). A forward pass samples, per cell,
// y_i = softmax((α_i + g_i)/τ) with Gumbel noise g_i, and runs the supernet
// with masks from y_i (net3d.Supernet.ForwardWithMasks):
//
//   - ModeHard: the straight-through one-hot m_i = onehot(argmax y_i) −
//     stop_grad(y_i) + y_i; one candidate per cell runs and ∂L/∂α flows
//     through y_i (the reference casts the sample to bool, which cuts this
//     gradient, see ModeRandom);
//   - ModeSoft: m_i = y_i, every candidate runs (a DARTS-style relaxation);
//   - ModeRandom: a uniformly random candidate per cell per step, α never
//     updated: the released code's effective behaviour.
//
// The optimisation is the reference's first-order bilevel loop: the
// training data is split 50/50; each step updates α with Adam on a batch
// of the architecture half (cross-entropy plus an optional resource term,
// see Resource), then the weights with Adam on a batch of the weight half
// (a fresh sample, gradient norm clipped). After every epoch the argmax
// architecture is exported as a net3d spec, loadable by net3d.Build and
// trainable with `ctlens train --arch`.
package nas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/train"
	"github.com/ctlens/ctlens/volume"
)

// Mode selects how the search samples architectures.
type Mode string

const (
	// ModeHard samples a straight-through hard Gumbel-softmax one-hot per
	// cell: one path runs, α receives gradients.
	ModeHard Mode = "hard"
	// ModeSoft weights every candidate by its Gumbel-softmax sample.
	ModeSoft Mode = "soft"
	// ModeRandom runs a uniformly random candidate per cell per step and
	// never updates α (the released CovidNet3D code's effective search).
	ModeRandom Mode = "random"
)

// Files written into Config.Out.
const (
	// AlphaFile holds one EpochRecord per line: epoch 0 (the initial α)
	// and every finished epoch.
	AlphaFile = "alpha.jsonl"
	// FinalFile is the net3d spec of the final architecture.
	FinalFile = "final.json"
	// FinalNNIFile is the final architecture in the reference's NNI format
	// ({"s0_c0": [false, true, …], …}; net3d.CovidNet3DConfig.ApplyNNIArch).
	FinalNNIFile = "final_nni.json"
	// CostsFile is the per-candidate cost table (Costs).
	CostsFile = "costs.json"
	// SummaryFile holds the configuration and the result.
	SummaryFile = "search.json"
)

// EpochFile returns the name of the spec exported after epoch n: "arch_epoch_NNN.json".
func EpochFile(n int) string { return fmt.Sprintf("arch_epoch_%03d.json", n) }

// Config describes a search. JSON names are in the tags.
type Config struct {
	// Supernet is the search space: Arch "covidnet3d" or "covidnet3d-small"
	// with an optional Config (widths, cells, strides; its ops are
	// ignored). Classes 0 takes the data's class count; InChannels 0 means 1.
	Supernet net3d.Spec `json:"supernet"`
	// Input is the network input [depth, height, width].
	Input [3]int `json:"input"`
	// Pipeline prepares each scan; empty means
	// volume.CovidNet3DPipeline(width, depth) (height must equal width).
	Pipeline volume.Pipeline `json:"pipeline,omitempty"`
	// Data is the training data, split 50/50 within each class into the
	// weight half and the architecture half (SplitHalves).
	Data train.DataSource `json:"data"`

	Mode Mode `json:"mode"`
	// Epochs, BatchSize, and StepsPerEpoch (0: ⌊min(half sizes)/BatchSize⌋,
	// at least 1, as zipping the two loaders).
	Epochs        int `json:"epochs"`
	BatchSize     int `json:"batch_size"`
	StepsPerEpoch int `json:"steps_per_epoch,omitempty"`
	// WarmupEpochs trains only the weights (paths sampled from the initial,
	// nearly uniform α) for that many first epochs before α is updated
	// (the reference's warm_start_epoch, 0 there).
	WarmupEpochs int `json:"warmup_epochs,omitempty"`
	// Temperature is the Gumbel-softmax temperature schedule.
	Temperature Temperature `json:"temperature"`

	// ArchLR, ArchBeta1, ArchBeta2 and ArchWeightDecay configure Adam on α
	// (reference: 3e-4, 0.5, 0.999, 1e-3).
	ArchLR          float64 `json:"arch_lr"`
	ArchBeta1       float64 `json:"arch_beta1"`
	ArchBeta2       float64 `json:"arch_beta2"`
	ArchWeightDecay float64 `json:"arch_weight_decay"`
	// LR and WeightDecay configure Adam on the weights (reference: 1e-3,
	// 5e-4, decay on every parameter); ClipNorm clips their gradient norm
	// (reference 5; 0: off).
	LR          float64 `json:"lr"`
	WeightDecay float64 `json:"weight_decay"`
	ClipNorm    float64 `json:"clip_norm"`

	// Resource adds a size or MAC term to the architecture loss.
	Resource Resource `json:"resource,omitzero"`

	// Seed fixes α's initialisation, the weights, the split, the batches,
	// the augmentation and every Gumbel sample.
	Seed uint64 `json:"seed"`
	// Out is the output folder ("" writes nothing).
	Out string `json:"out,omitempty"`
}

// DefaultConfig returns the reference's search settings on a CPU-sized
// space: covidnet3d-small, input 16×64×64, hard Gumbel-softmax at τ = 1,
// 10 epochs of batch 4, α Adam (3e-4, β (0.5, 0.999), weight decay 1e-3),
// weight Adam (1e-3, weight decay 5e-4), clip 5, seed 1, out "search".
func DefaultConfig() Config {
	return Config{
		Supernet:        net3d.Spec{Arch: "covidnet3d-small", InChannels: 1},
		Input:           [3]int{16, 64, 64},
		Mode:            ModeHard,
		Epochs:          10,
		BatchSize:       4,
		Temperature:     Temperature{Start: 1, End: 1, Decay: 1},
		ArchLR:          3e-4,
		ArchBeta1:       0.5,
		ArchBeta2:       0.999,
		ArchWeightDecay: 1e-3,
		LR:              1e-3,
		WeightDecay:     5e-4,
		ClipNorm:        5,
		Seed:            1,
		Out:             "search",
	}
}

// Validate reports the first invalid field, naming it and its value.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error { return fmt.Errorf("nas: config: "+format, a...) }
	switch c.Supernet.Arch {
	case "covidnet3d", "covidnet3d-small":
	default:
		return bad("supernet.arch %q: want covidnet3d or covidnet3d-small", c.Supernet.Arch)
	}
	if c.Supernet.InChannels < 0 || c.Supernet.InChannels > 16 {
		return bad("supernet.in_channels %d outside 0..16", c.Supernet.InChannels)
	}
	if c.Supernet.Classes < 0 {
		return bad("supernet.classes %d is negative", c.Supernet.Classes)
	}
	for i, n := range c.Input {
		if n < 1 || n > 4096 {
			return bad("input[%d] = %d outside 1..4096 (input is [depth, height, width])", i, n)
		}
	}
	if len(c.Pipeline) > 0 {
		if err := c.Pipeline.Validate(); err != nil {
			return bad("pipeline: %w", err)
		}
	} else if c.Input[1] != c.Input[2] {
		return bad("no pipeline and input height %d ≠ width %d: give a pipeline", c.Input[1], c.Input[2])
	}
	switch c.Mode {
	case ModeHard, ModeSoft, ModeRandom:
	default:
		return bad("mode %q: want hard, soft or random", c.Mode)
	}
	if c.Epochs < 1 || c.Epochs > 100000 {
		return bad("epochs %d outside 1..100000", c.Epochs)
	}
	if c.BatchSize < 1 || c.BatchSize > 4096 {
		return bad("batch_size %d outside 1..4096", c.BatchSize)
	}
	if c.StepsPerEpoch < 0 {
		return bad("steps_per_epoch %d is negative", c.StepsPerEpoch)
	}
	if c.WarmupEpochs < 0 || c.WarmupEpochs >= c.Epochs {
		return bad("warmup_epochs %d outside 0..epochs−1 (%d)", c.WarmupEpochs, c.Epochs-1)
	}
	if err := c.Temperature.Validate(); err != nil {
		return err
	}
	for _, v := range []struct {
		name   string
		x      float64
		lo, hi float64
		open   bool // lo excluded
	}{
		{"arch_lr", c.ArchLR, 0, 10, true}, {"lr", c.LR, 0, 10, true},
		{"arch_beta1", c.ArchBeta1, 0, 1, false}, {"arch_beta2", c.ArchBeta2, 0, 1, false},
		{"arch_weight_decay", c.ArchWeightDecay, 0, 10, false}, {"weight_decay", c.WeightDecay, 0, 10, false},
		{"clip_norm", c.ClipNorm, 0, math.MaxFloat64, false},
	} {
		if !(v.x >= v.lo && v.x < v.hi) || (v.open && v.x == v.lo) {
			return bad("%s %g outside [%g, %g)", v.name, v.x, v.lo, v.hi)
		}
	}
	if c.ArchBeta1 >= 1 || c.ArchBeta2 >= 1 {
		return bad("arch betas (%g, %g) must be below 1", c.ArchBeta1, c.ArchBeta2)
	}
	if err := c.Resource.Validate(); err != nil {
		return err
	}
	return validateData(c.Data)
}

// CellRecord is one cell's state in an EpochRecord.
type CellRecord struct {
	Key string `json:"key"`
	// Alpha are the logits, Probs = softmax(Alpha).
	Alpha []float64 `json:"alpha"`
	Probs []float64 `json:"probs"`
	// Op is the argmax candidate's name.
	Op string `json:"op"`
}

// EpochRecord is one line of AlphaFile: the state after an epoch (epoch 0:
// before the first).
type EpochRecord struct {
	Epoch int `json:"epoch"`
	// Steps is the number of steps done so far in all.
	Steps int `json:"steps"`
	// Tau is the temperature used during the epoch.
	Tau float64 `json:"tau"`
	// TrainLoss and TrainAcc average the weight steps of the epoch;
	// ArchLoss (cross-entropy only) and ArchAcc the architecture steps
	// (none in ModeRandom).
	TrainLoss float64  `json:"train_loss"`
	TrainAcc  float64  `json:"train_acc"`
	ArchLoss  *float64 `json:"arch_loss,omitempty"`
	ArchAcc   *float64 `json:"arch_acc,omitempty"`
	// ExpectedCost is E[C] of the resource term at the end of the epoch
	// (in the units of its metric), when the term is active.
	ExpectedCost *float64 `json:"expected_cost,omitempty"`
	// Choices and Ops are the derived architecture (see Derive); Params,
	// SizeMB and MMACs its cost at the search input.
	Choices []int        `json:"choices"`
	Ops     []string     `json:"ops"`
	Params  int          `json:"params"`
	SizeMB  float64      `json:"size_mb"`
	MMACs   float64      `json:"mmacs"`
	Cells   []CellRecord `json:"cells"`
	Seconds float64      `json:"seconds"`
}

// Result is the outcome of a search.
type Result struct {
	// Choices is the final architecture (candidate index per cell), Spec
	// its net3d spec.
	Choices []int      `json:"choices"`
	Ops     []string   `json:"ops"`
	Spec    net3d.Spec `json:"spec"`
	Params  int        `json:"params"`
	SizeMB  float64    `json:"size_mb"`
	MMACs   float64    `json:"mmacs"`
	// Alpha holds the final logits per cell.
	Alpha   [][]float64   `json:"alpha"`
	History []EpochRecord `json:"history"`
	Costs   *Costs        `json:"-"`
	Dir     string        `json:"dir,omitempty"`
}

// searcher is the state of a running search.
type searcher struct {
	c        Config
	sn       *net3d.Supernet
	cells    []net3d.CellInfo
	alphas   []*tensor.Tensor
	archOpt  *nn.Adam
	wOpt     *nn.Adam
	params   []nn.Named
	costs    *Costs
	base     float64
	cand     [][]float64
	ld       *loader
	wIdx     []int // weight half
	aIdx     []int // architecture half
	steps    int
	rng      *rand.Rand // Gumbel samples, random paths
	progress io.Writer
}

// Run searches as c describes, writing per-epoch outputs into c.Out (see
// the *File constants and EpochFile) and progress lines to progress (may
// be nil). Cancelling ctx stops between steps with ctx's error; the files
// of finished epochs stay.
func Run(ctx context.Context, c Config, progress io.Writer) (*Result, error) {
	if c.Supernet.InChannels == 0 {
		c.Supernet.InChannels = 1
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	ds, err := OpenData(c.Data)
	if err != nil {
		return nil, err
	}
	if c.Supernet.Classes == 0 {
		c.Supernet.Classes = len(ds.Classes)
	}
	if c.Supernet.Classes != len(ds.Classes) {
		return nil, fmt.Errorf("nas: supernet has %d classes, the data %d (%s)", c.Supernet.Classes, len(ds.Classes), strings.Join(ds.Classes, ", "))
	}
	pl := c.Pipeline
	if len(pl) == 0 {
		pl = volume.CovidNet3DPipeline(c.Input[2], c.Input[0])
	}
	s, err := newSearcher(c, ds, pl, progress)
	if err != nil {
		return nil, err
	}
	return s.run(ctx)
}

func newSearcher(c Config, ds *Dataset, pl volume.Pipeline, progress io.Writer) (*searcher, error) {
	sn, err := net3d.NewSupernet(c.Supernet, c.Seed)
	if err != nil {
		return nil, err
	}
	s := &searcher{c: c, sn: sn, cells: sn.Cells(), progress: progress,
		rng: rand.New(rand.NewPCG(c.Seed, 0x6a6d))}
	s.costs, err = NewCosts(sn, c.Input)
	if err != nil {
		return nil, err
	}
	metric := c.Resource.Metric
	if metric == "" {
		metric = MetricSize
	}
	if s.base, s.cand, err = s.costs.Table(metric); err != nil {
		return nil, err
	}
	if t := c.Resource.Target; t > 0 {
		if lo := minCost(s.base, s.cand); lo > t {
			return nil, fmt.Errorf("nas: resource target %g %s is below the smallest architecture of the space (%.4g %s)", t, metric, lo, metric)
		}
	}
	init := rand.New(rand.NewPCG(c.Seed, 0xa1fa))
	var named []nn.Named
	for _, ci := range s.cells {
		a := make([]float32, len(ci.Candidates))
		for j := range a {
			a[j] = float32(1e-3 * init.NormFloat64())
		}
		t := tensor.New(a, len(a)).SetRequiresGrad(true)
		s.alphas = append(s.alphas, t)
		named = append(named, nn.Named{Name: "alpha." + ci.Key, Tensor: t})
	}
	if s.archOpt, err = nn.NewAdam(named, nn.AdamConfig{LR: c.ArchLR, Beta1: c.ArchBeta1, Beta2: c.ArchBeta2, WeightDecay: c.ArchWeightDecay}); err != nil {
		return nil, fmt.Errorf("nas: %w", err)
	}
	s.params = nn.NamedParameters(sn)
	if s.wOpt, err = nn.NewAdam(s.params, nn.AdamConfig{LR: c.LR, WeightDecay: c.WeightDecay}); err != nil {
		return nil, fmt.Errorf("nas: %w", err)
	}
	s.ld = &loader{ds: ds, pipeline: pl, input: c.Input, channels: c.Supernet.InChannels, raw: map[int]*volume.Volume{}}
	s.wIdx, s.aIdx = SplitHalves(ds.Items, c.Seed)
	if len(s.wIdx) == 0 || len(s.aIdx) == 0 {
		return nil, fmt.Errorf("nas: %d scans cannot be split into a weight half and an architecture half (need at least 2)", len(ds.Items))
	}
	return s, nil
}

// minCost returns the cost of the cheapest architecture.
func minCost(base float64, cand [][]float64) float64 {
	lo := base
	for _, row := range cand {
		m := row[0]
		for _, v := range row {
			m = min(m, v)
		}
		lo += m
	}
	return lo
}

func (s *searcher) stepsPerEpoch() int {
	if s.c.StepsPerEpoch > 0 {
		return s.c.StepsPerEpoch
	}
	return max(1, min(len(s.wIdx), len(s.aIdx))/s.c.BatchSize)
}

func (s *searcher) run(ctx context.Context) (*Result, error) {
	if s.c.Out != "" {
		if err := os.MkdirAll(s.c.Out, 0o755); err != nil {
			return nil, fmt.Errorf("nas: %w", err)
		}
		if err := writeJSON(filepath.Join(s.c.Out, CostsFile), s.costs); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(s.c.Out, AlphaFile), nil, 0o644); err != nil {
			return nil, fmt.Errorf("nas: %w", err)
		}
	}
	res := &Result{Costs: s.costs, Dir: s.c.Out}
	rec0, err := s.record(0, s.c.Temperature.At(0, 0), time.Now())
	if err != nil {
		return nil, err
	}
	if err := s.emit(rec0, res); err != nil {
		return nil, err
	}
	per := s.stepsPerEpoch()
	for epoch := 1; epoch <= s.c.Epochs; epoch++ {
		start := time.Now()
		tau := s.c.Temperature.At(epoch-1, s.steps)
		wOrder := s.order(s.wIdx, epoch, 1)
		aOrder := s.order(s.aIdx, epoch, 2)
		var tl, ta, al, aa float64
		var nt, na int
		for step := range per {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			tau = s.c.Temperature.At(epoch-1, s.steps)
			if s.c.Mode != ModeRandom && epoch > s.c.WarmupEpochs {
				x, y, err := s.batch(aOrder, step, epoch, 2)
				if err != nil {
					return res, err
				}
				l, correct, err := s.archStep(x, y, tau)
				if err != nil {
					return res, fmt.Errorf("nas: epoch %d step %d: architecture step: %w", epoch, step+1, err)
				}
				al += l * float64(len(y))
				aa += correct
				na += len(y)
			}
			x, y, err := s.batch(wOrder, step, epoch, 1)
			if err != nil {
				return res, err
			}
			l, correct, err := s.weightStep(x, y, tau)
			if err != nil {
				return res, fmt.Errorf("nas: epoch %d step %d: weight step: %w", epoch, step+1, err)
			}
			tl += l * float64(len(y))
			ta += correct
			nt += len(y)
			s.steps++
		}
		rec, err := s.record(epoch, tau, start)
		if err != nil {
			return res, err
		}
		rec.TrainLoss, rec.TrainAcc = tl/float64(nt), ta/float64(nt)
		if na > 0 {
			al, aa = al/float64(na), aa/float64(na)
			rec.ArchLoss, rec.ArchAcc = &al, &aa
		}
		if err := s.emit(rec, res); err != nil {
			return res, err
		}
	}
	last := res.History[len(res.History)-1]
	res.Choices, res.Ops = last.Choices, last.Ops
	res.Params, res.SizeMB, res.MMACs = last.Params, last.SizeMB, last.MMACs
	for _, c := range last.Cells {
		res.Alpha = append(res.Alpha, c.Alpha)
	}
	if res.Spec, err = s.sn.SpecFor(res.Choices); err != nil {
		return res, err
	}
	if s.c.Out != "" {
		if err := writeJSON(filepath.Join(s.c.Out, FinalFile), res.Spec); err != nil {
			return res, err
		}
		nni, err := NNIArch(s.cells, res.Choices)
		if err != nil {
			return res, err
		}
		if err := writeJSON(filepath.Join(s.c.Out, FinalNNIFile), nni); err != nil {
			return res, err
		}
		if err := writeJSON(filepath.Join(s.c.Out, SummaryFile), struct {
			Config Config  `json:"config"`
			Result *Result `json:"result"`
		}{s.c, res}); err != nil {
			return res, err
		}
	}
	return res, nil
}

// order returns the half's item indices shuffled for the epoch.
func (s *searcher) order(idx []int, epoch int, stream uint64) []int {
	o := append([]int(nil), idx...)
	r := rand.New(rand.NewPCG(s.c.Seed^uint64(epoch)*0x9e3779b97f4a7c15, stream))
	r.Shuffle(len(o), func(i, j int) { o[i], o[j] = o[j], o[i] })
	return o
}

// batch prepares batch number step of order (wrapping around), each scan
// with its own augmentation generator seeded by (seed, epoch, stream, step, slot).
func (s *searcher) batch(order []int, step, epoch int, stream uint64) (*tensor.Tensor, []int, error) {
	bs := s.c.BatchSize
	n := s.c.Supernet.InChannels * s.c.Input[0] * s.c.Input[1] * s.c.Input[2]
	data := make([]float32, bs*n)
	labels := make([]int, bs)
	errs := make([]error, bs)
	var wg sync.WaitGroup
	for b := range bs {
		item := order[(step*bs+b)%len(order)]
		labels[b] = s.ld.ds.Items[item].Label
		seed := s.c.Seed ^ (uint64(epoch)<<40 | stream<<36 | uint64(step)<<12 | uint64(b))
		wg.Go(func() {
			errs[b] = s.ld.sample(item, rand.New(rand.NewPCG(seed, 0xda7a)), data[b*n:(b+1)*n])
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return tensor.New(data, bs, s.c.Supernet.InChannels, s.c.Input[0], s.c.Input[1], s.c.Input[2]), labels, nil
}

// archStep updates α on one batch: loss = CE(f(x; m(α)), y) + resource term.
// The supernet's weights are frozen during it (no weight gradients are
// computed); BatchNorm statistics update as in the reference.
func (s *searcher) archStep(x *tensor.Tensor, y []int, tau float64) (loss, correct float64, err error) {
	masks := make([]*tensor.Tensor, len(s.alphas))
	for i, a := range s.alphas {
		if masks[i], _, err = GumbelSoftmax(a, SampleGumbel(s.rng, a.Size(0)), tau, s.c.Mode == ModeHard); err != nil {
			return 0, 0, err
		}
	}
	nn.SetRequiresGrad(s.sn, false)
	defer nn.SetRequiresGrad(s.sn, true)
	logits, err := s.sn.ForwardWithMasks(x, masks, s.maskMode())
	if err != nil {
		return 0, 0, err
	}
	var pred []int
	err = tensor.Catch(func() {
		s.archOpt.ZeroGrad()
		ce := tensor.CrossEntropy(logits, y, tensor.CEOpts{})
		l := ce
		if s.resourceActive() {
			l = tensor.Add(l, s.penalty())
		}
		l.Backward()
		loss = float64(ce.Item())
		pred = tensor.Argmax(logits, 1)
	})
	if err != nil {
		return 0, 0, err
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, 0, fmt.Errorf("loss is %g", loss)
	}
	s.archOpt.Step()
	s.archOpt.ZeroGrad()
	return loss, countCorrect(pred, y), nil
}

// resourceActive reports whether the resource term applies now: always
// for a plain penalty; for a budget while the argmax architecture of α
// exceeds it.
func (s *searcher) resourceActive() bool {
	r := s.c.Resource
	if !r.Active() {
		return false
	}
	if r.Target <= 0 {
		return true
	}
	cost := s.base
	for i, a := range s.alpha64() {
		cost += s.cand[i][argmax64(a)]
	}
	return cost > r.Target
}

// penalty returns the resource term (see Resource) as a graph of α.
func (s *searcher) penalty() *tensor.Tensor {
	e, err := ExpectedCost(s.alphas, s.base, s.cand)
	if err != nil {
		panic(&tensor.ShapeError{Op: "nas.penalty", Msg: err.Error()})
	}
	r := s.c.Resource
	if r.Target > 0 {
		// λ·max(0, E/T − 1)
		return tensor.MulScalar(tensor.ReLU(tensor.AddScalar(tensor.MulScalar(e, float32(1/r.Target)), -1)), float32(r.Weight))
	}
	return tensor.MulScalar(e, float32(r.Weight))
}

func (s *searcher) maskMode() net3d.MaskMode {
	if s.c.Mode == ModeSoft {
		return net3d.MaskSoft
	}
	return net3d.MaskHard
}

// weightStep updates the supernet's weights on one batch with a fresh
// architecture sample (constant masks: one-hot of the Gumbel argmax in
// ModeHard, the soft sample in ModeSoft, a uniform one-hot in ModeRandom).
func (s *searcher) weightStep(x *tensor.Tensor, y []int, tau float64) (loss, correct float64, err error) {
	masks := make([]*tensor.Tensor, len(s.alphas))
	for i, a := range s.alphas {
		k := a.Size(0)
		switch s.c.Mode {
		case ModeRandom:
			masks[i] = OneHot(k, s.rng.IntN(k))
		case ModeHard:
			g := SampleGumbel(s.rng, k)
			v := make([]float64, k)
			for j, av := range a.Data() {
				v[j] = float64(av) + g[j]
			}
			masks[i] = OneHot(k, argmax64(v))
		case ModeSoft:
			m, _, err := GumbelSoftmax(a.Detach(), SampleGumbel(s.rng, k), tau, false)
			if err != nil {
				return 0, 0, err
			}
			masks[i] = m.Detach()
		}
	}
	logits, err := s.sn.ForwardWithMasks(x, masks, s.maskMode())
	if err != nil {
		return 0, 0, err
	}
	var pred []int
	err = tensor.Catch(func() {
		s.wOpt.ZeroGrad()
		l := tensor.CrossEntropy(logits, y, tensor.CEOpts{})
		l.Backward()
		loss = float64(l.Item())
		pred = tensor.Argmax(logits, 1)
	})
	if err != nil {
		return 0, 0, err
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, 0, fmt.Errorf("loss is %g (lower the learning rate)", loss)
	}
	maxNorm := math.Inf(1)
	if s.c.ClipNorm > 0 {
		maxNorm = s.c.ClipNorm
	}
	nn.ClipGradNorm(s.params, maxNorm)
	s.wOpt.Step()
	s.wOpt.ZeroGrad()
	return loss, countCorrect(pred, y), nil
}

func countCorrect(pred, y []int) float64 {
	n := 0.0
	for i, p := range pred {
		if p == y[i] {
			n++
		}
	}
	return n
}

// alpha64 returns the current logits per cell in float64.
func (s *searcher) alpha64() [][]float64 {
	out := make([][]float64, len(s.alphas))
	for i, a := range s.alphas {
		for _, v := range a.Data() {
			out[i] = append(out[i], float64(v))
		}
	}
	return out
}

// record describes the current state as the record of the given epoch.
func (s *searcher) record(epoch int, tau float64, start time.Time) (EpochRecord, error) {
	alpha := s.alpha64()
	var target float64
	if s.c.Resource.Target > 0 {
		target = s.c.Resource.Target
	}
	choices, err := Derive(alpha, s.base, s.cand, target)
	if err != nil {
		return EpochRecord{}, err
	}
	rec := EpochRecord{Epoch: epoch, Steps: s.steps, Tau: tau, Choices: choices}
	params, macs, err := s.costs.Of(choices)
	if err != nil {
		return rec, err
	}
	rec.Params, rec.SizeMB, rec.MMACs = params, SizeMB(params), float64(macs)/1e6
	var expected float64
	expected = s.base
	for i, ci := range s.cells {
		p := Softmax64(alpha[i])
		rec.Cells = append(rec.Cells, CellRecord{Key: ci.Key, Alpha: alpha[i], Probs: p, Op: ci.Candidates[choices[i]]})
		rec.Ops = append(rec.Ops, ci.Candidates[choices[i]])
		for j, pj := range p {
			expected += pj * s.cand[i][j]
		}
	}
	if s.c.Resource.Active() {
		rec.ExpectedCost = &expected
	}
	rec.Seconds = time.Since(start).Seconds()
	return rec, nil
}

// emit appends rec to the history and writes its files and progress line.
func (s *searcher) emit(rec EpochRecord, res *Result) error {
	res.History = append(res.History, rec)
	if s.progress != nil {
		line := fmt.Sprintf("epoch %d/%d  tau %.3g  train loss %.4f acc %.3f", rec.Epoch, s.c.Epochs, rec.Tau, rec.TrainLoss, rec.TrainAcc)
		if rec.ArchLoss != nil {
			line += fmt.Sprintf("  arch loss %.4f acc %.3f", *rec.ArchLoss, *rec.ArchAcc)
		}
		if rec.ExpectedCost != nil {
			line += fmt.Sprintf("  E[cost] %.4g", *rec.ExpectedCost)
		}
		line += fmt.Sprintf("  arch %s (%.3f MB, %.1f MMACs)  %.1fs", strings.Join(rec.Ops, ","), rec.SizeMB, rec.MMACs, rec.Seconds)
		fmt.Fprintln(s.progress, line)
	}
	if s.c.Out == "" {
		return nil
	}
	spec, err := s.sn.SpecFor(rec.Choices)
	if err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(s.c.Out, EpochFile(rec.Epoch)), spec); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("nas: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.c.Out, AlphaFile), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("nas: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("nas: %w", err)
	}
	return nil
}

// writeJSON writes v as indented JSON to path.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("nas: %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("nas: %w", err)
	}
	return nil
}
