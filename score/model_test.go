package score

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/volume"
)

func TestLoadModel(t *testing.T) {
	dir := t.TempDir()
	path := writeCheckpoint(t, dir, "tiny-v1", plainNet(t, 7), nil)
	m, err := LoadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	h := sha256.Sum256(b)
	wantVersion := fmt.Sprintf("sha256:%x", h[:6])
	if m.Name != "tiny-v1" || m.Arch != "covidnet3d-small" || m.Version != wantVersion || m.Caveat != GenericCaveat ||
		m.Input != [3]int{8, 32, 32} || m.Channels != 1 || !reflect.DeepEqual(m.ClassNames, []string{"CP", "NCP", "Normal"}) ||
		!reflect.DeepEqual(m.Pipeline, tinyPipeline()) || m.Description == "" {
		t.Errorf("model %+v (want version %s)", m, wantVersion)
	}
	if m.Params != 207987 { // `ctlens models` lists covidnet3d-small with 207987 parameters
		t.Errorf("params %d, want 207987", m.Params)
	}
	for _, p := range nn.NamedParameters(m.Classifier) {
		if p.Tensor.RequiresGrad() {
			t.Fatalf("parameter %s requires grad: model not frozen", p.Name)
		}
	}
	for _, nm := range nn.NamedModules(m.Classifier) {
		if tr, ok := nm.Module.(interface{ Training() bool }); ok && tr.Training() {
			t.Fatalf("module %q in training mode", nm.Name)
		}
	}
	info := m.Info()
	if info.Name != "tiny-v1" || info.Version != wantVersion || len(info.Classes) != 3 {
		t.Errorf("info %+v", info)
	}

	// Metadata overrides.
	m2, err := LoadModel(writeCheckpoint(t, dir, "x", plainNet(t, 7), map[string]string{MetaName: "lung-v2", MetaVersion: "2.0", MetaCaveat: "demo only"}))
	if err != nil {
		t.Fatal(err)
	}
	if m2.Name != "lung-v2" || m2.Version != "2.0" || m2.Caveat != "demo only" {
		t.Errorf("overrides: %s %s %q", m2.Name, m2.Version, m2.Caveat)
	}
}

func TestLoadModelErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.safetensors")
	if err := os.WriteFile(junk, []byte("this is not a checkpoint"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, want string
	}{
		{"missing file", filepath.Join(dir, "nope.safetensors"), "nope.safetensors"},
		{"not safetensors", junk, "junk.safetensors"},
		{"no pipeline", writeCheckpoint(t, dir, "nopl", plainNet(t, 1), map[string]string{MetaPipeline: ""}), "ctlens.pipeline"},
		{"no input", writeCheckpoint(t, dir, "noin", plainNet(t, 1), map[string]string{MetaInput: ""}), "ctlens.input"},
		{"bad input", writeCheckpoint(t, dir, "badin", plainNet(t, 1), map[string]string{MetaInput: "[8,0,32]"}), "input[1] = 0"},
		{"class count", writeCheckpoint(t, dir, "cls", plainNet(t, 1), map[string]string{net3d.MetaClassNames: `["a","b"]`}), "2 class names for the spec's 3 classes"},
		{"duplicate class", writeCheckpoint(t, dir, "dup", plainNet(t, 1), map[string]string{net3d.MetaClassNames: `["a","b","a"]`}), "distinct"},
		{"bad pipeline", writeCheckpoint(t, dir, "badpl", plainNet(t, 1), map[string]string{MetaPipeline: `[{"op":"blur"}]`}), "unknown op"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadModel(c.path)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one mentioning %q", err, c.want)
			}
		})
	}
}

// TestSoftmaxOfKnownLogits zeroes every weight and sets the final bias to
// (0, ln 2, ln 5): the logits are then the bias whatever the scan, and the
// probabilities exp(b)/Σexp(b) = (1, 2, 5)/8.
func TestSoftmaxOfKnownLogits(t *testing.T) {
	c := plainNet(t, 3)
	for _, p := range nn.StateDict(c) {
		clear(p.Tensor.Data())
	}
	for _, p := range nn.StateDict(c) {
		if strings.HasSuffix(p.Name, "running_var") {
			for i := range p.Tensor.Data() {
				p.Tensor.Data()[i] = 1
			}
		}
	}
	copy(c.Linear().Bias.Data(), []float32{0, float32(math.Log(2)), float32(math.Log(5))})
	m, err := LoadModel(writeCheckpoint(t, t.TempDir(), "bias", c, nil))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ScoreVolume(context.Background(), phantom(t, volume.CP, 1, 0), Options{Model: m})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"CP": 1.0 / 8, "NCP": 2.0 / 8, "Normal": 5.0 / 8}
	for k, w := range want {
		if !near(r.Probabilities[k], w, 1e-6) {
			t.Errorf("p(%s) = %v, want %v", k, r.Probabilities[k], w)
		}
	}
	if r.Predicted != "Normal" || r.Heatmap != nil {
		t.Errorf("predicted %q, heatmap %v", r.Predicted, r.Heatmap)
	}
}

func TestSoftmax(t *testing.T) {
	// exp(1000-1000) = 1 and exp(999-1000) = e^-1: p = (1, e^-1)/(1 + e^-1).
	p, err := Softmax([]float32{1000, 999})
	if err != nil || !near(p[0], 1/(1+math.Exp(-1)), 1e-12) || !near(p[1], math.Exp(-1)/(1+math.Exp(-1)), 1e-12) {
		t.Fatalf("softmax = %v, %v", p, err)
	}
	if _, err := Softmax([]float32{0, float32(math.NaN())}); err == nil || !strings.Contains(err.Error(), "logit 1") {
		t.Fatalf("NaN logit: %v", err)
	}
}

func TestDefaultModel(t *testing.T) {
	m, err := DefaultModel()
	if err != nil {
		t.Fatal(err)
	}
	if m2, _ := DefaultModel(); m2 != m {
		t.Error("DefaultModel decoded twice")
	}
	if m.Name != DefaultName || m.Arch != "covidnet3d-small" || !reflect.DeepEqual(m.ClassNames, volume.PhantomClassNames) ||
		!strings.Contains(strings.ToLower(m.Caveat), "not for clinical use") || m.Channels != 1 {
		t.Fatalf("default model %+v", m)
	}
	if err := m.Pipeline.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := ScoreVolume(context.Background(), phantom(t, volume.NCP, 5, 48), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !near(sum(r.Probabilities), 1, 1e-9) || len(r.Probabilities) != 3 {
		t.Fatalf("probabilities %v", r.Probabilities)
	}
}
