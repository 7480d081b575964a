// Package volume holds a 3-D scan in patient space (voxels plus geometry) and
// the operations that prepare it for a model: resampling, windowing,
// normalisation, slice sampling, cropping, lung masks, augmentation, and
// synthetic chest-CT phantoms.
//
// Patient coordinates are DICOM's LPS millimetres. Voxel index (i, j, k)
// is column, row, slice; the voxel array stores i fastest.
package volume

import "fmt"

// Volume is a 3-D scalar image (usually Hounsfield units) with its geometry.
type Volume struct {
	// Voxels holds Dims[0]*Dims[1]*Dims[2] values; voxel (i, j, k) is at
	// (k*Dims[1]+j)*Dims[0]+i.
	Voxels []float32
	// Dims is the number of columns, rows and slices.
	Dims [3]int
	// Spacing is the distance in mm between voxel centres along i, j, k.
	Spacing [3]float64
	// Origin is the LPS position in mm of the centre of voxel (0, 0, 0).
	Origin [3]float64
	// Direction[a] is the LPS unit vector along voxel axis a (0 i, 1 j, 2 k).
	Direction [3][3]float64
}

// New returns a zero-filled volume of the given size with 1 mm spacing,
// origin 0 and identity direction.
func New(cols, rows, slices int) *Volume {
	return &Volume{
		Voxels:    make([]float32, cols*rows*slices),
		Dims:      [3]int{cols, rows, slices},
		Spacing:   [3]float64{1, 1, 1},
		Direction: [3][3]float64{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}},
	}
}

// Index returns the position in Voxels of voxel (i, j, k).
func (v *Volume) Index(i, j, k int) int { return (k*v.Dims[1]+j)*v.Dims[0] + i }

// At returns voxel (i, j, k).
func (v *Volume) At(i, j, k int) float32 { return v.Voxels[v.Index(i, j, k)] }

// Set stores x at voxel (i, j, k).
func (v *Volume) Set(i, j, k int, x float32) { v.Voxels[v.Index(i, j, k)] = x }

// VoxelToPatient maps a (possibly fractional) voxel index to LPS millimetres.
func (v *Volume) VoxelToPatient(ijk [3]float64) [3]float64 {
	p := v.Origin
	for a := 0; a < 3; a++ {
		for c := 0; c < 3; c++ {
			p[c] += v.Direction[a][c] * v.Spacing[a] * ijk[a]
		}
	}
	return p
}

// PatientToVoxel maps LPS millimetres to a fractional voxel index. It
// assumes orthonormal directions.
func (v *Volume) PatientToVoxel(p [3]float64) [3]float64 {
	var d [3]float64
	for c := 0; c < 3; c++ {
		d[c] = p[c] - v.Origin[c]
	}
	var ijk [3]float64
	for a := 0; a < 3; a++ {
		s := 0.0
		for c := 0; c < 3; c++ {
			s += v.Direction[a][c] * d[c]
		}
		ijk[a] = s / v.Spacing[a]
	}
	return ijk
}

// Validate reports an inconsistent volume: wrong voxel count, non-positive
// sizes or spacing.
func (v *Volume) Validate() error {
	for a := 0; a < 3; a++ {
		if v.Dims[a] <= 0 {
			return fmt.Errorf("volume: dimension %d is %d", a, v.Dims[a])
		}
		if !(v.Spacing[a] > 0) {
			return fmt.Errorf("volume: spacing along axis %d is %v mm", a, v.Spacing[a])
		}
	}
	if n := v.Dims[0] * v.Dims[1] * v.Dims[2]; len(v.Voxels) != n {
		return fmt.Errorf("volume: %d voxels for dims %v (want %d)", len(v.Voxels), v.Dims, n)
	}
	return nil
}
