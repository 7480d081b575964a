package api

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

// TestHeatOnCoarserGrid samples a heat volume on a coarser grid, shifted,
// at the scan's voxels: trilinear interpolation reproduces the linear
// function h = (x + 2y + z)/40 of the patient position (clamped to the
// heat voxel centres' range), and scan voxels more than half a heat voxel
// outside the heat volume get 0.
func TestHeatOnCoarserGrid(t *testing.T) {
	scan := volume.New(10, 6, 4)
	scan.Spacing = [3]float64{1, 1, 2}
	scan.Direction = [3][3]float64{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}
	heat := volume.New(4, 3, 2)
	heat.Spacing = [3]float64{2, 2, 4}
	heat.Origin = [3]float64{0.5, 0.5, 1}
	heat.Direction = scan.Direction
	h := func(x, y, z float64) float64 { return (x + 2*y + z) / 40 }
	for k := range 2 {
		for j := range 3 {
			for i := range 4 {
				p := heat.VoxelToPatient([3]float64{float64(i), float64(j), float64(k)})
				heat.Set(i, j, k, float32(h(p[0], p[1], p[2])))
			}
		}
	}
	got := heatOnGrid(heat, scan)
	clamp := func(v, lo, hi float64) float64 { return math.Min(math.Max(v, lo), hi) }
	for k := range 4 {
		for j := range 6 {
			for i := range 10 {
				x, y, z := float64(i), float64(j), 2*float64(k)
				want := 0.0
				if x <= 7.5 { // heat covers x up to 6.5 + 1 (half a voxel)
					want = math.Round(255 * h(clamp(x, 0.5, 6.5), clamp(y, 0.5, 4.5), clamp(z, 1, 5)))
				}
				g := float64(got[(k*6+j)*10+i])
				if math.Abs(g-want) > 1 {
					t.Fatalf("heat at (%d, %d, %d) = %v, want %v", i, j, k, g, want)
				}
			}
		}
	}
	// Same grid: voxel by voxel; values outside [0, 1] min-max scaled.
	same := scan.Clone()
	for i := range same.Voxels {
		same.Voxels[i] = float32(i%5) * 2 // 0..8
	}
	for i, b := range heatOnGrid(same, scan) {
		if want := byte(math.Round(255 * float64(i%5) / 4)); b != want {
			t.Fatalf("scaled heat %d = %d, want %d", i, b, want)
		}
	}
}

func TestParseNIfTIHeader(t *testing.T) {
	v := volume.New(7, 5, 3)
	v.Spacing = [3]float64{1, 1, 1}
	v.Direction = [3][3]float64{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}
	dir := t.TempDir()
	for _, name := range []string{"a.nii", "a.nii.gz"} {
		p := filepath.Join(dir, name)
		if err := dicomio.WriteNIfTI(p, v, dicomio.NIfTIInt16); err != nil {
			t.Fatal(err)
		}
		if d, err := niftiDims(p); err != nil || d != [3]int64{7, 5, 3} {
			t.Fatalf("%s: %v %v", name, d, err)
		}
	}
	// Big-endian NIfTI-1, 2-D (dim[0] = 2): the third dimension is 1.
	be := make([]byte, 352)
	binary.BigEndian.PutUint32(be, 348)
	binary.BigEndian.PutUint16(be[40:], 2)
	binary.BigEndian.PutUint16(be[42:], 300)
	binary.BigEndian.PutUint16(be[44:], 200)
	copy(be[344:], "n+1\x00")
	if d, ver, err := parseNIfTIHeader(be); err != nil || d != [3]int64{300, 200, 1} || ver != 1 {
		t.Fatalf("big-endian: %v %d %v", d, ver, err)
	}
	// NIfTI-2, little-endian.
	n2 := make([]byte, 544)
	binary.LittleEndian.PutUint32(n2, 540)
	copy(n2[4:], "n+2\x00\r\n\x1a\n")
	binary.LittleEndian.PutUint64(n2[16:], 3)
	for a, n := range []uint64{100000, 3, 2} {
		binary.LittleEndian.PutUint64(n2[24+8*a:], n)
	}
	if d, ver, err := parseNIfTIHeader(n2); err != nil || d != [3]int64{100000, 3, 2} || ver != 2 {
		t.Fatalf("NIfTI-2: %v %d %v", d, ver, err)
	}
	bad := append([]byte(nil), be...)
	binary.BigEndian.PutUint16(bad[44:], 0)
	for name, h := range map[string][]byte{"short": be[:3], "no magic": append(make([]byte, 4), be[4:]...), "zero dim": bad, "text": []byte(strings.Repeat("x", 400))} {
		if _, _, err := parseNIfTIHeader(h); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	os.WriteFile(filepath.Join(dir, "t.txt"), []byte("hello"), 0o600)
	if _, err := niftiDims(filepath.Join(dir, "t.txt")); err == nil {
		t.Error("text file read as NIfTI")
	}
}

func TestReportEscapes(t *testing.T) {
	share := 0.25
	r := &Result{StudyID: "s1", Model: ResultModel{Name: "m", Classes: []string{"A", "B"}},
		Series: []SeriesResult{
			{Description: "chest | *lung* <b>", Dims: [3]int{4, 5, 6}, Spacing: [3]float64{0.5, 0.75, 2.5},
				Probabilities: map[string]float64{"A": 0.25, "B": 0.75}, Predicted: "B",
				Heatmap: &HeatmapResult{Method: "cam", Layer: "l", Class: "B", PeakVoxel: [3]int{1, 2, 3}, LungShare: &share}},
			{Error: "unreadable\nslice"},
		}}
	md := Report(r)
	for _, want := range []string{"> **" + Caveat + "**", `chest \| \*lung\* \<b\>`, "4 × 5 × 6 voxels, spacing 0.5 × 0.75 × 2.5 mm",
		"| B | 75.0 % |\n| A | 25.0 % |", "25 % of the heat inside the lungs", "Not scored: unreadable slice"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestRewriteJSONAndClientText(t *testing.T) {
	dir := "/data/studies/abc"
	f := clientText(dir, map[string]string{"input/f000001.dcm": "scan/IM1.dcm", "input/f000010.dcm": "IM10.dcm"})
	for in, want := range map[string]string{
		"/data/studies/abc/input/f000001.dcm: bad":  "scan/IM1.dcm: bad",
		"input/f000010.dcm and f000001.dcm":         "IM10.dcm and scan/IM1.dcm",
		"/data/studies/abc/out/0/heat.nii.gz: gone": "out/0/heat.nii.gz: gone",
	} {
		if got := f(in); got != want {
			t.Errorf("clientText(%q) = %q, want %q", in, got, want)
		}
	}
	out, err := rewriteJSON([]byte(`{"n": 12345678901234567890, "x": 1.25e-7, "s": ["f000001.dcm", {"p": "input/f000010.dcm"}], "k": null}`), f)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"k":null,"n":12345678901234567890,"s":["scan/IM1.dcm",{"p":"IM10.dcm"}],"x":1.25e-7}` + "\n"
	if string(out) != want {
		t.Fatalf("rewriteJSON = %s, want %s", out, want)
	}
}
