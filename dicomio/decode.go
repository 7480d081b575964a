package dicomio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"strings"

	"github.com/cocosip/go-dicom-codec/jpeg/extended"
	"github.com/cocosip/go-dicom-codec/jpeg/lossless"
	"github.com/cocosip/go-dicom-codec/jpeg2000"
	jlsll "github.com/cocosip/go-dicom-codec/jpegls/lossless"
	jlsnear "github.com/cocosip/go-dicom-codec/jpegls/nearlossless"
	"github.com/suyashkumar/dicom/pkg/uid"
)

// UnsupportedError reports pixel data this package cannot decode: a
// transfer syntax, a sample format or a codec feature.
type UnsupportedError struct {
	// Path names the object; What says what is unsupported, e.g.
	// "transfer syntax 1.2.840.10008.1.2.4.100 (MPEG2 Main Profile ...)".
	Path, What string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("dicomio: %s: unsupported %s", e.Path, e.What)
}

// ErrNoPixelData is wrapped by errors for image objects without a Pixel
// Data element (for example truncated files).
var ErrNoPixelData = errors.New("no Pixel Data (7FE0,0010) element")

func syntaxName(ts string) string {
	if ts == "" {
		return "(none: no file meta header, syntax inferred)"
	}
	if info, err := uid.Lookup(ts); err == nil {
		return fmt.Sprintf("%s (%s)", ts, info.Name)
	}
	return fmt.Sprintf("%s (unknown UID)", ts)
}

func isNativeSyntax(ts string) bool {
	switch ts {
	case "", tsImplicitLE, tsExplicitLE, tsExplicitBE, tsDeflateLE:
		return true
	}
	return false
}

func isSupportedSyntax(ts string) bool {
	if isNativeSyntax(ts) {
		return true
	}
	switch ts {
	case tsRLE, tsJPEGBase, tsJPEGExt, tsJPEGLL14, tsJPEGLLSV1, tsJPEGLS, tsJPEGLSNear, tsJ2KLL, tsJ2K:
		return true
	}
	return false
}

// bytesPerSample is the size of one sample in decoded native frames:
// BitsAllocated/8, and 1 for 1-bit data (unpacked to one byte per sample).
func (in *Instance) bytesPerSample() int { return max(in.BitsAllocated/8, 1) }

// frameBytes is the size of one native frame.
func (in *Instance) frameBytes() int {
	return in.Rows * in.Cols * in.SamplesPerPixel * in.bytesPerSample()
}

// checkFormat rejects sample formats this package does not decode.
func (in *Instance) checkFormat() error {
	switch in.BitsAllocated {
	case 1, 8, 16, 32:
	default:
		return &UnsupportedError{Path: in.Path, What: fmt.Sprintf("BitsAllocated %d (want 1, 8, 16 or 32)", in.BitsAllocated)}
	}
	if in.BitsAllocated == 1 && !isNativeSyntax(in.TransferSyntax) {
		return &UnsupportedError{Path: in.Path, What: "BitsAllocated 1 in a compressed transfer syntax"}
	}
	if strings.HasPrefix(in.Photometric, "YBR_") && strings.HasSuffix(in.Photometric, "_422") && isNativeSyntax(in.TransferSyntax) {
		return &UnsupportedError{Path: in.Path, What: "native " + in.Photometric + " (chroma-subsampled) pixel data"}
	}
	if in.BitsStored > in.BitsAllocated || in.HighBit >= in.BitsAllocated || in.HighBit+1 < in.BitsStored {
		return &ParseError{Path: in.Path, Tag: "BitsStored (0028,0101)", Err: fmt.Errorf("BitsStored %d, HighBit %d do not fit BitsAllocated %d", in.BitsStored, in.HighBit, in.BitsAllocated)}
	}
	if in.SamplesPerPixel != 1 && in.SamplesPerPixel != 3 {
		return &UnsupportedError{Path: in.Path, What: fmt.Sprintf("SamplesPerPixel %d", in.SamplesPerPixel)}
	}
	if !isSupportedSyntax(in.TransferSyntax) {
		return &UnsupportedError{Path: in.Path, What: "transfer syntax " + syntaxName(in.TransferSyntax)}
	}
	return nil
}

// frameData returns each frame's pixels as native little-endian samples
// (BitsAllocated wide, samples interleaved), decoding compressed syntaxes.
// Native little-endian frames alias lay.body.
func frameData(in *Instance, lay *layout) ([][]byte, error) {
	if err := in.checkFormat(); err != nil {
		return nil, err
	}
	if !lay.hasPixels {
		return nil, &ParseError{Path: in.Path, Err: ErrNoPixelData}
	}
	fb := in.frameBytes()
	if !lay.encapsulated && in.BitsAllocated == 1 {
		return bitFrames(in, lay)
	}
	if !lay.encapsulated {
		if !isNativeSyntax(in.TransferSyntax) {
			return nil, &ParseError{Path: in.Path, Tag: "PixelData (7FE0,0010)", Err: fmt.Errorf("native (defined-length) pixel data in compressed transfer syntax %s", syntaxName(in.TransferSyntax))}
		}
		want := int64(fb) * int64(in.Frames)
		// Longer pixel data (trailing padding) is accepted, as pydicom does;
		// shorter is an error.
		if int64(lay.pixLen) < want {
			return nil, &ParseError{Path: in.Path, Tag: "PixelData (7FE0,0010)", Err: fmt.Errorf("length %d bytes, but Rows %d * Columns %d * NumberOfFrames %d * SamplesPerPixel %d * BitsAllocated/8 %d = %d",
				lay.pixLen, in.Rows, in.Cols, in.Frames, in.SamplesPerPixel, in.bytesPerSample(), want)}
		}
		raw := lay.body[lay.pixOff : lay.pixOff+int(want)]
		if lay.bo == binary.BigEndian && in.BitsAllocated > 8 {
			raw = swapBytes(raw, in.bytesPerSample())
		}
		frames := make([][]byte, in.Frames)
		for f := range frames {
			frames[f] = raw[f*fb : (f+1)*fb]
			if in.SamplesPerPixel > 1 && in.PlanarConfiguration == 1 {
				frames[f] = interleave(frames[f], in.SamplesPerPixel, in.bytesPerSample())
			}
		}
		return frames, nil
	}
	if isNativeSyntax(in.TransferSyntax) {
		return nil, &ParseError{Path: in.Path, Tag: "PixelData (7FE0,0010)", Err: fmt.Errorf("encapsulated pixel data in native transfer syntax %s", syntaxName(in.TransferSyntax))}
	}
	enc, err := splitFrames(in, lay)
	if err != nil {
		return nil, err
	}
	frames := make([][]byte, len(enc))
	for f, data := range enc {
		out, err := decodeFrame(in, data)
		if err != nil {
			var ue *UnsupportedError
			if errors.As(err, &ue) {
				return nil, err
			}
			return nil, &ParseError{Path: in.Path, Tag: fmt.Sprintf("PixelData (7FE0,0010) frame %d", f+1), Err: err}
		}
		frames[f] = out
	}
	return frames, nil
}

// bitFrames unpacks 1-bit native pixel data (PS3.5 8.1.1: the first
// pixel in the least significant bit of the first byte; frames follow one
// another without byte alignment) to one byte per sample.
func bitFrames(in *Instance, lay *layout) ([][]byte, error) {
	per := int64(in.Rows) * int64(in.Cols) * int64(in.SamplesPerPixel)
	need := (per*int64(in.Frames) + 7) / 8
	if int64(lay.pixLen) < need {
		return nil, &ParseError{Path: in.Path, Tag: "PixelData (7FE0,0010)", Err: fmt.Errorf("length %d bytes, but %d frames of Rows %d * Columns %d * SamplesPerPixel %d bits need %d",
			lay.pixLen, in.Frames, in.Rows, in.Cols, in.SamplesPerPixel, need)}
	}
	raw := lay.body[lay.pixOff : lay.pixOff+int(need)]
	frames := make([][]byte, in.Frames)
	for f := range frames {
		out := make([]byte, per)
		base := int64(f) * per
		for i := range out {
			b := base + int64(i)
			out[i] = (raw[b>>3] >> uint(b&7)) & 1
		}
		frames[f] = out
	}
	return frames, nil
}

// swapBytes returns a copy of b with each n-byte sample reversed.
func swapBytes(b []byte, n int) []byte {
	out := make([]byte, len(b)-len(b)%n)
	for i := 0; i+n <= len(b); i += n {
		for k := 0; k < n; k++ {
			out[i+k] = b[i+n-1-k]
		}
	}
	return out
}

// interleave turns planes (R...G...B...) into interleaved samples.
func interleave(b []byte, spp, bps int) []byte {
	out := make([]byte, len(b))
	plane := len(b) / spp
	npix := plane / bps
	for s := 0; s < spp; s++ {
		for p := 0; p < npix; p++ {
			copy(out[(p*spp+s)*bps:(p*spp+s+1)*bps], b[s*plane+p*bps:s*plane+(p+1)*bps])
		}
	}
	return out
}

// splitFrames groups the encapsulated fragments into one byte string per
// frame: by the Basic Offset Table when present, one fragment per frame
// when the counts match, all fragments for a single frame, or by codec
// start markers otherwise.
func splitFrames(in *Instance, lay *layout) ([][]byte, error) {
	bad := func(err error) error { return &ParseError{Path: in.Path, Tag: "PixelData (7FE0,0010)", Err: err} }
	if len(lay.items) < 2 {
		return nil, bad(errors.New("encapsulated pixel data holds no fragments"))
	}
	bot, frags, offs := lay.items[0], lay.items[1:], lay.itemOff[1:]
	join := func(fs [][]byte) []byte {
		if len(fs) == 1 {
			return fs[0]
		}
		return bytes.Join(fs, nil)
	}
	if in.Frames == 1 {
		return [][]byte{join(frags)}, nil
	}
	if len(bot) > 0 {
		if len(bot)%4 != 0 || len(bot)/4 != in.Frames {
			return nil, bad(fmt.Errorf("Basic Offset Table has %d bytes for %d frames", len(bot), in.Frames))
		}
		starts := make([]int, in.Frames)
		for f := range starts {
			rel := int64(binary.LittleEndian.Uint32(bot[4*f:]))
			idx := -1
			for i, o := range offs {
				if int64(o-offs[0]) == rel {
					idx = i
					break
				}
			}
			if idx < 0 || (f > 0 && idx <= starts[f-1]) {
				return nil, bad(fmt.Errorf("Basic Offset Table entry %d (%d) does not start a fragment", f, rel))
			}
			starts[f] = idx
		}
		out := make([][]byte, in.Frames)
		for f := range out {
			end := len(frags)
			if f+1 < in.Frames {
				end = starts[f+1]
			}
			out[f] = join(frags[starts[f]:end])
		}
		return out, nil
	}
	if len(frags) == in.Frames {
		return frags, nil
	}
	if len(frags) < in.Frames {
		return nil, bad(fmt.Errorf("%d fragments for %d frames", len(frags), in.Frames))
	}
	// No offset table and more fragments than frames: a frame starts at a
	// fragment beginning with a JPEG SOI or JPEG 2000 SOC marker.
	var out [][]byte
	var cur [][]byte
	for _, fr := range frags {
		isStart := len(fr) >= 2 && fr[0] == 0xFF && (fr[1] == 0xD8 || fr[1] == 0x4F)
		if isStart && len(cur) > 0 {
			out = append(out, join(cur))
			cur = nil
		}
		cur = append(cur, fr)
	}
	out = append(out, join(cur))
	if len(out) != in.Frames {
		return nil, bad(fmt.Errorf("cannot split %d fragments into %d frames without a Basic Offset Table", len(frags), in.Frames))
	}
	return out, nil
}

// decodeFrame decodes one compressed frame to native little-endian samples.
func decodeFrame(in *Instance, data []byte) ([]byte, error) {
	switch in.TransferSyntax {
	case tsJ2KLL, tsJ2K:
		if len(data) >= 12 && string(data[4:8]) == "jP  " {
			return nil, &UnsupportedError{Path: in.Path, What: "JPEG 2000 inside a JP2 file wrapper (a bare codestream is required)"}
		}
		if err := checkJ2KHeader(in, data); err != nil {
			return nil, err
		}
	case tsJPEGBase, tsJPEGExt, tsJPEGLL14, tsJPEGLLSV1, tsJPEGLS, tsJPEGLSNear:
		prec, err := checkJPEGHeader(in, data)
		if err != nil {
			return nil, err
		}
		if (in.TransferSyntax == tsJPEGBase || in.TransferSyntax == tsJPEGExt) && prec > 8 {
			// go-dicom-codec v0.5.0 decodes 12-bit extended JPEG wrongly
			// (checked against GDCM on pydicom's JPEG-lossy.dcm).
			return nil, &UnsupportedError{Path: in.Path, What: fmt.Sprintf("%d-bit lossy JPEG (process 2/4); no pure-Go decoder matches GDCM", prec)}
		}
		if in.TransferSyntax == tsJPEGLL14 || in.TransferSyntax == tsJPEGLLSV1 {
			sv, err := jpegScanPredictor(data)
			if err != nil {
				return nil, err
			}
			if sv != 1 {
				// go-dicom-codec v0.5.0 decodes selection values 2, 3, 5,
				// 6 and 7 wrongly (checked against dcmtk's +el +sv N).
				return nil, &UnsupportedError{Path: in.Path, What: fmt.Sprintf("JPEG Lossless selection value %d (only 1, the SV1 of transfer syntax .70, is decoded)", sv)}
			}
		}
	}
	switch in.TransferSyntax {
	case tsRLE:
		return decodeRLE(data, in.Rows, in.Cols, in.SamplesPerPixel, in.bytesPerSample())
	case tsJPEGBase, tsJPEGExt:
		return decodeJPEGLossy(in, data)
	case tsJPEGLL14, tsJPEGLLSV1:
		if in.SamplesPerPixel != 1 {
			return nil, &UnsupportedError{Path: in.Path, What: "colour JPEG Lossless (ctlens reads greyscale images)"}
		}
		pix, w, h, c, bits, err := safeCodec(func() ([]byte, int, int, int, int, error) { return lossless.Decode(data) })
		if err != nil {
			return nil, fmt.Errorf("JPEG Lossless: %w", err)
		}
		return fitSamples(in, pix, w, h, c, bits)
	case tsJPEGLS, tsJPEGLSNear:
		if in.SamplesPerPixel != 1 {
			return nil, &UnsupportedError{Path: in.Path, What: "colour JPEG-LS (ctlens reads greyscale images)"}
		}
		pix, w, h, c, bits, err := safeCodec(func() ([]byte, int, int, int, int, error) {
			if in.TransferSyntax == tsJPEGLS {
				return jlsll.Decode(data)
			}
			p, w, h, c, b, _, err := jlsnear.Decode(data)
			return p, w, h, c, b, err
		})
		if err != nil {
			return nil, fmt.Errorf("JPEG-LS: %w", err)
		}
		return fitSamples(in, pix, w, h, c, bits)
	case tsJ2KLL, tsJ2K:
		return decodeJ2K(in, data)
	}
	return nil, &UnsupportedError{Path: in.Path, What: "transfer syntax " + syntaxName(in.TransferSyntax)}
}

// safeCodec runs a third-party decoder, turning a panic inside it into an
// error (defence in depth; inputs are size-checked before and after).
func safeCodec(f func() ([]byte, int, int, int, int, error)) (p []byte, w, h, c, b int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decoder failed: %v", r)
		}
	}()
	return f()
}

// fitSamples checks a codec's output size against the header and widens
// or narrows its little-endian samples to BitsAllocated.
func fitSamples(in *Instance, pix []byte, w, h, c, bits int) ([]byte, error) {
	if w != in.Cols || h != in.Rows || c != in.SamplesPerPixel {
		return nil, fmt.Errorf("codestream is %dx%d with %d components, header says Columns %d, Rows %d, SamplesPerPixel %d", w, h, c, in.Cols, in.Rows, in.SamplesPerPixel)
	}
	n := w * h * c
	src := 1
	if bits > 8 {
		src = 2
	}
	if bits > 16 {
		return nil, &UnsupportedError{Path: in.Path, What: fmt.Sprintf("%d-bit codestream", bits)}
	}
	if len(pix) < n*src {
		return nil, fmt.Errorf("decoder returned %d bytes for %d samples", len(pix), n)
	}
	dst := in.bytesPerSample()
	if dst == src {
		return pix[:n*dst], nil
	}
	out := make([]byte, n*dst)
	for i := 0; i < n; i++ {
		var v uint32
		if src == 1 {
			v = uint32(pix[i])
		} else {
			v = uint32(binary.LittleEndian.Uint16(pix[2*i:]))
		}
		for k := 0; k < dst; k++ {
			out[i*dst+k] = byte(v >> (8 * k))
		}
	}
	return out, nil
}

// decodeJPEGLossy decodes JPEG baseline (8-bit, image/jpeg) and extended
// (12-bit, go-dicom-codec) greyscale frames.
func decodeJPEGLossy(in *Instance, data []byte) ([]byte, error) {
	if in.SamplesPerPixel != 1 {
		return nil, &UnsupportedError{Path: in.Path, What: "colour lossy JPEG (ctlens reads greyscale images)"}
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(data))
	if err == nil {
		if cfg.Width != in.Cols || cfg.Height != in.Rows {
			return nil, fmt.Errorf("JPEG is %dx%d, header says %dx%d", cfg.Width, cfg.Height, in.Cols, in.Rows)
		}
		img, err := jpeg.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("JPEG baseline: %w", err)
		}
		g, ok := img.(*image.Gray)
		if !ok {
			return nil, &UnsupportedError{Path: in.Path, What: fmt.Sprintf("JPEG colour model %T in a greyscale image", img)}
		}
		pix := make([]byte, in.Rows*in.Cols)
		for y := 0; y < in.Rows; y++ {
			copy(pix[y*in.Cols:(y+1)*in.Cols], g.Pix[y*g.Stride:y*g.Stride+in.Cols])
		}
		return fitSamples(in, pix, in.Cols, in.Rows, 1, 8)
	}
	pix, w, h, c, bits, err2 := safeCodec(func() ([]byte, int, int, int, int, error) { return extended.Decode(data) })
	if err2 != nil {
		return nil, &UnsupportedError{Path: in.Path, What: fmt.Sprintf("JPEG (image/jpeg: %v; 12-bit extended decoder: %v)", err, err2)}
	}
	return fitSamples(in, pix, w, h, c, bits)
}

// decodeJ2K decodes a JPEG 2000 codestream with go-dicom-codec.
func decodeJ2K(in *Instance, data []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("JPEG 2000 decoder failed: %v", r)
		}
	}()
	d := jpeg2000.NewDecoder()
	if err := d.Decode(data); err != nil {
		return nil, fmt.Errorf("JPEG 2000: %w", err)
	}
	if d.Width() != in.Cols || d.Height() != in.Rows || d.Components() != in.SamplesPerPixel {
		return nil, fmt.Errorf("JPEG 2000 codestream is %dx%d with %d components, header says Columns %d, Rows %d, SamplesPerPixel %d",
			d.Width(), d.Height(), d.Components(), in.Cols, in.Rows, in.SamplesPerPixel)
	}
	n := in.Rows * in.Cols
	bps := in.bytesPerSample()
	out = make([]byte, n*in.SamplesPerPixel*bps)
	for c := 0; c < in.SamplesPerPixel; c++ {
		comp, err := d.GetComponentData(c)
		if err != nil {
			return nil, fmt.Errorf("JPEG 2000 component %d: %w", c, err)
		}
		if len(comp) < n {
			return nil, fmt.Errorf("JPEG 2000 component %d has %d samples, want %d", c, len(comp), n)
		}
		for i := 0; i < n; i++ {
			v := uint32(comp[i])
			o := (i*in.SamplesPerPixel + c) * bps
			for k := 0; k < bps; k++ {
				out[o+k] = byte(v >> (8 * k))
			}
		}
	}
	return out, nil
}
