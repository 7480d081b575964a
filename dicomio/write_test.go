package dicomio

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ctlens/ctlens/volume"
)

// python returns /usr/bin/python3 when it can import the given modules. In
// CI (CTLENS_CI set) their absence fails the test; elsewhere it skips.
func python(t *testing.T, modules ...string) string {
	t.Helper()
	py := "/usr/bin/python3"
	args := []string{"-c", "import " + joinComma(modules)}
	if err := exec.Command(py, args...).Run(); err != nil {
		if os.Getenv("CTLENS_CI") != "" {
			t.Fatalf("CTLENS_CI is set but %s cannot import %v: %v", py, modules, err)
		}
		t.Skipf("%s cannot import %v (set CTLENS_CI to require it)", py, modules)
	}
	return py
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ", "
		}
		out += x
	}
	return out
}

// obliquePhantom returns a small phantom whose geometry is rotated about the
// z axis and shifted, so that every affine term is exercised.
func obliquePhantom(t *testing.T, c volume.PhantomClass) *volume.Phantom {
	t.Helper()
	p, err := volume.NewPhantom(volume.PhantomOptions{Class: c, Seed: 5, Cols: 40, Rows: 36, Slices: 12, SliceSpacing: 2.5, PixelSpacing: 6.5})
	if err != nil {
		t.Fatal(err)
	}
	th := 0.3
	dir := [3][3]float64{{math.Cos(th), math.Sin(th), 0}, {-math.Sin(th) * math.Cos(0.2), math.Cos(th) * math.Cos(0.2), math.Sin(0.2)}}
	// k = i × j keeps a right-handed frame.
	dir[2] = [3]float64{
		dir[0][1]*dir[1][2] - dir[0][2]*dir[1][1],
		dir[0][2]*dir[1][0] - dir[0][0]*dir[1][2],
		dir[0][0]*dir[1][1] - dir[0][1]*dir[1][0],
	}
	for _, v := range []*volume.Volume{p.CT, p.Lesion} {
		v.Direction = dir
		v.Origin = [3]float64{-101.25, 37.5, -412.5}
	}
	return p
}

func TestWriteSeriesReadsBackInPydicomAndNibabel(t *testing.T) {
	py := python(t, "pydicom", "nibabel", "numpy")
	for _, c := range []volume.PhantomClass{volume.NCP, volume.CP} {
		dir := t.TempDir()
		p := obliquePhantom(t, c)
		if _, err := WriteSeries(filepath.Join(dir, "series"), p.CT, WriteOptions{Seed: 1, SeriesDescription: "phantom"}); err != nil {
			t.Fatal(err)
		}
		if err := WriteNIfTI(filepath.Join(dir, "ct.nii.gz"), p.CT, NIfTIInt16); err != nil {
			t.Fatal(err)
		}
		if err := WriteNIfTI(filepath.Join(dir, "lesion.nii.gz"), p.Lesion, NIfTIUint8); err != nil {
			t.Fatal(err)
		}
		raw := make([]byte, 4*len(p.CT.Voxels))
		for i, x := range p.CT.Voxels {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
		}
		if err := os.WriteFile(filepath.Join(dir, "voxels.f32"), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		geom, _ := json.Marshal(map[string]any{"dims": p.CT.Dims, "spacing": p.CT.Spacing, "origin": p.CT.Origin, "direction": p.CT.Direction})
		if err := os.WriteFile(filepath.Join(dir, "geometry.json"), geom, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(py, "../testdata/phantom/check_roundtrip.py", "check", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: independent check failed: %v\n%s", c, err, out)
		}
	}
}

func TestNIfTIRoundTrip(t *testing.T) {
	p := obliquePhantom(t, volume.NCP)
	for _, dt := range []int{NIfTIFloat32, NIfTIInt16} {
		path := filepath.Join(t.TempDir(), "v.nii")
		if err := WriteNIfTI(path, p.CT, dt); err != nil {
			t.Fatal(err)
		}
		v, err := ReadNIfTI(path, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if v.Dims != p.CT.Dims {
			t.Fatalf("dims %v, want %v", v.Dims, p.CT.Dims)
		}
		for i := range v.Voxels {
			if v.Voxels[i] != p.CT.Voxels[i] {
				t.Fatalf("voxel %d: %v, want %v", i, v.Voxels[i], p.CT.Voxels[i])
			}
		}
		for a := 0; a < 3; a++ {
			if math.Abs(v.Spacing[a]-p.CT.Spacing[a]) > 1e-4 || math.Abs(v.Origin[a]-p.CT.Origin[a]) > 1e-3 {
				t.Errorf("axis %d: spacing %v origin %v, want %v %v", a, v.Spacing[a], v.Origin[a], p.CT.Spacing[a], p.CT.Origin[a])
			}
			for c := 0; c < 3; c++ {
				if math.Abs(v.Direction[a][c]-p.CT.Direction[a][c]) > 1e-5 {
					t.Errorf("direction[%d] %v, want %v", a, v.Direction[a], p.CT.Direction[a])
				}
			}
		}
	}
}

func TestWriteRejectsOutOfRange(t *testing.T) {
	v := volume.New(4, 4, 2)
	v.Voxels[3] = 1e6
	if _, err := WriteSeries(t.TempDir(), v, WriteOptions{}); err == nil {
		t.Error("WriteSeries: no error for a value beyond int16")
	}
	if err := WriteNIfTI(filepath.Join(t.TempDir(), "x.nii"), v, NIfTIInt16); err == nil {
		t.Error("WriteNIfTI: no error for a value beyond int16")
	}
}

// TestReadNIfTIMatchesNibabel reads every 3-D NIfTI file shipped with
// nibabel's tests and compares voxels and affine with nibabel's.
func TestReadNIfTIMatchesNibabel(t *testing.T) {
	py := python(t, "nibabel", "numpy")
	out := t.TempDir()
	if b, err := exec.Command(py, "../testdata/phantom/check_roundtrip.py", "dump", out).CombinedOutput(); err != nil {
		t.Fatalf("dump: %v\n%s", err, b)
	}
	var index []struct {
		File, Name string
		Shape      []int
		Affine     [4][4]float64
	}
	b, err := os.ReadFile(filepath.Join(out, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &index); err != nil {
		t.Fatal(err)
	}
	if len(index) < 3 {
		t.Fatalf("only %d NIfTI files from nibabel", len(index))
	}
	for _, e := range index {
		v, err := ReadNIfTI(e.File, Limits{})
		if err != nil {
			t.Errorf("%s: %v", e.Name, err)
			continue
		}
		raw, _ := os.ReadFile(filepath.Join(out, e.Name+".f64"))
		if len(raw) != 8*len(v.Voxels) {
			t.Errorf("%s: %d voxels, nibabel has %d", e.Name, len(v.Voxels), len(raw)/8)
			continue
		}
		for i := range v.Voxels {
			w := math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
			if math.Abs(float64(v.Voxels[i])-w) > 1e-5*math.Max(1, math.Abs(w)) {
				t.Errorf("%s: voxel %d = %v, nibabel %v", e.Name, i, v.Voxels[i], w)
				break
			}
		}
		// nibabel's affine is RAS: compare with ours converted from LPS.
		for r := 0; r < 3; r++ {
			sgn := 1.0
			if r < 2 {
				sgn = -1
			}
			for a := 0; a < 3; a++ {
				got := sgn * v.Direction[a][r] * v.Spacing[a]
				if math.Abs(got-e.Affine[r][a]) > 1e-4 {
					t.Errorf("%s: affine[%d][%d] = %v, nibabel %v", e.Name, r, a, got, e.Affine[r][a])
				}
			}
			if got := sgn * v.Origin[r]; math.Abs(got-e.Affine[r][3]) > 1e-3 {
				t.Errorf("%s: affine[%d][3] = %v, nibabel %v", e.Name, r, got, e.Affine[r][3])
			}
		}
	}
}
