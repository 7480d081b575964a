package volume

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
)

// Op is one preprocessing step of a Pipeline, serialised as a flat JSON
// object {"op": name, parameters...}. Parameters a step does not use must be
// absent (zero). The ops and their parameters:
//
//	window            center, width (HU) or preset ("lung", "mediastinum"): Window
//	normalize         method "minmax" or "zscore" over the whole volume
//	resample_spacing  spacing [3] mm, interp ("linear" default, "nearest"): ResampleSpacing
//	resample_shape    dims [3] (cols, rows, slices), interp: ResampleShape
//	resize            cols, rows, interp: ResizeSlices
//	center_crop       cols, rows, pad (value where the slice is smaller): CenterCrop
//	lung_crop         margin [3] voxels (default 0), threshold HU (default -320):
//	                  crop to LungBox with DefaultLungMaskOptions; needs HU, so
//	                  it must come before window/normalize
//	body_crop         margin [3] voxels (default 0), threshold HU (default
//	                  -500): crop to BodyBox, which does not move with lung
//	                  lesions; needs HU, so it must come before window/normalize
//	sample_slices     n, mode "symmetric" (always SymmetricSliceIndices) or
//	                  "random" (RandomSliceIndices when Apply gets a random
//	                  source, SymmetricSliceIndices when it gets nil)
//	random_flip       axes (default [0 1 2]), prob per axis (default 0.5), p
//	                  (probability the op acts at all, default 1; torchio's
//	                  RandomFlip(flip_probability=prob, p=p)): Flip
//	random_affine     degrees (angle uniform in [-degrees, degrees]),
//	                  scale_min, scale_max (zoom uniform in that range, default
//	                  1), interp, pad: RotateZoom
//	random_intensity  scale, shift: x·f + o, f uniform in [1-scale, 1+scale],
//	                  o uniform in [-shift, shift]: AdjustIntensity
//	random_noise      std: AddGaussianNoise with a seed drawn from the source
//
// random_* ops act only when Apply is given a random source (training);
// with nil they are skipped, so inference is deterministic.
type Op struct {
	Op        string    `json:"op"`
	Preset    string    `json:"preset,omitempty"`
	Center    float64   `json:"center,omitempty"`
	Width     float64   `json:"width,omitempty"`
	Method    string    `json:"method,omitempty"`
	Spacing   []float64 `json:"spacing,omitempty"`
	Dims      []int     `json:"dims,omitempty"`
	Cols      int       `json:"cols,omitempty"`
	Rows      int       `json:"rows,omitempty"`
	Interp    string    `json:"interp,omitempty"`
	Pad       float64   `json:"pad,omitempty"`
	Margin    []int     `json:"margin,omitempty"`
	Threshold *float64  `json:"threshold,omitempty"`
	N         int       `json:"n,omitempty"`
	Mode      string    `json:"mode,omitempty"`
	Axes      []int     `json:"axes,omitempty"`
	Prob      float64   `json:"prob,omitempty"`
	P         float64   `json:"p,omitempty"`
	Degrees   float64   `json:"degrees,omitempty"`
	ScaleMin  float64   `json:"scale_min,omitempty"`
	ScaleMax  float64   `json:"scale_max,omitempty"`
	Scale     float64   `json:"scale,omitempty"`
	Shift     float64   `json:"shift,omitempty"`
	Std       float64   `json:"std,omitempty"`
}

// opParams lists the parameters each op accepts.
var opParams = map[string][]string{
	"window":           {"center", "width", "preset"},
	"normalize":        {"method"},
	"resample_spacing": {"spacing", "interp"},
	"resample_shape":   {"dims", "interp"},
	"resize":           {"cols", "rows", "interp"},
	"center_crop":      {"cols", "rows", "pad"},
	"lung_crop":        {"margin", "threshold"},
	"body_crop":        {"margin", "threshold"},
	"sample_slices":    {"n", "mode"},
	"random_flip":      {"axes", "prob", "p"},
	"random_affine":    {"degrees", "scale_min", "scale_max", "interp", "pad"},
	"random_intensity": {"scale", "shift"},
	"random_noise":     {"std"},
}

// Validate reports an unknown op, a parameter the op does not take, or a
// parameter value out of range.
func (o Op) Validate() error {
	allowed, ok := opParams[o.Op]
	if !ok {
		names := make([]string, 0, len(opParams))
		for n := range opParams {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("unknown op %q (want one of %s)", o.Op, strings.Join(names, ", "))
	}
	raw, err := json.Marshal(o)
	if err != nil {
		return err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return err
	}
	for f := range fields {
		if f == "op" {
			continue
		}
		found := false
		for _, a := range allowed {
			found = found || a == f
		}
		if !found {
			return fmt.Errorf("op %s does not take parameter %q (it takes %s)", o.Op, f, strings.Join(allowed, ", "))
		}
	}
	finite := func(name string, x float64) error {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("op %s: %s is %v", o.Op, name, x)
		}
		return nil
	}
	for _, c := range []struct {
		n string
		x float64
	}{{"center", o.Center}, {"width", o.Width}, {"pad", o.Pad}, {"prob", o.Prob}, {"p", o.P}, {"degrees", o.Degrees},
		{"scale_min", o.ScaleMin}, {"scale_max", o.ScaleMax}, {"scale", o.Scale}, {"shift", o.Shift}, {"std", o.Std}} {
		if err := finite(c.n, c.x); err != nil {
			return err
		}
	}
	if o.Interp != "" {
		if _, err := ParseInterp(o.Interp); err != nil {
			return fmt.Errorf("op %s: %w", o.Op, err)
		}
	}
	switch o.Op {
	case "window":
		if o.Preset != "" {
			if o.Width != 0 || o.Center != 0 {
				return fmt.Errorf("op window: give either preset or center/width, not both")
			}
			_, err := WindowPreset(o.Preset)
			return err
		}
		if !(o.Width > 0) {
			return fmt.Errorf("op window: width %v (must be positive, or give a preset)", o.Width)
		}
	case "normalize":
		if o.Method != "minmax" && o.Method != "zscore" {
			return fmt.Errorf("op normalize: method %q (want minmax or zscore)", o.Method)
		}
	case "resample_spacing":
		if len(o.Spacing) != 3 {
			return fmt.Errorf("op resample_spacing: spacing has %d values (want 3)", len(o.Spacing))
		}
		for a, s := range o.Spacing {
			if !(s > 0) || math.IsInf(s, 0) {
				return fmt.Errorf("op resample_spacing: spacing along axis %d is %v mm", a, s)
			}
		}
	case "resample_shape":
		if len(o.Dims) != 3 {
			return fmt.Errorf("op resample_shape: dims has %d values (want 3)", len(o.Dims))
		}
		if err := checkDims("op resample_shape", [3]int(o.Dims)); err != nil {
			return err
		}
	case "resize", "center_crop":
		if err := checkDims("op "+o.Op, [3]int{o.Cols, o.Rows, 1}); err != nil {
			return err
		}
	case "lung_crop", "body_crop":
		if o.Margin != nil && len(o.Margin) != 3 {
			return fmt.Errorf("op %s: margin has %d values (want 3)", o.Op, len(o.Margin))
		}
		for _, m := range o.Margin {
			if m < 0 {
				return fmt.Errorf("op %s: negative margin %v", o.Op, o.Margin)
			}
		}
		if o.Threshold != nil {
			if err := finite("threshold", *o.Threshold); err != nil {
				return err
			}
		}
	case "sample_slices":
		if o.N < 1 {
			return fmt.Errorf("op sample_slices: n is %d (must be at least 1)", o.N)
		}
		if o.Mode != "symmetric" && o.Mode != "random" {
			return fmt.Errorf("op sample_slices: mode %q (want symmetric or random)", o.Mode)
		}
	case "random_flip":
		for _, a := range o.Axes {
			if a < 0 || a > 2 {
				return fmt.Errorf("op random_flip: axis %d (want 0, 1 or 2)", a)
			}
		}
		if o.Prob < 0 || o.Prob > 1 || o.P < 0 || o.P > 1 {
			return fmt.Errorf("op random_flip: prob %v, p %v (want probabilities)", o.Prob, o.P)
		}
	case "random_affine":
		lo, hi := o.scaleRange()
		if !(lo > 0) || hi < lo || o.Degrees < 0 {
			return fmt.Errorf("op random_affine: degrees %v, scale range [%v, %v] (want degrees >= 0 and 0 < scale_min <= scale_max)", o.Degrees, lo, hi)
		}
	case "random_intensity":
		if o.Scale < 0 || o.Scale >= 1 || o.Shift < 0 {
			return fmt.Errorf("op random_intensity: scale %v, shift %v (want 0 <= scale < 1, shift >= 0)", o.Scale, o.Shift)
		}
	case "random_noise":
		if o.Std < 0 {
			return fmt.Errorf("op random_noise: std %v (must be >= 0)", o.Std)
		}
	}
	return nil
}

// scaleRange returns the zoom range of random_affine (defaults 1).
func (o Op) scaleRange() (float64, float64) {
	lo, hi := o.ScaleMin, o.ScaleMax
	if lo == 0 {
		lo = 1
	}
	if hi == 0 {
		hi = max(1, lo)
	}
	return lo, hi
}

// Pipeline is an ordered list of preprocessing ops, serialised as a JSON
// array; a checkpoint stores it so scoring repeats training's steps.
type Pipeline []Op

// Validate checks every op.
func (p Pipeline) Validate() error {
	for i, o := range p {
		if err := o.Validate(); err != nil {
			return fmt.Errorf("volume: pipeline step %d: %w", i, err)
		}
	}
	return nil
}

// ParsePipeline decodes a JSON array of ops, rejecting unknown keys and
// invalid ops.
func ParsePipeline(data []byte) (Pipeline, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Pipeline
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("volume: pipeline: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("volume: pipeline: trailing data after the array")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// CovidNet3DPipeline returns the CovidNet3D-style preparation of a HU
// volume to size×size×depth: the lung window of the CC-CCII slice images
// ([-1200, 600] HU, center -300 width 1800), slice sampling to depth
// ("random": RandomResampler in training, SymmetricalResampler at
// inference), bilinear resize to floor(1.25·size) and centre crop to size,
// torchio-style random flips (p 0.5, per axis 0.5; training only) and the
// HKBU per-volume z-score.
func CovidNet3DPipeline(size, depth int) Pipeline {
	big := size * 5 / 4
	return Pipeline{
		{Op: "window", Center: -300, Width: 1800},
		{Op: "sample_slices", N: depth, Mode: "random"},
		{Op: "resize", Cols: big, Rows: big},
		{Op: "center_crop", Cols: size, Rows: size},
		{Op: "random_flip", Axes: []int{0, 1, 2}, Prob: 0.5, P: 0.5},
		{Op: "normalize", Method: "zscore"},
	}
}

// Apply runs the ops in order on v (which is not modified) and returns the
// result with the Trace of its geometric steps. rng is the random source of
// training-time ops; nil means inference: random_* ops are skipped and
// sample_slices "random" uses the symmetric sampler.
func (p Pipeline) Apply(v *Volume, rng *rand.Rand) (*Volume, Trace, error) {
	if err := checkInput("pipeline", v); err != nil {
		return nil, Trace{}, err
	}
	if err := p.Validate(); err != nil {
		return nil, Trace{}, err
	}
	var tr Trace
	cur := v
	for i, o := range p {
		next, steps, err := o.apply(cur, rng)
		if err != nil {
			return nil, Trace{}, fmt.Errorf("volume: pipeline step %d (%s): %w", i, o.Op, err)
		}
		for _, s := range steps {
			tr.Append(s)
		}
		cur = next
	}
	if cur == v {
		cur = v.Clone()
	}
	return cur, tr, nil
}

// apply runs one validated op.
func (o Op) apply(v *Volume, rng *rand.Rand) (*Volume, []Step, error) {
	interp, _ := ParseInterp(o.Interp)
	one := func(out *Volume, s Step, err error) (*Volume, []Step, error) {
		if err != nil {
			return nil, nil, err
		}
		return out, []Step{s}, nil
	}
	switch o.Op {
	case "window":
		w := WindowLevel{Center: o.Center, Width: o.Width}
		if o.Preset != "" {
			w, _ = WindowPreset(o.Preset)
		}
		out, err := w.Apply(v)
		return out, nil, err
	case "normalize":
		var out *Volume
		var err error
		if o.Method == "minmax" {
			out, err = NormalizeMinMax(v, nil)
		} else {
			out, err = NormalizeZScore(v, nil)
		}
		return out, nil, err
	case "resample_spacing":
		return one(ResampleSpacing(v, [3]float64(o.Spacing), interp))
	case "resample_shape":
		return one(ResampleShape(v, [3]int(o.Dims), interp))
	case "resize":
		return one(ResizeSlices(v, o.Cols, o.Rows, interp))
	case "center_crop":
		return one(CenterCrop(v, o.Cols, o.Rows, float32(o.Pad)))
	case "lung_crop":
		opt := DefaultLungMaskOptions
		if o.Threshold != nil {
			opt.Threshold = *o.Threshold
		}
		var margin [3]int
		if o.Margin != nil {
			margin = [3]int(o.Margin)
		}
		b, err := LungBox(v, opt, margin)
		if err != nil {
			return nil, nil, err
		}
		return one(CropBox(v, b))
	case "body_crop":
		th := float64(DefaultBodyThreshold)
		if o.Threshold != nil {
			th = *o.Threshold
		}
		var margin [3]int
		if o.Margin != nil {
			margin = [3]int(o.Margin)
		}
		b, err := BodyBox(v, th, margin)
		if err != nil {
			return nil, nil, err
		}
		return one(CropBox(v, b))
	case "sample_slices":
		var idx []int
		var err error
		if o.Mode == "random" && rng != nil {
			idx, err = RandomSliceIndices(v.Dims[2], o.N, rng)
		} else {
			idx, err = SymmetricSliceIndices(v.Dims[2], o.N)
		}
		if err != nil {
			return nil, nil, err
		}
		return one(SampleSlices(v, idx))
	}
	if rng == nil {
		return v, nil, nil
	}
	switch o.Op {
	case "random_flip":
		axes := o.Axes
		if axes == nil {
			axes = []int{0, 1, 2}
		}
		prob, p := o.Prob, o.P
		if prob == 0 {
			prob = 0.5
		}
		if p == 0 {
			p = 1
		}
		if rng.Float64() >= p {
			return v, nil, nil
		}
		var steps []Step
		for _, a := range axes {
			if rng.Float64() >= prob {
				continue
			}
			out, s, err := Flip(v, a)
			if err != nil {
				return nil, nil, err
			}
			v = out
			steps = append(steps, s)
		}
		return v, steps, nil
	case "random_affine":
		lo, hi := o.scaleRange()
		deg := (2*rng.Float64() - 1) * o.Degrees
		sc := lo + (hi-lo)*rng.Float64()
		return one(RotateZoom(v, deg, sc, interp, float32(o.Pad)))
	case "random_intensity":
		f := 1 + (2*rng.Float64()-1)*o.Scale
		off := (2*rng.Float64() - 1) * o.Shift
		out, err := AdjustIntensity(v, f, off)
		return out, nil, err
	case "random_noise":
		out, err := AddGaussianNoise(v, o.Std, rng.Uint64())
		return out, nil, err
	}
	return nil, nil, fmt.Errorf("unknown op %q", o.Op)
}
