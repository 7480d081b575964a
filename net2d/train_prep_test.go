package net2d

import (
	"encoding/json"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

func TestSlicePrepValidateAndParse(t *testing.T) {
	good := SlicePrep{WindowCenter: -600, WindowWidth: 1500, Size: [2]int{32, 32}, Aggregation: "topk", TopK: 3}
	meta, err := good.Meta([]string{"A", "B"})
	if err != nil {
		t.Fatal(err)
	}
	if meta[net3d.MetaClassNames] != `["A","B"]` {
		t.Errorf("class names metadata %q", meta[net3d.MetaClassNames])
	}
	back, err := ParseSlicePrep(meta)
	if err != nil || back != good {
		t.Fatalf("round trip: %+v, %v (want %+v)", back, err, good)
	}
	cases := []struct {
		name string
		meta map[string]string
		want string
	}{
		{"missing", map[string]string{}, "no ctlens.slices metadata"},
		{"not JSON", map[string]string{MetaSlices: "{"}, "metadata ctlens.slices"},
		{"aggregation", map[string]string{MetaSlices: `{"window_width":100,"aggregation":"median"}`}, `unknown aggregation "median"`},
		{"top-k", map[string]string{MetaSlices: `{"window_width":100,"aggregation":"topk"}`}, "top_k 0"},
		{"size", map[string]string{MetaSlices: `{"window_width":100,"size":[8,0],"aggregation":"mean"}`}, "size [8 0]"},
		{"window", map[string]string{MetaSlices: `{"window_width":-5,"aggregation":"mean"}`}, "window width -5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSlicePrep(c.meta)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestSlicePrepPipeline checks that the volume pipeline SlicePrep reports
// (package volume's window and resize, an implementation apart from
// SliceInput's tensor interpolation) prepares the same slices.
func TestSlicePrepPipeline(t *testing.T) {
	p, err := volume.NewPhantom(volume.PhantomOptions{Class: volume.NCP, Seed: 5, Cols: 40, Rows: 36, Slices: 6})
	if err != nil {
		t.Fatal(err)
	}
	prep := SlicePrep{WindowCenter: -600, WindowWidth: 1500, Size: [2]int{24, 16}, Aggregation: "mean"}
	pl := prep.Pipeline()
	if err := pl.Validate(); err != nil {
		t.Fatal(err)
	}
	pre, _, err := pl.Apply(p.CT, nil)
	if err != nil {
		t.Fatal(err)
	}
	ks := []int{0, 3, 5}
	a, err := SliceInput(pre, ks, 1, SliceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := SliceInput(p.CT, ks, 1, prep.Config())
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(a.Shape(), []int{3, 1, 24, 16}) || !tensor.SameShape(b.Shape(), a.Shape()) {
		t.Fatalf("shapes %v and %v, want [3 1 24 16]", a.Shape(), b.Shape())
	}
	for i, x := range a.Data() {
		if math.Abs(float64(x-b.Data()[i])) > 1e-5 {
			t.Fatalf("value %d: pipeline %v, SliceInput %v", i, x, b.Data()[i])
		}
	}
	if got := (SlicePrep{Aggregation: "mean"}).Pipeline(); len(got) != 0 {
		t.Errorf("no window and no size: pipeline %v, want empty", got)
	}
}

// TestScoreScan scores a volume with the linear probe, whose slice logits
// are W·mean(window(slice)) + b, and checks the aggregated logits and the
// softmax against the formulas worked in float64.
func TestScoreScan(t *testing.T) {
	w := []float32{2, -1, -3, 0.5}
	p := newLinearProbe(w, 1, 4)
	copy(p.fc.Bias.Data(), []float32{0.1, 0, -0.2, 0.3})
	v := testVolume(6, 5, 7)
	for _, c := range []struct {
		agg string
		k   int
	}{{"mean", 0}, {"max", 0}, {"topk", 3}} {
		prep := SlicePrep{WindowCenter: -400, WindowWidth: 2000, Aggregation: c.agg, TopK: c.k}
		got, err := ScoreScan(p, v, prep)
		if err != nil {
			t.Fatal(err)
		}
		// Slice logits by hand.
		slices := make([][]float64, 7)
		for k := range slices {
			m := 0.0
			for j := 0; j < 5; j++ {
				for i := 0; i < 6; i++ {
					m += math.Max(0, math.Min(1, (float64(v.At(i, j, k))+1400)/2000))
				}
			}
			m /= 30
			for cl := 0; cl < 4; cl++ {
				slices[k] = append(slices[k], float64(w[cl])*m+float64(p.fc.Bias.Data()[cl]))
			}
		}
		want := make([]float64, 4)
		for cl := range want {
			col := make([]float64, 7)
			for k := range col {
				col[k] = slices[k][cl]
			}
			sort.Sort(sort.Reverse(sort.Float64Slice(col)))
			n := map[string]int{"mean": 7, "max": 1, "topk": 3}[c.agg]
			for _, x := range col[:n] {
				want[cl] += x / float64(n)
			}
		}
		s := 0.0
		for _, z := range want {
			s += math.Exp(z)
		}
		for cl := range want {
			if math.Abs(float64(got.Logits[cl])-want[cl]) > 1e-5 {
				t.Errorf("%s: logit %d = %v, want %v", c.agg, cl, got.Logits[cl], want[cl])
			}
			if pw := math.Exp(want[cl]) / s; math.Abs(got.Probs[cl]-pw) > 1e-6 {
				t.Errorf("%s: probability %d = %v, want %v", c.agg, cl, got.Probs[cl], pw)
			}
		}
		if got.Slices.Logits.Size(0) != 7 {
			t.Errorf("%s: %d slice rows, want 7", c.agg, got.Slices.Logits.Size(0))
		}
	}
	if _, err := ScoreScan(p, v, SlicePrep{Aggregation: "topk"}); err == nil || !strings.Contains(err.Error(), "top_k 0") {
		t.Errorf("bad prep: error %v", err)
	}
}

// TestResizeBatch checks a 2× reduction against the 2×2 block means it
// equals (bilinear, align_corners false, scale exactly 2).
func TestResizeBatch(t *testing.T) {
	x := tensor.Zeros(1, 2, 4, 4)
	for i := range x.Data() {
		x.Data()[i] = float32(i*i%17) - 3
	}
	y, err := ResizeBatch(x, 2)
	if err != nil {
		t.Fatal(err)
	}
	for c := 0; c < 2; c++ {
		for j := 0; j < 2; j++ {
			for i := 0; i < 2; i++ {
				m := (x.At(0, c, 2*j, 2*i) + x.At(0, c, 2*j, 2*i+1) + x.At(0, c, 2*j+1, 2*i) + x.At(0, c, 2*j+1, 2*i+1)) / 4
				if got := y.At(0, c, j, i); math.Abs(float64(got-m)) > 1e-6 {
					t.Errorf("[%d %d %d] = %v, want %v", c, j, i, got, m)
				}
			}
		}
	}
	if same, _ := ResizeBatch(x, 4); same != x {
		t.Error("resize to the same size copied the batch")
	}
	if _, err := ResizeBatch(tensor.Zeros(2, 3), 2); err == nil || !strings.Contains(err.Error(), "[2 3]") {
		t.Errorf("rank-2 input: error %v", err)
	}
}

func TestSlicePrepJSONNames(t *testing.T) {
	b, err := json.Marshal(SlicePrep{WindowCenter: 1, WindowWidth: 2, Size: [2]int{3, 4}, Aggregation: "topk", TopK: 5})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"window_center":1,"window_width":2,"size":[3,4],"aggregation":"topk","top_k":5}`
	if string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
}
