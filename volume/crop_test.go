package volume

import (
	"testing"
)

// indexVolume fills voxel (i,j,k) with 10000k + 100j + i + 1 (never 0).
func indexVolume(t *testing.T, dims [3]int) *Volume {
	t.Helper()
	v := obliqueVolume(t, dims, [3]float64{0.7, 0.8, 2.5}, nil)
	for k := 0; k < dims[2]; k++ {
		for j := 0; j < dims[1]; j++ {
			for i := 0; i < dims[0]; i++ {
				v.Set(i, j, k, float32(10000*k+100*j+i+1))
			}
		}
	}
	return v
}

func TestCropAndPad(t *testing.T) {
	v := indexVolume(t, [3]int{6, 5, 4})
	out, step, err := Crop(v, [3]int{-1, 2, 1}, [3]int{4, 4, 2}, -7)
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 2; k++ {
		for j := 0; j < 4; j++ {
			for i := 0; i < 4; i++ {
				si, sj, sk := i-1, j+2, k+1
				want := float32(-7)
				if si >= 0 && si < 6 && sj < 5 {
					want = float32(10000*sk + 100*sj + si + 1)
				}
				if got := out.At(i, j, k); got != want {
					t.Fatalf("out(%d,%d,%d) = %v, want %v", i, j, k, got, want)
				}
				// every voxel keeps its patient position
				o := [3]float64{float64(i), float64(j), float64(k)}
				if !near3(out.VoxelToPatient(o), v.VoxelToPatient([3]float64{float64(si), float64(sj), float64(sk)}), 1e-9) {
					t.Fatalf("voxel %v moved", o)
				}
				if step.OutToIn(o) != [3]float64{float64(si), float64(sj), float64(sk)} {
					t.Fatalf("step maps %v to %v", o, step.OutToIn(o))
				}
			}
		}
	}
	// entirely outside: all pad
	far, _, err := Crop(v, [3]int{50, 0, 0}, [3]int{2, 2, 2}, 3)
	if err != nil || far.Voxels[0] != 3 || far.Voxels[7] != 3 {
		t.Errorf("crop outside: %v %v", far.Voxels, err)
	}
	if _, _, err := Crop(v, [3]int{}, [3]int{0, 2, 2}, 0); err == nil {
		t.Error("zero-size crop accepted")
	}
}

func TestCenterCrop(t *testing.T) {
	v := indexVolume(t, [3]int{8, 5, 2})
	cases := []struct {
		name       string
		cols, rows int
		off        [2]int // hand: crop floor((n-m)/2); pad -floor((m-n)/2)
	}{
		{"crop even/odd", 4, 3, [2]int{2, 1}},
		{"crop odd difference", 5, 2, [2]int{1, 1}},
		{"pad", 11, 8, [2]int{-1, -1}},
		{"pad by one puts it after", 9, 6, [2]int{0, 0}},
		{"same", 8, 5, [2]int{0, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, _, err := CenterCrop(v, c.cols, c.rows, -1)
			if err != nil {
				t.Fatal(err)
			}
			if out.Dims != [3]int{c.cols, c.rows, 2} {
				t.Fatalf("dims %v", out.Dims)
			}
			for j := 0; j < c.rows; j++ {
				for i := 0; i < c.cols; i++ {
					si, sj := i+c.off[0], j+c.off[1]
					want := float32(-1)
					if si >= 0 && si < 8 && sj >= 0 && sj < 5 {
						want = float32(10000 + 100*sj + si + 1)
					}
					if got := out.At(i, j, 1); got != want {
						t.Fatalf("out(%d,%d) = %v, want %v", i, j, got, want)
					}
				}
			}
		})
	}
}

func TestCropBox(t *testing.T) {
	v := indexVolume(t, [3]int{6, 5, 4})
	b := Box{Min: [3]int{1, 2, 0}, Max: [3]int{4, 5, 2}}
	out, _, err := CropBox(v, b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Dims != [3]int{3, 3, 2} || out.At(0, 0, 0) != v.At(1, 2, 0) || out.At(2, 2, 1) != v.At(3, 4, 1) {
		t.Errorf("crop box: dims %v", out.Dims)
	}
	if g := b.Grow([3]int{2, 2, 2}, v.Dims); g != (Box{Min: [3]int{0, 0, 0}, Max: [3]int{6, 5, 4}}) {
		t.Errorf("grow = %v", g)
	}
	if g := b.Grow([3]int{1, 0, 1}, v.Dims); g != (Box{Min: [3]int{0, 2, 0}, Max: [3]int{5, 5, 3}}) {
		t.Errorf("grow = %v", g)
	}
	for _, bad := range []Box{{Min: [3]int{0, 0, 0}, Max: [3]int{7, 5, 4}}, {Min: [3]int{2, 0, 0}, Max: [3]int{2, 5, 4}}, {Min: [3]int{-1, 0, 0}, Max: [3]int{2, 2, 2}}} {
		if _, _, err := CropBox(v, bad); err == nil {
			t.Errorf("box %v accepted", bad)
		}
	}
}
