package volume

import (
	"fmt"
	"math/rand/v2"
	"sort"
)

// centreOut returns r distinct indices of 0..n-1 (1 <= r <= n) taken
// centre-out with interval i = n/r (integer division) from the centre
// c = (n-1)/2 for odd n and n/2-1 for even n, in the order c, c+i, c-i,
// c+2i, c-2i, ...; the result is sorted. Every index lies in [0, n): the
// rightmost is c + ceil((r-1)/2)·i <= (n-1)/2 + (r/2)(n/r) < n, the leftmost
// c - floor((r-1)/2)·i >= c - (r-1)n/(2r) > -1.
func centreOut(n, r int) []int {
	i := n / r
	c := (n - 1) / 2 // equals n/2-1 for even n and (n-1)/2 for odd n
	idx := make([]int, 0, r)
	idx = append(idx, c)
	for m := 1; len(idx) < r; m++ {
		idx = append(idx, c+m*i)
		if len(idx) < r {
			idx = append(idx, c-m*i)
		}
	}
	sort.Ints(idx)
	return idx
}

// SymmetricSliceIndices returns the d slice indices (sorted, each in
// [0, n)) that CovidNet3D's deterministic test-time SymmetricalResampler
// picks from a scan of n slices:
//
//   - n == d: 0..n-1.
//   - n > d (undersampling): with i = n/d and centre c ((n-1)/2 for odd n,
//     n/2-1 for even n), the indices c, c+i, c-i, c+2i, c-2i, ... until d
//     are collected, sorted. Example n=7, d=3: [1 3 5].
//   - n < d (upsampling): q = d/n full copies of 0..n-1 plus the centre-out
//     indices of the remainder r = d mod n (interval n/r), sorted, so slices
//     are duplicated in place. Examples n=7: d=10 gives
//     [0 1 1 2 3 3 4 5 5 6]; d=14 gives every slice twice.
//
// Difference from the reference code (datasets/utils.py): its upsampler
// repeats the list ceil((d-n)/n) times and then centre-outs the remaining
// d - ceil((d-n)/n)·n indices, returning an EMPTY list when that remainder
// is 0. The arithmetic makes that branch unreachable (the remainder is n,
// not 0, when n divides d), so the formula above gives the same indices for
// every n, d >= 1 (including d = 2n, which some notes wrongly list as
// returning empty); here the remainder-0 case is the intended q full copies
// by construction. n or d < 1 is an error (the reference divides by zero).
func SymmetricSliceIndices(n, d int) ([]int, error) {
	if n < 1 || d < 1 {
		return nil, fmt.Errorf("volume: symmetric slice sampling: %d slices to %d (both must be at least 1)", n, d)
	}
	q, r := d/n, d%n
	idx := make([]int, 0, d)
	for c := 0; c < q; c++ {
		for s := 0; s < n; s++ {
			idx = append(idx, s)
		}
	}
	if r > 0 {
		idx = append(idx, centreOut(n, r)...)
	}
	sort.Ints(idx)
	return idx, nil
}

// RandomSliceIndices returns the d slice indices (sorted, each in [0, n))
// of CovidNet3D's training-time RandomResampler, drawn from rng:
//
//   - n == d: 0..n-1.
//   - n > d: n-d times, a uniformly random remaining index is deleted
//     (rng.IntN over the remaining count), so the result is a uniformly
//     random d-subset kept in order.
//   - n < d: d-n indices are drawn uniformly with repetition
//     (rng.IntN(n)); each slice appears once plus the number of times it was
//     drawn, duplicates next to the original.
func RandomSliceIndices(n, d int, rng *rand.Rand) ([]int, error) {
	if n < 1 || d < 1 {
		return nil, fmt.Errorf("volume: random slice sampling: %d slices to %d (both must be at least 1)", n, d)
	}
	if rng == nil {
		return nil, fmt.Errorf("volume: random slice sampling: nil random source")
	}
	switch {
	case n > d:
		idx := make([]int, n)
		for s := range idx {
			idx[s] = s
		}
		for len(idx) > d {
			p := rng.IntN(len(idx))
			idx = append(idx[:p], idx[p+1:]...)
		}
		return idx, nil
	case n < d:
		extra := make([]int, n)
		for c := 0; c < d-n; c++ {
			extra[rng.IntN(n)]++
		}
		idx := make([]int, 0, d)
		for s := 0; s < n; s++ {
			for c := 0; c <= extra[s]; c++ {
				idx = append(idx, s)
			}
		}
		return idx, nil
	}
	idx := make([]int, n)
	for s := range idx {
		idx[s] = s
	}
	return idx, nil
}

// SampleSlices returns the volume whose slice o is v's slice index[o]
// (index non-decreasing, each in [0, Dims[2])), and the SliceMap step.
// Geometry is approximate where the sampling is not uniform: the slice axis
// gets the straight line through the first and last sampled slice,
// in-slice k = index[0] + o·(index[d-1]-index[0])/(d-1) (exact for evenly
// spaced indices); when all sampled slices are the same one the d copies
// share its thickness (step 1/d, centred on it). Origin moves to sampled
// slice 0's position along that line.
func SampleSlices(v *Volume, index []int) (*Volume, Step, error) {
	const what = "sample slices"
	if err := checkInput(what, v); err != nil {
		return nil, nil, err
	}
	d := len(index)
	if d == 0 {
		return nil, nil, fmt.Errorf("volume: %s: no slice indices", what)
	}
	n := v.Dims[2]
	for p, x := range index {
		if x < 0 || x >= n {
			return nil, nil, fmt.Errorf("volume: %s: index %d is slice %d, outside [0, %d)", what, p, x, n)
		}
		if p > 0 && x < index[p-1] {
			return nil, nil, fmt.Errorf("volume: %s: indices must be non-decreasing (index %d is %d after %d)", what, p, x, index[p-1])
		}
	}
	dims := [3]int{v.Dims[0], v.Dims[1], d}
	if err := checkDims(what, dims); err != nil {
		return nil, nil, err
	}
	scale := [3]float64{1, 1, 1}
	shift := [3]float64{0, 0, float64(index[0])}
	if span := index[d-1] - index[0]; span > 0 {
		scale[2] = float64(span) / float64(d-1)
	} else {
		scale[2] = 1 / float64(d)
		shift[2] = float64(index[0]) - float64(d-1)/2/float64(d)
	}
	A, b := diagAffine(scale, shift)
	out, err := reframe(v, dims, A, b)
	if err != nil {
		return nil, nil, fmt.Errorf("volume: %s: %w", what, err)
	}
	plane := v.Dims[0] * v.Dims[1]
	forEachIndex(d, func(o int) {
		copy(out.Voxels[o*plane:(o+1)*plane], v.Voxels[index[o]*plane:(index[o]+1)*plane])
	})
	return out, SliceMap{In: v.Dims, Out: dims, Index: append([]int(nil), index...)}, nil
}
