package volume

import "fmt"

// Box is a box of voxels: Min inclusive, Max exclusive, per axis (i, j, k).
type Box struct {
	Min, Max [3]int
}

// Size returns Max-Min per axis.
func (b Box) Size() [3]int {
	return [3]int{b.Max[0] - b.Min[0], b.Max[1] - b.Min[1], b.Max[2] - b.Min[2]}
}

// Empty reports whether the box holds no voxel.
func (b Box) Empty() bool {
	s := b.Size()
	return s[0] <= 0 || s[1] <= 0 || s[2] <= 0
}

// Grow returns the box enlarged by margin voxels on both sides of each axis
// and clipped to a grid of dims: [max(0, Min-margin), min(dims, Max+margin)).
func (b Box) Grow(margin [3]int, dims [3]int) Box {
	for a := 0; a < 3; a++ {
		b.Min[a] = max(0, b.Min[a]-margin[a])
		b.Max[a] = min(dims[a], b.Max[a]+margin[a])
	}
	return b
}

// Crop returns the sub-volume of the given dims whose voxel 0 is v's voxel
// offset: out(o) = v(o + offset), and pad where o + offset lies outside v
// (so a negative offset or dims past the end pad). The step is the
// AxisAffine in = out + offset; the origin moves to v's position of voxel
// offset, spacing and direction are kept.
func Crop(v *Volume, offset, dims [3]int, pad float32) (*Volume, Step, error) {
	if err := checkInput("crop", v); err != nil {
		return nil, nil, err
	}
	return crop(v, "crop", offset, dims, pad)
}

func crop(v *Volume, what string, offset, dims [3]int, pad float32) (*Volume, Step, error) {
	if err := checkDims(what, dims); err != nil {
		return nil, nil, err
	}
	scale := [3]float64{1, 1, 1}
	shift := [3]float64{float64(offset[0]), float64(offset[1]), float64(offset[2])}
	A, b := diagAffine(scale, shift)
	out, err := reframe(v, dims, A, b)
	if err != nil {
		return nil, nil, fmt.Errorf("volume: %s: %w", what, err)
	}
	nx, ny, nz := v.Dims[0], v.Dims[1], v.Dims[2]
	// overlapping i range in output coordinates
	i0, i1 := max(0, -offset[0]), min(dims[0], nx-offset[0])
	forEachIndex(dims[2], func(k int) {
		sk := k + offset[2]
		for j := 0; j < dims[1]; j++ {
			row := out.Voxels[(k*dims[1]+j)*dims[0] : (k*dims[1]+j+1)*dims[0]]
			sj := j + offset[1]
			if sk < 0 || sk >= nz || sj < 0 || sj >= ny || i0 >= i1 {
				fillRow(row, pad)
				continue
			}
			fillRow(row[:i0], pad)
			fillRow(row[i1:], pad)
			src := v.Voxels[(sk*ny+sj)*nx:]
			copy(row[i0:i1], src[i0+offset[0]:i1+offset[0]])
		}
	})
	return out, AxisAffine{Op: "crop", In: v.Dims, Out: dims, Scale: scale, Shift: shift}, nil
}

func fillRow(row []float32, x float32) {
	if x == 0 {
		return // rows start zeroed
	}
	for i := range row {
		row[i] = x
	}
}

// CenterCrop crops (or pads with pad, where v is smaller) every slice to
// cols×rows around the centre: along an axis of n voxels cut to m, the
// offset is (n-m)/2 rounded toward zero, i.e. floor((n-m)/2) when cropping
// (CovidNet3D's intended size/2 - m/2) and -floor((m-n)/2) when padding, so
// padding puts the odd voxel after the image (as torchvision's center_crop).
func CenterCrop(v *Volume, cols, rows int, pad float32) (*Volume, Step, error) {
	if err := checkInput("centre crop", v); err != nil {
		return nil, nil, err
	}
	off := [3]int{(v.Dims[0] - cols) / 2, (v.Dims[1] - rows) / 2, 0}
	return crop(v, "centre crop", off, [3]int{cols, rows, v.Dims[2]}, pad)
}

// CropBox crops v to box b, which must be non-empty and inside v.
func CropBox(v *Volume, b Box) (*Volume, Step, error) {
	if err := checkInput("crop to box", v); err != nil {
		return nil, nil, err
	}
	for a := 0; a < 3; a++ {
		if b.Min[a] < 0 || b.Max[a] > v.Dims[a] || b.Min[a] >= b.Max[a] {
			return nil, nil, fmt.Errorf("volume: crop to box: box %v..%v is empty or outside the volume %v along axis %d", b.Min, b.Max, v.Dims, a)
		}
	}
	return crop(v, "crop to box", b.Min, b.Size(), 0)
}
