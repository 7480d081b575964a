package volume

import (
	"fmt"
	"math"
)

// Flip reverses voxel axis (0 i, 1 j, 2 k): out(o) = v(n-1-o) along that
// axis. The step is the AxisAffine in = -out + (n-1). Geometry follows the
// voxels (origin at v's last voxel along the axis, that direction negated),
// so every voxel keeps its patient position; only the array order changes,
// which is what a network sees.
func Flip(v *Volume, axis int) (*Volume, Step, error) {
	if err := checkInput("flip", v); err != nil {
		return nil, nil, err
	}
	if axis < 0 || axis > 2 {
		return nil, nil, fmt.Errorf("volume: flip: axis %d (want 0, 1 or 2)", axis)
	}
	scale := [3]float64{1, 1, 1}
	var shift [3]float64
	scale[axis] = -1
	shift[axis] = float64(v.Dims[axis] - 1)
	A, b := diagAffine(scale, shift)
	out, err := reframe(v, v.Dims, A, b)
	if err != nil {
		return nil, nil, fmt.Errorf("volume: flip: %w", err)
	}
	nx, ny, nz := v.Dims[0], v.Dims[1], v.Dims[2]
	forEachIndex(nz, func(k int) {
		for j := 0; j < ny; j++ {
			si, sj, sk := 0, j, k
			switch axis {
			case 1:
				sj = ny - 1 - j
			case 2:
				sk = nz - 1 - k
			}
			dst := out.Voxels[(k*ny+j)*nx : (k*ny+j+1)*nx]
			src := v.Voxels[(sk*ny+sj)*nx+si : (sk*ny+sj+1)*nx]
			if axis == 0 {
				for i := range dst {
					dst[i] = src[nx-1-i]
				}
			} else {
				copy(dst, src)
			}
		}
	})
	return out, AxisAffine{Op: "flip", In: v.Dims, Out: v.Dims, Scale: scale, Shift: shift}, nil
}

// RotateZoom rotates every slice by degrees about the slice axis through
// the in-plane grid centre c = ((n_i-1)/2, (n_j-1)/2) and zooms it by scale
// (> 1 enlarges the content). With in-plane offsets in mm,
// x = (i - c_i)·s_i and y = (j - c_j)·s_j, output pixel (x, y) reads the
// input at R(θ)·(x, y)/scale, R(θ) = [[cos θ, -sin θ], [sin θ, cos θ]], so
// the content turns by R(-θ) in the (i, j) plane: counter-clockwise by θ on
// a screen with i to the right and j down (a point right of the centre
// moves above it for θ = 90°). Pixels
// read from outside the slice extent get fill; inside it, interp applies
// (edges clamped). Dims are kept; geometry follows the content
// (directions rotated, spacing divided by scale), so every voxel keeps its
// patient position. The step is the Affine in = A·out + b.
func RotateZoom(v *Volume, degrees, scale float64, interp Interp, fill float32) (*Volume, Step, error) {
	const what = "rotate and zoom"
	if err := checkInput(what, v); err != nil {
		return nil, nil, err
	}
	if math.IsNaN(degrees) || math.IsInf(degrees, 0) || !(scale > 0) || math.IsInf(scale, 0) {
		return nil, nil, fmt.Errorf("volume: %s: angle %v°, scale %v (want a finite angle and a positive scale)", what, degrees, scale)
	}
	if interp != Linear && interp != Nearest {
		return nil, nil, fmt.Errorf("volume: %s: unknown interpolation %v", what, interp)
	}
	th := degrees * math.Pi / 180
	cs, sn := math.Cos(th), math.Sin(th)
	si, sj := v.Spacing[0], v.Spacing[1]
	// A = S⁻¹ R S / scale on (i, j); identity on k.
	var A [3][3]float64
	A[0][0] = cs / scale
	A[0][1] = -sn * sj / si / scale
	A[1][0] = sn * si / sj / scale
	A[1][1] = cs / scale
	A[2][2] = 1
	c := v.CenterVoxel()
	var b [3]float64
	for a := 0; a < 2; a++ {
		b[a] = c[a] - A[a][0]*c[0] - A[a][1]*c[1]
	}
	out, err := reframe(v, v.Dims, A, b)
	if err != nil {
		return nil, nil, fmt.Errorf("volume: %s: %w", what, err)
	}
	nx, ny, nz := v.Dims[0], v.Dims[1], v.Dims[2]
	plane := nx * ny
	forEachIndex(nz, func(k int) {
		src := &Volume{Voxels: v.Voxels[k*plane : (k+1)*plane], Dims: [3]int{nx, ny, 1}}
		dst := out.Voxels[k*plane : (k+1)*plane]
		for j := 0; j < ny; j++ {
			for i := 0; i < nx; i++ {
				x := A[0][0]*float64(i) + A[0][1]*float64(j) + b[0]
				y := A[1][0]*float64(i) + A[1][1]*float64(j) + b[1]
				dst[j*nx+i] = sampleAt(src, [3]float64{x, y, 0}, interp, fill)
			}
		}
	})
	return out, Affine{Op: "rotate_zoom", In: v.Dims, Out: v.Dims, Matrix: A, Shift: b}, nil
}
