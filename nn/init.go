package nn

import (
	"math"
	"math/rand/v2"

	"github.com/ctlens/ctlens/tensor"
)

// Initialisers fill a tensor in place, as torch.nn.init. Random ones draw
// from the explicitly passed generator, so a seed reproduces a model.

// FanMode selects which fan Kaiming initialisation preserves.
type FanMode int

const (
	// FanIn preserves the variance of activations in the forward pass.
	FanIn FanMode = iota
	// FanOut preserves the variance of gradients in the backward pass.
	FanOut
)

// Gains for Kaiming and Xavier initialisation (torch.nn.init.calculate_gain).
const (
	GainLinear  = 1.0        // linear, conv, sigmoid
	GainReLU    = math.Sqrt2 // relu
	GainTanh    = 5.0 / 3    // tanh
	GainSELU    = 3.0 / 4    // selu
	GainSigmoid = GainLinear // sigmoid
)

// LeakyReLUGain returns √(2 / (1 + a²)), the gain for leaky_relu with
// negative slope a. PyTorch's default Conv/Linear weight initialisation is
// Kaiming uniform with a = √5, i.e. gain √(1/3).
func LeakyReLUGain(a float64) float64 { return math.Sqrt(2 / (1 + a*a)) }

// Fans returns the fan-in and fan-out of a weight of the given shape, as
// torch.nn.init._calculate_fan_in_and_fan_out: with receptive field
// r = prod(shape[2:]), fanIn = shape[1]·r and fanOut = shape[0]·r. It panics
// with a *tensor.ShapeError for fewer than 2 dimensions.
func Fans(shape []int) (fanIn, fanOut int) {
	if len(shape) < 2 {
		shapePanic("nn.Fans", "fan in and fan out need at least 2 dimensions, shape is %v", shape)
	}
	r := tensor.Numel(shape[2:])
	return shape[1] * r, shape[0] * r
}

func fan(shape []int, mode FanMode) int {
	in, out := Fans(shape)
	if mode == FanOut {
		return out
	}
	return in
}

// KaimingNormal fills t with samples of N(0, std²), std = gain / √fan, where
// fan is t's fan-in or fan-out (torch.nn.init.kaiming_normal_; use GainReLU
// for nonlinearity="relu").
func KaimingNormal(rng *rand.Rand, t *tensor.Tensor, mode FanMode, gain float64) {
	Normal(rng, t, 0, gain/math.Sqrt(float64(fan(t.Shape(), mode))))
}

// KaimingUniform fills t with samples of U(−bound, bound),
// bound = gain·√(3 / fan) (torch.nn.init.kaiming_uniform_).
func KaimingUniform(rng *rand.Rand, t *tensor.Tensor, mode FanMode, gain float64) {
	b := gain * math.Sqrt(3/float64(fan(t.Shape(), mode)))
	Uniform(rng, t, -b, b)
}

// XavierUniform fills t with samples of U(−a, a),
// a = gain·√(6 / (fanIn + fanOut)) (torch.nn.init.xavier_uniform_).
func XavierUniform(rng *rand.Rand, t *tensor.Tensor, gain float64) {
	in, out := Fans(t.Shape())
	a := gain * math.Sqrt(6/float64(in+out))
	Uniform(rng, t, -a, a)
}

// XavierNormal fills t with samples of N(0, std²),
// std = gain·√(2 / (fanIn + fanOut)) (torch.nn.init.xavier_normal_).
func XavierNormal(rng *rand.Rand, t *tensor.Tensor, gain float64) {
	in, out := Fans(t.Shape())
	Normal(rng, t, 0, gain*math.Sqrt(2/float64(in+out)))
}

// Uniform fills t with samples of U(lo, hi) (torch.nn.init.uniform_).
//
// All random initialisers leave t untouched when rng is nil: a model built
// with a nil rng has the right shapes but no drawn weights, which makes
// counting parameters and MACs of large architectures cheap.
func Uniform(rng *rand.Rand, t *tensor.Tensor, lo, hi float64) {
	if rng == nil {
		return
	}
	d := t.Data()
	for i := range d {
		d[i] = float32(lo + (hi-lo)*rng.Float64())
	}
}

// Normal fills t with samples of N(mean, std²) (torch.nn.init.normal_).
func Normal(rng *rand.Rand, t *tensor.Tensor, mean, std float64) {
	if rng == nil {
		return
	}
	d := t.Data()
	for i := range d {
		d[i] = float32(mean + std*rng.NormFloat64())
	}
}

// TruncNormal fills t with samples of N(mean, std²) conditioned on lying in
// [a, b] (absolute bounds, as torch.nn.init.trunc_normal_; timm's ViT uses
// std 0.02, a −2, b 2). Samples are drawn by inverting the normal CDF on
// U(Φ((a−mean)/std), Φ((b−mean)/std)).
func TruncNormal(rng *rand.Rand, t *tensor.Tensor, mean, std, a, b float64) {
	if !(std > 0) || !(a < b) {
		shapePanic("nn.TruncNormal", "need std > 0 and a < b, got std %g, [%g, %g]", std, a, b)
	}
	if rng == nil {
		return
	}
	cdf := func(x float64) float64 { return (1 + math.Erf(x/math.Sqrt2)) / 2 }
	l, u := cdf((a-mean)/std), cdf((b-mean)/std)
	d := t.Data()
	for i := range d {
		p := 2*(l+(u-l)*rng.Float64()) - 1
		v := mean + std*math.Sqrt2*math.Erfinv(p)
		d[i] = float32(min(max(v, a), b))
	}
}

// Constant fills t with v (torch.nn.init.constant_).
func Constant(t *tensor.Tensor, v float32) {
	d := t.Data()
	for i := range d {
		d[i] = v
	}
}

// Zeros fills t with 0 (torch.nn.init.zeros_).
func Zeros(t *tensor.Tensor) { Constant(t, 0) }

// Ones fills t with 1 (torch.nn.init.ones_).
func Ones(t *tensor.Tensor) { Constant(t, 1) }
