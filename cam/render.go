package cam

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/disintegration/imaging"
	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/ctlens/ctlens/volume"
)

// Plane is a slice orientation, defined on the voxel axes: Axial holds k
// fixed (image axes i, j), Coronal holds j fixed (i, k), Sagittal holds i
// fixed (j, k).
type Plane int

const (
	// Axial slices hold k fixed.
	Axial Plane = iota
	// Coronal slices hold j fixed.
	Coronal
	// Sagittal slices hold i fixed.
	Sagittal
)

// String returns "axial", "coronal" or "sagittal".
func (p Plane) String() string {
	switch p {
	case Axial:
		return "axial"
	case Coronal:
		return "coronal"
	case Sagittal:
		return "sagittal"
	}
	return fmt.Sprintf("Plane(%d)", int(p))
}

// ParsePlane maps "axial", "coronal" or "sagittal" to a Plane.
func ParsePlane(s string) (Plane, error) {
	for p := Axial; p <= Sagittal; p++ {
		if strings.EqualFold(strings.TrimSpace(s), p.String()) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("cam: unknown plane %q (want axial, coronal or sagittal)", s)
}

// axes returns the fixed voxel axis and the horizontal and vertical image axes.
func (p Plane) axes() (fixedAxis, h, v int) {
	switch p {
	case Coronal:
		return 1, 0, 2
	case Sagittal:
		return 0, 1, 2
	}
	return 2, 0, 1
}

// Colormap maps heat in [0, 1] to a colour.
type Colormap int

const (
	// Jet is matplotlib's "jet" (blue → cyan → yellow → red).
	Jet Colormap = iota
	// Hot is matplotlib's "hot" (black → red → yellow → white).
	Hot
)

// String returns "jet" or "hot".
func (c Colormap) String() string {
	switch c {
	case Jet:
		return "jet"
	case Hot:
		return "hot"
	}
	return fmt.Sprintf("Colormap(%d)", int(c))
}

// ParseColormap maps "jet" or "hot" to a Colormap.
func ParseColormap(s string) (Colormap, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "jet", "":
		return Jet, nil
	case "hot":
		return Hot, nil
	}
	return 0, fmt.Errorf("cam: unknown colormap %q (want jet or hot)", s)
}

// segment is one matplotlib LinearSegmentedColormap channel: points (x, y)
// with x increasing from 0 to 1, linear between.
type segment [][2]float64

func (s segment) at(x float64) float64 {
	for i := 1; i < len(s); i++ {
		if x <= s[i][0] {
			x0, y0, x1, y1 := s[i-1][0], s[i-1][1], s[i][0], s[i][1]
			return y0 + (y1-y0)*(x-x0)/(x1-x0)
		}
	}
	return s[len(s)-1][1]
}

// matplotlib's _jet_data and _hot_data.
var (
	jetRGB = [3]segment{
		{{0, 0}, {0.35, 0}, {0.66, 1}, {0.89, 1}, {1, 0.5}},
		{{0, 0}, {0.125, 0}, {0.375, 1}, {0.64, 1}, {0.91, 0}, {1, 0}},
		{{0, 0.5}, {0.11, 1}, {0.34, 1}, {0.65, 0}, {1, 0}},
	}
	hotRGB = [3]segment{
		{{0, 0.0416}, {0.365079, 1}, {1, 1}},
		{{0, 0}, {0.365079, 0}, {0.746032, 1}, {1, 1}},
		{{0, 0}, {0.746032, 0}, {1, 1}},
	}
)

// RGB returns the colour of heat x (clamped to [0, 1]) as components in [0, 1].
func (c Colormap) RGB(x float64) [3]float64 {
	x = math.Max(0, math.Min(1, x))
	if math.IsNaN(x) {
		x = 0
	}
	seg := &jetRGB
	if c == Hot {
		seg = &hotRGB
	}
	return [3]float64{seg[0].at(x), seg[1].at(x), seg[2].at(x)}
}

// OverlayOptions configures overlays. The zero value is the lung window,
// jet, opacity 0.4, no threshold, and pixels as fine as the finer in-plane
// spacing.
type OverlayOptions struct {
	// Window displays the scan (HU); zero means volume.LungWindow.
	Window volume.WindowLevel
	// Colormap colours the heat.
	Colormap Colormap
	// Opacity of the heat layer in (0, 1]; 0 means 0.4.
	Opacity float64
	// Threshold: heat below it is not drawn (0 draws everything).
	Threshold float64
	// PixelMM is the output pixel size in mm; 0 means the smaller spacing
	// of the plane's two axes. Both image axes are resampled to it, so the
	// picture has the patient's proportions.
	PixelMM float64
}

func (o OverlayOptions) withDefaults() (OverlayOptions, error) {
	if o.Window.Width == 0 && o.Window.Center == 0 {
		o.Window = volume.LungWindow
	}
	if o.Opacity == 0 {
		o.Opacity = 0.4
	}
	switch {
	case !(o.Window.Width > 0) || math.IsInf(o.Window.Width, 0) || math.IsNaN(o.Window.Center):
		return o, fmt.Errorf("cam: overlay: window width %v, center %v", o.Window.Width, o.Window.Center)
	case !(o.Opacity > 0 && o.Opacity <= 1):
		return o, fmt.Errorf("cam: overlay: opacity %v (want (0, 1])", o.Opacity)
	case math.IsNaN(o.Threshold) || o.Threshold < 0 || o.Threshold > 1:
		return o, fmt.Errorf("cam: overlay: threshold %v (want [0, 1])", o.Threshold)
	case o.PixelMM < 0 || math.IsNaN(o.PixelMM) || math.IsInf(o.PixelMM, 0):
		return o, fmt.Errorf("cam: overlay: pixel size %v mm", o.PixelMM)
	case o.Colormap != Jet && o.Colormap != Hot:
		return o, fmt.Errorf("cam: overlay: unknown colormap %d", int(o.Colormap))
	}
	return o, nil
}

// maxOverlayPixels bounds one overlay image (a slice resampled to a tiny
// PixelMM could otherwise ask for gigabytes).
const maxOverlayPixels = 1 << 24

// Overlay draws slice index of the given plane: the scan windowed to grey
// with the heat (hot = high, values in [0, 1], on the scan's grid) blended
// over it as out = (1 − a)·grey + a·colormap(heat), a = Opacity where heat
// ≥ Threshold and 0 elsewhere. Both layers are resampled (bilinear) to
// square pixels of PixelMM so that the image has the patient's proportions.
// The image is oriented from the direction cosines as radiologists view
// it: axial with the patient's right on the image's left and anterior up;
// coronal with right on the left and superior up; sagittal with anterior on
// the left and superior up.
func Overlay(scan, heat *volume.Volume, p Plane, index int, o OverlayOptions) (*image.NRGBA, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkPair("overlay", scan, heat); err != nil {
		return nil, err
	}
	if p < Axial || p > Sagittal {
		return nil, fmt.Errorf("cam: overlay: unknown plane %d", int(p))
	}
	fa, ha, va := p.axes()
	if index < 0 || index >= scan.Dims[fa] {
		return nil, fmt.Errorf("cam: overlay: %s slice %d out of range [0, %d)", p, index, scan.Dims[fa])
	}
	w, h := scan.Dims[ha], scan.Dims[va]
	px := o.PixelMM
	if px == 0 {
		px = math.Min(scan.Spacing[ha], scan.Spacing[va])
	}
	ow := max(1, int(math.Round(float64(w)*scan.Spacing[ha]/px)))
	oh := max(1, int(math.Round(float64(h)*scan.Spacing[va]/px)))
	if ow*oh > maxOverlayPixels {
		return nil, fmt.Errorf("cam: overlay: %d×%d pixels at %v mm exceeds the limit of %d", ow, oh, px, maxOverlayPixels)
	}
	grey := image.NewGray(image.Rect(0, 0, w, h))
	hot := image.NewGray16(image.Rect(0, 0, w, h))
	lo := o.Window.Center - o.Window.Width/2
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var ijk [3]int
			ijk[fa], ijk[ha], ijk[va] = index, x, y
			vi := scan.Index(ijk[0], ijk[1], ijk[2])
			g := (float64(scan.Voxels[vi]) - lo) / o.Window.Width
			grey.Pix[y*grey.Stride+x] = uint8(math.Round(255 * clamp01(g)))
			hot.SetGray16(x, y, color.Gray16{Y: uint16(math.Round(65535 * clamp01(float64(heat.Voxels[vi]))))})
		}
	}
	gi := imaging.Resize(grey, ow, oh, imaging.Linear)
	hi := imaging.Resize(hot, ow, oh, imaging.Linear)
	out := image.NewNRGBA(image.Rect(0, 0, ow, oh))
	for i := 0; i < ow*oh; i++ {
		g := float64(gi.Pix[4*i]) / 255
		hv := float64(hi.Pix[4*i]) / 255
		c := [3]float64{g, g, g}
		if hv >= o.Threshold {
			rgb := o.Colormap.RGB(hv)
			for ch := range c {
				c[ch] = (1-o.Opacity)*g + o.Opacity*rgb[ch]
			}
		}
		for ch := range c {
			out.Pix[4*i+ch] = uint8(math.Round(255 * c[ch]))
		}
		out.Pix[4*i+3] = 255
	}
	// Screen right and down should run towards +x (left), +y (posterior)
	// and −z (inferior) of LPS, whichever of them an axis mostly follows.
	want := [3]float64{1, 1, -1}
	if screenFlip(scan.Direction[ha], want) {
		out = imaging.FlipH(out)
	}
	if screenFlip(scan.Direction[va], want) {
		out = imaging.FlipV(out)
	}
	return out, nil
}

// screenFlip reports whether an axis with direction d runs against the
// wanted sign of its dominant LPS component.
func screenFlip(d [3]float64, want [3]float64) bool {
	c := 0
	for a := 1; a < 3; a++ {
		if math.Abs(d[a]) > math.Abs(d[c]) {
			c = a
		}
	}
	return d[c]*want[c] < 0
}

func clamp01(x float64) float64 {
	if !(x > 0) {
		return 0
	}
	return math.Min(x, 1)
}

// checkPair verifies that heat lies on scan's grid.
func checkPair(what string, scan, heat *volume.Volume) error {
	if scan == nil || heat == nil {
		return fmt.Errorf("cam: %s: nil scan or heat volume", what)
	}
	if err := scan.Validate(); err != nil {
		return fmt.Errorf("cam: %s: scan: %w", what, err)
	}
	if err := heat.Validate(); err != nil {
		return fmt.Errorf("cam: %s: heat: %w", what, err)
	}
	if scan.Dims != heat.Dims {
		return fmt.Errorf("cam: %s: heat grid %v differs from the scan's %v", what, heat.Dims, scan.Dims)
	}
	return nil
}

// SliceHeat is an axial slice's heat statistics.
type SliceHeat struct {
	// Slice is the index k; Max and Sum the slice's largest and total heat.
	Slice int     `json:"slice"`
	Max   float32 `json:"max"`
	Sum   float64 `json:"sum"`
}

// HottestSlices returns the n axial slices (fixed k) of heat (hot = high)
// with the largest maximum, ties broken by the larger sum and then the
// lower index, hottest first.
func HottestSlices(heat *volume.Volume, n int) ([]SliceHeat, error) {
	if heat == nil {
		return nil, errors.New("cam: hottest slices: nil heat volume")
	}
	if err := heat.Validate(); err != nil {
		return nil, fmt.Errorf("cam: hottest slices: %w", err)
	}
	plane := heat.Dims[0] * heat.Dims[1]
	all := make([]SliceHeat, heat.Dims[2])
	for k := range all {
		s := SliceHeat{Slice: k, Max: float32(math.Inf(-1))}
		for _, v := range heat.Voxels[k*plane : (k+1)*plane] {
			s.Max = max(s.Max, v)
			s.Sum += float64(v)
		}
		all[k] = s
	}
	sort.SliceStable(all, func(a, b int) bool {
		if all[a].Max != all[b].Max {
			return all[a].Max > all[b].Max
		}
		return all[a].Sum > all[b].Sum
	})
	return all[:min(max(n, 0), len(all))], nil
}

// Montage tiles the overlays of the n hottest axial slices (HottestSlices),
// hottest first, row by row in a grid ceil(√n) tiles wide, each labelled
// with its slice index and peak heat (the index alone when the tile is too
// narrow for both). It returns the image and the slices.
func Montage(scan, heat *volume.Volume, n int, o OverlayOptions) (*image.NRGBA, []SliceHeat, error) {
	if n < 1 {
		return nil, nil, fmt.Errorf("cam: montage: %d slices (want at least 1)", n)
	}
	if err := checkPair("montage", scan, heat); err != nil {
		return nil, nil, err
	}
	top, err := HottestSlices(heat, n)
	if err != nil {
		return nil, nil, err
	}
	cols := int(math.Ceil(math.Sqrt(float64(len(top)))))
	rows := (len(top) + cols - 1) / cols
	var canvas *image.NRGBA
	for t, s := range top {
		tile, err := Overlay(scan, heat, Axial, s.Slice, o)
		if err != nil {
			return nil, nil, err
		}
		tw, th := tile.Bounds().Dx(), tile.Bounds().Dy()
		if canvas == nil {
			if tw*cols*th*rows > maxOverlayPixels {
				return nil, nil, fmt.Errorf("cam: montage: %d×%d tiles of %d×%d pixels exceed the limit of %d", cols, rows, tw, th, maxOverlayPixels)
			}
			canvas = imaging.New(tw*cols, th*rows, color.Black)
		}
		text := fmt.Sprintf("k=%d max=%.2f", s.Slice, s.Max)
		if 7*len(text)+4 > tw {
			text = fmt.Sprintf("k=%d", s.Slice)
		}
		label(tile, text)
		canvas = imaging.Paste(canvas, tile, image.Pt((t%cols)*tw, (t/cols)*th))
	}
	return canvas, top, nil
}

// label writes text in white with a black shadow at the top-left of img.
func label(img *image.NRGBA, text string) {
	face := basicfont.Face7x13
	for _, c := range []struct {
		col color.Color
		dx  int
	}{{color.Black, 1}, {color.White, 0}} {
		d := font.Drawer{Dst: img, Src: image.NewUniform(c.col), Face: face,
			Dot: fixed.P(2+c.dx, 11+c.dx)}
		d.DrawString(text)
	}
}

// WritePNG encodes img as PNG at path, creating its folder.
func WritePNG(path string, img image.Image) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("cam: write %s: %w", path, err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cam: write %s: %w", path, err)
	}
	if err := imaging.Encode(f, img, imaging.PNG); err != nil {
		f.Close()
		return fmt.Errorf("cam: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cam: write %s: %w", path, err)
	}
	return nil
}
