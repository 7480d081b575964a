package nn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ctlens/ctlens/tensor"
)

func moments(d []float32) (mean, std, lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, v := range d {
		mean += float64(v)
		lo, hi = min(lo, float64(v)), max(hi, float64(v))
	}
	mean /= float64(len(d))
	for _, v := range d {
		std += (float64(v) - mean) * (float64(v) - mean)
	}
	return mean, math.Sqrt(std / float64(len(d))), lo, hi
}

func TestInitStatistics(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	shape := []int{256, 128, 3, 3} // fan_in 1152, fan_out 2304
	// Truncated N(0,1) on [−2, 2]: variance 1 − 2·2·φ(2)/(2Φ(2) − 1)
	// = 1 − 4·0.0539909665/0.9544997361 = 0.7737413.
	truncStd := math.Sqrt(1 - 4*0.05399096651318806/0.9544997361036416)
	cases := []struct {
		name           string
		init           func(*tensor.Tensor)
		mean, std, lim float64 // lim > 0: every |value − mean| ≤ lim
	}{
		{"kaiming normal fan_in relu", func(x *tensor.Tensor) { KaimingNormal(rng, x, FanIn, GainReLU) }, 0, math.Sqrt(2.0 / 1152), 0},
		{"kaiming normal fan_out relu", func(x *tensor.Tensor) { KaimingNormal(rng, x, FanOut, GainReLU) }, 0, math.Sqrt(2.0 / 2304), 0},
		// bound √2·√(3/1152) = 0.0721688, std bound/√3.
		{"kaiming uniform fan_in relu", func(x *tensor.Tensor) { KaimingUniform(rng, x, FanIn, GainReLU) }, 0, 0.07216878364870323 / math.Sqrt(3), 0.07216878364870323},
		// PyTorch's default: a = √5 gives bound 1/√fan_in = 1/√1152.
		{"kaiming uniform a=sqrt5", func(x *tensor.Tensor) { KaimingUniform(rng, x, FanIn, LeakyReLUGain(math.Sqrt(5))) }, 0, 1 / math.Sqrt(1152) / math.Sqrt(3), 1 / math.Sqrt(1152)},
		// a = √(6/(1152 + 2304)) = 0.0416667.
		{"xavier uniform", func(x *tensor.Tensor) { XavierUniform(rng, x, 1) }, 0, math.Sqrt(6.0/3456) / math.Sqrt(3), math.Sqrt(6.0 / 3456)},
		{"xavier normal gain 2", func(x *tensor.Tensor) { XavierNormal(rng, x, 2) }, 0, 2 * math.Sqrt(2.0/3456), 0},
		{"trunc normal standard", func(x *tensor.Tensor) { TruncNormal(rng, x, 0, 1, -2, 2) }, 0, truncStd, 2},
		{"trunc normal vit", func(x *tensor.Tensor) { TruncNormal(rng, x, 0.5, 0.02, -2, 2) }, 0.5, 0.02, 0},
		{"normal", func(x *tensor.Tensor) { Normal(rng, x, -3, 0.5) }, -3, 0.5, 0},
		{"uniform", func(x *tensor.Tensor) { Uniform(rng, x, 1, 3) }, 2, 2 / math.Sqrt(12), 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := tensor.Zeros(shape...)
			c.init(x)
			mean, std, lo, hi := moments(x.Data())
			n := float64(x.Len())
			if math.Abs(mean-c.mean) > 5*c.std/math.Sqrt(n) {
				t.Errorf("mean %.6g, want %.6g ± %.2g", mean, c.mean, 5*c.std/math.Sqrt(n))
			}
			if math.Abs(std/c.std-1) > 0.01 {
				t.Errorf("std %.6g, want %.6g (1%%)", std, c.std)
			}
			if c.lim > 0 && (lo < c.mean-c.lim || hi > c.mean+c.lim) {
				t.Errorf("range [%g, %g] exceeds %g ± %g", lo, hi, c.mean, c.lim)
			}
		})
	}
}

func TestTruncNormalOneSided(t *testing.T) {
	// N(0,1) truncated to [0, ∞) in effect ([0, 50]): the half-normal, mean
	// √(2/π) = 0.7978846, std √(1 − 2/π) = 0.6028103.
	rng := rand.New(rand.NewPCG(3, 4))
	x := tensor.Zeros(200000)
	TruncNormal(rng, x, 0, 1, 0, 50)
	mean, std, lo, _ := moments(x.Data())
	if lo < 0 || math.Abs(mean-0.7978845608) > 0.01 || math.Abs(std-0.6028102749) > 0.01 {
		t.Errorf("half-normal: mean %v std %v min %v", mean, std, lo)
	}
}

func TestDefaultLayerInit(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	c := NewConv(rng, 16, 64, []int{3, 3, 3}, ConvOpts{Groups: 2}) // fan_in 8·27 = 216
	bound := 1 / math.Sqrt(216)
	for name, p := range map[string]*tensor.Tensor{"weight": c.Weight, "bias": c.Bias} {
		mean, std, lo, hi := moments(p.Data())
		if lo < -bound || hi > bound {
			t.Errorf("conv %s range [%g, %g] exceeds ±%g", name, lo, hi, bound)
		}
		if name == "weight" && (math.Abs(std/(bound/math.Sqrt(3))-1) > 0.02 || math.Abs(mean) > 0.002) {
			t.Errorf("conv weight mean %g std %g, want 0 and %g", mean, std, bound/math.Sqrt(3))
		}
	}
	l := NewLinear(rng, 400, 300, true)
	bound = 1 / math.Sqrt(400)
	mean, std, lo, hi := moments(l.Weight.Data())
	if lo < -bound || hi > bound || math.Abs(std/(bound/math.Sqrt(3))-1) > 0.02 || math.Abs(mean) > 0.001 {
		t.Errorf("linear weight mean %g std %g range [%g, %g], want U(±%g)", mean, std, lo, hi, bound)
	}
	if _, _, lo, hi := moments(l.Bias.Data()); lo < -bound || hi > bound {
		t.Errorf("linear bias range [%g, %g]", lo, hi)
	}
	// The same seed reproduces the same weights.
	a := NewConv(rand.New(rand.NewPCG(9, 9)), 2, 3, []int{3}, ConvOpts{})
	b := NewConv(rand.New(rand.NewPCG(9, 9)), 2, 3, []int{3}, ConvOpts{})
	if !slices.Equal(a.Weight.Data(), b.Weight.Data()) || !slices.Equal(a.Bias.Data(), b.Bias.Data()) {
		t.Error("same seed gave different weights")
	}
}

func TestFansAndFill(t *testing.T) {
	in, out := Fans([]int{64, 32, 3, 5, 7})
	if in != 32*105 || out != 64*105 {
		t.Errorf("Fans = %d, %d; want 3360, 6720", in, out)
	}
	if in, out := Fans([]int{10, 20}); in != 20 || out != 10 {
		t.Errorf("Linear fans = %d, %d", in, out)
	}
	x := tensor.Zeros(3)
	Ones(x)
	if !slices.Equal(x.Data(), []float32{1, 1, 1}) {
		t.Error("Ones")
	}
	Constant(x, 2.5)
	if !slices.Equal(x.Data(), []float32{2.5, 2.5, 2.5}) {
		t.Error("Constant")
	}
	Zeros(x)
	if !slices.Equal(x.Data(), []float32{0, 0, 0}) {
		t.Error("Zeros")
	}
	if math.Abs(LeakyReLUGain(math.Sqrt(5))-math.Sqrt(1.0/3)) > 1e-15 || math.Abs(LeakyReLUGain(0)-math.Sqrt2) > 1e-15 {
		t.Error("LeakyReLUGain")
	}
}
