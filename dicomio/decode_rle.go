package dicomio

import (
	"encoding/binary"
	"fmt"
)

// decodeRLE decodes one RLE Lossless frame (DICOM PS3.5 Annex G): a
// 64-byte header of segment count and offsets, then one PackBits segment
// per byte plane (most significant byte of each sample first, sample by
// sample). The result is little-endian, samples interleaved.
func decodeRLE(data []byte, rows, cols, spp, bps int) ([]byte, error) {
	if len(data) < 64 {
		return nil, fmt.Errorf("RLE: frame of %d bytes is shorter than its 64-byte header", len(data))
	}
	nseg := int(binary.LittleEndian.Uint32(data))
	if nseg != spp*bps {
		return nil, fmt.Errorf("RLE: %d segments, want SamplesPerPixel %d * BitsAllocated/8 %d", nseg, spp, bps)
	}
	if nseg < 1 || nseg > 15 {
		return nil, fmt.Errorf("RLE: %d segments (1 to 15 allowed)", nseg)
	}
	offs := make([]int, nseg+1)
	for s := 0; s < nseg; s++ {
		o := int64(binary.LittleEndian.Uint32(data[4+4*s:]))
		if o < 64 || o > int64(len(data)) || (s > 0 && o < int64(offs[s-1])) {
			return nil, fmt.Errorf("RLE: segment %d offset %d outside the %d-byte frame", s+1, o, len(data))
		}
		offs[s] = int(o)
	}
	offs[nseg] = len(data)
	npix := rows * cols
	out := make([]byte, npix*spp*bps)
	plane := make([]byte, npix)
	for s := 0; s < nseg; s++ {
		if err := unpackBits(plane, data[offs[s]:offs[s+1]]); err != nil {
			return nil, fmt.Errorf("RLE: segment %d: %w", s+1, err)
		}
		sample, byteIdx := s/bps, bps-1-s%bps // first segment of a sample holds its most significant byte
		stride := spp * bps
		o := sample*bps + byteIdx
		for p := 0; p < npix; p++ {
			out[p*stride+o] = plane[p]
		}
	}
	return out, nil
}

// unpackBits fills dst from a PackBits segment: a header byte n in
// [0, 127] copies the next n+1 bytes, n in [-127, -1] repeats the next
// byte 1-n times, -128 does nothing. Input beyond len(dst) decoded bytes
// is ignored (segments are padded to even length).
func unpackBits(dst, src []byte) error {
	o, i := 0, 0
	for o < len(dst) {
		if i >= len(src) {
			return fmt.Errorf("segment ends after %d of %d bytes", o, len(dst))
		}
		n := int(int8(src[i]))
		i++
		switch {
		case n >= 0:
			if i+n+1 > len(src) || o+n+1 > len(dst) {
				return fmt.Errorf("literal run of %d bytes overruns the segment or image", n+1)
			}
			copy(dst[o:], src[i:i+n+1])
			i += n + 1
			o += n + 1
		case n > -128:
			if i >= len(src) || o+1-n > len(dst) {
				return fmt.Errorf("replicate run of %d bytes overruns the segment or image", 1-n)
			}
			b := src[i]
			i++
			for k := 0; k < 1-n; k++ {
				dst[o+k] = b
			}
			o += 1 - n
		}
	}
	return nil
}
