package dicomio

import (
	"encoding/binary"
	"math"
	"testing"
)

// TestRescaleInt16 checks the 16-bit conversion loops (SSE2 on amd64)
// against the formula float32(word)*slope + intercept evaluated one value
// at a time, for every 16-bit word, several rescales, lengths that leave
// tails of every size and misaligned inputs.
func TestRescaleInt16(t *testing.T) {
	words := make([]byte, 2*65536+1)
	for i := 0; i < 65536; i++ {
		binary.LittleEndian.PutUint16(words[1+2*i:], uint16(i))
	}
	rescales := [][2]float32{{1, -1024}, {1, 0}, {0.5, -1000.25}, {2.5, 3}, {-1, 7}, {1e-3, -0.5}}
	for _, sb := range rescales {
		s, b := sb[0], sb[1]
		for _, signed := range []bool{true, false} {
			// raw starts at an odd address: byte 1 of words.
			raw := words[1:]
			dst := make([]float32, 65536+3)
			for _, off := range []int{0, 1, 3} {
				for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 31, 65536 - 3} {
					d, r := dst[off:off+n], raw[2*off:2*(off+n)]
					for i := range d {
						d[i] = float32(math.NaN())
					}
					if signed {
						rescaleInt16(d, r, s, b)
					} else {
						rescaleUint16(d, r, s, b)
					}
					for i, got := range d {
						w := uint16(off + i)
						want := float32(w)*s + b
						if signed {
							want = float32(int16(w))*s + b
						}
						if math.Float32bits(got) != math.Float32bits(want) {
							t.Fatalf("signed %v s %v b %v off %d n %d: value %d: got %v, want %v", signed, s, b, off, n, i, got, want)
						}
					}
				}
			}
		}
	}
	// Worked by hand: int16 -32768 and 32767, uint16 65535, with HU rescale.
	raw := []byte{0x00, 0x80, 0xFF, 0x7F, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x18, 0xFC}
	d := make([]float32, 9)
	rescaleInt16(d, raw, 1, -1024)
	if d[0] != -33792 || d[1] != 31743 || d[2] != -1025 || d[8] != -2024 {
		t.Fatalf("int16: %v", d)
	}
	rescaleUint16(d, raw, 1, -1024)
	if d[0] != 31744 || d[1] != 31743 || d[2] != 64511 || d[8] != 63512 {
		t.Fatalf("uint16: %v", d)
	}
}

// TestRescaleFrame16 checks rescaleFrame on 16-bit words whose stored
// value is fewer than 16 bits (BitsStored < 16, HighBit anywhere), signed
// and unsigned, with and without CT padding, against the definition
// (PS3.5 8.1.1) evaluated by hand per word.
func TestRescaleFrame16(t *testing.T) {
	words := []uint16{0x0000, 0x0FFF, 0x0800, 0x07FF, 0xF123, 0x8001, 0x1FFE, 0xFFFF, 0x0C18, 0x7000}
	raw := make([]byte, 2*len(words))
	for i, w := range words {
		binary.LittleEndian.PutUint16(raw[2*i:], w)
	}
	cases := []struct {
		bits, high int
		signed     bool
		padding    bool
		slope      float64
		icpt       float64
	}{
		{12, 11, false, false, 1, -1024},
		{12, 11, true, false, 1, -1024},
		{12, 15, true, false, 1, 0},
		{12, 13, false, false, 0.5, 3.25},
		{16, 15, true, false, 1.1, -1024}, // slope not exact in float32: the float64 loop
		{12, 11, true, true, 1, -1024},
		{16, 15, true, true, 1, -1024},
		{10, 11, true, true, 2, 0},
	}
	for _, c := range cases {
		in := &Instance{BitsAllocated: 16, BitsStored: c.bits, HighBit: c.high, Signed: c.signed, Modality: "CT", SamplesPerPixel: 1}
		if c.padding {
			in.HasPadding, in.PaddingValue, in.PaddingLimit = true, -5, 0x7FF
		}
		got := make([]float32, len(words))
		rescaleFrame(got, raw, in, c.slope, c.icpt)
		for i, w := range words {
			// stored value: BitsStored bits ending at HighBit, two's
			// complement when signed
			v := int64(w>>(c.high+1-c.bits)) & (1<<c.bits - 1)
			if c.signed && v >= 1<<(c.bits-1) {
				v -= 1 << c.bits
			}
			want := float32(float64(v)*c.slope + c.icpt)
			if c.padding && v >= -5 && v <= 0x7FF {
				want = PaddingHU
			}
			if got[i] != want {
				t.Fatalf("%+v: word %#04x: got %v, want %v (stored %d)", c, w, got[i], want, v)
			}
		}
	}
}
