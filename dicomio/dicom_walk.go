package dicomio

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// Transfer syntax UIDs handled by this package.
const (
	tsImplicitLE = "1.2.840.10008.1.2"
	tsExplicitLE = "1.2.840.10008.1.2.1"
	tsDeflateLE  = "1.2.840.10008.1.2.1.99"
	tsExplicitBE = "1.2.840.10008.1.2.2"
	tsJPEGBase   = "1.2.840.10008.1.2.4.50"
	tsJPEGExt    = "1.2.840.10008.1.2.4.51"
	tsJPEGLL14   = "1.2.840.10008.1.2.4.57"
	tsJPEGLLSV1  = "1.2.840.10008.1.2.4.70"
	tsJPEGLS     = "1.2.840.10008.1.2.4.80"
	tsJPEGLSNear = "1.2.840.10008.1.2.4.81"
	tsJ2KLL      = "1.2.840.10008.1.2.4.90"
	tsJ2K        = "1.2.840.10008.1.2.4.91"
	tsRLE        = "1.2.840.10008.1.2.5"
)

// maxNesting bounds sequence nesting depth in the structural walk.
const maxNesting = 32

// layout is what the structural walk of one DICOM byte stream found: the
// transfer syntax and where the top-level Pixel Data element lies.
type layout struct {
	// ts is the transfer syntax UID ("" when the stream has no meta header
	// and the syntax was inferred: see inferred).
	ts       string
	inferred bool
	bo       binary.ByteOrder
	implicit bool
	// body is the dataset bytes after the meta header (inflated for the
	// deflate syntax); pixel offsets index body.
	body []byte
	// hasPixels reports a top-level (7FE0,0010); native pixel data is
	// body[pixOff:pixOff+pixLen]; encapsulated data is items (the first
	// is the Basic Offset Table) with itemOff the offset of each item's
	// tag in body.
	hasPixels    bool
	encapsulated bool
	// pixTag is the offset in body of the Pixel Data element's tag.
	pixTag  int
	pixOff  int
	pixLen  int
	items   [][]byte
	itemOff []int
}

// walker checks the element structure of a dataset: every length fits in
// its container, nesting is bounded. It runs before the third-party parser
// so that no length read from the file can make that parser allocate more
// than the input size.
type walker struct {
	buf []byte
	bo  binary.ByteOrder
	lay *layout
	// extra is the number of bytes of the object beyond buf (prefix
	// mode: buf is the start of a larger file); the walk then stops at
	// Pixel Data.
	extra int64
}

// errNeedFull reports that a prefix did not suffice to walk the header.
var errNeedFull = errors.New("header extends beyond the bytes read")

var (
	errTruncated = errors.New("truncated")
	explicitLong = map[string]bool{"OB": true, "OD": true, "OF": true, "OL": true, "OV": true, "OW": true,
		"SQ": true, "UC": true, "UN": true, "UR": true, "UT": true, "SV": true, "UV": true}
	knownVR = map[string]bool{"AE": true, "AS": true, "AT": true, "CS": true, "DA": true, "DS": true, "DT": true,
		"FL": true, "FD": true, "IS": true, "LO": true, "LT": true, "PN": true, "SH": true, "SL": true, "SS": true,
		"ST": true, "TM": true, "UI": true, "UL": true, "US": true, "OB": true, "OD": true, "OF": true, "OL": true,
		"OV": true, "OW": true, "SQ": true, "UC": true, "UN": true, "UR": true, "UT": true, "SV": true, "UV": true}
)

func tagString(g, e uint16) string { return fmt.Sprintf("(%04X,%04X)", g, e) }

// scanLayout validates the element structure of a DICOM stream (Part 10
// file with or without preamble) and locates its pixel data. maxInflate
// bounds the size of an inflated deflate-syntax body.
func scanLayout(data []byte, maxInflate int64) (*layout, error) {
	return scanPrefix(data, int64(len(data)), maxInflate)
}

// scanPrefix is scanLayout for the first len(data) bytes of an object of
// total bytes. When total > len(data) it checks the header up to Pixel
// Data and the Pixel Data length against total, and returns errNeedFull
// when the prefix is too short (or the data are deflated or encapsulated).
func scanPrefix(data []byte, total, maxInflate int64) (*layout, error) {
	lay := &layout{bo: binary.LittleEndian}
	pos := 0
	hasMeta := false
	if len(data) >= 132 && string(data[128:132]) == "DICM" {
		pos = 132
		hasMeta = true
	} else if len(data) >= 4 && binary.LittleEndian.Uint16(data) == 2 {
		hasMeta = true // meta group without preamble
	}
	if hasMeta {
		for pos+8 <= len(data) && binary.LittleEndian.Uint16(data[pos:]) == 0x0002 {
			el := binary.LittleEndian.Uint16(data[pos+2:])
			vr := string(data[pos+4 : pos+6])
			var n, hdr int
			if explicitLong[vr] {
				if pos+12 > len(data) {
					return nil, fmt.Errorf("file meta element %s: %w", tagString(2, el), errTruncated)
				}
				n, hdr = int(binary.LittleEndian.Uint32(data[pos+8:])), 12
			} else {
				n, hdr = int(binary.LittleEndian.Uint16(data[pos+6:])), 8
			}
			if n < 0 || pos+hdr+n > len(data) || n == 0xFFFFFFFF {
				return nil, fmt.Errorf("file meta element %s: length %d exceeds the %d bytes left: %w", tagString(2, el), n, len(data)-pos-hdr, errTruncated)
			}
			if el == 0x0010 {
				lay.ts = string(bytes.TrimRight(data[pos+hdr:pos+hdr+n], "\x00 "))
			}
			pos += hdr + n
		}
	}
	body := data[pos:]
	switch lay.ts {
	case tsImplicitLE:
		lay.implicit = true
	case tsExplicitBE:
		lay.bo = binary.BigEndian
	case tsDeflateLE:
		if total > int64(len(data)) {
			return nil, errNeedFull
		}
		fr := flate.NewReader(bytes.NewReader(body))
		var b bytes.Buffer
		n, err := io.Copy(&b, io.LimitReader(fr, maxInflate+1))
		if err != nil {
			return nil, fmt.Errorf("inflating deflated dataset: %w", err)
		}
		if n > maxInflate {
			return nil, &LimitError{What: "deflated dataset", Limit: "MaxFileBytes", Value: float64(n), Max: float64(maxInflate)}
		}
		body = b.Bytes()
	case "":
		lay.inferred = true
		lay.implicit = true
		if len(body) >= 6 {
			vr := string(body[4:6])
			switch {
			case knownVR[vr] && binary.LittleEndian.Uint16(body) < 0x0100:
				lay.implicit = false
			case knownVR[vr]:
				lay.implicit = false
				lay.bo = binary.BigEndian
			}
		}
	default:
		// explicit little endian, and every compressed syntax
	}
	lay.body = body
	w := &walker{buf: body, bo: lay.bo, lay: lay, extra: total - int64(len(data))}
	if _, err := w.dataset(0, len(body), lay.implicit, 0, false); err != nil {
		if w.extra > 0 {
			return nil, errNeedFull
		}
		return nil, err
	}
	if w.extra > 0 && !lay.hasPixels {
		return nil, errNeedFull
	}
	return lay, nil
}

// dataset walks the elements of buf[pos:end]. When untilItemEnd is set it
// stops after an Item Delimitation Item and returns the position after it.
func (w *walker) dataset(pos, end int, implicit bool, depth int, untilItemEnd bool) (int, error) {
	if depth > maxNesting {
		return 0, fmt.Errorf("sequences nested deeper than %d levels", maxNesting)
	}
	b := w.buf
	for pos < end {
		if pos+8 > end {
			if depth == 0 && allZero(b[pos:end]) {
				return end, nil // trailing padding
			}
			return 0, fmt.Errorf("element at byte %d: %w", pos, errTruncated)
		}
		g, e := w.bo.Uint16(b[pos:]), w.bo.Uint16(b[pos+2:])
		if g == 0xFFFE {
			n := w.bo.Uint32(b[pos+4:])
			if e == 0xE00D && untilItemEnd {
				return pos + 8, nil
			}
			if depth == 0 && e == 0xE0DD {
				// stray sequence delimiter at top level: tolerated, as many readers do
				pos += 8
				continue
			}
			return 0, fmt.Errorf("unexpected item tag %s (length %d) at byte %d", tagString(g, e), n, pos)
		}
		var vr string
		var n uint32
		hdr := 8
		if implicit {
			n = w.bo.Uint32(b[pos+4:])
			if info, err := tag.Find(tag.Tag{Group: g, Element: e}); err == nil && len(info.VRs) > 0 {
				vr = info.VRs[0]
			}
		} else {
			vr = string(b[pos+4 : pos+6])
			if explicitLong[vr] || !knownVR[vr] {
				if pos+12 > end {
					return 0, fmt.Errorf("element %s: %w", tagString(g, e), errTruncated)
				}
				n, hdr = w.bo.Uint32(b[pos+8:]), 12
			} else {
				n = uint32(w.bo.Uint16(b[pos+6:]))
			}
		}
		isPixel := depth == 0 && g == 0x7FE0 && e == 0x0010
		if isPixel {
			w.lay.pixTag = pos
		}
		pos += hdr
		if isPixel && w.extra > 0 {
			if n == 0xFFFFFFFF {
				return 0, errNeedFull
			}
			if int64(n) > int64(end-pos)+w.extra {
				return 0, fmt.Errorf("element %s: length %d exceeds the %d bytes left: %w", tagString(g, e), n, int64(end-pos)+w.extra, errTruncated)
			}
			w.lay.hasPixels, w.lay.pixOff, w.lay.pixLen = true, pos, int(n)
			return end, nil
		}
		if n == 0xFFFFFFFF {
			var err error
			if isPixel {
				pos, err = w.encapsulated(pos, end)
			} else {
				pos, err = w.sequence(pos, end, implicit || vr == "UN", depth, -1)
			}
			if err != nil {
				return 0, fmt.Errorf("element %s: %w", tagString(g, e), err)
			}
			continue
		}
		if int64(n) > int64(end-pos) {
			return 0, fmt.Errorf("element %s: length %d exceeds the %d bytes left: %w", tagString(g, e), n, end-pos, errTruncated)
		}
		if vr == "SQ" {
			if _, err := w.sequence(pos, pos+int(n), implicit, depth, int(n)); err != nil {
				return 0, fmt.Errorf("element %s: %w", tagString(g, e), err)
			}
		}
		if isPixel {
			w.lay.hasPixels, w.lay.pixOff, w.lay.pixLen = true, pos, int(n)
		}
		pos += int(n)
	}
	if untilItemEnd {
		return 0, fmt.Errorf("item without delimiter: %w", errTruncated)
	}
	return pos, nil
}

// sequence walks the items of a sequence starting at pos. n is the
// sequence length, or -1 for undefined length (ends with a delimiter).
func (w *walker) sequence(pos, end int, implicit bool, depth, n int) (int, error) {
	b := w.buf
	for pos < end {
		if pos+8 > end {
			return 0, errTruncated
		}
		g, e, l := w.bo.Uint16(b[pos:]), w.bo.Uint16(b[pos+2:]), w.bo.Uint32(b[pos+4:])
		pos += 8
		if g != 0xFFFE {
			return 0, fmt.Errorf("expected an item tag, found %s", tagString(g, e))
		}
		switch e {
		case 0xE0DD:
			if n >= 0 {
				return 0, errors.New("sequence delimiter in a defined-length sequence")
			}
			return pos, nil
		case 0xE000:
		default:
			return 0, fmt.Errorf("unexpected %s in a sequence", tagString(g, e))
		}
		if l == 0xFFFFFFFF {
			p, err := w.dataset(pos, end, implicit, depth+1, true)
			if err != nil {
				return 0, err
			}
			pos = p
			continue
		}
		if int64(l) > int64(end-pos) {
			return 0, fmt.Errorf("item length %d exceeds the %d bytes left: %w", l, end-pos, errTruncated)
		}
		if _, err := w.dataset(pos, pos+int(l), implicit, depth+1, false); err != nil {
			return 0, err
		}
		pos += int(l)
	}
	if n < 0 {
		return 0, fmt.Errorf("sequence without delimiter: %w", errTruncated)
	}
	return pos, nil
}

// encapsulated walks the items of encapsulated pixel data and records them.
func (w *walker) encapsulated(pos, end int) (int, error) {
	b := w.buf
	lay := w.lay
	lay.hasPixels, lay.encapsulated = true, true
	for {
		if pos+8 > end {
			return 0, fmt.Errorf("encapsulated pixel data without sequence delimiter: %w", errTruncated)
		}
		g, e, l := w.bo.Uint16(b[pos:]), w.bo.Uint16(b[pos+2:]), w.bo.Uint32(b[pos+4:])
		if g != 0xFFFE || (e != 0xE000 && e != 0xE0DD) {
			return 0, fmt.Errorf("encapsulated pixel data: expected an item tag, found %s", tagString(g, e))
		}
		start := pos
		pos += 8
		if e == 0xE0DD {
			return pos, nil
		}
		if int64(l) > int64(end-pos) {
			return 0, fmt.Errorf("pixel data fragment length %d exceeds the %d bytes left: %w", l, end-pos, errTruncated)
		}
		lay.items = append(lay.items, b[pos:pos+int(l)])
		lay.itemOff = append(lay.itemOff, start)
		pos += int(l)
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
