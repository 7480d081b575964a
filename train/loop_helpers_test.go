package train

import (
	"bytes"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// tinyArch is a test-only architecture small enough to train in
// milliseconds: conv(3³, stride 2)–BN–ReLU, conv(3³, stride 2)–BN–ReLU,
// global pooling, dropout 0.2 and a linear head.
const tinyArch = "train-test-tiny"

type tinyNet struct {
	nn.Base
	Conv1 *nn.Conv
	BN1   *nn.BatchNorm
	Conv2 *nn.Conv
	BN2   *nn.BatchNorm
	Drop  *nn.Dropout
	FC    *nn.Linear
	spec  net3d.Spec
}

func init() {
	net3d.Register(net3d.Entry{
		Name: tinyArch, Family: "train-test", Description: "test-only two-layer 3D CNN",
		DefaultSpec: net3d.Spec{Arch: tinyArch, InChannels: 1, Classes: 3},
		Build: func(s net3d.Spec, rng *rand.Rand) (net3d.Classifier, error) {
			m := &tinyNet{spec: s}
			conv := nn.ConvOpts{Stride: []int{2}, Padding: []int{1}, NoBias: true}
			m.Conv1 = nn.Child(m, "conv1", nn.NewConv(rng, s.InChannels, 4, []int{3, 3, 3}, conv))
			m.BN1 = nn.Child(m, "bn1", nn.NewBatchNorm(4, nn.BatchNormOpts{}))
			m.Conv2 = nn.Child(m, "conv2", nn.NewConv(rng, 4, 6, []int{3, 3, 3}, conv))
			m.BN2 = nn.Child(m, "bn2", nn.NewBatchNorm(6, nn.BatchNormOpts{}))
			m.Drop = nn.Child(m, "drop", nn.NewDropout(0.2, rand.New(rand.NewPCG(1, 2))))
			m.FC = nn.Child(m, "fc", nn.NewLinear(rng, 6, s.Classes, true))
			return m, nil
		},
	})
}

func (m *tinyNet) Features(x *tensor.Tensor, tap net3d.Tap) *tensor.Tensor {
	x = tensor.ReLU(m.BN1.Forward(m.Conv1.Forward(x)))
	if tap != nil {
		x = tap("layer1", x)
	}
	x = tensor.ReLU(m.BN2.Forward(m.Conv2.Forward(x)))
	if tap != nil {
		x = tap("layer2", x)
	}
	return x
}
func (m *tinyNet) Head(f *tensor.Tensor) *tensor.Tensor {
	return net3d.GlobalPoolLinear(f, m.Drop, m.FC)
}
func (m *tinyNet) Forward(x *tensor.Tensor) *tensor.Tensor { return m.Head(m.Features(x, nil)) }
func (m *tinyNet) Linear() *nn.Linear                      { return m.FC }
func (m *tinyNet) TapLayers() []string                     { return []string{"layer1", "layer2"} }
func (m *tinyNet) Spec() net3d.Spec                        { return m.spec }

// phantomRecipe is a small phantom run using every training feature:
// 12 phantoms of 32×32×8, input 8×16×16, AdamW with BN/bias exemption,
// warmup + cosine, label smoothing, balanced class weights, clipping, EMA,
// mixup and a 25 % validation split.
func phantomRecipe(t *testing.T) Recipe {
	t.Helper()
	r := DefaultRecipe()
	r.Model = net3d.Spec{Arch: tinyArch, InChannels: 1}
	r.Input = [3]int{8, 16, 16}
	r.Pipeline = volume.CovidNet3DPipeline(16, 8)
	r.Train = DataSource{Phantoms: 12, PhantomSeed: 5, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 8}
	r.ValFraction = 0.25
	r.Epochs = 3
	r.BatchSize = 3
	r.Optimizer = "adamw"
	r.LR = 0.01
	r.MinLR = 0
	r.WeightDecay = 0.05
	r.Schedule = "cosine"
	r.WarmupEpochs = 1
	r.LabelSmoothing = 0.1
	r.BalanceClasses = true
	r.ClipNorm = 1
	r.EMADecay = 0.9
	r.MixupAlpha = 0.4
	r.Seed = 7
	r.Workers = 2
	r.Out = filepath.Join(t.TempDir(), "run")
	return r
}

// readTensors reads a safetensors file as name → values.
func readTensors(t *testing.T, path string) (map[string][]float32, map[string]string) {
	t.Helper()
	ts, meta, err := nn.ReadTensors(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]float32{}
	for _, x := range ts {
		m[x.Name] = x.Tensor.Data()
	}
	return m, meta
}

// sameBits compares two tensor maps bit for bit and reports the first
// difference.
func sameBits(t *testing.T, what string, a, b map[string][]float32) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d tensors vs %d", what, len(a), len(b))
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok {
			t.Fatalf("%s: tensor %q missing from the second", what, k)
		}
		if len(va) != len(vb) {
			t.Fatalf("%s: %q has %d vs %d values", what, k, len(va), len(vb))
		}
		for i := range va {
			if va[i] != vb[i] {
				t.Fatalf("%s: %q[%d] = %v vs %v", what, k, i, va[i], vb[i])
			}
		}
	}
}

// jsonLines splits a JSONL file into lines.
func jsonLines(b []byte) [][]byte {
	var out [][]byte
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		out = append(out, l)
	}
	return out
}
