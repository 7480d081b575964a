package dicomio

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
)

// PaddingHU is the value given to CT voxels marked by PixelPaddingValue
// (air). Padded voxels of other modalities get the smallest rescaled
// non-padding value of their frame (0 when every voxel is padding).
const PaddingHU = -1024

// Image is one decoded DICOM object: its header and its stored sample
// values.
type Image struct {
	*Instance
	// Stored holds Frames*Rows*Cols*SamplesPerPixel stored values (after
	// BitsStored masking and sign extension, before rescale); index
	// ((f*Rows+r)*Cols+c)*SamplesPerPixel+s.
	Stored []int64
}

// ReadFile reads and decodes one DICOM file. See ReadSlice.
func ReadFile(path string, lim Limits) (*Image, error) {
	lim = lim.withDefaults()
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("dicomio: %w", err)
	}
	if st.Size() > lim.MaxFileBytes {
		return nil, &LimitError{What: path, Limit: "MaxFileBytes", Value: float64(st.Size()), Max: float64(lim.MaxFileBytes)}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dicomio: %w", err)
	}
	return ReadSlice(data, path, lim)
}

// ReadSlice decodes one DICOM object held in data (a Part 10 file, with
// or without preamble and meta header); name is used in errors. Objects
// without image pixels give an error wrapping ErrNoPixelData.
func ReadSlice(data []byte, name string, lim Limits) (*Image, error) {
	lim = lim.withDefaults()
	in, lay, err := parseObject(data, name, lim)
	if err != nil {
		return nil, err
	}
	if !in.IsImage() {
		return nil, &ParseError{Path: name, Err: fmt.Errorf("not an image (no Rows/Columns): %w", ErrNoPixelData)}
	}
	n := int64(in.Rows) * int64(in.Cols) * int64(in.Frames) * int64(in.SamplesPerPixel)
	if n > lim.MaxVoxels {
		return nil, &LimitError{What: name, Limit: "MaxVoxels", Value: float64(n), Max: float64(lim.MaxVoxels)}
	}
	frames, err := frameData(in, lay)
	if err != nil {
		return nil, err
	}
	im := &Image{Instance: in, Stored: make([]int64, n)}
	per := in.Rows * in.Cols * in.SamplesPerPixel
	for f, raw := range frames {
		storedValues(im.Stored[f*per:(f+1)*per], raw, in)
	}
	return im, nil
}

// Rescaled returns frame f as output values: stored*slope + intercept
// (per-frame slope and intercept when the object has them), with padding
// voxels set as described at PaddingHU.
func (im *Image) Rescaled(f int) []float32 {
	per := im.Rows * im.Cols * im.SamplesPerPixel
	out := make([]float32, per)
	slope, icpt := im.rescale(f)
	pad := make([]bool, per)
	anyPad := false
	for i, v := range im.Stored[f*per : (f+1)*per] {
		if im.HasPadding && v >= im.PaddingValue && v <= im.PaddingLimit {
			pad[i], anyPad = true, true
			continue
		}
		out[i] = float32(float64(v)*slope + icpt)
	}
	if anyPad {
		fillPadding(out, pad, im.Modality)
	}
	return out
}

// rescale returns the slope and intercept of frame f.
func (in *Instance) rescale(f int) (float64, float64) {
	if in.FrameRescale != nil {
		return in.FrameRescale[f][0], in.FrameRescale[f][1]
	}
	return in.RescaleSlope, in.RescaleIntercept
}

// fillPadding sets out[i] for pad[i] as documented at PaddingHU.
func fillPadding(out []float32, pad []bool, modality string) {
	v := float32(PaddingHU)
	if modality != "CT" {
		v = float32(math.Inf(1))
		for i, x := range out {
			if !pad[i] && x < v {
				v = x
			}
		}
		if math.IsInf(float64(v), 1) {
			v = 0
		}
	}
	for i, p := range pad {
		if p {
			out[i] = v
		}
	}
}

// sampleCodec describes how to turn BitsAllocated-wide little-endian
// words into stored values: shift right, mask BitsStored bits, sign
// extend when signed.
type sampleCodec struct {
	shift uint
	mask  uint32
	sign  uint32 // the sign bit of a BitsStored-bit value; 0 when unsigned
}

func codecOf(in *Instance) sampleCodec {
	c := sampleCodec{shift: uint(in.HighBit + 1 - in.BitsStored)}
	if in.BitsStored >= 32 {
		c.mask = ^uint32(0)
	} else {
		c.mask = 1<<uint(in.BitsStored) - 1
	}
	if in.Signed {
		c.sign = 1 << uint(in.BitsStored-1)
	}
	return c
}

func (c sampleCodec) value(w uint32) int64 {
	w = (w >> c.shift) & c.mask
	if c.sign != 0 && w&c.sign != 0 {
		return int64(w) - int64(c.mask) - 1
	}
	return int64(w)
}

// storedValues decodes little-endian native samples into dst.
func storedValues(dst []int64, raw []byte, in *Instance) {
	c := codecOf(in)
	switch in.BitsAllocated {
	case 1, 8:
		for i := range dst {
			dst[i] = c.value(uint32(raw[i]))
		}
	case 16:
		for i := range dst {
			dst[i] = c.value(uint32(binary.LittleEndian.Uint16(raw[2*i:])))
		}
	case 32:
		for i := range dst {
			dst[i] = c.value(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	}
}

// rescaleFrame writes stored*slope+intercept of one greyscale frame into
// dst, with padding handled as documented at PaddingHU. It is the hot loop
// of Series.Load: 16-bit samples take dedicated loops (see rescaleInt16,
// rescaleUint16 and rescale16); other formats the general one.
func rescaleFrame(dst []float32, raw []byte, in *Instance, slope, icpt float64) {
	if in.BitsAllocated == 16 && (!in.HasPadding || in.Modality == "CT") {
		raw = raw[:2*len(dst)]
		s, b := float32(slope), float32(icpt)
		full := in.BitsStored == 16 && in.HighBit == 15
		switch {
		case full && !in.HasPadding && slope == float64(s) && icpt == float64(b) && in.Signed:
			rescaleInt16(dst, raw, s, b)
		case full && !in.HasPadding && slope == float64(s) && icpt == float64(b):
			rescaleUint16(dst, raw, s, b)
		default:
			rescale16(dst, raw, in, slope, icpt)
		}
		return
	}
	c := codecOf(in)
	var pad []bool
	for i := range dst {
		var w uint32
		switch in.BitsAllocated {
		case 1, 8:
			w = uint32(raw[i])
		case 16:
			w = uint32(binary.LittleEndian.Uint16(raw[2*i:]))
		default:
			w = binary.LittleEndian.Uint32(raw[4*i:])
		}
		v := c.value(w)
		if in.HasPadding && v >= in.PaddingValue && v <= in.PaddingLimit {
			if pad == nil {
				pad = make([]bool, len(dst))
			}
			pad[i] = true
			continue
		}
		dst[i] = float32(float64(v)*slope + icpt)
	}
	if pad != nil {
		fillPadding(dst, pad, in.Modality)
	}
}

// rescaleInt16Go sets dst[i] = float32(int16 word i of raw)*s + b (float32
// arithmetic, as NumPy computes it); len(raw) must be 2*len(dst). It is
// the portable form of rescaleInt16.
func rescaleInt16Go(dst []float32, raw []byte, s, b float32) {
	for len(dst) >= 4 && len(raw) >= 8 {
		w := binary.LittleEndian.Uint64(raw)
		dst[0] = float32(int16(w))*s + b
		dst[1] = float32(int16(w>>16))*s + b
		dst[2] = float32(int16(w>>32))*s + b
		dst[3] = float32(int16(w>>48))*s + b
		dst, raw = dst[4:], raw[8:]
	}
	for i := range dst {
		dst[i] = float32(int16(binary.LittleEndian.Uint16(raw[2*i:])))*s + b
	}
}

// rescaleUint16Go is rescaleInt16Go for unsigned words.
func rescaleUint16Go(dst []float32, raw []byte, s, b float32) {
	for len(dst) >= 4 && len(raw) >= 8 {
		w := binary.LittleEndian.Uint64(raw)
		dst[0] = float32(uint16(w))*s + b
		dst[1] = float32(uint16(w>>16))*s + b
		dst[2] = float32(uint16(w>>32))*s + b
		dst[3] = float32(uint16(w>>48))*s + b
		dst, raw = dst[4:], raw[8:]
	}
	for i := range dst {
		dst[i] = float32(binary.LittleEndian.Uint16(raw[2*i:]))*s + b
	}
}

// rescale16 is the general loop for 16-bit words: the BitsStored bits
// ending at HighBit (two's complement when Signed), CT padding (values in
// [PaddingValue, PaddingLimit] become PaddingHU) when in.HasPadding, and
// float32(stored*slope + intercept) computed in float64 otherwise, as the
// general path of rescaleFrame does. len(raw) must be 2*len(dst).
func rescale16(dst []float32, raw []byte, in *Instance, slope, icpt float64) {
	// Shifting the word left by 15-HighBit puts the value's top bit at
	// bit 15; shifting right by 16-BitsStored (arithmetically when signed)
	// drops the bits below the value and extends its sign.
	l, r := uint(15-in.HighBit), uint(16-in.BitsStored)
	lo, hi := int32(1), int32(0) // empty padding range
	if in.HasPadding {
		lo, hi = int32(max(in.PaddingValue, -1<<31)), int32(min(in.PaddingLimit, 1<<31-1))
	}
	signed := in.Signed
	for i := range dst {
		w := binary.LittleEndian.Uint16(raw[2*i:]) << l
		var v int32
		if signed {
			v = int32(int16(w) >> r)
		} else {
			v = int32(w >> r)
		}
		if v >= lo && v <= hi {
			dst[i] = PaddingHU
			continue
		}
		dst[i] = float32(float64(v)*slope + icpt)
	}
}
