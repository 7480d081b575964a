package tensor

import "runtime"

// reduceSum returns scale·Σ of the contiguous array x (of the given shape)
// over the dimensions flagged in red, as a contiguous array over the kept
// dimensions in order. Sums are accumulated in float64.
func reduceSum(x []float32, shape []int, red []bool, scale float64) []float32 {
	// Collapse: drop size-1 dims, merge neighbours with the same flag.
	var dims []int
	var flags []bool
	nOut := 1
	for i, d := range shape {
		if !red[i] {
			nOut *= d
		}
		if d == 1 {
			continue
		}
		if k := len(dims) - 1; k >= 0 && flags[k] == red[i] {
			dims[k] *= d
			continue
		}
		dims = append(dims, d)
		flags = append(flags, red[i])
	}
	out := make([]float32, nOut)
	if nOut == 0 {
		return out
	}
	if len(x) == 0 {
		return out // sums over empty dims are 0
	}
	if len(dims) == 0 {
		out[0] = float32(float64(x[0]) * scale)
		return out
	}
	strides := Strides(dims)
	last := len(dims) - 1
	inner, innerRed := dims[last], flags[last]
	if innerRed && len(dims) == 1 {
		out[0] = float32(sumAll64(x) * scale)
		return out
	}
	// Outer (kept) and reduced dims other than the innermost.
	var kDims, kStr, rDims, rStr []int
	for i := 0; i < last; i++ {
		if flags[i] {
			rDims = append(rDims, dims[i])
			rStr = append(rStr, strides[i])
		} else {
			kDims = append(kDims, dims[i])
			kStr = append(kStr, strides[i])
		}
	}
	redOffs := offsets(rDims, rStr)
	nOuter := 1
	for _, d := range kDims {
		nOuter *= d
	}
	lOut := 1
	if !innerRed {
		lOut = inner
	}
	// Split the inner kept dimension into column chunks when there are too
	// few outer positions to keep every core busy.
	colChunk := lOut
	if workers := runtime.GOMAXPROCS(0); nOuter < 2*workers && lOut >= 1024 {
		colChunk = max(256, (lOut+2*workers-1)/(2*workers))
	}
	nCols := (lOut + colChunk - 1) / colChunk
	perJob := len(redOffs) * min(colChunk, inner)
	if innerRed {
		perJob = len(redOffs) * inner
	}
	ParallelFor(nOuter*nCols, max(1, elemGrain/max(perJob, 1)), func(lo, hi int) {
		acc := make([]float64, colChunk)
		for job := lo; job < hi; job++ {
			o, c := job/nCols, job%nCols
			base := 0
			for k, r := len(kDims)-1, o; k >= 0; k-- {
				base += (r % kDims[k]) * kStr[k]
				r /= kDims[k]
			}
			if innerRed {
				s := 0.0
				for _, ro := range redOffs {
					s += sum64(x[base+ro : base+ro+inner])
				}
				out[o] = float32(s * scale)
				continue
			}
			c0 := c * colChunk
			c1 := min(c0+colChunk, inner)
			a := acc[:c1-c0]
			clear(a)
			for _, ro := range redOffs {
				row := x[base+ro+c0 : base+ro+c1]
				for j, v := range row {
					a[j] += float64(v)
				}
			}
			dst := out[o*inner+c0 : o*inner+c1]
			for j, v := range a {
				dst[j] = float32(v * scale)
			}
		}
	})
	return out
}

// offsets lists Σ idx_k·str_k over all index tuples of dims in row-major
// order ([0] when dims is empty).
func offsets(dims, str []int) []int {
	n := 1
	for _, d := range dims {
		n *= d
	}
	offs := make([]int, 0, n)
	idx := make([]int, len(dims))
	off := 0
	for i := 0; i < n; i++ {
		offs = append(offs, off)
		for k := len(dims) - 1; k >= 0; k-- {
			idx[k]++
			off += str[k]
			if idx[k] < dims[k] {
				break
			}
			off -= idx[k] * str[k]
			idx[k] = 0
		}
	}
	return offs
}

// sum64 returns Σ x in float64 with four independent accumulators.
func sum64(x []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += float64(x[i])
		s1 += float64(x[i+1])
		s2 += float64(x[i+2])
		s3 += float64(x[i+3])
	}
	for ; i < len(x); i++ {
		s0 += float64(x[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// sumAll64 returns Σ x in float64, in parallel for large x.
func sumAll64(x []float32) float64 {
	if len(x) <= 4*elemGrain {
		return sum64(x)
	}
	chunk := 4 * elemGrain
	parts := make([]float64, (len(x)+chunk-1)/chunk)
	ParallelFor(len(parts), 1, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			parts[p] = sum64(x[p*chunk : min((p+1)*chunk, len(x))])
		}
	})
	s := 0.0
	for _, v := range parts {
		s += v
	}
	return s
}

// axisSplit views shape around axis as outer × n × inner.
func axisSplit(shape []int, axis int) (outer, n, inner int) {
	outer, inner = 1, 1
	for i, d := range shape {
		switch {
		case i < axis:
			outer *= d
		case i > axis:
			inner *= d
		}
	}
	return outer, shape[axis], inner
}

// axisJobs runs body over every (outer position, inner range) block of an
// outer × n × inner layout, in parallel, splitting inner into chunks when
// there are few outer positions.
func axisJobs(outer, n, inner int, body func(o, i0, i1 int)) {
	chunk := inner
	if workers := runtime.GOMAXPROCS(0); outer < 2*workers && inner >= 512 {
		chunk = max(128, (inner+2*workers-1)/(2*workers))
	}
	nc := (inner + chunk - 1) / chunk
	per := max(1, n*chunk)
	ParallelFor(outer*nc, max(1, elemGrain/per), func(lo, hi int) {
		for j := lo; j < hi; j++ {
			o, c := j/nc, j%nc
			body(o, c*chunk, min((c+1)*chunk, inner))
		}
	})
}

// normAxis returns axis made non-negative for a tensor of rank dim, or
// panics with a *ShapeError for op.
func normAxis(op string, axis int, shape []int) int {
	a := axis
	if a < 0 {
		a += len(shape)
	}
	if a < 0 || a >= len(shape) {
		shapeErr(op, "axis %d out of range for shape %v", axis, shape)
	}
	return a
}
