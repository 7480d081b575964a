package nn_test

import (
	"math/rand/v2"
	"testing"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// smallCNN is a two-stage 3D CNN with a global max-pool + linear head.
type smallCNN struct {
	nn.Base
	conv1, conv2 *nn.Conv
	bn1, bn2     *nn.BatchNorm
	fc           *nn.Linear
}

func newSmallCNN(rng *rand.Rand) *smallCNN {
	m := &smallCNN{}
	m.conv1 = nn.Child(m, "conv1", nn.NewConv(rng, 1, 8, []int{3, 3, 3}, nn.ConvOpts{Padding: []int{1}, NoBias: true}))
	m.bn1 = nn.Child(m, "bn1", nn.NewBatchNorm(8, nn.BatchNormOpts{}))
	m.conv2 = nn.Child(m, "conv2", nn.NewConv(rng, 8, 16, []int{3, 3, 3}, nn.ConvOpts{Padding: []int{1}, Stride: []int{2}, NoBias: true}))
	m.bn2 = nn.Child(m, "bn2", nn.NewBatchNorm(16, nn.BatchNormOpts{}))
	m.fc = nn.Child(m, "fc", nn.NewLinear(rng, 16, 2, true))
	return m
}

func (m *smallCNN) Forward(x *tensor.Tensor) *tensor.Tensor {
	x = tensor.ReLU(m.bn1.Forward(m.conv1.Forward(x)))
	x = tensor.MaxPool(x, tensor.PoolOpts{Kernel: []int{2}})
	x = tensor.ReLU(m.bn2.Forward(m.conv2.Forward(x)))
	x = tensor.Max(tensor.Flatten(x, 2), 2, false) // global max pooling
	return m.fc.Forward(x)
}

// blobBatch draws n volumes 1×8×16×16: a 3×4×4 blob brighter (class 0) or
// darker (class 1) than a background whose level varies per sample by more
// than the blob changes the global mean, plus noise.
func blobBatch(rng *rand.Rand, n int) (*tensor.Tensor, []int) {
	const d, h, w = 8, 16, 16
	x := tensor.Zeros(n, 1, d, h, w)
	y := make([]int, n)
	v := x.Data()
	for s := 0; s < n; s++ {
		y[s] = rng.IntN(2)
		sign := float32(1)
		if y[s] == 1 {
			sign = -1
		}
		base := float32(rng.Float64() - 0.5)
		z0, y0, x0 := rng.IntN(d-3), rng.IntN(h-4), rng.IntN(w-4)
		for k := 0; k < d; k++ {
			for j := 0; j < h; j++ {
				for i := 0; i < w; i++ {
					val := base + float32(rng.NormFloat64()*0.6)
					if k >= z0 && k < z0+3 && j >= y0 && j < y0+4 && i >= x0 && i < x0+4 {
						val += sign * 1.2
					}
					v[(((s*d)+k)*h+j)*w+i] = val
				}
			}
		}
	}
	return x, y
}

// TestSmallCNNLearnsSeparable3DTask trains a small CNN end to end (conv,
// batch norm, pooling, cross-entropy, Adam) and requires > 95% held-out
// accuracy on a task that a global intensity statistic cannot solve.
func TestSmallCNNLearnsSeparable3DTask(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := newSmallCNN(rng)
	opt, err := nn.NewAdam(nn.NamedParameters(m), nn.AdamConfig{LR: 3e-3})
	if err != nil {
		t.Fatal(err)
	}
	for step := 0; step < 300; step++ {
		x, y := blobBatch(rng, 16)
		loss := tensor.CrossEntropy(m.Forward(x), y, tensor.CEOpts{})
		opt.ZeroGrad()
		loss.Backward()
		opt.Step()
	}
	nn.SetTraining(m, false)
	nn.SetRequiresGrad(m, false)
	x, y := blobBatch(rand.New(rand.NewPCG(99, 7)), 400)
	pred := tensor.Argmax(m.Forward(x), 1)
	correct := 0
	for i := range y {
		if pred[i] == y[i] {
			correct++
		}
	}
	acc := float64(correct) / float64(len(y))
	t.Logf("held-out accuracy %.3f", acc)
	if acc <= 0.95 {
		t.Errorf("held-out accuracy %.3f, want > 0.95", acc)
	}
}
