package net2d

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// SliceConfig says how the axial slices of a scan become inputs of a 2D
// model. Slice k of a volume is its voxels (i, j, k); it becomes the image
// row j, column i.
type SliceConfig struct {
	// Window maps Hounsfield units to [0, 1] as volume.Window:
	// clamp((x − (L − W/2))/W, 0, 1). A zero Width uses the voxels as
	// they are (a volume already windowed or normalised).
	Window volume.WindowLevel
	// Size is the model input's height and width; each slice is resized to
	// it bilinearly (align_corners false). Zero keeps rows × columns.
	Size [2]int
	// Mean and Std normalise after windowing, (x − Mean)/Std; Std 0 means 1.
	Mean, Std float64
	// Batch is the number of slices per forward pass; 0 means 16.
	Batch int
}

func (c SliceConfig) check() error {
	switch {
	case c.Window.Width < 0 || math.IsNaN(c.Window.Width) || math.IsInf(c.Window.Width, 0) || math.IsNaN(c.Window.Center) || math.IsInf(c.Window.Center, 0):
		return fmt.Errorf("window width %v, center %v (want a finite width ≥ 0, 0 for none)", c.Window.Width, c.Window.Center)
	case c.Size[0] < 0 || c.Size[1] < 0 || (c.Size[0] == 0) != (c.Size[1] == 0):
		return fmt.Errorf("size %v (want both positive, or both 0)", c.Size)
	case c.Std < 0 || math.IsNaN(c.Std) || math.IsNaN(c.Mean) || math.IsInf(c.Mean, 0):
		return fmt.Errorf("mean %v, std %v (want a finite mean and std ≥ 0)", c.Mean, c.Std)
	case c.Batch < 0:
		return fmt.Errorf("batch %d", c.Batch)
	}
	return nil
}

func (c SliceConfig) batch() int {
	if c.Batch == 0 {
		return 16
	}
	return c.Batch
}

// SliceInput returns the axial slices ks of v as a model input
// N×channels×H×W: x[n, c, j, i] = (window(v(i, j, ks[n])) − Mean)/Std in
// every channel, then resized to cfg.Size when set.
func SliceInput(v *volume.Volume, ks []int, channels int, cfg SliceConfig) (*tensor.Tensor, error) {
	if v == nil {
		return nil, errors.New("net2d: slice input: nil volume")
	}
	if err := v.Validate(); err != nil {
		return nil, fmt.Errorf("net2d: slice input: %w", err)
	}
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("net2d: slice input: %w", err)
	}
	if channels < 1 || len(ks) == 0 {
		return nil, fmt.Errorf("net2d: slice input: %d channels, %d slices (want positive)", channels, len(ks))
	}
	cols, rows := v.Dims[0], v.Dims[1]
	plane := cols * rows
	std := cfg.Std
	if std == 0 {
		std = 1
	}
	lo := cfg.Window.Center - cfg.Window.Width/2
	data := make([]float32, len(ks)*channels*plane)
	for n, k := range ks {
		if k < 0 || k >= v.Dims[2] {
			return nil, fmt.Errorf("net2d: slice input: slice %d out of range (the volume has %d)", k, v.Dims[2])
		}
		dst := data[n*channels*plane : (n*channels+1)*plane]
		for p, x := range v.Voxels[k*plane : (k+1)*plane] {
			y := float64(x)
			if cfg.Window.Width > 0 {
				y = math.Max(0, math.Min(1, (y-lo)/cfg.Window.Width))
			}
			dst[p] = float32((y - cfg.Mean) / std)
		}
		for c := 1; c < channels; c++ {
			copy(data[(n*channels+c)*plane:], dst)
		}
	}
	x := tensor.New(data, len(ks), channels, rows, cols)
	if cfg.Size[0] > 0 && (cfg.Size[0] != rows || cfg.Size[1] != cols) {
		err := tensor.Catch(func() { x = tensor.Interpolate(x, cfg.Size[:], tensor.InterpLinear, false) })
		if err != nil {
			return nil, fmt.Errorf("net2d: slice input: %w", err)
		}
	}
	return x, nil
}

// SliceScores holds a 2D model's outputs for every axial slice of a scan.
type SliceScores struct {
	// Logits is S×K: row k is slice k's logits.
	Logits *tensor.Tensor
	// Pooled is S×C: row k is slice k's pre-logit feature (Classifier.Pool),
	// the instance embedding for AttentionPool.
	Pooled *tensor.Tensor
}

// ScoreSlices runs m in evaluation mode (restored afterwards) on every
// axial slice of v, cfg.Batch slices at a time, without recording
// gradients.
func ScoreSlices(m Classifier, v *volume.Volume, cfg SliceConfig) (*SliceScores, error) {
	if m == nil || v == nil {
		return nil, errors.New("net2d: score slices: nil model or volume")
	}
	restore := nn.EvalFrozen(m)
	defer restore()
	var logits, pooled []*tensor.Tensor
	for k0 := 0; k0 < v.Dims[2]; k0 += cfg.batch() {
		ks := sliceRange(k0, min(k0+cfg.batch(), v.Dims[2]))
		x, err := SliceInput(v, ks, m.Spec().InChannels, cfg)
		if err != nil {
			return nil, fmt.Errorf("net2d: score slices: %w", err)
		}
		err = tensor.Catch(func() {
			f := m.Features(x, nil)
			logits = append(logits, m.Head(f))
			pooled = append(pooled, m.Pool(f))
		})
		if err != nil {
			return nil, fmt.Errorf("net2d: score slices %d–%d with %s: %w", ks[0], ks[len(ks)-1], m.Spec().Arch, err)
		}
	}
	return &SliceScores{Logits: tensor.Concat(0, logits...), Pooled: tensor.Concat(0, pooled...)}, nil
}

func sliceRange(lo, hi int) []int {
	ks := make([]int, hi-lo)
	for i := range ks {
		ks[i] = lo + i
	}
	return ks
}

// Aggregation selects how slice scores become a volume score.
type Aggregation int

const (
	// AggMean is the mean over slices.
	AggMean Aggregation = iota
	// AggMax is the maximum over slices.
	AggMax
	// AggTopKMean is the mean of the k largest slice scores, per class.
	AggTopKMean
)

// String returns "mean", "max" or "topk".
func (a Aggregation) String() string {
	switch a {
	case AggMean:
		return "mean"
	case AggMax:
		return "max"
	case AggTopKMean:
		return "topk"
	}
	return fmt.Sprintf("Aggregation(%d)", int(a))
}

// ParseAggregation maps "mean", "max" and "topk" (or "top-k",
// case-insensitively) to an Aggregation.
func ParseAggregation(s string) (Aggregation, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "mean", "avg":
		return AggMean, nil
	case "max":
		return AggMax, nil
	case "topk", "top-k", "topk-mean":
		return AggTopKMean, nil
	}
	return 0, fmt.Errorf("net2d: unknown aggregation %q (want mean, max or topk)", s)
}

// Aggregate reduces slice scores S×K (logits or probabilities) to a volume
// score of K values, per class c:
//
//	mean   (1/S) Σ_s x[s, c]
//	max    max_s x[s, c]
//	topk   (1/k') Σ_{s ∈ top k'(c)} x[s, c],  k' = min(k, S)
//
// The result is differentiable in x (max and topk pass gradient to the
// chosen slices only).
func Aggregate(scores *tensor.Tensor, a Aggregation, k int) (out *tensor.Tensor, err error) {
	if scores == nil || scores.Dim() != 2 || scores.Size(0) == 0 {
		var shape []int
		if scores != nil {
			shape = scores.Shape()
		}
		return nil, fmt.Errorf("net2d: aggregate: scores of shape %v (want S×K with S ≥ 1)", shape)
	}
	s, nc := scores.Size(0), scores.Size(1)
	switch a {
	case AggMean:
		err = tensor.Catch(func() { out = tensor.Mean(scores, []int{0}, false) })
	case AggMax:
		err = tensor.Catch(func() { out = tensor.Max(scores, 0, false) })
	case AggTopKMean:
		if k < 1 {
			return nil, fmt.Errorf("net2d: aggregate: top-k with k = %d (want ≥ 1)", k)
		}
		k = min(k, s)
		mask := tensor.Zeros(s, nc)
		d := scores.Data()
		idx := make([]int, s)
		for c := 0; c < nc; c++ {
			for i := range idx {
				idx[i] = i
			}
			sort.SliceStable(idx, func(p, q int) bool { return d[idx[p]*nc+c] > d[idx[q]*nc+c] })
			for _, i := range idx[:k] {
				mask.Set(1/float32(k), i, c)
			}
		}
		err = tensor.Catch(func() { out = tensor.Sum(tensor.Mul(scores, mask), []int{0}, false) })
	default:
		return nil, fmt.Errorf("net2d: aggregate: unknown aggregation %d", int(a))
	}
	if err != nil {
		return nil, fmt.Errorf("net2d: aggregate %s: %w", a, err)
	}
	return out, nil
}

// AttentionPool is attention-based multiple-instance pooling (Ilse et al.
// 2018) over a scan's slice embeddings h (B×S×C, or S×C for one scan):
//
//	a_s = softmax_s( w·tanh(V·h_s + b_V) + b_w ),   z = Σ_s a_s·h_s,   y = W_c·z + b_c
//
// with V the Linear "attention.0" (C → L), tanh ("attention.1"), w the
// Linear "attention.2" (L → 1) and W_c the Linear "classifier" (C → K), as
// the AttentionMIL reference names them. Linear layers start with
// PyTorch's default initialisation.
type AttentionPool struct {
	nn.Base
	Attention  *nn.Sequential
	Classifier *nn.Linear
}

// NewAttentionPool returns an attention pool from in features through a
// hidden attention width to classes outputs.
func NewAttentionPool(rng *rand.Rand, in, hidden, classes int) *AttentionPool {
	p := &AttentionPool{}
	p.Attention = nn.Child(p, "attention", nn.NewSequential(
		nn.NewLinear(rng, in, hidden, true), nn.NewFunc(tensor.Tanh), nn.NewLinear(rng, hidden, 1, true)))
	p.Classifier = nn.Child(p, "classifier", nn.NewLinear(rng, in, classes, true))
	return p
}

// Pool returns the logits B×K and the attention weights B×S for h (B×S×C;
// an S×C input is one scan, giving 1×K and 1×S).
func (p *AttentionPool) Pool(h *tensor.Tensor) (logits, weights *tensor.Tensor) {
	if h.Dim() == 2 {
		h = tensor.Reshape(h, 1, h.Size(0), h.Size(1))
	}
	if h.Dim() != 3 {
		panic(&tensor.ShapeError{Op: "net2d.AttentionPool", Msg: fmt.Sprintf("input of shape %v: want B×S×C or S×C", h.Shape())})
	}
	b, s := h.Size(0), h.Size(1)
	weights = tensor.Softmax(tensor.Reshape(p.Attention.Forward(h), b, s), 1)
	z := tensor.Reshape(tensor.MatMul(tensor.Reshape(weights, b, 1, s), h), b, h.Size(2))
	return p.Classifier.Forward(z), weights
}

// Forward returns the logits B×K (see Pool).
func (p *AttentionPool) Forward(h *tensor.Tensor) *tensor.Tensor {
	y, _ := p.Pool(h)
	return y
}

// SliceHeatmap is a 2D class-activation map of every axial slice of a
// scan, stacked into a volume on the scan's grid.
type SliceHeatmap struct {
	// Heat has v's dimensions and geometry; Heat(i, j, k) is slice k's
	// raw map (cam.Compute's, not normalised) bilinearly resized to rows ×
	// columns and read at row j, column i.
	Heat *volume.Volume
	// Layer is the explained layer.
	Layer string
	// Classes and Scores hold, per slice, the explained class and its logit.
	Classes []int
	Scores  []float32
}

// ComputeSliceHeatmap computes cam.Compute maps of m for every axial slice
// of v (cfg.Batch at a time) and stacks them. o.Layer "" means
// m.CAMLayer(); the layer's maps must be 2D. o.Classes may name at most one
// class; empty means each slice's own argmax class (a volume heatmap
// usually wants one fixed class).
func ComputeSliceHeatmap(m Classifier, v *volume.Volume, cfg SliceConfig, o cam.Options) (*SliceHeatmap, error) {
	if m == nil || v == nil {
		return nil, errors.New("net2d: slice heatmap: nil model or volume")
	}
	if len(o.Classes) > 1 {
		return nil, fmt.Errorf("net2d: slice heatmap: %d classes (want at most one)", len(o.Classes))
	}
	if o.Layer == "" {
		o.Layer = m.CAMLayer()
	}
	if err := v.Validate(); err != nil {
		return nil, fmt.Errorf("net2d: slice heatmap: %w", err)
	}
	cols, rows := v.Dims[0], v.Dims[1]
	plane := cols * rows
	out := &SliceHeatmap{Heat: &volume.Volume{
		Voxels: make([]float32, len(v.Voxels)), Dims: v.Dims, Spacing: v.Spacing, Origin: v.Origin, Direction: v.Direction,
	}, Layer: o.Layer}
	for k0 := 0; k0 < v.Dims[2]; k0 += cfg.batch() {
		ks := sliceRange(k0, min(k0+cfg.batch(), v.Dims[2]))
		x, err := SliceInput(v, ks, m.Spec().InChannels, cfg)
		if err != nil {
			return nil, fmt.Errorf("net2d: slice heatmap: %w", err)
		}
		res, err := cam.Compute(m, x, o)
		if err != nil {
			return nil, fmt.Errorf("net2d: slice heatmap, slices %d–%d: %w", ks[0], ks[len(ks)-1], err)
		}
		mp := res.Maps[0]
		if mp.Raw.Dim() != 4 {
			return nil, fmt.Errorf("net2d: slice heatmap: layer %s gives maps of shape %v, not 2D", o.Layer, mp.Raw.Shape())
		}
		up, err := cam.Upsample(mp.Raw, []int{rows, cols})
		if err != nil {
			return nil, fmt.Errorf("net2d: slice heatmap: %w", err)
		}
		copy(out.Heat.Voxels[k0*plane:], up.Data())
		out.Classes = append(out.Classes, mp.Classes...)
		out.Scores = append(out.Scores, mp.Scores...)
	}
	return out, nil
}
