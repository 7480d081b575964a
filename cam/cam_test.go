package cam

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// checkProportional checks the theory for a global-average-pool + linear
// head: at the final feature map A (S positions), ∂y_c/∂A_k(s) = W[c,k]/S
// everywhere, so Grad-CAM's weights are W[c,k]/S and
// Grad-CAM = ReLU(CAM without bias)/S elementwise.
func checkProportional(t *testing.T, m Model, x *tensor.Tensor, classes int) {
	t.Helper()
	all := make([]int, classes)
	for c := range all {
		all[c] = c
	}
	cm, err := Compute(m, x, Options{Method: CAM, Classes: all})
	if err != nil {
		t.Fatal(err)
	}
	gc, err := Compute(m, x, Options{Method: GradCAM, Classes: all})
	if err != nil {
		t.Fatal(err)
	}
	pos, total := 0, 0
	for k := range all {
		c, g := cm.Maps[k].Raw, gc.Maps[k].Raw
		if !tensor.SameShape(c.Shape(), g.Shape()) {
			t.Fatalf("CAM shape %v, Grad-CAM shape %v", c.Shape(), g.Shape())
		}
		S := float64(c.Len() / c.Size(0))
		peak := 0.0
		for _, v := range c.Data() {
			peak = math.Max(peak, math.Abs(float64(v)))
		}
		for i, cv := range c.Data() {
			want := math.Max(float64(cv), 0) / S
			if cv > 0 {
				pos++
			}
			total++
			if d := math.Abs(float64(g.Data()[i]) - want); d > 1e-5*peak/S {
				t.Fatalf("class %d, position %d: Grad-CAM %v, CAM/S %v (CAM %v, S %v)", k, i, g.Data()[i], want, cv, S)
			}
		}
	}
	if pos == 0 || pos == total {
		t.Fatalf("CAM has %d of %d positive positions: the test needs both signs", pos, total)
	}
}

func TestCAMGradCAMProportional(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	t.Run("3d", func(t *testing.T) {
		checkProportional(t, newTinyNet(11, 3, 1, 3), tensortest.Rand(rng, 2, 1, 6, 8, 7), 3)
	})
	t.Run("2d", func(t *testing.T) {
		checkProportional(t, newTinyNet(12, 2, 2, 4), tensortest.Rand(rng, 3, 2, 9, 12), 4)
	})
}

// buildFamily builds a small network of a registered family and gives its
// BatchNorm layers non-trivial running statistics, so that evaluation mode
// matters.
func buildFamily(t *testing.T, arch string, config map[string]any) net3d.Classifier {
	t.Helper()
	cfg, _ := json.Marshal(config)
	m, err := net3d.Build(net3d.Spec{Arch: arch, InChannels: 1, Classes: 3, Config: cfg}, 5)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(8, 9))
	for _, b := range nn.NamedBuffers(m) {
		switch {
		case strings.HasSuffix(b.Name, "running_mean"):
			for i := range b.Tensor.Data() {
				b.Tensor.Data()[i] = float32(rng.Float64()*0.4 - 0.2)
			}
		case strings.HasSuffix(b.Name, "running_var"):
			for i := range b.Tensor.Data() {
				b.Tensor.Data()[i] = float32(0.5 + rng.Float64())
			}
		}
	}
	return m
}

// tinyDenseNet builds a small registered DenseNet3D (MONAI layout).
func tinyDenseNet(t *testing.T) net3d.Classifier {
	return buildFamily(t, "densenet3d-121", map[string]any{"growth_rate": 4, "bn_size": 2, "init_features": 8, "block_config": []int{2, 2}})
}

// TestRegisteredFamily runs the maps on registered families (DenseNet3D,
// ResNet3D): the CAM/Grad-CAM theory at the final feature map, and several
// classes in one call (the activation repeated along the batch) against
// one call per class, at an inner layer.
func TestRegisteredFamily(t *testing.T) {
	for _, fam := range []struct {
		name  string
		m     func(t *testing.T) net3d.Classifier
		shape []int
	}{
		{"densenet3d", tinyDenseNet, []int{2, 1, 16, 24, 24}},
		{"resnet3d", func(t *testing.T) net3d.Classifier {
			return buildFamily(t, "resnet3d-10", map[string]any{"widen_factor": 0.0625})
		}, []int{2, 1, 24, 56, 56}},
	} {
		t.Run(fam.name, func(t *testing.T) {
			m := fam.m(t)
			rng := rand.New(rand.NewPCG(1, 2))
			x := tensortest.Rand(rng, fam.shape...)
			checkProportional(t, m, x, 3)
			taps := m.TapLayers()
			inner := taps[len(taps)/2]
			for _, method := range []Method{GradCAM, GradCAMpp} {
				all, err := Compute(m, x, Options{Method: method, Layer: inner, Classes: []int{2, 0, 1}})
				if err != nil {
					t.Fatal(err)
				}
				for k, c := range []int{2, 0, 1} {
					one, err := Compute(m, x, Options{Method: method, Layer: inner, Classes: []int{c}})
					if err != nil {
						t.Fatal(err)
					}
					if err := tensortest.AllClose(all.Maps[k].Raw, one.Maps[0].Raw, 1e-5, 1e-7); err != nil {
						t.Errorf("%s at %s, class %d with others vs alone: %v", method, inner, c, err)
					}
				}
				nonzero := false
				for _, mp := range all.Maps {
					for _, v := range mp.Raw.Data() {
						nonzero = nonzero || v > 0
					}
				}
				if !nonzero {
					t.Errorf("%s at %s: every map is zero", method, inner)
				}
			}
		})
	}
}

// TestComputeRestoresModel checks that Compute runs in evaluation mode
// without touching parameter gradients, and restores training mode and
// requires-grad flags.
func TestComputeRestoresModel(t *testing.T) {
	m := tinyDenseNet(t)
	x := tensortest.Rand(rand.New(rand.NewPCG(5, 5)), 1, 1, 8, 12, 10)
	nn.SetTraining(m, true)
	// A mixed state: one frozen parameter.
	params := nn.NamedParameters(m)
	params[0].Tensor.SetRequiresGrad(false)
	res, err := Compute(m, x, Options{Method: GradCAM, Layer: m.TapLayers()[0]})
	if err != nil {
		t.Fatal(err)
	}
	nn.SetTraining(m, false)
	evalLogits, err := nn.Run(m, x)
	if err != nil {
		t.Fatal(err)
	}
	if err := tensortest.AllClose(res.Logits, evalLogits, 1e-6, 1e-6); err != nil {
		t.Errorf("logits differ from the evaluation-mode forward pass: %v", err)
	}
	nn.SetTraining(m, true)
	if _, err := Compute(m, x, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, nm := range nn.NamedModules(m) {
		if tr, ok := nm.Module.(interface{ Training() bool }); ok && !tr.Training() {
			t.Fatalf("module %q left in evaluation mode", nm.Name)
		}
	}
	for i, p := range params {
		if p.Tensor.RequiresGrad() != (i != 0) {
			t.Errorf("parameter %s requires grad %v after Compute", p.Name, p.Tensor.RequiresGrad())
		}
		if p.Tensor.Grad() != nil {
			t.Errorf("parameter %s got a gradient", p.Name)
		}
	}
}

func TestComputeErrors(t *testing.T) {
	m := newTinyNet(1, 3, 1, 3)
	x := tensor.Zeros(1, 1, 6, 6, 6)
	cases := []struct {
		name string
		x    *tensor.Tensor
		o    Options
		want string
	}{
		{"unknown layer", x, Options{Method: GradCAM, Layer: "layer9"}, `layer "layer9" is not one of`},
		{"cam inner", x, Options{Method: CAM, Layer: "layer1"}, "CAM needs the final feature map"},
		{"class range", x, Options{Method: GradCAM, Classes: []int{3}}, "class 3 out of range"},
		{"negative class", x, Options{Classes: []int{-1}}, "class -1 out of range"},
		{"method", x, Options{Method: Method(9)}, "unknown method"},
		{"input rank", tensor.Zeros(6, 6), Options{}, "input of shape [6 6]"},
		{"channels", tensor.Zeros(1, 2, 6, 6, 6), Options{Method: GradCAM}, "tensor: Conv"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compute(m, c.x, c.o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestParseNames(t *testing.T) {
	for s, want := range map[string]Method{"cam": CAM, "Grad-CAM": GradCAM, "gradcam++": GradCAMpp, "gradcampp": GradCAMpp} {
		got, err := ParseMethod(s)
		if err != nil || got != want {
			t.Errorf("ParseMethod(%q) = %v, %v", s, got, err)
		}
		if back, _ := ParseMethod(got.String()); back != got {
			t.Errorf("%v does not round-trip", got)
		}
	}
	if _, err := ParseMethod("scorecam"); err == nil {
		t.Error("ParseMethod(scorecam) accepted")
	}
	for _, n := range []Normalization{MinMax, MinMaxInverted, MaxDivide} {
		if back, err := ParseNormalization(n.String()); err != nil || back != n {
			t.Errorf("%v does not round-trip: %v %v", n, back, err)
		}
	}
}

// TestGradCAMppByHand evaluates MONAI's Grad-CAM++ on one channel of two
// positions, A = (a0, a1), g = (1, −1), worked by hand:
// Σ A·g³ = a0 − a1, D(0) = 2 + a0 − a1, α(0) = 1/(D(0) + 1e-7), the
// negative gradient contributes nothing, w = exp(y)·α(0), map = ReLU(w·A).
func TestGradCAMppByHand(t *testing.T) {
	cases := []struct {
		name    string
		a       []float32
		score   float64
		want    []float64
		dropped bool
	}{
		{"plain", []float32{1, 2}, 0, []float64{1 / (1 + 1e-7), 2 / (1 + 1e-7)}, false},
		{"score", []float32{1, 2}, 1.5, []float64{math.Exp(1.5) / (1 + 1e-7), 2 * math.Exp(1.5) / (1 + 1e-7)}, false},
		// D(0) = 2 + 0 − 2 = 0 is replaced by 1.
		{"zero denominator", []float32{0, 2}, 0, []float64{0, 2 / (1 + 1e-7)}, false},
		// D(0) = 2 + 3 − 1 = 4; a negative activation is cut by the ReLU.
		{"relu", []float32{3, 1}, 0, []float64{3 / (4 + 1e-7), 1 / (4 + 1e-7)}, false},
		// D(0) = 2 − 3 − 1 = −2: α(0) < 0 flips the weight's sign (MONAI's
		// formula does not guard against it), so the negative activation is
		// the one that survives the ReLU.
		{"negative denominator", []float32{-3, 1}, 0, []float64{-3 / (-2 + 1e-7), 0}, false},
		// exp(200) overflows float32: the factor is left out.
		{"overflow", []float32{1, 2}, 200, []float64{1 / (1 + 1e-7), 2 / (1 + 1e-7)}, true},
	}
	for _, c := range cases {
		dst := make([]float32, 2)
		dropped := gradCAMpp(c.a, []float32{1, -1}, 1, 2, c.score, dst)
		if dropped != c.dropped {
			t.Errorf("%s: dropped %v", c.name, dropped)
		}
		for i := range dst {
			if math.Abs(float64(dst[i])-c.want[i]) > 1e-6*math.Max(1, math.Abs(c.want[i])) {
				t.Errorf("%s: map %v, want %v", c.name, dst, c.want)
				break
			}
		}
	}
}

// TestCAMGradCAMProportionalLSE: with a log-sum-exp head the pooling
// weights still sum to 1, so Grad-CAM at the final feature map is still
// ReLU(CAM)/S.
func TestCAMGradCAMProportionalLSE(t *testing.T) {
	m := buildFamily(t, "covidnet3d-small", map[string]any{"width_stages": []int{8, 8}, "n_cell_stages": []int{1, 1},
		"stride_stages": []int{2, 1}, "feature_mix": 16, "pool": "lse", "pool_r": 5})
	// Classifier weights of both signs and of a size that makes r matter.
	copy(m.Linear().Weight.Data(), tensortest.Rand(rand.New(rand.NewPCG(7, 3)), 3, 16).Data())
	checkProportional(t, m, tensortest.Rand(rand.New(rand.NewPCG(6, 1)), 2, 1, 6, 12, 10), 3)
}
