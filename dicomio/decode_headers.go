package dicomio

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Codestream headers are checked against the DICOM header before a
// third-party decoder runs, so that no size taken from a codestream can
// make a decoder allocate more than the image the header announces.

// checkJ2KHeader validates the SIZ marker of a JPEG 2000 codestream:
// image size equal to Columns x Rows, SamplesPerPixel components without
// subsampling, at most 16 bits, and a sane tile grid.
func checkJ2KHeader(in *Instance, d []byte) error {
	if len(d) < 4 || d[0] != 0xFF || d[1] != 0x4F || d[2] != 0xFF || d[3] != 0x51 {
		return errors.New("JPEG 2000: codestream does not start with SOC and SIZ markers")
	}
	if len(d) < 4+40 {
		return errors.New("JPEG 2000: SIZ marker truncated")
	}
	s := d[4:]
	lsiz := int(binary.BigEndian.Uint16(s))
	be := binary.BigEndian
	xs, ys := be.Uint32(s[4:]), be.Uint32(s[8:])
	xo, yo := be.Uint32(s[12:]), be.Uint32(s[16:])
	xt, yt := be.Uint32(s[20:]), be.Uint32(s[24:])
	xto, yto := be.Uint32(s[28:]), be.Uint32(s[32:])
	nc := int(be.Uint16(s[36:]))
	if xo >= xs || yo >= ys || int64(xs-xo) != int64(in.Cols) || int64(ys-yo) != int64(in.Rows) {
		return fmt.Errorf("JPEG 2000: image is %dx%d, header says Columns %d, Rows %d", int64(xs)-int64(xo), int64(ys)-int64(yo), in.Cols, in.Rows)
	}
	if xt == 0 || yt == 0 || xto > xo || yto > yo || xto+xt <= xo || yto+yt <= yo {
		return fmt.Errorf("JPEG 2000: invalid tile grid (tile %dx%d at %d,%d)", xt, yt, xto, yto)
	}
	tiles := (int64(xs-xto) + int64(xt) - 1) / int64(xt) * ((int64(ys-yto) + int64(yt) - 1) / int64(yt))
	if tiles > 65535 || tiles > int64(in.Rows)*int64(in.Cols) {
		return fmt.Errorf("JPEG 2000: %d tiles", tiles)
	}
	if nc != in.SamplesPerPixel {
		return fmt.Errorf("JPEG 2000: %d components, header says SamplesPerPixel %d", nc, in.SamplesPerPixel)
	}
	if lsiz != 38+3*nc || len(s) < 38+3*nc {
		return errors.New("JPEG 2000: SIZ marker length does not match its component count")
	}
	for c := 0; c < nc; c++ {
		ssiz, xr, yr := s[38+3*c], s[39+3*c], s[40+3*c]
		if bits := int(ssiz&0x7F) + 1; bits > 16 || bits > in.BitsAllocated {
			return &UnsupportedError{Path: in.Path, What: fmt.Sprintf("JPEG 2000 component of %d bits (BitsAllocated %d)", bits, in.BitsAllocated)}
		}
		if xr != 1 || yr != 1 {
			return &UnsupportedError{Path: in.Path, What: "subsampled JPEG 2000 components"}
		}
	}
	return nil
}

// checkJPEGHeader walks the markers of a JPEG (baseline, extended,
// lossless or JPEG-LS) stream up to its frame header and checks its size,
// components and precision against the DICOM header.
// It returns the sample precision.
func checkJPEGHeader(in *Instance, d []byte) (int, error) {
	if len(d) < 2 || d[0] != 0xFF || d[1] != 0xD8 {
		return 0, errors.New("JPEG: stream does not start with an SOI marker")
	}
	p := 2
	for p+4 <= len(d) {
		if d[p] != 0xFF {
			return 0, fmt.Errorf("JPEG: expected a marker at byte %d", p)
		}
		m := d[p+1]
		if m == 0xFF { // fill byte
			p++
			continue
		}
		n := int(binary.BigEndian.Uint16(d[p+2:]))
		if n < 2 || p+2+n > len(d) {
			return 0, fmt.Errorf("JPEG: marker FF%02X length %d overruns the stream", m, n)
		}
		isSOF := (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) || m == 0xF7
		if isSOF {
			if n < 8 {
				return 0, errors.New("JPEG: frame header truncated")
			}
			prec := int(d[p+4])
			h := int(binary.BigEndian.Uint16(d[p+5:]))
			w := int(binary.BigEndian.Uint16(d[p+7:]))
			nc := int(d[p+9])
			if w != in.Cols || h != in.Rows {
				return 0, fmt.Errorf("JPEG: image is %dx%d, header says Columns %d, Rows %d", w, h, in.Cols, in.Rows)
			}
			if nc != in.SamplesPerPixel {
				return 0, fmt.Errorf("JPEG: %d components, header says SamplesPerPixel %d", nc, in.SamplesPerPixel)
			}
			if prec < 2 || prec > 16 || prec > in.BitsAllocated {
				return 0, fmt.Errorf("JPEG: sample precision %d bits with BitsAllocated %d", prec, in.BitsAllocated)
			}
			return prec, nil
		}
		if m == 0xDA {
			break
		}
		p += 2 + n
	}
	return 0, errors.New("JPEG: no frame header before the scan")
}

// jpegScanPredictor returns the selection value (predictor, the Ss field
// of the first start-of-scan header) of a lossless JPEG stream.
func jpegScanPredictor(d []byte) (int, error) {
	p := 2
	for p+4 <= len(d) {
		if d[p] != 0xFF {
			return 0, fmt.Errorf("JPEG: expected a marker at byte %d", p)
		}
		m := d[p+1]
		if m == 0xFF {
			p++
			continue
		}
		n := int(binary.BigEndian.Uint16(d[p+2:]))
		if n < 2 || p+2+n > len(d) {
			return 0, fmt.Errorf("JPEG: marker FF%02X length %d overruns the stream", m, n)
		}
		if m == 0xDA {
			ns := int(d[p+4])
			if n < 6+2*ns {
				return 0, errors.New("JPEG: scan header truncated")
			}
			return int(d[p+5+2*ns]), nil
		}
		p += 2 + n
	}
	return 0, errors.New("JPEG: no scan header")
}
