package dicomio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
	"github.com/suyashkumar/dicom/pkg/uid"
)

// Instance is the header of one DICOM object (a file or a zip entry): what
// identifies it, how its pixels are stored and where it lies in space.
// It holds no patient names or IDs.
type Instance struct {
	// Path names the object: a file path, or "archive.zip!entry/name".
	Path string
	// Size is the object's size in bytes.
	Size int64

	SOPClassUID, SOPInstanceUID, SeriesUID, StudyUID string
	// Modality is (0008,0060), e.g. "CT"; Description is SeriesDescription.
	Modality, Description string
	// TransferSyntax is the transfer syntax UID ("" when the file has no
	// meta header and the syntax was inferred).
	TransferSyntax string

	// InstanceNumber is (0020,0013); HasInstanceNumber reports its presence.
	InstanceNumber    int
	HasInstanceNumber bool

	// Rows, Cols and Frames give the image size; Frames is 1 for
	// single-frame objects.
	Rows, Cols, Frames int
	// SamplesPerPixel, BitsAllocated, BitsStored, HighBit, Signed
	// (PixelRepresentation 1), Photometric and PlanarConfiguration describe
	// one stored sample.
	SamplesPerPixel, BitsAllocated, BitsStored, HighBit int
	Signed                                              bool
	Photometric                                         string
	PlanarConfiguration                                 int

	// PixelSpacing is (0028,0030): [0] the distance between rows (along
	// j), [1] the distance between columns (along i), in mm.
	PixelSpacing    [2]float64
	HasPixelSpacing bool
	// SliceThickness (0018,0050) and SpacingBetweenSlices (0018,0088) in mm,
	// 0 when absent.
	SliceThickness, SpacingBetweenSlices float64

	// Position is ImagePositionPatient (0020,0032), the LPS position of the
	// centre of the first transmitted pixel; Orientation is
	// ImageOrientationPatient (0020,0037): row direction cosines then
	// column direction cosines.
	Position       [3]float64
	HasPosition    bool
	Orientation    [6]float64
	HasOrientation bool

	// RescaleSlope and RescaleIntercept map stored values to output units
	// (HU for CT): value = stored*slope + intercept. Slope 1 and intercept
	// 0 when absent.
	RescaleSlope, RescaleIntercept float64

	// HasPadding reports PixelPaddingValue (0028,0120); PaddingValue and
	// PaddingLimit (PixelPaddingRangeLimit, equal to PaddingValue when
	// absent) bound the stored values that mark padding, inclusive.
	HasPadding                 bool
	PaddingValue, PaddingLimit int64

	// FramePositions, when not nil, holds the position of each frame of a
	// multi-frame object (Enhanced per-frame functional groups or an RT
	// GridFrameOffsetVector); FrameRescale, when not nil, each frame's
	// slope and intercept.
	FramePositions [][3]float64
	FrameRescale   [][2]float64

	src source
}

// IsImage reports whether the object holds pixel data of a usable size.
func (in *Instance) IsImage() bool { return in.Rows > 0 && in.Cols > 0 }

// ParseError reports a DICOM object that cannot be read.
type ParseError struct {
	// Path names the object; Tag names the element at fault, if known.
	Path, Tag string
	Err       error
}

func (e *ParseError) Error() string {
	if e.Tag != "" {
		return fmt.Sprintf("dicomio: %s: %s: %v", e.Path, e.Tag, e.Err)
	}
	return fmt.Sprintf("dicomio: %s: %v", e.Path, e.Err)
}

// Unwrap returns the cause.
func (e *ParseError) Unwrap() error { return e.Err }

func tagName(t tag.Tag) string {
	if info, err := tag.Find(t); err == nil {
		return fmt.Sprintf("%s %s", info.Keyword, tagString(t.Group, t.Element))
	}
	return tagString(t.Group, t.Element)
}

// parseObject validates the structure of data, parses its header with the
// third-party parser (pixel data skipped) and fills an Instance. It also
// returns the pixel layout found by the structural walk.
func parseObject(data []byte, path string, lim Limits) (in *Instance, lay *layout, err error) {
	return parsePrefix(data, int64(len(data)), path, lim)
}

// parsePrefix is parseObject given the first len(data) of total bytes; it
// returns errNeedFull when the prefix does not hold the whole header.
func parsePrefix(data []byte, total int64, path string, lim Limits) (in *Instance, lay *layout, err error) {
	if total > lim.MaxFileBytes {
		return nil, nil, &LimitError{What: path, Limit: "MaxFileBytes", Value: float64(total), Max: float64(lim.MaxFileBytes)}
	}
	lay, err = scanPrefix(data, total, lim.MaxFileBytes)
	if errors.Is(err, errNeedFull) {
		return nil, nil, err
	}
	if err != nil {
		var le *LimitError
		if errors.As(err, &le) {
			le.What = path
			return nil, nil, le
		}
		return nil, nil, &ParseError{Path: path, Err: err}
	}
	if lay.ts != "" {
		if _, _, err := uid.ParseTransferSyntaxUID(lay.ts); err != nil {
			return nil, nil, &UnsupportedError{Path: path, What: "transfer syntax " + syntaxName(lay.ts)}
		}
	}
	hdr := data
	if lay.inferred || len(data) < 132 || string(data[128:132]) != "DICM" {
		// Give the third-party parser the syntax the structural walk
		// validated, so that it never tries others (its own guessing
		// allocates lengths read under a wrong syntax).
		hdr = withMeta(lay)
	}
	if lay.hasPixels && lay.ts != tsDeflateLE {
		// The header ends where Pixel Data starts: the third-party parser
		// never reads pixel bytes (they are taken from the walk's layout).
		hdr = hdr[:len(hdr)-len(lay.body)+lay.pixTag]
	}
	ds, err := parseHeader(hdr)
	if err != nil {
		return nil, nil, &ParseError{Path: path, Err: err}
	}
	in, err = instanceFromDataset(&ds, path, lim)
	if err != nil {
		return nil, nil, err
	}
	in.Size = total
	if in.TransferSyntax == "" {
		in.TransferSyntax = lay.ts
	}
	return in, lay, nil
}

// withMeta returns a Part 10 stream: preamble, "DICM", a file meta group
// holding only the transfer syntax (the walk's, or the one it inferred;
// explicit little endian for an already inflated deflate body), then the
// dataset.
func withMeta(lay *layout) []byte {
	ts := tsImplicitLE
	switch {
	case lay.ts != "" && lay.ts != tsDeflateLE:
		ts = lay.ts
	case !lay.implicit && lay.bo == binary.BigEndian:
		ts = tsExplicitBE
	case !lay.implicit:
		ts = tsExplicitLE
	}
	val := []byte(ts)
	if len(val)%2 == 1 {
		val = append(val, 0)
	}
	out := make([]byte, 0, 132+12+8+len(val)+len(lay.body))
	out = append(out, make([]byte, 128)...)
	out = append(out, "DICM"...)
	out = append(out, 0x02, 0x00, 0x00, 0x00, 'U', 'L', 4, 0)
	out = binary.LittleEndian.AppendUint32(out, uint32(8+len(val)))
	out = append(out, 0x02, 0x00, 0x10, 0x00, 'U', 'I')
	out = binary.LittleEndian.AppendUint16(out, uint16(len(val)))
	out = append(out, val...)
	return append(out, lay.body...)
}

// parseHeader runs the third-party parser with pixel data skipped. The
// structural walk has already bounded every length; the recover turns any
// remaining panic inside the third-party parser into an error (defence in
// depth, documented in doc.go).
func parseHeader(data []byte) (ds dicom.Dataset, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("DICOM parser failed: %v", r)
		}
	}()
	ds, err = dicom.Parse(bytes.NewReader(data), int64(len(data)), nil,
		dicom.SkipPixelData(), dicom.AllowMissingMetaElementGroupLength(), dicom.AllowUnknownSpecificCharacterSet())
	if err != nil {
		return ds, fmt.Errorf("parse: %w", err)
	}
	return ds, nil
}

// elemOf returns the element with tag t among elems, or nil.
func elemOf(elems []*dicom.Element, t tag.Tag) *dicom.Element {
	for _, e := range elems {
		if e.Tag == t {
			return e
		}
	}
	return nil
}

func strOf(elems []*dicom.Element, t tag.Tag) string {
	e := elemOf(elems, t)
	if e == nil || e.Value == nil {
		return ""
	}
	switch v := e.Value.GetValue().(type) {
	case []string:
		return strings.TrimSpace(strings.Join(v, `\`))
	case []byte:
		return strings.TrimRight(string(v), "\x00 ")
	}
	return ""
}

// numsOf returns the numeric values of element t (IS/DS strings, binary
// integers or floats); ok is false when it is absent or empty.
func numsOf(elems []*dicom.Element, t tag.Tag) (vals []float64, ok bool, err error) {
	e := elemOf(elems, t)
	if e == nil || e.Value == nil {
		return nil, false, nil
	}
	switch v := e.Value.GetValue().(type) {
	case []string:
		for _, s := range v {
			for _, p := range strings.Split(s, `\`) {
				p = strings.Trim(p, " \x00")
				if p == "" {
					continue
				}
				f, perr := strconv.ParseFloat(p, 64)
				if perr != nil || math.IsNaN(f) || math.IsInf(f, 0) {
					return nil, false, fmt.Errorf("%s: bad number %q", tagName(t), p)
				}
				vals = append(vals, f)
			}
		}
	case []int:
		for _, x := range v {
			vals = append(vals, float64(x))
		}
	case []float64:
		for _, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, false, fmt.Errorf("%s: bad number %v", tagName(t), x)
			}
			vals = append(vals, x)
		}
	default:
		return nil, false, nil
	}
	return vals, len(vals) > 0, nil
}

// intOf returns the first value of element t as an int.
func intOf(elems []*dicom.Element, t tag.Tag) (int, bool, error) {
	v, ok, err := numsOf(elems, t)
	if err != nil || !ok {
		return 0, ok, err
	}
	if v[0] != math.Trunc(v[0]) || math.Abs(v[0]) > 1<<40 {
		return 0, false, fmt.Errorf("%s: %v is not an integer", tagName(t), v[0])
	}
	return int(v[0]), true, nil
}

// itemsOf returns the items of sequence t.
func itemsOf(elems []*dicom.Element, t tag.Tag) [][]*dicom.Element {
	e := elemOf(elems, t)
	if e == nil || e.Value == nil {
		return nil
	}
	items, ok := e.Value.GetValue().([]*dicom.SequenceItemValue)
	if !ok {
		return nil
	}
	out := make([][]*dicom.Element, 0, len(items))
	for _, it := range items {
		if els, ok := it.GetValue().([]*dicom.Element); ok {
			out = append(out, els)
		}
	}
	return out
}

// firstItemOf returns the first item of sequence t inside elems, or nil.
func firstItemOf(elems []*dicom.Element, t tag.Tag) []*dicom.Element {
	items := itemsOf(elems, t)
	if len(items) == 0 {
		return nil
	}
	return items[0]
}

var (
	tagPixelPaddingValue      = tag.Tag{Group: 0x0028, Element: 0x0120}
	tagPixelPaddingRangeLimit = tag.Tag{Group: 0x0028, Element: 0x0121}
)

// instanceFromDataset fills an Instance from a parsed header.
func instanceFromDataset(ds *dicom.Dataset, path string, lim Limits) (*Instance, error) {
	el := ds.Elements
	in := &Instance{Path: path, src: nil, RescaleSlope: 1, Frames: 1, SamplesPerPixel: 1}
	in.SOPClassUID = strOf(el, tag.MediaStorageSOPClassUID)
	if s := strOf(el, tag.SOPClassUID); s != "" {
		in.SOPClassUID = s
	}
	in.SOPInstanceUID = strOf(el, tag.SOPInstanceUID)
	in.SeriesUID = strOf(el, tag.SeriesInstanceUID)
	in.StudyUID = strOf(el, tag.StudyInstanceUID)
	in.Modality = strOf(el, tag.Modality)
	in.Description = strOf(el, tag.SeriesDescription)
	in.TransferSyntax = strOf(el, tag.TransferSyntaxUID)
	in.Photometric = strOf(el, tag.PhotometricInterpretation)

	bad := func(t tag.Tag, err error) error { return &ParseError{Path: path, Tag: tagName(t), Err: err} }
	geti := func(t tag.Tag, dst *int, lo, hi int) (bool, error) {
		v, ok, err := intOf(el, t)
		if err != nil {
			return false, bad(t, err)
		}
		if !ok {
			return false, nil
		}
		if v < lo || v > hi {
			return false, bad(t, fmt.Errorf("value %d outside [%d, %d]", v, lo, hi))
		}
		*dst = v
		return true, nil
	}
	var err error
	if in.HasInstanceNumber, err = geti(tag.InstanceNumber, &in.InstanceNumber, -1<<31, 1<<31-1); err != nil {
		return nil, err
	}
	hasRows, err := geti(tag.Rows, &in.Rows, 0, 1<<16-1)
	if err != nil {
		return nil, err
	}
	hasCols, err := geti(tag.Columns, &in.Cols, 0, 1<<16-1)
	if err != nil {
		return nil, err
	}
	if _, err = geti(tag.NumberOfFrames, &in.Frames, 1, 1<<31-1); err != nil {
		return nil, err
	}
	if !hasRows || !hasCols {
		in.Rows, in.Cols = 0, 0
		return in, nil // not an image
	}
	if in.Rows > lim.MaxRows {
		return nil, &LimitError{What: path + ": Rows", Limit: "MaxRows", Value: float64(in.Rows), Max: float64(lim.MaxRows)}
	}
	if in.Cols > lim.MaxCols {
		return nil, &LimitError{What: path + ": Columns", Limit: "MaxCols", Value: float64(in.Cols), Max: float64(lim.MaxCols)}
	}
	if in.Frames > lim.MaxFrames {
		return nil, &LimitError{What: path + ": NumberOfFrames", Limit: "MaxFrames", Value: float64(in.Frames), Max: float64(lim.MaxFrames)}
	}
	if _, err = geti(tag.SamplesPerPixel, &in.SamplesPerPixel, 1, 4); err != nil {
		return nil, err
	}
	if _, err = geti(tag.BitsAllocated, &in.BitsAllocated, 1, 64); err != nil {
		return nil, err
	}
	in.BitsStored, in.HighBit = in.BitsAllocated, in.BitsAllocated-1
	if _, err = geti(tag.BitsStored, &in.BitsStored, 1, 64); err != nil {
		return nil, err
	}
	in.HighBit = in.BitsStored - 1
	if _, err = geti(tag.HighBit, &in.HighBit, 0, 63); err != nil {
		return nil, err
	}
	var rep int
	if _, err = geti(tag.PixelRepresentation, &rep, 0, 1); err != nil {
		return nil, err
	}
	in.Signed = rep == 1
	if _, err = geti(tag.PlanarConfiguration, &in.PlanarConfiguration, 0, 1); err != nil {
		return nil, err
	}

	// Geometry: top level, else the shared functional groups, else the
	// first frame's functional groups (Enhanced objects).
	shared := firstItemOf(el, tag.SharedFunctionalGroupsSequence)
	perFrame := itemsOf(el, tag.PerFrameFunctionalGroupsSequence)
	var frame0 []*dicom.Element
	if len(perFrame) > 0 {
		frame0 = perFrame[0]
	}
	lookup := func(seq, t tag.Tag) ([]float64, bool, error) {
		if v, ok, err := numsOf(el, t); ok || err != nil {
			return v, ok, err
		}
		for _, g := range [][]*dicom.Element{shared, frame0} {
			if it := firstItemOf(g, seq); it != nil {
				if v, ok, err := numsOf(it, t); ok || err != nil {
					return v, ok, err
				}
			}
		}
		return nil, false, nil
	}
	if v, ok, err := lookup(tag.PixelMeasuresSequence, tag.PixelSpacing); err != nil {
		return nil, bad(tag.PixelSpacing, err)
	} else if ok {
		if len(v) != 2 || !(v[0] > 0) || !(v[1] > 0) {
			return nil, bad(tag.PixelSpacing, fmt.Errorf("want two positive values, got %v", v))
		}
		in.PixelSpacing, in.HasPixelSpacing = [2]float64{v[0], v[1]}, true
	}
	if v, ok, err := lookup(tag.PixelMeasuresSequence, tag.SliceThickness); err != nil {
		return nil, bad(tag.SliceThickness, err)
	} else if ok {
		in.SliceThickness = math.Abs(v[0])
	}
	if v, ok, err := lookup(tag.PixelMeasuresSequence, tag.SpacingBetweenSlices); err != nil {
		return nil, bad(tag.SpacingBetweenSlices, err)
	} else if ok {
		in.SpacingBetweenSlices = math.Abs(v[0])
	}
	if v, ok, err := lookup(tag.PlanePositionSequence, tag.ImagePositionPatient); err != nil {
		return nil, bad(tag.ImagePositionPatient, err)
	} else if ok {
		if len(v) != 3 {
			return nil, bad(tag.ImagePositionPatient, fmt.Errorf("want 3 values, got %d", len(v)))
		}
		copy(in.Position[:], v)
		in.HasPosition = true
	}
	if v, ok, err := lookup(tag.PlaneOrientationSequence, tag.ImageOrientationPatient); err != nil {
		return nil, bad(tag.ImageOrientationPatient, err)
	} else if ok {
		o, err := checkOrientation(v)
		if err != nil {
			return nil, bad(tag.ImageOrientationPatient, err)
		}
		in.Orientation, in.HasOrientation = o, true
	}
	if v, ok, err := lookup(tag.PixelValueTransformationSequence, tag.RescaleSlope); err != nil {
		return nil, bad(tag.RescaleSlope, err)
	} else if ok {
		if v[0] == 0 {
			return nil, bad(tag.RescaleSlope, errors.New("slope is 0"))
		}
		in.RescaleSlope = v[0]
	}
	if v, ok, err := lookup(tag.PixelValueTransformationSequence, tag.RescaleIntercept); err != nil {
		return nil, bad(tag.RescaleIntercept, err)
	} else if ok {
		in.RescaleIntercept = v[0]
	}
	if v, ok, err := numsOf(el, tagPixelPaddingValue); err != nil {
		return nil, bad(tagPixelPaddingValue, err)
	} else if ok {
		in.HasPadding = true
		in.PaddingValue = in.reinterpret(int64(v[0]))
		in.PaddingLimit = in.PaddingValue
		if w, ok, err := numsOf(el, tagPixelPaddingRangeLimit); err != nil {
			return nil, bad(tagPixelPaddingRangeLimit, err)
		} else if ok {
			in.PaddingLimit = in.reinterpret(int64(w[0]))
		}
		if in.PaddingLimit < in.PaddingValue {
			in.PaddingValue, in.PaddingLimit = in.PaddingLimit, in.PaddingValue
		}
	}

	// Per-frame geometry of multi-frame objects.
	if in.Frames > 1 && len(perFrame) > 0 {
		if len(perFrame) != in.Frames {
			return nil, bad(tag.PerFrameFunctionalGroupsSequence, fmt.Errorf("%d items for %d frames", len(perFrame), in.Frames))
		}
		pos := make([][3]float64, 0, in.Frames)
		resc := make([][2]float64, 0, in.Frames)
		for f, item := range perFrame {
			if pp := firstItemOf(item, tag.PlanePositionSequence); pp != nil {
				v, ok, err := numsOf(pp, tag.ImagePositionPatient)
				if err != nil || (ok && len(v) != 3) {
					return nil, bad(tag.ImagePositionPatient, fmt.Errorf("frame %d: bad position %v %v", f+1, v, err))
				}
				if ok {
					pos = append(pos, [3]float64{v[0], v[1], v[2]})
				}
			}
			if po := firstItemOf(item, tag.PlaneOrientationSequence); po != nil && in.HasOrientation {
				if v, ok, _ := numsOf(po, tag.ImageOrientationPatient); ok {
					o, err := checkOrientation(v)
					if err != nil || !sameOrientation(o, in.Orientation) {
						return nil, bad(tag.ImageOrientationPatient, fmt.Errorf("frame %d: orientation %v differs from frame 1 %v (mixed orientation)", f+1, v, in.Orientation))
					}
				}
			}
			if pv := firstItemOf(item, tag.PixelValueTransformationSequence); pv != nil {
				s, ok1, _ := numsOf(pv, tag.RescaleSlope)
				b, ok2, _ := numsOf(pv, tag.RescaleIntercept)
				if ok1 && ok2 && s[0] != 0 {
					resc = append(resc, [2]float64{s[0], b[0]})
				}
			}
		}
		if len(pos) == in.Frames {
			in.FramePositions = pos
		}
		if len(resc) == in.Frames {
			in.FrameRescale = resc
		}
	} else if in.Frames > 1 && in.HasPosition && in.HasOrientation {
		if off, ok, err := numsOf(el, tag.GridFrameOffsetVector); err != nil {
			return nil, bad(tag.GridFrameOffsetVector, err)
		} else if ok && len(off) == in.Frames {
			n := normal(in.Orientation)
			in.FramePositions = make([][3]float64, in.Frames)
			for f, d := range off {
				for c := 0; c < 3; c++ {
					in.FramePositions[f][c] = in.Position[c] + d*n[c]
				}
			}
		}
	}
	return in, nil
}

// reinterpret maps a padding value read as unsigned 16-bit (implicit VR
// dictionaries give US) to the sample's signedness.
func (in *Instance) reinterpret(v int64) int64 {
	if in.Signed && in.BitsAllocated == 16 && v >= 1<<15 && v < 1<<16 {
		return v - 1<<16
	}
	if in.Signed && in.BitsAllocated == 8 && v >= 1<<7 && v < 1<<8 {
		return v - 1<<8
	}
	return v
}

// checkOrientation validates six direction cosines: two unit vectors that
// are orthogonal (to 1e-3), and renormalises them.
func checkOrientation(v []float64) ([6]float64, error) {
	var o [6]float64
	if len(v) != 6 {
		return o, fmt.Errorf("want 6 direction cosines, got %d", len(v))
	}
	copy(o[:], v)
	r, c := o[0:3], o[3:6]
	nr := math.Sqrt(r[0]*r[0] + r[1]*r[1] + r[2]*r[2])
	nc := math.Sqrt(c[0]*c[0] + c[1]*c[1] + c[2]*c[2])
	if math.Abs(nr-1) > 1e-2 || math.Abs(nc-1) > 1e-2 {
		return o, fmt.Errorf("direction cosines %v are not unit vectors", v)
	}
	for i := 0; i < 3; i++ {
		r[i] /= nr
		c[i] /= nc
	}
	if d := r[0]*c[0] + r[1]*c[1] + r[2]*c[2]; math.Abs(d) > 1e-3 {
		return o, fmt.Errorf("row and column directions %v are not orthogonal (dot %.4g)", v, d)
	}
	return o, nil
}

// normal returns row × column of an orientation: the slice normal.
func normal(o [6]float64) [3]float64 {
	return [3]float64{
		o[1]*o[5] - o[2]*o[4],
		o[2]*o[3] - o[0]*o[5],
		o[0]*o[4] - o[1]*o[3],
	}
}

func sameOrientation(a, b [6]float64) bool {
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-4 {
			return false
		}
	}
	return true
}
