package volume

import (
	"math"
	"testing"
)

func TestFlip(t *testing.T) {
	v := indexVolume(t, [3]int{4, 3, 5})
	for axis := 0; axis < 3; axis++ {
		out, step, err := Flip(v, axis)
		if err != nil {
			t.Fatal(err)
		}
		for k := 0; k < 5; k++ {
			for j := 0; j < 3; j++ {
				for i := 0; i < 4; i++ {
					s := [3]int{i, j, k}
					s[axis] = v.Dims[axis] - 1 - s[axis]
					if out.At(i, j, k) != v.At(s[0], s[1], s[2]) {
						t.Fatalf("axis %d: out(%d,%d,%d) != v%v", axis, i, j, k, s)
					}
					o := [3]float64{float64(i), float64(j), float64(k)}
					src := [3]float64{float64(s[0]), float64(s[1]), float64(s[2])}
					if !near3(out.VoxelToPatient(o), v.VoxelToPatient(src), 1e-9) || step.OutToIn(o) != src {
						t.Fatalf("axis %d: geometry or step wrong at %v", axis, o)
					}
				}
			}
		}
		back, _, _ := Flip(out, axis)
		for p := range back.Voxels {
			if back.Voxels[p] != v.Voxels[p] {
				t.Fatalf("axis %d: flipping twice is not the identity", axis)
			}
		}
	}
	if _, _, err := Flip(v, 3); err == nil {
		t.Error("axis 3 accepted")
	}
}

// TestRotateZoom checks worked cases on a 9×9 slice (centre (4, 4)) with
// isotropic spacing: a 90° turn moves the pixel at offset (+3, 0) to
// (0, -3) (R(-90°)·(3,0)); a zoom of 2 moves (+2, +1) to (+4, +2); and
// the recorded step agrees with the geometry for anisotropic spacing.
func TestRotateZoom(t *testing.T) {
	v := New(9, 9, 2)
	v.Set(7, 4, 1, 100) // offset (+3, 0)
	v.Set(6, 5, 0, 50)  // offset (+2, +1)
	rot, _, err := RotateZoom(v, 90, 1, Linear, -5)
	if err != nil {
		t.Fatal(err)
	}
	if got := rot.At(4, 1, 1); math.Abs(float64(got)-100) > 1e-3 {
		t.Errorf("rotated hot pixel: (4,1) = %v, want 100", got)
	}
	if got := rot.At(5, 2, 0); math.Abs(float64(got)-50) > 1e-3 { // (2,1) -> (1,-2)
		t.Errorf("rotated second pixel: (5,2) = %v, want 50", got)
	}
	zoom, _, err := RotateZoom(v, 0, 2, Nearest, -5)
	if err != nil {
		t.Fatal(err)
	}
	if got := zoom.At(8, 6, 0); got != 50 {
		t.Errorf("zoomed pixel (8,6) = %v, want 50", got)
	}
	// 45° turn: corners read from outside the slice get the fill
	r45, _, _ := RotateZoom(v, 45, 1, Linear, -5)
	if r45.At(0, 0, 0) != -5 {
		t.Errorf("corner after 45° = %v, want fill -5", r45.At(0, 0, 0))
	}
	// anisotropic geometry: step and geometry agree, spacing divided by scale
	a := obliqueVolume(t, [3]int{12, 10, 3}, [3]float64{0.6, 0.9, 3}, nil)
	out, step, err := RotateZoom(a, 17, 1.25, Linear, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !near3(out.Spacing, [3]float64{0.48, 0.72, 3}, 1e-12) {
		t.Errorf("spacing %v, want [0.48 0.72 3]", out.Spacing)
	}
	for _, o := range [][3]float64{{0, 0, 0}, {11, 9, 2}, {3.5, 7, 1}} {
		if !near3(step.OutToIn(o), a.PatientToVoxel(out.VoxelToPatient(o)), 1e-9) {
			t.Errorf("step and geometry disagree at %v: %v vs %v", o, step.OutToIn(o), a.PatientToVoxel(out.VoxelToPatient(o)))
		}
	}
	if _, _, err := RotateZoom(v, 10, 0, Linear, 0); err == nil {
		t.Error("zero scale accepted")
	}
}
