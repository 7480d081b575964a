package train

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

// testPhantom draws a small phantom CT (HU on whole numbers).
func testPhantom(t *testing.T, c volume.PhantomClass, seed uint64) *volume.Volume {
	t.Helper()
	p, err := volume.NewPhantom(volume.PhantomOptions{Class: c, Seed: seed, Cols: 24, Rows: 24, Slices: 6})
	if err != nil {
		t.Fatal(err)
	}
	return p.CT
}

// Each scan kind loads the voxels that were written.
func TestLoadScanKinds(t *testing.T) {
	dir := t.TempDir()
	ct := testPhantom(t, volume.NCP, 3)

	nii := filepath.Join(dir, "scan.nii.gz")
	if err := dicomio.WriteNIfTI(nii, ct, dicomio.NIfTIInt16); err != nil {
		t.Fatal(err)
	}
	series := filepath.Join(dir, "series")
	if _, err := dicomio.WriteSeries(series, ct, dicomio.WriteOptions{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	// A PNG stack whose slice k has grey value 10·k+j at row j; names sort
	// naturally (s2 before s10), not lexically.
	stack := filepath.Join(dir, "stack")
	if err := os.MkdirAll(stack, 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{"s1.png", "s2.png", "s10.png"}
	for k, name := range names {
		img := image.NewGray(image.Rect(0, 0, 5, 4))
		for j := 0; j < 4; j++ {
			for i := 0; i < 5; i++ {
				img.SetGray(i, j, color.Gray{Y: uint8(10*k + j)})
			}
		}
		f, err := os.Create(filepath.Join(stack, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(f, img); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}

	for _, tc := range []struct {
		name string
		scan dicomio.Scan
		want *volume.Volume
	}{
		{"nifti", dicomio.Scan{Kind: dicomio.KindNIfTI, Path: nii}, ct},
		{"dicom", dicomio.Scan{Kind: dicomio.KindDICOM, Path: series}, ct},
		{"stack", dicomio.Scan{Kind: dicomio.KindStack, Path: stack}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := loadScan(tc.scan)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if v.Dims != [3]int{5, 4, 3} {
					t.Fatalf("dims %v, want [5 4 3]", v.Dims)
				}
				for k := 0; k < 3; k++ {
					for j := 0; j < 4; j++ {
						if got := v.At(2, j, k); got != float32(10*k+j) {
							t.Fatalf("voxel (2,%d,%d) = %v, want %d", j, k, got, 10*k+j)
						}
					}
				}
				return
			}
			if v.Dims != tc.want.Dims {
				t.Fatalf("dims %v, want %v", v.Dims, tc.want.Dims)
			}
			for i, x := range tc.want.Voxels {
				if v.Voxels[i] != x {
					t.Fatalf("voxel %d = %v, want %v", i, v.Voxels[i], x)
				}
			}
		})
	}
	if _, err := loadScan(dicomio.Scan{Kind: dicomio.KindStack, Path: series}); err == nil || !strings.Contains(err.Error(), "no slice images") {
		t.Fatalf("stack of a DICOM folder: %v, want a 'no slice images' error", err)
	}
}

// A dataset with a corrupt and a truncated NIfTI file, an empty folder and a folder of
// non-DICOM files trains on the readable scans and lists the others with
// reasons, in the result and in the log.
func TestUnreadableScansSkipped(t *testing.T) {
	root := t.TempDir()
	write := func(class, name string, c volume.PhantomClass, seed uint64) {
		t.Helper()
		if err := dicomio.WriteNIfTI(filepath.Join(root, class, name), testPhantom(t, c, seed), dicomio.NIfTIInt16); err != nil {
			t.Fatal(err)
		}
	}
	write("CP", "p1.nii.gz", volume.CP, 1)
	write("CP", "p2.nii.gz", volume.CP, 2)
	write("NCP", "p3.nii.gz", volume.NCP, 3)
	if _, err := dicomio.WriteSeries(filepath.Join(root, "NCP", "p4"), testPhantom(t, volume.NCP, 4), dicomio.WriteOptions{Seed: 4}); err != nil {
		t.Fatal(err)
	}
	write("Normal", "p5.nii.gz", volume.Normal, 5)
	write("Normal", "p6.nii.gz", volume.Normal, 6)
	corrupt := filepath.Join(root, "CP", "corrupt.nii.gz")
	junk := make([]byte, 600)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range junk {
		junk[i] = byte(rng.UintN(256))
	}
	if err := os.WriteFile(corrupt, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	// A truncated gzip stream: the first half of a valid scan.
	truncated := filepath.Join(root, "Normal", "truncated.nii.gz")
	whole, err := os.ReadFile(filepath.Join(root, "Normal", "p6.nii.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(truncated, whole[:len(whole)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(root, "NCP", "empty")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	notDICOM := filepath.Join(root, "Normal", "notdicom")
	if err := os.MkdirAll(notDICOM, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(notDICOM, "IM0001.dcm"), []byte("this is not a DICOM file"), 0o644); err != nil {
		t.Fatal(err)
	}

	r := DefaultRecipe()
	r.Model.Arch, r.Model.InChannels = tinyArch, 1
	r.Input = [3]int{4, 16, 16}
	r.Pipeline = volume.Pipeline{
		{Op: "window", Preset: "lung"},
		{Op: "sample_slices", N: 4, Mode: "random"},
		{Op: "resize", Cols: 16, Rows: 16},
		{Op: "normalize", Method: "zscore"},
	}
	r.Train = DataSource{Folder: root}
	r.ValFraction = 0
	r.Epochs, r.BatchSize, r.Workers = 1, 2, 2
	r.Out = filepath.Join(t.TempDir(), "run")
	res, err := Run(context.Background(), r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.TrainScans != 6 || len(res.History) != 1 {
		t.Fatalf("trained on %d scans for %d epochs, want 6 and 1", res.TrainScans, len(res.History))
	}
	if !reflect.DeepEqual(res.Classes, []string{"CP", "NCP", "Normal"}) {
		t.Fatalf("classes %v", res.Classes)
	}
	reasons := map[string]string{}
	for _, s := range res.Skipped {
		reasons[s.Path] = s.Reason
	}
	for _, p := range []string{corrupt, truncated, empty, notDICOM} {
		if reasons[p] == "" {
			t.Errorf("%s not reported as skipped (skipped: %+v)", p, res.Skipped)
		}
	}
	if len(res.Skipped) != 4 {
		t.Errorf("%d skipped, want 4: %+v", len(res.Skipped), res.Skipped)
	}
	b, err := os.ReadFile(filepath.Join(r.Out, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	first := string(jsonLines(b)[0])
	for _, p := range []string{"corrupt.nii.gz", "truncated.nii.gz", "empty", "notdicom"} {
		if !strings.Contains(first, p) {
			t.Errorf("log dataset line lacks %s: %s", p, first)
		}
	}
}

// The validation split keeps each patient's scans together, holds out a
// share of each class's patients, and depends only on the seed.
func TestSplitVal(t *testing.T) {
	var items []scanItem
	for c := 0; c < 3; c++ {
		for p := 0; p < 4; p++ {
			for s := 0; s < 1+p%2; s++ {
				items = append(items, scanItem{name: fmt.Sprintf("c%d/p%d/s%d", c, p, s), group: fmt.Sprintf("c%d/p%d", c, p), label: c})
			}
		}
	}
	// A class with a single patient keeps it for training.
	items = append(items, scanItem{name: "c3/p0/s0", group: "c3/p0", label: 3})
	tr, va := splitVal(items, 0.25, 11)
	if len(tr)+len(va) != len(items) {
		t.Fatalf("%d + %d indices for %d items", len(tr), len(va), len(items))
	}
	inVal := map[string]bool{}
	valGroups := map[int]map[string]bool{}
	for _, i := range va {
		inVal[items[i].group] = true
		if valGroups[items[i].label] == nil {
			valGroups[items[i].label] = map[string]bool{}
		}
		valGroups[items[i].label][items[i].group] = true
	}
	for _, i := range tr {
		if inVal[items[i].group] {
			t.Fatalf("patient %s is in both splits", items[i].group)
		}
	}
	// round(0.25·4) = 1 patient per class of 4; none of the single-patient class.
	for c := 0; c < 4; c++ {
		want := 1
		if c == 3 {
			want = 0
		}
		if len(valGroups[c]) != want {
			t.Errorf("class %d: %d validation patients, want %d", c, len(valGroups[c]), want)
		}
	}
	tr2, va2 := splitVal(items, 0.25, 11)
	if !reflect.DeepEqual(tr, tr2) || !reflect.DeepEqual(va, va2) {
		t.Fatal("same seed, different split")
	}
	distinct := map[string]bool{}
	for seed := uint64(0); seed < 20; seed++ {
		_, v := splitVal(items, 0.25, seed)
		distinct[fmt.Sprint(v)] = true
	}
	if len(distinct) < 2 {
		t.Fatal("20 seeds gave one split")
	}
	tr0, va0 := splitVal(items, 0, 11)
	if len(va0) != 0 || len(tr0) != len(items) {
		t.Fatalf("fraction 0: %d train %d val", len(tr0), len(va0))
	}
}

// Batches depend on the items and the seed only, not on the number of
// workers or the order in which items are requested.
func TestBatchesDeterministicAcrossWorkers(t *testing.T) {
	ds, err := openSource(DataSource{Phantoms: 6, PhantomSeed: 2, PhantomCols: 20, PhantomRows: 20, PhantomSlices: 6})
	if err != nil {
		t.Fatal(err)
	}
	pl := volume.Pipeline{
		{Op: "window", Preset: "lung"},
		{Op: "sample_slices", N: 4, Mode: "random"},
		{Op: "random_affine", Degrees: 10, ScaleMin: 0.9, ScaleMax: 1.1},
		{Op: "random_flip"},
		{Op: "random_noise", Std: 0.05},
		{Op: "resize", Cols: 8, Rows: 8},
	}
	rngFor := func(item int) *rand.Rand { return newRand(9, streamAugment, 1, uint64(item)) }
	collect := func(workers int, order []int) map[int][]float32 {
		t.Helper()
		p := newPreparer(pl, [3]int{4, 8, 8}, 2, workers, false)
		out := map[int][]float32{}
		n := p.sampleLen()
		for b := range p.batches(context.Background(), ds.items, order, 4, rngFor) {
			if b.err != nil {
				t.Fatal(b.err)
			}
			if got := b.x.Shape(); !reflect.DeepEqual(got, []int{len(b.items), 2, 4, 8, 8}) {
				t.Fatalf("batch shape %v", got)
			}
			for i, it := range b.items {
				if b.labels[i] != ds.items[it].label {
					t.Fatalf("item %d label %d, want %d", it, b.labels[i], ds.items[it].label)
				}
				out[it] = append([]float32(nil), b.x.Data()[i*n:(i+1)*n]...)
			}
		}
		return out
	}
	a := collect(1, []int{0, 1, 2, 3, 4, 5})
	b := collect(3, []int{5, 3, 1, 0, 2, 4})
	if len(a) != 6 || !reflect.DeepEqual(a, b) {
		t.Fatal("samples differ between 1 worker in order and 3 workers shuffled")
	}
	// Both channels hold the same volume; augmentation differs by item seed.
	half := len(a[0]) / 2
	if !reflect.DeepEqual(a[0][:half], a[0][half:]) {
		t.Fatal("channels differ")
	}
	rngFor2 := rngFor
	rngFor = func(item int) *rand.Rand { return newRand(9, streamAugment, 2, uint64(item)) }
	c := collect(2, []int{0, 1, 2, 3, 4, 5})
	rngFor = rngFor2
	if reflect.DeepEqual(a[0], c[0]) {
		t.Fatal("another epoch's augmentation gave the same sample")
	}
}

// Validation and test data are relabelled onto the training classes by
// name; an unknown class is an error naming it.
func TestRelabel(t *testing.T) {
	ds := &dataSet{classes: []string{"NCP", "Normal"}, items: []scanItem{{label: 0}, {label: 1}}}
	if err := ds.relabel([]string{"CP", "NCP", "Normal"}, "test"); err != nil {
		t.Fatal(err)
	}
	if ds.items[0].label != 1 || ds.items[1].label != 2 {
		t.Fatalf("labels %d %d, want 1 2", ds.items[0].label, ds.items[1].label)
	}
	bad := &dataSet{classes: []string{"covid"}, items: []scanItem{{label: 0}}}
	if err := bad.relabel([]string{"CP", "NCP"}, "test"); err == nil || !strings.Contains(err.Error(), `"covid"`) {
		t.Fatalf("unknown class: %v", err)
	}
}
