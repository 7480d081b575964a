package train

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
	"github.com/ctlens/ctlens/volume"
)

func TestGridTargets(t *testing.T) {
	// Input 2×4×4 (D×H×W), feature grid 1×2×2: each cell is a 2×2×2 block.
	in := [3]int{2, 4, 4}
	m := make([]float32, 2*32)
	set := func(b, z, y, x int) { m[b*32+(z*4+y)*4+x] = 1 }
	set(0, 0, 0, 0)          // scan 0, cell (0,0,0)
	set(0, 1, 1, 1)          // cell (0,0,0)
	set(0, 1, 3, 2)          // cell (0,1,1)
	for z := 0; z < 2; z++ { // scan 1: cell (0,1,0) full
		for y := 2; y < 4; y++ {
			for x := 0; x < 2; x++ {
				set(1, z, y, x)
			}
		}
	}
	got, err := gridTargets(m, 2, in, [3]int{1, 2, 2})
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{2. / 8, 0, 0, 1. / 8, 0, 0, 1, 0}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("targets %v, want %v", got, want)
		}
	}
	if _, err := gridTargets(m, 2, in, [3]int{1, 3, 2}); err == nil || !strings.Contains(err.Error(), "not a whole multiple") {
		t.Errorf("grid 1×3×2 of 2×4×4: %v", err)
	}
}

// TestBCEWithLogits checks the loss against −[y·log σ(z) + (1−y)·log(1−σ(z))]
// worked in float64, and its gradient against finite differences.
func TestBCEWithLogits(t *testing.T) {
	z := tensor.New([]float32{-3, -0.5, 0, 0.7, 4, 12}, 2, 3)
	y := tensor.New([]float32{0, 1, 0.25, 1, 0, 0.5}, 2, 3)
	w := tensor.New([]float32{1, 1, 0, 1, 1, 1}, 2, 3)
	got := float64(bceWithLogits(z, y, w).Item())
	want, sw := 0.0, 0.0
	for i, zv := range z.Data() {
		s := 1 / (1 + math.Exp(-float64(zv)))
		yv := float64(y.Data()[i])
		want += float64(w.Data()[i]) * -(yv*math.Log(s) + (1-yv)*math.Log(1-s))
		sw += float64(w.Data()[i])
	}
	want /= sw
	if math.Abs(got-want) > 1e-5 {
		t.Errorf("loss %v, want %v", got, want)
	}
	tensortest.GradCheck(t, "bceWithLogits", func(in []*tensor.Tensor) *tensor.Tensor {
		return bceWithLogits(in[0], y, w)
	}, []*tensor.Tensor{z.Clone()}, tensortest.GradCheckOpts{Eps: 1e-3})
	if v := bceWithLogits(z, y, tensor.Zeros(2, 3)).Item(); v != 0 {
		t.Errorf("no weight: loss %v", v)
	}
}

// TestGuidanceLossTargets builds a score map by hand (a 1×1×1 conv-free
// feature map and an identity-like classifier) and checks which entries the
// loss supervises, and towards what.
func TestGuidanceLossTargets(t *testing.T) {
	// 2 scans, C = 3 channels, feature grid 1×1×2, input 1×1×4 (cells of
	// two voxels); classes CP, NCP, Normal (lesion classes CP, NCP).
	f := tensor.New([]float32{
		0.5, -1, // scan 0, channel 0 at cells 0, 1
		2, 0.3, // channel 1
		-0.7, 1.5, // channel 2
		1, 0, -2, 0.4, 0.1, 0.2, // scan 1
	}, 2, 3, 1, 1, 2)
	fc := nn.NewLinear(rand.New(rand.NewPCG(1, 1)), 3, 3, true)
	masks := []float32{1, 1, 1, 0, 0, 0, 0, 0} // scan 0: cell 0 full, cell 1 half
	labels := []int{0, 2}                      // scan 0 CP, scan 1 Normal
	lesion := []bool{true, true, false}
	got, err := guidanceLoss(f, fc, masks, labels, [3]int{1, 1, 4}, lesion)
	if err != nil {
		t.Fatal(err)
	}
	score := func(b, p, c int) float64 { // the CAM: no bias
		s := 0.0
		for ch := 0; ch < 3; ch++ {
			s += float64(fc.Weight.Data()[c*3+ch]) * float64(f.Data()[(b*3+ch)*2+p])
		}
		return s
	}
	bce := func(z, y float64) float64 {
		s := 1 / (1 + math.Exp(-z))
		return -(y*math.Log(s) + (1-y)*math.Log(1-s))
	}
	// Supervised: scan 0 class CP towards (1, 0.5), scan 0 class NCP towards
	// 0, scan 1 (Normal, no lesion) classes CP and NCP towards 0; Normal's
	// map and scan 1's own class are free.
	// The two positive entries share half the weight, the six zeros the
	// other half.
	want := (bce(score(0, 0, 0), 1)+bce(score(0, 1, 0), 0.5))/4 +
		(bce(score(0, 0, 1), 0)+bce(score(0, 1, 1), 0)+
			bce(score(1, 0, 0), 0)+bce(score(1, 1, 0), 0)+bce(score(1, 0, 1), 0)+bce(score(1, 1, 1), 0))/12
	if math.Abs(float64(got.Item())-want) > 1e-5 {
		t.Errorf("guidance loss %v, want %v", got.Item(), want)
	}
	if _, err := guidanceLoss(f, fc, masks, labels, [3]int{1, 1, 4}, []bool{true, false}); err == nil {
		t.Error("class count mismatch accepted")
	}
}

// TestForwardMask: a lesion mask carried onto the network grid through the
// trace equals the mask run through the same (intensity-free) pipeline
// with the same random draws.
func TestForwardMask(t *testing.T) {
	p, err := volume.NewPhantom(volume.PhantomOptions{Class: volume.NCP, Seed: 3, Cols: 40, Slices: 30})
	if err != nil {
		t.Fatal(err)
	}
	pl := volume.Pipeline{
		{Op: "center_crop", Cols: 36, Rows: 34},
		{Op: "sample_slices", N: 16, Mode: "random"},
		{Op: "resize", Cols: 24, Rows: 24, Interp: "nearest"},
		{Op: "random_flip", Axes: []int{0, 1, 2}, Prob: 0.5},
	}
	for seed := uint64(1); seed <= 4; seed++ {
		out, tr, err := pl.Apply(p.CT, rand.New(rand.NewPCG(seed, 9)))
		if err != nil {
			t.Fatal(err)
		}
		want, _, err := pl.Apply(p.Lesion, rand.New(rand.NewPCG(seed, 9)))
		if err != nil {
			t.Fatal(err)
		}
		got := make([]float32, len(want.Voxels))
		for i := range got {
			got[i] = 7 // stale values must be overwritten
		}
		forwardMask(got, tr, maskOf(p.Lesion), out.Dims)
		n := 0
		for i := range got {
			if got[i] != want.Voxels[i] {
				t.Fatalf("seed %d: voxel %d: forward mask %v, pipeline on the mask %v", seed, i, got[i], want.Voxels[i])
			}
			n += int(got[i])
		}
		if n == 0 {
			t.Fatalf("seed %d: the lesion left the grid", seed)
		}
	}
}

// TestLesionGuidanceRun trains the test network with lesion guidance on
// phantoms: the guidance term is logged and falls; a recipe with mixup, a
// negative weight or scans without masks is refused with the reason.
func TestLesionGuidanceRun(t *testing.T) {
	r := phantomRecipe(t)
	r.Train = DataSource{Phantoms: 6, PhantomSeed: 5, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 8}
	r.Pipeline = volume.Pipeline{{Op: "window", Center: -300, Width: 1800}, {Op: "sample_slices", N: 8, Mode: "random"},
		{Op: "resize", Cols: 16, Rows: 16}, {Op: "random_flip", Axes: []int{0, 1, 2}, Prob: 0.5}, {Op: "normalize", Method: "zscore"}}
	r.Epochs, r.BatchSize, r.ValFraction, r.Cache = 12, 3, 0, true
	r.MixupAlpha, r.EMADecay, r.LabelSmoothing, r.BalanceClasses, r.ClipNorm, r.WeightDecay = 0, 0, 0, false, 0, 0
	r.LR, r.Schedule, r.WarmupEpochs = 0.05, "constant", 0
	r.LesionGuidance = 1
	res, err := Run(context.Background(), r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first, last := res.History[0].GuidanceLoss, res.History[len(res.History)-1].GuidanceLoss
	if first == nil || last == nil {
		t.Fatal("no guidance_loss in the log")
	}
	t.Logf("guidance loss %.3f → %.3f", *first, *last)
	if !(*last < 0.8**first) {
		t.Errorf("guidance loss %.3f → %.3f: want it to fall by a fifth", *first, *last)
	}

	bad := r
	bad.MixupAlpha = 0.2
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "lesion_guidance and mixup_alpha are exclusive") {
		t.Errorf("mixup with guidance: %v", err)
	}
	// Scan files without a lesion mask next to them are skipped with the
	// reason; with none left the run stops.
	root := t.TempDir()
	for i, c := range []volume.PhantomClass{volume.CP, volume.NCP, volume.Normal} {
		if err := dicomio.WriteNIfTI(filepath.Join(root, c.String(), "s.nii.gz"), testPhantom(t, c, uint64(i+1)), dicomio.NIfTIInt16); err != nil {
			t.Fatal(err)
		}
	}
	bad = r
	bad.Train = DataSource{Folder: root}
	bad.Out = filepath.Join(t.TempDir(), "run")
	if _, err := Run(context.Background(), bad, Options{}); err == nil || !strings.Contains(err.Error(), "lesion_guidance needs one for every training scan") {
		t.Errorf("scans without masks: %v", err)
	}
	bad = r
	bad.LesionGuidance = -1
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "lesion_guidance -1") {
		t.Errorf("negative guidance: %v", err)
	}
}
