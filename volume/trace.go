package volume

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
)

// Step is one recorded geometric transform: a map between the voxel grid it
// read (In) and the grid it produced (Out). Coordinates are fractional voxel
// indices (i, j, k) with voxel centres on whole numbers.
type Step interface {
	// Name is the operation, e.g. "resample_spacing", "crop", "flip",
	// "sample_slices", "resize", "rotate_zoom".
	Name() string
	// InDims and OutDims are the input and output grid sizes.
	InDims() [3]int
	OutDims() [3]int
	// OutToIn maps an output index to the input index it was read from.
	OutToIn(ijk [3]float64) [3]float64
	// InToOut is the inverse map; OutToIn(InToOut(x)) == x.
	InToOut(ijk [3]float64) [3]float64
}

// AxisAffine is a per-axis affine step: in[a] = Scale[a]*out[a] + Shift[a].
// It records resampling, resizing, crops and pads (Scale 1, Shift = offset)
// and flips (Scale -1, Shift n-1).
type AxisAffine struct {
	Op           string
	In, Out      [3]int
	Scale, Shift [3]float64
}

// Name returns the operation name.
func (s AxisAffine) Name() string { return s.Op }

// InDims returns the input grid size.
func (s AxisAffine) InDims() [3]int { return s.In }

// OutDims returns the output grid size.
func (s AxisAffine) OutDims() [3]int { return s.Out }

// OutToIn returns Scale*ijk + Shift per axis.
func (s AxisAffine) OutToIn(ijk [3]float64) [3]float64 {
	for a := 0; a < 3; a++ {
		ijk[a] = s.Scale[a]*ijk[a] + s.Shift[a]
	}
	return ijk
}

// InToOut returns (ijk - Shift)/Scale per axis.
func (s AxisAffine) InToOut(ijk [3]float64) [3]float64 {
	for a := 0; a < 3; a++ {
		ijk[a] = (ijk[a] - s.Shift[a]) / s.Scale[a]
	}
	return ijk
}

// Affine is a general affine step: in = Matrix·out + Shift (Matrix[r][c],
// row r gives input axis r). It records in-plane rotation and zoom.
type Affine struct {
	Op      string
	In, Out [3]int
	Matrix  [3][3]float64
	Shift   [3]float64
}

// Name returns the operation name.
func (s Affine) Name() string { return s.Op }

// InDims returns the input grid size.
func (s Affine) InDims() [3]int { return s.In }

// OutDims returns the output grid size.
func (s Affine) OutDims() [3]int { return s.Out }

// OutToIn returns Matrix·ijk + Shift.
func (s Affine) OutToIn(ijk [3]float64) [3]float64 {
	var r [3]float64
	for a := 0; a < 3; a++ {
		r[a] = s.Shift[a]
		for b := 0; b < 3; b++ {
			r[a] += s.Matrix[a][b] * ijk[b]
		}
	}
	return r
}

// InToOut returns Matrix⁻¹·(ijk - Shift). A singular Matrix gives NaNs.
func (s Affine) InToOut(ijk [3]float64) [3]float64 {
	inv, _ := invert3(s.Matrix)
	var r [3]float64
	for a := 0; a < 3; a++ {
		for b := 0; b < 3; b++ {
			r[a] += inv[a][b] * (ijk[b] - s.Shift[b])
		}
	}
	return r
}

// invert3 returns the inverse of m; ok is false (and the result NaN) when m
// is singular.
func invert3(m [3][3]float64) ([3][3]float64, bool) {
	det := m[0][0]*(m[1][1]*m[2][2]-m[1][2]*m[2][1]) -
		m[0][1]*(m[1][0]*m[2][2]-m[1][2]*m[2][0]) +
		m[0][2]*(m[1][0]*m[2][1]-m[1][1]*m[2][0])
	var r [3][3]float64
	if det == 0 || math.IsNaN(det) || math.IsInf(det, 0) {
		for a := range r {
			for b := range r[a] {
				r[a][b] = math.NaN()
			}
		}
		return r, false
	}
	for a := 0; a < 3; a++ {
		for b := 0; b < 3; b++ {
			// cofactor of m[b][a]
			r1, r2 := (b+1)%3, (b+2)%3
			c1, c2 := (a+1)%3, (a+2)%3
			r[a][b] = (m[r1][c1]*m[r2][c2] - m[r1][c2]*m[r2][c1]) / det
		}
	}
	return r, true
}

// SliceMap records slice sampling: output slice o is input slice Index[o]
// (Index non-decreasing). Along k, OutToIn is the piecewise-linear map
// through the points (o, Index[o]), extended beyond the first and last
// output slice with the slope of the neighbouring segment (1 where that
// segment is flat or there is one slice). InToOut inverts it; an input slice
// that was copied to several output slices maps to the middle of their run.
// Axes i and j pass through unchanged.
type SliceMap struct {
	In, Out [3]int
	Index   []int
}

// Name returns "sample_slices".
func (s SliceMap) Name() string { return "sample_slices" }

// InDims returns the input grid size.
func (s SliceMap) InDims() [3]int { return s.In }

// OutDims returns the output grid size.
func (s SliceMap) OutDims() [3]int { return s.Out }

// endSlopes returns the extrapolation slopes below the first and above the
// last output slice.
func (s SliceMap) endSlopes() (lo, hi float64) {
	lo, hi = 1, 1
	if n := len(s.Index); n > 1 {
		if g := s.Index[1] - s.Index[0]; g > 0 {
			lo = float64(g)
		}
		if g := s.Index[n-1] - s.Index[n-2]; g > 0 {
			hi = float64(g)
		}
	}
	return lo, hi
}

// OutToIn maps output slice coordinate ijk[2] to the input slice coordinate.
func (s SliceMap) OutToIn(ijk [3]float64) [3]float64 {
	ijk[2] = s.kOutToIn(ijk[2])
	return ijk
}

func (s SliceMap) kOutToIn(o float64) float64 {
	n := len(s.Index)
	if n == 0 || math.IsNaN(o) {
		return math.NaN()
	}
	lo, hi := s.endSlopes()
	switch {
	case o <= 0:
		return float64(s.Index[0]) + o*lo
	case o >= float64(n-1):
		return float64(s.Index[n-1]) + (o-float64(n-1))*hi
	}
	f := math.Floor(o)
	k := int(f)
	t := o - f
	return float64(s.Index[k])*(1-t) + float64(s.Index[k+1])*t
}

// InToOut maps input slice coordinate ijk[2] to the output slice coordinate.
func (s SliceMap) InToOut(ijk [3]float64) [3]float64 {
	ijk[2] = s.kInToOut(ijk[2])
	return ijk
}

func (s SliceMap) kInToOut(x float64) float64 {
	n := len(s.Index)
	if n == 0 || math.IsNaN(x) {
		return math.NaN()
	}
	if r := math.Round(x); math.Abs(x-r) < 1e-6 {
		x = r
	}
	lo, hi := s.endSlopes()
	first, last := float64(s.Index[0]), float64(s.Index[n-1])
	switch {
	case x < first:
		return (x - first) / lo
	case x > last:
		return float64(n-1) + (x-last)/hi
	}
	// a: first position with Index >= x; b: first position with Index > x.
	a := sort.Search(n, func(p int) bool { return float64(s.Index[p]) >= x })
	b := sort.Search(n, func(p int) bool { return float64(s.Index[p]) > x })
	if b > a { // x is a sampled slice, copied to positions a..b-1
		return float64(a+b-1) / 2
	}
	// Index[a-1] < x < Index[a]
	x0, x1 := float64(s.Index[a-1]), float64(s.Index[a])
	return float64(a-1) + (x-x0)/(x1-x0)
}

// Trace is the ordered list of geometric steps a pipeline applied, from the
// original grid (Steps[0].InDims) to the final grid (last OutDims).
// Intensity operations are not recorded: they do not move voxels.
type Trace struct {
	Steps []Step
}

// Append adds a step at the end.
func (t *Trace) Append(s Step) { t.Steps = append(t.Steps, s) }

// InToOut maps an index on the original grid to the final grid.
func (t Trace) InToOut(ijk [3]float64) [3]float64 {
	for _, s := range t.Steps {
		ijk = s.InToOut(ijk)
	}
	return ijk
}

// OutToIn maps an index on the final grid to the original grid.
func (t Trace) OutToIn(ijk [3]float64) [3]float64 {
	for i := len(t.Steps) - 1; i >= 0; i-- {
		ijk = t.Steps[i].OutToIn(ijk)
	}
	return ijk
}

// check verifies that consecutive steps agree on their grids and that the
// trace starts at orig and ends at out.
func (t Trace) check(orig, out [3]int) error {
	cur := orig
	for i, s := range t.Steps {
		if s == nil {
			return fmt.Errorf("volume: trace step %d is nil", i)
		}
		if s.InDims() != cur {
			return fmt.Errorf("volume: trace step %d (%s) reads a grid of %v, but the grid before it is %v", i, s.Name(), s.InDims(), cur)
		}
		cur = s.OutDims()
	}
	if cur != out {
		return fmt.Errorf("volume: trace ends on a grid of %v, but the map to bring back is %v", cur, out)
	}
	return nil
}

// MapBack resamples a map computed on the final grid (out, e.g. a CAM
// heatmap) onto the original grid: the result has orig's dims and geometry,
// and its voxel x holds out sampled trilinearly at t.InToOut(x). A voxel
// whose image leaves the extent [-0.5, n-0.5] of any intermediate or the
// final grid (it was cropped away or not sampled) gets 0; inside the extent
// coordinates are clamped to the outermost voxel centres.
func (t Trace) MapBack(out, orig *Volume) (*Volume, error) {
	if err := checkInput("map back", out); err != nil {
		return nil, err
	}
	if err := checkInput("map back (original grid)", orig); err != nil {
		return nil, err
	}
	if err := t.check(orig.Dims, out.Dims); err != nil {
		return nil, fmt.Errorf("map back: %w", err)
	}
	res := &Volume{Dims: orig.Dims, Spacing: orig.Spacing, Origin: orig.Origin, Direction: orig.Direction}
	if t.separable() {
		var taps [3]*axisTaps
		for a := 0; a < 3; a++ {
			taps[a] = newAxisTaps(out.Dims[a], orig.Dims[a], func(o int) float64 {
				x := float64(o)
				for _, s := range t.Steps {
					var p [3]float64
					p[a] = x
					x = s.InToOut(p)[a]
					if !inExtent(x, s.OutDims()[a]) {
						return math.NaN()
					}
				}
				return x
			}, Linear, true)
		}
		res.Voxels = applySeparable(out.Voxels, out.Dims, taps)
		return res, nil
	}
	maps := make([]func([3]float64) [3]float64, len(t.Steps))
	for i, s := range t.Steps {
		maps[i] = s.InToOut
		if af, ok := s.(Affine); ok {
			inv, _ := invert3(af.Matrix)
			maps[i] = func(p [3]float64) [3]float64 {
				var r [3]float64
				for a := 0; a < 3; a++ {
					for b := 0; b < 3; b++ {
						r[a] += inv[a][b] * (p[b] - af.Shift[b])
					}
				}
				return r
			}
		}
	}
	res.Voxels = make([]float32, len(orig.Voxels))
	nx, ny := orig.Dims[0], orig.Dims[1]
	forEachIndex(orig.Dims[2], func(k int) {
		for j := 0; j < ny; j++ {
			row := res.Voxels[(k*ny+j)*nx : (k*ny+j+1)*nx]
		voxel:
			for i := range row {
				p := [3]float64{float64(i), float64(j), float64(k)}
				for si, f := range maps {
					p = f(p)
					od := t.Steps[si].OutDims()
					for a := 0; a < 3; a++ {
						if !inExtent(p[a], od[a]) {
							continue voxel
						}
					}
				}
				row[i] = sampleAt(out, p, Linear, 0)
			}
		}
	})
	return res, nil
}

// separable reports whether every step maps each axis independently.
func (t Trace) separable() bool {
	for _, s := range t.Steps {
		switch s := s.(type) {
		case AxisAffine, SliceMap:
		case Affine:
			for a := 0; a < 3; a++ {
				for b := 0; b < 3; b++ {
					if a != b && s.Matrix[a][b] != 0 {
						return false
					}
				}
			}
		default:
			return false
		}
	}
	return true
}

// stepJSON is the wire form of a Step.
type stepJSON struct {
	Kind   string         `json:"kind"`
	Name   string         `json:"name,omitempty"`
	In     [3]int         `json:"in"`
	Out    [3]int         `json:"out"`
	Scale  *[3]float64    `json:"scale,omitempty"`
	Shift  *[3]float64    `json:"shift,omitempty"`
	Matrix *[3][3]float64 `json:"matrix,omitempty"`
	Index  []int          `json:"index,omitempty"`
}

// MarshalJSON writes {"steps":[...]} where each step is
// {"kind":"axis_affine","name":..,"in":[..],"out":[..],"scale":[..],"shift":[..]},
// {"kind":"affine",...,"matrix":[[..],..],"shift":[..]} or
// {"kind":"slice_map","in":..,"out":..,"index":[..]}.
func (t Trace) MarshalJSON() ([]byte, error) {
	steps := make([]stepJSON, len(t.Steps))
	for i, s := range t.Steps {
		switch s := s.(type) {
		case AxisAffine:
			sc, sh := s.Scale, s.Shift
			steps[i] = stepJSON{Kind: "axis_affine", Name: s.Op, In: s.In, Out: s.Out, Scale: &sc, Shift: &sh}
		case Affine:
			m, sh := s.Matrix, s.Shift
			steps[i] = stepJSON{Kind: "affine", Name: s.Op, In: s.In, Out: s.Out, Matrix: &m, Shift: &sh}
		case SliceMap:
			steps[i] = stepJSON{Kind: "slice_map", Name: s.Name(), In: s.In, Out: s.Out, Index: s.Index}
		default:
			return nil, fmt.Errorf("volume: trace step %d: cannot serialise step type %T", i, s)
		}
	}
	return json.Marshal(struct {
		Steps []stepJSON `json:"steps"`
	}{steps})
}

// UnmarshalJSON reads the form written by MarshalJSON and checks each step
// (known kind, positive dims, non-zero scales, invertible matrix, slice
// indices non-decreasing inside the input, chained grids).
func (t *Trace) UnmarshalJSON(data []byte) error {
	var w struct {
		Steps []stepJSON `json:"steps"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("volume: trace: %w", err)
	}
	steps := make([]Step, len(w.Steps))
	for i, s := range w.Steps {
		if err := checkDims("trace", s.In); err != nil {
			return fmt.Errorf("volume: trace step %d: input grid %v is invalid", i, s.In)
		}
		if err := checkDims("trace", s.Out); err != nil {
			return fmt.Errorf("volume: trace step %d: output grid %v is invalid", i, s.Out)
		}
		switch s.Kind {
		case "axis_affine":
			if s.Scale == nil || s.Shift == nil {
				return fmt.Errorf("volume: trace step %d (%s): axis_affine needs scale and shift", i, s.Name)
			}
			for a := 0; a < 3; a++ {
				if s.Scale[a] == 0 || math.IsNaN(s.Scale[a]) || math.IsInf(s.Scale[a], 0) {
					return fmt.Errorf("volume: trace step %d (%s): scale along axis %d is %v", i, s.Name, a, s.Scale[a])
				}
			}
			steps[i] = AxisAffine{Op: s.Name, In: s.In, Out: s.Out, Scale: *s.Scale, Shift: *s.Shift}
		case "affine":
			if s.Matrix == nil || s.Shift == nil {
				return fmt.Errorf("volume: trace step %d (%s): affine needs matrix and shift", i, s.Name)
			}
			if _, ok := invert3(*s.Matrix); !ok {
				return fmt.Errorf("volume: trace step %d (%s): matrix %v is singular", i, s.Name, *s.Matrix)
			}
			steps[i] = Affine{Op: s.Name, In: s.In, Out: s.Out, Matrix: *s.Matrix, Shift: *s.Shift}
		case "slice_map":
			if len(s.Index) != s.Out[2] {
				return fmt.Errorf("volume: trace step %d: slice_map has %d indices for %d output slices", i, len(s.Index), s.Out[2])
			}
			if s.In[0] != s.Out[0] || s.In[1] != s.Out[1] {
				return fmt.Errorf("volume: trace step %d: slice_map changes the in-plane size %v -> %v", i, s.In, s.Out)
			}
			for p, x := range s.Index {
				if x < 0 || x >= s.In[2] || (p > 0 && x < s.Index[p-1]) {
					return fmt.Errorf("volume: trace step %d: slice_map index %d is %d (must be non-decreasing in [0, %d))", i, p, x, s.In[2])
				}
			}
			steps[i] = SliceMap{In: s.In, Out: s.Out, Index: append([]int(nil), s.Index...)}
		default:
			return fmt.Errorf("volume: trace step %d: unknown kind %q (want axis_affine, affine or slice_map)", i, s.Kind)
		}
		if i > 0 && steps[i].InDims() != steps[i-1].OutDims() {
			return fmt.Errorf("volume: trace step %d reads a grid of %v, but step %d wrote %v", i, s.In, i-1, steps[i-1].OutDims())
		}
	}
	t.Steps = steps
	return nil
}
