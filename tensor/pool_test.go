package tensor_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// poolTestDistinct returns a tensor of the given shape holding a random
// permutation of distinct values spaced 0.05 apart, so that no window of a
// max pooling has a tie, even after a finite-difference step of 0.01.
func poolTestDistinct(rng *rand.Rand, shape ...int) *tensor.Tensor {
	t := tensor.Zeros(shape...)
	for i, p := range rng.Perm(t.Len()) {
		t.Data()[i] = 0.05*float32(p) - 0.025*float32(t.Len())
	}
	return t
}

// poolTestEach calls f with every multi-index of shape in row-major order.
func poolTestEach(shape []int, f func(idx []int)) {
	idx := make([]int, len(shape))
	if tensor.Numel(shape) == 0 {
		return
	}
	for {
		f(idx)
		i := len(shape) - 1
		for ; i >= 0; i-- {
			idx[i]++
			if idx[i] < shape[i] {
				break
			}
			idx[i] = 0
		}
		if i < 0 {
			return
		}
	}
}

// poolTestOpt returns v[i], or v[0] when v has one entry, or def when empty.
func poolTestOpt(v []int, i, def int) int {
	switch len(v) {
	case 0:
		return def
	case 1:
		return v[0]
	}
	return v[i]
}

// poolTestOutSize is the output size rule of the PyTorch documentation
// (torch.nn.MaxPool1d): floor or ceil of (in + 2p − d(k−1) − 1)/s, plus one,
// where in ceil mode a window starting in the right padding is dropped.
func poolTestOutSize(in, k, s, p, d int, ceil bool) int {
	v := float64(in+2*p-d*(k-1)-1)/float64(s) + 1
	var out int
	if ceil {
		out = int(math.Ceil(v - 1e-9))
		if (out-1)*s >= in+p {
			out--
		}
	} else {
		out = int(math.Floor(v + 1e-9))
	}
	return out
}

// poolTestRef is an independent float64 reference for MaxPool and AvgPool:
// every output visits its full kernel box t and reads x at o·s − p + t·d.
func poolTestRef(x *tensor.Tensor, o tensor.PoolOpts, isMax bool) *tensor.Tensor {
	xs := x.Shape()
	nd := len(xs) - 2
	k, s, p, d := make([]int, nd), make([]int, nd), make([]int, nd), make([]int, nd)
	outShape := []int{xs[0], xs[1]}
	for i := range nd {
		k[i] = poolTestOpt(o.Kernel, i, 0)
		s[i] = poolTestOpt(o.Stride, i, k[i])
		p[i] = poolTestOpt(o.Padding, i, 0)
		d[i] = poolTestOpt(o.Dilation, i, 1)
		outShape = append(outShape, poolTestOutSize(xs[2+i], k[i], s[i], p[i], d[i], o.CeilMode))
	}
	y := tensor.Zeros(outShape...)
	xi := make([]int, len(xs))
	poolTestEach(outShape, func(oi []int) {
		best := math.Inf(-1)
		sum := 0.0
		count, padCount := 1, 1
		for i := range nd {
			start := oi[2+i]*s[i] - p[i]
			end := start + k[i]
			padCount *= min(end, xs[2+i]+p[i]) - start
			count *= min(end, xs[2+i]) - max(start, 0)
		}
		poolTestEach(k, func(t []int) {
			xi[0], xi[1] = oi[0], oi[1]
			for i := range nd {
				xi[2+i] = oi[2+i]*s[i] - p[i] + t[i]*d[i]
				if xi[2+i] < 0 || xi[2+i] >= xs[2+i] {
					return
				}
			}
			v := float64(x.At(xi...))
			best = math.Max(best, v)
			sum += v
		})
		if isMax {
			y.Set(float32(best), oi...)
		} else if o.CountIncludePad {
			y.Set(float32(sum/float64(padCount)), oi...)
		} else {
			y.Set(float32(sum/float64(count)), oi...)
		}
	})
	return y
}

func poolTestClose(t *testing.T, name string, got, want *tensor.Tensor, tol float64) {
	t.Helper()
	if err := tensortest.AllClose(got, want, tol, tol); err != nil {
		t.Errorf("%s: %v", name, err)
	}
}

func TestPoolHandValues(t *testing.T) {
	ramp := func(n int) *tensor.Tensor {
		x := tensor.Zeros(1, 1, n)
		for i := range n {
			x.Data()[i] = float32(i + 1)
		}
		return x
	}
	cases := []struct {
		name string
		x    *tensor.Tensor
		o    tensor.PoolOpts
		max  bool
		want []float32
	}{
		// Windows start at -1, 1, 3, 5 over the padded [-1, 7); the last,
		// [5, 8), is clipped to 2 by the padded bound before the divisor.
		{"avg ceil pad include", ramp(6), tensor.PoolOpts{Kernel: []int{3}, Stride: []int{2}, Padding: []int{1}, CeilMode: true, CountIncludePad: true}, false, []float32{1, 3, 5, 3}},
		{"avg ceil pad exclude", ramp(6), tensor.PoolOpts{Kernel: []int{3}, Stride: []int{2}, Padding: []int{1}, CeilMode: true}, false, []float32{1.5, 3, 5, 6}},
		// Ceil would give 4 windows; the 4th would start at 5 = in+pad.
		{"avg ceil drop include", ramp(5), tensor.PoolOpts{Kernel: []int{2}, Stride: []int{2}, Padding: []int{1}, CeilMode: true, CountIncludePad: true}, false, []float32{0.5, 2.5, 4.5}},
		{"avg ceil drop exclude", ramp(5), tensor.PoolOpts{Kernel: []int{2}, Stride: []int{2}, Padding: []int{1}, CeilMode: true}, false, []float32{1, 2.5, 4.5}},
		{"avg ceil no pad", ramp(5), tensor.PoolOpts{Kernel: []int{2}, CeilMode: true}, false, []float32{1.5, 3.5, 5}},
		{"avg floor", ramp(5), tensor.PoolOpts{Kernel: []int{2}}, false, []float32{1.5, 3.5}},
		{"max ceil", tensor.New([]float32{3, 1, 4, 1, 5}, 1, 1, 5), tensor.PoolOpts{Kernel: []int{2}, CeilMode: true}, true, []float32{3, 4, 5}},
		// Padding is −∞, not 0.
		{"max pad negative", tensor.New([]float32{-5, -3, -4, -1}, 1, 1, 4), tensor.PoolOpts{Kernel: []int{3}, Stride: []int{2}, Padding: []int{1}}, true, []float32{-3, -1}},
		{"max dilation", tensor.New([]float32{0, 5, 1, 4, 2, 3}, 1, 1, 6), tensor.PoolOpts{Kernel: []int{2}, Stride: []int{1}, Dilation: []int{2}}, true, []float32{1, 5, 2, 4}},
		// 2×2 windows of a 3×3 grid 1…9 with stride 1.
		{"max 2d", tensor.New([]float32{1, 2, 3, 4, 5, 6, 7, 8, 9}, 1, 1, 3, 3), tensor.PoolOpts{Kernel: []int{2}, Stride: []int{1}}, true, []float32{5, 6, 8, 9}},
		{"avg 2d", tensor.New([]float32{1, 2, 3, 4, 5, 6, 7, 8, 9}, 1, 1, 3, 3), tensor.PoolOpts{Kernel: []int{2}, Stride: []int{1}}, false, []float32{3, 4, 6, 7}},
	}
	for _, c := range cases {
		var y *tensor.Tensor
		if c.max {
			y = tensor.MaxPool(c.x, c.o)
		} else {
			y = tensor.AvgPool(c.x, c.o)
		}
		shape := append([]int(nil), c.x.Shape()...)
		shape[len(shape)-1] = len(c.want)
		if c.x.Dim() == 4 {
			shape[2], shape[3] = 2, 2
		}
		poolTestClose(t, c.name, y, tensor.New(c.want, shape...), 1e-6)
	}
}

func TestPoolMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name  string
		shape []int
		o     tensor.PoolOpts
	}{
		{"1d k3 s2 p1", []int{2, 3, 11}, tensor.PoolOpts{Kernel: []int{3}, Stride: []int{2}, Padding: []int{1}}},
		{"1d ceil", []int{2, 3, 10}, tensor.PoolOpts{Kernel: []int{3}, Stride: []int{2}, Padding: []int{1}, CeilMode: true}},
		{"2d mixed", []int{1, 2, 7, 9}, tensor.PoolOpts{Kernel: []int{3, 2}, Stride: []int{2, 3}, Padding: []int{1, 0}, CeilMode: true}},
		{"2d include pad", []int{2, 2, 8, 7}, tensor.PoolOpts{Kernel: []int{4, 3}, Stride: []int{3, 2}, Padding: []int{2, 1}, CeilMode: true, CountIncludePad: true}},
		{"3d", []int{1, 2, 5, 6, 7}, tensor.PoolOpts{Kernel: []int{3}, Stride: []int{2}, Padding: []int{1}}},
		{"3d ceil include pad", []int{2, 1, 6, 5, 7}, tensor.PoolOpts{Kernel: []int{2, 3, 3}, Stride: []int{2, 2, 3}, Padding: []int{1, 1, 0}, CeilMode: true, CountIncludePad: true}},
		{"3d parallel planes", []int{2, 8, 12, 12, 12}, tensor.PoolOpts{Kernel: []int{3}, Stride: []int{2}, Padding: []int{1}, CeilMode: true}},
	}
	for _, c := range cases {
		x := tensortest.Rand(rng, c.shape...)
		poolTestClose(t, c.name+" avg", tensor.AvgPool(x, c.o), poolTestRef(x, c.o, false), 1e-5)
		poolTestClose(t, c.name+" max", tensor.MaxPool(x, c.o), poolTestRef(x, c.o, true), 0)
		c.o.Dilation = []int{2}
		if c.o.Kernel[0] <= 3 {
			poolTestClose(t, c.name+" max dilated", tensor.MaxPool(x, c.o), poolTestRef(x, c.o, true), 0)
		}
	}
}

func TestPoolGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []struct {
		name  string
		shape []int
		o     tensor.PoolOpts
	}{
		{"1d", []int{2, 3, 9}, tensor.PoolOpts{Kernel: []int{3}, Stride: []int{2}, Padding: []int{1}, CeilMode: true}},
		{"2d", []int{1, 3, 7, 5}, tensor.PoolOpts{Kernel: []int{3, 2}, Stride: []int{2, 1}, Padding: []int{1, 1}}},
		{"2d overlap include pad", []int{2, 1, 6, 7}, tensor.PoolOpts{Kernel: []int{3}, Stride: []int{1}, Padding: []int{1}, CountIncludePad: true}},
		{"3d ceil", []int{1, 2, 5, 4, 7}, tensor.PoolOpts{Kernel: []int{2, 3, 3}, Stride: []int{2}, Padding: []int{1}, CeilMode: true}},
	}
	for _, c := range cases {
		x := poolTestDistinct(rng, c.shape...)
		o := c.o
		tensortest.GradCheck(t, "MaxPool "+c.name, func(in []*tensor.Tensor) *tensor.Tensor { return tensor.MaxPool(in[0], o) }, []*tensor.Tensor{x}, tensortest.GradCheckOpts{})
		od := o
		od.Dilation = []int{2}
		tensortest.GradCheck(t, "MaxPool dilated "+c.name, func(in []*tensor.Tensor) *tensor.Tensor { return tensor.MaxPool(in[0], od) }, []*tensor.Tensor{x}, tensortest.GradCheckOpts{})
		xa := tensortest.Rand(rng, c.shape...)
		tensortest.GradCheck(t, "AvgPool "+c.name, func(in []*tensor.Tensor) *tensor.Tensor { return tensor.AvgPool(in[0], o) }, []*tensor.Tensor{xa}, tensortest.GradCheckOpts{})
	}
}

// TestMaxPoolGradRoutesToArgmax checks the exact gradient on a hand case:
// overlapping windows that share a maximum send it both gradients.
func TestMaxPoolGradRoutesToArgmax(t *testing.T) {
	x := tensor.New([]float32{1, 9, 2, 3, 8}, 1, 1, 5).SetRequiresGrad(true)
	y := tensor.MaxPool(x, tensor.PoolOpts{Kernel: []int{2}, Stride: []int{1}}) // [9 9 3 8]
	y.BackwardWith(tensor.New([]float32{1, 10, 100, 1000}, 1, 1, 4))
	poolTestClose(t, "grad", x.Grad(), tensor.New([]float32{0, 11, 0, 100, 1000}, 1, 1, 5), 0)
}

// TestMaxPoolTiesAndEmptyWindows checks that a tie sends the gradient to the
// first maximum, and that a window whose dilated taps all lie in the padding
// gives −∞ and no gradient.
func TestMaxPoolTiesAndEmptyWindows(t *testing.T) {
	x := tensor.New([]float32{2, 2, 1}, 1, 1, 3).SetRequiresGrad(true)
	y := tensor.MaxPool(x, tensor.PoolOpts{Kernel: []int{2}, Stride: []int{1}}) // [2 2]
	y.BackwardWith(tensor.New([]float32{1, 10}, 1, 1, 2))
	poolTestClose(t, "tie grad", x.Grad(), tensor.New([]float32{1, 10, 0}, 1, 1, 3), 0)

	// Height 1, kernel 2, dilation 2, padding 1: taps at rows −1 and 1.
	x = tensor.New([]float32{3, 4}, 1, 1, 1, 2).SetRequiresGrad(true)
	y = tensor.MaxPool(x, tensor.PoolOpts{Kernel: []int{2, 1}, Padding: []int{1, 0}, Dilation: []int{2, 1}, Stride: []int{1}})
	inf := float32(math.Inf(-1))
	poolTestClose(t, "empty window", y, tensor.New([]float32{inf, inf}, 1, 1, 1, 2), 0)
	y.BackwardWith(tensor.Ones(1, 1, 1, 2))
	poolTestClose(t, "empty window grad", x.Grad(), tensor.Zeros(1, 1, 1, 2), 0)
}

func TestAdaptiveAvgPool(t *testing.T) {
	// Bins of 5 → 3: [0,2) [1,4) [3,5).
	x := tensor.New([]float32{1, 2, 3, 4, 5}, 1, 1, 5)
	poolTestClose(t, "1d 5→3", tensor.AdaptiveAvgPool(x, 3), tensor.New([]float32{1.5, 3, 4.5}, 1, 1, 3), 1e-6)
	// 3 → 5 upsamples: bins [0,1) [0,2) [1,2) [1,3) [2,3).
	x3 := tensor.New([]float32{1, 2, 4}, 1, 1, 3)
	poolTestClose(t, "1d 3→5", tensor.AdaptiveAvgPool(x3, 5), tensor.New([]float32{1, 1.5, 2, 3, 4}, 1, 1, 5), 1e-6)

	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct {
		shape, out []int
	}{
		{[]int{2, 3, 7, 5}, []int{3, 2}},
		{[]int{1, 2, 5, 7, 6}, []int{2, 3, 4}},
		{[]int{2, 2, 4, 3, 5}, []int{1}},
		{[]int{1, 1, 3, 4}, []int{5, 7}},
	} {
		x := tensortest.Rand(rng, c.shape...)
		got := tensor.AdaptiveAvgPool(x, c.out...)
		nd := len(c.shape) - 2
		outShape := append([]int(nil), c.shape[:2]...)
		for i := range nd {
			outShape = append(outShape, poolTestOpt(c.out, i, 0))
		}
		want := tensor.Zeros(outShape...)
		poolTestEach(outShape, func(oi []int) {
			lo, hi := make([]int, nd), make([]int, nd)
			for i := range nd {
				in, n := float64(c.shape[2+i]), float64(outShape[2+i])
				lo[i] = int(math.Floor(float64(oi[2+i]) * in / n))
				hi[i] = int(math.Ceil(float64(oi[2+i]+1) * in / n))
			}
			sum, cnt := 0.0, 0
			poolTestEach(c.shape[2:], func(si []int) {
				for i := range nd {
					if si[i] < lo[i] || si[i] >= hi[i] {
						return
					}
				}
				sum += float64(x.At(append([]int{oi[0], oi[1]}, si...)...))
				cnt++
			})
			want.Set(float32(sum/float64(cnt)), oi...)
		})
		poolTestClose(t, "adaptive", got, want, 1e-5)
		tensortest.GradCheck(t, "AdaptiveAvgPool", func(in []*tensor.Tensor) *tensor.Tensor {
			return tensor.AdaptiveAvgPool(in[0], c.out...)
		}, []*tensor.Tensor{x}, tensortest.GradCheckOpts{})
	}
}

// poolTestShapeError runs f and checks that it fails with a *ShapeError whose
// message contains every string in want.
func poolTestShapeError(t *testing.T, name string, f func(), want ...string) {
	t.Helper()
	err := tensor.Catch(f)
	var se *tensor.ShapeError
	if !errors.As(err, &se) {
		t.Errorf("%s: got error %v, want a *ShapeError", name, err)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not mention %q", name, err, w)
		}
	}
}

func TestPoolErrors(t *testing.T) {
	x := tensor.Zeros(1, 2, 5, 5)
	poolTestShapeError(t, "rank", func() { tensor.MaxPool(tensor.Zeros(4, 4), tensor.PoolOpts{Kernel: []int{2}}) }, "[4 4]")
	poolTestShapeError(t, "rank 6", func() { tensor.AvgPool(tensor.Zeros(1, 1, 2, 2, 2, 2), tensor.PoolOpts{Kernel: []int{2}}) }, "[1 1 2 2 2 2]")
	poolTestShapeError(t, "no kernel", func() { tensor.MaxPool(x, tensor.PoolOpts{}) }, "kernel", "[1 2 5 5]")
	poolTestShapeError(t, "kernel len", func() { tensor.MaxPool(x, tensor.PoolOpts{Kernel: []int{2, 2, 2}}) }, "kernel [2 2 2]", "[1 2 5 5]")
	poolTestShapeError(t, "zero stride", func() { tensor.AvgPool(x, tensor.PoolOpts{Kernel: []int{2}, Stride: []int{0}}) }, "stride [0 0]")
	poolTestShapeError(t, "big pad", func() { tensor.MaxPool(x, tensor.PoolOpts{Kernel: []int{2}, Padding: []int{2}}) }, "padding [2 2]", "half")
	poolTestShapeError(t, "too small", func() { tensor.MaxPool(x, tensor.PoolOpts{Kernel: []int{6}}) }, "too small", "[1 2 5 5]")
	poolTestShapeError(t, "avg3d smaller than kernel", func() {
		tensor.AvgPool(tensor.Zeros(1, 1, 4, 1, 4), tensor.PoolOpts{Kernel: []int{3}, Padding: []int{1}})
	}, "[1 1 4 1 4]", "kernel [3 3 3]")
	poolTestShapeError(t, "avg dilation", func() { tensor.AvgPool(x, tensor.PoolOpts{Kernel: []int{2}, Dilation: []int{2}}) }, "dilation")
	poolTestShapeError(t, "empty spatial", func() { tensor.MaxPool(tensor.Zeros(1, 1, 0, 3), tensor.PoolOpts{Kernel: []int{1}}) }, "[1 1 0 3]")
	poolTestShapeError(t, "adaptive size", func() { tensor.AdaptiveAvgPool(x, 2, 2, 2) }, "[2 2 2]", "[1 2 5 5]")
	poolTestShapeError(t, "adaptive zero", func() { tensor.AdaptiveAvgPool(x, 0) }, "[1 2 5 5]")
	poolTestShapeError(t, "adaptive none", func() { tensor.AdaptiveAvgPool(x) }, "[1 2 5 5]")
}
