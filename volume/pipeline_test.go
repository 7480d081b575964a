package volume

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func TestParsePipeline(t *testing.T) {
	const src = `[
		{"op":"lung_crop","margin":[4,4,2],"threshold":-400},
		{"op":"body_crop","margin":[2,2,0],"threshold":-450},
		{"op":"window","center":-600,"width":1500},
		{"op":"window","preset":"mediastinum"},
		{"op":"resample_spacing","spacing":[1.5,1.5,3],"interp":"nearest"},
		{"op":"resample_shape","dims":[64,64,32]},
		{"op":"sample_slices","n":32,"mode":"symmetric"},
		{"op":"resize","rows":128,"cols":128},
		{"op":"center_crop","rows":112,"cols":112,"pad":-1},
		{"op":"random_flip","axes":[0,2],"prob":0.5,"p":0.5},
		{"op":"random_affine","degrees":10,"scale_min":0.9,"scale_max":1.1},
		{"op":"random_intensity","scale":0.1,"shift":0.05},
		{"op":"random_noise","std":0.01},
		{"op":"normalize","method":"zscore"}
	]`
	p, err := ParsePipeline([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 14 || p[2].Center != -600 || p[2].Width != 1500 || p[6].N != 32 || *p[0].Threshold != -400 || *p[1].Threshold != -450 {
		t.Fatalf("parsed %+v", p)
	}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := ParsePipeline(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, p2) {
		t.Errorf("round trip changed the pipeline:\n%s", data)
	}
	if !strings.Contains(string(data), `{"op":"window","center":-600,"width":1500}`) {
		t.Errorf("serialised form %s", data)
	}
	for _, bad := range []string{
		`[{"op":"sharpen"}]`,
		`[{"op":"resize","rows":8,"cols":8,"colour":1}]`,
		`[{"op":"resize","rows":8,"cols":8,"n":3}]`,
		`[{"op":"window","center":40}]`,
		`[{"op":"window","preset":"lung","width":10}]`,
		`[{"op":"window","preset":"bone"}]`,
		`[{"op":"sample_slices","n":8,"mode":"stride"}]`,
		`[{"op":"sample_slices","n":0,"mode":"symmetric"}]`,
		`[{"op":"resample_spacing","spacing":[1,1]}]`,
		`[{"op":"resample_spacing","spacing":[1,-1,1]}]`,
		`[{"op":"resample_shape","dims":[4,4,0]}]`,
		`[{"op":"resize","rows":8,"cols":8,"interp":"cubic"}]`,
		`[{"op":"normalize","method":"l2"}]`,
		`[{"op":"random_flip","axes":[3]}]`,
		`[{"op":"random_affine","scale_min":1.2,"scale_max":1.1}]`,
		`[{"op":"random_intensity","scale":1.5}]`,
		`[{"op":"lung_crop","margin":[1,1]}]`,
		`[{"op":"body_crop","margin":[1,1,-1]}]`,
		`[{"op":"body_crop","threshold":-500,"n":2}]`,
		`[{"op":"resize","rows":8,"cols":8}] []`,
		`{"op":"resize"}`,
	} {
		if _, err := ParsePipeline([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestPipelineApply(t *testing.T) {
	m := smallChest()
	v := m.build()
	orig := v.Clone()
	train := Pipeline{
		{Op: "lung_crop", Margin: []int{3, 3, 2}},
		{Op: "window", Preset: "lung"},
		{Op: "sample_slices", N: 12, Mode: "random"},
		{Op: "resize", Cols: 40, Rows: 40},
		{Op: "center_crop", Cols: 32, Rows: 32},
		{Op: "random_flip", Axes: []int{0, 1, 2}, Prob: 0.5},
		{Op: "random_affine", Degrees: 10, ScaleMin: 0.9, ScaleMax: 1.1},
		{Op: "random_intensity", Scale: 0.1, Shift: 0.1},
		{Op: "random_noise", Std: 0.05},
		{Op: "normalize", Method: "zscore"},
	}
	run := func(seed uint64) (*Volume, Trace) {
		t.Helper()
		var rng *rand.Rand
		if seed != 0 {
			rng = rand.New(rand.NewPCG(seed, 1))
		}
		out, tr, err := train.Apply(v, rng)
		if err != nil {
			t.Fatal(err)
		}
		return out, tr
	}
	a, ta := run(11)
	b, tb := run(11)
	c, _ := run(12)
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(ta, tb) {
		t.Error("same seed, different result")
	}
	if reflect.DeepEqual(a.Voxels, c.Voxels) {
		t.Error("different seeds, same result")
	}
	if a.Dims != [3]int{32, 32, 12} {
		t.Errorf("dims %v", a.Dims)
	}
	// inference: random ops skipped, symmetric slices, deterministic
	i1, ti := run(0)
	i2, _ := run(0)
	if !reflect.DeepEqual(i1, i2) {
		t.Error("inference not deterministic")
	}
	det := Pipeline{train[0], train[1], {Op: "sample_slices", N: 12, Mode: "symmetric"}, train[3], train[4], train[9]}
	d, td, err := det.Apply(v, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d, i1) || !reflect.DeepEqual(td, ti) {
		t.Error("inference differs from the pipeline without random ops")
	}
	if names := stepNames(ti); names != "crop,sample_slices,resize,crop" {
		t.Errorf("inference trace %s", names)
	}
	// lung_crop: the box is the lungs' box grown by the margin
	wantBox := m.wantBox.Grow([3]int{3, 3, 2}, v.Dims)
	if ti.Steps[0].OutDims() != wantBox.Size() {
		t.Errorf("lung crop to %v, want %v", ti.Steps[0].OutDims(), wantBox.Size())
	}
	// z-score: mean 0, sd 1 (sample sd; 12288 voxels)
	var s, q float64
	for _, x := range i1.Voxels {
		s += float64(x)
		q += float64(x) * float64(x)
	}
	n := float64(len(i1.Voxels))
	if mean, sd := s/n, math.Sqrt((q-s*s/n)/(n-1)); math.Abs(mean) > 1e-4 || math.Abs(sd-1) > 1e-3 {
		t.Errorf("normalised mean %v sd %v", mean, sd)
	}
	if !reflect.DeepEqual(v, orig) {
		t.Error("Apply modified its input")
	}
	// a trace from Apply maps back onto the input grid
	back, err := ta.MapBack(a, v)
	if err != nil || back.Dims != v.Dims {
		t.Errorf("map back: %v", err)
	}
	// errors name the failing step
	_, _, err = Pipeline{{Op: "window", Preset: "lung"}, {Op: "lung_crop"}}.Apply(v, nil)
	if err == nil || !strings.Contains(err.Error(), "step 1 (lung_crop)") {
		t.Errorf("lung crop after windowing: %v", err)
	}
	if _, _, err := (Pipeline{{Op: "sharpen"}}).Apply(v, nil); err == nil {
		t.Error("invalid pipeline applied")
	}
}

func stepNames(t Trace) string {
	var n []string
	for _, s := range t.Steps {
		n = append(n, s.Name())
	}
	return strings.Join(n, ",")
}

func TestCovidNet3DPipeline(t *testing.T) {
	p := CovidNet3DPipeline(32, 8)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p[2].Cols != 40 || p[3].Cols != 32 { // floor(1.25·32) = 40
		t.Errorf("resize %d, crop %d", p[2].Cols, p[3].Cols)
	}
	v := smallChest().build()
	out, tr, err := p.Apply(v, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Dims != [3]int{32, 32, 8} || stepNames(tr) != "sample_slices,resize,crop" {
		t.Errorf("dims %v trace %s", out.Dims, stepNames(tr))
	}
}

// TestLungMaskTiny checks degenerate sizes terminate without panicking.
func TestLungMaskTiny(t *testing.T) {
	for _, d := range [][3]int{{1, 1, 1}, {1, 5, 3}, {2, 2, 2}, {5, 1, 2}, {3, 3, 1}} {
		v := New(d[0], d[1], d[2])
		for p := range v.Voxels {
			v.Voxels[p] = -1000
		}
		m, err := LungMask(v, DefaultLungMaskOptions)
		if err != nil {
			t.Fatalf("dims %v: %v", d, err)
		}
		if m.Count() != 0 {
			t.Errorf("dims %v: %v voxels (air touching the border must go)", d, m.Count())
		}
	}
}
