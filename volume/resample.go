package volume

import (
	"fmt"
	"math"
	"sort"
)

// Interp selects how a resampling transform reads between voxel centres.
type Interp int

const (
	// Linear is trilinear interpolation (bilinear for an in-plane resize),
	// PyTorch's F.interpolate mode "trilinear"/"bilinear" with
	// align_corners=False: source indices are clamped to [0, n-1], so the
	// half voxel at each border repeats the edge voxel.
	Linear Interp = iota
	// Nearest takes the voxel whose centre is nearest, index
	// floor(x + 0.5) clamped to [0, n-1]; this is PyTorch's "nearest-exact",
	// not its legacy "nearest" (floor(out*n/m)).
	Nearest
)

// String returns "linear" or "nearest".
func (m Interp) String() string {
	switch m {
	case Linear:
		return "linear"
	case Nearest:
		return "nearest"
	}
	return fmt.Sprintf("Interp(%d)", int(m))
}

// ParseInterp maps "linear" (or "", "trilinear", "bilinear") and "nearest"
// to an Interp.
func ParseInterp(s string) (Interp, error) {
	switch s {
	case "", "linear", "trilinear", "bilinear":
		return Linear, nil
	case "nearest":
		return Nearest, nil
	}
	return 0, fmt.Errorf("volume: unknown interpolation %q (want linear or nearest)", s)
}

// ResampleSpacing resamples v onto a grid with the given spacing (mm along
// i, j, k). Convention (centre-preserving): the output has
// m = max(1, round(n·s/s')) voxels per axis and the same grid centre in
// patient space as v, so output index o reads input index
//
//	x = (o - (m-1)/2)·s'/s + (n-1)/2.
//
// When n·s/s' is a whole number this is exactly F.interpolate with
// size=m, align_corners=False (the physical extent n·s is kept); otherwise
// the extent m·s' differs from n·s by less than one output voxel, split
// evenly at both ends. (SimpleITK recipes that keep the origin instead
// place voxel 0 at the same point; the two differ by a sub-voxel shift.)
// Origin and Spacing are updated so every output voxel's patient position
// is the position of the input point it was read from; Direction is kept.
func ResampleSpacing(v *Volume, spacing [3]float64, interp Interp) (*Volume, Step, error) {
	const what = "resample to spacing"
	if err := checkInput(what, v); err != nil {
		return nil, nil, err
	}
	var dims [3]int
	var scale, shift [3]float64
	for a := 0; a < 3; a++ {
		if !(spacing[a] > 0) || math.IsInf(spacing[a], 0) {
			return nil, nil, fmt.Errorf("volume: %s: target spacing along axis %d is %v mm (must be positive)", what, a, spacing[a])
		}
		m := math.Round(float64(v.Dims[a]) * v.Spacing[a] / spacing[a])
		if m > MaxVoxels {
			return nil, nil, fmt.Errorf("volume: %s: spacing %v gives %v voxels along axis %d, over the limit of %d", what, spacing, m, a, MaxVoxels)
		}
		dims[a] = max(1, int(m))
		scale[a] = spacing[a] / v.Spacing[a]
		shift[a] = float64(v.Dims[a]-1)/2 - float64(dims[a]-1)/2*scale[a]
	}
	out, step, err := resampleAxes(v, "resample_spacing", dims, scale, shift, interp)
	if err == nil {
		out.Spacing = spacing // exactly as asked (s·(s'/s) may round)
	}
	return out, step, err
}

// ResampleShape resamples v onto a grid of the given dims (columns, rows,
// slices) covering the same physical extent, with align_corners=False
// semantics: output index o along an axis of n input and m output voxels
// reads input index x = (o + 0.5)·n/m - 0.5. The new spacing is s·n/m and
// the origin is the patient position of input index 0.5·n/m - 0.5.
func ResampleShape(v *Volume, dims [3]int, interp Interp) (*Volume, Step, error) {
	const what = "resample to shape"
	if err := checkInput(what, v); err != nil {
		return nil, nil, err
	}
	return resampleShape(v, what, "resample_shape", dims, interp)
}

// ResizeSlices resizes every slice to cols×rows pixels (bilinear for
// Linear), leaving the slice axis untouched; the mapping and geometry are
// those of ResampleShape with dims (cols, rows, Dims[2]).
func ResizeSlices(v *Volume, cols, rows int, interp Interp) (*Volume, Step, error) {
	const what = "resize slices"
	if err := checkInput(what, v); err != nil {
		return nil, nil, err
	}
	return resampleShape(v, what, "resize", [3]int{cols, rows, v.Dims[2]}, interp)
}

func resampleShape(v *Volume, what, name string, dims [3]int, interp Interp) (*Volume, Step, error) {
	if err := checkDims(what, dims); err != nil {
		return nil, nil, err
	}
	var scale, shift [3]float64
	for a := 0; a < 3; a++ {
		scale[a] = float64(v.Dims[a]) / float64(dims[a])
		shift[a] = 0.5*scale[a] - 0.5
	}
	return resampleAxes(v, name, dims, scale, shift, interp)
}

// resampleAxes resamples v with the per-axis map in = scale*out + shift.
func resampleAxes(v *Volume, name string, dims [3]int, scale, shift [3]float64, interp Interp) (*Volume, Step, error) {
	if interp != Linear && interp != Nearest {
		return nil, nil, fmt.Errorf("volume: %s: unknown interpolation %v", name, interp)
	}
	if err := checkDims(name, dims); err != nil {
		return nil, nil, err
	}
	A, b := diagAffine(scale, shift)
	out, err := reframe(v, dims, A, b)
	if err != nil {
		return nil, nil, fmt.Errorf("volume: %s: %w", name, err)
	}
	step := AxisAffine{Op: name, In: v.Dims, Out: dims, Scale: scale, Shift: shift}
	var taps [3]*axisTaps
	for a := 0; a < 3; a++ {
		if dims[a] == v.Dims[a] && scale[a] == 1 && shift[a] == 0 {
			continue
		}
		sc, sh := scale[a], shift[a]
		taps[a] = newAxisTaps(v.Dims[a], dims[a], func(o int) float64 { return sc*float64(o) + sh }, interp, false)
	}
	out.Voxels = applySeparable(v.Voxels, v.Dims, taps)
	return out, step, nil
}

// axisTaps is a 1-D two-tap resampling along one axis: output index o is
// w0[o]*in[i0[o]] + w1[o]*in[i1[o]].
type axisTaps struct {
	m      int
	i0, i1 []int32
	w0, w1 []float32
}

// newAxisTaps builds the taps for an axis of n input voxels and m outputs
// where output o reads input coordinate x(o). Coordinates are clamped to
// [0, n-1]; with zeroOutside, a coordinate outside the extent
// [-0.5, n-0.5] gets zero weights instead.
func newAxisTaps(n, m int, x func(o int) float64, interp Interp, zeroOutside bool) *axisTaps {
	t := &axisTaps{m: m, i0: make([]int32, m), i1: make([]int32, m), w0: make([]float32, m), w1: make([]float32, m)}
	for o := 0; o < m; o++ {
		p := x(o)
		if math.IsNaN(p) || (zeroOutside && !inExtent(p, n)) {
			continue
		}
		p = math.Max(0, math.Min(p, float64(n-1)))
		if interp == Nearest {
			r := int32(math.Floor(p + 0.5))
			if int(r) > n-1 {
				r = int32(n - 1)
			}
			t.i0[o], t.i1[o], t.w0[o] = r, r, 1
			continue
		}
		f := math.Floor(p)
		i0 := int32(f)
		i1 := i0
		if int(i0) < n-1 {
			i1 = i0 + 1
		}
		w := float32(p - f)
		t.i0[o], t.i1[o], t.w0[o], t.w1[o] = i0, i1, 1-w, w
	}
	return t
}

// extentTol absorbs rounding when a mapped coordinate lands on the edge of a
// grid's extent.
const extentTol = 1e-6

// inExtent reports whether coordinate x lies in the extent [-0.5, n-0.5] of
// an axis of n voxels.
func inExtent(x float64, n int) bool {
	return x >= -0.5-extentTol && x <= float64(n)-0.5+extentTol
}

// applySeparable applies the per-axis taps (nil = identity) to a voxel array
// of the given dims and returns the new array. Axes are processed in order
// of increasing output/input size ratio, so shrinking passes run first.
func applySeparable(in []float32, dims [3]int, taps [3]*axisTaps) []float32 {
	order := []int{0, 1, 2}
	ratio := func(a int) float64 {
		if taps[a] == nil {
			return 1
		}
		return float64(taps[a].m) / float64(dims[a])
	}
	sort.SliceStable(order, func(x, y int) bool { return ratio(order[x]) < ratio(order[y]) })
	cur := in
	copied := false
	for _, a := range order {
		if taps[a] == nil {
			continue
		}
		cur, dims = applyAxis(cur, dims, a, taps[a])
		copied = true
	}
	if !copied {
		cur = append([]float32(nil), in...)
	}
	return cur
}

// applyAxis resamples along one axis.
func applyAxis(in []float32, dims [3]int, axis int, t *axisTaps) ([]float32, [3]int) {
	n := dims[axis]
	inner, outer := 1, 1
	for a := 0; a < axis; a++ {
		inner *= dims[a]
	}
	for a := axis + 1; a < 3; a++ {
		outer *= dims[a]
	}
	od := dims
	od[axis] = t.m
	out := make([]float32, od[0]*od[1]*od[2])
	m := t.m
	if inner == 1 {
		i0, i1, w0, w1 := t.i0[:m], t.i1[:m], t.w0[:m], t.w1[:m]
		forEachIndex(outer, func(r int) {
			src := in[r*n : (r+1)*n]
			dst := out[r*m : (r+1)*m]
			for o := range dst {
				dst[o] = w0[o]*src[i0[o]] + w1[o]*src[i1[o]]
			}
		})
		return out, od
	}
	forEachIndex(outer*m, func(item int) {
		r, o := item/m, item%m
		dst := out[(r*m+o)*inner : (r*m+o+1)*inner]
		a := in[(r*n+int(t.i0[o]))*inner : (r*n+int(t.i0[o])+1)*inner]
		b := in[(r*n+int(t.i1[o]))*inner : (r*n+int(t.i1[o])+1)*inner]
		w0, w1 := t.w0[o], t.w1[o]
		switch {
		case w1 == 0 && w0 == 1:
			copy(dst, a)
		case w1 == 0 && w0 == 0:
			// zero weights: dst stays zero
		default:
			for x := range dst {
				dst[x] = w0*a[x] + w1*b[x]
			}
		}
	})
	return out, od
}

// sampleAt returns v at the fractional index p: trilinear (or nearest)
// between voxel centres, coordinates clamped to [0, n-1] inside the extent
// [-0.5, n-0.5], and fill outside it.
func sampleAt(v *Volume, p [3]float64, interp Interp, fill float32) float32 {
	var i0, i1 [3]int
	var w [3]float32
	for a := 0; a < 3; a++ {
		n := v.Dims[a]
		if math.IsNaN(p[a]) || !inExtent(p[a], n) {
			return fill
		}
		x := math.Max(0, math.Min(p[a], float64(n-1)))
		if interp == Nearest {
			r := min(int(math.Floor(x+0.5)), n-1)
			i0[a], i1[a] = r, r
			continue
		}
		f := math.Floor(x)
		i0[a] = int(f)
		i1[a] = min(i0[a]+1, n-1)
		w[a] = float32(x - f)
	}
	nx, nxy := v.Dims[0], v.Dims[0]*v.Dims[1]
	at := func(i, j, k int) float32 { return v.Voxels[k*nxy+j*nx+i] }
	c00 := at(i0[0], i0[1], i0[2])*(1-w[0]) + at(i1[0], i0[1], i0[2])*w[0]
	c10 := at(i0[0], i1[1], i0[2])*(1-w[0]) + at(i1[0], i1[1], i0[2])*w[0]
	c01 := at(i0[0], i0[1], i1[2])*(1-w[0]) + at(i1[0], i0[1], i1[2])*w[0]
	c11 := at(i0[0], i1[1], i1[2])*(1-w[0]) + at(i1[0], i1[1], i1[2])*w[0]
	c0 := c00*(1-w[1]) + c10*w[1]
	c1 := c01*(1-w[1]) + c11*w[1]
	return c0*(1-w[2]) + c1*w[2]
}
