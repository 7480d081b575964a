package volume

import (
	"encoding/json"
	"math"
	"os"
	"testing"
)

// obliqueVolume returns a volume with anisotropic spacing, a non-zero
// origin and oblique (rotated, orthonormal) directions, filled by f of the
// patient position of each voxel.
func obliqueVolume(t *testing.T, dims [3]int, spacing [3]float64, f func(p [3]float64) float64) *Volume {
	t.Helper()
	v := New(dims[0], dims[1], dims[2])
	v.Spacing = spacing
	v.Origin = [3]float64{-121.5, -97.25, 33}
	// rotation by 25° about z, then 10° about x
	a, b := 25*math.Pi/180, 10*math.Pi/180
	rz := [3][3]float64{{math.Cos(a), math.Sin(a), 0}, {-math.Sin(a), math.Cos(a), 0}, {0, 0, 1}}
	for r := 0; r < 3; r++ {
		x, y, z := rz[r][0], rz[r][1], rz[r][2]
		v.Direction[r] = [3]float64{x, y*math.Cos(b) - z*math.Sin(b), y*math.Sin(b) + z*math.Cos(b)}
	}
	if f != nil {
		for k := 0; k < dims[2]; k++ {
			for j := 0; j < dims[1]; j++ {
				for i := 0; i < dims[0]; i++ {
					v.Set(i, j, k, float32(f(v.VoxelToPatient([3]float64{float64(i), float64(j), float64(k)}))))
				}
			}
		}
	}
	return v
}

func near3(a, b [3]float64, tol float64) bool {
	for c := 0; c < 3; c++ {
		if math.Abs(a[c]-b[c]) > tol {
			return false
		}
	}
	return true
}

type torchCase struct {
	Name    string    `json:"name"`
	Mode    string    `json:"mode"`
	InDims  [3]int    `json:"in_dims"`
	OutDims [3]int    `json:"out_dims"`
	Input   []float32 `json:"input"`
	Output  []float32 `json:"output"`
}

// TestResampleMatchesTorch compares ResampleShape/ResizeSlices with
// F.interpolate (align_corners=False; nearest-exact) golden values written by
// testdata/gen_resample_torch.py.
func TestResampleMatchesTorch(t *testing.T) {
	data, err := os.ReadFile("testdata/resample_torch.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Cases []torchCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) < 6 {
		t.Fatalf("golden file has %d cases", len(g.Cases))
	}
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			v := New(c.InDims[0], c.InDims[1], c.InDims[2])
			copy(v.Voxels, c.Input)
			var out *Volume
			var err error
			switch c.Mode {
			case "trilinear":
				out, _, err = ResampleShape(v, c.OutDims, Linear)
			case "nearest":
				out, _, err = ResampleShape(v, c.OutDims, Nearest)
			case "bilinear":
				out, _, err = ResizeSlices(v, c.OutDims[0], c.OutDims[1], Linear)
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.Dims != c.OutDims || len(out.Voxels) != len(c.Output) {
				t.Fatalf("dims %v, want %v", out.Dims, c.OutDims)
			}
			for p, want := range c.Output {
				if math.Abs(float64(out.Voxels[p]-want)) > 2e-4 {
					t.Fatalf("voxel %d: %v, torch %v", p, out.Voxels[p], want)
				}
			}
		})
	}
}

// TestResampleHandTrilinear checks values worked by hand. Trilinear
// interpolation reproduces a multilinear function exactly, so for
// f = i + 2j + 4k + 8ijk on a 2×2×2 grid resampled to 4×4×4
// (align_corners=False: o -> (o+0.5)/2-0.5 = -0.25, 0.25, 0.75, 1.25,
// clamped to [0, 1]) the value is f at the clamped source index.
func TestResampleHandTrilinear(t *testing.T) {
	v := New(2, 2, 2)
	for k := 0; k < 2; k++ {
		for j := 0; j < 2; j++ {
			for i := 0; i < 2; i++ {
				v.Set(i, j, k, float32(i+2*j+4*k+8*i*j*k))
			}
		}
	}
	out, _, err := ResampleShape(v, [3]int{4, 4, 4}, Linear)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		o    [3]int
		want float64
	}{
		{[3]int{1, 2, 1}, 0.25 + 2*0.75 + 4*0.25 + 8*0.25*0.75*0.25}, // 3.125
		{[3]int{0, 3, 2}, 0 + 2 + 4*0.75},                            // 5
		{[3]int{3, 3, 3}, 1 + 2 + 4 + 8},                             // 15
		{[3]int{0, 0, 0}, 0},
		{[3]int{2, 1, 2}, 0.75 + 2*0.25 + 4*0.75 + 8*0.75*0.25*0.75}, // 5.375
	}
	for _, c := range cases {
		if got := float64(out.At(c.o[0], c.o[1], c.o[2])); math.Abs(got-c.want) > 1e-5 {
			t.Errorf("out%v = %v, want %v", c.o, got, c.want)
		}
	}
	// single hot corner: weight 0.25^3 at source (0.25, 0.25, 0.25) from (1,1,1)
	h := New(2, 2, 2)
	h.Set(1, 1, 1, 1)
	hout, _, _ := ResampleShape(h, [3]int{4, 4, 4}, Linear)
	if got := hout.At(1, 1, 1); math.Abs(float64(got)-0.015625) > 1e-7 {
		t.Errorf("hot corner weight %v, want 0.015625", got)
	}
	// nearest, 4 -> 2: sources (o+0.5)*2-0.5 = 0.5, 2.5 round up to 1, 3
	n := New(4, 1, 1)
	copy(n.Voxels, []float32{10, 11, 12, 13})
	nout, _, _ := ResampleShape(n, [3]int{2, 1, 1}, Nearest)
	if nout.Voxels[0] != 11 || nout.Voxels[1] != 13 {
		t.Errorf("nearest 4->2 = %v, want [11 13]", nout.Voxels)
	}
}

// TestResampleSpacingGeometry resamples an oblique, anisotropic volume
// holding a linear function of patient position: every interior output voxel
// must hold that function at its own patient position, the recorded step
// must agree with the geometry, and the grid centre must not move.
func TestResampleSpacingGeometry(t *testing.T) {
	f := func(p [3]float64) float64 { return 0.5*p[0] - 0.25*p[1] + 0.75*p[2] + 10 }
	v := obliqueVolume(t, [3]int{40, 30, 8}, [3]float64{0.7, 0.7, 5}, f)
	for _, interp := range []Interp{Linear, Nearest} {
		out, step, err := ResampleSpacing(v, [3]float64{1.5, 1.5, 2}, interp)
		if err != nil {
			t.Fatal(err)
		}
		// 40·0.7/1.5 = 18.67 -> 19, 30·0.7/1.5 = 14, 8·5/2 = 20
		if out.Dims != [3]int{19, 14, 20} || out.Spacing != [3]float64{1.5, 1.5, 2} {
			t.Fatalf("dims %v spacing %v", out.Dims, out.Spacing)
		}
		if c0, c1 := v.VoxelToPatient(v.CenterVoxel()), out.VoxelToPatient(out.CenterVoxel()); !near3(c0, c1, 1e-9) {
			t.Errorf("centre moved: %v -> %v", c0, c1)
		}
		checked := 0
		for k := 0; k < out.Dims[2]; k++ {
			for j := 0; j < out.Dims[1]; j++ {
				for i := 0; i < out.Dims[0]; i++ {
					o := [3]float64{float64(i), float64(j), float64(k)}
					p := out.VoxelToPatient(o)
					src := step.OutToIn(o)
					if !near3(src, v.PatientToVoxel(p), 1e-9) {
						t.Fatalf("step maps %v to %v, geometry to %v", o, src, v.PatientToVoxel(p))
					}
					inside := true
					for a := 0; a < 3; a++ {
						inside = inside && src[a] >= 0 && src[a] <= float64(v.Dims[a]-1)
					}
					if !inside || interp == Nearest {
						continue
					}
					if got := float64(out.At(i, j, k)); math.Abs(got-f(p)) > 1e-3 {
						t.Fatalf("out%v = %v, f(patient) = %v", o, got, f(p))
					}
					checked++
				}
			}
		}
		if interp == Linear && checked < 1000 {
			t.Errorf("only %d interior voxels checked", checked)
		}
		if interp == Nearest {
			// nearest copies the value of the closest input voxel
			src := step.OutToIn([3]float64{7, 5, 9})
			want := v.At(int(math.Floor(src[0]+0.5)), int(math.Floor(src[1]+0.5)), int(math.Floor(src[2]+0.5)))
			if got := out.At(7, 5, 9); got != want {
				t.Errorf("nearest out(7,5,9) = %v, want %v", got, want)
			}
		}
	}
}

// TestResampleShapeExtent checks that ResampleShape keeps the physical
// extent: the outer corner (-0.5, -0.5, -0.5) and (n-0.5, ...) of both grids
// coincide, and spacing is s·n/m.
func TestResampleShapeExtent(t *testing.T) {
	v := obliqueVolume(t, [3]int{20, 16, 10}, [3]float64{0.8, 0.9, 3}, nil)
	out, _, err := ResampleShape(v, [3]int{7, 32, 4}, Linear)
	if err != nil {
		t.Fatal(err)
	}
	want := [3]float64{0.8 * 20 / 7, 0.9 * 16 / 32, 3 * 10.0 / 4}
	if !near3(out.Spacing, want, 1e-12) {
		t.Errorf("spacing %v, want %v", out.Spacing, want)
	}
	lo := [3]float64{-0.5, -0.5, -0.5}
	if a, b := v.VoxelToPatient(lo), out.VoxelToPatient(lo); !near3(a, b, 1e-9) {
		t.Errorf("low corner %v vs %v", a, b)
	}
	hiV := [3]float64{19.5, 15.5, 9.5}
	hiO := [3]float64{6.5, 31.5, 3.5}
	if a, b := v.VoxelToPatient(hiV), out.VoxelToPatient(hiO); !near3(a, b, 1e-9) {
		t.Errorf("high corner %v vs %v", a, b)
	}
	if out.Direction != v.Direction {
		t.Errorf("direction changed")
	}
}

func TestResampleErrors(t *testing.T) {
	v := New(4, 4, 4)
	if _, _, err := ResampleSpacing(v, [3]float64{1, 0, 1}, Linear); err == nil {
		t.Error("zero spacing accepted")
	}
	if _, _, err := ResampleSpacing(v, [3]float64{1e-9, 1e-9, 1e-9}, Linear); err == nil {
		t.Error("huge result accepted")
	}
	if _, _, err := ResampleShape(v, [3]int{4, -1, 4}, Linear); err == nil {
		t.Error("negative dims accepted")
	}
	if _, _, err := ResampleShape(v, [3]int{4, 4, 4}, Interp(7)); err == nil {
		t.Error("unknown interpolation accepted")
	}
	bad := &Volume{Dims: [3]int{2, 2, 2}, Spacing: [3]float64{1, 1, 1}, Voxels: make([]float32, 3)}
	if _, _, err := ResizeSlices(bad, 4, 4, Linear); err == nil {
		t.Error("inconsistent volume accepted")
	}
	if _, _, err := ResizeSlices(nil, 4, 4, Linear); err == nil {
		t.Error("nil volume accepted")
	}
	if _, err := ParseInterp("cubic"); err == nil {
		t.Error("cubic accepted")
	}
}
