package tensor

import "math"

// normVec checks that t is nil or a 1-D tensor of n elements.
func normVec(op, name string, t, x *Tensor, n int) {
	if t != nil && (t.Dim() != 1 || t.shape[0] != n) {
		shapeErr(op, "%s of shape %v for input of shape %v: want [%d]", name, t.shape, x.shape, n)
	}
}

// normAt returns t[i], or def when t is nil.
func normAt(t *Tensor, i int, def float64) float64 {
	if t == nil {
		return def
	}
	return float64(t.data[i])
}

// batchNorm implements BatchNorm; see its documentation.
func batchNorm(x, weight, bias, runMean, runVar *Tensor, training bool, momentum, eps float32) *Tensor {
	const op = "BatchNorm"
	if x.Dim() < 2 {
		shapeErr(op, "input of shape %v: want N×C×…", x.shape)
	}
	n, c := x.shape[0], x.shape[1]
	inner := Numel(x.shape[2:])
	normVec(op, "weight", weight, x, c)
	normVec(op, "bias", bias, x, c)
	normVec(op, "running mean", runMean, x, c)
	normVec(op, "running variance", runVar, x, c)
	count := n * inner
	if training && count <= 1 {
		shapeErr(op, "input of shape %v: training needs more than 1 value per channel", x.shape)
	}
	if !training && (runMean == nil || runVar == nil) {
		shapeErr(op, "input of shape %v: evaluation needs the running mean and variance", x.shape)
	}

	mean := make([]float64, c)
	invstd := make([]float64, c)
	y := Zeros(x.shape...)
	eps64 := float64(eps)
	mom := float64(momentum)
	ParallelFor(c, poolGrain(count), func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			if training {
				var s float64
				for i := range n {
					for _, v := range x.data[(i*c+ch)*inner : (i*c+ch+1)*inner] {
						s += float64(v)
					}
				}
				m := s / float64(count)
				var ss float64
				for i := range n {
					for _, v := range x.data[(i*c+ch)*inner : (i*c+ch+1)*inner] {
						d := float64(v) - m
						ss += d * d
					}
				}
				mean[ch] = m
				invstd[ch] = 1 / math.Sqrt(ss/float64(count)+eps64)
				if runMean != nil {
					runMean.data[ch] = float32(mom*m + (1-mom)*float64(runMean.data[ch]))
				}
				if runVar != nil {
					runVar.data[ch] = float32(mom*ss/float64(count-1) + (1-mom)*float64(runVar.data[ch]))
				}
			} else {
				mean[ch] = float64(runMean.data[ch])
				invstd[ch] = 1 / math.Sqrt(float64(runVar.data[ch])+eps64)
			}
			alpha := invstd[ch] * normAt(weight, ch, 1)
			beta := normAt(bias, ch, 0) - mean[ch]*alpha
			for i := range n {
				off := (i*c + ch) * inner
				dst := y.data[off : off+inner]
				for j, v := range x.data[off : off+inner] {
					dst[j] = float32(float64(v)*alpha + beta)
				}
			}
		}
	})

	return record(y, func(gy *Tensor) {
		var dx, dw, db []float32
		if x.requiresGrad {
			dx = make([]float32, len(x.data))
		}
		if weight != nil && weight.requiresGrad {
			dw = make([]float32, c)
		}
		if bias != nil && bias.requiresGrad {
			db = make([]float32, c)
		}
		ParallelFor(c, poolGrain(count), func(lo, hi int) {
			for ch := lo; ch < hi; ch++ {
				m, is := mean[ch], invstd[ch]
				var sg, sgx float64 // Σ g and Σ g·x̂
				for i := range n {
					off := (i*c + ch) * inner
					g := gy.data[off : off+inner]
					for j, v := range x.data[off : off+inner] {
						gj := float64(g[j])
						sg += gj
						sgx += gj * (float64(v) - m) * is
					}
				}
				if dw != nil {
					dw[ch] = float32(sgx)
				}
				if db != nil {
					db[ch] = float32(sg)
				}
				if dx == nil {
					continue
				}
				scale := is * normAt(weight, ch, 1)
				// Training: dx = w·invstd·(g − mean(g) − x̂·mean(g·x̂));
				// evaluation: dx = w·invstd·g.
				var mg, mgx float64
				if training {
					mg, mgx = sg/float64(count), sgx/float64(count)
				}
				for i := range n {
					off := (i*c + ch) * inner
					g := gy.data[off : off+inner]
					dst := dx[off : off+inner]
					for j, v := range x.data[off : off+inner] {
						xh := (float64(v) - m) * is
						dst[j] = float32(scale * (float64(g[j]) - mg - xh*mgx))
					}
				}
			}
		})
		if dx != nil {
			accumulate(x, &Tensor{shape: x.shape, data: dx})
		}
		if dw != nil {
			accumulate(weight, &Tensor{shape: weight.shape, data: dw})
		}
		if db != nil {
			accumulate(bias, &Tensor{shape: bias.shape, data: db})
		}
	}, x, weight, bias)
}

// layerNorm implements LayerNorm; see its documentation.
func layerNorm(x, weight, bias *Tensor, normDims int, eps float32) *Tensor {
	const op = "LayerNorm"
	if normDims < 1 || normDims > x.Dim() {
		shapeErr(op, "normalising the last %d dimensions of input of shape %v", normDims, x.shape)
	}
	tail := x.shape[x.Dim()-normDims:]
	for _, p := range []struct {
		name string
		t    *Tensor
	}{{"weight", weight}, {"bias", bias}} {
		if p.t != nil && !SameShape(p.t.shape, tail) {
			shapeErr(op, "%s of shape %v for input of shape %v normalised over its last %d dimensions: want %v",
				p.name, p.t.shape, x.shape, normDims, tail)
		}
	}
	m := Numel(tail)
	rows := 0
	if m > 0 {
		rows = len(x.data) / m
	}
	mean := make([]float64, rows)
	rstd := make([]float64, rows)
	y := Zeros(x.shape...)
	eps64 := float64(eps)
	ParallelFor(rows, poolGrain(m), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			src := x.data[r*m : (r+1)*m]
			var s float64
			for _, v := range src {
				s += float64(v)
			}
			mu := s / float64(m)
			var ss float64
			for _, v := range src {
				d := float64(v) - mu
				ss += d * d
			}
			is := 1 / math.Sqrt(ss/float64(m)+eps64)
			mean[r], rstd[r] = mu, is
			dst := y.data[r*m : (r+1)*m]
			for j, v := range src {
				dst[j] = float32((float64(v)-mu)*is*normAt(weight, j, 1) + normAt(bias, j, 0))
			}
		}
	})

	return record(y, func(gy *Tensor) {
		if x.requiresGrad {
			dx := make([]float32, len(x.data))
			ParallelFor(rows, poolGrain(m), func(lo, hi int) {
				for r := lo; r < hi; r++ {
					src := x.data[r*m : (r+1)*m]
					g := gy.data[r*m : (r+1)*m]
					mu, is := mean[r], rstd[r]
					// With h = g·w: dx = rstd·(h − mean(h) − x̂·mean(h·x̂)).
					var sh, shx float64
					for j, v := range src {
						h := float64(g[j]) * normAt(weight, j, 1)
						sh += h
						shx += h * (float64(v) - mu) * is
					}
					sh /= float64(m)
					shx /= float64(m)
					dst := dx[r*m : (r+1)*m]
					for j, v := range src {
						h := float64(g[j]) * normAt(weight, j, 1)
						dst[j] = float32(is * (h - sh - (float64(v)-mu)*is*shx))
					}
				}
			})
			accumulate(x, &Tensor{shape: x.shape, data: dx})
		}
		wantW := weight != nil && weight.requiresGrad
		wantB := bias != nil && bias.requiresGrad
		if !wantW && !wantB {
			return
		}
		// dw[j] = Σ_r g·x̂, db[j] = Σ_r g, split over columns j.
		dw := make([]float32, m)
		db := make([]float32, m)
		ParallelFor(m, poolGrain(rows), func(lo, hi int) {
			sw := make([]float64, hi-lo)
			sb := make([]float64, hi-lo)
			for r := range rows {
				mu, is := mean[r], rstd[r]
				g := gy.data[r*m+lo : r*m+hi]
				for j, v := range x.data[r*m+lo : r*m+hi] {
					sw[j] += float64(g[j]) * (float64(v) - mu) * is
					sb[j] += float64(g[j])
				}
			}
			for j := range sw {
				dw[lo+j] = float32(sw[j])
				db[lo+j] = float32(sb[j])
			}
		})
		if wantW {
			accumulate(weight, &Tensor{shape: weight.shape, data: dw})
		}
		if wantB {
			accumulate(bias, &Tensor{shape: bias.shape, data: db})
		}
	}, x, weight, bias)
}
