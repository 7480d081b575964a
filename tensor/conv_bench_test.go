package tensor_test

import (
	"math/rand/v2"
	"testing"

	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// benchConv times Conv (and, with backward, the gradients of x and w) and
// reports the arithmetic rate: 2·N·Cout·(Cin/groups)·kernel·output-positions
// multiply-adds per pass, three passes with backward.
func benchConv(b *testing.B, xs, ws []int, o tensor.ConvOpts, backward bool) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := tensortest.Rand(rng, xs...)
	w := tensortest.Rand(rng, ws...)
	x.SetRequiresGrad(backward)
	w.SetRequiresGrad(backward)
	y := tensor.Conv(x, w, nil, o)
	seed := tensortest.Rand(rng, y.Shape()...)
	flops := 2 * float64(tensor.Numel(y.Shape())) * float64(tensor.Numel(ws[1:]))
	if backward {
		flops *= 3
	}
	b.ResetTimer()
	for b.Loop() {
		y := tensor.Conv(x, w, nil, o)
		if backward {
			x.ZeroGrad()
			w.ZeroGrad()
			y.BackwardWith(seed)
		}
	}
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkConv3D is a ResNet-style 3×3×3 layer: 1×64×16×56×56 → 64.
func BenchmarkConv3D(b *testing.B) {
	benchConv(b, []int{1, 64, 16, 56, 56}, []int{64, 64, 3, 3, 3}, tensor.ConvOpts{Padding: []int{1}}, false)
}

// BenchmarkConv3DBackward is BenchmarkConv3D's forward plus dX and dW.
func BenchmarkConv3DBackward(b *testing.B) {
	benchConv(b, []int{1, 64, 16, 56, 56}, []int{64, 64, 3, 3, 3}, tensor.ConvOpts{Padding: []int{1}}, true)
}

// BenchmarkConv3DStem is a single-channel CT stem: 1×1×64×128×128, 7×7×7
// stride 2 → 32.
func BenchmarkConv3DStem(b *testing.B) {
	benchConv(b, []int{1, 1, 64, 128, 128}, []int{32, 1, 7, 7, 7}, tensor.ConvOpts{Stride: []int{2}, Padding: []int{3}}, false)
}

// BenchmarkConv3DDepthwise is a 3×3×3 depthwise layer: 2×64×16×28×28.
func BenchmarkConv3DDepthwise(b *testing.B) {
	benchConv(b, []int{2, 64, 16, 28, 28}, []int{64, 1, 3, 3, 3}, tensor.ConvOpts{Padding: []int{1}, Groups: 64}, true)
}

// BenchmarkConv3DPointwise is a 1×1×1 layer: 2×128×8×28×28 → 256.
func BenchmarkConv3DPointwise(b *testing.B) {
	benchConv(b, []int{2, 128, 8, 28, 28}, []int{256, 128, 1, 1, 1}, tensor.ConvOpts{}, true)
}
