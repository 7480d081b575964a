package dicomio

import (
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"golang.org/x/image/tiff"

	"github.com/ctlens/ctlens/volume"
)

func TestNaturalLess(t *testing.T) {
	in := []string{"IM10.png", "IM2.png", "IM1.png", "a", "IM02.png", "IM1a.png", "10", "9", "b1"}
	// Digits sort before letters by value: "9" < "10".
	want := []string{"9", "10", "IM1.png", "IM1a.png", "IM2.png", "IM02.png", "IM10.png", "a", "b1"}
	sort.Slice(in, func(i, j int) bool { return NaturalLess(in[i], in[j]) })
	if !reflect.DeepEqual(in, want) {
		t.Errorf("got %v, want %v", in, want)
	}
}

func writePNG(t *testing.T, path string, img image.Image) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if strings.HasSuffix(path, ".tif") {
		err = tiff.Encode(f, img, nil)
	} else {
		err = png.Encode(f, img)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestReadStack(t *testing.T) {
	dir := t.TempDir()
	// Three 8-bit grey slices written out of name order, value = 10*k + x + 3*y.
	for _, k := range []int{2, 0, 1} {
		g := image.NewGray(image.Rect(0, 0, 5, 4))
		for y := 0; y < 4; y++ {
			for x := 0; x < 5; x++ {
				g.SetGray(x, y, color.Gray{uint8(10*k + x + 3*y)})
			}
		}
		writePNG(t, filepath.Join(dir, "gray", "s"+string(rune('0'+k))+".png"), g)
	}
	// 16-bit TIFF and an RGB PNG (first channel kept).
	g16 := image.NewGray16(image.Rect(0, 0, 3, 2))
	g16.SetGray16(2, 1, color.Gray16{Y: 40000})
	writePNG(t, filepath.Join(dir, "t", "1.tif"), g16)
	rgb := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	rgb.SetNRGBA(1, 0, color.NRGBA{R: 200, G: 7, B: 9, A: 255})
	writePNG(t, filepath.Join(dir, "rgb", "1.png"), rgb)

	files, _ := filepath.Glob(filepath.Join(dir, "gray", "*.png"))
	sort.Slice(files, func(i, j int) bool { return NaturalLess(files[i], files[j]) })
	v, err := ReadStack(files, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if v.Dims != [3]int{5, 4, 3} {
		t.Fatalf("dims %v", v.Dims)
	}
	for k := 0; k < 3; k++ {
		for y := 0; y < 4; y++ {
			for x := 0; x < 5; x++ {
				if got := v.At(x, y, k); got != float32(10*k+x+3*y) {
					t.Fatalf("voxel (%d,%d,%d) = %v", x, y, k, got)
				}
			}
		}
	}
	v, err = ReadStack([]string{filepath.Join(dir, "t", "1.tif")}, Limits{})
	if err != nil || v.At(2, 1, 0) != 40000 || v.At(0, 0, 0) != 0 {
		t.Fatalf("16-bit TIFF: %v %v", err, v)
	}
	v, err = ReadStack([]string{filepath.Join(dir, "rgb", "1.png")}, Limits{})
	if err != nil || v.At(1, 0, 0) != 200 {
		t.Fatalf("RGB: %v, voxel %v", err, v.At(1, 0, 0))
	}
	// Mixed sizes and undecodable files are errors naming the file.
	if _, err := ReadStack([]string{files[0], filepath.Join(dir, "t", "1.tif")}, Limits{}); err == nil || !strings.Contains(err.Error(), "1.tif") {
		t.Errorf("mixed sizes: %v", err)
	}
	bad := filepath.Join(dir, "bad.png")
	os.WriteFile(bad, []byte("not a png"), 0o644)
	if _, err := ReadStack([]string{bad}, Limits{}); err == nil || !strings.Contains(err.Error(), "bad.png") {
		t.Errorf("bad file: %v", err)
	}
	if _, err := ReadStack(files, Limits{MaxRows: 2}); err == nil {
		t.Error("no error beyond MaxRows")
	}
}

func TestReadLayoutJSON(t *testing.T) {
	root := t.TempDir()
	g := image.NewGray(image.Rect(0, 0, 2, 2))
	writePNG(t, filepath.Join(root, "NCP", "p1", "s1", "0001.png"), g)
	writePNG(t, filepath.Join(root, "NCP", "p1", "s1", "0002.png"), g)
	v := volume.New(3, 3, 2)
	if err := WriteNIfTI(filepath.Join(root, "Normal", "n7.nii.gz"), v, NIfTIInt16); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "CP", "p2", "s1"), 0o755)
	os.WriteFile(filepath.Join(root, "CP", "p2", "s1", "IM1.dcm"), []byte("x"), 0o644)
	js := `{"NCP": {"p1": {"s1": ["0001.png", "0002.png"], "s2": []}},
	        "Normal": {"n7": {"n7": ["n7.nii.gz"]}, "n8": {"n8": ["n8.nii.gz"]}},
	        "CP": {"p2": {"s1": ["IM1.dcm"]}}}`
	jp := filepath.Join(root, "train.json")
	os.WriteFile(jp, []byte(js), 0o644)
	d, err := ReadLayoutJSON(jp, root)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Classes, []string{"CP", "NCP", "Normal"}) {
		t.Fatalf("classes %v, want the CC-CCII label order", d.Classes)
	}
	type got struct {
		class string
		label int
		kind  ScanKind
		n     int
	}
	var g2 []got
	for _, s := range d.Scans {
		g2 = append(g2, got{s.Class, s.Label, s.Kind, len(s.Slices)})
	}
	want := []got{{"CP", 0, KindDICOM, 1}, {"NCP", 1, KindStack, 2}, {"Normal", 2, KindNIfTI, 0}}
	if !reflect.DeepEqual(g2, want) {
		t.Errorf("scans %+v, want %+v", g2, want)
	}
	if len(d.Skipped) != 2 {
		t.Errorf("skipped %v, want the empty s2 and the missing n8", d.Skipped)
	}
	os.WriteFile(jp, []byte(`{"a": [1]}`), 0o644)
	if _, err := ReadLayoutJSON(jp, root); err == nil || !strings.Contains(err.Error(), "train.json") {
		t.Errorf("malformed layout: %v", err)
	}

	// The same tree read as folder-per-class.
	f, err := ReadFolderLayout(root)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]ScanKind{}
	for _, s := range f.Scans {
		kinds[s.Class+"/"+s.ID] = s.Kind
	}
	wantKinds := map[string]ScanKind{"CP/s1": KindDICOM, "NCP/s1": KindStack, "NCP/s2": KindDICOM, "Normal/n7": KindNIfTI}
	delete(wantKinds, "NCP/s2")
	if !reflect.DeepEqual(kinds, wantKinds) {
		t.Errorf("folder layout scans %v, want %v", kinds, wantKinds)
	}
	// Unknown class names are labelled in sorted order.
	labels, classes := labelClasses([]string{"zeta", "alpha"})
	if labels["alpha"] != 0 || labels["zeta"] != 1 || classes[0] != "alpha" {
		t.Errorf("labels %v %v", labels, classes)
	}
}
