package volume

import (
	"fmt"
	"math"
)

// DefaultBodyThreshold is the HU above which a voxel counts as body for
// BodyMask: between air (−1000) and fat (−100).
const DefaultBodyThreshold = -500

// BodyMask segments the patient's body in a CT volume in HU:
//  1. candidates: voxels > threshold;
//  2. the largest 3-D (6-connected) component of the candidates is kept,
//     which drops the table, clothing and noise specks;
//  3. per slice, holes (lungs, airways, bowel gas: background not
//     4-connected to the in-plane border) are filled.
//
// Unlike LungMask, it does not depend on what lies inside the lungs, so a
// box around it does not move with a consolidation at the lung edge.
func BodyMask(v *Volume, threshold float64) (*Mask, error) {
	const what = "body mask"
	if err := checkInput(what, v); err != nil {
		return nil, err
	}
	if math.IsNaN(threshold) || math.IsInf(threshold, 0) {
		return nil, fmt.Errorf("volume: %s: threshold %v (want a finite number of HU)", what, threshold)
	}
	th := float32(threshold)
	if float64(th) > threshold { // x > th must mean float64(x) > threshold
		th = math.Nextafter32(th, float32(math.Inf(-1)))
	}
	state := make([]uint8, len(v.Voxels))
	for p, x := range v.Voxels {
		if x > th {
			state[p] = floodCandidate
		}
	}
	var stack []int32
	bestSeed, bestSize := -1, 0
	for p := range state {
		if state[p] != floodCandidate {
			continue
		}
		var n int
		n, stack = flood3D(state, v.Dims, p, floodCandidate, floodLabelled, 6, stack)
		if n > bestSize {
			bestSeed, bestSize = p, n
		}
	}
	if bestSeed < 0 {
		return NewMask(v.Dims), nil
	}
	flood3D(state, v.Dims, bestSeed, floodLabelled, floodKept, 6, stack)
	return filledMask(state, v.Dims, floodKept), nil
}

// BodyBox returns the bounding box of BodyMask(v, threshold) grown by
// margin voxels per side (clipped to v); it is an error when no voxel is
// above the threshold.
func BodyBox(v *Volume, threshold float64, margin [3]int) (Box, error) {
	for a := 0; a < 3; a++ {
		if margin[a] < 0 {
			return Box{}, fmt.Errorf("volume: body box: negative margin %v", margin)
		}
	}
	m, err := BodyMask(v, threshold)
	if err != nil {
		return Box{}, err
	}
	b, ok := m.BoundingBox()
	if !ok {
		return Box{}, fmt.Errorf("volume: body box: no voxel above %v HU in a %v volume", threshold, v.Dims)
	}
	return b.Grow(margin, v.Dims), nil
}
