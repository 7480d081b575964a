package train

import (
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot/plotutil"
)

// readPNG decodes a PNG file.
func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}

// colorCount counts the pixels of img that are exactly c.
func colorCount(img image.Image, c color.Color) int {
	r0, g0, b0, a0 := c.RGBA()
	n := 0
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			r, g, b, a := img.At(x, y).RGBA()
			if r == r0 && g == g0 && b == b0 && a == a0 {
				n++
			}
		}
	}
	return n
}

// TestPlotROC checks that the ROC PNG has the documented size and one
// curve, in its own colour, per class with a defined AUC.
func TestPlotROC(t *testing.T) {
	labels, probs := bootstrapData(120, 4)
	m, err := ComputeMetrics(labels, probs, []string{"NiCT", "pCT", "NCP"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "roc.png")
	if err := PlotROC(path, "test ROC", m); err != nil {
		t.Fatal(err)
	}
	img := readPNG(t, path)
	if b := img.Bounds(); b.Dx() != 600 || b.Dy() != 600 {
		t.Errorf("size %v, want 600×600", b.Size())
	}
	// Each curve runs from (0,0) to (1,1) across a ~500-pixel plot area, so
	// its colour covers hundreds of pixels; the fourth palette colour is
	// not used.
	for c := range 3 {
		if n := colorCount(img, plotutil.DarkColors[c]); n < 300 {
			t.Errorf("class %d colour covers %d pixels, want ≥ 300", c, n)
		}
	}
	if n := colorCount(img, plotutil.DarkColors[3]); n != 0 {
		t.Errorf("unused colour covers %d pixels", n)
	}

	// A class without positives is listed, not drawn.
	m, err = ComputeMetrics([]int{0, 1, 0, 1}, [][]float64{{0.6, 0.4, 0}, {0.3, 0.7, 0}, {0.4, 0.6, 0}, {0.2, 0.8, 0}}, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if err := PlotROC(path, "", m); err != nil {
		t.Fatal(err)
	}
	if n := colorCount(readPNG(t, path), plotutil.DarkColors[2]); n != 0 {
		t.Errorf("undefined class drawn (%d pixels)", n)
	}

	for _, tc := range []struct {
		path string
		m    Metrics
		want string
	}{
		{filepath.Join(dir, "roc.svg"), m, "want a .png file name"},
		{path, Metrics{}, "metrics have no classes"},
		{filepath.Join(dir, "missing", "roc.png"), m, "no such file or directory"},
	} {
		if err := PlotROC(tc.path, "", tc.m); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("PlotROC(%s): %v, want error containing %q", tc.path, err, tc.want)
		}
	}
	one, err := ComputeMetrics([]int{1, 1}, [][]float64{{0.5, 0.5}, {0.1, 0.9}}, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if err := PlotROC(path, "", one); err == nil || !strings.Contains(err.Error(), "no class has a defined AUC") {
		t.Errorf("all undefined: %v", err)
	}
}

// TestPlotCurves checks the training-curves PNG: size per panel, a colour
// per series in name order, gaps at NaN, and its errors.
func TestPlotCurves(t *testing.T) {
	nan := math.NaN()
	dir := t.TempDir()
	path := filepath.Join(dir, "curves.png")
	loss := CurvePanel{Title: "Loss", YLabel: "cross-entropy", Series: map[string][]float64{
		"train": {1.1, 0.9, 0.7, 0.6, 0.55, 0.5},
		"val":   {1.0, 0.95, nan, 0.8, 0.82, 0.79},
	}}
	acc := CurvePanel{Title: "Accuracy", YLabel: "top-1", Series: map[string][]float64{
		"val":   {0.45, 0.5, nan, 0.6, 0.58, 0.62},
		"train": {0.4, 0.5, 0.6, 0.7, 0.72, 0.75},
	}}
	if err := PlotCurves(path, loss, acc); err != nil {
		t.Fatal(err)
	}
	img := readPNG(t, path)
	if b := img.Bounds(); b.Dx() != 700 || b.Dy() != 700 {
		t.Errorf("size %v, want 700×700 (two 350-pixel panels)", b.Size())
	}
	// "train" sorts first in both panels, so it takes colour 0, "val" 1.
	for c := range 2 {
		if n := colorCount(img, plotutil.DarkColors[c]); n < 500 {
			t.Errorf("series colour %d covers %d pixels, want ≥ 500", c, n)
		}
	}
	if n := colorCount(img, plotutil.DarkColors[2]); n != 0 {
		t.Errorf("unused colour covers %d pixels", n)
	}
	// One panel, one epoch: a single point, no error.
	if err := PlotCurves(path, CurvePanel{Series: map[string][]float64{"loss": {0.7}}}); err != nil {
		t.Errorf("single point: %v", err)
	}
	if b := readPNG(t, path).Bounds(); b.Dy() != 350 {
		t.Errorf("one panel: height %d, want 350", b.Dy())
	}

	for _, tc := range []struct {
		name   string
		path   string
		panels []CurvePanel
		want   string
	}{
		{"extension", filepath.Join(dir, "c.jpg"), []CurvePanel{loss}, "want a .png file name"},
		{"no panels", path, nil, "no panels"},
		{"no values", path, []CurvePanel{loss, {Title: "empty", Series: map[string][]float64{"a": {nan}, "b": nil}}}, `panel 1 ("empty"): no finite values`},
		{"infinite", path, []CurvePanel{{Title: "x", Series: map[string][]float64{"a": {1, math.Inf(1)}}}}, `series "a": epoch 2: value +Inf is infinite`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := PlotCurves(tc.path, tc.panels...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want error containing %q", err, tc.want)
			}
		})
	}
}
