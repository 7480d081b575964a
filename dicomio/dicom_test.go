package dicomio

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// pydicomTestFiles is Debian python3-pydicom's test data folder.
const pydicomTestFiles = "/usr/lib/python3/dist-packages/pydicom/data/test_files"

// pythonPath is the Debian interpreter that has pydicom and numpy.
const pythonPath = "/usr/bin/python3"

// inCI reports whether CTLENS_CI is set: then missing tools fail tests.
func inCI() bool { return os.Getenv("CTLENS_CI") != "" }

// needTool returns the path of an external program, skipping the test
// when it is missing outside CI and failing it in CI.
func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if inCI() {
			t.Fatalf("CTLENS_CI is set but %s is missing: %v (install dcmtk / libgdcm-tools)", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// pydicomErr is the result of importing pydicom and numpy, checked once
// per test binary (a Python start costs seconds on a busy machine).
var pydicomErr = sync.OnceValue(func() error {
	return exec.Command(pythonPath, "-c", "import pydicom, numpy").Run()
})

// needPydicom checks that /usr/bin/python3 imports pydicom and numpy.
func needPydicom(t testing.TB) {
	t.Helper()
	if err := pydicomErr(); err != nil {
		if inCI() {
			t.Fatalf("CTLENS_CI is set but %s cannot import pydicom and numpy: %v (install python3-pydicom python3-numpy)", pythonPath, err)
		}
		t.Skipf("pydicom/numpy not available: %v", err)
	}
}

// needDir returns dir, skipping (outside CI) when it does not exist.
func needDir(t testing.TB, dir string) string {
	t.Helper()
	if _, err := os.Stat(dir); err != nil {
		if inCI() {
			t.Fatalf("CTLENS_CI is set but %s is missing: %v", dir, err)
		}
		t.Skipf("%s missing", dir)
	}
	return dir
}

// scriptPath returns the path of a script in testdata/dicom.
func scriptPath(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "dicom", name)
}

// run runs a command and fails the test with its output on error.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// refPixels is one file's pixels as dumped by pydicom_pixels.py.
type refPixels struct {
	File       string    `json:"file"`
	OK         bool      `json:"ok"`
	Error      string    `json:"error"`
	TS         string    `json:"ts"`
	Compressed bool      `json:"compressed"`
	Reference  string    `json:"reference"`
	Shape      []int     `json:"shape"`
	Slope      float64   `json:"slope"`
	Intercept  float64   `json:"intercept"`
	Modality   string    `json:"modality"`
	Values     []int64   `json:"-"`
	_          [0]func() // not comparable
}

// pydicomPixels runs pydicom_pixels.py on files and returns the reference
// pixels, keyed by file path.
func pydicomPixels(t testing.TB, files []string) map[string]*refPixels {
	t.Helper()
	needPydicom(t)
	gdcm := needTool(t, "gdcmconv")
	out := t.TempDir()
	args := append([]string{scriptPath("pydicom_pixels.py"), "--gdcmconv", gdcm, out}, files...)
	cmd := exec.Command(pythonPath, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pydicom_pixels.py: %v\n%s", err, b)
	}
	refs := map[string]*refPixels{}
	for i, f := range files {
		b, err := os.ReadFile(filepath.Join(out, strconv.Itoa(i)+".json"))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		r := &refPixels{}
		if err := json.Unmarshal(b, r); err != nil {
			t.Fatal(err)
		}
		if r.OK {
			raw, err := os.ReadFile(filepath.Join(out, strconv.Itoa(i)+".bin"))
			if err != nil {
				t.Fatal(err)
			}
			r.Values = make([]int64, len(raw)/8)
			for k := range r.Values {
				r.Values[k] = int64(binary.LittleEndian.Uint64(raw[8*k:]))
			}
		}
		refs[f] = r
	}
	return refs
}

// compareStored compares decoded stored values with a reference; tol is
// the largest accepted absolute difference (0 for lossless).
func compareStored(got, want []int64, tol int64) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d values, reference has %d", len(got), len(want))
	}
	bad, worst, at := 0, int64(0), -1
	for i := range got {
		d := got[i] - want[i]
		if d < 0 {
			d = -d
		}
		if d > tol {
			bad++
			if d > worst {
				worst, at = d, i
			}
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d values differ by more than %d (worst %d at %d: got %d, want %d)", bad, len(got), tol, worst, at, got[at], want[at])
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}
