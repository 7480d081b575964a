package cam

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// tinyNet is the test network of testdata/pytorch/golden_cam.py, in 1 to 3
// spatial dimensions (nd):
//
//	layer1 = Conv(in, 4, 3, padding 1), BatchNorm(4), ReLU
//	layer2 = Conv(4, 6, 3, stride 2, padding 1, no bias), BatchNorm(6), ReLU
//	layer3 = Conv(6, 8, 3, padding 1), ReLU
//	fc     = Linear(8, classes) after global average pooling
type tinyNet struct {
	nn.Base
	L1, L2, L3 *nn.Sequential
	FC         *nn.Linear
	spec       net3d.Spec
}

func newTinyNet(seed uint64, nd, in, classes int) *tinyNet {
	rng := rand.New(rand.NewPCG(seed, 7))
	k := make([]int, nd)
	for i := range k {
		k[i] = 3
	}
	n := &tinyNet{spec: net3d.Spec{Arch: "tiny", InChannels: in, Classes: classes}}
	n.L1 = nn.Child(n, "layer1", nn.NewSequential(
		nn.NewConv(rng, in, 4, k, nn.ConvOpts{Padding: []int{1}}),
		nn.NewBatchNorm(4, nn.BatchNormOpts{}),
		&nn.ReLU{}))
	n.L2 = nn.Child(n, "layer2", nn.NewSequential(
		nn.NewConv(rng, 4, 6, k, nn.ConvOpts{Stride: []int{2}, Padding: []int{1}, NoBias: true}),
		nn.NewBatchNorm(6, nn.BatchNormOpts{}),
		&nn.ReLU{}))
	n.L3 = nn.Child(n, "layer3", nn.NewSequential(
		nn.NewConv(rng, 6, 8, k, nn.ConvOpts{Padding: []int{1}}),
		&nn.ReLU{}))
	n.FC = nn.Child(n, "fc", nn.NewLinear(rng, 8, classes, true))
	return n
}

func (n *tinyNet) Features(x *tensor.Tensor, tap net3d.Tap) *tensor.Tensor {
	call := func(name string, t *tensor.Tensor) *tensor.Tensor {
		if tap == nil {
			return t
		}
		return tap(name, t)
	}
	x = call("layer1", n.L1.Forward(x))
	x = call("layer2", n.L2.Forward(x))
	return call("layer3", n.L3.Forward(x))
}

func (n *tinyNet) Head(f *tensor.Tensor) *tensor.Tensor {
	return net3d.GlobalPoolLinear(f, nil, n.FC)
}

func (n *tinyNet) Forward(x *tensor.Tensor) *tensor.Tensor { return n.Head(n.Features(x, nil)) }
func (n *tinyNet) Linear() *nn.Linear                      { return n.FC }
func (n *tinyNet) TapLayers() []string                     { return []string{"layer1", "layer2", "layer3"} }
func (n *tinyNet) Spec() net3d.Spec                        { return n.spec }

var _ net3d.Classifier = (*tinyNet)(nil)

// loadGolden reads the golden file: the tinyNet weights (prefix "w/") loaded
// strictly into a fresh network, and every other tensor by name.
func loadGolden(t *testing.T) (*tinyNet, map[string]*tensor.Tensor) {
	t.Helper()
	ts, _, err := nn.ReadTensors("testdata/golden_cam.safetensors")
	if err != nil {
		t.Fatalf("golden file missing (run /usr/bin/python3 testdata/pytorch/golden_cam.py): %v", err)
	}
	var w []nn.Named
	rest := map[string]*tensor.Tensor{}
	for _, x := range ts {
		if k, ok := strings.CutPrefix(x.Name, "w/"); ok {
			w = append(w, nn.Named{Name: k, Tensor: x.Tensor})
		} else {
			rest[x.Name] = x.Tensor
		}
	}
	net := newTinyNet(1, 3, 1, 3)
	if _, err := nn.LoadState(w, net, nn.LoadOpts{Strict: true}); err != nil {
		t.Fatalf("load golden weights: %v", err)
	}
	return net, rest
}
