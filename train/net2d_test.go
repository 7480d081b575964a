package train

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/net2d"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// tinyRecipe2D is a 2D run small enough for a test: a ResFormer of one
// block with patch 8 on 16-pixel slices of six 32-pixel phantoms.
func tinyRecipe2D(t *testing.T) Recipe2D {
	t.Helper()
	r := DefaultRecipe2D()
	r.Model = net2d.Spec{Arch: "resformer-ti", InChannels: 1, Config: json.RawMessage(`{"patch":8,"depth":1}`)}
	r.Size, r.Resolutions = 16, []int{16, 8}
	r.Train = DataSource{Phantoms: 6, PhantomSeed: 3, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 12}
	r.ValFraction = 0.34
	r.Epochs, r.BatchSize = 2, 8
	r.SliceStride = 2
	r.Workers = 2
	r.Out = filepath.Join(t.TempDir(), "run")
	return r
}

func TestRecipe2DValidate(t *testing.T) {
	base := DefaultRecipe2D()
	base.Train = DataSource{Phantoms: 3}
	if err := base.Validate(); err != nil {
		t.Fatalf("default recipe with phantoms: %v", err)
	}
	cases := []struct {
		name string
		edit func(r *Recipe2D)
		want string
	}{
		{"3D arch", func(r *Recipe2D) { r.Model.Arch = "covidnet3d" }, `model.arch "covidnet3d" is not a registered 2D architecture`},
		{"window", func(r *Recipe2D) { r.WindowWidth = 0 }, "window width 0"},
		{"size", func(r *Recipe2D) { r.Size = 4 }, "size 4 outside 8..1024"},
		{"resolutions first", func(r *Recipe2D) { r.Resolutions = []int{64, 32} }, "the first must equal size 128"},
		{"resolutions order", func(r *Recipe2D) { r.Resolutions = []int{128, 64, 96} }, "strictly descending"},
		{"labels", func(r *Recipe2D) { r.Labels = "pixel" }, `labels "pixel"`},
		{"lesion needs phantoms", func(r *Recipe2D) { r.Labels = LabelsLesion; r.Train = DataSource{Folder: "x"} }, "only phantom data has"},
		{"aggregation", func(r *Recipe2D) { r.Aggregation = "median" }, `unknown aggregation "median"`},
		{"top-k", func(r *Recipe2D) { r.Aggregation, r.TopK = "topk", 0 }, "top_k 0"},
		{"no data", func(r *Recipe2D) { r.Train = DataSource{} }, "set exactly one of folder, layout and phantoms"},
		{"nesterov", func(r *Recipe2D) { r.Nesterov = true }, "nesterov needs optimizer sgd"},
		{"warmup", func(r *Recipe2D) { r.WarmupEpochs = 99 }, "warmup_epochs 99"},
		{"alpha", func(r *Recipe2D) { r.ScaleAlpha = -1 }, "scale_alpha -1"},
		{"stride", func(r *Recipe2D) { r.SliceStride = -2 }, "slice_stride -2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := base
			c.edit(&r)
			err := r.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	if _, err := ParseRecipe2D([]byte(`{"train":{"phantoms":3},"sizes":[1]}`)); err == nil || !strings.Contains(err.Error(), "sizes") {
		t.Errorf("unknown field: error %v", err)
	}
	if !IsRecipe2D([]byte(`{"model":{"arch":"resnetrs-26"}}`)) || IsRecipe2D([]byte(`{"model":{"arch":"covidnet3d"}}`)) {
		t.Error("IsRecipe2D does not tell 2D from 3D architectures")
	}
}

// TestPresets checks the presets against the values of
// reference-models.md §2.3–2.4 (ResNet-RS) and §3.1–3.2 (ResFormer).
func TestPresets(t *testing.T) {
	r := DefaultRecipe2D()
	r.Model.Arch, r.BatchSize, r.Epochs = "", 64, 3
	if err := ApplyPreset(&r, "resnetrs"); err != nil {
		t.Fatal(err)
	}
	var cfg net2d.ResNetRSConfig
	if err := net2d.DecodeConfig(r.Model, &cfg); err != nil {
		t.Fatal(err)
	}
	if r.Model.Arch != "resnetrs-50" || r.Optimizer != "sgd" || r.Momentum != 0.9 || !r.Nesterov ||
		r.LR != 0.1*64/256 || r.Schedule != "cosine" || r.WarmupEpochs != 3 || r.LabelSmoothing != 0.1 ||
		r.WeightDecay != 4e-5 || r.DecayAll || r.EMADecay != 0.9999 || cfg.Dropout != 0.25 || cfg.DropPath != 0 || r.Preset != "resnetrs" {
		t.Errorf("resnetrs preset: %+v, model config %+v", r, cfg)
	}
	deep := DefaultRecipe2D()
	deep.Model.Arch, deep.Size, deep.Epochs = "resnetrs-350", 320, 50
	if err := ApplyPreset(&deep, "resnetrs"); err != nil {
		t.Fatal(err)
	}
	if err := net2d.DecodeConfig(deep.Model, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Dropout != 0.4 || cfg.DropPath != 0.1 || deep.WarmupEpochs != 5 {
		t.Errorf("resnetrs-350 at 320: dropout %v, drop_path %v, warmup %v; want 0.4, 0.1, 5", cfg.Dropout, cfg.DropPath, deep.WarmupEpochs)
	}
	if err := ApplyPreset(&deep, "resformer"); err == nil || !strings.Contains(err.Error(), "not a ResFormer") {
		t.Errorf("resformer preset on a ResNet-RS: %v", err)
	}
	rf := DefaultRecipe2D()
	rf.Model.Arch, rf.Size, rf.BatchSize = "resformer-b", 224, 1024
	if err := ApplyPreset(&rf, "resformer"); err != nil {
		t.Fatal(err)
	}
	var rcfg net2d.ResFormerConfig
	if err := net2d.DecodeConfig(rf.Model, &rcfg); err != nil {
		t.Fatal(err)
	}
	if rf.Optimizer != "adamw" || rf.LR != 1e-3 || rf.WeightDecay != 0.05 || rf.MinLR != 1e-5 || rf.LabelSmoothing != 0.1 ||
		rcfg.DropPath != 0.2 || rf.ScaleAlpha != 1 || len(rf.Resolutions) != 3 || rf.Resolutions[1] != 160 || rf.Resolutions[2] != 128 {
		t.Errorf("resformer preset: %+v, config %+v", rf, rcfg)
	}
	if err := ApplyPreset(&rf, "vit"); err == nil || !strings.Contains(err.Error(), `unknown preset "vit"`) {
		t.Errorf("unknown preset: %v", err)
	}
}

// TestNoDecay2D checks the weight-decay exemptions by parameter name.
func TestNoDecay2D(t *testing.T) {
	for _, c := range []struct {
		spec            net2d.Spec
		exempt, decayed []string
	}{
		{net2d.Spec{Arch: "resnetrs-18", InChannels: 1, Classes: 2},
			[]string{"bn1.weight", "bn1.bias", "layer1.0.se.fc1.bias", "fc.bias", "conv1.1.weight"},
			[]string{"conv1.0.weight", "layer2.0.conv1.weight", "layer1.0.se.fc1.weight", "fc.weight"}},
		{net2d.Spec{Arch: "resformer-ti", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"depth":1,"patch":8}`)},
			[]string{"cls_token", "pos_embed.embed_layer.weight", "blocks.0.attn.get_v.weight", "blocks.0.norm1.weight", "head.bias"},
			[]string{"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight", "head.weight"}},
	} {
		m, err := net2d.BuildShapes(c.spec)
		if err != nil {
			t.Fatal(err)
		}
		params := map[string]*tensor.Tensor{}
		for _, p := range nn.NamedParameters(m) {
			params[p.Name] = p.Tensor
		}
		f := noDecay2D(m)
		for _, name := range c.exempt {
			if p, ok := params[name]; !ok || !f(name, p) {
				t.Errorf("%s: %s (present %v) is not exempt from weight decay", c.spec.Arch, name, ok)
			}
		}
		for _, name := range c.decayed {
			if p, ok := params[name]; !ok || f(name, p) {
				t.Errorf("%s: %s (present %v) is exempt from weight decay", c.spec.Arch, name, ok)
			}
		}
	}
}

// TestLoadSlicesLesionLabels checks the slice selection against the
// phantoms' own masks: a diseased phantom's slices are exactly those with
// at least the lesion share, a normal phantom's are every slice with the
// lung share, and each stored slice is the windowed, resized slice.
func TestLoadSlicesLesionLabels(t *testing.T) {
	src := DataSource{Phantoms: 3, PhantomSeed: 9, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 16}
	o := SliceOptions{WindowCenter: -600, WindowWidth: 1500, Size: 16, Labels: LabelsLesion, MinLesionFraction: 0.01, MinLungFraction: 0.05, Workers: 2}
	set, err := LoadSlices(context.Background(), src, o)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := openSource(src)
	if err != nil {
		t.Fatal(err)
	}
	var want []int // expected slice indices, scan after scan
	var wantScan []int
	for i, it := range ds.items {
		p, err := volume.NewPhantom(*it.phantom)
		if err != nil {
			t.Fatal(err)
		}
		for k := 0; k < 16; k++ {
			lesion, lung := 0.0, 0.0
			for j := 0; j < 32; j++ {
				for x := 0; x < 32; x++ {
					if p.Lesion.At(x, j, k) > 0 {
						lesion++
					}
					if p.Lungs.At(x, j, k) > 0 {
						lung++
					}
				}
			}
			keep := lung/1024 >= 0.05
			if it.label != int(volume.Normal) {
				keep = keep && lesion/1024 >= 0.01
			}
			if keep {
				want = append(want, k)
				wantScan = append(wantScan, i)
			}
		}
		if i == 0 {
			// Slice values: the first kept slice of phantom 0 by hand.
			k := want[0]
			x := tensor.Zeros(1, 1, 32, 32)
			for j := 0; j < 32; j++ {
				for c := 0; c < 32; c++ {
					x.Set(float32(math.Max(0, math.Min(1, (float64(p.CT.At(c, j, k))+1350)/1500))), 0, 0, j, c)
				}
			}
			y := tensor.Interpolate(x, []int{16, 16}, tensor.InterpLinear, false)
			for n, v := range y.Data() {
				if math.Abs(float64(v-set.X[n])) > 1e-5 {
					t.Fatalf("slice %d value %d: %v, want %v", k, n, set.X[n], v)
				}
			}
		}
	}
	if len(want) == 0 || len(set.Slice) != len(want) {
		t.Fatalf("%d slices selected, want %d", len(set.Slice), len(want))
	}
	for n := range want {
		sc := set.Scan[n]
		if set.Slice[n] != want[n] || set.ScanNames[sc] != ds.items[wantScan[n]].name || set.Labels[n] != ds.items[wantScan[n]].label {
			t.Fatalf("slice %d: k %d of %s label %d; want k %d of %s label %d", n, set.Slice[n], set.ScanNames[sc], set.Labels[n],
				want[n], ds.items[wantScan[n]].name, ds.items[wantScan[n]].label)
		}
	}
	if len(set.X) != len(want)*256 {
		t.Fatalf("%d values for %d slices of 16×16", len(set.X), len(want))
	}
	// Batch: channels replicated, flip mirrors each row.
	x, y := set.Batch([]int{1, 0}, 2, []bool{true, false})
	if !tensor.SameShape(x.Shape(), []int{2, 2, 16, 16}) || y[0] != set.Labels[1] || y[1] != set.Labels[0] {
		t.Fatalf("batch shape %v labels %v", x.Shape(), y)
	}
	for c := 0; c < 2; c++ {
		for j := 0; j < 16; j++ {
			for i := 0; i < 16; i++ {
				if x.At(0, c, j, i) != set.X[256+16*j+15-i] || x.At(1, c, j, i) != set.X[16*j+i] {
					t.Fatalf("batch value at channel %d row %d column %d", c, j, i)
				}
			}
		}
	}
}

// TestMultiResolutionStepLoss checks the loss of a multi-resolution step
// against the formula worked in float64 on the model's own outputs:
// L = ½·(CE(z₀, y) + CE(z₁, y) + α·mean SmoothL1(f₁ − LN(f₀))).
func TestMultiResolutionStepLoss(t *testing.T) {
	r := tinyRecipe2D(t)
	r.Model.Classes, r.ScaleAlpha = 3, 0.7
	set := &SliceSet{Classes: []string{"a", "b", "c"}, Size: 16, Labels: []int{0, 2, 1, 2}}
	rng := rand.New(rand.NewPCG(4, 5))
	for i := 0; i < 4*256; i++ {
		set.X = append(set.X, rng.Float32())
	}
	tr := &trainer2D{r: r, train: set}
	if err := tr.buildModel(); err != nil {
		t.Fatal(err)
	}
	ref, err := net2d.Build(r.Model, r.Seed)
	if err != nil {
		t.Fatal(err)
	}
	x, y := set.Batch([]int{0, 1, 2, 3}, 1, nil)
	var want float64
	var feats [2][][]float64
	for i, s := range []int{16, 8} {
		xi := x
		if s != 16 {
			xi = tensor.Interpolate(x, []int{s, s}, tensor.InterpLinear, false)
		}
		logits, cls := ref.(*net2d.ResFormer).ForwardCLS(xi)
		ce := 0.0
		for n := 0; n < 4; n++ {
			hi, sum := math.Inf(-1), 0.0
			for c := 0; c < 3; c++ {
				hi = math.Max(hi, float64(logits.At(n, c)))
			}
			for c := 0; c < 3; c++ {
				sum += math.Exp(float64(logits.At(n, c)) - hi)
			}
			ce += hi + math.Log(sum) - float64(logits.At(n, y[n]))
		}
		want += ce / 4 / 2
		for n := 0; n < 4; n++ {
			row := make([]float64, cls.Size(1))
			for d := range row {
				row[d] = float64(cls.At(n, d))
			}
			feats[i] = append(feats[i], row)
		}
	}
	sl1, count := 0.0, 0
	for n := range feats[0] {
		mu, v := 0.0, 0.0
		for _, a := range feats[0][n] {
			mu += a
		}
		mu /= float64(len(feats[0][n]))
		for _, a := range feats[0][n] {
			v += (a - mu) * (a - mu)
		}
		v /= float64(len(feats[0][n]))
		for d, a := range feats[0][n] {
			diff := math.Abs(feats[1][n][d] - (a-mu)/math.Sqrt(v+1e-6))
			if diff < 1 {
				sl1 += 0.5 * diff * diff
			} else {
				sl1 += diff - 0.5
			}
			count++
		}
	}
	want += 0.7 * sl1 / float64(count) / 2
	got, _, _, err := tr.trainStep(x, y, 1e-3)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got-want) > 1e-4*math.Max(1, want) {
		t.Fatalf("multi-resolution loss %v, want %v", got, want)
	}
}

// TestRun2D trains the tiny ResFormer for two epochs and checks the
// output folder, the checkpoint's metadata and the evaluation of the best
// model against its slices scored one scan at a time.
func TestRun2D(t *testing.T) {
	r := tinyRecipe2D(t)
	res, err := Run2D(context.Background(), r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.History) != 2 || res.TrainScans != 3 || res.ValScans != 3 || res.Val == nil || res.BestEpoch < 1 {
		t.Fatalf("result %+v", res)
	}
	for _, f := range []string{BestFile, LastFile, LogFile, CurvesFile, RecipeFile} {
		if _, err := os.Stat(filepath.Join(r.Out, f)); err != nil {
			t.Fatal(err)
		}
	}
	m, meta, err := net2d.LoadCheckpoint(res.Best)
	if err != nil {
		t.Fatal(err)
	}
	prep, err := net2d.ParseSlicePrep(meta)
	if err != nil {
		t.Fatal(err)
	}
	if prep != (net2d.SlicePrep{WindowCenter: -600, WindowWidth: 1500, Size: [2]int{16, 16}, Aggregation: "mean", TopK: 5}) {
		t.Errorf("slice preprocessing %+v", prep)
	}
	if meta[net3d.MetaClassNames] != `["CP","NCP","Normal"]` || meta[MetaEpoch] != "1" && meta[MetaEpoch] != "2" || meta[MetaWeights] != "raw" {
		t.Errorf("metadata %v", meta)
	}
	log, err := os.ReadFile(filepath.Join(r.Out, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], `"resolutions":[16,8]`) || !strings.Contains(lines[2], `"val_scan_acc"`) {
		t.Fatalf("log:\n%s", log)
	}
	// The validation figures again, scan by scan: every slice of a scan
	// prepared with SliceInput, its logits meaned by hand.
	ds, _ := openSource(r.Train)
	_, valIdx := splitVal(ds.items, r.ValFraction, r.Seed)
	vs, err := buildSlices(context.Background(), ds.items, valIdx, ds.classes, r.SliceOptions())
	if err != nil {
		t.Fatal(err)
	}
	nn.SetTraining(m, false)
	right, correct := 0, 0
	for sc := range vs.ScanNames {
		p, _ := volume.NewPhantom(*ds.items[valIdx[sc]].phantom)
		var ks []int
		for n, s := range vs.Scan {
			if s == sc {
				ks = append(ks, vs.Slice[n])
			}
		}
		x, err := net2d.SliceInput(p.CT, ks, 1, prep.Config())
		if err != nil {
			t.Fatal(err)
		}
		z := net2d.Forward(m, x)
		mean := make([]float64, 3)
		for n := range ks {
			best := 0
			for c := 0; c < 3; c++ {
				mean[c] += float64(z.At(n, c)) / float64(len(ks))
				if z.At(n, c) > z.At(n, best) {
					best = c
				}
			}
			if best == vs.ScanLabels[sc] {
				correct++
			}
		}
		best := 0
		for c := range mean {
			if mean[c] > mean[best] {
				best = c
			}
		}
		if best == vs.ScanLabels[sc] {
			right++
		}
	}
	if res.Val.ScanAccuracy != float64(right)/float64(len(vs.ScanNames)) || res.Val.Accuracy != float64(correct)/float64(vs.Len()) {
		t.Errorf("validation: scan accuracy %v, slice accuracy %v; by hand %d/%d and %d/%d",
			res.Val.ScanAccuracy, res.Val.Accuracy, right, len(vs.ScanNames), correct, vs.Len())
	}
	// A second run into the same folder, and resuming, are refused.
	if _, err := Run2D(context.Background(), r, Options{}); err == nil || !strings.Contains(err.Error(), "already holds a run") {
		t.Errorf("second run: %v", err)
	}
	r.Out = filepath.Join(t.TempDir(), "other")
	if _, err := Run2D(context.Background(), r, Options{Resume: true}); err == nil || !strings.Contains(err.Error(), "cannot be resumed") {
		t.Errorf("resume: %v", err)
	}
	r.Resolutions = []int{16, 12}
	if _, err := Run2D(context.Background(), r, Options{}); err == nil || !strings.Contains(err.Error(), "resolution 12 is not a multiple of resformer-ti's patch size 8") {
		t.Errorf("resolution not a multiple of the patch: %v", err)
	}
}

// TestRun2DResNetRSPreset runs the ResNet-RS preset for one epoch: the
// EMA weights are saved and the model's dropout is the preset's.
func TestRun2DResNetRSPreset(t *testing.T) {
	r := tinyRecipe2D(t)
	r.Model = net2d.Spec{Arch: "resnetrs-18", InChannels: 1}
	r.Resolutions, r.Epochs, r.SliceStride, r.ValFraction = nil, 1, 4, 0
	r.Train.Phantoms = 3
	if err := ApplyPreset(&r, "resnetrs"); err != nil {
		t.Fatal(err)
	}
	res, err := Run2D(context.Background(), r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, meta, err := net2d.LoadCheckpoint(res.Best)
	if err != nil {
		t.Fatal(err)
	}
	if meta[MetaWeights] != "ema" || !strings.Contains(meta[net3d.MetaSpec], `"dropout":0.25`) || m.(*net2d.ResNetRS).Drop.P != 0.25 {
		t.Errorf("metadata %v", meta)
	}
	var saved Recipe2D
	if err := json.Unmarshal([]byte(meta[MetaRecipe]), &saved); err != nil || saved.Preset != "resnetrs" || saved.EMADecay != 0.9999 {
		t.Errorf("saved recipe %+v (%v)", saved, err)
	}
}
