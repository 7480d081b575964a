package dicomio

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
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
		rescaled := make([][]float32, im.Frames)
		for fr := 0; fr < im.Frames; fr++ {
			rescaled[fr] = im.Rescaled(fr)
		}
		checkPrefixParse(t, data, im.Instance)
		checkLoadRescale(t, data, im.Instance, rescaled)
	})
}

// checkPrefixParse checks Discover's header parse from the first bytes of
// a file against the parse of the whole file (in): it either asks for the
// whole file or finds the same header.
func checkPrefixParse(t *testing.T, data []byte, in *Instance) {
	t.Helper()
	for _, k := range []int{len(data) / 2, len(data) - 1, 512} {
		if k <= 0 || k >= len(data) {
			continue
		}
		got, lay, err := parsePrefix(data[:k], int64(len(data)), "fuzz.dcm", fuzzLimits)
		if errors.Is(err, errNeedFull) {
			continue
		}
		if err != nil {
			t.Fatalf("prefix of %d of %d bytes: %v; the whole file parses", k, len(data), err)
		}
		want := *in
		want.src = nil
		if !reflect.DeepEqual(got, &want) {
			t.Fatalf("prefix of %d of %d bytes gives\n%+v\nthe whole file\n%+v", k, len(data), got, &want)
		}
		if !lay.hasPixels {
			t.Fatalf("prefix parse without pixel data")
		}
	}
}

// checkLoadRescale checks Series.Load's per-frame conversion (rescaleFrame
// on the raw frames) against Image.Rescaled, for greyscale images.
func checkLoadRescale(t *testing.T, data []byte, in *Instance, want [][]float32) {
	t.Helper()
	if in.SamplesPerPixel != 1 {
		return
	}
	lay, err := scanLayout(data, fuzzLimits.MaxFileBytes)
	if err != nil {
		t.Fatalf("scanLayout fails after ReadSlice succeeded: %v", err)
	}
	frames, err := frameData(in, lay)
	if err != nil {
		t.Fatalf("frameData fails after ReadSlice succeeded: %v", err)
	}
	for fr, raw := range frames {
		got := make([]float32, in.Rows*in.Cols)
		slope, icpt := in.rescale(fr)
		rescaleFrame(got, raw, in, slope, icpt)
		for i, g := range got {
			w := want[fr][i]
			// Load computes in float32 when slope and intercept are
			// float32 values (as NumPy does), Rescaled in float64: one
			// rounding apart at most.
			if g != w && !(math.Abs(float64(g-w)) <= 1e-6*math.Abs(float64(w))) && !(math.IsNaN(float64(g)) && math.IsNaN(float64(w))) {
				t.Fatalf("frame %d voxel %d: Load gives %v, Rescaled %v (slope %v intercept %v)", fr, i, g, w, slope, icpt)
			}
		}
	}
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
