package cam

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/volume"
)

// handGrid is a 5×4×3 grid with spacing (2, 3, 5) mm and the i axis
// flipped (distances do not depend on it).
func handGrid() *volume.Volume {
	v := volume.New(5, 4, 3)
	v.Spacing = [3]float64{2, 3, 5}
	v.Direction = [3][3]float64{{-1, 0, 0}, {0, 1, 0}, {0, 0, 1}}
	v.Origin = [3]float64{10, -4, 7}
	return v
}

func TestPointingGame(t *testing.T) {
	type vox = [3]int
	cases := []struct {
		name    string
		hot     map[vox]float32
		lesion  []vox
		tol     float64
		peak    vox
		dist    float64
		hit     bool
		wantErr error
	}{
		{"inside", map[vox]float32{{1, 1, 1}: 1, {4, 3, 2}: 0.5}, []vox{{1, 1, 1}, {2, 1, 1}}, 0, vox{1, 1, 1}, 0, true, nil},
		{"6 mm, tol 5", map[vox]float32{{0, 0, 0}: 1}, []vox{{3, 0, 0}}, 5, vox{0, 0, 0}, 6, false, nil},
		{"6 mm, tol 6", map[vox]float32{{0, 0, 0}: 1}, []vox{{3, 0, 0}}, 6, vox{0, 0, 0}, 6, true, nil},
		// (2·3)² + (1·5)² = 61; the nearer of two lesion voxels counts.
		{"oblique", map[vox]float32{{0, 0, 0}: 1}, []vox{{0, 2, 1}, {4, 3, 2}}, 7.8, vox{0, 0, 0}, math.Sqrt(61), false, nil},
		// Ties go to the first voxel in voxel order (i fastest): (3,0,1) before (0,1,1).
		{"tie", map[vox]float32{{0, 1, 1}: 1, {3, 0, 1}: 1}, []vox{{3, 0, 1}}, 0, vox{3, 0, 1}, 0, true, nil},
		{"empty", map[vox]float32{{0, 0, 0}: 1}, nil, 0, vox{0, 0, 0}, math.Inf(1), false, ErrEmptyMask},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := handGrid()
			for p, x := range c.hot {
				h.Set(p[0], p[1], p[2], x)
			}
			m := volume.NewMask(h.Dims)
			for _, p := range c.lesion {
				m.Bits[h.Index(p[0], p[1], p[2])] = true
			}
			got, err := PointingGame(h, m, c.tol)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("error %v, want %v", err, c.wantErr)
			}
			if got.Peak != c.peak || got.Hit != c.hit || math.Abs(got.DistanceMM-c.dist) > 1e-9 && !math.IsInf(c.dist, 1) {
				t.Errorf("got %+v, want peak %v, distance %v, hit %v", got, c.peak, c.dist, c.hit)
			}
		})
	}
	h := handGrid()
	if _, err := PointingGame(h, volume.NewMask([3]int{5, 4, 2}), 0); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Errorf("mismatched grid: %v", err)
	}
	if _, err := PointingGame(h, volume.NewMask(h.Dims), -1); err == nil {
		t.Error("negative tolerance accepted")
	}
}

func TestShare(t *testing.T) {
	h := handGrid()
	m := volume.NewMask(h.Dims)
	h.Set(0, 0, 0, 0.5)
	h.Set(1, 2, 1, 1)
	h.Set(4, 3, 2, 0.25)
	m.Bits[h.Index(0, 0, 0)] = true
	m.Bits[h.Index(4, 3, 2)] = true
	m.Bits[h.Index(2, 2, 2)] = true // lesion voxel with no heat
	got, err := Share(h, m)
	if err != nil {
		t.Fatal(err)
	}
	if want := 0.75 / 1.75; math.Abs(got-want) > 1e-12 {
		t.Errorf("share %v, want %v", got, want)
	}
	if got, err := Share(handGrid(), m); err != nil || got != 0 {
		t.Errorf("zero map: %v, %v", got, err)
	}
	h.Set(3, 3, 0, -0.1)
	if _, err := Share(h, m); err == nil || !strings.Contains(err.Error(), "non-negative") {
		t.Errorf("negative heat: %v", err)
	}
}

func TestMaskFromVolume(t *testing.T) {
	v := volume.New(3, 1, 1)
	copy(v.Voxels, []float32{0, 0.6, 1})
	m, err := MaskFromVolume(v, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if m.Bits[0] || !m.Bits[1] || !m.Bits[2] {
		t.Errorf("mask %v", m.Bits)
	}
}

// TestEvaluate scores a network whose CAM is its input on blob scans:
// a lesion around the blob (hit), a single lesion voxel 10 voxels = 7 mm
// from it (miss at 5 mm), a scan without lesion, and two broken cases.
func TestEvaluate(t *testing.T) {
	dims, spacing, c := [3]int{32, 28, 20}, [3]float64{0.7, 0.7, 2}, [3]int{16, 12, 10}
	scan := blobScan(dims, spacing, c)
	around := volume.NewMask(dims)
	for k := c[2] - 1; k <= c[2]+1; k++ {
		for j := c[1] - 3; j <= c[1]+3; j++ {
			for i := c[0] - 3; i <= c[0]+3; i++ {
				around.Bits[scan.Index(i, j, k)] = true
			}
		}
	}
	far := volume.NewMask(dims)
	far.Bits[scan.Index(c[0]+10, c[1], c[2])] = true
	p := volume.Pipeline{{Op: "resample_spacing", Spacing: []float64{1.4, 1.4, 2}}}
	cases := []Case{
		{Name: "hit", Label: 1, Scan: scan, Lesion: around},
		{Name: "miss", Label: 0, Load: func() (*volume.Volume, *volume.Mask, error) { return scan, far, nil }},
		{Name: "normal", Label: -1, Scan: scan, Lesion: volume.NewMask(dims)},
		{Name: "unreadable", Load: func() (*volume.Volume, *volume.Mask, error) { return nil, nil, errors.New("no such file") }},
		{Name: "mismatch", Scan: scan, Lesion: volume.NewMask([3]int{32, 28, 19})},
	}
	rep, err := Evaluate(newBlobNet(false), p, cases, EvalOptions{CAM: Options{Method: CAM, Classes: []int{0}}, ToleranceMM: 5})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Rows
	if len(r) != 5 {
		t.Fatalf("%d rows", len(r))
	}
	if r[0].Hit == nil || !*r[0].Hit || *r[0].DistanceMM != 0 || r[0].Peak.Voxel != c {
		t.Errorf("hit row: %+v", r[0])
	}
	if !(*r[0].EnergyShare > 10*r[0].LesionFraction) || r[0].LesionVoxels != 147 {
		t.Errorf("hit row: energy share %v, lesion fraction %v, %d voxels", *r[0].EnergyShare, r[0].LesionFraction, r[0].LesionVoxels)
	}
	if r[1].Hit == nil || *r[1].Hit || math.Abs(*r[1].DistanceMM-7) > 1e-9 || r[1].LesionVoxels != 1 {
		t.Errorf("miss row: hit %v distance %v", r[1].Hit, r[1].DistanceMM)
	}
	if r[2].Hit != nil || r[2].EnergyShare != nil || r[2].Error != "" || r[2].Class != 0 {
		t.Errorf("normal row: %+v", r[2])
	}
	if !strings.Contains(r[3].Error, "no such file") || !strings.Contains(r[4].Error, "differs") {
		t.Errorf("broken rows: %q, %q", r[3].Error, r[4].Error)
	}
	s := rep.Summary
	if s.Scans != 5 || s.Failed != 2 || s.WithLesion != 2 || s.Hits != 1 || *s.PointingAccuracy != 0.5 {
		t.Errorf("summary %+v", s)
	}
	if want := (*r[0].EnergyShare + *r[1].EnergyShare) / 2; math.Abs(*s.MeanEnergyShare-want) > 1e-12 {
		t.Errorf("mean energy share %v, want %v", *s.MeanEnergyShare, want)
	}
	if want := (147.0 + 1) / 2 / float64(dims[0]*dims[1]*dims[2]); math.Abs(*s.MeanLesionFraction-want) > 1e-12 {
		t.Errorf("mean lesion fraction %v, want %v", *s.MeanLesionFraction, want)
	}

	// UseLabel explains each case's label class; class 1 (weight −1) is
	// coldest at the blob.
	rep, err = Evaluate(newBlobNet(false), p, cases[:1], EvalOptions{CAM: Options{Method: CAM}, UseLabel: true, ToleranceMM: 5})
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Rows[0]; r.Class != 1 || r.Predicted != 0 || *r.Hit {
		t.Errorf("label row: class %d predicted %d hit %v", r.Class, r.Predicted, *r.Hit)
	}
	for name, o := range map[string]EvalOptions{
		"tolerance": {ToleranceMM: -1},
		"classes":   {CAM: Options{Classes: []int{0, 1}}},
		"layer":     {CAM: Options{Method: GradCAM, Layer: "nope"}},
	} {
		if _, err := Evaluate(newBlobNet(false), p, cases, o); err == nil {
			t.Errorf("%s: bad options accepted", name)
		}
	}
}
