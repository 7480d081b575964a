package tensor_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

func TestBatchNormTrainHandValues(t *testing.T) {
	// N=2, C=2, L=2: channel 0 holds 1 2 3 4, channel 1 holds 10 20 30 40.
	x := tensor.New([]float32{1, 2, 10, 20, 3, 4, 30, 40}, 2, 2, 2)
	w := tensor.New([]float32{2, -1}, 2)
	b := tensor.New([]float32{0.5, 1}, 2)
	rm := tensor.New([]float32{0, 1}, 2)
	rv := tensor.New([]float32{1, 2}, 2)
	const eps = 1e-5
	y := tensor.BatchNorm(x, w, b, rm, rv, true, 0.1, eps)
	// Channel 0: mean 2.5, biased variance 1.25, unbiased 5/3.
	// Channel 1: mean 25, biased variance 125, unbiased 500/3.
	s0, s1 := math.Sqrt(1.25+eps), math.Sqrt(125+eps)
	want := make([]float32, 8)
	for i, v := range x.Data() {
		if (i/2)%2 == 0 {
			want[i] = float32(2*(float64(v)-2.5)/s0 + 0.5)
		} else {
			want[i] = float32(-(float64(v)-25)/s1 + 1)
		}
	}
	poolTestClose(t, "output", y, tensor.New(want, 2, 2, 2), 1e-6)
	// 0.9·old + 0.1·batch.
	poolTestClose(t, "running mean", rm, tensor.New([]float32{0.25, 0.9 + 2.5}, 2), 1e-6)
	poolTestClose(t, "running var", rv, tensor.New([]float32{0.9 + 0.5/3, 1.8 + 50.0/3}, 2), 1e-6)

	// Without running statistics or affine parameters.
	y = tensor.BatchNorm(x, nil, nil, nil, nil, true, 0.1, eps)
	for i, v := range x.Data() {
		if (i/2)%2 == 0 {
			want[i] = float32((float64(v) - 2.5) / s0)
		} else {
			want[i] = float32((float64(v) - 25) / s1)
		}
	}
	poolTestClose(t, "no affine", y, tensor.New(want, 2, 2, 2), 1e-6)
}

func TestBatchNormEvalHandValues(t *testing.T) {
	x := tensor.New([]float32{1, 2, 10, 20, 3, 4, 30, 40}, 2, 2, 2)
	rm := tensor.New([]float32{1, 2}, 2)
	rv := tensor.New([]float32{4, 0.25}, 2)
	y := tensor.BatchNorm(x, tensor.New([]float32{3, 1}, 2), tensor.New([]float32{0, -1}, 2), rm, rv, false, 0.1, 0)
	// Channel 0: 3·(x−1)/2; channel 1: (x−2)/0.5 − 1.
	want := []float32{0, 1.5, 15, 35, 3, 4.5, 55, 75}
	poolTestClose(t, "output", y, tensor.New(want, 2, 2, 2), 1e-6)
	poolTestClose(t, "running mean unchanged", rm, tensor.New([]float32{1, 2}, 2), 0)
	poolTestClose(t, "running var unchanged", rv, tensor.New([]float32{4, 0.25}, 2), 0)
}

// normTestBatchRef is a float64 reference of training-mode batch norm that
// also returns the updated running statistics.
func normTestBatchRef(x, w, b, rm, rv *tensor.Tensor, mom, eps float64) (y, nm, nv *tensor.Tensor) {
	s := x.Shape()
	n, c := s[0], s[1]
	inner := x.Len() / (n * c)
	y = tensor.Zeros(s...)
	nm, nv = tensor.Zeros(c), tensor.Zeros(c)
	for ch := range c {
		var vals []float64
		for i := range n {
			for j := range inner {
				vals = append(vals, float64(x.Data()[(i*c+ch)*inner+j]))
			}
		}
		mean := 0.0
		for _, v := range vals {
			mean += v
		}
		mean /= float64(len(vals))
		ss := 0.0
		for _, v := range vals {
			ss += (v - mean) * (v - mean)
		}
		std := math.Sqrt(ss/float64(len(vals)) + eps)
		for i := range n {
			for j := range inner {
				k := (i*c+ch)*inner + j
				y.Data()[k] = float32((float64(x.Data()[k])-mean)/std*float64(w.Data()[ch]) + float64(b.Data()[ch]))
			}
		}
		nm.Data()[ch] = float32((1-mom)*float64(rm.Data()[ch]) + mom*mean)
		nv.Data()[ch] = float32((1-mom)*float64(rv.Data()[ch]) + mom*ss/float64(len(vals)-1))
	}
	return y, nm, nv
}

func TestBatchNormMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, shape := range [][]int{{5, 3}, {2, 3, 7}, {3, 2, 5, 3}, {2, 3, 3, 4, 5}, {2, 37, 4, 5, 3}, {2, 16, 8, 16, 9}} {
		c := shape[1]
		x := tensortest.Rand(rng, shape...)
		for i := range x.Data() {
			x.Data()[i] = 3*x.Data()[i] + 1.5
		}
		w, b := tensortest.Rand(rng, c), tensortest.Rand(rng, c)
		rm, rv := tensortest.Rand(rng, c), tensor.Full(0.7, c)
		wantY, wantM, wantV := normTestBatchRef(x, w, b, rm, rv, 0.2, 1e-3)
		y := tensor.BatchNorm(x, w, b, rm, rv, true, 0.2, 1e-3)
		poolTestClose(t, "train", y, wantY, 1e-5)
		poolTestClose(t, "running mean", rm, wantM, 1e-6)
		poolTestClose(t, "running var", rv, wantV, 1e-5)
	}
}

func TestBatchNormGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, shape := range [][]int{{5, 3}, {2, 3, 7}, {3, 2, 3, 5}, {2, 3, 3, 2, 3}} {
		c := shape[1]
		x := tensortest.Rand(rng, shape...)
		w, b := tensortest.Rand(rng, c), tensortest.Rand(rng, c)
		rm, rv := tensor.Zeros(c), tensor.Ones(c)
		tensortest.GradCheck(t, "BatchNorm train", func(in []*tensor.Tensor) *tensor.Tensor {
			return tensor.BatchNorm(in[0], in[1], in[2], rm, rv, true, 0.1, 1e-5)
		}, []*tensor.Tensor{x, w, b}, tensortest.GradCheckOpts{})
		tensortest.GradCheck(t, "BatchNorm train no affine", func(in []*tensor.Tensor) *tensor.Tensor {
			return tensor.BatchNorm(in[0], nil, nil, nil, nil, true, 0.1, 1e-5)
		}, []*tensor.Tensor{x}, tensortest.GradCheckOpts{})
		erm, erv := tensortest.Rand(rng, c), tensor.Full(0.5, c)
		tensortest.GradCheck(t, "BatchNorm eval", func(in []*tensor.Tensor) *tensor.Tensor {
			return tensor.BatchNorm(in[0], in[1], in[2], erm, erv, false, 0.1, 1e-5)
		}, []*tensor.Tensor{x, w, b}, tensortest.GradCheckOpts{})
	}
}

func TestLayerNorm(t *testing.T) {
	x := tensor.New([]float32{1, 2, 3, 4, 10, 10, 10, 14}, 2, 4)
	const eps = 1e-5
	y := tensor.LayerNorm(x, nil, nil, 1, eps)
	// Row 0: mean 2.5, variance 1.25; row 1: mean 11, variance 3.
	s0, s1 := math.Sqrt(1.25+eps), math.Sqrt(3+eps)
	want := []float32{
		float32(-1.5 / s0), float32(-0.5 / s0), float32(0.5 / s0), float32(1.5 / s0),
		float32(-1 / s1), float32(-1 / s1), float32(-1 / s1), float32(3 / s1),
	}
	poolTestClose(t, "hand", y, tensor.New(want, 2, 4), 1e-6)

	rng := rand.New(rand.NewPCG(11, 12))
	xs := tensortest.Rand(rng, 2, 3, 4, 5)
	w, b := tensortest.Rand(rng, 4, 5), tensortest.Rand(rng, 4, 5)
	got := tensor.LayerNorm(xs, w, b, 2, 1e-3)
	ref := tensor.Zeros(2, 3, 4, 5)
	for r := range 6 {
		row := xs.Data()[r*20 : (r+1)*20]
		mean, ss := 0.0, 0.0
		for _, v := range row {
			mean += float64(v) / 20
		}
		for _, v := range row {
			ss += (float64(v) - mean) * (float64(v) - mean)
		}
		for j, v := range row {
			ref.Data()[r*20+j] = float32((float64(v)-mean)/math.Sqrt(ss/20+1e-3)*float64(w.Data()[j]) + float64(b.Data()[j]))
		}
	}
	poolTestClose(t, "reference", got, ref, 1e-5)

	for _, c := range []struct {
		shape    []int
		normDims int
		affine   bool
	}{
		{[]int{3, 7}, 1, true},
		{[]int{2, 3, 5}, 2, true},
		{[]int{2, 3, 2, 3}, 3, false},
		{[]int{5, 4}, 2, true},
		{[]int{64, 600}, 1, true}, // several workers
	} {
		x := tensortest.Rand(rng, c.shape...)
		inputs := []*tensor.Tensor{x}
		if c.affine {
			tail := c.shape[len(c.shape)-c.normDims:]
			inputs = append(inputs, tensortest.Rand(rng, tail...), tensortest.Rand(rng, tail...))
		}
		nd := c.normDims
		tensortest.GradCheck(t, "LayerNorm", func(in []*tensor.Tensor) *tensor.Tensor {
			if len(in) == 3 {
				return tensor.LayerNorm(in[0], in[1], in[2], nd, 1e-5)
			}
			return tensor.LayerNorm(in[0], nil, nil, nd, 1e-5)
		}, inputs, tensortest.GradCheckOpts{})
	}
}

func TestNormErrors(t *testing.T) {
	x := tensor.Zeros(2, 3, 4)
	v3, v2 := tensor.Zeros(3), tensor.Zeros(2)
	poolTestShapeError(t, "bn rank", func() { tensor.BatchNorm(tensor.Zeros(3), nil, nil, nil, nil, true, 0.1, 1e-5) }, "[3]")
	poolTestShapeError(t, "bn weight", func() { tensor.BatchNorm(x, v2, nil, nil, nil, true, 0.1, 1e-5) }, "weight", "[2]", "[2 3 4]")
	poolTestShapeError(t, "bn running var", func() { tensor.BatchNorm(x, v3, v3, v3, v2, true, 0.1, 1e-5) }, "running variance", "[2]")
	poolTestShapeError(t, "bn one value", func() { tensor.BatchNorm(tensor.Zeros(1, 3), nil, nil, nil, nil, true, 0.1, 1e-5) }, "[1 3]", "more than 1 value")
	poolTestShapeError(t, "bn eval no stats", func() { tensor.BatchNorm(x, nil, nil, v3, nil, false, 0.1, 1e-5) }, "[2 3 4]", "running")
	poolTestShapeError(t, "ln dims", func() { tensor.LayerNorm(x, nil, nil, 4, 1e-5) }, "[2 3 4]")
	poolTestShapeError(t, "ln weight", func() { tensor.LayerNorm(x, tensor.Zeros(4, 3), nil, 2, 1e-5) }, "weight of shape [4 3]", "[3 4]")
}
