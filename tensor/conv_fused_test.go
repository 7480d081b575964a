package tensor_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// TestConvFused checks ConvFused against the float64 definition: convRef's
// cross-correlation followed by scale, shift, residual and activation
// computed here element by element.
func TestConvFused(t *testing.T) {
	cases := []struct {
		name              string
		x, w              []int
		stride, pad, dil  []int
		groups            int
		scale, shift, res bool
		act               tensor.Activation
	}{
		{"dense3d/bn-relu", []int{2, 3, 5, 6, 7}, []int{4, 3, 3, 3, 3}, []int{1, 1, 1}, []int{1, 1, 1}, []int{1, 1, 1}, 1, true, true, false, tensor.ActReLU},
		{"dense3d/stride2-residual-relu", []int{1, 4, 6, 7, 8}, []int{5, 4, 3, 3, 3}, []int{2, 2, 2}, []int{1, 1, 1}, []int{1, 1, 1}, 1, true, true, true, tensor.ActReLU},
		{"dense3d/dilated-shift-only", []int{1, 2, 7, 7, 7}, []int{3, 2, 3, 3, 3}, []int{1, 1, 1}, []int{2, 2, 2}, []int{2, 2, 2}, 1, false, true, false, tensor.ActNone},
		{"stem/1x7x7-stride122", []int{1, 3, 4, 16, 16}, []int{6, 3, 1, 7, 7}, []int{1, 2, 2}, []int{0, 3, 3}, []int{1, 1, 1}, 1, true, true, false, tensor.ActReLU},
		{"pointwise/residual-relu6", []int{2, 8, 4, 5, 6}, []int{16, 8, 1, 1, 1}, []int{1, 1, 1}, []int{0, 0, 0}, []int{1, 1, 1}, 1, true, true, true, tensor.ActReLU6},
		{"pointwise/stride2", []int{1, 8, 6, 6, 6}, []int{4, 8, 1, 1, 1}, []int{2, 2, 2}, []int{0, 0, 0}, []int{1, 1, 1}, 1, true, false, false, tensor.ActNone},
		{"depthwise/relu6", []int{2, 6, 5, 6, 7}, []int{6, 1, 3, 3, 3}, []int{2, 2, 2}, []int{1, 1, 1}, []int{1, 1, 1}, 6, true, true, false, tensor.ActReLU6},
		{"depthwise-mult2/residual", []int{1, 3, 5, 5, 5}, []int{6, 1, 3, 3, 3}, []int{1, 1, 1}, []int{1, 1, 1}, []int{1, 1, 1}, 3, true, true, true, tensor.ActNone},
		{"grouped/relu", []int{1, 4, 5, 5, 5}, []int{6, 2, 3, 3, 3}, []int{1, 1, 1}, []int{1, 1, 1}, []int{1, 1, 1}, 2, true, true, false, tensor.ActReLU},
		{"conv2d/bn-relu", []int{2, 3, 9, 10}, []int{4, 3, 3, 3}, []int{1, 1}, []int{1, 1}, []int{1, 1}, 1, true, true, false, tensor.ActReLU},
		{"plain", []int{1, 2, 4, 4, 4}, []int{3, 2, 2, 2, 2}, []int{1, 1, 1}, []int{0, 0, 0}, []int{1, 1, 1}, 1, false, false, false, tensor.ActNone},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 77))
			x, w := tensortest.Rand(rng, c.x...), tensortest.Rand(rng, c.w...)
			ref := convRef(x, w, nil, c.stride, c.pad, c.dil, c.groups)
			cout := c.w[0]
			var e tensor.ConvEpilogue
			e.Act = c.act
			if c.scale {
				e.Scale = tensortest.Rand(rng, cout).Data()
			}
			if c.shift {
				e.Shift = tensortest.Rand(rng, cout).Data()
			}
			if c.res {
				e.Residual = tensortest.Rand(rng, ref.Shape()...)
			}
			// The epilogue of the definition, in float64.
			want := ref.Clone()
			inner := want.Len() / (want.Size(0) * cout)
			for j := range want.Data() {
				o := j / inner % cout
				v := float64(want.Data()[j])
				if e.Scale != nil {
					v *= float64(e.Scale[o])
				}
				if e.Shift != nil {
					v += float64(e.Shift[o])
				}
				if e.Residual != nil {
					v += float64(e.Residual.Data()[j])
				}
				switch c.act {
				case tensor.ActReLU:
					v = math.Max(v, 0)
				case tensor.ActReLU6:
					v = math.Min(math.Max(v, 0), 6)
				}
				want.Data()[j] = float32(v)
			}
			got := tensor.ConvFused(x, w, tensor.ConvOpts{Stride: c.stride, Padding: c.pad, Dilation: c.dil, Groups: c.groups}, e)
			if err := tensortest.AllClose(got, want, 1e-5, 1e-5); err != nil {
				t.Fatal(err)
			}
			if got.RequiresGrad() {
				t.Error("result requires gradients")
			}
		})
	}
}

// TestConvFusedChunked runs a pointwise and a dense convolution whose
// outputs span several position blocks (and im2col chunks, with a small
// ConvColumnLimit), so that the epilogue meets every block boundary.
func TestConvFusedChunked(t *testing.T) {
	old := tensor.ConvColumnLimit
	tensor.ConvColumnLimit = 64 << 10
	defer func() { tensor.ConvColumnLimit = old }()
	rng := rand.New(rand.NewPCG(5, 5))
	for _, k := range []int{1, 3} {
		x := tensortest.Rand(rng, 1, 4, 9, 24, 24) // 5184 positions
		w := tensortest.Rand(rng, 300, 4, k, k, k)
		pad := []int{k / 2}
		ref := convRef(x, w, nil, []int{1, 1, 1}, []int{k / 2, k / 2, k / 2}, []int{1, 1, 1}, 1)
		res := tensortest.Rand(rng, ref.Shape()...)
		want := ref.Clone()
		for j, v := range want.Data() {
			want.Data()[j] = float32(math.Max(float64(v)+float64(res.Data()[j]), 0))
		}
		got := tensor.ConvFused(x, w, tensor.ConvOpts{Padding: pad}, tensor.ConvEpilogue{Residual: res, Act: tensor.ActReLU})
		if err := tensortest.AllClose(got, want, 1e-5, 1e-5); err != nil {
			t.Fatalf("kernel %d: %v", k, err)
		}
	}
}

func TestConvFusedErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	x, w := tensortest.Rand(rng, 1, 2, 4, 4, 4), tensortest.Rand(rng, 3, 2, 3, 3, 3)
	cases := []struct {
		name string
		f    func()
	}{
		{"input requires grad", func() {
			tensor.ConvFused(x.Clone().SetRequiresGrad(true), w, tensor.ConvOpts{}, tensor.ConvEpilogue{})
		}},
		{"weight requires grad", func() {
			tensor.ConvFused(x, w.Clone().SetRequiresGrad(true), tensor.ConvOpts{}, tensor.ConvEpilogue{})
		}},
		{"scale length", func() {
			tensor.ConvFused(x, w, tensor.ConvOpts{}, tensor.ConvEpilogue{Scale: []float32{1, 2}})
		}},
		{"shift length", func() {
			tensor.ConvFused(x, w, tensor.ConvOpts{}, tensor.ConvEpilogue{Shift: []float32{1, 2, 3, 4}})
		}},
		{"residual shape", func() {
			tensor.ConvFused(x, w, tensor.ConvOpts{}, tensor.ConvEpilogue{Residual: tensor.Zeros(1, 3, 4, 4, 4)})
		}},
		{"activation", func() {
			tensor.ConvFused(x, w, tensor.ConvOpts{}, tensor.ConvEpilogue{Act: 7})
		}},
		{"channels", func() {
			tensor.ConvFused(tensortest.Rand(rng, 1, 3, 4, 4, 4), w, tensor.ConvOpts{}, tensor.ConvEpilogue{})
		}},
	}
	for _, c := range cases {
		err := tensor.Catch(c.f)
		var se *tensor.ShapeError
		if !errors.As(err, &se) || se.Op != "ConvFused" && se.Op != "Conv" {
			t.Errorf("%s: got %v, want a ConvFused shape error", c.name, err)
		}
	}
}
