package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// raw assembles a file from a header string and data bytes by hand.
func raw(header string, data ...byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func le16(vs ...uint16) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

func le32f(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func same(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }

func TestDecodeHandBuilt(t *testing.T) {
	// Two tensors listed in the header in the opposite order of their data.
	data := append(le32f(1.5, -2, 0.25), le16(0x3C00, 0xC000)...)
	b := raw(`{"b":{"dtype":"F16","shape":[2],"data_offsets":[12,16]},`+
		`"__metadata__":{"format":"pt","k":"v"},`+
		`"a":{"dtype":"F32","shape":[1,3],"data_offsets":[0,12]}}`, data...)
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors) != 2 || f.Tensors[0].Name != "a" || f.Tensors[1].Name != "b" {
		t.Fatalf("tensors %+v, want a then b (data-offset order)", f.Tensors)
	}
	a := f.Tensors[0]
	if a.DType != "F32" || len(a.Shape) != 2 || a.Shape[0] != 1 || a.Shape[1] != 3 {
		t.Errorf("a: dtype %s shape %v", a.DType, a.Shape)
	}
	for i, w := range []float32{1.5, -2, 0.25} {
		if a.Data[i] != w {
			t.Errorf("a[%d] = %v, want %v", i, a.Data[i], w)
		}
	}
	bt, ok := f.Get("b")
	if !ok || bt.DType != "F16" || bt.Data[0] != 1 || bt.Data[1] != -2 {
		t.Errorf("b = %+v", bt)
	}
	if _, ok := f.Get("c"); ok {
		t.Error("Get(c) found a tensor")
	}
	if f.Metadata["format"] != "pt" || f.Metadata["k"] != "v" || len(f.Metadata) != 2 {
		t.Errorf("metadata %v", f.Metadata)
	}
}

func TestDecodeScalarAndEmpty(t *testing.T) {
	b := raw(`{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]}}  `, le32f(7)...)
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := f.Get("s")
	e, _ := f.Get("e")
	if len(s.Shape) != 0 || len(s.Data) != 1 || s.Data[0] != 7 {
		t.Errorf("scalar %+v", s)
	}
	if len(e.Data) != 0 || len(e.Shape) != 2 {
		t.Errorf("empty %+v", e)
	}
}

func TestF16Conversion(t *testing.T) {
	cases := []struct {
		bits uint16
		want float32
	}{
		{0x0000, 0},
		{0x8000, float32(math.Copysign(0, -1))},
		{0x3C00, 1},
		{0xC000, -2},
		{0x3555, 0.333251953125},                   // 0x555/1024 = 1365/1024; (1+1365/1024)/4
		{0x7BFF, 65504},                            // largest finite
		{0x0400, 0x1p-14},                          // smallest normal
		{0x0001, 0x1p-24},                          // smallest subnormal
		{0x03FF, 1023 * 0x1p-24},                   // largest subnormal
		{0x8201, -513 * 0x1p-24},                   // negative subnormal
		{0x7C00, float32(math.Inf(1))},             // +inf
		{0xFC00, float32(math.Inf(-1))},            // -inf
		{0x7E00, math.Float32frombits(0x7FC00000)}, // quiet NaN
		{0x7C01, math.Float32frombits(0x7F802000)}, // signalling NaN payload kept
	}
	var bits []uint16
	for _, c := range cases {
		bits = append(bits, c.bits)
		if got := F16ToF32(c.bits); !same(got, c.want) {
			t.Errorf("F16ToF32(%#04x) = %v (%#08x), want %v (%#08x)", c.bits, got, math.Float32bits(got), c.want, math.Float32bits(c.want))
		}
	}
	// The same values through a whole file.
	n := len(bits)
	f, err := Decode(raw(`{"h":{"dtype":"F16","shape":[`+strconv.Itoa(n)+`],"data_offsets":[0,`+strconv.Itoa(2*n)+`]}}`, le16(bits...)...))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		if !same(f.Tensors[0].Data[i], c.want) {
			t.Errorf("file F16 %#04x = %v, want %v", c.bits, f.Tensors[0].Data[i], c.want)
		}
	}
}

func TestBF16AndF64AndIntegers(t *testing.T) {
	var data []byte
	data = append(data, le16(0x3F80, 0xC040, 0x7F80, 0x0001)...) // 1, -3, +inf, 2^-133
	data = binary.LittleEndian.AppendUint64(data, math.Float64bits(0.1))
	data = binary.LittleEndian.AppendUint64(data, uint64(123456))
	neg := int64(-5)
	data = binary.LittleEndian.AppendUint64(data, uint64(neg))
	data = append(data, 0, 1, 1)
	hdr := `{"bf":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]},` +
		`"d":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},` +
		`"i":{"dtype":"I64","shape":[2],"data_offsets":[16,32]},` +
		`"m":{"dtype":"BOOL","shape":[3],"data_offsets":[32,35]}}`
	f, err := Decode(raw(hdr, data...))
	if err != nil {
		t.Fatal(err)
	}
	bf, _ := f.Get("bf")
	for i, w := range []float32{1, -3, float32(math.Inf(1)), 0x1p-133} {
		if !same(bf.Data[i], w) {
			t.Errorf("BF16[%d] = %v, want %v", i, bf.Data[i], w)
		}
	}
	if d, _ := f.Get("d"); d.Data[0] != float32(0.1) {
		t.Errorf("F64 0.1 -> %v", d.Data[0])
	}
	if i, _ := f.Get("i"); i.Data[0] != 123456 || i.Data[1] != -5 {
		t.Errorf("I64 -> %v", i.Data)
	}
	if m, _ := f.Get("m"); m.Data[0] != 0 || m.Data[1] != 1 || m.Data[2] != 1 {
		t.Errorf("BOOL -> %v", m.Data)
	}
}

func TestDecodeErrors(t *testing.T) {
	f4 := le32f(1, 2, 3, 4)
	huge := make([]byte, 8)
	binary.LittleEndian.PutUint64(huge, 100_000_001)
	cases := []struct {
		name string
		b    []byte
		want []string // substrings of the error
	}{
		{"short", []byte{1, 2, 3}, []string{"shorter than the 8-byte"}},
		{"header too large", append(huge, '{', '}'), []string{"header length 100000001 exceeds the limit"}},
		{"truncated header", raw(`{"a":1}`)[:10], []string{"truncated"}},
		{"bad json", raw(`{"a":`, f4...), []string{"bad JSON"}},
		{"not an object", raw(`[1,2]`, f4...), []string{"bad JSON"}},
		{"trailing junk", raw(`{} x`), []string{"unexpected bytes"}},
		{"bad metadata", raw(`{"__metadata__":{"a":1}}`), []string{"__metadata__"}},
		{"unknown field", raw(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, f4...), []string{`tensor "w"`, "unknown field"}},
		{"unknown dtype", raw(`{"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}`, f4[:8]...), []string{`tensor "w"`, `unknown dtype "C64"`}},
		{"no dtype", raw(`{"w":{"shape":[1],"data_offsets":[0,4]}}`, f4...), []string{`tensor "w"`, "no dtype"}},
		{"no shape", raw(`{"w":{"dtype":"F32","data_offsets":[0,4]}}`, f4...), []string{`tensor "w"`, "no shape"}},
		{"empty name", raw(`{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f4...), []string{"empty name"}},
		{"offsets count", raw(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, f4...), []string{`tensor "w"`, "data_offsets has 1 values"}},
		{"offsets beyond data", raw(`{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,20]}}`, f4...), []string{`tensor "w"`, "out of range of the 16 data bytes"}},
		{"offsets reversed", raw(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}`, f4...), []string{`tensor "w"`, "out of range"}},
		{"negative offset", raw(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, f4...), []string{`tensor "w"`, "out of range"}},
		{"fractional offset", raw(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}}`, f4...), []string{`tensor "w"`, "bad JSON"}},
		{"size mismatch", raw(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}`, f4...), []string{`tensor "w"`, "shape [3] of F32 needs 12 bytes", "hold 16"}},
		{"f16 size mismatch", raw(`{"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,16]}}`, f4...), []string{`tensor "w"`, "needs 8 bytes"}},
		{"negative dim", raw(`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, f4...), []string{`tensor "w"`, "negative dimension"}},
		{"overflowing shape", raw(`{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}`, f4...), []string{`tensor "w"`, "more elements"}},
		{"overlap", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, f4...), []string{`tensor "b"`, "overlap", `"a"`}},
		{"inexact integer", raw(`{"i":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, 0x01, 0x00, 0x00, 0x01), []string{`tensor "i"`, "not exactly representable"}},
		{"bad bool", raw(`{"m":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}}`, 2), []string{`tensor "m"`, "BOOL byte 2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.b)
			if err == nil {
				t.Fatal("no error")
			}
			var se *Error
			if !errors.As(err, &se) {
				t.Errorf("error %T is not *Error", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestReadFileErrorNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := os.WriteFile(p, raw(`{"w":{"dtype":"X","shape":[1],"data_offsets":[0,4]}}`, 0, 0, 0, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), `tensor "w"`) {
		t.Errorf("error %v does not name file and tensor", err)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestEncodeLayout(t *testing.T) {
	f := &File{
		Tensors: []Tensor{
			{Name: "zeta", DType: "F16", Shape: []int{2}, Data: []float32{3, 4}},
			{Name: "alpha", Shape: []int{1, 1}, Data: []float32{-1}},
			{Name: "s", Shape: nil, Data: []float32{9}},
		},
		Metadata: map[string]string{"format": "pt"},
	}
	var buf bytes.Buffer
	if err := Encode(&buf, f); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	n := binary.LittleEndian.Uint64(b)
	if n%8 != 0 {
		t.Errorf("header length %d not a multiple of 8", n)
	}
	hdr := string(b[8 : 8+n])
	want := `{"__metadata__":{"format":"pt"},"alpha":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]},` +
		`"s":{"dtype":"F32","shape":[],"data_offsets":[4,8]},"zeta":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`
	if strings.TrimRight(hdr, " ") != want || len(hdr)-len(want) >= 8 {
		t.Errorf("header\n%q\nwant\n%q padded with < 8 spaces", hdr, want)
	}
	if got, wantData := b[8+n:], le32f(-1, 9, 3, 4); !bytes.Equal(got, wantData) {
		t.Errorf("data % x, want % x", got, wantData)
	}
	g, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if names := []string{g.Tensors[0].Name, g.Tensors[1].Name, g.Tensors[2].Name}; names[0] != "alpha" || names[1] != "s" || names[2] != "zeta" {
		t.Errorf("order %v", names)
	}
	if z, _ := g.Get("zeta"); z.DType != "F32" || z.Data[1] != 4 {
		t.Errorf("zeta %+v", z)
	}
}

func TestEncodeErrors(t *testing.T) {
	cases := []struct {
		name string
		ts   []Tensor
		want string
	}{
		{"length", []Tensor{{Name: "w", Shape: []int{2, 2}, Data: make([]float32, 3)}}, `tensor "w": shape [2 2] has 4 elements, Data has 3`},
		{"duplicate", []Tensor{{Name: "w", Data: []float32{1}}, {Name: "w", Data: []float32{1}}}, `tensor "w": name used by two tensors`},
		{"empty", []Tensor{{Name: "", Data: []float32{1}}}, "empty name"},
		{"reserved", []Tensor{{Name: "__metadata__", Data: []float32{1}}}, "reserved"},
		{"negative", []Tensor{{Name: "w", Shape: []int{-1}}}, "negative dimension"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Encode(&bytes.Buffer{}, &File{Tensors: c.ts})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.safetensors")
	f := &File{Tensors: []Tensor{{Name: "w", Shape: []int{3}, Data: []float32{1, 2, 3}}}}
	if err := WriteFile(p, f); err != nil {
		t.Fatal(err)
	}
	// A failing write leaves the old file intact and no temporary behind.
	bad := &File{Tensors: []Tensor{{Name: "w", Shape: []int{3}, Data: []float32{1}}}}
	if err := WriteFile(p, bad); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("bad write: %v", err)
	}
	g, err := ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := g.Get("w"); w.Data[2] != 3 {
		t.Errorf("read back %v", w.Data)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(ents))
	}
	if err := WriteFile(filepath.Join(dir, "no", "such", "dir.safetensors"), f); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(raw(`{"a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},"__metadata__":{"x":"y"}}`, le32f(1, 2)...))
	f.Add(raw(`{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]}}`, le16(0x7C01, 0x0001, 0x3F80)...))
	f.Add(raw(`{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"d":{"dtype":"F64","shape":[],"data_offsets":[8,16]}}`, make([]byte, 16)...))
	f.Add(raw(`{}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode as F32 and decode to the same bits.
		var buf bytes.Buffer
		if err := Encode(&buf, file); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := Decode(buf.Bytes())
		if err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
		if len(back.Tensors) != len(file.Tensors) || len(back.Metadata) != len(file.Metadata) {
			t.Fatalf("round trip: %d tensors %d metadata, want %d %d", len(back.Tensors), len(back.Metadata), len(file.Tensors), len(file.Metadata))
		}
		for k, v := range file.Metadata {
			if back.Metadata[k] != v {
				t.Fatalf("metadata %q: %q, want %q", k, back.Metadata[k], v)
			}
		}
		for _, want := range file.Tensors {
			got, ok := back.Get(want.Name)
			if !ok || len(got.Data) != len(want.Data) || len(got.Shape) != len(want.Shape) {
				t.Fatalf("tensor %q lost or reshaped", want.Name)
			}
			for i := range want.Data {
				if !same(got.Data[i], want.Data[i]) {
					t.Fatalf("tensor %q element %d: %v, want %v", want.Name, i, got.Data[i], want.Data[i])
				}
			}
		}
	})
}
