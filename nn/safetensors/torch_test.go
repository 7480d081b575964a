package safetensors

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// torchPython is Debian's interpreter, the one with PyTorch installed.
const torchPython = "/usr/bin/python3"

// needTorch skips the test when PyTorch is unavailable outside CI; under CI
// (CTLENS_CI set) a missing PyTorch is a failure.
func needTorch(t *testing.T) {
	t.Helper()
	err := exec.Command(torchPython, "-c", "import torch, numpy").Run()
	if err == nil {
		return
	}
	if os.Getenv("CTLENS_CI") == "" {
		t.Skipf("%s cannot import torch and numpy (%v); CTLENS_CI is unset", torchPython, err)
	}
	t.Fatalf("%s cannot import torch and numpy: %v", torchPython, err)
}

// TestTorchRoundTrip writes a file from Go, has PyTorch check it against a
// recipe known to both sides (testdata/pytorch/check_safetensors.py), and
// reads back the F32, F16, BF16, F64 and I64 tensors PyTorch writes.
func TestTorchRoundTrip(t *testing.T) {
	needTorch(t)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "go.safetensors"), filepath.Join(dir, "torch.safetensors")

	a := make([]float32, 24)
	for i := range a {
		a[i] = float32(i-7) * 0.375
	}
	b := make([]float32, 5)
	for i := range b {
		b[i] = 1 / float32(i+1)
	}
	f := &File{
		// Deliberately unsorted: Encode lays data out by sorted name.
		Tensors: []Tensor{
			{Name: "s", Shape: []int{}, Data: []float32{42}},
			{Name: "b", DType: "F16", Shape: []int{5}, Data: b},
			{Name: "a", Shape: []int{2, 3, 4}, Data: a},
		},
		Metadata: map[string]string{"producer": "ctlens-go", "recipe": "v1"},
	}
	if err := WriteFile(in, f); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join("..", "..", "testdata", "pytorch", "check_safetensors.py")
	if msg, err := exec.Command(torchPython, script, in, out).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, msg)
	}

	g, err := ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if g.Metadata["producer"] != "torch" || g.Metadata["torch"] == "" {
		t.Errorf("metadata %v", g.Metadata)
	}
	inf := math.Inf(1)
	want := []struct {
		name, dtype string
		shape       []int
		vals        []float64
	}{
		{"f32", "F32", []int{3, 4}, []float64{-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5}},
		{"f16", "F16", []int{13}, []float64{0, math.Copysign(0, -1), 1, -2, 0.5, 65504, 0x1p-24, 1023 * 0x1p-24, 0x1p-14,
			inf, -inf, math.NaN(), 0.333251953125}}, // 1/3 rounds to 0x3555 = 1365/4096
		{"bf16", "BF16", []int{2, 4}, []float64{1, -3, 0.15625, 0x1p-133, 3.3895313892515355e38, inf,
			0.333984375, math.Copysign(0, -1)}}, // 1/3 rounds to 0x3EAB
		{"f64", "F64", []int{3}, []float64{float64(float32(0.1)), -2.5, inf}},
		{"count", "I64", []int{}, []float64{7}},
	}
	if len(g.Tensors) != len(want) {
		t.Errorf("%d tensors, want %d", len(g.Tensors), len(want))
	}
	for _, w := range want {
		got, ok := g.Get(w.name)
		if !ok {
			t.Errorf("no tensor %q", w.name)
			continue
		}
		if got.DType != w.dtype || len(got.Shape) != len(w.shape) || len(got.Data) != len(w.vals) {
			t.Errorf("%s: %s %v with %d values, want %s %v", w.name, got.DType, got.Shape, len(got.Data), w.dtype, w.shape)
			continue
		}
		for i, s := range w.shape {
			if got.Shape[i] != s {
				t.Errorf("%s: shape %v, want %v", w.name, got.Shape, w.shape)
			}
		}
		for i, v := range w.vals {
			g := got.Data[i]
			if math.IsNaN(v) {
				if !math.IsNaN(float64(g)) {
					t.Errorf("%s[%d] = %v, want NaN", w.name, i, g)
				}
				continue
			}
			if math.Float32bits(g) != math.Float32bits(float32(v)) {
				t.Errorf("%s[%d] = %v, want %v", w.name, i, g, float32(v))
			}
		}
	}
}
