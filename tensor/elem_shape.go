package tensor

// permuteData returns the contiguous storage of x (of the given shape) with
// its dimensions reordered so that result dim i is input dim perm[i].
func permuteData(x []float32, shape, perm []int) []float32 {
	out := make([]float32, len(x))
	if len(x) == 0 {
		return out
	}
	inStr := Strides(shape)
	// Collapse: drop size-1 dims, merge output-adjacent dims that are also
	// adjacent (in order) in the input.
	var dims, str []int
	for _, p := range perm {
		d, s := shape[p], inStr[p]
		if d == 1 {
			continue
		}
		if k := len(dims) - 1; k >= 0 && str[k] == s*d {
			dims[k] *= d
			str[k] = s
			continue
		}
		dims = append(dims, d)
		str = append(str, s)
	}
	if len(dims) <= 1 {
		copy(out, x)
		return out
	}
	last := len(dims) - 1
	inner, is := dims[last], str[last]
	outer := dims[:last]
	rows := len(x) / inner
	ParallelFor(rows, max(1, elemGrain/inner), func(lo, hi int) {
		idx := make([]int, len(outer))
		off := 0
		for k, r := len(outer)-1, lo; k >= 0; k-- {
			idx[k] = r % outer[k]
			r /= outer[k]
			off += idx[k] * str[k]
		}
		for r := lo; r < hi; r++ {
			d := out[r*inner : (r+1)*inner]
			if is == 1 {
				copy(d, x[off:off+inner])
			} else {
				for j, o := 0, off; j < len(d); j, o = j+1, o+is {
					d[j] = x[o]
				}
			}
			for k := len(outer) - 1; k >= 0; k-- {
				idx[k]++
				off += str[k]
				if idx[k] < outer[k] {
					break
				}
				off -= idx[k] * str[k]
				idx[k] = 0
			}
		}
	})
	return out
}

// copyBlocks copies, for each of outer positions o, n elements from
// src[o*srcStride+srcOff:] to dst[o*dstStride+dstOff:], in parallel.
func copyBlocks(dst []float32, dstStride, dstOff int, src []float32, srcStride, srcOff, outer, n int) {
	if n == 0 {
		return
	}
	ParallelFor(outer, max(1, elemGrain/n), func(lo, hi int) {
		for o := lo; o < hi; o++ {
			copy(dst[o*dstStride+dstOff:o*dstStride+dstOff+n], src[o*srcStride+srcOff:o*srcStride+srcOff+n])
		}
	})
}
