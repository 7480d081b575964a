package cam

import (
	"encoding/json"
	"fmt"
	"image"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

func TestColormap(t *testing.T) {
	cases := []struct {
		c    Colormap
		x    float64
		want [3]float64
	}{
		// matplotlib's segment data, evaluated by hand.
		{Jet, 0, [3]float64{0, 0, 0.5}},
		{Jet, 1, [3]float64{0.5, 0, 0}},
		{Jet, 0.5, [3]float64{0.15 / 0.31, 1, 1 - 0.16/0.31}},
		{Jet, 0.25, [3]float64{0, 0.5, 1}},
		{Jet, -3, [3]float64{0, 0, 0.5}},
		{Hot, 0, [3]float64{0.0416, 0, 0}},
		{Hot, 1, [3]float64{1, 1, 1}},
		{Hot, 0.5, [3]float64{1, (0.5 - 0.365079) / (0.746032 - 0.365079), 0}},
	}
	for _, c := range cases {
		got := c.c.RGB(c.x)
		for k := range got {
			if math.Abs(got[k]-c.want[k]) > 1e-9 {
				t.Errorf("%v(%v) = %v, want %v", c.c, c.x, got, c.want)
				break
			}
		}
	}
}

// markerScan is a 20×10×8 scan with spacing (1, 2, 4) mm at the bottom of
// the lung window (grey 0) but for a white voxel at (0, 0, 7).
func markerScan() *volume.Volume {
	v := volume.New(20, 10, 8)
	v.Spacing = [3]float64{1, 2, 4}
	for i := range v.Voxels {
		v.Voxels[i] = -1350
	}
	v.Set(0, 0, 7, 150)
	return v
}

func grey(img *image.NRGBA, x, y int) uint8 { return img.Pix[img.PixOffset(x, y)] }

// TestOverlayGeometry checks the physical aspect ratio (pixels resampled
// to the finer spacing) and the orientation: a marker at i = 0, j = 0 and
// the top slice k = 7 (most superior with k along +z) must appear at the
// top-left of every plane, and at the top-right of the axial plane when the
// i axis runs towards the patient's right.
func TestOverlayGeometry(t *testing.T) {
	scan := markerScan()
	heat := volume.New(20, 10, 8)
	heat.Spacing = scan.Spacing
	cases := []struct {
		p            Plane
		idx          int
		w, h         int
		flipI        bool
		brightX      int
		darkX, darkY int
	}{
		{Axial, 7, 20, 20, false, 0, 19, 19},
		{Coronal, 0, 20, 32, false, 0, 0, 31},
		{Sagittal, 0, 10, 16, false, 0, 0, 15},
		{Axial, 7, 20, 20, true, 19, 0, 19},
	}
	for _, c := range cases {
		s := scan
		if c.flipI {
			s = scan.Clone()
			s.Direction[0] = [3]float64{-1, 0, 0}
		}
		img, err := Overlay(s, heat, c.p, c.idx, OverlayOptions{Threshold: 0.5})
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() != c.w || b.Dy() != c.h {
			t.Errorf("%v: %d×%d pixels, want %d×%d", c.p, b.Dx(), b.Dy(), c.w, c.h)
			continue
		}
		if g := grey(img, c.brightX, 0); g < 200 {
			t.Errorf("%v (flip %v): marker pixel (%d, 0) is %d, want white", c.p, c.flipI, c.brightX, g)
		}
		if g := grey(img, c.darkX, c.darkY); g != 0 {
			t.Errorf("%v (flip %v): pixel (%d, %d) is %d, want black", c.p, c.flipI, c.darkX, c.darkY, g)
		}
	}
	img, err := Overlay(scan, heat, Coronal, 0, OverlayOptions{PixelMM: 2})
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 10 || b.Dy() != 16 {
		t.Errorf("coronal at 2 mm: %v", b)
	}
}

// TestOverlayBlend checks out = (1 − a)·grey + a·colormap(heat) above the
// threshold and the plain grey below it.
func TestOverlayBlend(t *testing.T) {
	scan := volume.New(6, 6, 2)
	for i := range scan.Voxels {
		scan.Voxels[i] = -600 // the lung window's centre: grey 0.5
	}
	heat := volume.New(6, 6, 2)
	for i := 0; i < 36; i++ {
		heat.Voxels[i] = 1      // slice 0: full heat
		heat.Voxels[36+i] = 0.3 // slice 1: below the threshold
	}
	g := math.Round(255*0.5) / 255
	for _, c := range []struct {
		k    int
		cmap Colormap
		want [3]float64
	}{
		{0, Jet, [3]float64{0.7*g + 0.3*0.5, 0.7 * g, 0.7 * g}},
		{0, Hot, [3]float64{0.7*g + 0.3, 0.7*g + 0.3, 0.7*g + 0.3}},
		{1, Jet, [3]float64{g, g, g}},
	} {
		img, err := Overlay(scan, heat, Axial, c.k, OverlayOptions{Colormap: c.cmap, Opacity: 0.3, Threshold: 0.5})
		if err != nil {
			t.Fatal(err)
		}
		px := img.Pix[img.PixOffset(3, 3):]
		for ch := 0; ch < 3; ch++ {
			if math.Abs(float64(px[ch])-255*c.want[ch]) > 1 {
				t.Errorf("slice %d %v: pixel %v, want %v", c.k, c.cmap, px[:4], c.want)
				break
			}
		}
		if px[3] != 255 {
			t.Errorf("alpha %d", px[3])
		}
	}
	bad := []struct {
		name string
		f    func() error
	}{
		{"index", func() error { _, err := Overlay(scan, heat, Axial, 2, OverlayOptions{}); return err }},
		{"plane", func() error { _, err := Overlay(scan, heat, Plane(5), 0, OverlayOptions{}); return err }},
		{"grid", func() error { _, err := Overlay(scan, volume.New(6, 6, 3), Axial, 0, OverlayOptions{}); return err }},
		{"opacity", func() error { _, err := Overlay(scan, heat, Axial, 0, OverlayOptions{Opacity: 2}); return err }},
		{"pixels", func() error { _, err := Overlay(scan, heat, Axial, 0, OverlayOptions{PixelMM: 1e-4}); return err }},
	}
	for _, b := range bad {
		if err := b.f(); err == nil {
			t.Errorf("%s: bad overlay accepted", b.name)
		}
	}
}

func TestHottestSlicesMontage(t *testing.T) {
	heat := volume.New(4, 3, 6)
	set := func(k int, vals ...float32) {
		copy(heat.Voxels[k*12:], vals)
	}
	set(0, 0.9, 0.9)
	set(2, 0.9)
	set(5, 1)
	set(3, 0.2)
	top, err := HottestSlices(heat, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(top) != 3 || top[0].Slice != 5 || top[1].Slice != 0 || top[2].Slice != 2 {
		t.Errorf("hottest slices %+v, want 5, 0, 2", top)
	}
	scan := volume.New(4, 3, 6)
	scan.Spacing = [3]float64{2, 2, 5}
	heat.Spacing = scan.Spacing
	img, got, err := Montage(scan, heat, 3, OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// 3 tiles: a 2×2 grid of 4×3-pixel tiles (2 mm pixels).
	if b := img.Bounds(); b.Dx() != 8 || b.Dy() != 6 || len(got) != 3 {
		t.Errorf("montage %v with %d slices", b, len(got))
	}
	if _, _, err := Montage(scan, heat, 0, OverlayOptions{}); err == nil {
		t.Error("montage of 0 slices accepted")
	}
}

// TestWrite runs Explain on a synthetic chest CT and writes every output:
// the NIfTI heat volume must read back (independently of the writer's
// caller) with the scan's geometry and the heat's values, the summary must
// name the peak and the lung share, and the PNGs must exist. Set
// CTLENS_CAM_PNG_DIR to keep the pictures for inspection.
func TestWrite(t *testing.T) {
	ph, err := volume.NewPhantom(volume.PhantomOptions{Class: 1, Seed: 4, Cols: 64, Rows: 64, Slices: 24})
	if err != nil {
		t.Fatal(err)
	}
	p := volume.Pipeline{
		{Op: "window", Preset: "lung"},
		{Op: "resample_spacing", Spacing: []float64{ph.CT.Spacing[0] * 2, ph.CT.Spacing[1] * 2, ph.CT.Spacing[2]}},
		{Op: "sample_slices", N: 16, Mode: "symmetric"},
	}
	hs, err := Explain(newBlobNet(true), p, ph.CT, Options{Method: GradCAMpp, Classes: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("CTLENS_CAM_PNG_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	lungs, err := MaskFromVolume(ph.Lungs, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	files, sum, err := Write(dir, ph.CT, hs[0], WriteOptions{Lungs: lungs, Coronal: []int{20, 40}, Montage: 6,
		Overlay: OverlayOptions{Threshold: 0.2}, ClassNames: []string{"NCP", "CP", "Normal"}})
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = filepath.Base(f)
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	pk := sum.Peak.Voxel
	wantNames := []string{"gradcampp_class0_heat.nii.gz", fmt.Sprintf("gradcampp_class0_axial_%03d.png", pk[2]),
		"gradcampp_class0_coronal_020.png", "gradcampp_class0_coronal_040.png",
		fmt.Sprintf("gradcampp_class0_sagittal_%03d.png", pk[0]), "gradcampp_class0_montage.png", "gradcampp_class0_summary.json"}
	if strings.Join(names, " ") != strings.Join(wantNames, " ") {
		t.Errorf("files %v, want %v", names, wantNames)
	}
	back, err := dicomio.ReadNIfTI(files[0], dicomio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if back.Dims != ph.CT.Dims {
		t.Fatalf("NIfTI dims %v, want %v", back.Dims, ph.CT.Dims)
	}
	for a := 0; a < 3; a++ {
		if math.Abs(back.Spacing[a]-ph.CT.Spacing[a]) > 1e-5 || math.Abs(back.Origin[a]-ph.CT.Origin[a]) > 1e-4 {
			t.Errorf("NIfTI geometry %v %v, want %v %v", back.Spacing, back.Origin, ph.CT.Spacing, ph.CT.Origin)
		}
	}
	for i, v := range back.Voxels {
		if v != hs[0].Heat.Voxels[i] {
			t.Fatalf("NIfTI voxel %d is %v, heat %v", i, v, hs[0].Heat.Voxels[i])
		}
	}
	raw, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	if err := json.Unmarshal(raw, &js); err != nil {
		t.Fatal(err)
	}
	if js["method"] != "gradcam++" || js["class_name"] != "NCP" || js["lung_share"] == nil {
		t.Errorf("summary %s", raw)
	}
	want, _ := Share(hs[0].Heat, lungs)
	if math.Abs(*sum.LungShare-want) > 1e-12 || sum.LungVoxels != lungs.Count() {
		t.Errorf("lung share %v (%d voxels), want %v (%d)", *sum.LungShare, sum.LungVoxels, want, lungs.Count())
	}
	if got := hs[0].Heat.At(pk[0], pk[1], pk[2]); sum.Peak.Value != got {
		t.Errorf("peak value %v, heat there %v", sum.Peak.Value, got)
	}
	// Without a mask the lung mask is computed from the HU scan.
	s2, err := Summarize(hs[0], ph.CT, nil, nil)
	if err != nil || s2.LungShare == nil || s2.LungVoxels == 0 {
		t.Errorf("summary with computed lung mask: %+v, %v", s2, err)
	}
}
