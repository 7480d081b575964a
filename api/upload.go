package api

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/ctlens/ctlens/dicomio"
)

// Input kinds of a study.
const (
	kindDICOM = "dicom"
	kindZip   = "zip"
	kindNIfTI = "nifti"
)

// storedFile is one uploaded file: where it is stored (a generated name,
// so that nothing the client chose reaches the file system or the logs),
// the name the client gave (for error messages to that client only), its
// kind and size.
type storedFile struct {
	path string
	name string
	kind string
	size int64
}

// upload is a received study form.
type upload struct {
	dir     string
	files   []storedFile
	bytes   int64
	model   string
	method  string
	heatmap bool
	// kind and input (relative to dir) say what the scorer reads.
	kind, input string
}

// receive streams the multipart form of r to dir/input, bounded by
// maxBody bytes and lim.MaxFiles files, without holding a file in memory.
func (s *Server) receive(w http.ResponseWriter, r *http.Request, dir string, maxBody int64) (*upload, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return nil, errorf(http.StatusUnsupportedMediaType, "bad_content_type",
			"Content-Type is %q: send multipart/form-data with one or more \"file\" parts", r.Header.Get("Content-Type"))
	}
	if r.ContentLength > maxBody {
		return nil, errorf(http.StatusRequestEntityTooLarge, "too_large",
			"request body of %d bytes exceeds the upload limit of %d bytes", r.ContentLength, maxBody)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "bad_multipart", "malformed multipart form: %v", err)
	}
	in := filepath.Join(dir, "input")
	if err := os.MkdirAll(in, 0o700); err != nil {
		return nil, err
	}
	u := &upload{dir: dir, heatmap: true}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, bodyError(err, "malformed multipart form")
		}
		switch part.FormName() {
		case "file":
			if len(u.files) >= s.cfg.Limits.MaxFiles {
				return nil, errorf(http.StatusRequestEntityTooLarge, "limit_exceeded",
					"more than %d files in the upload (MaxFiles)", s.cfg.Limits.MaxFiles)
			}
			f, err := s.storePart(part, in, len(u.files)+1)
			if err != nil {
				return nil, err
			}
			u.files = append(u.files, f)
			u.bytes += f.size
		case "model", "method", "heatmap":
			v, err := io.ReadAll(io.LimitReader(part, 257))
			if err != nil {
				return nil, bodyError(err, "reading form field "+part.FormName())
			}
			if len(v) > 256 {
				return nil, errorf(http.StatusBadRequest, "bad_field", "form field %q is longer than 256 bytes", part.FormName())
			}
			val := strings.TrimSpace(string(v))
			switch part.FormName() {
			case "model":
				u.model = val
			case "method":
				u.method = val
			case "heatmap":
				b, err := strconv.ParseBool(val)
				if err != nil {
					return nil, errorf(http.StatusBadRequest, "bad_field", "form field \"heatmap\" is %q: want true or false", val)
				}
				u.heatmap = b
			}
		default:
			if _, err := io.Copy(io.Discard, part); err != nil {
				return nil, bodyError(err, "reading form field "+part.FormName())
			}
		}
		part.Close()
	}
	return u, nil
}

// bodyError maps an error reading the request body: too large (413),
// too slow (408), or malformed (400).
func bodyError(err error, what string) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "request body exceeds the upload limit of %d bytes", mbe.Limit)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errorf(http.StatusRequestTimeout, "timeout", "%s: the upload did not finish in time", what)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errorf(http.StatusBadRequest, "bad_multipart", "%s: the body ended before the closing boundary (truncated, or a boundary other than the Content-Type's)", what)
	}
	return errorf(http.StatusBadRequest, "bad_multipart", "%s: %v", what, err)
}

// partFileName returns the file name the client gave a part, refusing
// absolute names and names that climb out of their folder ("..").
// Folders inside the name (a browser's folder upload) are kept for
// messages; the stored file gets a generated name anyway.
func partFileName(p *multipart.Part, n int) (string, error) {
	_, params, _ := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	raw := params["filename"]
	if raw == "" {
		return fmt.Sprintf("file #%d", n), nil
	}
	s := strings.ReplaceAll(raw, `\`, "/")
	switch {
	case strings.HasPrefix(s, "/"):
		return "", errorf(http.StatusBadRequest, "unsafe_path", "file name %q is an absolute path", raw)
	case len(s) >= 2 && s[1] == ':':
		return "", errorf(http.StatusBadRequest, "unsafe_path", "file name %q has a drive letter", raw)
	case strings.ContainsRune(s, 0):
		return "", errorf(http.StatusBadRequest, "unsafe_path", "file name %q contains NUL", raw)
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == ".." {
			return "", errorf(http.StatusBadRequest, "unsafe_path", "file name %q climbs out of its folder (path traversal)", raw)
		}
	}
	return raw, nil
}

// storePart copies one file part to in/f<n>.<ext>, the extension chosen
// from the content: .zip, .nii, .nii.gz, or .dcm for anything else (which
// dicomio then accepts or rejects).
func (s *Server) storePart(p *multipart.Part, in string, n int) (storedFile, error) {
	name, err := partFileName(p, n)
	if err != nil {
		return storedFile{}, err
	}
	tmp := filepath.Join(in, fmt.Sprintf("f%06d.part", n))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return storedFile{}, err
	}
	head := &headWriter{max: 352}
	size, err := io.Copy(io.MultiWriter(f, head), p)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return storedFile{}, bodyError(err, fmt.Sprintf("file %q", name))
	}
	if size == 0 {
		return storedFile{}, errorf(http.StatusBadRequest, "empty_file", "file %q is empty", name)
	}
	kind, ext := sniff(head.b, tmp)
	final := filepath.Join(in, fmt.Sprintf("f%06d%s", n, ext))
	if err := os.Rename(tmp, final); err != nil {
		return storedFile{}, err
	}
	return storedFile{path: final, name: name, kind: kind, size: size}, nil
}

// headWriter keeps the first max bytes written to it.
type headWriter struct {
	b   []byte
	max int
}

// Write keeps what still fits in the head and reports p as written.
func (h *headWriter) Write(p []byte) (int, error) {
	if k := h.max - len(h.b); k > 0 {
		h.b = append(h.b, p[:min(k, len(p))]...)
	}
	return len(p), nil
}

// sniff classifies a file by its first bytes: a zip archive (local header
// or empty-archive record), a NIfTI-1/2 header (raw or gzip-compressed),
// or else a DICOM candidate.
func sniff(head []byte, path string) (kind, ext string) {
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")) || bytes.HasPrefix(head, []byte("PK\x05\x06")):
		return kindZip, ".zip"
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		if _, err := niftiDims(path); err == nil {
			return kindNIfTI, ".nii.gz"
		}
	default:
		if _, _, err := parseNIfTIHeader(head); err == nil {
			return kindNIfTI, ".nii"
		}
	}
	return kindDICOM, ".dcm"
}

// parseNIfTIHeader reads dim[1..3] from a NIfTI-1 (348-byte header, magic
// "n+1" or "ni1" at 344) or NIfTI-2 (540-byte header, magic "n+2" at 4)
// header in either byte order; version is 1 or 2.
func parseNIfTIHeader(h []byte) (dims [3]int64, version int, err error) {
	if len(h) < 4 {
		return dims, 0, errors.New("shorter than a NIfTI header")
	}
	for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		switch bo.Uint32(h) {
		case 348:
			if len(h) < 348 || (string(h[344:347]) != "n+1" && string(h[344:347]) != "ni1") {
				return dims, 0, errors.New("NIfTI-1 header without its magic")
			}
			nd := int16(bo.Uint16(h[40:]))
			if nd < 1 || nd > 7 {
				return dims, 0, fmt.Errorf("NIfTI-1 dim[0] = %d, want 1..7", nd)
			}
			for a := range 3 {
				dims[a] = 1
				if a < int(nd) {
					dims[a] = int64(int16(bo.Uint16(h[42+2*a:])))
				}
			}
			version = 1
		case 540:
			if len(h) < 80 || string(h[4:7]) != "n+2" {
				return dims, 0, errors.New("NIfTI-2 header without its magic")
			}
			nd := int64(bo.Uint64(h[16:]))
			if nd < 1 || nd > 7 {
				return dims, 0, fmt.Errorf("NIfTI-2 dim[0] = %d, want 1..7", nd)
			}
			for a := range 3 {
				dims[a] = 1
				if a < int(nd) {
					dims[a] = int64(bo.Uint64(h[24+8*a:]))
				}
			}
			version = 2
		default:
			continue
		}
		for a, d := range dims {
			if d < 1 {
				return dims, 0, fmt.Errorf("NIfTI dim[%d] = %d, want ≥ 1", a+1, d)
			}
		}
		return dims, version, nil
	}
	return dims, 0, errors.New("no NIfTI header (sizeof_hdr is neither 348 nor 540)")
}

// niftiDims reads the grid size of a .nii or .nii.gz file from its header.
func niftiDims(path string) ([3]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return [3]int64{}, err
	}
	defer f.Close()
	var r io.Reader = f
	var magic [2]byte
	if _, err := io.ReadFull(f, magic[:]); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return [3]int64{}, err
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			return [3]int64{}, err
		}
		r = zr
	} else if _, err := f.Seek(0, io.SeekStart); err != nil {
		return [3]int64{}, err
	}
	h := make([]byte, 544)
	n, err := io.ReadFull(r, h)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return [3]int64{}, err
	}
	d, _, err := parseNIfTIHeader(h[:n])
	return d, err
}

// check decides what the scorer will read and checks it with dicomio's
// guards: one zip, or one NIfTI file, or DICOM files; zip entries (no
// traversal, no compression bomb, sizes that do not lie), file counts,
// sizes and every series' voxel count within the limits, and at least one
// CT series. msg rewrites stored paths into the client's names.
func (s *Server) check(u *upload, msg func(string) string) error {
	if len(u.files) == 0 {
		return errorf(http.StatusBadRequest, "no_files",
			"no \"file\" part in the form: send DICOM files, one .zip archive or one .nii/.nii.gz file")
	}
	count := map[string]int{}
	for _, f := range u.files {
		count[f.kind]++
	}
	lim := s.cfg.Limits
	switch {
	case count[kindNIfTI] > 0 || count[kindZip] > 0:
		if len(u.files) > 1 {
			return errorf(http.StatusBadRequest, "mixed_input",
				"the upload holds %d files of which %d zip and %d NIfTI: send one zip archive, or one NIfTI file, or DICOM files only",
				len(u.files), count[kindZip], count[kindNIfTI])
		}
	}
	f := u.files[0]
	switch f.kind {
	case kindNIfTI:
		u.kind, u.input = kindNIfTI, filepath.Join("input", filepath.Base(f.path))
		d, err := niftiDims(f.path)
		if err != nil {
			return errorf(http.StatusUnsupportedMediaType, "not_nifti", "file %q: not a readable NIfTI image: %v", f.name, err)
		}
		if v := d[0] * d[1] * d[2]; d[0] > 1<<20 || d[1] > 1<<20 || d[2] > 1<<20 || v > lim.MaxVoxels {
			return &dicomio.LimitError{What: f.path, Limit: "MaxVoxels", Value: float64(d[0]) * float64(d[1]) * float64(d[2]), Max: float64(lim.MaxVoxels)}
		}
		return nil
	case kindZip:
		u.kind, u.input = kindZip, filepath.Join("input", filepath.Base(f.path))
		return s.checkDICOM(f.path, lim, msg)
	default:
		u.kind, u.input = kindDICOM, "input"
		return s.checkDICOM(filepath.Join(u.dir, "input"), lim, msg)
	}
}

// checkDICOM runs dicomio.Discover on path and checks what it found.
func (s *Server) checkDICOM(path string, lim dicomio.Limits, msg func(string) string) error {
	d, err := dicomio.Discover(path, lim)
	if err != nil {
		return err
	}
	defer d.Close()
	if len(d.Series) == 0 {
		return noSeriesError(d.Skipped, msg)
	}
	for _, sr := range d.Series {
		v := float64(sr.Rows) * float64(sr.Cols) * float64(sr.NumSlices())
		if v > float64(lim.MaxVoxels) {
			return &dicomio.LimitError{What: "series " + sr.UID, Limit: "MaxVoxels", Value: v, Max: float64(lim.MaxVoxels)}
		}
	}
	return nil
}

// noSeriesError explains why no CT series was found: every file not DICOM
// (415), a file over a limit (413), an unsafe zip entry (422), or DICOM
// without a usable CT series (422). The message lists up to three files
// with their reasons.
func noSeriesError(skipped []dicomio.Skipped, msg func(string) string) error {
	if len(skipped) == 0 {
		return errorf(http.StatusUnsupportedMediaType, "not_dicom", "the upload holds no files (an empty archive?)")
	}
	var notDICOM, limit, unsafe int
	for _, k := range skipped {
		switch {
		case strings.HasPrefix(k.Reason, "not DICOM"):
			notDICOM++
		case strings.Contains(k.Reason, dicomio.ErrLimit.Error()):
			limit++
		case strings.Contains(k.Reason, dicomio.ErrUnsafeZip.Error()):
			unsafe++
		}
	}
	list := make([]string, 0, 4)
	sorted := append([]dicomio.Skipped(nil), skipped...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for i, k := range sorted {
		if i == 3 {
			list = append(list, fmt.Sprintf("and %d more", len(sorted)-3))
			break
		}
		list = append(list, msg(k.Path)+": "+msg(k.Reason))
	}
	detail := strings.Join(list, "; ")
	switch {
	case notDICOM == len(skipped):
		return errorf(http.StatusUnsupportedMediaType, "not_dicom", "no DICOM, zip or NIfTI data in the upload: %s", detail)
	case limit > 0:
		return errorf(http.StatusRequestEntityTooLarge, "limit_exceeded", "a file exceeds a limit: %s", detail)
	case unsafe > 0:
		return errorf(http.StatusUnprocessableEntity, "unsafe_zip", "unsafe zip archive: %s", detail)
	}
	return errorf(http.StatusUnprocessableEntity, "no_ct_series", "no usable CT image series: %s", detail)
}

// clientText returns a function rewriting text for the client: each stored
// file's path (absolute, relative to the study folder, or its base name as
// a scorer relative to the input folder names it) becomes the name the
// client gave it, and the study folder disappears.
func clientText(dir string, names map[string]string) func(string) string {
	type pair struct{ from, to string }
	var ps []pair
	for rel, name := range names {
		ps = append(ps, pair{filepath.Join(dir, filepath.FromSlash(rel)), name}, pair{rel, name}, pair{path.Base(rel), name})
	}
	// Longer keys first, so that a path is replaced before its tail.
	sort.SliceStable(ps, func(i, j int) bool { return len(ps[i].from) > len(ps[j].from) })
	args := make([]string, 0, 2*len(ps)+2)
	args = append(args, dir+string(filepath.Separator), "")
	for _, p := range ps {
		args = append(args, p.from, p.to)
	}
	return strings.NewReplacer(args...).Replace
}

// rewriteJSON applies f to every string value of a JSON document (keys
// and numbers untouched).
func rewriteJSON(raw []byte, f func(string) string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var walk func(any) any
	walk = func(x any) any {
		switch t := x.(type) {
		case string:
			return f(t)
		case []any:
			for i := range t {
				t[i] = walk(t[i])
			}
		case map[string]any:
			for k := range t {
				t[k] = walk(t[k])
			}
		}
		return x
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(walk(v)); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// names maps each stored file (relative to the study folder) to the
// client's name for it.
func (u *upload) names() map[string]string {
	m := make(map[string]string, len(u.files))
	for _, f := range u.files {
		rel, err := filepath.Rel(u.dir, f.path)
		if err == nil {
			m[filepath.ToSlash(rel)] = f.name
		}
	}
	return m
}

// namesFile is where a study keeps the client's file names (read only to
// word error messages for that study's client; never logged).
const namesFile = "names.json"

func writeNames(dir string, names map[string]string) error {
	b, err := json.Marshal(names)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, namesFile), b, 0o600)
}

func readNames(dir string) map[string]string {
	b, err := os.ReadFile(filepath.Join(dir, namesFile))
	if err != nil {
		return nil
	}
	var m map[string]string
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}
