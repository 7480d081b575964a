package volume

import (
	"math"
	"strings"
	"testing"
)

// TestBodyMaskByHand builds a body by hand: an elliptic cylinder of soft
// tissue with an air-filled "lung" inside, a table below it and a noise
// speck, and checks the mask against the ellipse worked out per voxel.
func TestBodyMaskByHand(t *testing.T) {
	const nx, ny, nz = 40, 32, 5
	v := New(nx, ny, nz)
	ca, cb := 14.0, 9.0 // semi-axes in voxels, centred at (19.5, 13.5)
	inBody := func(i, j int) bool {
		x, y := (float64(i)-19.5)/ca, (float64(j)-13.5)/cb
		return x*x+y*y < 1
	}
	for k := 0; k < nz; k++ {
		for j := 0; j < ny; j++ {
			for i := 0; i < nx; i++ {
				hu := float32(-1000)
				if inBody(i, j) {
					hu = 40
					x, y := (float64(i)-19.5)/(ca/2), (float64(j)-13.5)/(cb/2)
					if x*x+y*y < 1 {
						hu = -850 // lung: a hole to fill
					}
				}
				if j == 28 && i >= 4 && i < 36 {
					hu = 200 // table, not touching the body
				}
				v.Voxels[v.Index(i, j, k)] = hu
			}
		}
	}
	v.Voxels[v.Index(1, 1, 2)] = 0 // speck
	m, err := BodyMask(v, DefaultBodyThreshold)
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < nz; k++ {
		for j := 0; j < ny; j++ {
			for i := 0; i < nx; i++ {
				if got, want := m.Bits[v.Index(i, j, k)], inBody(i, j); got != want {
					t.Fatalf("voxel (%d,%d,%d): mask %v, want %v", i, j, k, got, want)
				}
			}
		}
	}
	b, err := BodyBox(v, DefaultBodyThreshold, [3]int{1, 1, 1})
	if err != nil {
		t.Fatal(err)
	}
	// Columns 6..33 and rows 5..22 hold ellipse voxels; one voxel of margin.
	if want := (Box{Min: [3]int{5, 4, 0}, Max: [3]int{35, 24, 5}}); b != want {
		t.Errorf("body box %+v, want %+v", b, want)
	}

	// The pipeline op crops to the same box.
	out, _, err := Pipeline{{Op: "body_crop", Margin: []int{1, 1, 1}}}.Apply(v, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Dims != b.Size() || out.Voxels[out.Index(0, 0, 0)] != v.Voxels[v.Index(5, 4, 0)] {
		t.Errorf("body_crop gave dims %v, want %v", out.Dims, b.Size())
	}

	air := New(8, 8, 2)
	for i := range air.Voxels {
		air.Voxels[i] = -1000
	}
	if _, err := BodyBox(air, DefaultBodyThreshold, [3]int{}); err == nil || !strings.Contains(err.Error(), "no voxel above -500 HU") {
		t.Errorf("all-air volume: error %v", err)
	}
	if _, err := BodyMask(v, math.NaN()); err == nil {
		t.Error("NaN threshold accepted")
	}
	if _, err := BodyBox(v, DefaultBodyThreshold, [3]int{0, -1, 0}); err == nil {
		t.Error("negative margin accepted")
	}
}

// TestBodyBoxIgnoresLesions: unlike the lung box, the body box of a
// pneumonia phantom equals that of its healthy twin.
func TestBodyBoxIgnoresLesions(t *testing.T) {
	for _, c := range []PhantomClass{CP, NCP} {
		for seed := uint64(1); seed <= 3; seed++ {
			sick, err := NewPhantom(PhantomOptions{Class: c, Seed: seed, Cols: 48})
			if err != nil {
				t.Fatal(err)
			}
			twin, err := NewPhantom(PhantomOptions{Class: c, Seed: seed, Cols: 48, Healthy: true})
			if err != nil {
				t.Fatal(err)
			}
			b1, err := BodyBox(sick.CT, DefaultBodyThreshold, [3]int{})
			if err != nil {
				t.Fatal(err)
			}
			b2, err := BodyBox(twin.CT, DefaultBodyThreshold, [3]int{})
			if err != nil {
				t.Fatal(err)
			}
			if b1 != b2 {
				t.Errorf("%v seed %d: body box %+v, twin's %+v", c, seed, b1, b2)
			}
			// Every lung voxel lies in the body box.
			lb, ok := (&Mask{Bits: maskBits(sick.Lungs), Dims: sick.Lungs.Dims}).BoundingBox()
			if !ok {
				t.Fatalf("%v seed %d: no lung", c, seed)
			}
			for a := 0; a < 3; a++ {
				if lb.Min[a] < b1.Min[a] || lb.Max[a] > b1.Max[a] {
					t.Errorf("%v seed %d: lungs %+v outside the body box %+v", c, seed, lb, b1)
				}
			}
		}
	}
}

func maskBits(v *Volume) []bool {
	b := make([]bool, len(v.Voxels))
	for i, x := range v.Voxels {
		b[i] = x > 0.5
	}
	return b
}

// TestHealthyTwin: a twin differs from its pneumonia phantom only in and
// next to the lesions, and a Normal phantom's twin is itself.
func TestHealthyTwin(t *testing.T) {
	for _, c := range []PhantomClass{CP, NCP} {
		sick, err := NewPhantom(PhantomOptions{Class: c, Seed: 7, Cols: 48})
		if err != nil {
			t.Fatal(err)
		}
		twin, err := NewPhantom(PhantomOptions{Class: c, Seed: 7, Cols: 48, Healthy: true})
		if err != nil {
			t.Fatal(err)
		}
		if twin.Class != Normal {
			t.Errorf("%v twin: class %v, want Normal", c, twin.Class)
		}
		for i, x := range twin.Lesion.Voxels {
			if x != 0 {
				t.Fatalf("%v twin: lesion voxel %d", c, i)
			}
		}
		v := sick.CT
		var lesion [][3]float64
		for k := 0; k < v.Dims[2]; k++ {
			for j := 0; j < v.Dims[1]; j++ {
				for i := 0; i < v.Dims[0]; i++ {
					if sick.Lesion.Voxels[v.Index(i, j, k)] > 0 {
						lesion = append(lesion, v.VoxelToPatient([3]float64{float64(i), float64(j), float64(k)}))
					}
				}
			}
		}
		if len(lesion) == 0 {
			t.Fatalf("%v: no lesion", c)
		}
		changedInLesion, far := 0, 0
		for k := 0; k < v.Dims[2]; k++ {
			for j := 0; j < v.Dims[1]; j++ {
				for i := 0; i < v.Dims[0]; i++ {
					p := v.Index(i, j, k)
					if sick.Lungs.Voxels[p] != twin.Lungs.Voxels[p] {
						t.Fatalf("%v: lung masks differ at (%d,%d,%d)", c, i, j, k)
					}
					if v.Voxels[p] == twin.CT.Voxels[p] {
						continue
					}
					if sick.Lesion.Voxels[p] > 0 {
						changedInLesion++
						continue
					}
					// A changed voxel outside the mask lies on a lesion's
					// soft edge: within 20 mm of a lesion voxel.
					q := v.VoxelToPatient([3]float64{float64(i), float64(j), float64(k)})
					near := false
					for _, l := range lesion {
						if (l[0]-q[0])*(l[0]-q[0])+(l[1]-q[1])*(l[1]-q[1])+(l[2]-q[2])*(l[2]-q[2]) <= 400 {
							near = true
							break
						}
					}
					if !near {
						far++
					}
				}
			}
		}
		if far != 0 {
			t.Errorf("%v: %d voxels changed farther than 20 mm from any lesion", c, far)
		}
		if changedInLesion < len(lesion)*9/10 {
			t.Errorf("%v: only %d of %d lesion voxels differ from the twin", c, changedInLesion, len(lesion))
		}
	}
	normal, err := NewPhantom(PhantomOptions{Class: Normal, Seed: 3, Cols: 32})
	if err != nil {
		t.Fatal(err)
	}
	twin, err := NewPhantom(PhantomOptions{Class: Normal, Seed: 3, Cols: 32, Healthy: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range normal.CT.Voxels {
		if normal.CT.Voxels[i] != twin.CT.Voxels[i] {
			t.Fatalf("Normal phantom and its twin differ at voxel %d", i)
		}
	}
}
