package dicomio

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// zipBytes builds an in-memory archive from name -> content.
func zipBytes(t testing.TB, entries map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range sortedKeys(entries) {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(entries[name])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestZipSafety(t *testing.T) {
	small := []byte("hello")
	cases := []struct {
		name    string
		zip     func(t *testing.T) []byte
		lim     Limits
		wantErr string
		isLimit bool
	}{
		{"traversal", func(t *testing.T) []byte { return zipBytes(t, map[string][]byte{"a/../../evil.dcm": small}) }, Limits{}, "path traversal", false},
		{"absolute", func(t *testing.T) []byte { return zipBytes(t, map[string][]byte{"/etc/evil.dcm": small}) }, Limits{}, "absolute path", false},
		{"drive letter", func(t *testing.T) []byte { return zipBytes(t, map[string][]byte{`C:\evil.dcm`: small}) }, Limits{}, "drive-letter", false},
		{"bomb ratio", func(t *testing.T) []byte { return zipBytes(t, map[string][]byte{"zeros.dcm": make([]byte, 4<<20)}) }, Limits{}, "compression ratio", false},
		{"too many files", func(t *testing.T) []byte {
			return zipBytes(t, map[string][]byte{"a": small, "b": small, "c": small, "d": small})
		}, Limits{MaxFiles: 3}, "MaxFiles", true},
		{"total size", func(t *testing.T) []byte {
			return zipBytes(t, map[string][]byte{"a": make([]byte, 3000), "b": make([]byte, 3000)})
		}, Limits{MaxZipBytes: 5000}, "MaxZipBytes", true},
		{"entry size", func(t *testing.T) []byte { return zipBytes(t, map[string][]byte{"a": make([]byte, 3000)}) }, Limits{MaxFileBytes: 1000}, "MaxFileBytes", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := c.zip(t)
			_, err := DiscoverZip(bytes.NewReader(data), int64(len(data)), "x.zip", c.lim, Options{})
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want %q", err, c.wantErr)
			}
			if c.isLimit != errors.Is(err, ErrLimit) || (!c.isLimit && !errors.Is(err, ErrUnsafeZip)) {
				t.Fatalf("error %v: wrong kind (limit %v)", err, c.isLimit)
			}
			// The same through a file path.
			p := filepath.Join(t.TempDir(), "x.zip")
			os.WriteFile(p, data, 0o644)
			if _, err := Discover(p, c.lim); err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Discover(path): error %v, want %q", err, c.wantErr)
			}
		})
	}

	t.Run("size lie", func(t *testing.T) {
		// An entry declaring 200 bytes that inflates to 4000.
		payload := append([]byte(strings.Repeat("\x00", 128)+"DICM"), make([]byte, 4000-132)...)
		var comp bytes.Buffer
		fw, _ := flate.NewWriter(&comp, flate.BestCompression)
		fw.Write(payload)
		fw.Close()
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, err := zw.CreateRaw(&zip.FileHeader{Name: "lie.dcm", Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(payload),
			CompressedSize64: uint64(comp.Len()), UncompressedSize64: 200})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(comp.Bytes())
		zw.Close()
		d, err := DiscoverZip(bytes.NewReader(buf.Bytes()), int64(buf.Len()), "lie.zip", Limits{}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Skipped) != 1 || !strings.Contains(d.Skipped[0].Reason, "declared 200 bytes") {
			t.Fatalf("skipped %+v, want the size lie reported", d.Skipped)
		}
	})
}

// TestMalformed checks clear errors for broken inputs built from
// pydicom's CT_small.dcm by cutting or patching bytes.
func TestMalformed(t *testing.T) {
	dir := needDir(t, pydicomTestFiles)
	ct, err := os.ReadFile(filepath.Join(dir, "CT_small.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	// Locate the Rows element (0028,0010) US in explicit VR LE.
	rowsAt := bytes.Index(ct, []byte{0x28, 0x00, 0x10, 0x00, 'U', 'S', 2, 0})
	if rowsAt < 0 {
		t.Fatal("Rows element not found in CT_small.dcm")
	}
	patch := func(off int, b ...byte) []byte {
		c := append([]byte(nil), ct...)
		copy(c[off:], b)
		return c
	}
	cases := []struct {
		name string
		data []byte
		lim  Limits
		want string
	}{
		{"truncated pixel data", ct[:len(ct)-1000], Limits{}, "(7FE0,0010): length 32768 exceeds"},
		{"truncated header", ct[:700], Limits{}, "truncated"},
		{"rows too large for pixel data", patch(rowsAt+8, 0x00, 0x01), Limits{}, "Rows 256 * Columns 128"},
		{"rows above limit", patch(rowsAt+8, 0x00, 0x10), Limits{MaxRows: 1024}, "MaxRows"},
		{"not dicom", []byte("just text, not a DICOM file at all, long enough to look at"), Limits{}, ""},
		{"file too big", ct, Limits{MaxFileBytes: 1000}, "MaxFileBytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadSlice(c.data, "bad.dcm", c.lim)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.dcm") {
				t.Fatalf("error %v, want one naming bad.dcm and %q", err, c.want)
			}
		})
	}
}
