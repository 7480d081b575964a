package net2d

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// MetaSlices is the checkpoint metadata key holding a trained 2D model's
// SlicePrep as JSON: how a scan becomes slice inputs and how slice scores
// become the scan's score. Checkpoints of `ctlens train` for a 2D
// architecture carry it beside net3d.MetaSpec and net3d.MetaClassNames.
const MetaSlices = "ctlens.slices"

// SlicePrep says how a trained 2D model scores a CT scan: every axial slice
// k is windowed and resized as SliceInput does,
//
//	x_k[j, i] = resize(clamp((v(i, j, k) − (C − W/2))/W, 0, 1))   (W = WindowWidth, C = WindowCenter)
//
// to Size (height × width; bilinear, align_corners false), the model gives
// slice logits z_k (K classes), and the scan's logits are
//
//	z = Aggregate([z_0 … z_{S−1}], Aggregation, TopK)
//
// whose softmax are the scan's class probabilities.
type SlicePrep struct {
	// WindowCenter and WindowWidth are the window level and width in HU;
	// width 0 uses the voxels as they are.
	WindowCenter float64 `json:"window_center"`
	WindowWidth  float64 `json:"window_width"`
	// Size is the model input [height, width]; [0, 0] keeps the scan's
	// rows × columns.
	Size [2]int `json:"size"`
	// Aggregation is "mean", "max" or "topk" (see ParseAggregation).
	Aggregation string `json:"aggregation"`
	// TopK is k of "topk" (≥ 1); ignored otherwise.
	TopK int `json:"top_k,omitempty"`
}

// Validate reports the first invalid field.
func (p SlicePrep) Validate() error {
	if err := p.Config().check(); err != nil {
		return fmt.Errorf("net2d: slice preprocessing: %w", err)
	}
	a, err := ParseAggregation(p.Aggregation)
	if err != nil {
		return err
	}
	if a == AggTopKMean && p.TopK < 1 {
		return fmt.Errorf("net2d: slice preprocessing: aggregation topk with top_k %d (want ≥ 1)", p.TopK)
	}
	return nil
}

// Config returns the SliceConfig of p (no mean/std normalisation, the
// default batch).
func (p SlicePrep) Config() SliceConfig {
	return SliceConfig{Window: volume.WindowLevel{Center: p.WindowCenter, Width: p.WindowWidth}, Size: p.Size}
}

// Pipeline returns the volume.Pipeline that prepares a scan as p does,
// for display and for applying to a whole volume: a "window" op (when
// WindowWidth > 0) and a linear "resize" to Size (when set). Applying it
// and then SliceInput with no window and no size gives SliceInput with
// p.Config().
func (p SlicePrep) Pipeline() volume.Pipeline {
	pl := volume.Pipeline{}
	if p.WindowWidth > 0 {
		pl = append(pl, volume.Op{Op: "window", Center: p.WindowCenter, Width: p.WindowWidth})
	}
	if p.Size[0] > 0 {
		pl = append(pl, volume.Op{Op: "resize", Cols: p.Size[1], Rows: p.Size[0], Interp: "linear"})
	}
	return pl
}

// ParseSlicePrep reads and validates the MetaSlices metadata of a checkpoint.
func ParseSlicePrep(meta map[string]string) (SlicePrep, error) {
	raw, ok := meta[MetaSlices]
	if !ok {
		return SlicePrep{}, fmt.Errorf("net2d: no %s metadata: the checkpoint does not say how to slice a scan (2D checkpoints of `ctlens train` do)", MetaSlices)
	}
	var p SlicePrep
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return SlicePrep{}, fmt.Errorf("net2d: metadata %s: %w", MetaSlices, err)
	}
	if err := p.Validate(); err != nil {
		return SlicePrep{}, fmt.Errorf("net2d: metadata %s: %w", MetaSlices, err)
	}
	return p, nil
}

// Meta returns the checkpoint metadata of a trained 2D model: MetaSlices
// (p as JSON) and net3d.MetaClassNames (classes as JSON), for
// SaveCheckpoint.
func (p SlicePrep) Meta(classes []string) (map[string]string, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	pj, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("net2d: slice preprocessing: %w", err)
	}
	cj, err := json.Marshal(classes)
	if err != nil {
		return nil, fmt.Errorf("net2d: class names: %w", err)
	}
	return map[string]string{MetaSlices: string(pj), net3d.MetaClassNames: string(cj)}, nil
}

// ScanScore is a 2D model's score of a whole scan.
type ScanScore struct {
	// Logits are the aggregated scan logits z (K values); Probs their
	// softmax, computed in float64.
	Logits []float32
	Probs  []float64
	// Slices holds every slice's logits and pooled features.
	Slices *SliceScores
}

// ScoreScan scores every axial slice of v with m (ScoreSlices with
// p.Config()) and aggregates the slice logits as p says.
func ScoreScan(m Classifier, v *volume.Volume, p SlicePrep) (*ScanScore, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	agg, _ := ParseAggregation(p.Aggregation)
	ss, err := ScoreSlices(m, v, p.Config())
	if err != nil {
		return nil, err
	}
	z, err := Aggregate(ss.Logits, agg, p.TopK)
	if err != nil {
		return nil, err
	}
	out := &ScanScore{Logits: append([]float32(nil), z.Data()...), Slices: ss}
	if out.Probs, err = softmax64(out.Logits); err != nil {
		return nil, fmt.Errorf("net2d: score scan with %s: %w", m.Spec().Arch, err)
	}
	return out, nil
}

// softmax64 returns exp(z_c − max z)/Σ_k exp(z_k − max z) in float64; a
// non-finite logit is an error.
func softmax64(z []float32) ([]float64, error) {
	if len(z) == 0 {
		return nil, errors.New("no logits")
	}
	hi := math.Inf(-1)
	for c, v := range z {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("logit %d is %v", c, v)
		}
		hi = math.Max(hi, float64(v))
	}
	p := make([]float64, len(z))
	s := 0.0
	for c, v := range z {
		p[c] = math.Exp(float64(v) - hi)
		s += p[c]
	}
	for c := range p {
		p[c] /= s
	}
	return p, nil
}

// ResizeBatch returns x (N×C×H×W) resized bilinearly (align_corners false)
// to size×size, or x itself when it has that size already.
func ResizeBatch(x *tensor.Tensor, size int) (out *tensor.Tensor, err error) {
	if x == nil || x.Dim() != 4 || size < 1 {
		var shape []int
		if x != nil {
			shape = x.Shape()
		}
		return nil, fmt.Errorf("net2d: resize batch of shape %v to %d×%d: want N×C×H×W and a positive size", shape, size, size)
	}
	if x.Size(2) == size && x.Size(3) == size {
		return x, nil
	}
	err = tensor.Catch(func() { out = tensor.Interpolate(x, []int{size, size}, tensor.InterpLinear, false) })
	if err != nil {
		return nil, fmt.Errorf("net2d: resize batch: %w", err)
	}
	return out, nil
}
