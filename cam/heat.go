package cam

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// Normalization selects how a map is scaled to [0, 1].
type Normalization int

const (
	// MinMax is (x − min)/(max − min): the hottest voxel is 1, the coldest
	// 0. A constant map becomes all 0. This is the default.
	MinMax Normalization = iota
	// MinMaxInverted is MONAI's default_normalizer, 1 − (x − min)/(max −
	// min): the hottest voxel is 0. A constant map is left unchanged, as
	// MONAI's rescale_array does.
	MinMaxInverted
	// MaxDivide is the CovidNet3D code's (x − min)/max (visual_cam.py; the
	// divisor is the max, not the range): hot is high, the top value is
	// 1 − min/max, which exceeds 1 when min < 0 (as a CAM may be). A map
	// whose max is not positive becomes all 0.
	MaxDivide
)

// String returns "minmax", "minmax_inverted" or "max_divide".
func (n Normalization) String() string {
	switch n {
	case MinMax:
		return "minmax"
	case MinMaxInverted:
		return "minmax_inverted"
	case MaxDivide:
		return "max_divide"
	}
	return fmt.Sprintf("Normalization(%d)", int(n))
}

// HotIsHigh reports whether larger values mean more activation (false only
// for MinMaxInverted).
func (n Normalization) HotIsHigh() bool { return n != MinMaxInverted }

// ParseNormalization maps "minmax", "minmax_inverted" (or "monai") and
// "max_divide" (or "covidnet3d") to a Normalization.
func ParseNormalization(s string) (Normalization, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "minmax", "":
		return MinMax, nil
	case "minmax_inverted", "monai":
		return MinMaxInverted, nil
	case "max_divide", "covidnet3d":
		return MaxDivide, nil
	}
	return 0, fmt.Errorf("cam: unknown normalization %q (want minmax, minmax_inverted or max_divide)", s)
}

// MarshalText writes the String form.
func (n Normalization) MarshalText() ([]byte, error) { return []byte(n.String()), nil }

// UnmarshalText reads a name as ParseNormalization.
func (n *Normalization) UnmarshalText(b []byte) error {
	v, err := ParseNormalization(string(b))
	if err != nil {
		return err
	}
	*n = v
	return nil
}

// Normalize scales x in place as n describes, over all of x (one map).
// Non-finite values are an error.
func Normalize(x []float32, n Normalization) error {
	if len(x) == 0 {
		return nil
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, v := range x {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("cam: normalize: value %v at position %d", v, i)
		}
		lo, hi = math.Min(lo, f), math.Max(hi, f)
	}
	switch n {
	case MinMax, MinMaxInverted:
		if hi == lo {
			if n == MinMax {
				clear(x)
			}
			return nil
		}
		r := hi - lo
		for i, v := range x {
			y := (float64(v) - lo) / r
			if n == MinMaxInverted {
				y = 1 - y
			}
			x[i] = float32(y)
		}
	case MaxDivide:
		if !(hi > 0) {
			clear(x)
			return nil
		}
		for i, v := range x {
			x[i] = float32((float64(v) - lo) / hi)
		}
	default:
		return fmt.Errorf("cam: normalize: unknown normalization %d", int(n))
	}
	return nil
}

// Upsample resizes raw maps N×1×spatial… to the given spatial size with
// linear, bilinear or trilinear interpolation and align_corners = False
// (MONAI's default_upsampler, torch.nn.functional.interpolate).
func Upsample(raw *tensor.Tensor, size []int) (out *tensor.Tensor, err error) {
	if raw == nil || raw.Dim() < 3 || raw.Dim()-2 != len(size) {
		return nil, fmt.Errorf("cam: upsample: map of shape %v to spatial size %v", shapeOf(raw), size)
	}
	err = tensor.Catch(func() { out = tensor.Interpolate(raw.Detach(), size, tensor.InterpLinear, false) })
	if err != nil {
		return nil, fmt.Errorf("cam: upsample: %w", err)
	}
	return out, nil
}

func shapeOf(t *tensor.Tensor) []int {
	if t == nil {
		return nil
	}
	return t.Shape()
}

// InputFromVolume returns the network input for v: a 1×channels×S×R×C
// tensor (slices, rows, columns; voxel (i, j, k) at [0, ch, k, j, i]) with
// the voxels repeated in every channel.
func InputFromVolume(v *volume.Volume, channels int) (*tensor.Tensor, error) {
	if v == nil {
		return nil, errors.New("cam: input: nil volume")
	}
	if err := v.Validate(); err != nil {
		return nil, fmt.Errorf("cam: input: %w", err)
	}
	if channels < 1 {
		return nil, fmt.Errorf("cam: input: %d channels", channels)
	}
	n := len(v.Voxels)
	data := make([]float32, n*channels)
	for c := 0; c < channels; c++ {
		copy(data[c*n:], v.Voxels)
	}
	return tensor.New(data, 1, channels, v.Dims[2], v.Dims[1], v.Dims[0]), nil
}

// Heatmap is one class-activation map of a scan.
type Heatmap struct {
	// Method made the map.
	Method Method
	// Layer is the explained layer.
	Layer string
	// Class is the explained class; Score its logit and Probability its
	// softmax probability.
	Class       int
	Score       float32
	Probability float32
	// Logits are the network's outputs for the scan (one per class).
	Logits []float32
	// Raw is the map at the layer's resolution, 1×1×d×h×w.
	Raw *tensor.Tensor
	// Input holds the map upsampled to the network input and normalised
	// with hot = high (MinMax, or MaxDivide when that is chosen), on the
	// preprocessed grid (the geometry of the pipeline's output).
	Input *volume.Volume
	// Heat is the map on the original scan's grid and geometry, normalised
	// as Normalization says. Voxels that the preprocessing cropped away or
	// did not sample are cold (0, or 1 for MinMaxInverted).
	Heat *volume.Volume
	// Normalization is how Heat is scaled.
	Normalization Normalization
	// ScoreFactorDropped: see Map.
	ScoreFactorDropped bool
}

// Hot returns the heat on the scan grid with hot = high: Heat itself, or
// 1 − Heat for MinMaxInverted.
func (h *Heatmap) Hot() *volume.Volume {
	if h.Normalization.HotIsHigh() {
		return h.Heat
	}
	out := h.Heat.Clone()
	for i, v := range out.Voxels {
		out.Voxels[i] = 1 - v
	}
	return out
}

// Explain preprocesses scan with p (inference: no random ops), runs m on
// the result and returns one Heatmap per class of o (or for the argmax
// class). Each raw map is upsampled to the network input (trilinear,
// align_corners = False), normalised there with MinMax or MaxDivide (hot is
// high), mapped back to the scan's grid through the pipeline's Trace
// (Trace.MapBack: trilinear, 0 outside what the pipeline kept) and, for
// MinMaxInverted, inverted last (1 − x), so cropped-away voxels read as
// cold in every normalisation.
func Explain(m net3d.Classifier, p volume.Pipeline, scan *volume.Volume, o Options) ([]*Heatmap, error) {
	if m == nil {
		return nil, errors.New("cam: explain: nil model")
	}
	if scan == nil {
		return nil, errors.New("cam: explain: nil scan")
	}
	switch o.Normalization {
	case MinMax, MinMaxInverted, MaxDivide:
	default:
		return nil, fmt.Errorf("cam: explain: unknown normalization %d", int(o.Normalization))
	}
	pre, tr, err := p.Apply(scan, nil)
	if err != nil {
		return nil, fmt.Errorf("cam: explain: %w", err)
	}
	x, err := InputFromVolume(pre, m.Spec().InChannels)
	if err != nil {
		return nil, fmt.Errorf("cam: explain: %w", err)
	}
	res, err := Compute(m, x, o)
	if err != nil {
		return nil, err
	}
	probs := tensor.Softmax(res.Logits, 1)
	var out []*Heatmap
	for _, mp := range res.Maps {
		in, heat, err := ToScan(mp.Raw, pre, tr, scan, o.Normalization)
		if err != nil {
			return nil, fmt.Errorf("cam: explain: %w", err)
		}
		c := mp.Classes[0]
		out = append(out, &Heatmap{
			Method: o.Method, Layer: res.Layer, Class: c, Score: mp.Scores[0], Probability: probs.At(0, c),
			Logits: append([]float32(nil), res.Logits.Data()...),
			Raw:    mp.Raw, Input: in, Heat: heat, Normalization: o.Normalization, ScoreFactorDropped: mp.ScoreFactorDropped,
		})
	}
	return out, nil
}

// ToScan turns a raw map (1×1×d×h×w, from Compute on the preprocessed
// volume pre) into a heat volume on the original scan's grid: trilinear
// upsampling to pre's grid (align_corners false), normalisation there,
// Trace.MapBack onto scan (0 where the pipeline cropped or skipped voxels),
// a rescale so the hottest scan voxel is 1 again under MinMax (trilinear
// sampling can fall between the network-grid peak and its neighbours), and
// the inversion last for MinMaxInverted. It returns the map on pre's grid and
// on scan's grid.
func ToScan(raw *tensor.Tensor, pre *volume.Volume, tr volume.Trace, scan *volume.Volume, n Normalization) (in, heat *volume.Volume, err error) {
	up, err := Upsample(raw, []int{pre.Dims[2], pre.Dims[1], pre.Dims[0]})
	if err != nil {
		return nil, nil, err
	}
	norm := MinMax
	if n == MaxDivide {
		norm = MaxDivide
	}
	if err := Normalize(up.Data(), norm); err != nil {
		return nil, nil, err
	}
	in = &volume.Volume{Voxels: up.Data(), Dims: pre.Dims, Spacing: pre.Spacing, Origin: pre.Origin, Direction: pre.Direction}
	heat, err = tr.MapBack(in, scan)
	if err != nil {
		return nil, nil, err
	}
	if norm == MinMax {
		peak := float32(0)
		for _, v := range heat.Voxels {
			peak = max(peak, v)
		}
		if peak > 0 && peak < 1 {
			for i := range heat.Voxels {
				heat.Voxels[i] /= peak
			}
		}
	}
	if n == MinMaxInverted {
		for i, v := range heat.Voxels {
			heat.Voxels[i] = 1 - v
		}
	}
	return in, heat, nil
}
