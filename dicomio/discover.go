package dicomio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// SOP classes recognised by Discover.
const (
	sopCT         = "1.2.840.10008.5.1.4.1.1.2"
	sopEnhancedCT = "1.2.840.10008.5.1.4.1.1.2.1"
	sopLegacyCT   = "1.2.840.10008.5.1.4.1.1.2.2"
	sopDICOMDIR   = "1.2.840.10008.1.3.10"
)

// Skipped is an input file (or zip entry) that Discover did not put in
// any series, and why.
type Skipped struct {
	Path   string
	Reason string
}

// Discovery is what Discover found: image series and skipped inputs.
type Discovery struct {
	// Series holds the selected image series, largest (most slices) first.
	Series []*Series
	// Skipped lists inputs left out, each with its reason: not DICOM,
	// DICOMDIR, no pixel data (SR, RTSTRUCT, ...), unreadable, unsupported
	// pixel format, or an image series of another modality (one entry per
	// series) when only CT was asked for.
	Skipped []Skipped
	closers []io.Closer
}

// Close releases the zip archive a Discovery may hold open; its series
// cannot be loaded afterwards. It is a no-op for folders and files.
func (d *Discovery) Close() error {
	var first error
	for _, c := range d.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	d.closers = nil
	return first
}

// Options selects what Discover returns.
type Options struct {
	// AllModalities keeps image series of every modality (MR, PT, RT
	// dose, secondary capture, ...); otherwise only CT series are kept.
	AllModalities bool
}

// Discover finds the CT image series under path: a folder (searched
// recursively), a single DICOM file, or a .zip archive (entries checked
// for path traversal and compression bombs before anything is read). Files
// are parsed header-only and grouped by SeriesInstanceUID; everything left
// out is listed in Discovery.Skipped with the reason. A zip archive stays
// open until Discovery.Close.
func Discover(path string, lim Limits) (*Discovery, error) {
	return DiscoverWith(path, lim, Options{})
}

// DiscoverWith is Discover with options (for example AllModalities).
func DiscoverWith(path string, lim Limits, opt Options) (*Discovery, error) {
	lim = lim.withDefaults()
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("dicomio: %w", err)
	}
	c := &collector{lim: lim, d: &Discovery{}, series: map[string]*Series{}}
	if st.IsDir() {
		err = c.walkDir(path)
	} else {
		err = c.addPath(path, st.Size(), true)
	}
	if err != nil {
		c.d.Close()
		return nil, err
	}
	c.finish(opt)
	return c.d, nil
}

// DiscoverZip is Discover for a zip archive held by r (size bytes long);
// name labels it in paths and errors. r must stay readable while series
// are loaded.
func DiscoverZip(r io.ReaderAt, size int64, name string, lim Limits, opt Options) (*Discovery, error) {
	lim = lim.withDefaults()
	c := &collector{lim: lim, d: &Discovery{}, series: map[string]*Series{}}
	if err := c.addZip(r, size, name); err != nil {
		return nil, err
	}
	c.finish(opt)
	return c.d, nil
}

type collector struct {
	lim    Limits
	d      *Discovery
	series map[string]*Series
	order  []string
	files  int
	// head and full are read buffers reused from object to object: the
	// first bytes of a file, and a whole object when those do not hold
	// its header. Nothing parsed from them aliases them.
	head, full []byte
}

func (c *collector) skip(p, reason string) { c.d.Skipped = append(c.d.Skipped, Skipped{p, reason}) }

func (c *collector) countFile(what string) error {
	c.files++
	if c.files > c.lim.MaxFiles {
		return &LimitError{What: what, Limit: "MaxFiles", Value: float64(c.files), Max: float64(c.lim.MaxFiles)}
	}
	return nil
}

func (c *collector) walkDir(root string) error {
	return filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			c.skip(p, "unreadable: "+err.Error())
			if de != nil && de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if de.IsDir() {
			return nil
		}
		if !de.Type().IsRegular() {
			c.skip(p, "not a regular file (symbolic link or device)")
			return nil
		}
		info, err := de.Info()
		if err != nil {
			c.skip(p, "unreadable: "+err.Error())
			return nil
		}
		return c.addPath(p, info.Size(), false)
	})
}

// addPath classifies one file. A zip archive, named directly (top) or met
// in a folder walk, is searched like a folder; errors are fatal only for
// the path given to Discover itself. The file is opened once: its first
// headPrefix bytes serve both to recognise it and to parse its header.
func (c *collector) addPath(p string, size int64, top bool) error {
	if err := c.countFile(p); err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		if top {
			return fmt.Errorf("dicomio: %w", err)
		}
		c.skip(p, "unreadable: "+err.Error())
		return nil
	}
	if st, err := f.Stat(); err == nil {
		size = st.Size() // the file opened, should it have changed since the walk
	}
	c.head = grow(c.head, max(min(headPrefix, size), 0))
	n, readErr := io.ReadFull(f, c.head)
	head := c.head[:n]
	if isZipFile(head) || (top && strings.EqualFold(filepath.Ext(p), ".zip")) {
		if err := c.addZip(f, size, p); err != nil {
			f.Close()
			if top {
				return err
			}
			c.skip(p, err.Error())
			return nil
		}
		c.d.closers = append(c.d.closers, f)
		return nil
	}
	f.Close()
	if size > c.lim.MaxFileBytes {
		c.skip(p, (&LimitError{What: p, Limit: "MaxFileBytes", Value: float64(size), Max: float64(c.lim.MaxFileBytes)}).Error())
		return nil
	}
	if readErr != nil {
		c.skip(p, fmt.Sprintf("unreadable: %s: %v", p, readErr))
		return nil
	}
	if !looksLikeDICOM(head) {
		c.skip(p, "not DICOM (no DICM magic at byte 128 and no recognisable data element at byte 0)")
		return nil
	}
	c.addObject(p, fileSource(p), head, size)
	return nil
}

func (c *collector) addZip(r io.ReaderAt, size int64, name string) error {
	arch, err := openZip(r, size, name, c.lim)
	if err != nil {
		return err
	}
	for _, f := range arch.zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		zs := zipSource{arch: arch, f: f}
		if err := c.countFile(zs.label()); err != nil {
			return err
		}
		if strings.EqualFold(zipEntryExt(f.Name), ".zip") {
			c.skip(zs.label(), "nested zip archive: not opened")
			continue
		}
		c.addObject(zs.label(), zs, nil, 0)
	}
	return nil
}

func zipEntryExt(n string) string { return filepath.Ext(strings.ReplaceAll(n, `\`, "/")) }

// looksLikeDICOM accepts a Part 10 file (DICM at 128) or a bare dataset
// whose first element is in group 0002 or 0008 (either byte order).
func looksLikeDICOM(h []byte) bool {
	if len(h) >= 132 && string(h[128:132]) == "DICM" {
		return true
	}
	if len(h) < 8 {
		return false
	}
	gLE := uint16(h[0]) | uint16(h[1])<<8
	gBE := uint16(h[1]) | uint16(h[0])<<8
	return gLE == 0x0002 || gLE == 0x0008 || gBE == 0x0008
}

// addObject parses one object's header and files it under its series.
// prefix, when not nil, holds the first bytes of the object (total bytes
// long): the header is parsed from it when it reaches Pixel Data, else the
// whole object is read. Neither prefix nor the read buffer is retained.
func (c *collector) addObject(p string, src source, prefix []byte, total int64) {
	var (
		in  *Instance
		lay *layout
		err error
	)
	if prefix != nil {
		in, lay, err = parsePrefix(prefix, total, p, c.lim)
		if errors.Is(err, errNeedFull) {
			in, err = nil, nil
		}
	}
	if in == nil && err == nil {
		var data []byte
		if data, err = src.read(c.lim, c.full); err == nil {
			c.full = data
			if !looksLikeDICOM(data) {
				c.skip(p, "not DICOM (no DICM magic at byte 128 and no recognisable data element at byte 0)")
				return
			}
			if in, lay, err = parseObject(data, p, c.lim); err != nil {
				c.skip(p, "unreadable DICOM: "+err.Error())
				return
			}
		}
	}
	if err != nil {
		var le *LimitError
		if errors.As(err, &le) || errors.Is(err, ErrUnsafeZip) {
			c.skip(p, err.Error())
			return
		}
		c.skip(p, "unreadable: "+err.Error())
		return
	}
	in.src = src
	switch {
	case in.SOPClassUID == sopDICOMDIR:
		c.skip(p, "DICOMDIR (media directory, not an image)")
		return
	case !in.IsImage() || !lay.hasPixels:
		c.skip(p, fmt.Sprintf("no image pixel data (SOP class %s, modality %q)", sopName(in.SOPClassUID), in.Modality))
		return
	}
	if err := in.checkFormat(); err != nil {
		c.skip(p, err.Error())
		return
	}
	key := in.SeriesUID
	s := c.series[key]
	if s == nil {
		s = &Series{UID: in.SeriesUID, StudyUID: in.StudyUID, Modality: in.Modality, Description: in.Description,
			SOPClassUID: in.SOPClassUID, Rows: in.Rows, Cols: in.Cols, lim: c.lim}
		if key == "" {
			s.Warnings = append(s.Warnings, "objects without SeriesInstanceUID grouped together")
		}
		c.series[key] = s
		c.order = append(c.order, key)
	}
	s.Instances = append(s.Instances, in)
}

func sopName(u string) string {
	if u == "" {
		return "(none)"
	}
	return syntaxName(u)
}

// isCT reports whether a series is CT by modality or SOP class.
// The Modality decides when present; the SOP class otherwise.
func (s *Series) isCT() bool {
	if s.Modality != "" {
		return s.Modality == "CT"
	}
	switch s.SOPClassUID {
	case sopCT, sopEnhancedCT, sopLegacyCT:
		return true
	}
	return false
}

// finish selects and sorts the series.
func (c *collector) finish(opt Options) {
	for _, k := range c.order {
		s := c.series[k]
		if !opt.AllModalities && !s.isCT() {
			c.skip(s.Instances[0].Path, fmt.Sprintf("series %s: modality %q, %d objects: not CT (use AllModalities to keep it)", s.UID, s.Modality, len(s.Instances)))
			continue
		}
		c.d.Series = append(c.d.Series, s)
	}
	sort.SliceStable(c.d.Series, func(i, j int) bool { return c.d.Series[i].NumSlices() > c.d.Series[j].NumSlices() })
}
