package train

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/volume"
)

func TestPreprocessingFromMeta(t *testing.T) {
	r := validRecipe()
	r.Input = [3]int{4, 8, 8}
	pl := volume.Pipeline{{Op: "window", Preset: "lung"}, {Op: "sample_slices", N: 4, Mode: "random"}, {Op: "resize", Cols: 8, Rows: 8}}
	meta, err := modelMeta(r, pl, []string{"a", "b"}, 3, "raw")
	if err != nil {
		t.Fatal(err)
	}
	meta[net3d.MetaSpec] = `{"arch":"train-test-tiny","in_channels":3,"classes":2}`
	p, err := PreprocessingFromMeta(meta)
	if err != nil {
		t.Fatal(err)
	}
	if p.Channels != 3 || p.Input != r.Input || len(p.Pipeline) != 3 || p.Classes[1] != "b" {
		t.Fatalf("preprocessing %+v", p)
	}
	// The tensor is 1×C×D×H×W with the windowed volume in every channel;
	// a lung-windowed uniform −600 HU volume is 0.5 everywhere (by hand:
	// (−600 − (−600 − 750))/1500).
	v := volume.New(10, 10, 6)
	for i := range v.Voxels {
		v.Voxels[i] = -600
	}
	x, err := p.Tensor(v)
	if err != nil {
		t.Fatal(err)
	}
	if got := x.Shape(); len(got) != 5 || got[0] != 1 || got[1] != 3 || got[2] != 4 || got[3] != 8 || got[4] != 8 {
		t.Fatalf("shape %v, want [1 3 4 8 8]", got)
	}
	for i, val := range x.Data() {
		if val != 0.5 {
			t.Fatalf("value %d = %v, want 0.5", i, val)
		}
	}
	// A pipeline that does not produce the input size is an error naming both.
	p.Input = [3]int{4, 8, 9}
	if _, err := p.Tensor(v); err == nil || !strings.Contains(err.Error(), "8×8×4") || !strings.Contains(err.Error(), "9×8×4") {
		t.Fatalf("size mismatch: %v", err)
	}
	for _, key := range []string{MetaPipeline, MetaInput, net3d.MetaClassNames, net3d.MetaSpec} {
		m := map[string]string{}
		for k, v := range meta {
			if k != key {
				m[k] = v
			}
		}
		if _, err := PreprocessingFromMeta(m); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("without %s: %v", key, err)
		}
	}
	m := map[string]string{}
	for k, v := range meta {
		m[k] = v
	}
	m[net3d.MetaClassNames] = `["a"]`
	if _, err := PreprocessingFromMeta(m); err == nil || !strings.Contains(err.Error(), "1 class names for 2 classes") {
		t.Errorf("class count mismatch: %v", err)
	}
}

// The state file round-trips model, optimizer and EMA exactly, and a
// state from another architecture is refused with the key named.
func TestStateRoundTrip(t *testing.T) {
	spec := net3d.Spec{Arch: tinyArch, InChannels: 1, Classes: 3}
	build := func(seed uint64) (net3d.Classifier, nn.Optimizer, *nn.EMA) {
		m, err := net3d.Build(spec, seed)
		if err != nil {
			t.Fatal(err)
		}
		opt, err := nn.NewAdam(nn.NamedParameters(m), nn.AdamConfig{LR: 0.1})
		if err != nil {
			t.Fatal(err)
		}
		return m, opt, nn.NewEMA(m, 0.5, nn.EMAOpts{})
	}
	m, opt, ema := build(1)
	// One real step so the optimizer has state.
	for _, p := range nn.NamedParameters(m) {
		g := p.Tensor.Clone()
		p.Tensor.SetGrad(g)
	}
	opt.Step()
	ema.Update()
	path := filepath.Join(t.TempDir(), StateFile)
	st := trainState{Epoch: 2, Step: 7, BestEpoch: 1, BestAcc: 0.5, EMAUpdates: ema.Updates(), Classes: []string{"a", "b", "c"}}
	if err := saveState(path, st, m, opt, ema); err != nil {
		t.Fatal(err)
	}
	st2, ts, err := readStateMeta(path)
	if err != nil {
		t.Fatal(err)
	}
	if st2.Epoch != 2 || st2.Step != 7 || st2.BestAcc != 0.5 || st2.EMAUpdates != 1 {
		t.Fatalf("state %+v", st2)
	}
	m2, opt2, ema2 := build(2)
	if err := restoreState(path, st2, ts, m2, opt2, ema2); err != nil {
		t.Fatal(err)
	}
	path2 := filepath.Join(t.TempDir(), StateFile)
	if err := saveState(path2, st2, m2, opt2, ema2); err != nil {
		t.Fatal(err)
	}
	a, _ := readTensors(t, path)
	b, _ := readTensors(t, path2)
	sameBits(t, "state", a, b)

	other, err := net3d.Build(net3d.Spec{Arch: tinyArch, InChannels: 2, Classes: 3}, 1)
	if err != nil {
		t.Fatal(err)
	}
	oopt, _ := nn.NewAdam(nn.NamedParameters(other), nn.AdamConfig{LR: 0.1})
	if err := restoreState(path, st2, ts, other, oopt, nil); err == nil || !strings.Contains(err.Error(), "conv1.weight") {
		t.Fatalf("restore into another shape: %v", err)
	}
	// Not a training state.
	plain := filepath.Join(t.TempDir(), "model.safetensors")
	if err := net3d.SaveCheckpoint(plain, m, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readStateMeta(plain); err == nil || !strings.Contains(err.Error(), metaTrainState) {
		t.Fatalf("model checkpoint read as state: %v", err)
	}
}
