package volume

import (
	"fmt"
	"math"
	"sort"
	"sync"
)

// Mask is a binary mask on a voxel grid: Bits[(k*Dims[1]+j)*Dims[0]+i] is
// voxel (i, j, k), the layout of Volume.Voxels.
type Mask struct {
	Bits []bool
	Dims [3]int
}

// NewMask returns an all-false mask of the given dims.
func NewMask(dims [3]int) *Mask {
	return &Mask{Bits: make([]bool, dims[0]*dims[1]*dims[2]), Dims: dims}
}

// Count returns the number of true voxels.
func (m *Mask) Count() int {
	n := 0
	for _, b := range m.Bits {
		if b {
			n++
		}
	}
	return n
}

// BoundingBox returns the smallest box holding every true voxel; ok is
// false when the mask is empty.
func (m *Mask) BoundingBox() (b Box, ok bool) {
	b.Min = m.Dims
	nx, ny := m.Dims[0], m.Dims[1]
	for k := 0; k < m.Dims[2]; k++ {
		for j := 0; j < ny; j++ {
			row := m.Bits[(k*ny+j)*nx : (k*ny+j+1)*nx]
			for i, x := range row {
				if !x {
					continue
				}
				ok = true
				p := [3]int{i, j, k}
				for a := 0; a < 3; a++ {
					b.Min[a] = min(b.Min[a], p[a])
					b.Max[a] = max(b.Max[a], p[a]+1)
				}
			}
		}
	}
	if !ok {
		return Box{}, false
	}
	return b, true
}

// ToVolume returns the mask as a volume (1 inside, 0 outside) with the
// geometry of geom, whose dims must match.
func (m *Mask) ToVolume(geom *Volume) (*Volume, error) {
	if geom == nil || geom.Dims != m.Dims || len(m.Bits) != m.Dims[0]*m.Dims[1]*m.Dims[2] {
		return nil, fmt.Errorf("volume: mask to volume: mask of %v does not match the geometry volume", m.Dims)
	}
	out := &Volume{Voxels: make([]float32, len(m.Bits)), Dims: m.Dims, Spacing: geom.Spacing, Origin: geom.Origin, Direction: geom.Direction}
	for p, b := range m.Bits {
		if b {
			out.Voxels[p] = 1
		}
	}
	return out, nil
}

// LungMaskOptions configures LungMask.
type LungMaskOptions struct {
	// Threshold in HU: voxels strictly below it are air (lung) candidates.
	Threshold float64
	// Connectivity of the 3-D components: 6 (faces) or 26 (faces, edges,
	// corners).
	Connectivity int
	// Components is how many of the largest 3-D components are kept.
	Components int
	// MinFraction drops a kept component smaller than MinFraction times
	// the largest one (0 keeps all Components).
	MinFraction float64
}

// DefaultLungMaskOptions are the defaults: < -320 HU, 6-connectivity, the
// two largest components.
var DefaultLungMaskOptions = LungMaskOptions{Threshold: -320, Connectivity: 6, Components: 2}

// LungMask segments the lungs of a CT volume in HU:
//  1. candidates: voxels < o.Threshold;
//  2. per slice, candidates 4-connected to the in-plane border (air around
//     the body, table gaps) are removed;
//  3. the o.Components largest 3-D connected components of the remaining
//     candidates (o.Connectivity) are kept (ties: the one met first in
//     voxel order);
//  4. per slice, holes (background not 4-connected to the border: vessels,
//     nodules) are filled.
//
// It is iterative (explicit stacks) and uses about two bytes per voxel
// besides the result.
func LungMask(v *Volume, o LungMaskOptions) (*Mask, error) {
	const what = "lung mask"
	if err := checkInput(what, v); err != nil {
		return nil, err
	}
	if o.Connectivity != 6 && o.Connectivity != 26 {
		return nil, fmt.Errorf("volume: %s: connectivity %d (want 6 or 26)", what, o.Connectivity)
	}
	if o.Components < 1 {
		return nil, fmt.Errorf("volume: %s: keeps %d components (want at least 1)", what, o.Components)
	}
	if math.IsNaN(o.Threshold) || !(o.MinFraction >= 0 && o.MinFraction <= 1) {
		return nil, fmt.Errorf("volume: %s: threshold %v, min fraction %v (want a number and a fraction in [0, 1])", what, o.Threshold, o.MinFraction)
	}
	nx, ny, nz := v.Dims[0], v.Dims[1], v.Dims[2]
	plane := nx * ny
	th := float32(o.Threshold)
	if float64(th) < o.Threshold { // x < th must mean float64(x) < Threshold
		th = math.Nextafter32(th, float32(math.Inf(1)))
	}
	state := make([]uint8, len(v.Voxels))
	forEachIndex(nz, func(k int) {
		s := state[k*plane : (k+1)*plane]
		for p, x := range v.Voxels[k*plane : (k+1)*plane] {
			if x < th {
				s[p] = floodCandidate
			}
		}
		floodFromBorder2D(s, nx, ny, floodCandidate, floodBg)
	})

	type comp struct{ seed, size int }
	var comps []comp
	var stack []int32
	for p := range state {
		if state[p] != floodCandidate {
			continue
		}
		var n int
		n, stack = flood3D(state, v.Dims, p, floodCandidate, floodLabelled, o.Connectivity, stack)
		comps = append(comps, comp{p, n})
	}
	sort.SliceStable(comps, func(a, b int) bool { return comps[a].size > comps[b].size })
	for c := 0; c < len(comps) && c < o.Components; c++ {
		if float64(comps[c].size) < o.MinFraction*float64(comps[0].size) {
			break
		}
		_, stack = flood3D(state, v.Dims, comps[c].seed, floodLabelled, floodKept, o.Connectivity, stack)
	}

	return filledMask(state, v.Dims, floodKept), nil
}

// Voxel states of the segmentations' flood fills.
const (
	floodBg        = 0 // not a candidate
	floodCandidate = 1 // passes the threshold
	floodLabelled  = 2 // in a counted 3-D component
	floodKept      = 3 // in a component that is kept
)

// filledMask returns the mask of the voxels of state equal to kept plus,
// per slice, the holes they enclose (voxels not 4-connected to the slice
// border through other voxels). state is overwritten.
func filledMask(state []uint8, dims [3]int, kept uint8) *Mask {
	nx, ny, nz := dims[0], dims[1], dims[2]
	plane := nx * ny
	m := NewMask(dims)
	forEachIndex(nz, func(k int) {
		s := state[k*plane : (k+1)*plane]
		bits := m.Bits[k*plane : (k+1)*plane]
		for p := range s {
			if s[p] == kept {
				s[p] = 1
			} else {
				s[p] = 0
			}
		}
		// background (0) reachable from the border becomes 2; what stays 0
		// is a hole.
		floodFromBorder2D(s, nx, ny, 0, 2)
		for p := range s {
			bits[p] = s[p] != 2
		}
	})
	return m
}

// floodFromBorder2D sets to `to` every pixel of slice s (nx×ny) with value
// `from` that is 4-connected through `from` pixels to the slice border.
func floodFromBorder2D(s []uint8, nx, ny int, from, to uint8) {
	sp := flood2DStacks.Get().(*[]int32)
	stack := (*sp)[:0]
	if cap(stack) < nx*ny {
		stack = make([]int32, 0, nx*ny) // every pixel is pushed at most once
	}
	for p := 0; p < nx*ny; p++ {
		i, j := p%nx, p/nx
		if (i == 0 || j == 0 || i == nx-1 || j == ny-1) && s[p] == from {
			s[p] = to
			stack = append(stack, int32(p))
		}
		if nx > 2 && j > 0 && j < ny-1 && i == 0 {
			p += nx - 2 // skip the interior of the row
		}
	}
	for len(stack) > 0 {
		p := int(stack[len(stack)-1])
		stack = stack[:len(stack)-1]
		i := p % nx
		if i > 0 && s[p-1] == from {
			s[p-1] = to
			stack = append(stack, int32(p-1))
		}
		if i < nx-1 && s[p+1] == from {
			s[p+1] = to
			stack = append(stack, int32(p+1))
		}
		if p >= nx && s[p-nx] == from {
			s[p-nx] = to
			stack = append(stack, int32(p-nx))
		}
		if p+nx < nx*ny && s[p+nx] == from {
			s[p+nx] = to
			stack = append(stack, int32(p+nx))
		}
	}
	*sp = stack
	flood2DStacks.Put(sp)
}

// flood2DStacks recycles the per-slice flood stacks.
var flood2DStacks = sync.Pool{New: func() any { return new([]int32) }}

// flood3D relabels the `from` component containing seed to `to` and returns
// its size; conn is 6 or 26. stack is scratch space, returned for reuse.
func flood3D(state []uint8, dims [3]int, seed int, from, to uint8, conn int, stack []int32) (int, []int32) {
	nx, ny, nz := dims[0], dims[1], dims[2]
	plane := nx * ny
	stack = stack[:0]
	state[seed] = to
	stack = append(stack, int32(seed))
	n := 0
	for len(stack) > 0 {
		p := int(stack[len(stack)-1])
		stack = stack[:len(stack)-1]
		n++
		i := p % nx
		j := (p / nx) % ny
		k := p / plane
		if conn == 6 {
			if i > 0 && state[p-1] == from {
				state[p-1] = to
				stack = append(stack, int32(p-1))
			}
			if i < nx-1 && state[p+1] == from {
				state[p+1] = to
				stack = append(stack, int32(p+1))
			}
			if j > 0 && state[p-nx] == from {
				state[p-nx] = to
				stack = append(stack, int32(p-nx))
			}
			if j < ny-1 && state[p+nx] == from {
				state[p+nx] = to
				stack = append(stack, int32(p+nx))
			}
			if k > 0 && state[p-plane] == from {
				state[p-plane] = to
				stack = append(stack, int32(p-plane))
			}
			if k < nz-1 && state[p+plane] == from {
				state[p+plane] = to
				stack = append(stack, int32(p+plane))
			}
			continue
		}
		for dk := -1; dk <= 1; dk++ {
			if k+dk < 0 || k+dk >= nz {
				continue
			}
			for dj := -1; dj <= 1; dj++ {
				if j+dj < 0 || j+dj >= ny {
					continue
				}
				for di := -1; di <= 1; di++ {
					if i+di < 0 || i+di >= nx {
						continue
					}
					q := p + dk*plane + dj*nx + di
					if state[q] == from {
						state[q] = to
						stack = append(stack, int32(q))
					}
				}
			}
		}
	}
	return n, stack
}

// LungBox returns the bounding box of the lung mask of v grown by margin
// voxels per side (clipped to v); it is an error when no lung is found.
func LungBox(v *Volume, o LungMaskOptions, margin [3]int) (Box, error) {
	m, err := LungMask(v, o)
	if err != nil {
		return Box{}, err
	}
	b, ok := m.BoundingBox()
	if !ok {
		return Box{}, fmt.Errorf("volume: lung box: no voxel below %v HU survives the lung mask of a %v volume", o.Threshold, v.Dims)
	}
	for a := 0; a < 3; a++ {
		if margin[a] < 0 {
			return Box{}, fmt.Errorf("volume: lung box: negative margin %v", margin)
		}
	}
	return b.Grow(margin, v.Dims), nil
}
