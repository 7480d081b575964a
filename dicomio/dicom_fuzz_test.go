package dicomio

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// fuzzLimits keeps fuzz inputs small.
var fuzzLimits = Limits{MaxFiles: 64, MaxFileBytes: 1 << 20, MaxZipBytes: 4 << 20, MaxVoxels: 1 << 22,
	MaxRows: 1024, MaxCols: 1024, MaxFrames: 64, Workers: 1}

// fuzzSeeds returns a few small real files from pydicom's test data.
func fuzzSeeds() [][]byte {
	var out [][]byte
	for _, f := range []string{"CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
		"image_dfl.dcm", "ExplVR_BigEnd.dcm", "rtdose.dcm", "no_meta.dcm", "SC_rgb_rle_2frame.dcm", "test-SR.dcm"} {
		if b, err := os.ReadFile(filepath.Join(pydicomTestFiles, f)); err == nil && len(b) < 64<<10 {
			out = append(out, b)
		}
	}
	return out
}

// FuzzReadSlice feeds arbitrary bytes to ReadSlice: it must return pixels
// of the announced size or an error, never panic or over-allocate.
func FuzzReadSlice(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Add([]byte("DICM"))
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := ReadSlice(data, "fuzz.dcm", fuzzLimits)
		if err != nil {
			return
		}
		if n := im.Rows * im.Cols * im.Frames * im.SamplesPerPixel; len(im.Stored) != n {
			t.Fatalf("%d values for %dx%dx%dx%d", len(im.Stored), im.Rows, im.Cols, im.Frames, im.SamplesPerPixel)
		}
		for fr := 0; fr < im.Frames; fr++ {
			im.Rescaled(fr)
		}
	})
}

// FuzzOpenZip feeds arbitrary bytes as a zip archive to DiscoverZip and
// loads whatever series it finds.
func FuzzOpenZip(f *testing.F) {
	seeds := fuzzSeeds()
	if len(seeds) > 0 {
		f.Add(zipBytes(f, map[string][]byte{"a/CT_small.dcm": seeds[0], "b/x.txt": []byte("text")}))
	}
	f.Add(zipBytes(f, map[string][]byte{"../x": []byte("x")}))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := DiscoverZip(bytes.NewReader(data), int64(len(data)), "fuzz.zip", fuzzLimits, Options{AllModalities: true})
		if err != nil {
			return
		}
		for _, s := range d.Series {
			s.AllowIrregular = true
			v, err := s.Load(context.Background())
			if err == nil {
				if err := v.Validate(); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
