package nas

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/train"
)

// tinyConfig is a search small enough for a unit test: the tinySpec
// space on 4×16×16 inputs from 12 small phantoms, 8 epochs of 2 steps.
func tinyConfig(t *testing.T) Config {
	t.Helper()
	c := DefaultConfig()
	c.Supernet = tinySpec()
	c.Input = [3]int{4, 16, 16}
	c.Data = train.DataSource{Phantoms: 12, PhantomSeed: 5, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 12}
	c.Epochs = 8
	c.BatchSize = 3
	c.ArchLR = 0.01 // α moves ~lr per Adam step: well beyond its 1e-3 initial spread in 6 steps
	c.Out = t.TempDir()
	return c
}

func runSearch(t *testing.T, c Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestSearchSizePenalty runs the same seeded search without and with a
// size term: the penalised search must select a smaller architecture, a
// budget must hold, and a rerun must repeat the first search exactly.
func TestSearchSizePenalty(t *testing.T) {
	plain := runSearch(t, tinyConfig(t))

	pc := tinyConfig(t)
	pc.Resource = Resource{Metric: MetricSize, Weight: 1000}
	penalised := runSearch(t, pc)
	t.Logf("no penalty: %v, %d params; penalty: %v, %d params", plain.Ops, plain.Params, penalised.Ops, penalised.Params)
	if penalised.Params >= plain.Params {
		t.Errorf("penalised search chose %d params (%v), not fewer than the plain search's %d (%v)", penalised.Params, penalised.Ops, plain.Params, plain.Ops)
	}
	first, last := penalised.History[0], penalised.History[len(penalised.History)-1]
	if !(*last.ExpectedCost < *first.ExpectedCost) {
		t.Errorf("expected size went from %g to %g MB: did not fall", *first.ExpectedCost, *last.ExpectedCost)
	}

	// A budget halfway between the cheapest and the plain choice.
	bc := tinyConfig(t)
	lo := SizeMB(plain.Costs.BaseParams)
	bc.Resource = Resource{Metric: MetricSize, Weight: 1, Target: (lo + plain.SizeMB) / 2}
	budget := runSearch(t, bc)
	for _, r := range budget.History {
		if r.SizeMB > bc.Resource.Target {
			t.Errorf("epoch %d: derived %g MB over the budget %g", r.Epoch, r.SizeMB, bc.Resource.Target)
		}
	}

	again := runSearch(t, tinyConfig(t))
	if !slices.Equal(again.Choices, plain.Choices) || !slices.EqualFunc(again.Alpha, plain.Alpha, slices.Equal) {
		t.Errorf("rerun with the same seed: choices %v α %v; first run %v α %v", again.Choices, again.Alpha, plain.Choices, plain.Alpha)
	}
}

// TestSearchOutputs checks the files of a hard search: one α record per
// epoch plus the initial one, a spec per epoch that net3d.Build accepts
// and whose ops are the record's, and the final spec and NNI file.
func TestSearchOutputs(t *testing.T) {
	c := tinyConfig(t)
	c.Epochs = 2
	res := runSearch(t, c)
	f, err := os.Open(filepath.Join(c.Out, AlphaFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []EpochRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r EpochRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s line %d: %v", AlphaFile, len(recs)+1, err)
		}
		recs = append(recs, r)
	}
	if len(recs) != c.Epochs+1 {
		t.Fatalf("%s has %d records, want %d", AlphaFile, len(recs), c.Epochs+1)
	}
	if slices.Equal(recs[0].Cells[0].Alpha, recs[len(recs)-1].Cells[0].Alpha) {
		t.Error("hard search: α of cell 0 did not change")
	}
	for _, r := range recs {
		b, err := os.ReadFile(filepath.Join(c.Out, EpochFile(r.Epoch)))
		if err != nil {
			t.Fatal(err)
		}
		var spec net3d.Spec
		if err := json.Unmarshal(b, &spec); err != nil {
			t.Fatal(err)
		}
		m, err := net3d.Build(spec, 1)
		if err != nil {
			t.Fatalf("epoch %d spec: %v", r.Epoch, err)
		}
		got := m.(*net3d.CovidNet3D).Choices()
		if !slices.Equal(got, r.Choices) {
			t.Errorf("epoch %d: spec has ops %v, record %v", r.Epoch, got, r.Choices)
		}
		if len(r.Ops) != len(r.Choices) || r.Params <= 0 {
			t.Errorf("epoch %d: record ops %v, params %d", r.Epoch, r.Ops, r.Params)
		}
	}
	b, err := os.ReadFile(filepath.Join(c.Out, FinalNNIFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg := net3d.SmallCovidNet3DConfig()
	if err := json.Unmarshal(tinySpec().Config, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.ApplyNNIArch(b); err != nil {
		t.Fatal(err)
	}
	var fromNNI []int
	for _, s := range cfg.Ops {
		for _, o := range s {
			fromNNI = append(fromNNI, int(o))
		}
	}
	if !slices.Equal(fromNNI, res.Choices) {
		t.Errorf("%s gives %v, result %v", FinalNNIFile, fromNNI, res.Choices)
	}
	for _, name := range []string{FinalFile, CostsFile, SummaryFile} {
		if _, err := os.Stat(filepath.Join(c.Out, name)); err != nil {
			t.Error(err)
		}
	}
}

// TestSearchRandomMode checks the released code's effective search: α
// never changes, and the final architecture is the argmax of its random
// initialisation.
func TestSearchRandomMode(t *testing.T) {
	c := tinyConfig(t)
	c.Mode = ModeRandom
	c.Epochs = 2
	res := runSearch(t, c)
	init := res.History[0]
	for i, cell := range init.Cells {
		if !slices.Equal(cell.Alpha, res.Alpha[i]) {
			t.Errorf("cell %s: α changed from %v to %v", cell.Key, cell.Alpha, res.Alpha[i])
		}
		if want := argmax64(cell.Alpha); res.Choices[i] != want {
			t.Errorf("cell %s: chose %d, argmax of α is %d", cell.Key, res.Choices[i], want)
		}
		var sd float64
		for _, a := range cell.Alpha {
			sd += a * a
		}
		if sd = math.Sqrt(sd / float64(len(cell.Alpha))); sd > 5e-3 || sd == 0 {
			t.Errorf("cell %s: initial α has RMS %g, want about 1e-3", cell.Key, sd)
		}
	}
	if res.History[len(res.History)-1].ArchLoss != nil {
		t.Error("random mode recorded architecture steps")
	}
}

// TestSearchSoftMode runs a soft search step by step: α must move.
func TestSearchSoftMode(t *testing.T) {
	c := tinyConfig(t)
	c.Mode = ModeSoft
	c.Epochs = 1
	c.Temperature = Temperature{Start: 2, End: 0.5, Decay: 0.5, PerStep: true}
	res := runSearch(t, c)
	if slices.Equal(res.History[0].Cells[0].Alpha, res.Alpha[0]) {
		t.Error("soft search: α of cell 0 did not change")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"arch", func(c *Config) { c.Supernet.Arch = "resnet3d-18" }, "supernet.arch"},
		{"mode", func(c *Config) { c.Mode = "bool" }, "mode"},
		{"epochs", func(c *Config) { c.Epochs = 0 }, "epochs"},
		{"batch", func(c *Config) { c.BatchSize = 0 }, "batch_size"},
		{"input", func(c *Config) { c.Input = [3]int{4, 0, 16} }, "input[1]"},
		{"nonsquare", func(c *Config) { c.Input = [3]int{4, 8, 16} }, "height 8"},
		{"archlr", func(c *Config) { c.ArchLR = 0 }, "arch_lr"},
		{"beta", func(c *Config) { c.ArchBeta1 = 1 }, "arch_beta1"},
		{"tau", func(c *Config) { c.Temperature.End = 2 }, "temperature end"},
		{"metric", func(c *Config) { c.Resource = Resource{Metric: "flops", Weight: 1} }, "metric"},
		{"weight", func(c *Config) { c.Resource = Resource{Metric: MetricSize, Weight: -1, Target: 1} }, "weight"},
		{"data", func(c *Config) { c.Data = train.DataSource{} }, "exactly one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tinyConfig(t)
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
	c := tinyConfig(t)
	c.Resource = Resource{Metric: MetricSize, Weight: 1, Target: 1e-6}
	if _, err := Run(context.Background(), c, nil); err == nil || !strings.Contains(err.Error(), "smallest architecture") {
		t.Errorf("budget below the smallest architecture: error %v", err)
	}
	c = tinyConfig(t)
	c.Supernet.Classes = 2
	if _, err := Run(context.Background(), c, nil); err == nil || !strings.Contains(err.Error(), "classes") {
		t.Errorf("2-class supernet on 3-class data: error %v", err)
	}
}

// TestBudgetGate checks that the budget term applies exactly while the
// argmax architecture of α is over the budget, and a plain penalty always.
func TestBudgetGate(t *testing.T) {
	c := tinyConfig(t)
	ds, err := OpenData(c.Data)
	if err != nil {
		t.Fatal(err)
	}
	c.Resource = Resource{Metric: MetricSize, Weight: 1, Target: 0.05}
	s, err := newSearcher(c, ds, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	set := func(op int) {
		for _, a := range s.alphas {
			for j := range a.Data() {
				a.Data()[j] = 0
			}
			a.Data()[op] = 1
		}
	}
	set(6) // mb7_e4 everywhere: over 0.05 MB
	if cost, _ := s.costs.Cost([]int{6, 6, 6, 6}, MetricSize); !(cost > 0.05) || !s.resourceActive() {
		t.Errorf("argmax %g MB over the 0.05 MB budget: term inactive", cost)
	}
	set(net3d.OpIdentity)
	if s.resourceActive() {
		t.Error("argmax under the budget: term active")
	}
	s.c.Resource.Target = 0
	if !s.resourceActive() {
		t.Error("plain penalty inactive")
	}
}
