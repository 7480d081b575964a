//go:build amd64 && !purego

package dicomio

// rescaleInt16 sets dst[i] = float32(int16 word i of raw)*s + b in float32
// arithmetic (as NumPy computes it; bit-identical to rescaleInt16Go);
// len(raw) must be 2*len(dst). SSE2 (part of every amd64 CPU) converts
// eight values per step.
func rescaleInt16(dst []float32, raw []byte, s, b float32) {
	n := len(dst) &^ 7
	if n > 0 {
		rescaleInt16SSE2(dst[:n], raw[:2*n], s, b)
	}
	rescaleInt16Go(dst[n:], raw[2*n:], s, b)
}

// rescaleUint16 is rescaleInt16 for unsigned words.
func rescaleUint16(dst []float32, raw []byte, s, b float32) {
	n := len(dst) &^ 7
	if n > 0 {
		rescaleUint16SSE2(dst[:n], raw[:2*n], s, b)
	}
	rescaleUint16Go(dst[n:], raw[2*n:], s, b)
}

// rescaleInt16SSE2 and rescaleUint16SSE2 convert len(dst)/8*8 values;
// raw must hold 2*len(dst) bytes.
//
//go:noescape
func rescaleInt16SSE2(dst []float32, raw []byte, s, b float32)

//go:noescape
func rescaleUint16SSE2(dst []float32, raw []byte, s, b float32)
