package net3d

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// requireTorch returns /usr/bin/python3 when torch and torchvision import;
// it skips without them unless CTLENS_CI is set.
func requireTorch(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch, torchvision").Run(); err != nil {
		if os.Getenv("CTLENS_CI") != "" {
			t.Fatalf("CTLENS_CI is set but torch/torchvision are missing: %v", err)
		}
		t.Skip("torch/torchvision not available (set CTLENS_CI to require them)")
	}
	return py
}

// TestImportTorchvisionR3D18 exports a PyTorch r3d_18 state dict with the
// committed helper script, imports it as a 1-channel, 2-class model with the
// stem summed over RGB and a new classifier, and compares the layer4 feature
// map with PyTorch's on the input repeated over RGB.
func TestImportTorchvisionR3D18(t *testing.T) {
	py := requireTorch(t)
	dir := t.TempDir()
	for _, args := range [][]string{
		{"../testdata/pytorch/import_case.py", dir},
		{"../tools/export_safetensors.py", filepath.Join(dir, "r3d18.pth"), filepath.Join(dir, "r3d18.safetensors")},
	} {
		if out, err := exec.Command(py, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	state, _, err := nn.ReadTensors(filepath.Join(dir, "r3d18.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Arch: "r3d_18", InChannels: 1, Classes: 2}

	// Without the adaptations, shapes are errors naming the key.
	_, _, err = Import(state, spec, 1, ImportOpts{SumRGB: true})
	if err == nil || !strings.Contains(err.Error(), "fc.bias") || !strings.Contains(err.Error(), "[400]") {
		t.Fatalf("import without --new-classifier: %v", err)
	}
	_, _, err = Import(state, spec, 1, ImportOpts{NewClassifier: true})
	var se *nn.LoadShapeError
	if !errors.As(err, &se) || se.Key != "stem.0.weight" || !strings.Contains(err.Error(), "[64 1 3 7 7]") {
		t.Fatalf("import without --sum-rgb: %v", err)
	}
	c, rep, err := Import(state, spec, 1, ImportOpts{SumRGB: true, NewClassifier: true, Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.SummedRGB) != 1 || len(rep.Replaced) != 2 {
		t.Errorf("report %+v: want the stem summed and fc.weight, fc.bias replaced", rep)
	}
	exp, _, err := nn.ReadTensors(filepath.Join(dir, "expected.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*tensor.Tensor{}
	for _, e := range exp {
		byName[e.Name] = e.Tensor
	}
	nn.SetTraining(c, false)
	nn.SetRequiresGrad(c, false)
	var got *tensor.Tensor
	if err := tensor.Catch(func() { got = c.Features(byName["x"], nil) }); err != nil {
		t.Fatal(err)
	}
	want := byName["features"]
	maxAbs := 0.0
	for _, v := range want.Data() {
		maxAbs = max(maxAbs, float64(abs32(v)))
	}
	if err := tensortest.AllClose(got, want, 1e-4, 1e-4*maxAbs); err != nil {
		t.Errorf("features after import: %v", err)
	}

	// The checkpoint round trip keeps the spec and the weights.
	path := filepath.Join(dir, "model.safetensors")
	if err := SaveCheckpoint(path, c, map[string]string{MetaSource: "r3d18.pth"}); err != nil {
		t.Fatal(err)
	}
	c2, meta, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Spec().Arch != "r3d_18" || c2.Spec().InChannels != 1 || meta[MetaSource] != "r3d18.pth" {
		t.Errorf("reloaded spec %+v meta %v", c2.Spec(), meta)
	}

	// A missing key fails in strict mode and names it.
	_, _, err = Import(state[1:], spec, 1, ImportOpts{SumRGB: true, NewClassifier: true, Strict: true})
	if err == nil || !strings.Contains(err.Error(), state[0].Name) {
		t.Errorf("strict import without %s: %v", state[0].Name, err)
	}
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// TestLoadCheckpointRejectsForeignFile checks the error for a safetensors
// file without a ctlens spec.
func TestLoadCheckpointRejectsForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plain.safetensors")
	if err := nn.WriteTensors(path, []nn.Named{{Name: "w", Tensor: tensor.Zeros(2)}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadCheckpoint(path); err == nil || !strings.Contains(err.Error(), "ctlens import") {
		t.Errorf("got %v", err)
	}
}
