package nn

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/nn/safetensors"
	"github.com/ctlens/ctlens/tensor"
)

func stateValues(m Module) map[string][]float32 {
	out := map[string][]float32{}
	for _, s := range StateDict(m) {
		out[s.Name] = append([]float32(nil), s.Tensor.Data()...)
	}
	return out
}

func sameState(t *testing.T, got, want map[string][]float32) {
	t.Helper()
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			t.Errorf("%s differs", k)
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "net.safetensors")
	a := newTestNet(1)
	a.BN1.RunningMean.Data()[3] = 0.25
	a.BN1.NumBatchesTracked.Data()[0] = 17
	if err := Save(path, a, map[string]string{"epoch": "3"}); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var fileKeys []string
	for _, ft := range f.Tensors {
		fileKeys = append(fileKeys, ft.Name)
		if ft.DType != "F32" {
			t.Errorf("%s stored as %s, want F32", ft.Name, ft.DType)
		}
	}
	slices.Sort(fileKeys)
	wantKeys := slices.Sorted(slices.Values(testNetKeys))
	if !slices.Equal(fileKeys, wantKeys) {
		t.Errorf("file keys %q, want %q", fileKeys, wantKeys)
	}
	if f.Metadata["epoch"] != "3" || f.Metadata["format"] != "pt" {
		t.Errorf("metadata %v", f.Metadata)
	}

	b := newTestNet(2)
	before := b.Conv1.Weight
	rep, err := Load(path, b, LoadOpts{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Loaded != len(testNetKeys) || len(rep.Missing) != 0 || len(rep.Unexpected) != 0 || len(rep.Stripped) != 0 {
		t.Errorf("report %+v", rep)
	}
	sameState(t, stateValues(b), stateValues(a))
	if b.Conv1.Weight != before {
		t.Error("Load replaced a parameter tensor instead of filling it")
	}
	if b.BN1.NumBatchesTracked.Item() != 17 {
		t.Errorf("num_batches_tracked = %v", b.BN1.NumBatchesTracked.Item())
	}
}

// saveRenamed writes m's state dict with keys changed by rename (dropped
// when it returns "") plus extra tensors.
func saveRenamed(t *testing.T, m Module, rename func(string) string, extra ...Named) string {
	t.Helper()
	var ts []Named
	for _, s := range StateDict(m) {
		if n := rename(s.Name); n != "" {
			ts = append(ts, Named{n, s.Tensor})
		}
	}
	path := filepath.Join(t.TempDir(), "ckpt.safetensors")
	if err := WriteTensors(path, append(ts, extra...), nil); err != nil {
		t.Fatal(err)
	}
	return path
}

func same(s string) string { return s }

func TestLoadErrors(t *testing.T) {
	src := newTestNet(1)
	drop := func(k string) func(string) string {
		return func(s string) string {
			if s == k {
				return ""
			}
			return s
		}
	}
	cases := []struct {
		name       string
		path       string
		opts       LoadOpts
		wantErr    string // "" for success
		missing    []string
		unexpected []string
		stripped   []string
	}{
		{name: "missing strict", path: saveRenamed(t, src, drop("fc.bias")), opts: LoadOpts{Strict: true},
			wantErr: "nn: load: 1 missing key: fc.bias", missing: []string{"fc.bias"}},
		{name: "missing non-strict", path: saveRenamed(t, src, drop("bn1.num_batches_tracked")),
			missing: []string{"bn1.num_batches_tracked"}},
		{name: "unexpected strict", path: saveRenamed(t, src, same, Named{"fc2.weight", tensor.Zeros(2)}, Named{"aux.bias", tensor.Zeros(1)}),
			opts: LoadOpts{Strict: true}, wantErr: "nn: load: 2 unexpected keys: aux.bias, fc2.weight", unexpected: []string{"aux.bias", "fc2.weight"}},
		{name: "missing and unexpected strict", path: saveRenamed(t, src, func(s string) string {
			if s == "fc.weight" {
				return "head.weight"
			}
			return s
		}), opts: LoadOpts{Strict: true}, wantErr: "nn: load: 1 missing key: fc.weight; 1 unexpected key: head.weight",
			missing: []string{"fc.weight"}, unexpected: []string{"head.weight"}},
		{name: "unexpected non-strict", path: saveRenamed(t, src, same, Named{"fc2.weight", tensor.Zeros(2)}),
			unexpected: []string{"fc2.weight"}},
		{name: "mis-shaped", path: saveRenamed(t, src, drop("layer1.0.conv1.weight"), Named{"layer1.0.conv1.weight", tensor.Zeros(16, 8, 1, 3, 3)}),
			wantErr: "nn: load layer1.0.conv1.weight: shape [16 8 3 3 3], checkpoint has [16 8 1 3 3]"},
		{name: "module prefix", path: saveRenamed(t, src, func(s string) string { return "module." + s }), opts: LoadOpts{Strict: true},
			stripped: []string{"module."}},
		{name: "explicit prefix", path: saveRenamed(t, src, func(s string) string { return "backbone." + s }), opts: LoadOpts{Strict: true, StripPrefix: "backbone."},
			stripped: []string{"backbone."}},
		{name: "explicit then module prefix", path: saveRenamed(t, src, func(s string) string { return "model.module." + s }), opts: LoadOpts{Strict: true, StripPrefix: "model."},
			stripped: []string{"model.", "module."}},
		{name: "unstripped prefix", path: saveRenamed(t, src, func(s string) string { return "backbone." + s }), opts: LoadOpts{Strict: true},
			wantErr: "26 missing keys: bn1.bias, "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := newTestNet(2)
			before := stateValues(dst)
			rep, err := Load(c.path, dst, c.opts)
			if c.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("error %v, want %q", err, c.wantErr)
			}
			if err != nil {
				sameState(t, stateValues(dst), before) // unchanged on error
				if strings.Contains(c.name, "strict") {
					var ke *LoadKeysError
					if !errors.As(err, &ke) {
						t.Errorf("error %T is not a *LoadKeysError", err)
					}
				}
				if strings.Contains(c.name, "shape") {
					var se *LoadShapeError
					if !errors.As(err, &se) || se.Key != "layer1.0.conv1.weight" {
						t.Errorf("error %v is not a *LoadShapeError for the key", err)
					}
				}
			}
			if c.wantErr != "" && strings.Contains(c.wantErr, "missing keys") {
				return // only the message is checked
			}
			if !slices.Equal(rep.Missing, c.missing) || !slices.Equal(rep.Unexpected, c.unexpected) || !slices.Equal(rep.Stripped, c.stripped) {
				t.Errorf("report missing %q unexpected %q stripped %q; want %q %q %q", rep.Missing, rep.Unexpected, rep.Stripped, c.missing, c.unexpected, c.stripped)
			}
			if err == nil {
				// Everything present was loaded.
				want := stateValues(src)
				for _, k := range c.missing {
					want[k] = before[k]
				}
				sameState(t, stateValues(dst), want)
			}
		})
	}
}

func TestLoadSeveralShapeErrors(t *testing.T) {
	src := newTestNet(1)
	path := saveRenamed(t, src, func(s string) string {
		if strings.HasPrefix(s, "fc.") {
			return ""
		}
		return s
	}, Named{"fc.weight", tensor.Zeros(3, 16)}, Named{"fc.bias", tensor.Zeros(3)})
	_, err := Load(path, newTestNet(2), LoadOpts{Strict: true})
	for _, want := range []string{
		"nn: load fc.weight: shape [2 16], checkpoint has [3 16]",
		"nn: load fc.bias: shape [2], checkpoint has [3]",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want it to contain %q", err, want)
		}
	}
}

func TestLoadFileErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.safetensors"), newTestNet(1), LoadOpts{})
	if err == nil || !strings.Contains(err.Error(), "absent.safetensors") {
		t.Errorf("error %v, want it to name the file", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := os.WriteFile(bad, []byte("not a checkpoint"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad, newTestNet(1), LoadOpts{}); err == nil || !strings.Contains(err.Error(), "nn: load") {
		t.Errorf("error %v", err)
	}
}

// rawSafetensors builds a safetensors file by hand (independently of
// package safetensors' encoder) from tensors given as dtype, shape and raw
// little-endian bytes.
func rawSafetensors(t *testing.T, entries map[string]rawEntry) []byte {
	t.Helper()
	hdr := map[string]any{}
	var data []byte
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		e := entries[name]
		hdr[name] = map[string]any{"dtype": e.dtype, "shape": e.shape, "data_offsets": []int{len(data), len(data) + len(e.bytes)}}
		data = append(data, e.bytes...)
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	return append(append(out, h...), data...)
}

type rawEntry struct {
	dtype string
	shape []int
	bytes []byte
}

func f32Bytes(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// TestLoadPyTorchDTypes loads a file as PyTorch writes it: parameters F16,
// num_batches_tracked I64 of shape [], keys under "module.".
func TestLoadPyTorchDTypes(t *testing.T) {
	bn := NewBatchNorm(2, BatchNormOpts{})
	m := NewSequential(bn)
	f16 := func(v ...uint16) []byte {
		var b []byte
		for _, x := range v {
			b = binary.LittleEndian.AppendUint16(b, x)
		}
		return b
	}
	raw := rawSafetensors(t, map[string]rawEntry{
		// F16 0x3C00 = 1, 0xC000 = −2, 0x3800 = 0.5, 0x0000 = 0.
		"module.0.weight":              {"F16", []int{2}, f16(0x3C00, 0xC000)},
		"module.0.bias":                {"F16", []int{2}, f16(0x3800, 0x0000)},
		"module.0.running_mean":        {"F32", []int{2}, f32Bytes(0.125, -4)},
		"module.0.running_var":         {"F32", []int{2}, f32Bytes(2, 3)},
		"module.0.num_batches_tracked": {"I64", []int{}, binary.LittleEndian.AppendUint64(nil, 123456)},
	})
	f, err := safetensors.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := LoadFile(f, m, LoadOpts{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Stripped, []string{"module."}) || rep.Loaded != 5 {
		t.Errorf("report %+v", rep)
	}
	for _, c := range []struct {
		name string
		got  []float32
		want []float32
	}{
		{"weight", bn.Weight.Data(), []float32{1, -2}},
		{"bias", bn.Bias.Data(), []float32{0.5, 0}},
		{"running_mean", bn.RunningMean.Data(), []float32{0.125, -4}},
		{"running_var", bn.RunningVar.Data(), []float32{2, 3}},
		{"num_batches_tracked", bn.NumBatchesTracked.Data(), []float32{123456}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestSharedTensorLoad(t *testing.T) {
	l := NewLinear(randFor(1), 2, 2, true)
	m := NewSequential(l, &ReLU{}, l)
	// Only the first alias in the file: nothing is missing.
	path := filepath.Join(t.TempDir(), "shared.safetensors")
	if err := WriteTensors(path, []Named{{"0.weight", tensor.Ones(2, 2)}, {"0.bias", tensor.Ones(2)}}, nil); err != nil {
		t.Fatal(err)
	}
	rep, err := Load(path, m, LoadOpts{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Missing) != 0 || l.Weight.Data()[3] != 1 {
		t.Errorf("report %+v, weight %v", rep, l.Weight.Data())
	}
	// Save writes both aliases; they load back strictly.
	if err := Save(path, m, nil); err != nil {
		t.Fatal(err)
	}
	ts, _, err := ReadTensors(path)
	if err != nil || len(ts) != 4 {
		t.Fatalf("ReadTensors: %d tensors, %v", len(ts), err)
	}
	if _, err := Load(path, m, LoadOpts{Strict: true}); err != nil {
		t.Error(err)
	}
}

// TestOptimizerStateCheckpoint saves optimizer and EMA state with
// WriteTensors and restores them with ReadTensors.
func TestOptimizerStateCheckpoint(t *testing.T) {
	w, b, params := optParams()
	o := newRefOptimizer(t, "adamw", params)
	setQuadGrads(w, b)
	o.Step()
	path := filepath.Join(t.TempDir(), "optim.safetensors")
	if err := WriteTensors(path, o.State(), map[string]string{"step": "1"}); err != nil {
		t.Fatal(err)
	}
	st, meta, err := ReadTensors(path)
	if err != nil {
		t.Fatal(err)
	}
	if meta["step"] != "1" {
		t.Errorf("metadata %v", meta)
	}
	o2 := newRefOptimizer(t, "adamw", params)
	if err := o2.LoadState(st); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		setQuadGrads(w, b)
		o2.Step()
	}
	want := optimRef["adamw"][2]
	for i, v := range w.Data() {
		if !closeTo(float64(v), want.w[i], 2e-6) {
			t.Errorf("w[%d] = %.9g, want %.9g", i, v, want.w[i])
		}
	}
}
