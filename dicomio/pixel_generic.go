//go:build !amd64 || purego

package dicomio

// rescaleInt16 sets dst[i] = float32(int16 word i of raw)*s + b in float32
// arithmetic (as NumPy computes it); len(raw) must be 2*len(dst).
func rescaleInt16(dst []float32, raw []byte, s, b float32) { rescaleInt16Go(dst, raw, s, b) }

// rescaleUint16 is rescaleInt16 for unsigned words.
func rescaleUint16(dst []float32, raw []byte, s, b float32) { rescaleUint16Go(dst, raw, s, b) }
