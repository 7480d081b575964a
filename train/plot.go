package train

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// plotDPI is the resolution of the PNGs written by PlotROC and PlotCurves.
const plotDPI = 100

// PlotROC writes to path (a .png file) the one-vs-rest ROC curves of every
// class of m whose AUC is defined — false positive rate on x, true positive
// rate on y, both over [0, 1] — with the chance diagonal TPR = FPR dashed,
// and a legend naming each class with its AUC and support. Classes whose
// AUC is undefined are listed in the legend with the reason. title is the
// plot's title (e.g. the model and data set); the image is 600×600 pixels.
func PlotROC(path, title string, m Metrics) error {
	if err := checkPNGPath(path); err != nil {
		return err
	}
	if len(m.PerClass) == 0 {
		return fmt.Errorf("train: ROC plot %s: metrics have no classes", path)
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "False positive rate (1 − specificity)"
	p.Y.Label.Text = "True positive rate (sensitivity)"
	// [0, 1] with a 1% margin, so curves along the frame stay visible.
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = -0.01, 1.01, -0.01, 1.01
	p.Add(plotter.NewGrid())
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.XOffs = -vg.Points(6)
	p.Legend.YOffs = vg.Points(6)

	diag, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: 1, Y: 1}})
	if err != nil {
		return fmt.Errorf("train: ROC plot %s: %w", path, err)
	}
	diag.Color = color.Gray{Y: 128}
	diag.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	p.Add(diag)

	drawn := 0
	for c, cm := range m.PerClass {
		if math.IsNaN(cm.AUC) || len(cm.ROC.FPR) == 0 {
			p.Legend.Add(fmt.Sprintf("%s: AUC undefined (%s)", cm.Class, cm.AUCUndefined))
			continue
		}
		if len(cm.ROC.FPR) != len(cm.ROC.TPR) {
			return fmt.Errorf("train: ROC plot %s: class %s: %d FPR but %d TPR values", path, cm.Class, len(cm.ROC.FPR), len(cm.ROC.TPR))
		}
		xys := make(plotter.XYs, len(cm.ROC.FPR))
		for i := range xys {
			xys[i] = plotter.XY{X: cm.ROC.FPR[i], Y: cm.ROC.TPR[i]}
		}
		line, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("train: ROC plot %s: class %s: %w", path, cm.Class, err)
		}
		line.Color = plotutil.DarkColors[c%len(plotutil.DarkColors)]
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s (AUC %.4f, n=%d)", cm.Class, cm.AUC, cm.Support), line)
		drawn++
	}
	p.Legend.Add("chance", diag)
	if drawn == 0 {
		return fmt.Errorf("train: ROC plot %s: no class has a defined AUC (%s)", path, m.AUCNote)
	}
	return savePNG(path, 6*vg.Inch, 6*vg.Inch, [][]*plot.Plot{{p}})
}

// CurvePanel is one panel of a training-curves figure: named series sharing
// a y axis, Series[name][e] being the value after epoch e+1 (NaN where it
// was not measured; the line breaks there).
type CurvePanel struct {
	// Title is the panel's title, e.g. "Loss".
	Title string
	// YLabel labels the y axis, e.g. "cross-entropy".
	YLabel string
	// Series maps a legend name (e.g. "train", "val") to per-epoch values.
	Series map[string][]float64
}

// PlotCurves writes to path (a .png file) the panels stacked top to bottom,
// each a line-and-point plot of its series against the epoch (1, 2, …),
// series drawn in name order with a legend. A typical call for a training
// run passes a loss panel and an accuracy panel, each with "train" and "val"
// series. The image is 700 pixels wide and 350 pixels high per panel. A
// panel without any finite value, or an infinite value, is an error.
func PlotCurves(path string, panels ...CurvePanel) error {
	if err := checkPNGPath(path); err != nil {
		return err
	}
	if len(panels) == 0 {
		return fmt.Errorf("train: curves plot %s: no panels", path)
	}
	plots := make([][]*plot.Plot, len(panels))
	for pi, panel := range panels {
		p, err := curvesPanel(panel)
		if err != nil {
			return fmt.Errorf("train: curves plot %s: panel %d (%q): %w", path, pi, panel.Title, err)
		}
		plots[pi] = []*plot.Plot{p}
	}
	return savePNG(path, 7*vg.Inch, vg.Length(len(panels))*3.5*vg.Inch, plots)
}

// curvesPanel builds one panel's plot.
func curvesPanel(panel CurvePanel) (*plot.Plot, error) {
	names := make([]string, 0, len(panel.Series))
	for name := range panel.Series {
		names = append(names, name)
	}
	sort.Strings(names)
	p := plot.New()
	p.Title.Text = panel.Title
	p.X.Label.Text = "epoch"
	p.Y.Label.Text = panel.YLabel
	p.Add(plotter.NewGrid())
	finite := 0
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	var lastValues []float64 // each series' last finite value
	for si, name := range names {
		values := panel.Series[name]
		clr := plotutil.DarkColors[si%len(plotutil.DarkColors)]
		var legendLine *plotter.Line
		var segment plotter.XYs
		flush := func() error {
			if len(segment) == 0 {
				return nil
			}
			line, points, err := plotter.NewLinePoints(segment)
			if err != nil {
				return err
			}
			line.Color = clr
			line.Width = vg.Points(1.5)
			points.Color = clr
			points.Shape = draw.CircleGlyph{}
			points.Radius = vg.Points(2)
			p.Add(line, points)
			legendLine = line
			segment = nil
			return nil
		}
		for e, v := range values {
			if math.IsInf(v, 0) {
				return nil, fmt.Errorf("series %q: epoch %d: value %v is infinite", name, e+1, v)
			}
			if math.IsNaN(v) {
				if err := flush(); err != nil {
					return nil, err
				}
				continue
			}
			segment = append(segment, plotter.XY{X: float64(e + 1), Y: v})
			finite++
			xmin, xmax = math.Min(xmin, float64(e+1)), math.Max(xmax, float64(e+1))
			ymin, ymax = math.Min(ymin, v), math.Max(ymax, v)
		}
		for e := len(values) - 1; e >= 0; e-- {
			if !math.IsNaN(values[e]) {
				lastValues = append(lastValues, values[e])
				break
			}
		}
		if err := flush(); err != nil {
			return nil, err
		}
		if legendLine != nil {
			p.Legend.Add(name, legendLine)
		} else {
			p.Legend.Add(name + " (no values)")
		}
	}
	if finite == 0 {
		return nil, errors.New("no finite values in any series")
	}
	// A margin of 4% of the range (or of 1 when it is empty) keeps points
	// off the frame.
	pad := func(lo, hi float64) (float64, float64) {
		d := 0.04 * (hi - lo)
		if d == 0 {
			d = 0.04 * math.Max(1, math.Abs(hi))
		}
		return lo - d, hi + d
	}
	p.X.Min, p.X.Max = pad(xmin, xmax)
	p.Y.Min, p.Y.Max = pad(ymin, ymax)
	// The legend goes in the right-hand corner the curves end away from:
	// bottom for rising curves (accuracy), top for falling ones (loss).
	mean := 0.0
	for _, v := range lastValues {
		mean += v / float64(len(lastValues))
	}
	p.Legend.Left = false
	p.Legend.Top = mean < (ymin+ymax)/2
	p.Legend.XOffs = -vg.Points(6)
	if p.Legend.Top {
		p.Legend.YOffs = -vg.Points(6)
	} else {
		p.Legend.YOffs = vg.Points(6)
	}
	return p, nil
}

// checkPNGPath rejects paths that do not end in .png.
func checkPNGPath(path string) error {
	if !strings.EqualFold(filepath.Ext(path), ".png") {
		return fmt.Errorf("train: plot %s: want a .png file name", path)
	}
	return nil
}

// savePNG draws the plots, laid out as rows×columns tiles, on a w×h canvas
// and writes it to path as PNG.
func savePNG(path string, w, h vg.Length, plots [][]*plot.Plot) (err error) {
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(plotDPI))
	dc := draw.New(img)
	tiles := draw.Tiles{
		Rows: len(plots), Cols: len(plots[0]),
		PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8),
		PadX: vg.Points(8), PadY: vg.Points(12),
	}
	canvases := plot.Align(plots, tiles, dc)
	for r := range plots {
		for c := range plots[r] {
			plots[r][c].Draw(canvases[r][c])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("train: plot: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("train: plot: %w", cerr)
		}
	}()
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		return fmt.Errorf("train: plot %s: %w", path, err)
	}
	return nil
}
