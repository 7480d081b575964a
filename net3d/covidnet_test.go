package net3d

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// covidGoldenFile is written by testdata/pytorch/golden_covidnet3d.py from
// a PyTorch rewrite of the reference Mobile3DNet; the tests only read it.
const covidGoldenFile = "testdata/golden_covidnet3d.safetensors"

// covidGolden is the golden file split into the reference state dict and
// the golden/ tensors.
type covidGolden struct {
	state   []nn.Named
	io      map[string]*tensor.Tensor
	spec    Spec
	choices []int
	meta    map[string]string
}

func covidReadGolden(t *testing.T) *covidGolden {
	t.Helper()
	all, meta, err := nn.ReadTensors(covidGoldenFile)
	if err != nil {
		t.Fatalf("%v (regenerate with /usr/bin/python3 testdata/pytorch/golden_covidnet3d.py)", err)
	}
	g := &covidGolden{io: map[string]*tensor.Tensor{}, meta: meta}
	for _, nt := range all {
		if rest, ok := strings.CutPrefix(nt.Name, "golden/"); ok {
			g.io[rest] = nt.Tensor
		} else {
			g.state = append(g.state, nt)
		}
	}
	if err := json.Unmarshal([]byte(meta["spec"]), &g.spec); err != nil {
		t.Fatalf("golden spec: %v", err)
	}
	if err := json.Unmarshal([]byte(meta["choices"]), &g.choices); err != nil {
		t.Fatalf("golden choices: %v", err)
	}
	return g
}

// covidClose compares within 1e-4 relative to the largest |want|.
func covidClose(t *testing.T, what string, got, want *tensor.Tensor) {
	t.Helper()
	if got == nil || want == nil {
		t.Fatalf("%s: got %v, want %v", what, got != nil, want != nil)
	}
	m := 0.0
	for _, v := range want.Data() {
		m = max(m, math.Abs(float64(v)))
	}
	if err := tensortest.AllClose(got, want, 1e-4, 1e-4*m); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// TestCovidNet3DGolden loads the reference state dict (every candidate
// allocated, one chosen per cell) into the single-path network by name and
// compares the logits and every tap with PyTorch's.
func TestCovidNet3DGolden(t *testing.T) {
	g := covidReadGolden(t)
	c, err := Build(g.spec, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := c.(*CovidNet3D)
	if !slices.Equal(m.Choices(), g.choices) {
		t.Fatalf("choices %v, golden %v", m.Choices(), g.choices)
	}
	rep, err := m.LoadReferenceState(g.state)
	if err != nil {
		t.Fatal(err)
	}
	// Every file key is either loaded or an unchosen candidate's.
	sd := nn.StateDict(m)
	if rep.Loaded != len(sd) || len(rep.Missing) != 0 || len(rep.Unexpected) != 0 {
		t.Errorf("report: loaded %d of %d, missing %v, unexpected %v", rep.Loaded, len(sd), rep.Missing, rep.Unexpected)
	}
	if rep.Loaded+len(rep.UnusedCandidates) != len(g.state) {
		t.Errorf("loaded %d + unused %d != %d keys in the file", rep.Loaded, len(rep.UnusedCandidates), len(g.state))
	}
	for _, k := range rep.UnusedCandidates {
		b, j, ok := candidateKey(k)
		if !ok || g.choices[(b-2)/2] == j {
			t.Errorf("unused candidate %s is the chosen op", k)
		}
	}
	nn.SetTraining(m, false)
	nn.SetRequiresGrad(m, false)
	var taps []string
	var f *tensor.Tensor
	err = tensor.Catch(func() {
		f = m.Features(g.io["input"], func(layer string, out *tensor.Tensor) *tensor.Tensor {
			taps = append(taps, layer)
			covidClose(t, "tap "+layer, out, g.io["tap/"+layer])
			return out
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"first_conv", "blocks.0", "blocks.6", "blocks.14", "blocks.18", "blocks.24", "feature_mix_layer"}
	if !slices.Equal(taps, want) || !slices.Equal(m.TapLayers(), want) {
		t.Errorf("taps %v, TapLayers %v, want %v", taps, m.TapLayers(), want)
	}
	covidClose(t, "feature_mix_layer", f, g.io["tap/feature_mix_layer"])
	covidClose(t, "logits", m.Head(f), g.io["logits"])
	if m.Linear().Weight.Size(0) != 3 || m.Linear().Weight.Size(1) != 32 {
		t.Errorf("Linear weight %v", m.Linear().Weight.Shape())
	}

	// The reference's flops_size_counter on a zero 1×1×16×32×32 input.
	mflops, size, err := m.ReferenceCost(16, 32, 32)
	if err != nil {
		t.Fatal(err)
	}
	wantF, _ := strconv.ParseFloat(g.meta["ref_mflops"], 64)
	wantS, _ := strconv.ParseFloat(g.meta["ref_size_mb"], 64)
	if math.Abs(mflops-wantF) > 1e-9 || math.Abs(size-wantS) > 1e-12 {
		t.Errorf("ReferenceCost = %v MFLOPS, %v MB; reference %v, %v", mflops, size, wantF, wantS)
	}
}

// TestCovidNet3DCompactRoundTrip saves the compact state dict and checks
// that it is the reference's restricted to the chosen ops, and that it
// reloads by name.
func TestCovidNet3DCompactRoundTrip(t *testing.T) {
	g := covidReadGolden(t)
	c, err := Build(g.spec, 2)
	if err != nil {
		t.Fatal(err)
	}
	m := c.(*CovidNet3D)
	ref := map[string][]int{}
	for _, s := range g.state {
		ref[s.Name] = s.Tensor.Shape()
	}
	for _, s := range nn.StateDict(m) {
		shape, ok := ref[s.Name]
		if !ok || !slices.Equal(shape, s.Tensor.Shape()) {
			t.Errorf("compact key %s %v: reference has %v (present %v)", s.Name, s.Tensor.Shape(), shape, ok)
		}
	}
	// Compact state dict of a loaded model into a fresh one: strict.
	if _, err := m.LoadReferenceState(g.state); err != nil {
		t.Fatal(err)
	}
	c2, _ := Build(g.spec, 3)
	m2 := c2.(*CovidNet3D)
	if _, err := nn.LoadState(nn.StateDict(m), m2, nn.LoadOpts{Strict: true}); err != nil {
		t.Fatal(err)
	}
	nn.SetTraining(m2, false)
	y, err := nn.Run(m2, g.io["input"])
	if err != nil {
		t.Fatal(err)
	}
	covidClose(t, "logits after compact round trip", y, g.io["logits"])
}

func TestCovidNet3DLoadReferenceErrors(t *testing.T) {
	g := covidReadGolden(t)
	build := func() *CovidNet3D {
		c, err := Build(g.spec, 4)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*CovidNet3D)
	}
	clone := func() []nn.Named {
		out := make([]nn.Named, len(g.state))
		copy(out, g.state)
		return out
	}

	// "module." prefix (DataParallel) is removed.
	st := clone()
	for i := range st {
		st[i].Name = "module." + st[i].Name
	}
	rep, err := build().LoadReferenceState(st)
	if err != nil || len(rep.Stripped) == 0 || rep.Stripped[0] != "module." || len(rep.UnusedCandidates) == 0 {
		t.Errorf("module. prefix: %v, report %+v", err, rep)
	}

	// A missing chosen-op key is an error and leaves the model unchanged.
	m := build()
	before := m.FirstConv.Conv.Weight.Clone()
	st = slices.DeleteFunc(clone(), func(n nn.Named) bool {
		return n.Name == "blocks.4.mobile_inverted_conv.choices.2.depth_conv.conv.weight"
	})
	_, err = m.LoadReferenceState(st)
	var ke *nn.LoadKeysError
	if !errors.As(err, &ke) || !slices.Contains(ke.Missing, "blocks.4.mobile_inverted_conv.choices.2.depth_conv.conv.weight") {
		t.Errorf("missing key: err %v", err)
	}
	if tensortest.AllClose(m.FirstConv.Conv.Weight, before, 0, 0) != nil {
		t.Error("failed load changed the model")
	}

	// A wrong shape names the key.
	st = clone()
	for i := range st {
		if st[i].Name == "first_conv.conv.weight" {
			st[i].Tensor = tensor.Zeros(16, 1, 3, 3, 1)
		}
	}
	_, err = build().LoadReferenceState(st)
	var se *nn.LoadShapeError
	if !errors.As(err, &se) || se.Key != "first_conv.conv.weight" {
		t.Errorf("shape mismatch: err %v", err)
	}

	// An unknown key outside the candidates is an error; an out-of-range
	// candidate index is unexpected, not an unused candidate.
	for _, extra := range []string{"foo.weight", "blocks.2.mobile_inverted_conv.choices.12.point_linear.bn.bias"} {
		st = append(clone(), nn.Named{Name: extra, Tensor: tensor.Zeros(3)})
		_, err = build().LoadReferenceState(st)
		if !errors.As(err, &ke) || !slices.Contains(ke.Unexpected, extra) {
			t.Errorf("extra key %s: err %v", extra, err)
		}
	}
}

// covidMBParams is §1.5.3's count for an MBConv in→out, kernel k,
// expansion e: [in·mid + 2·mid if e ≠ 1] + mid·k³ + 2·mid + mid·out + 2·out.
func covidMBParams(in, out, k, e int) int {
	mid := in * e
	n := mid*k*k*k + 2*mid + mid*out + 2*out
	if e != 1 {
		n += in*mid + 2*mid
	}
	return n
}

// covidCandKE lists (kernel, expansion) of candidates 0–6 as in §1.5.2's table.
var covidCandKE = [7][2]int{{3, 3}, {3, 4}, {3, 6}, {5, 3}, {5, 4}, {7, 3}, {7, 4}}

// covidExpectParams counts parameters from the layer sequence of §1.5.2
// with hand-resolved widths: the single-path network (ops per cell) or,
// with supernet, every candidate.
func covidExpectParams(inCh, classes, first, firstCell, mix int, widths, cells, strides, ops []int, supernet bool) int {
	n := inCh*first*27 + 2*first // first_conv
	n += covidMBParams(first, firstCell, 3, 1)
	in, ci := firstCell, 0
	for s, w := range widths {
		for range cells[s] {
			n += in*w + w // calibration conv with bias
			if supernet {
				for _, ke := range covidCandKE {
					n += covidMBParams(w, w, ke[0], ke[1])
				}
			} else if ops[ci] < 7 {
				n += covidMBParams(w, w, covidCandKE[ops[ci]][0], covidCandKE[ops[ci]][1])
			}
			in = w
			ci++
		}
	}
	n += in*mix + 2*mix        // feature_mix_layer
	n += mix*classes + classes // classifier
	return n
}

func TestCovidNet3DParamCounts(t *testing.T) {
	cases := []struct {
		name, arch, cfg        string
		inCh, classes          int
		first, firstCell, mix  int
		widths, cells, strides []int
		ops                    []int
		noSupernet             bool // the CT-sized supernet is large; its formula is checked on the small ones
	}{
		{
			name: "golden spec", arch: "covidnet3d", inCh: 1, classes: 3,
			cfg: `{"width_stages":[8,16,16,24],"n_cell_stages":[3,4,2,3],"stride_stages":[2,2,1,2],
				"ops":[["identity","mb3_e6","mb3_e4"],["zero",0,"zero","mb7_e3"],["mb7_e4","mb5_e4"],["mb5_e3",7,9]],
				"first_width":16,"first_cell_width":8,"feature_mix":32}`,
			first: 16, firstCell: 8, mix: 32, widths: []int{8, 16, 16, 24}, cells: []int{3, 4, 2, 3},
			ops: []int{7, 2, 1, 8, 0, 8, 5, 6, 4, 3, 7, 9},
		},
		{
			name: "small preset", arch: "covidnet3d-small", inCh: 3, classes: 2,
			first: 16, firstCell: 8, mix: 256, widths: []int{16, 24, 32, 48, 64, 96}, cells: []int{1, 2, 2, 2, 1, 1},
			ops: make([]int, 9),
		},
		{
			// width_mult 0.5: 16·0.5 = 8, 8·0.5 = 4 → 8 (at least 8); widths
			// 8, 12 → 16, 16, 24, 32, 48; feature mix unchanged for wm ≤ 1.
			name: "small width_mult 0.5", arch: "covidnet3d-small", inCh: 1, classes: 3,
			cfg:   `{"width_mult":0.5,"ops":[["mb7_e4"],["mb5_e3","zero2"],["zero","identity"],["mb3_e6","mb5_e4"],["mb3_e4"],["mb7_e3"]]}`,
			first: 8, firstCell: 8, mix: 256, widths: []int{8, 16, 16, 24, 32, 48}, cells: []int{1, 2, 2, 2, 1, 1},
			ops: []int{6, 3, 9, 8, 7, 2, 4, 1, 5},
		},
		{
			// width_mult 1.5: 16·1.5 = 24, 8·1.5 = 12 → 16; widths 24, 36 → 40,
			// 48, 72, 96, 144; feature mix 256·1.5 = 384.
			name: "small width_mult 1.5", arch: "covidnet3d-small", inCh: 1, classes: 2,
			cfg:   `{"width_mult":1.5}`,
			first: 24, firstCell: 16, mix: 384, widths: []int{24, 40, 48, 72, 96, 144}, cells: []int{1, 2, 2, 2, 1, 1},
			ops: make([]int, 9),
		},
		{
			name: "CT default with ops", arch: "covidnet3d", inCh: 1, classes: 3,
			cfg: `{"ops":[["mb3_e3","mb3_e4","mb3_e6","mb5_e3"],["mb5_e4","mb7_e3","mb7_e4","identity"],
				["zero","zero2","mb3_e3","mb3_e3"],["identity","mb5_e4","zero","mb7_e4"],["mb3_e6","zero","zero","zero"],["mb3_e3"]]}`,
			first: 32, firstCell: 16, mix: 1280, widths: []int{32, 64, 128, 256, 512, 1024}, cells: []int{4, 4, 4, 4, 4, 1},
			ops:        []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 7, 4, 8, 6, 2, 8, 8, 8, 0},
			noSupernet: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := Spec{Arch: tc.arch, InChannels: tc.inCh, Classes: tc.classes}
			if tc.cfg != "" {
				s.Config = json.RawMessage(tc.cfg)
			}
			c, err := Build(s, 7)
			if err != nil {
				t.Fatal(err)
			}
			m := c.(*CovidNet3D)
			if !slices.Equal(m.Choices(), tc.ops) {
				t.Fatalf("choices %v, want %v", m.Choices(), tc.ops)
			}
			want := covidExpectParams(tc.inCh, tc.classes, tc.first, tc.firstCell, tc.mix, tc.widths, tc.cells, nil, tc.ops, false)
			if got := nn.NumParams(m); got != want {
				t.Errorf("NumParams = %d, formula %d", got, want)
			}
			if tc.noSupernet {
				return
			}
			sn, err := NewSupernet(s, 7)
			if err != nil {
				t.Fatal(err)
			}
			want = covidExpectParams(tc.inCh, tc.classes, tc.first, tc.firstCell, tc.mix, tc.widths, tc.cells, nil, nil, true)
			if got := nn.NumParams(sn); got != want {
				t.Errorf("supernet NumParams = %d, formula %d", got, want)
			}
		})
	}
}

func TestCovidNet3DCells(t *testing.T) {
	// A stage whose first cell has stride 1 and the previous width gets a
	// shortcut and 10 candidates; other first cells 9.
	cfg := SmallCovidNet3DConfig()
	cfg.WidthStages = []int{8, 16, 16}
	cfg.NCellStages = []int{2, 1, 2}
	cfg.StrideStages = []int{1, 2, 1}
	l, err := cfg.layout()
	if err != nil {
		t.Fatal(err)
	}
	type cell struct {
		key             string
		block, in, w, s int
		short           bool
	}
	want := []cell{
		{"s0_c0", 2, 8, 8, 1, true}, // first_cell_width 8 == 8 at stride 1
		{"s0_c1", 4, 8, 8, 1, true},
		{"s1_c0", 6, 8, 16, 2, false},
		{"s2_c0", 8, 16, 16, 1, true},
		{"s2_c1", 10, 16, 16, 1, true},
	}
	if len(l.cells) != len(want) {
		t.Fatalf("%d cells, want %d", len(l.cells), len(want))
	}
	for i, w := range want {
		c := l.cells[i]
		got := cell{c.Key, c.Block, c.In, c.Width, c.Stride, c.Shortcut}
		if got != w {
			t.Errorf("cell %d = %+v, want %+v", i, got, w)
		}
		n := 9
		if w.short {
			n = 10
		}
		if len(c.Candidates) != n || c.Candidates[7] != "identity" || c.Candidates[8] != "zero" {
			t.Errorf("cell %s candidates %v", c.Key, c.Candidates)
		}
	}
}

func TestCovidNet3DConfigErrors(t *testing.T) {
	cases := []struct{ name, cfg, want string }{
		{"unknown field", `{"widths":[8]}`, "unknown field"},
		{"empty widths", `{"width_stages":[]}`, "width_stages is empty"},
		{"cells length", `{"n_cell_stages":[1,1]}`, "n_cell_stages has 2 entries, width_stages 6"},
		{"strides length", `{"stride_stages":[2]}`, "stride_stages has 1 entries"},
		{"zero width", `{"width_stages":[16,0,32,48,64,96]}`, "width_stages[1] = 0"},
		{"huge width", `{"width_stages":[16,24,32,48,64,100000]}`, "width_stages[5] = 100000"},
		{"zero cells", `{"n_cell_stages":[1,2,0,2,1,1]}`, "n_cell_stages[2] = 0"},
		{"stride 3", `{"stride_stages":[2,2,3,1,2,1]}`, "stride_stages[2] = 3: want 1 or 2"},
		{"first width", `{"first_width":0}`, "first_width 0"},
		{"first cell width", `{"first_cell_width":-8}`, "first_cell_width -8"},
		{"feature mix", `{"feature_mix":0}`, "feature_mix 0"},
		{"dropout", `{"dropout":1}`, "dropout 1"},
		{"width_mult", `{"width_mult":0}`, "width_mult 0"},
		{"bn_eps", `{"bn_eps":0}`, "bn_eps 0"},
		{"bn_momentum", `{"bn_momentum":1.5}`, "bn_momentum 1.5"},
		{"ops stages", `{"ops":[["zero"]]}`, "ops has 1 stages, width_stages 6"},
		{"ops cells", `{"ops":[[0],[0],[0,0],[0,0],[0],[0]]}`, "ops[1] has 1 cells, n_cell_stages[1] = 2"},
		{"unknown op", `{"ops":[["mb9_e9"],[0,0],[0,0],[0,0],[0],[0]]}`, `unknown op "mb9_e9"`},
		{"op index", `{"ops":[[10],[0,0],[0,0],[0,0],[0],[0]]}`, "op index 10 out of range"},
		{"fractional op", `{"ops":[[1.5],[0,0],[0,0],[0,0],[0],[0]]}`, "op index 1.5 out of range"},
		{"zero2 in first cell", `{"ops":[["zero2"],[0,0],[0,0],[0,0],[0],[0]]}`, "ops[0][0] = 9 (zero2): cell s0_c0 has 9 candidates (0–8)"},
		{"pool", `{"pool":"max"}`, `pool "max": want avg or lse`},
		{"pool_r without lse", `{"pool_r":3}`, "pool_r 3: want 0 < pool_r ≤ 100, with pool lse"},
		{"pool_r range", `{"pool":"lse","pool_r":-1}`, "pool_r -1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := Spec{Arch: "covidnet3d-small", InChannels: 1, Classes: 2, Config: json.RawMessage(tc.cfg)}
			_, err := NewCovidNet3D(s, SmallCovidNet3DConfig(), rand.New(rand.NewPCG(1, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
			if _, err := NewSupernet(s, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("supernet error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := NewCovidNet3D(Spec{Arch: "covidnet3d-small", InChannels: 0, Classes: 2}, SmallCovidNet3DConfig(), rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Error("in_channels 0 accepted")
	}
	if _, err := NewSupernet(Spec{Arch: "resnet3d-18", InChannels: 1, Classes: 2}, 1); err == nil || !strings.Contains(err.Error(), "not a covidnet3d architecture") {
		t.Errorf("supernet of another family: %v", err)
	}
}

func TestCovidNet3DConfigJSON(t *testing.T) {
	// Names, reference OPS keys and indices decode to the same choices, and
	// Spec().Config writes names that rebuild the same network.
	s := Spec{Arch: "covidnet3d-small", InChannels: 1, Classes: 2, Config: json.RawMessage(
		`{"ops":[["5x5_MBConv4"],[2,"identity"],["Zero","zero2"],["mb7_e4",3],["Identity"],[0]]}`)}
	c, err := Build(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := c.(*CovidNet3D)
	want := []int{4, 2, 7, 8, 9, 6, 3, 7, 0}
	if !slices.Equal(m.Choices(), want) {
		t.Fatalf("choices %v, want %v", m.Choices(), want)
	}
	spec := m.Spec()
	var raw map[string]any
	if err := json.Unmarshal(spec.Config, &raw); err != nil {
		t.Fatal(err)
	}
	ops, _ := json.Marshal(raw["ops"])
	if string(ops) != `[["mb5_e4"],["mb3_e6","identity"],["zero","zero2"],["mb7_e4","mb5_e3"],["identity"],["mb3_e3"]]` {
		t.Errorf("ops written as %s", ops)
	}
	for _, k := range []string{"width_stages", "n_cell_stages", "stride_stages", "first_width", "first_cell_width", "feature_mix", "dropout", "width_mult", "bn_eps", "bn_momentum"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("spec config lacks %s", k)
		}
	}
	c2, err := Build(spec, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c2.(*CovidNet3D).Choices(), want) || nn.NumParams(c2) != nn.NumParams(m) {
		t.Error("rebuilt spec differs")
	}
	// Same seed, same spec: same weights.
	if err := tensortest.AllClose(c2.(*CovidNet3D).FirstConv.Conv.Weight, m.FirstConv.Conv.Weight, 0, 0); err != nil {
		t.Errorf("same seed differs: %v", err)
	}
	if m.Config().BNEps != 1e-3 || m.FirstConv.BN.Eps != 1e-3 || m.FirstConv.BN.Momentum != 0.1 {
		t.Errorf("bn eps/momentum: config %v, layer %v %v", m.Config().BNEps, m.FirstConv.BN.Eps, m.FirstConv.BN.Momentum)
	}
}

func TestCovidNet3DApplyNNIArch(t *testing.T) {
	cfg := SmallCovidNet3DConfig()
	hot := func(n, j int) string {
		v := make([]string, n)
		for i := range v {
			v[i] = "false"
		}
		v[j] = "true"
		return "[" + strings.Join(v, ",") + "]"
	}
	arch := `{"s0_c0":` + hot(9, 3) + `,"s1_c0":` + hot(9, 8) + `,"s1_c1":` + hot(10, 9) +
		`,"s2_c0":` + hot(9, 0) + `,"s2_c1":[0,0,0,0,0,0,0,1,0,0],"s3_c0":` + hot(9, 6) +
		`,"s3_c1":` + hot(10, 2) + `,"s4_c0":` + hot(9, 1) + `,"s5_c0":` + hot(9, 5) + `}`
	if err := cfg.ApplyNNIArch([]byte(arch)); err != nil {
		t.Fatal(err)
	}
	l, err := cfg.layout()
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{3, 8, 9, 0, 7, 6, 2, 1, 5}; !slices.Equal(l.ops, want) {
		t.Errorf("ops %v, want %v", l.ops, want)
	}
	for _, tc := range []struct{ name, arch, want string }{
		{"missing", `{"s0_c0":` + hot(9, 0) + `}`, "no entry for cell s1_c0"},
		{"two hot", strings.Replace(arch, `"s5_c0":`+hot(9, 5), `"s5_c0":[1,1,0,0,0,0,0,0,0]`, 1), "s5_c0 selects both 0 and 1"},
		{"none", strings.Replace(arch, `"s5_c0":`+hot(9, 5), `"s5_c0":[0,0,0,0,0,0,0,0,0]`, 1), "s5_c0 selects no candidate"},
		{"length", strings.Replace(arch, `"s5_c0":`+hot(9, 5), `"s5_c0":`+hot(10, 5), 1), "s5_c0 has 10 entries, cell has 9"},
		{"extra", strings.Replace(arch, `}`, `,"s9_c0":[]}`, 1), "keys s9_c0 match no cell"},
		{"value", strings.Replace(arch, `"s5_c0":`+hot(9, 5), `"s5_c0":[2,0,0,0,0,0,0,0,0]`, 1), "s5_c0[0] = 2"},
	} {
		c := SmallCovidNet3DConfig()
		if err := c.ApplyNNIArch([]byte(tc.arch)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestCovidNet3DRegistryAndForward(t *testing.T) {
	for _, name := range []string{"covidnet3d", "covidnet3d-small"} {
		e, ok := Lookup(name)
		if !ok || e.Family != "covidnet3d" || e.Description == "" {
			t.Fatalf("registry entry %s: %+v", name, e)
		}
	}
	e, _ := Lookup("covidnet3d-small")
	spec := e.DefaultSpec
	spec.Classes = 2
	c, err := Build(spec, 5)
	if err != nil {
		t.Fatal(err)
	}
	// Eval mode: at 16×32×32 the last stages are 1×1×1, where training-mode
	// BatchNorm needs a batch of at least 2.
	nn.SetTraining(c, false)
	x := tensortest.Rand(rand.New(rand.NewPCG(1, 2)), 1, 1, 16, 32, 32)
	var shapes [][]int
	var f *tensor.Tensor
	if err := tensor.Catch(func() {
		f = c.Features(x, func(_ string, out *tensor.Tensor) *tensor.Tensor {
			shapes = append(shapes, slices.Clone(out.Shape()))
			return out
		})
	}); err != nil {
		t.Fatal(err)
	}
	// Stem /2, strides 2 2 2 1 2 1: 16×32×32 → 8×16×16 → 4×8×8 → 2×4×4 →
	// 1×2×2 → 1×2×2 → 1×1×1 → 1×1×1.
	want := [][]int{{1, 16, 8, 16, 16}, {1, 8, 8, 16, 16}, {1, 16, 4, 8, 8}, {1, 24, 2, 4, 4}, {1, 32, 1, 2, 2},
		{1, 48, 1, 2, 2}, {1, 64, 1, 1, 1}, {1, 96, 1, 1, 1}, {1, 256, 1, 1, 1}}
	if len(shapes) != len(want) {
		t.Fatalf("tap shapes %v, want %v", shapes, want)
	}
	for i := range want {
		if !slices.Equal(shapes[i], want[i]) {
			t.Errorf("tap %s shape %v, want %v", c.TapLayers()[i], shapes[i], want[i])
		}
	}
	y := c.Head(f)
	if !slices.Equal(y.Shape(), []int{1, 2}) {
		t.Errorf("logits shape %v", y.Shape())
	}
	// Input errors are ShapeErrors that nn.Run returns.
	if _, err := nn.Run(c, tensor.Zeros(1, 3, 16, 32, 32)); err == nil || !strings.Contains(err.Error(), "want N×1×D×H×W") {
		t.Errorf("wrong channels: %v", err)
	}
	if _, err := nn.Run(c, tensor.Zeros(1, 16, 32, 32)); err == nil {
		t.Error("4-D input accepted")
	}
	// The reference cost of a too-small input is an error.
	if _, _, err := c.(*CovidNet3D).ReferenceCost(0, 32, 32); err == nil {
		t.Error("ReferenceCost accepted depth 0")
	}
}

// TestCovidNet3DDefaultBuild builds the full CT-sized default and checks its
// size against the formula and the reference-style cost helper.
func TestCovidNet3DDefaultBuild(t *testing.T) {
	c, err := Build(Spec{Arch: "covidnet3d", InChannels: 1, Classes: 3}, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := c.(*CovidNet3D)
	want := covidExpectParams(1, 3, 32, 16, 1280, []int{32, 64, 128, 256, 512, 1024}, []int{4, 4, 4, 4, 4, 1}, nil, make([]int, 21), false)
	if got := nn.NumParams(m); got != want {
		t.Errorf("NumParams = %d, formula %d", got, want)
	}
	_, size, err := m.ReferenceCost(32, 128, 128)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(size-float64(want)*4/(1<<20)) > 1e-9 {
		t.Errorf("size %v MB, want %v", size, float64(want)*4/(1<<20))
	}
	if m.Classifier.Dropout == nil || m.Classifier.Dropout.P != 0.5 {
		t.Error("default dropout 0.5 missing")
	}
}
