// Package safetensors reads and writes the safetensors checkpoint format:
//
//	[8 bytes]  N, the header length, unsigned little-endian
//	[N bytes]  JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]},
//	           "__metadata__": {string: string}}
//	[rest]     raw little-endian tensor data; data_offsets are relative to
//	           the first byte after the header
//
// Every tensor is held as float32 whatever its stored dtype. The package
// knows nothing of package tensor, so that any layer can use it.
package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// MaxHeaderSize is the largest JSON header Decode accepts, in bytes (100 MB,
// the limit of the reference implementation).
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header entry that holds free-form metadata.
const metadataKey = "__metadata__"

// Tensor is one named tensor of a file: its stored dtype ("F32", "F16",
// "BF16", …), its shape (row-major, empty for a scalar) and its values
// converted to float32, Numel(Shape) of them.
type Tensor struct {
	Name  string
	DType string
	Shape []int
	Data  []float32
}

// File is the content of a safetensors file: its tensors, in data-offset
// order when decoded, and its free-form string metadata (nil when absent).
type File struct {
	Tensors  []Tensor
	Metadata map[string]string
}

// Get returns the tensor called name, if the file holds one.
func (f *File) Get(name string) (*Tensor, bool) {
	for i := range f.Tensors {
		if f.Tensors[i].Name == name {
			return &f.Tensors[i], true
		}
	}
	return nil, false
}

// Error describes a malformed file or an unencodable tensor: the file
// (empty when decoding bytes in memory), the tensor at fault (empty for a
// problem of the whole file) and what is wrong.
type Error struct {
	Path   string
	Tensor string
	Msg    string
}

// Error formats the error as "safetensors: PATH: tensor "NAME": what is wrong".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("safetensors: ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	if e.Tensor != "" {
		fmt.Fprintf(&b, "tensor %q: ", e.Tensor)
	}
	b.WriteString(e.Msg)
	return b.String()
}

func errorf(tensor, format string, args ...any) error {
	return &Error{Tensor: tensor, Msg: fmt.Sprintf(format, args...)}
}

// dtypeSize gives the stored element size in bytes of each dtype Decode
// reads.
var dtypeSize = map[string]int{
	"F64": 8, "F32": 4, "F16": 2, "BF16": 2,
	"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}

// entry is one tensor's header record.
type entry struct {
	DType       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

type located struct {
	name       string
	e          entry
	begin, end int64
}

// ReadFile reads and decodes the safetensors file at path. Errors name the
// file.
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	f, err := Decode(b)
	if err != nil {
		if e, ok := err.(*Error); ok {
			e.Path = path
		}
		return nil, err
	}
	return f, nil
}

// Decode parses a safetensors file held in b. Floating-point dtypes F32, F16
// and BF16 convert to float32 exactly (F16 subnormals, infinities and NaNs
// included); F64 rounds to nearest float32. Integer dtypes I64, I32, I16,
// I8, U8 and BOOL are accepted when every value is exactly representable as
// a float32 (|v| ≤ 2^24 or a multiple of the spacing there), so that
// PyTorch state dicts with num_batches_tracked load. Any other dtype, a
// header larger than MaxHeaderSize, malformed JSON, data offsets outside the
// data or overlapping another tensor's, or a byte length that is not the
// shape's element count times the dtype size is an *Error naming the tensor.
func Decode(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, errorf("", "file is %d bytes, shorter than the 8-byte header length", len(b))
	}
	n := binary.LittleEndian.Uint64(b[:8])
	if n > MaxHeaderSize {
		return nil, errorf("", "header length %d exceeds the limit of %d bytes", n, MaxHeaderSize)
	}
	if n > uint64(len(b)-8) {
		return nil, errorf("", "header length %d exceeds the %d bytes after the length field (truncated file?)", n, len(b)-8)
	}
	hdr := b[8 : 8+n]
	data := b[8+n:]

	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if err := dec.Decode(&raw); err != nil {
		return nil, errorf("", "bad JSON header: %v", err)
	}
	if raw == nil {
		return nil, errorf("", "bad JSON header: not an object")
	}
	if rest := bytes.TrimRight(hdr[dec.InputOffset():], " \t\r\n"); len(rest) != 0 {
		return nil, errorf("", "bad JSON header: %d unexpected bytes after the header object", len(rest))
	}

	f := &File{}
	var ts []located
	for name, msg := range raw {
		if name == metadataKey {
			var md map[string]string
			if err := json.Unmarshal(msg, &md); err != nil {
				return nil, errorf("", "bad JSON header: %s must map strings to strings: %v", metadataKey, err)
			}
			f.Metadata = md
			continue
		}
		var e entry
		d := json.NewDecoder(bytes.NewReader(msg))
		d.DisallowUnknownFields()
		if err := d.Decode(&e); err != nil {
			return nil, errorf(name, "bad JSON header entry: %v", err)
		}
		if name == "" {
			return nil, errorf("", "a tensor has an empty name")
		}
		if e.DType == "" {
			return nil, errorf(name, "no dtype")
		}
		if e.Shape == nil {
			return nil, errorf(name, "no shape")
		}
		size, ok := dtypeSize[e.DType]
		if !ok {
			return nil, errorf(name, "unknown dtype %q", e.DType)
		}
		if len(e.DataOffsets) != 2 {
			return nil, errorf(name, "data_offsets has %d values, want 2", len(e.DataOffsets))
		}
		begin, end := e.DataOffsets[0], e.DataOffsets[1]
		if begin < 0 || end < begin || end > int64(len(data)) {
			return nil, errorf(name, "data_offsets [%d, %d] out of range of the %d data bytes", begin, end, len(data))
		}
		numel := int64(1)
		if slices.Contains(e.Shape, 0) {
			numel = 0
		}
		for _, s := range e.Shape {
			if s < 0 {
				return nil, errorf(name, "negative dimension in shape %v", e.Shape)
			}
			if numel != 0 && numel > (int64(len(data))+1)/s {
				return nil, errorf(name, "shape %v has more elements than the file has bytes", e.Shape)
			}
			numel *= s
		}
		if numel*int64(size) != end-begin {
			return nil, errorf(name, "shape %v of %s needs %d bytes, data_offsets [%d, %d] hold %d",
				e.Shape, e.DType, numel*int64(size), begin, end, end-begin)
		}
		ts = append(ts, located{name: name, e: e, begin: begin, end: end})
	}
	sort.Slice(ts, func(i, j int) bool {
		if ts[i].begin != ts[j].begin {
			return ts[i].begin < ts[j].begin
		}
		if ts[i].end != ts[j].end {
			return ts[i].end < ts[j].end
		}
		return ts[i].name < ts[j].name
	})
	for i := 1; i < len(ts); i++ {
		if ts[i].begin < ts[i-1].end {
			return nil, errorf(ts[i].name, "data_offsets [%d, %d] overlap tensor %q at [%d, %d]",
				ts[i].begin, ts[i].end, ts[i-1].name, ts[i-1].begin, ts[i-1].end)
		}
	}
	f.Tensors = make([]Tensor, len(ts))
	for i, t := range ts {
		shape := make([]int, len(t.e.Shape))
		for k, s := range t.e.Shape {
			shape[k] = int(s)
		}
		vals, err := convert(t.e.DType, data[t.begin:t.end])
		if err != nil {
			return nil, errorf(t.name, "%v", err)
		}
		f.Tensors[i] = Tensor{Name: t.name, DType: t.e.DType, Shape: shape, Data: vals}
	}
	return f, nil
}

// convert turns little-endian stored values of dtype into float32.
func convert(dtype string, b []byte) ([]float32, error) {
	le := binary.LittleEndian
	var out []float32
	switch dtype {
	case "F32":
		out = make([]float32, len(b)/4)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
	case "F16":
		out = make([]float32, len(b)/2)
		for i := range out {
			out[i] = F16ToF32(le.Uint16(b[2*i:]))
		}
	case "BF16":
		out = make([]float32, len(b)/2)
		for i := range out {
			out[i] = math.Float32frombits(uint32(le.Uint16(b[2*i:])) << 16)
		}
	case "F64":
		out = make([]float32, len(b)/8)
		for i := range out {
			out[i] = float32(math.Float64frombits(le.Uint64(b[8*i:])))
		}
	case "I64", "I32", "I16", "I8", "U8", "BOOL":
		size := dtypeSize[dtype]
		out = make([]float32, len(b)/size)
		for i := range out {
			var v int64
			switch dtype {
			case "I64":
				v = int64(le.Uint64(b[8*i:]))
			case "I32":
				v = int64(int32(le.Uint32(b[4*i:])))
			case "I16":
				v = int64(int16(le.Uint16(b[2*i:])))
			case "I8":
				v = int64(int8(b[i]))
			case "U8":
				v = int64(b[i])
			case "BOOL":
				if b[i] > 1 {
					return nil, fmt.Errorf("element %d: BOOL byte %d is neither 0 nor 1", i, b[i])
				}
				v = int64(b[i])
			}
			f := float32(v)
			if int64(f) != v || f >= 0x1p63 {
				return nil, fmt.Errorf("element %d: %s value %d is not exactly representable as float32", i, dtype, v)
			}
			out[i] = f
		}
	default:
		return nil, fmt.Errorf("unknown dtype %q", dtype)
	}
	return out, nil
}

// F16ToF32 returns the IEEE 754 binary16 value with bits h as a float32
// (exact: subnormals, signed zeros, infinities and NaN payloads preserved).
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		// Subnormal or zero: mant·2^-24, exact in float32.
		v := float32(mant) * 0x1p-24
		if sign != 0 {
			v = -v
		}
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		return v
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}

// Encode writes f to w as safetensors with every tensor stored as F32
// whatever its DType, tensors laid out in order of sorted names, and the
// JSON header padded with spaces to a multiple of 8 bytes. Metadata is
// written under "__metadata__" when non-empty. Empty or duplicate names, the
// reserved name "__metadata__", negative dimensions and a Data length
// other than the shape's element count are an *Error naming the tensor.
func Encode(w io.Writer, f *File) error {
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool { return f.Tensors[order[i]].Name < f.Tensors[order[j]].Name })

	hdr := make(map[string]any, len(f.Tensors)+1)
	var off int64
	for k, i := range order {
		t := &f.Tensors[i]
		switch {
		case t.Name == "":
			return errorf("", "tensor %d has an empty name", i)
		case t.Name == metadataKey:
			return errorf(t.Name, "name is reserved for metadata")
		case k > 0 && f.Tensors[order[k-1]].Name == t.Name:
			return errorf(t.Name, "name used by two tensors")
		}
		n := 1
		for _, s := range t.Shape {
			if s < 0 {
				return errorf(t.Name, "negative dimension in shape %v", t.Shape)
			}
			n *= s
		}
		if n != len(t.Data) {
			return errorf(t.Name, "shape %v has %d elements, Data has %d", t.Shape, n, len(t.Data))
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		end := off + 4*int64(n)
		hdr[t.Name] = entry{DType: "F32", Shape: toInt64(shape), DataOffsets: []int64{off, end}}
		off = end
	}
	if len(f.Metadata) > 0 {
		hdr[metadataKey] = f.Metadata
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return errorf("", "encode header: %v", err)
	}
	if pad := (8 - len(js)%8) % 8; pad > 0 {
		js = append(js, bytes.Repeat([]byte{' '}, pad)...)
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(js)))
	bw.Write(lenBuf[:])
	bw.Write(js)
	var buf [4096]byte
	for _, i := range order {
		d := f.Tensors[i].Data
		for len(d) > 0 {
			m := min(len(d), len(buf)/4)
			for j, v := range d[:m] {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(v))
			}
			if _, err := bw.Write(buf[:4*m]); err != nil {
				return fmt.Errorf("safetensors: write: %w", err)
			}
			d = d[m:]
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	return nil
}

func toInt64(s []int) []int64 {
	out := make([]int64, len(s))
	for i, v := range s {
		out[i] = int64(v)
	}
	return out
}

// WriteFile encodes f (as Encode) into path atomically: it writes a
// temporary file in the same directory, syncs it and renames it over path,
// so that readers see either the old file or the complete new one.
func WriteFile(path string, f *File) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = Encode(tmp, f); err != nil {
		if e, ok := err.(*Error); ok {
			e.Path = path
		}
		return err
	}
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return nil
}
