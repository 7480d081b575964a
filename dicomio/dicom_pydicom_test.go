package dicomio

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// expectedFailures lists the pydicom test files that hold pixel data (or
// claim to) which dicomio rejects, with a substring of the expected error.
// Files pydicom itself cannot decode are handled separately: dicomio must
// fail on them too (no silent garbage).
var expectedFailures = map[string]string{
	// colour JPEG: ctlens reads greyscale images only
	"GDCMJ2K_TextGBR.dcm":              "JP2 file wrapper",
	"SC_jpeg_no_color_transform.dcm":   "colour lossy JPEG",
	"SC_jpeg_no_color_transform_2.dcm": "colour lossy JPEG",
	"SC_rgb_dcmtk_+eb+cr.dcm":          "colour lossy JPEG",
	"SC_rgb_dcmtk_+eb+cy+n1.dcm":       "colour lossy JPEG",
	"SC_rgb_dcmtk_+eb+cy+n2.dcm":       "colour lossy JPEG",
	"SC_rgb_dcmtk_+eb+cy+np.dcm":       "colour lossy JPEG",
	"SC_rgb_dcmtk_+eb+cy+s2.dcm":       "colour lossy JPEG",
	"SC_rgb_dcmtk_+eb+cy+s4.dcm":       "colour lossy JPEG",
	"SC_rgb_jpeg_app14_dcmd.dcm":       "colour lossy JPEG",
	"SC_rgb_jpeg_dcmtk.dcm":            "colour lossy JPEG",
	"SC_rgb_jpeg_lossy_gdcm.dcm":       "colour lossy JPEG",
	"SC_rgb_small_odd_jpeg.dcm":        "colour lossy JPEG",
	"SC_rgb_jpeg_gdcm.dcm":             "colour JPEG Lossless",
	// not a valid DICOM file (dcmdump fails too; pydicom guesses)
	"SC_rgb_jpeg.dcm": "exceeds the",
	// chroma-subsampled native data
	"SC_ybr_full_422_uncompressed.dcm": "YBR_FULL_422",
	// 12-bit lossy JPEG: go-dicom-codec decodes it wrongly
	"JPEG-lossy.dcm":  "12-bit lossy JPEG",
	"JPGExtended.dcm": "12-bit lossy JPEG",
}

// lossyTolerance is the largest accepted difference from GDCM for lossy
// syntaxes: decoders may round the inverse DCT / wavelet differently.
var lossyTolerance = map[string]int64{tsJPEGBase: 1, tsJPEGExt: 1, tsJ2K: 0}

// TestPydicomFiles decodes every image file of pydicom's test data and
// compares the stored values with pydicom's (native, RLE) or with GDCM's
// decompression read by pydicom (JPEG family); files either match, are in
// expectedFailures with the expected reason, or are files pydicom cannot
// decode either, on which dicomio must return an error.
func TestPydicomFiles(t *testing.T) {
	dir := needDir(t, pydicomTestFiles)
	files, err := filepath.Glob(filepath.Join(dir, "*.dcm"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no files in %s: %v", dir, err)
	}
	// References only for files dicomio must decode or reject like the
	// reference does: the expected failures need none (and GDCM takes
	// seconds of CPU on the broken SC_rgb_jpeg.dcm).
	var refFiles []string
	for _, f := range files {
		if _, ok := expectedFailures[filepath.Base(f)]; !ok {
			refFiles = append(refFiles, f)
		}
	}
	refs := pydicomPixels(t, refFiles)
	passed, failedAsExpected, noImage := 0, 0, 0
	for _, f := range files {
		base := filepath.Base(f)
		ref := refs[f]
		t.Run(base, func(t *testing.T) {
			im, err := ReadFile(f, Limits{})
			want, isExpected := expectedFailures[base]
			switch {
			case isExpected:
				if err == nil {
					t.Fatalf("decoded, but expected failure %q", want)
				}
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q, want it to contain %q", err, want)
				}
				failedAsExpected++
				t.Logf("fails as expected: %v", err)
			case !ref.OK:
				// pydicom (or GDCM) cannot decode it: no pixel data, or
				// broken. dicomio must not return pixels either.
				if err == nil {
					t.Fatalf("decoded %v, but the reference failed: %s", im.Stored[:min(4, len(im.Stored))], ref.Error)
				}
				if !strings.Contains(ref.Error, "no PixelData") && !errors.Is(err, ErrNoPixelData) {
					t.Logf("reference failed (%s); dicomio: %v", ref.Error, err)
				}
				noImage++
			default:
				if err != nil {
					t.Fatalf("reference (%s) decoded %v, dicomio failed: %v", ref.Reference, ref.Shape, err)
				}
				if got := []int{im.Frames, im.Rows, im.Cols, im.SamplesPerPixel}; !equalInts(got, ref.Shape) {
					t.Fatalf("shape %v, reference %v", got, ref.Shape)
				}
				if err := compareStored(im.Stored, ref.Values, lossyTolerance[ref.TS]); err != nil {
					t.Fatalf("vs %s: %v", ref.Reference, err)
				}
				if im.RescaleSlope != ref.Slope || im.RescaleIntercept != ref.Intercept {
					t.Fatalf("rescale %v, %v; reference %v, %v", im.RescaleSlope, im.RescaleIntercept, ref.Slope, ref.Intercept)
				}
				passed++
			}
		})
	}
	t.Logf("%d files match the reference, %d fail as expected, %d have no decodable image (reference fails too)", passed, failedAsExpected, noImage)
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
