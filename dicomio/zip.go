package dicomio

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync/atomic"
)

// ErrUnsafeZip is wrapped by errors for archives rejected as unsafe: path
// traversal, absolute entry names, compression bombs, sizes that differ
// from the declared ones.
var ErrUnsafeZip = errors.New("unsafe zip archive")

// source is where one DICOM object's bytes come from.
type source interface {
	// read returns the whole object, reusing buf's storage when it is
	// large enough.
	read(lim Limits, buf []byte) ([]byte, error)
}

// grow returns buf resized to n bytes, reallocating only when too small.
func grow(buf []byte, n int64) []byte {
	if int64(cap(buf)) >= n {
		return buf[:n]
	}
	return make([]byte, n)
}

// headPrefix is how much of a file Discover reads first: enough for the
// header (up to Pixel Data) of nearly every CT file; longer headers make it
// read the whole file.
const headPrefix = 16 << 10

// fileSource is a DICOM file on disk.
type fileSource string

func (f fileSource) read(lim Limits, buf []byte) ([]byte, error) {
	fh, err := os.Open(string(f))
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > lim.MaxFileBytes {
		return nil, &LimitError{What: string(f), Limit: "MaxFileBytes", Value: float64(st.Size()), Max: float64(lim.MaxFileBytes)}
	}
	buf = grow(buf, st.Size())
	if _, err := io.ReadFull(fh, buf); err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	return buf, nil
}

// zipArchive is an opened, checked zip archive.
type zipArchive struct {
	name   string
	zr     *zip.Reader
	closer io.Closer
	// read counts uncompressed bytes read so far, bounded by MaxZipBytes.
	read atomic.Int64
}

// zipSource is one entry of a zip archive.
type zipSource struct {
	arch *zipArchive
	f    *zip.File
}

func (z zipSource) label() string { return z.arch.name + "!" + z.f.Name }

func (z zipSource) read(lim Limits, buf []byte) ([]byte, error) {
	size := int64(z.f.UncompressedSize64)
	if size > lim.MaxFileBytes || z.f.UncompressedSize64 > 1<<62 {
		return nil, &LimitError{What: z.label(), Limit: "MaxFileBytes", Value: float64(z.f.UncompressedSize64), Max: float64(lim.MaxFileBytes)}
	}
	if tot := z.arch.read.Add(size); tot > lim.MaxZipBytes {
		return nil, &LimitError{What: z.arch.name, Limit: "MaxZipBytes", Value: float64(tot), Max: float64(lim.MaxZipBytes)}
	}
	rc, err := z.f.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", z.label(), err)
	}
	defer rc.Close()
	buf = grow(buf, size)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("%s: %w: declared %d bytes, reading failed: %v", z.label(), ErrUnsafeZip, size, err)
	}
	// The entry must end exactly at its declared size.
	var one [1]byte
	n, err := rc.Read(one[:])
	if n > 0 || (err != nil && err != io.EOF) {
		return nil, fmt.Errorf("%s: %w: declared %d bytes, but the entry holds more or fails its checksum (%v)", z.label(), ErrUnsafeZip, size, err)
	}
	return buf, nil
}

// openZip checks an archive's entries (names, declared sizes, ratios,
// count) and returns it. It reads no entry data.
func openZip(r io.ReaderAt, size int64, name string, lim Limits) (*zipArchive, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("dicomio: %s: not a readable zip archive: %w", name, err)
	}
	if len(zr.File) > lim.MaxFiles {
		return nil, &LimitError{What: name, Limit: "MaxFiles", Value: float64(len(zr.File)), Max: float64(lim.MaxFiles)}
	}
	var total uint64
	for _, f := range zr.File {
		if err := checkZipName(f.Name); err != nil {
			return nil, fmt.Errorf("dicomio: %s: entry %q: %w: %v", name, f.Name, ErrUnsafeZip, err)
		}
		if f.FileInfo().IsDir() {
			continue
		}
		if f.UncompressedSize64 > uint64(lim.MaxFileBytes) {
			return nil, &LimitError{What: name + "!" + f.Name, Limit: "MaxFileBytes", Value: float64(f.UncompressedSize64), Max: float64(lim.MaxFileBytes)}
		}
		total += f.UncompressedSize64
		if total > uint64(lim.MaxZipBytes) {
			return nil, &LimitError{What: name, Limit: "MaxZipBytes", Value: float64(total), Max: float64(lim.MaxZipBytes)}
		}
		// Ratio guard for entries above 1 MiB (small entries cannot
		// amplify much however well they compress).
		if f.UncompressedSize64 > 1<<20 {
			ratio := float64(f.UncompressedSize64) / float64(max(f.CompressedSize64, 1))
			if ratio > lim.MaxZipRatio {
				return nil, fmt.Errorf("dicomio: %s: entry %q: %w: compression ratio %.0f exceeds MaxZipRatio %.0f (compression bomb?)", name, f.Name, ErrUnsafeZip, ratio, lim.MaxZipRatio)
			}
		}
	}
	return &zipArchive{name: name, zr: zr}, nil
}

// checkZipName rejects entry names that are absolute or climb out of the
// archive root.
func checkZipName(n string) error {
	s := strings.ReplaceAll(n, `\`, "/")
	switch {
	case s == "":
		return errors.New("empty name")
	case strings.HasPrefix(s, "/"):
		return errors.New("absolute path")
	case len(s) >= 2 && s[1] == ':':
		return errors.New("drive-letter path")
	case strings.ContainsRune(s, 0):
		return errors.New("NUL in name")
	}
	for _, part := range strings.Split(s, "/") {
		if part == ".." {
			return errors.New("path traversal (..)")
		}
	}
	if c := path.Clean(s); c == ".." || strings.HasPrefix(c, "../") {
		return errors.New("path traversal (..)")
	}
	return nil
}

// isZipFile reports whether the file starts with a zip local header or
// is an empty zip (end-of-central-directory record).
func isZipFile(head []byte) bool {
	return bytes.HasPrefix(head, []byte("PK\x03\x04")) || bytes.HasPrefix(head, []byte("PK\x05\x06"))
}
