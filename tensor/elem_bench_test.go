package tensor_test

import (
	"testing"

	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// elemGBs reports the memory traffic rate for bytes moved per iteration.
func elemGBs(b *testing.B, bytes int) {
	b.ReportMetric(float64(bytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}

// A 2×32×16×32×32 activation volume (1 Mi elements).
var elemBenchShape = []int{2, 32, 16, 32, 32}

func BenchmarkAddSameShape(b *testing.B) {
	rng := elemRNG(1)
	x, y := tensortest.Rand(rng, elemBenchShape...), tensortest.Rand(rng, elemBenchShape...)
	for b.Loop() {
		tensor.Add(x, y)
	}
	elemGBs(b, 3*4*x.Len())
}

func BenchmarkAddChannelBias(b *testing.B) {
	rng := elemRNG(2)
	x, bias := tensortest.Rand(rng, elemBenchShape...), tensortest.Rand(rng, 32, 1, 1, 1)
	for b.Loop() {
		tensor.Add(x, bias)
	}
	elemGBs(b, 2*4*x.Len())
}

func BenchmarkAddChannelBiasBackward(b *testing.B) {
	rng := elemRNG(3)
	x, bias := tensortest.Rand(rng, elemBenchShape...), tensortest.Rand(rng, 32, 1, 1, 1)
	bias.SetRequiresGrad(true)
	seed := tensortest.Rand(rng, elemBenchShape...)
	for b.Loop() {
		tensor.Add(x, bias).BackwardWith(seed)
	}
	elemGBs(b, 3*4*x.Len())
}

func BenchmarkReLU(b *testing.B) {
	x := tensortest.Rand(elemRNG(4), elemBenchShape...)
	for b.Loop() {
		tensor.ReLU(x)
	}
	elemGBs(b, 2*4*x.Len())
}

func BenchmarkSumAll(b *testing.B) {
	x := tensortest.Rand(elemRNG(5), elemBenchShape...)
	for b.Loop() {
		tensor.SumAll(x)
	}
	elemGBs(b, 4*x.Len())
}

func BenchmarkSoftmaxChannels(b *testing.B) {
	x := tensortest.Rand(elemRNG(6), elemBenchShape...)
	for b.Loop() {
		tensor.Softmax(x, 1)
	}
	elemGBs(b, 2*4*x.Len())
}

func BenchmarkPermuteChannelsLast(b *testing.B) {
	x := tensortest.Rand(elemRNG(7), elemBenchShape...)
	for b.Loop() {
		tensor.Permute(x, 0, 2, 3, 4, 1)
	}
	elemGBs(b, 2*4*x.Len())
}
