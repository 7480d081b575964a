package tensor_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

func TestInterpolateHandValues(t *testing.T) {
	ramp4 := tensor.New([]float32{0, 1, 2, 3}, 1, 1, 4)
	ramp7 := tensor.New([]float32{0, 1, 2, 3, 4, 5, 6}, 1, 1, 7)
	cases := []struct {
		name  string
		x     *tensor.Tensor
		size  int
		mode  tensor.InterpMode
		align bool
		want  []float32
	}{
		// src = o·3/6.
		{"4→7 aligned", ramp4, 7, tensor.InterpLinear, true, []float32{0, 0.5, 1, 1.5, 2, 2.5, 3}},
		// src = (o+0.5)·4/7 − 0.5, clamped at 0 below and at index 3 above.
		{"4→7 half pixel", ramp4, 7, tensor.InterpLinear, false, []float32{0, 5.0 / 14, 13.0 / 14, 1.5, 29.0 / 14, 37.0 / 14, 3}},
		// floor(o·4/7).
		{"4→7 nearest", ramp4, 7, tensor.InterpNearest, false, []float32{0, 0, 1, 1, 2, 2, 3}},
		// src = (o+0.5)·7/3 − 0.5 = 2/3, 3, 16/3.
		{"7→3 half pixel", ramp7, 3, tensor.InterpLinear, false, []float32{2.0 / 3, 3, 16.0 / 3}},
		{"7→3 aligned", ramp7, 3, tensor.InterpLinear, true, []float32{0, 3, 6}},
		{"7→3 nearest", ramp7, 3, tensor.InterpNearest, false, []float32{0, 2, 4}},
		{"4→1 aligned", ramp4, 1, tensor.InterpLinear, true, []float32{0}},
		// src = 0.5·4 − 0.5 = 1.5.
		{"4→1 half pixel", ramp4, 1, tensor.InterpLinear, false, []float32{1.5}},
		{"4→8 nearest", ramp4, 8, tensor.InterpNearest, false, []float32{0, 0, 1, 1, 2, 2, 3, 3}},
		{"4→4 linear", ramp4, 4, tensor.InterpLinear, false, []float32{0, 1, 2, 3}},
	}
	for _, c := range cases {
		y := tensor.Interpolate(c.x, []int{c.size}, c.mode, c.align)
		poolTestClose(t, c.name, y, tensor.New(c.want, 1, 1, len(c.want)), 1e-6)
	}
	// Bilinear with aligned corners of [[0 1] [2 3]] to 3×3.
	sq := tensor.New([]float32{0, 1, 2, 3}, 1, 1, 2, 2)
	poolTestClose(t, "2×2→3×3", tensor.Interpolate(sq, []int{3}, tensor.InterpLinear, true),
		tensor.New([]float32{0, 0.5, 1, 1, 1.5, 2, 2, 2.5, 3}, 1, 1, 3, 3), 1e-6)
	// Trilinear of a 2×2×2 cube to 1×1×1 half pixel: src = 0.5 on each axis,
	// the mean of the corners.
	cube := tensor.New([]float32{0, 1, 2, 3, 4, 5, 6, 7}, 1, 1, 2, 2, 2)
	poolTestClose(t, "cube→1", tensor.Interpolate(cube, []int{1}, tensor.InterpLinear, false), tensor.New([]float32{3.5}, 1, 1, 1, 1, 1), 1e-6)
}

// interpTestAxis returns, in float64, the input taps and weights of output
// index o of an axis from in to out samples.
func interpTestAxis(o, in, out int, mode tensor.InterpMode, align bool) ([]int, []float64) {
	if mode == tensor.InterpNearest {
		return []int{min(o*in/out, in-1)}, []float64{1}
	}
	var src float64
	if align {
		if out > 1 {
			src = float64(o) * float64(in-1) / float64(out-1)
		}
	} else {
		src = math.Max(0, (float64(o)+0.5)*float64(in)/float64(out)-0.5)
	}
	i0 := min(int(math.Floor(src)), in-1)
	l := math.Min(math.Max(src-float64(i0), 0), 1)
	return []int{i0, min(i0+1, in-1)}, []float64{1 - l, l}
}

// interpTestRef is a float64 reference of Interpolate as a tensor product of
// per-axis taps.
func interpTestRef(x *tensor.Tensor, size []int, mode tensor.InterpMode, align bool) *tensor.Tensor {
	xs := x.Shape()
	nd := len(xs) - 2
	outShape := append([]int(nil), xs[:2]...)
	outShape = append(outShape, size...)
	y := tensor.Zeros(outShape...)
	poolTestEach(outShape, func(oi []int) {
		taps := make([][]int, nd)
		wts := make([][]float64, nd)
		for i := range nd {
			taps[i], wts[i] = interpTestAxis(oi[2+i], xs[2+i], size[i], mode, align)
		}
		counts := make([]int, nd)
		for i := range nd {
			counts[i] = len(taps[i])
		}
		sum := 0.0
		poolTestEach(counts, func(ti []int) {
			xi := []int{oi[0], oi[1]}
			w := 1.0
			for i := range nd {
				xi = append(xi, taps[i][ti[i]])
				w *= wts[i][ti[i]]
			}
			sum += w * float64(x.At(xi...))
		})
		y.Set(float32(sum), oi...)
	})
	return y
}

func TestInterpolateMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	cases := []struct {
		shape, size []int
	}{
		{[]int{2, 3, 5}, []int{9}},
		{[]int{2, 3, 9}, []int{4}},
		{[]int{1, 2, 4, 5}, []int{7, 3}},
		{[]int{2, 1, 6, 3}, []int{4, 8}},
		{[]int{1, 2, 3, 4, 5}, []int{5, 7, 2}},
		{[]int{1, 2, 6, 5, 4}, []int{3, 5, 9}},
		{[]int{2, 40, 3, 4, 5}, []int{6, 5, 4}},
	}
	for _, c := range cases {
		x := tensortest.Rand(rng, c.shape...)
		for _, m := range []struct {
			name  string
			mode  tensor.InterpMode
			align bool
		}{{"nearest", tensor.InterpNearest, false}, {"linear aligned", tensor.InterpLinear, true}, {"linear", tensor.InterpLinear, false}} {
			got := tensor.Interpolate(x, c.size, m.mode, m.align)
			poolTestClose(t, m.name, got, interpTestRef(x, c.size, m.mode, m.align), 1e-5)
		}
	}
}

func TestInterpolateGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	cases := []struct {
		shape, size []int
	}{
		{[]int{2, 3, 5}, []int{8}},
		{[]int{2, 3, 7}, []int{3}},
		{[]int{1, 2, 3, 5}, []int{5, 3}},
		{[]int{1, 2, 3, 4, 3}, []int{5, 2, 4}},
	}
	for _, c := range cases {
		x := tensortest.Rand(rng, c.shape...)
		for _, m := range []struct {
			mode  tensor.InterpMode
			align bool
		}{{tensor.InterpNearest, false}, {tensor.InterpLinear, true}, {tensor.InterpLinear, false}} {
			size := c.size
			tensortest.GradCheck(t, "Interpolate", func(in []*tensor.Tensor) *tensor.Tensor {
				return tensor.Interpolate(in[0], size, m.mode, m.align)
			}, []*tensor.Tensor{x}, tensortest.GradCheckOpts{})
		}
	}
}

func TestInterpolateErrors(t *testing.T) {
	x := tensor.Zeros(1, 2, 4, 4)
	poolTestShapeError(t, "rank", func() { tensor.Interpolate(tensor.Zeros(2, 4), []int{3}, tensor.InterpLinear, false) }, "[2 4]")
	poolTestShapeError(t, "size len", func() { tensor.Interpolate(x, []int{2, 2, 2}, tensor.InterpLinear, false) }, "[2 2 2]", "[1 2 4 4]")
	poolTestShapeError(t, "size zero", func() { tensor.Interpolate(x, []int{0, 3}, tensor.InterpLinear, false) }, "[0 3]", "[1 2 4 4]")
	poolTestShapeError(t, "no size", func() { tensor.Interpolate(x, nil, tensor.InterpNearest, false) }, "[1 2 4 4]")
	poolTestShapeError(t, "nearest align", func() { tensor.Interpolate(x, []int{3}, tensor.InterpNearest, true) }, "align_corners")
	poolTestShapeError(t, "mode", func() { tensor.Interpolate(x, []int{3}, tensor.InterpMode(7), false) }, "mode 7")
}
