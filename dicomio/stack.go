package dicomio

import (
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // decoders for ReadStack
	_ "image/png"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	_ "golang.org/x/image/tiff"

	"github.com/ctlens/ctlens/volume"
)

// stackExts are the file extensions ReadStack accepts, lower case.
var stackExts = map[string]bool{".png": true, ".jpg": true, ".jpeg": true, ".tif": true, ".tiff": true}

// IsStackImage reports whether name has an image extension that ReadStack reads.
func IsStackImage(name string) bool { return stackExts[strings.ToLower(filepath.Ext(name))] }

// NaturalLess orders file names with runs of digits compared by value, so
// that "IM2.png" sorts before "IM10.png".
func NaturalLess(a, b string) bool {
	for a != "" && b != "" {
		ra, rb := rune(a[0]), rune(b[0])
		if unicode.IsDigit(ra) && unicode.IsDigit(rb) {
			i := 0
			for i < len(a) && unicode.IsDigit(rune(a[i])) {
				i++
			}
			j := 0
			for j < len(b) && unicode.IsDigit(rune(b[j])) {
				j++
			}
			na, nb := strings.TrimLeft(a[:i], "0"), strings.TrimLeft(b[:j], "0")
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			if na != nb {
				return na < nb
			}
			if i != j {
				return i < j
			}
			a, b = a[i:], b[j:]
			continue
		}
		if ra != rb {
			return ra < rb
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

// ReadStack reads a scan stored as one image per axial slice (PNG or JPEG,
// as CC-CCII; 16-bit TIFF, as COVID-CTset), given the slice files in order.
// Voxels are the stored grey values (8-bit 0..255, 16-bit 0..65535); colour
// images keep their first (red) channel, as the CovidNet3D loader does.
// Such files carry no geometry: spacing is 1 mm and direction the identity.
// All slices must have the same size.
func ReadStack(files []string, lim Limits) (*volume.Volume, error) {
	lim = lim.withDefaults()
	if len(files) == 0 {
		return nil, fmt.Errorf("dicomio: slice stack: no files")
	}
	if len(files) > lim.MaxFrames {
		return nil, fmt.Errorf("dicomio: slice stack: %d slices exceeds the limit of %d", len(files), lim.MaxFrames)
	}
	var v *volume.Volume
	for k, f := range files {
		img, err := decodeSliceImage(f, lim)
		if err != nil {
			return nil, err
		}
		b := img.Bounds()
		if v == nil {
			if int64(b.Dx())*int64(b.Dy())*int64(len(files)) > lim.MaxVoxels {
				return nil, fmt.Errorf("dicomio: slice stack: %dx%dx%d voxels exceeds the limit of %d", b.Dx(), b.Dy(), len(files), lim.MaxVoxels)
			}
			v = volume.New(b.Dx(), b.Dy(), len(files))
		} else if b.Dx() != v.Dims[0] || b.Dy() != v.Dims[1] {
			return nil, fmt.Errorf("dicomio: slice stack: %s is %dx%d, earlier slices are %dx%d", f, b.Dx(), b.Dy(), v.Dims[0], v.Dims[1])
		}
		off := v.Index(0, 0, k)
		for y := 0; y < b.Dy(); y++ {
			for x := 0; x < b.Dx(); x++ {
				v.Voxels[off+y*b.Dx()+x] = grey(img, b.Min.X+x, b.Min.Y+y)
			}
		}
	}
	return v, nil
}

func decodeSliceImage(path string, lim Limits) (image.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dicomio: slice stack: %w", err)
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil {
		return nil, fmt.Errorf("dicomio: slice stack: %s: %w", path, err)
	}
	if cfg.Width > lim.MaxCols || cfg.Height > lim.MaxRows {
		return nil, fmt.Errorf("dicomio: slice stack: %s is %dx%d, beyond the limit of %dx%d", path, cfg.Width, cfg.Height, lim.MaxCols, lim.MaxRows)
	}
	if _, err := f.Seek(0, 0); err != nil {
		return nil, fmt.Errorf("dicomio: slice stack: %s: %w", path, err)
	}
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("dicomio: slice stack: %s: %w", path, err)
	}
	return img, nil
}

// grey returns the stored grey level of a pixel: the value itself for grey
// images, the red channel for colour ones, at the image's own bit depth.
func grey(img image.Image, x, y int) float32 {
	switch m := img.(type) {
	case *image.Gray:
		return float32(m.GrayAt(x, y).Y)
	case *image.Gray16:
		return float32(m.Gray16At(x, y).Y)
	case *image.Paletted:
		r, _, _, _ := m.At(x, y).RGBA()
		return float32(r >> 8)
	case *image.NRGBA:
		return float32(m.NRGBAAt(x, y).R)
	case *image.RGBA:
		return float32(m.RGBAAt(x, y).R)
	case *image.YCbCr:
		r, _, _, _ := color.YCbCrModel.Convert(m.YCbCrAt(x, y)).RGBA()
		return float32(r >> 8)
	case *image.NRGBA64:
		return float32(m.NRGBA64At(x, y).R)
	case *image.RGBA64:
		return float32(m.RGBA64At(x, y).R)
	}
	r, _, _, _ := img.At(x, y).RGBA()
	return float32(r >> 8)
}
