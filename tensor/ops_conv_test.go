package tensor_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// convRef is a direct float64 cross-correlation written from the
// definition, independent of the package's im2col and depthwise kernels.
// Shapes: x N×Cin×spatial, w Cout×Cin/groups×kernel, b Cout or nil;
// stride, pad and dil have one entry per spatial dim. Spatial dims are
// addressed through a flattened multi-index so 1, 2 and 3 dims share it.
func convRef(x, w, b *tensor.Tensor, stride, pad, dil []int, groups int) *tensor.Tensor {
	xs, ws := x.Shape(), w.Shape()
	nsp := len(xs) - 2
	N, cin, cout := xs[0], xs[1], ws[0]
	cinG, coutG := cin/groups, cout/groups
	in, k, out := xs[2:], ws[2:], make([]int, nsp)
	for i := range nsp {
		out[i] = (in[i]+2*pad[i]-dil[i]*(k[i]-1)-1)/stride[i] + 1
	}
	// Pad every spatial list to 3 dims (leading 1s) for the loops below.
	ext := func(v []int, def int) [3]int {
		r := [3]int{def, def, def}
		copy(r[3-len(v):], v)
		return r
	}
	I, K, O := ext(in, 1), ext(k, 1), ext(out, 1)
	S, P, Dl := ext(stride, 1), ext(pad, 0), ext(dil, 1)
	xd, wd := x.Data(), w.Data()
	y := make([]float64, N*cout*O[0]*O[1]*O[2])
	yi := 0
	for n := range N {
		for oc := range cout {
			grp := oc / coutG
			for od := range O[0] {
				for oh := range O[1] {
					for ow := range O[2] {
						s := 0.0
						if b != nil {
							s = float64(b.Data()[oc])
						}
						for c := range cinG {
							ic := grp*cinG + c
							for kd := range K[0] {
								id := od*S[0] - P[0] + kd*Dl[0]
								if id < 0 || id >= I[0] {
									continue
								}
								for kh := range K[1] {
									ih := oh*S[1] - P[1] + kh*Dl[1]
									if ih < 0 || ih >= I[1] {
										continue
									}
									for kw := range K[2] {
										iw := ow*S[2] - P[2] + kw*Dl[2]
										if iw < 0 || iw >= I[2] {
											continue
										}
										xv := xd[(((n*cin+ic)*I[0]+id)*I[1]+ih)*I[2]+iw]
										wv := wd[(((oc*cinG+c)*K[0]+kd)*K[1]+kh)*K[2]+kw]
										s += float64(xv) * float64(wv)
									}
								}
							}
						}
						y[yi] = s
						yi++
					}
				}
			}
		}
	}
	res := tensor.Zeros(append([]int{N, cout}, out...)...)
	for i, v := range y {
		res.Data()[i] = float32(v)
	}
	return res
}

// convCase is one convolution configuration.
type convCase struct {
	name   string
	x, w   []int // shapes
	bias   bool
	stride []int
	pad    []int
	dil    []int
	groups int
}

func (c convCase) opts() tensor.ConvOpts {
	return tensor.ConvOpts{Stride: c.stride, Padding: c.pad, Dilation: c.dil, Groups: c.groups}
}

// convFull expands an option to one entry per spatial dim, as the reference wants.
func convFull(v []int, def, nsp int) []int {
	r := make([]int, nsp)
	for i := range r {
		switch len(v) {
		case 0:
			r[i] = def
		case 1:
			r[i] = v[0]
		default:
			r[i] = v[i]
		}
	}
	return r
}

func (c convCase) inputs(seed uint64) (x, w, b *tensor.Tensor) {
	rng := rand.New(rand.NewPCG(seed, 7))
	x = tensortest.Rand(rng, c.x...)
	w = tensortest.Rand(rng, c.w...)
	if c.bias {
		b = tensortest.Rand(rng, c.w[0])
	}
	return x, w, b
}

func (c convCase) ref(x, w, b *tensor.Tensor) *tensor.Tensor {
	nsp := len(c.x) - 2
	g := max(c.groups, 1)
	return convRef(x, w, b, convFull(c.stride, 1, nsp), convFull(c.pad, 0, nsp), convFull(c.dil, 1, nsp), g)
}

// convGradCases cover every code path: dense, grouped, depthwise, pointwise,
// in 1, 2 and 3 spatial dims, with odd sizes, stride, padding, dilation.
var convGradCases = []convCase{
	{name: "1d", x: []int{2, 3, 11}, w: []int{4, 3, 3}, bias: true},
	{name: "1d/stride-pad-dil", x: []int{2, 3, 13}, w: []int{5, 3, 3}, bias: true, stride: []int{2}, pad: []int{2}, dil: []int{2}},
	{name: "1d/groups3", x: []int{2, 6, 9}, w: []int{9, 2, 4}, bias: true, stride: []int{3}, pad: []int{1}, groups: 3},
	{name: "1d/depthwise", x: []int{2, 4, 10}, w: []int{4, 1, 3}, bias: true, pad: []int{1}, groups: 4},
	{name: "2d", x: []int{2, 3, 7, 9}, w: []int{4, 3, 3, 2}, bias: true, pad: []int{1, 0}},
	{name: "2d/stride-dil", x: []int{1, 2, 11, 10}, w: []int{3, 2, 3, 3}, bias: true, stride: []int{2, 3}, pad: []int{1}, dil: []int{2, 1}},
	{name: "2d/groups2", x: []int{2, 4, 7, 6}, w: []int{6, 2, 3, 3}, bias: true, stride: []int{2}, pad: []int{1}, groups: 2},
	{name: "2d/depthwise-mult2", x: []int{2, 3, 8, 7}, w: []int{6, 1, 3, 3}, bias: true, stride: []int{2, 1}, pad: []int{1, 2}, dil: []int{1, 2}, groups: 3},
	{name: "2d/pointwise", x: []int{2, 5, 4, 3}, w: []int{3, 5, 1, 1}, bias: true},
	{name: "2d/pointwise-groups", x: []int{2, 4, 3, 5}, w: []int{6, 2, 1, 1}, groups: 2},
	{name: "2d/1x1-stride2", x: []int{1, 3, 5, 7}, w: []int{2, 3, 1, 1}, bias: true, stride: []int{2}},
	{name: "2d/1x1-pad", x: []int{1, 3, 3, 4}, w: []int{2, 3, 1, 1}, pad: []int{1}},
	{name: "3d", x: []int{2, 2, 5, 6, 7}, w: []int{3, 2, 3, 3, 3}, bias: true, pad: []int{1}},
	{name: "3d/stride-pad-dil", x: []int{1, 3, 7, 6, 9}, w: []int{2, 3, 2, 3, 3}, bias: true, stride: []int{2, 1, 2}, pad: []int{0, 1, 2}, dil: []int{2, 1, 2}},
	{name: "3d/groups3", x: []int{1, 6, 5, 5, 4}, w: []int{3, 2, 3, 1, 3}, bias: true, stride: []int{1, 2, 1}, pad: []int{1}, groups: 3},
	{name: "3d/depthwise", x: []int{2, 3, 5, 4, 6}, w: []int{3, 1, 3, 3, 3}, bias: true, pad: []int{1}, groups: 3},
	{name: "3d/depthwise-mult2", x: []int{1, 2, 6, 5, 7}, w: []int{4, 1, 3, 2, 3}, bias: true, stride: []int{2}, pad: []int{1, 0, 2}, dil: []int{1, 1, 2}, groups: 2},
	{name: "3d/pointwise", x: []int{2, 4, 3, 2, 5}, w: []int{3, 4, 1, 1, 1}, bias: true},
	{name: "3d/nobias", x: []int{1, 2, 4, 5, 3}, w: []int{2, 2, 2, 2, 2}, stride: []int{1, 2, 1}},
}

func TestConvForwardCases(t *testing.T) {
	for i, c := range convGradCases {
		t.Run(c.name, func(t *testing.T) {
			x, w, b := c.inputs(uint64(i))
			got := tensor.Conv(x, w, b, c.opts())
			if err := tensortest.AllClose(got, c.ref(x, w, b), 1e-5, 1e-5); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestConvGrad(t *testing.T) {
	for i, c := range convGradCases {
		t.Run(c.name, func(t *testing.T) {
			x, w, b := c.inputs(uint64(100 + i))
			in := []*tensor.Tensor{x, w}
			if b != nil {
				in = append(in, b)
			}
			f := func(in []*tensor.Tensor) *tensor.Tensor {
				var bb *tensor.Tensor
				if len(in) == 3 {
					bb = in[2]
				}
				return tensor.Conv(in[0], in[1], bb, c.opts())
			}
			tensortest.GradCheck(t, c.name, f, in, tensortest.GradCheckOpts{Tol: 5e-3, MaxPts: 40, Seed: uint64(i)})
		})
	}
}

// convSetColumnLimit sets tensor.ConvColumnLimit for the rest of the test.
func convSetColumnLimit(t *testing.T, v int) {
	t.Helper()
	old := tensor.ConvColumnLimit
	tensor.ConvColumnLimit = v
	t.Cleanup(func() { tensor.ConvColumnLimit = old })
}

// convWithGrads runs Conv and backward from a fixed seed gradient and
// returns the output and the gradients of x, w and b.
func convWithGrads(c convCase, seed uint64) []*tensor.Tensor {
	x, w, b := c.inputs(seed)
	x.SetRequiresGrad(true)
	w.SetRequiresGrad(true)
	if b != nil {
		b.SetRequiresGrad(true)
	}
	y := tensor.Conv(x, w, b, c.opts())
	rng := rand.New(rand.NewPCG(seed, 11))
	y.BackwardWith(tensortest.Rand(rng, y.Shape()...))
	res := []*tensor.Tensor{y.Detach(), x.Grad(), w.Grad()}
	if b != nil {
		res = append(res, b.Grad())
	}
	return res
}

// TestConvChunked checks that a column buffer limit small enough to split
// the output positions into many chunks (down to one position per chunk)
// gives the same output and gradients as one chunk.
func TestConvChunked(t *testing.T) {
	names := []string{"output", "dx", "dw", "db"}
	for i, c := range convGradCases {
		t.Run(c.name, func(t *testing.T) {
			want := convWithGrads(c, uint64(200+i))
			for _, limit := range []int{1, 100, 1000} {
				convSetColumnLimit(t, limit)
				got := convWithGrads(c, uint64(200+i))
				for j := range want {
					if err := tensortest.AllClose(got[j], want[j], 1e-5, 1e-5); err != nil {
						t.Errorf("limit %d: %s: %v", limit, names[j], err)
					}
				}
			}
		})
	}
}

// TestConvChunkedGrad runs the gradient check with one output position per
// chunk, so the chunk offsets of im2col/col2im are exercised end to end.
func TestConvChunkedGrad(t *testing.T) {
	convSetColumnLimit(t, 1)
	for _, name := range []string{"1d/stride-pad-dil", "2d/groups2", "3d/stride-pad-dil"} {
		for i, c := range convGradCases {
			if c.name != name {
				continue
			}
			t.Run(name, func(t *testing.T) {
				x, w, b := c.inputs(uint64(300 + i))
				f := func(in []*tensor.Tensor) *tensor.Tensor { return tensor.Conv(in[0], in[1], in[2], c.opts()) }
				tensortest.GradCheck(t, name, f, []*tensor.Tensor{x, w, b}, tensortest.GradCheckOpts{Tol: 5e-3, MaxPts: 30})
			})
		}
	}
}

// TestConvPartialGrad checks that gradients go only to the inputs that
// require them, and equal those computed when all do.
func TestConvPartialGrad(t *testing.T) {
	for _, name := range []string{"2d/groups2", "3d/depthwise-mult2", "3d/pointwise", "3d"} {
		var c convCase
		for _, cc := range convGradCases {
			if cc.name == name {
				c = cc
			}
		}
		want := convWithGrads(c, 5)
		for mask := 1; mask < 8; mask++ {
			x, w, b := c.inputs(5)
			x.SetRequiresGrad(mask&1 != 0)
			w.SetRequiresGrad(mask&2 != 0)
			b.SetRequiresGrad(mask&4 != 0)
			y := tensor.Conv(x, w, b, c.opts())
			rng := rand.New(rand.NewPCG(5, 11))
			y.BackwardWith(tensortest.Rand(rng, y.Shape()...))
			for j, in := range []*tensor.Tensor{x, w, b} {
				switch {
				case mask&(1<<j) == 0 && in.Grad() != nil:
					t.Errorf("%s mask %03b: input %d got a gradient it does not require", name, mask, j)
				case mask&(1<<j) != 0 && in.Grad() == nil:
					t.Errorf("%s mask %03b: input %d has no gradient", name, mask, j)
				case mask&(1<<j) != 0:
					if err := tensortest.AllClose(in.Grad(), want[j+1], 1e-5, 1e-5); err != nil {
						t.Errorf("%s mask %03b: input %d: %v", name, mask, j, err)
					}
				}
			}
		}
	}
}

// TestConvRandomConfigs compares Conv with the float64 reference over many
// random configurations of every kind.
func TestConvRandomConfigs(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 43))
	pick := func(lo, hi int) int { return lo + rng.IntN(hi-lo+1) }
	for it := 0; it < 300; it++ {
		nsp := pick(1, 3)
		groups := 1
		cin, cout := pick(1, 4), pick(1, 5)
		switch rng.IntN(4) {
		case 1: // grouped
			groups = pick(2, 3)
			cin, cout = groups*pick(1, 2), groups*pick(1, 3)
		case 2: // depthwise
			cin = pick(2, 4)
			groups, cout = cin, cin*pick(1, 3)
		}
		c := convCase{x: []int{pick(1, 2), cin}, w: []int{cout, cin / groups}, bias: rng.IntN(2) == 0, groups: groups}
		c.stride, c.pad, c.dil = make([]int, nsp), make([]int, nsp), make([]int, nsp)
		for i := range nsp {
			k := pick(1, 3)
			c.stride[i], c.pad[i], c.dil[i] = pick(1, 3), pick(0, 2), pick(1, 2)
			minIn := max(1, c.dil[i]*(k-1)+1-2*c.pad[i])
			c.x = append(c.x, pick(minIn, minIn+6))
			c.w = append(c.w, k)
		}
		if rng.IntN(4) == 0 {
			c.stride = []int{c.stride[0]} // broadcast form
		}
		c.name = fmt.Sprintf("x%v w%v s%v p%v d%v g%d", c.x, c.w, c.stride, c.pad, c.dil, groups)
		x, w, b := c.inputs(uint64(it))
		limit := tensor.ConvColumnLimit
		if it%3 == 0 {
			tensor.ConvColumnLimit = 4 * pick(1, 200)
		}
		got := tensor.Conv(x, w, b, c.opts())
		tensor.ConvColumnLimit = limit
		if err := tensortest.AllClose(got, c.ref(x, w, b), 1e-5, 1e-5); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// TestConvHandWorked checks a 1-D case worked by hand:
// x = [1 2 3 4], w = [1 0 -1], b = 0.5, padding 1:
// y[i] = x[i-1] - x[i+1] + 0.5 = [-2+.5, -2+.5, -2+.5, 3+.5].
func TestConvHandWorked(t *testing.T) {
	x := tensor.New([]float32{1, 2, 3, 4}, 1, 1, 4)
	w := tensor.New([]float32{1, 0, -1}, 1, 1, 3)
	b := tensor.New([]float32{0.5}, 1)
	y := tensor.Conv(x, w, b, tensor.ConvOpts{Padding: []int{1}})
	want := tensor.New([]float32{-1.5, -1.5, -1.5, 3.5}, 1, 1, 4)
	if err := tensortest.AllClose(y, want, 0, 0); err != nil {
		t.Fatal(err)
	}
	// Stride 2, dilation 2 on 2-D: x = 1..25 (5×5), w = ones(2×2) dilated
	// by 2 reads x[i,j]+x[i,j+2]+x[i+2,j]+x[i+2,j+2] at (i,j) ∈ {0,2}².
	xd := make([]float32, 25)
	for i := range xd {
		xd[i] = float32(i + 1)
	}
	y = tensor.Conv(tensor.New(xd, 1, 1, 5, 5), tensor.Ones(1, 1, 2, 2), nil, tensor.ConvOpts{Stride: []int{2}, Dilation: []int{2}})
	// (0,0): 1+3+11+13=28; (0,2): 3+5+13+15=36; (2,0): 11+13+21+23=68; (2,2): 13+15+23+25=76.
	want = tensor.New([]float32{28, 36, 68, 76}, 1, 1, 2, 2)
	if err := tensortest.AllClose(y, want, 0, 0); err != nil {
		t.Fatal(err)
	}
	// An empty batch gives an empty output of the right shape.
	y = tensor.Conv(tensor.Zeros(0, 2, 5), tensor.Ones(3, 2, 3), tensor.Ones(3), tensor.ConvOpts{})
	if !tensor.SameShape(y.Shape(), []int{0, 3, 3}) {
		t.Errorf("empty batch: shape %v, want [0 3 3]", y.Shape())
	}
}

func TestConvShapeErrors(t *testing.T) {
	cases := []struct {
		name string
		x, w []int
		b    []int
		o    tensor.ConvOpts
		want string
	}{
		{"channels", []int{1, 3, 8, 8, 8}, []int{16, 4, 3, 3, 3}, nil, tensor.ConvOpts{},
			"input [1 3 8 8 8] has 3 channels, weight [16 4 3 3 3] with groups 1 expects 4"},
		{"channels-grouped", []int{1, 6, 8, 8}, []int{4, 2, 3, 3}, nil, tensor.ConvOpts{Groups: 2},
			"input [1 6 8 8] has 6 channels, weight [4 2 3 3] with groups 2 expects 4"},
		{"groups-cin", []int{1, 4, 5}, []int{6, 1, 3}, nil, tensor.ConvOpts{Groups: 3},
			"groups 3 does not divide the 4 input channels of input [1 4 5]"},
		{"groups-cout", []int{1, 4, 5}, []int{3, 2, 3}, nil, tensor.ConvOpts{Groups: 2},
			"groups 2 does not divide the 3 output channels of weight [3 2 3]"},
		{"groups-negative", []int{1, 4, 5}, []int{4, 2, 3}, nil, tensor.ConvOpts{Groups: -2}, "groups -2 must be positive"},
		{"output-size", []int{1, 1, 2, 2}, []int{1, 1, 3, 3}, nil, tensor.ConvOpts{},
			"input [1 1 2 2] with weight [1 1 3 3], stride [1 1], padding [0 0], dilation [1 1]: output size 0 in spatial dim 0 is not positive"},
		{"output-size-dilated", []int{1, 1, 9, 2}, []int{1, 1, 3, 3}, nil, tensor.ConvOpts{Dilation: []int{1, 2}},
			"output size -2 in spatial dim 1 is not positive"},
		{"dims", []int{1, 2, 5, 5}, []int{3, 2, 3, 3, 3}, nil, tensor.ConvOpts{},
			"weight [3 2 3 3 3] has 5 dims, input [1 2 5 5] has 4"},
		{"input-2d", []int{3, 4}, []int{3, 4}, nil, tensor.ConvOpts{}, "input [3 4]: want N×C×spatial with 1 to 3 spatial dims"},
		{"input-6d", []int{1, 1, 2, 2, 2, 2}, []int{1, 1, 1, 1, 1, 1}, nil, tensor.ConvOpts{}, "input [1 1 2 2 2 2]: want N×C×spatial"},
		{"weight-zero", []int{1, 1, 4}, []int{0, 1, 3}, nil, tensor.ConvOpts{}, "weight [0 1 3] has non-positive size in dim 0"},
		{"bias", []int{1, 2, 5}, []int{3, 2, 3}, []int{2}, tensor.ConvOpts{}, "bias [2] for weight [3 2 3]; want [3]"},
		{"stride-len", []int{1, 2, 5, 5, 5}, []int{3, 2, 3, 3, 3}, nil, tensor.ConvOpts{Stride: []int{1, 2}},
			"stride [1 2] has 2 entries for the 3 spatial dims of input [1 2 5 5 5]; want 1 or 3"},
		{"stride-zero", []int{1, 2, 5}, []int{3, 2, 3}, nil, tensor.ConvOpts{Stride: []int{0}}, "stride [0] for input [1 2 5]: entries must be at least 1"},
		{"padding-negative", []int{1, 2, 5, 5}, []int{3, 2, 3, 3}, nil, tensor.ConvOpts{Padding: []int{1, -1}}, "padding [1 -1] for input [1 2 5 5]: entries must be at least 0"},
		{"dilation-zero", []int{1, 2, 5, 5}, []int{3, 2, 3, 3}, nil, tensor.ConvOpts{Dilation: []int{0}}, "dilation [0] for input [1 2 5 5]: entries must be at least 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b *tensor.Tensor
			if c.b != nil {
				b = tensor.Zeros(c.b...)
			}
			err := tensor.Catch(func() { tensor.Conv(tensor.Zeros(c.x...), tensor.Zeros(c.w...), b, c.o) })
			var se *tensor.ShapeError
			if !errors.As(err, &se) {
				t.Fatalf("got error %v, want a *tensor.ShapeError", err)
			}
			if se.Op != "Conv" || !strings.Contains(se.Msg, c.want) {
				t.Errorf("got %q (op %q), want op Conv and message containing %q", se.Msg, se.Op, c.want)
			}
		})
	}
}

// convMediumCases are large enough for the kernels to split their work across
// goroutines.
var convMediumCases = []convCase{
	{name: "3d/dense", x: []int{2, 8, 10, 12, 14}, w: []int{8, 8, 3, 3, 3}, bias: true, pad: []int{1}},
	{name: "3d/grouped-strided", x: []int{2, 6, 11, 12, 13}, w: []int{9, 2, 3, 3, 3}, bias: true, stride: []int{2}, pad: []int{1, 2, 0}, groups: 3},
	{name: "3d/depthwise", x: []int{2, 16, 10, 12, 14}, w: []int{32, 1, 3, 3, 3}, bias: true, pad: []int{1}, dil: []int{1, 2, 1}, groups: 16},
	{name: "3d/pointwise", x: []int{2, 16, 10, 12, 14}, w: []int{12, 8, 1, 1, 1}, bias: true, groups: 2},
	{name: "2d/dense", x: []int{2, 4, 64, 60}, w: []int{6, 4, 5, 5}, bias: true, stride: []int{1, 2}, pad: []int{2}},
}

func convDot(a, b *tensor.Tensor) float64 {
	s := 0.0
	for i, v := range a.Data() {
		s += float64(v) * float64(b.Data()[i])
	}
	return s
}

// TestConvAdjoint checks forward against the reference and the gradients
// through the adjoint identities of a bilinear map: for output gradient r
// and random directions u, v, c,
//
//	<dx, u> = <r, conv(u, w)>,  <dw, v> = <r, conv(x, v)>,  <db, c> = <r, c broadcast>
//
// with the right-hand sides computed by the float64 reference.
func TestConvAdjoint(t *testing.T) {
	for i, c := range convMediumCases {
		t.Run(c.name, func(t *testing.T) {
			x, w, b := c.inputs(uint64(400 + i))
			if err := tensortest.AllClose(tensor.Conv(x, w, b, c.opts()), c.ref(x, w, b), 1e-5, 1e-5); err != nil {
				t.Fatalf("forward: %v", err)
			}
			x.SetRequiresGrad(true)
			w.SetRequiresGrad(true)
			b.SetRequiresGrad(true)
			y := tensor.Conv(x, w, b, c.opts())
			rng := rand.New(rand.NewPCG(uint64(i), 3))
			r := tensortest.Rand(rng, y.Shape()...)
			y.BackwardWith(r)
			check := func(what string, got, want float64) {
				t.Helper()
				if d := got - want; d > 1e-4*(1+convAbs(want)) || -d > 1e-4*(1+convAbs(want)) {
					t.Errorf("%s: <grad, direction> = %.7g, reference %.7g", what, got, want)
				}
			}
			for probe := 0; probe < 2; probe++ {
				u := tensortest.Rand(rng, x.Shape()...)
				v := tensortest.Rand(rng, w.Shape()...)
				cb := tensortest.Rand(rng, b.Shape()...)
				check("dx", convDot(x.Grad(), u), convDot(r, c.ref(u, w.Detach(), nil)))
				check("dw", convDot(w.Grad(), v), convDot(r, c.ref(x.Detach(), v, nil)))
				zx := tensor.Zeros(x.Shape()...)
				check("db", convDot(b.Grad(), cb), convDot(r, c.ref(zx, w.Detach(), cb)))
			}
		})
	}
}

func convAbs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// TestCountMACs checks the multiply-accumulate counts of Conv, Linear and
// MatMul against the textbook formulas worked by hand.
func TestCountMACs(t *testing.T) {
	x := tensor.Zeros(2, 4, 6, 8, 8)
	w := tensor.Zeros(6, 2, 3, 3, 3) // groups 2
	// Output 2×6×3×4×4 (stride 2, padding 1): 2·6·48 positions × (4/2)·27.
	got := tensor.CountMACs(func() {
		tensor.Conv(x, w, nil, tensor.ConvOpts{Stride: []int{2}, Padding: []int{1}, Groups: 2})
	})
	if want := int64(2 * 6 * 3 * 4 * 4 * 2 * 27); got != want {
		t.Errorf("Conv MACs %d, want %d", got, want)
	}
	got = tensor.CountMACs(func() {
		tensor.Linear(tensor.Zeros(5, 7), tensor.Zeros(3, 7), nil)
		tensor.MatMul(tensor.Zeros(4, 2, 3), tensor.Zeros(4, 3, 5))
	})
	if want := int64(5*3*7 + 4*2*3*5); got != want {
		t.Errorf("Linear+MatMul MACs %d, want %d", got, want)
	}
	if n := tensor.CountMACs(func() {}); n != 0 {
		t.Errorf("empty: %d", n)
	}
}
