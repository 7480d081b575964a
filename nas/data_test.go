package nas

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/train"
	"github.com/ctlens/ctlens/volume"
)

// TestOpenDataRefuses: the search checks its data as training does, and
// refuses healthy twins, which its phantom list does not draw.
func TestOpenDataRefuses(t *testing.T) {
	for _, tc := range []struct {
		d    train.DataSource
		want string
	}{
		{train.DataSource{}, "set exactly one of folder, layout and phantoms (have 0)"},
		{train.DataSource{Phantoms: 3, PhantomCols: 2000}, "phantom_cols 2000 outside 0..1024"},
		{train.DataSource{Phantoms: 3, PhantomTwins: true}, "phantom_twins is not supported by the search"},
	} {
		if _, err := OpenData(tc.d); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want it to contain %q", tc.d, err, tc.want)
		}
	}
	ds, err := OpenData(train.DataSource{Phantoms: 3, PhantomCols: 16, PhantomSlices: 4})
	if err != nil || len(ds.Items) != 3 {
		t.Fatalf("3 phantoms: %v, %v", ds, err)
	}
}

// TestOpenDataFolder lists a folder-per-class dataset as training does:
// every scan with its class, the lesion masks ctlens synth writes beside
// the scans not reported as skipped, and each scan loadable.
func TestOpenDataFolder(t *testing.T) {
	root := t.TempDir()
	for i, c := range []volume.PhantomClass{volume.CP, volume.NCP, volume.Normal} {
		p, err := volume.NewPhantom(volume.PhantomOptions{Class: c, Seed: uint64(i + 1), Cols: 16, Slices: 6})
		if err != nil {
			t.Fatal(err)
		}
		scan := filepath.Join(root, c.String(), "s.nii.gz")
		if err := dicomio.WriteNIfTI(scan, p.CT, dicomio.NIfTIInt16); err != nil {
			t.Fatal(err)
		}
		if err := dicomio.WriteNIfTI(train.LesionPath(scan), p.Lesion, dicomio.NIfTIInt16); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := OpenData(train.DataSource{Folder: root})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Items) != 3 || len(ds.Skipped) != 0 || strings.Join(ds.Classes, ",") != "CP,NCP,Normal" {
		t.Fatalf("items %d, skipped %v, classes %v", len(ds.Items), ds.Skipped, ds.Classes)
	}
	for _, it := range ds.Items {
		v, err := it.Load()
		if err != nil {
			t.Fatalf("%s: %v", it.Name, err)
		}
		if v.Dims != [3]int{16, 16, 6} || ds.Classes[it.Label] != filepath.Base(filepath.Dir(it.Name)) {
			t.Errorf("%s (label %d): dims %v", it.Name, it.Label, v.Dims)
		}
	}
}
