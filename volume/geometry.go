package volume

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// MaxVoxels is the largest voxel count a transform will allocate (2^30, i.e.
// 4 GiB of float32); a larger result is an error, not an allocation.
const MaxVoxels = 1 << 30

// Clone returns a deep copy of v.
func (v *Volume) Clone() *Volume {
	c := *v
	c.Voxels = append([]float32(nil), v.Voxels...)
	return &c
}

// CenterVoxel returns the fractional voxel index of the centre of the grid,
// ((Dims-1)/2 along each axis).
func (v *Volume) CenterVoxel() [3]float64 {
	var c [3]float64
	for a := 0; a < 3; a++ {
		c[a] = float64(v.Dims[a]-1) / 2
	}
	return c
}

// checkDims reports dims that are non-positive or whose product exceeds
// MaxVoxels; what names the operation for the message.
func checkDims(what string, dims [3]int) error {
	n := 1
	for a := 0; a < 3; a++ {
		if dims[a] <= 0 {
			return fmt.Errorf("volume: %s: output dimension %d is %d (must be positive)", what, a, dims[a])
		}
		if n > MaxVoxels/dims[a] {
			return fmt.Errorf("volume: %s: output dims %v exceed the limit of %d voxels", what, dims, MaxVoxels)
		}
		n *= dims[a]
	}
	return nil
}

// checkInput validates v for operation what.
func checkInput(what string, v *Volume) error {
	if v == nil {
		return fmt.Errorf("volume: %s: nil volume", what)
	}
	if err := v.Validate(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// reframe returns a volume of the given dims whose geometry satisfies
// out.VoxelToPatient(o) == in.VoxelToPatient(A·o + b) for every index o:
// the matrix M_out = M_in·A (M = Direction columns times Spacing) is split
// into spacing (column norms) and unit directions, and the origin is the
// patient position of input index b. Voxels are allocated, zero.
func reframe(in *Volume, dims [3]int, A [3][3]float64, b [3]float64) (*Volume, error) {
	out := &Volume{Dims: dims, Origin: in.VoxelToPatient(b)}
	if A[0][1] == 0 && A[0][2] == 0 && A[1][0] == 0 && A[1][2] == 0 && A[2][0] == 0 && A[2][1] == 0 {
		// per-axis map: keep directions exactly (up to sign)
		for a := 0; a < 3; a++ {
			s := in.Spacing[a] * math.Abs(A[a][a])
			if !(s > 0) || math.IsInf(s, 0) {
				return nil, fmt.Errorf("volume: degenerate geometry: axis %d has spacing %v mm after the transform", a, s)
			}
			out.Spacing[a] = s
			out.Direction[a] = in.Direction[a]
			if A[a][a] < 0 {
				for c := 0; c < 3; c++ {
					out.Direction[a][c] = -in.Direction[a][c]
				}
			}
		}
		out.Voxels = make([]float32, dims[0]*dims[1]*dims[2])
		return out, nil
	}
	for a := 0; a < 3; a++ {
		var col [3]float64
		for c := 0; c < 3; c++ {
			for bb := 0; bb < 3; bb++ {
				col[c] += in.Direction[bb][c] * in.Spacing[bb] * A[bb][a]
			}
		}
		n := math.Sqrt(col[0]*col[0] + col[1]*col[1] + col[2]*col[2])
		if !(n > 0) || math.IsInf(n, 0) {
			return nil, fmt.Errorf("volume: degenerate geometry: axis %d has spacing %v mm after the transform", a, n)
		}
		out.Spacing[a] = n
		for c := 0; c < 3; c++ {
			out.Direction[a][c] = col[c] / n
		}
	}
	out.Voxels = make([]float32, dims[0]*dims[1]*dims[2])
	return out, nil
}

// diagAffine returns the index affine of a per-axis map in = scale*out + shift.
func diagAffine(scale, shift [3]float64) ([3][3]float64, [3]float64) {
	var A [3][3]float64
	for a := 0; a < 3; a++ {
		A[a][a] = scale[a]
	}
	return A, shift
}

// forEachIndex calls fn(k) for k in [0, n) on up to GOMAXPROCS goroutines
// and returns when all calls have returned.
func forEachIndex(n int, fn func(k int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for k := 0; k < n; k++ {
			fn(k)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= n {
					return
				}
				fn(k)
			}
		}()
	}
	wg.Wait()
}
