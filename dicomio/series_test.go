package dicomio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sliceSpec and seriesSpec mirror make_series.py's JSON spec.
type sliceSpec struct {
	File  string     `json:"file"`
	IPP   []float64  `json:"ipp"`
	Num   *int       `json:"num"`
	Value int        `json:"value"`
	Rows  int        `json:"rows,omitempty"`
	Cols  int        `json:"cols,omitempty"`
	IOP   *[]float64 `json:"iop,omitempty"`
}

type seriesSpec struct {
	UID       string     `json:"uid"`
	Rows      int        `json:"rows"`
	Cols      int        `json:"cols"`
	IOP       []float64  `json:"iop"`
	Spacing   [2]float64 `json:"spacing"`
	Slope     float64    `json:"slope"`
	Intercept float64    `json:"intercept"`
	Modality  string     `json:"modality,omitempty"`
	Syntax    string     `json:"syntax,omitempty"`
	Padding   *int       `json:"padding,omitempty"`
	Random    *int       `json:"random,omitempty"`
	Enhanced  bool       `json:"enhanced,omitempty"`
	// Dir is the sub-folder of the output folder that gets the files.
	Dir    string      `json:"dir,omitempty"`
	Slices []sliceSpec `json:"slices"`
}

// makeSeries writes the series with make_series.py (pydicom) into dir.
func makeSeries(t testing.TB, dir string, series ...seriesSpec) {
	t.Helper()
	needPydicom(t)
	spec, err := json.Marshal(map[string]any{"series": series})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(f, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(pythonPath, scriptPath("make_series.py"), f, dir).CombinedOutput(); err != nil {
		t.Fatalf("make_series.py: %v\n%s", err, out)
	}
}

func intp(i int) *int { return &i }

// stack returns a series of n slices along the normal of iop, spaced dz,
// starting at origin, with slice k's value 100*k and InstanceNumber k+1.
func stack(uid string, n int, iop []float64, origin [3]float64, dz float64) seriesSpec {
	var o [6]float64
	copy(o[:], iop)
	nrm := normal(o)
	s := seriesSpec{UID: uid, Rows: 6, Cols: 5, IOP: iop, Spacing: [2]float64{0.7, 0.8}, Slope: 1, Intercept: -1024}
	for k := 0; k < n; k++ {
		p := []float64{origin[0] + float64(k)*dz*nrm[0], origin[1] + float64(k)*dz*nrm[1], origin[2] + float64(k)*dz*nrm[2]}
		s.Slices = append(s.Slices, sliceSpec{File: fmt.Sprintf("%s_%03d.dcm", uid, k), IPP: p, Num: intp(k + 1), Value: 100 * k})
	}
	return s
}

// checkVolume checks a loaded volume against the stack formula: slice k
// (in ascending position) holds value 100*order[k] + (j*cols+i)%7 + intercept.
func checkVolume(t *testing.T, ctx context.Context, s *Series, order []int, wantOrigin [3]float64, wantDir [3][3]float64, wantSpacing [3]float64) {
	t.Helper()
	v, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Dims != [3]int{5, 6, len(order)} {
		t.Fatalf("dims %v", v.Dims)
	}
	for a := 0; a < 3; a++ {
		if math.Abs(v.Spacing[a]-wantSpacing[a]) > 1e-6 || math.Abs(v.Origin[a]-wantOrigin[a]) > 1e-5 {
			t.Fatalf("spacing %v origin %v, want %v %v", v.Spacing, v.Origin, wantSpacing, wantOrigin)
		}
		for c := 0; c < 3; c++ {
			if math.Abs(v.Direction[a][c]-wantDir[a][c]) > 1e-6 {
				t.Fatalf("direction %v, want %v", v.Direction, wantDir)
			}
		}
	}
	for k, src := range order {
		for j := 0; j < 6; j++ {
			for i := 0; i < 5; i++ {
				want := float32(100*src + (j*5+i)%7 - 1024)
				if got := v.At(i, j, k); got != want {
					t.Fatalf("voxel (%d,%d,%d) = %v, want %v", i, j, k, got, want)
				}
			}
		}
	}
	if err := v.Validate(); err != nil {
		t.Fatal(err)
	}
}

var axial = []float64{1, 0, 0, 0, 1, 0}

// orderingCase is one subtest of TestSeriesOrdering: the series it
// writes and the checks on the folder holding them.
type orderingCase struct {
	name  string
	specs []seriesSpec
	check func(t *testing.T, dir string)
}

func TestSeriesOrdering(t *testing.T) {
	needPydicom(t)
	ctx := context.Background()
	identity := [3][3]float64{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}
	discover := func(t *testing.T, dir string) *Discovery {
		t.Helper()
		d, err := Discover(dir, Limits{})
		if err != nil || len(d.Series) != 1 {
			t.Fatalf("%v %v (skipped %v)", d, err, d.Skipped)
		}
		return d
	}
	var cases []orderingCase

	{
		s := stack("1.2.3.1", 12, axial, [3]float64{-10, 20, -50}, 2.5)
		// shuffle file names and instance numbers: only positions order them
		rng := rand.New(rand.NewSource(1))
		perm := rng.Perm(len(s.Slices))
		for k := range s.Slices {
			s.Slices[k].File = fmt.Sprintf("IM%03d", perm[k])
			s.Slices[k].Num = intp(perm[k])
		}
		cases = append(cases, orderingCase{"shuffled", []seriesSpec{s}, func(t *testing.T, dir string) {
			order := make([]int, 12)
			for k := range order {
				order[k] = k
			}
			d := discover(t, dir)
			checkVolume(t, ctx, d.Series[0], order, [3]float64{-10, 20, -50}, identity, [3]float64{0.8, 0.7, 2.5})
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if v, err := d.Series[0].Load(cctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("Load with a cancelled context: %v, %v", v, err)
			}
		}})
	}

	// InstanceNumber increases head to feet: z decreases.
	cases = append(cases, orderingCase{"descending positions", []seriesSpec{stack("1.2.3.2", 8, axial, [3]float64{0, 0, 100}, -1.25)}, func(t *testing.T, dir string) {
		order := []int{7, 6, 5, 4, 3, 2, 1, 0}
		checkVolume(t, ctx, discover(t, dir).Series[0], order, [3]float64{0, 0, 100 - 7*1.25}, identity, [3]float64{0.8, 0.7, 1.25})
	}})

	{
		a := 30 * math.Pi / 180
		// rows along (cos a, sin a, 0), columns along -z: an oblique
		// coronal-like plane; normal = row x col computed by hand:
		// (sin a * -1 - 0, 0 - cos a * -1, 0) = (-sin a, cos a, 0).
		iop := []float64{math.Cos(a), math.Sin(a), 0, 0, 0, -1}
		n := [3]float64{-math.Sin(a), math.Cos(a), 0}
		s := stack("1.2.3.3", 5, iop, [3]float64{1, 2, 3}, 3)
		// reverse the file order
		for i, j := 0, len(s.Slices)-1; i < j; i, j = i+1, j-1 {
			s.Slices[i].File, s.Slices[j].File = s.Slices[j].File, s.Slices[i].File
		}
		cases = append(cases, orderingCase{"oblique", []seriesSpec{s}, func(t *testing.T, dir string) {
			dir3 := [3][3]float64{{math.Cos(a), math.Sin(a), 0}, {0, 0, -1}, n}
			checkVolume(t, ctx, discover(t, dir).Series[0], []int{0, 1, 2, 3, 4}, [3]float64{1, 2, 3}, dir3, [3]float64{0.8, 0.7, 3})
		}})
	}

	{
		s := stack("1.2.3.4", 6, axial, [3]float64{0, 0, 0}, 2)
		dup := s.Slices[3]
		dup.File, dup.Num = "dup.dcm", intp(99)
		s.Slices = append(s.Slices, dup)
		cases = append(cases, orderingCase{"duplicate kept once", []seriesSpec{s}, func(t *testing.T, dir string) {
			d := discover(t, dir)
			checkVolume(t, ctx, d.Series[0], []int{0, 1, 2, 3, 4, 5}, [3]float64{}, identity, [3]float64{0.8, 0.7, 2})
			if w := strings.Join(d.Series[0].Warnings, "\n"); !strings.Contains(w, "duplicate slice") || !strings.Contains(w, "dup.dcm") {
				t.Fatalf("warnings %q lack the duplicate", w)
			}
		}})
	}

	{
		s := stack("1.2.3.5", 8, axial, [3]float64{}, 2)
		s.Slices = append(s.Slices[:4], s.Slices[5:]...)
		cases = append(cases, orderingCase{"gap", []seriesSpec{s}, func(t *testing.T, dir string) {
			d := discover(t, dir)
			_, err := d.Series[0].Load(ctx)
			var ge *GeometryError
			if !errors.As(err, &ge) || !strings.Contains(err.Error(), "gap of 4 mm") {
				t.Fatalf("error %v, want a gap GeometryError", err)
			}
			d.Series[0].AllowIrregular = true
			v, err := d.Series[0].Load(ctx)
			if err != nil || v.Dims[2] != 7 || v.Spacing[2] != 2 {
				t.Fatalf("AllowIrregular: %v %v", v, err)
			}
		}})
	}

	{
		s := stack("1.2.3.6", 6, axial, [3]float64{}, 2)
		s.Slices[2].IPP[2] += 0.3
		cases = append(cases, orderingCase{"non-uniform", []seriesSpec{s}, func(t *testing.T, dir string) {
			_, err := discover(t, dir).Series[0].Load(ctx)
			if err == nil || !strings.Contains(err.Error(), "non-uniform slice spacing") {
				t.Fatalf("error %v, want non-uniform spacing", err)
			}
		}})
	}

	{
		s := stack("1.2.3.7", 4, axial, [3]float64{}, 2)
		other := []float64{1, 0, 0, 0, 0, -1}
		s.Slices[1].IOP = &other
		cases = append(cases, orderingCase{"mixed orientation", []seriesSpec{s}, func(t *testing.T, dir string) {
			_, err := discover(t, dir).Series[0].Load(ctx)
			if err == nil || !strings.Contains(err.Error(), "mixed orientation") {
				t.Fatalf("error %v, want mixed orientation", err)
			}
		}})
	}

	{
		s := stack("1.2.3.8", 4, axial, [3]float64{}, 2)
		s.Slices[2].Rows = 7
		cases = append(cases, orderingCase{"mixed sizes", []seriesSpec{s}, func(t *testing.T, dir string) {
			_, err := discover(t, dir).Series[0].Load(ctx)
			if err == nil || !strings.Contains(err.Error(), "mixed image sizes") {
				t.Fatalf("error %v, want mixed sizes", err)
			}
		}})
	}

	{
		s := stack("1.2.3.9", 5, axial, [3]float64{}, 2)
		nums := []int{3, 1, 5, 2, 4}
		for k := range s.Slices {
			s.Slices[k].IPP = nil
			s.Slices[k].Num = intp(nums[k])
		}
		cases = append(cases, orderingCase{"no positions: InstanceNumber", []seriesSpec{s}, func(t *testing.T, dir string) {
			g, err := discover(t, dir).Series[0].Geometry()
			if err != nil {
				t.Fatal(err)
			}
			// ordered by InstanceNumber: slice with num 1 (k=1) first, ...
			want := []int{1, 3, 0, 4, 2}
			for k, r := range g.Slices {
				if r.Instance.InstanceNumber != nums[want[k]] {
					t.Fatalf("slice %d has InstanceNumber %d, want %d", k, r.Instance.InstanceNumber, nums[want[k]])
				}
			}
			if !strings.Contains(strings.Join(g.Warnings, "\n"), "ordered by InstanceNumber") {
				t.Fatalf("warnings %q", g.Warnings)
			}
			// spacing falls back to SliceThickness (1 mm from make_series.py)
			if g.Spacing[2] != 1 {
				t.Fatalf("spacing %v", g.Spacing)
			}
		}})
	}

	{
		s := stack("1.2.3.10", 6, axial, [3]float64{5, 6, 7}, 1.5)
		s.Enhanced = true
		// frames stored in shuffled order
		perm := []int{3, 0, 5, 1, 4, 2}
		sl := make([]sliceSpec, len(perm))
		for i, p := range perm {
			sl[i] = s.Slices[p]
		}
		s.Slices = sl
		cases = append(cases, orderingCase{"enhanced multi-frame", []seriesSpec{s}, func(t *testing.T, dir string) {
			checkVolume(t, ctx, discover(t, dir).Series[0], []int{0, 1, 2, 3, 4, 5}, [3]float64{5, 6, 7}, identity, [3]float64{0.8, 0.7, 1.5})
		}})
	}

	for _, syn := range []string{"bigendian", "implicit"} {
		s := stack("1.2.3.11", 4, axial, [3]float64{}, 2)
		s.Syntax = syn
		cases = append(cases, orderingCase{syn, []seriesSpec{s}, func(t *testing.T, dir string) {
			checkVolume(t, ctx, discover(t, dir).Series[0], []int{0, 1, 2, 3}, [3]float64{}, identity, [3]float64{0.8, 0.7, 2})
		}})
	}

	{
		s := stack("1.2.3.12", 3, axial, [3]float64{}, 2)
		s.Padding = intp(-2000)
		cases = append(cases, orderingCase{"padding", []seriesSpec{s}, func(t *testing.T, dir string) {
			v, err := discover(t, dir).Series[0].Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for k := 0; k < 3; k++ {
				for i := 0; i < 5; i++ {
					if got := v.At(i, 0, k); got != PaddingHU {
						t.Fatalf("padded voxel (%d,0,%d) = %v, want %v", i, k, got, float32(PaddingHU))
					}
				}
				if got, want := v.At(2, 1, k), float32(100*k+(5+2)%7-1024); got != want {
					t.Fatalf("voxel (2,1,%d) = %v, want %v", k, got, want)
				}
			}
		}})
	}

	// One make_series.py run writes every case's series, each into its
	// own folder (a Python start costs seconds on a busy machine).
	root := t.TempDir()
	var all []seriesSpec
	for i, c := range cases {
		for _, s := range c.specs {
			s.Dir = fmt.Sprintf("case%02d", i)
			all = append(all, s)
		}
	}
	makeSeries(t, root, all...)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.check(t, filepath.Join(root, fmt.Sprintf("case%02d", i))) })
	}
}

// TestDiscoverMixedFolder puts two CT series, an MR series, pydicom's SR,
// RT structure set and DICOMDIR-like objects and a text file in one folder
// tree (and in a zip of it) and checks what is kept and skipped.
func TestDiscoverMixedFolder(t *testing.T) {
	needPydicom(t)
	dir := t.TempDir()
	a := stack("1.2.4.1", 10, axial, [3]float64{}, 1)
	b := stack("1.2.4.2", 4, axial, [3]float64{}, 3)
	mr := stack("1.2.4.3", 3, axial, [3]float64{}, 3)
	mr.Modality = "MR"
	mr.Dir = "sub"
	makeSeries(t, dir, a, b, mr)
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not dicom at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	if pd, err := os.Stat(pydicomTestFiles); err == nil && pd.IsDir() {
		for _, f := range []string{"test-SR.dcm", "rtstruct.dcm"} {
			b, err := os.ReadFile(filepath.Join(pydicomTestFiles, f))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, "sub", f), b, 0o644)
		}
	}
	check := func(t *testing.T, d *Discovery, all bool) {
		t.Helper()
		want := 2
		if all {
			want = 3
		}
		if len(d.Series) != want {
			t.Fatalf("%d series, want %d", len(d.Series), want)
		}
		if d.Series[0].UID != "1.2.4.1" || d.Series[0].NumSlices() != 10 {
			t.Fatalf("largest series %s with %d slices", d.Series[0].UID, d.Series[0].NumSlices())
		}
		reasons := ""
		for _, s := range d.Skipped {
			reasons += filepath.Base(s.Path) + ": " + s.Reason + "\n"
		}
		for _, w := range []string{"notes.txt: not DICOM", "test-SR.dcm: no image pixel data", "rtstruct.dcm: no image pixel data"} {
			if _, err := os.Stat(pydicomTestFiles); err != nil && strings.Contains(w, ".dcm") {
				continue
			}
			if !strings.Contains(reasons, w) {
				t.Fatalf("skipped list lacks %q:\n%s", w, reasons)
			}
		}
		if !all && !strings.Contains(reasons, `modality "MR"`) {
			t.Fatalf("MR series not reported:\n%s", reasons)
		}
	}
	d, err := Discover(dir, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	check(t, d, false)
	d, err = DiscoverWith(dir, Limits{}, Options{AllModalities: true})
	if err != nil {
		t.Fatal(err)
	}
	check(t, d, true)

	// The same tree in a zip archive.
	zp := filepath.Join(t.TempDir(), "study.zip")
	zipDir(t, dir, zp)
	dz, err := Discover(zp, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer dz.Close()
	check(t, dz, false)
	v, s, err := LoadVolume(zp, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if s.UID != "1.2.4.1" || v.Dims != [3]int{5, 6, 10} || v.At(1, 2, 9) != float32(900+(2*5+1)%7-1024) {
		t.Fatalf("zip LoadVolume: series %s dims %v", s.UID, v.Dims)
	}
}

// TestSmallBenchSeries checks, at small size, the random series that
// BenchmarkLoadSeries uses: pydicom's bench reader and dicomio agree on
// the voxel sum.
func TestSmallBenchSeries(t *testing.T) {
	dir := t.TempDir()
	writeBenchSeries(t, dir, 5, 32)
	v, _, err := LoadVolume(dir, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, x := range v.Voxels {
		sum += float64(x)
	}
	res := runBenchPydicom(t, dir, 1)
	if res.Shape != [3]int{5, 32, 32} || math.Abs(res.Sum-sum) > 1e-6*math.Abs(sum)+1e-3 {
		t.Fatalf("pydicom shape %v sum %v; dicomio dims %v sum %v", res.Shape, res.Sum, v.Dims, sum)
	}
	// pydicom's first slice (lowest z) equals volume slice 0
	if res.First != float64(v.At(0, 0, 0)) || res.Last != float64(v.At(31, 31, 4)) {
		t.Fatalf("pydicom corners %v %v, dicomio %v %v", res.First, res.Last, v.At(0, 0, 0), v.At(31, 31, 4))
	}
}
