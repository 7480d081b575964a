package dicomio

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/ctlens/ctlens/volume"
)

// NIfTI data types that WriteNIfTI can store.
const (
	NIfTIUint8   = 2
	NIfTIInt16   = 4
	NIfTIFloat32 = 16
)

// niftiAffineLPS returns the 3×4 voxel-to-LPS affine of v.
func niftiAffineLPS(v *volume.Volume) [3][4]float64 {
	var m [3][4]float64
	for r := 0; r < 3; r++ {
		for a := 0; a < 3; a++ {
			m[r][a] = v.Direction[a][r] * v.Spacing[a]
		}
		m[r][3] = v.Origin[r]
	}
	return m
}

// WriteNIfTI writes v as a single-file NIfTI-1 image (gzip-compressed when
// path ends in .gz) with the given data type (NIfTIUint8, NIfTIInt16 or
// NIfTIFloat32), creating its folder if needed. The sform and qform both hold the voxel-to-world affine in
// NIfTI's RAS convention (LPS with x and y negated); integer types round
// voxel values and fail if one does not fit.
func WriteNIfTI(path string, v *volume.Volume, datatype int) error {
	if err := v.Validate(); err != nil {
		return fmt.Errorf("dicomio: write %s: %w", path, err)
	}
	var bitpix, nbyte int
	switch datatype {
	case NIfTIUint8:
		bitpix, nbyte = 8, 1
	case NIfTIInt16:
		bitpix, nbyte = 16, 2
	case NIfTIFloat32:
		bitpix, nbyte = 32, 4
	default:
		return fmt.Errorf("dicomio: write %s: unsupported NIfTI datatype %d", path, datatype)
	}
	hdr := make([]byte, 352)
	le := binary.LittleEndian
	le.PutUint32(hdr[0:], 348)
	le.PutUint16(hdr[40:], 3)
	for a := 0; a < 3; a++ {
		le.PutUint16(hdr[42+2*a:], uint16(v.Dims[a]))
	}
	for a := 3; a < 7; a++ {
		le.PutUint16(hdr[42+2*a:], 1)
	}
	le.PutUint16(hdr[70:], uint16(datatype))
	le.PutUint16(hdr[72:], uint16(bitpix))
	put32 := func(off int, f float64) { le.PutUint32(hdr[off:], math.Float32bits(float32(f))) }
	// pixdim[0] is qfac.
	aff := niftiAffineLPS(v)
	for c := 0; c < 4; c++ { // LPS -> RAS
		aff[0][c], aff[1][c] = -aff[0][c], -aff[1][c]
	}
	var rot [3][3]float64
	for r := 0; r < 3; r++ {
		for a := 0; a < 3; a++ {
			rot[r][a] = aff[r][a] / v.Spacing[a]
		}
	}
	qfac := 1.0
	if det3(rot) < 0 {
		qfac = -1
		for r := 0; r < 3; r++ {
			rot[r][2] = -rot[r][2]
		}
	}
	put32(76, qfac)
	for a := 0; a < 3; a++ {
		put32(80+4*a, v.Spacing[a])
	}
	put32(108, 352) // vox_offset
	put32(112, 1)   // scl_slope
	put32(116, 0)   // scl_inter
	hdr[123] = 2    // xyzt_units: mm
	copy(hdr[148:228], "ctlens")
	le.PutUint16(hdr[252:], 1) // qform_code scanner
	le.PutUint16(hdr[254:], 1) // sform_code scanner
	b, c, d := quaternion(rot)
	put32(256, b)
	put32(260, c)
	put32(264, d)
	put32(268, aff[0][3])
	put32(272, aff[1][3])
	put32(276, aff[2][3])
	for r := 0; r < 3; r++ {
		for cc := 0; cc < 4; cc++ {
			put32(280+16*r+4*cc, aff[r][cc])
		}
	}
	copy(hdr[344:348], "n+1\x00")

	data := make([]byte, nbyte*len(v.Voxels))
	for n, x := range v.Voxels {
		switch datatype {
		case NIfTIFloat32:
			le.PutUint32(data[4*n:], math.Float32bits(x))
		case NIfTIInt16:
			r := math.Round(float64(x))
			if r < math.MinInt16 || r > math.MaxInt16 || math.IsNaN(r) {
				return fmt.Errorf("dicomio: write %s: voxel %d value %v does not fit int16", path, n, x)
			}
			le.PutUint16(data[2*n:], uint16(int16(r)))
		case NIfTIUint8:
			r := math.Round(float64(x))
			if r < 0 || r > 255 || math.IsNaN(r) {
				return fmt.Errorf("dicomio: write %s: voxel %d value %v does not fit uint8", path, n, x)
			}
			data[n] = uint8(r)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("dicomio: write NIfTI: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("dicomio: write NIfTI: %w", err)
	}
	var w io.Writer = f
	var gz *gzip.Writer
	if strings.HasSuffix(path, ".gz") {
		gz = gzip.NewWriter(f)
		w = gz
	}
	_, err = w.Write(hdr)
	if err == nil {
		_, err = w.Write(data)
	}
	if err == nil && gz != nil {
		err = gz.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("dicomio: write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

func det3(m [3][3]float64) float64 {
	return m[0][0]*(m[1][1]*m[2][2]-m[1][2]*m[2][1]) -
		m[0][1]*(m[1][0]*m[2][2]-m[1][2]*m[2][0]) +
		m[0][2]*(m[1][0]*m[2][1]-m[1][1]*m[2][0])
}

// quaternion returns the (b, c, d) quaternion parameters of a proper
// rotation matrix, as nifti_mat44_to_quatern with a >= 0.
func quaternion(r [3][3]float64) (b, c, d float64) {
	a := r[0][0] + r[1][1] + r[2][2] + 1
	if a > 0.5 {
		a = 0.5 * math.Sqrt(a)
		b = 0.25 * (r[2][1] - r[1][2]) / a
		c = 0.25 * (r[0][2] - r[2][0]) / a
		d = 0.25 * (r[1][0] - r[0][1]) / a
		return
	}
	xd, yd, zd := 1+r[0][0]-(r[1][1]+r[2][2]), 1+r[1][1]-(r[0][0]+r[2][2]), 1+r[2][2]-(r[0][0]+r[1][1])
	switch {
	case xd > 1:
		b = 0.5 * math.Sqrt(xd)
		c = 0.25 * (r[0][1] + r[1][0]) / b
		d = 0.25 * (r[0][2] + r[2][0]) / b
		a = 0.25 * (r[2][1] - r[1][2]) / b
	case yd > 1:
		c = 0.5 * math.Sqrt(yd)
		b = 0.25 * (r[0][1] + r[1][0]) / c
		d = 0.25 * (r[1][2] + r[2][1]) / c
		a = 0.25 * (r[0][2] - r[2][0]) / c
	default:
		d = 0.5 * math.Sqrt(zd)
		b = 0.25 * (r[0][2] + r[2][0]) / d
		c = 0.25 * (r[1][2] + r[2][1]) / d
		a = 0.25 * (r[1][0] - r[0][1]) / d
	}
	if a < 0 {
		b, c, d = -b, -c, -d
	}
	return
}

// ReadNIfTI reads a NIfTI-1 or NIfTI-2 image (.nii or .nii.gz, either byte
// order) into a volume. Voxel values are scaled by scl_slope/scl_inter when
// the slope is non-zero. The geometry comes from the sform when its code is
// set, else the qform, else pixdim alone; world coordinates are converted from
// NIfTI's RAS to LPS. Only the first 3-D volume of a 4-D file is read.
func ReadNIfTI(path string, lim Limits) (*volume.Volume, error) {
	lim = lim.withDefaults()
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("dicomio: %w", err)
	}
	if fi.Size() > lim.MaxFileBytes {
		return nil, fmt.Errorf("dicomio: %s: %d bytes exceeds the limit of %d", path, fi.Size(), lim.MaxFileBytes)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dicomio: %w", err)
	}
	if len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("dicomio: %s: %w", path, err)
		}
		limit := lim.MaxFileBytes
		raw, err = io.ReadAll(io.LimitReader(zr, limit+1))
		if err != nil {
			return nil, fmt.Errorf("dicomio: %s: gzip: %w", path, err)
		}
		if int64(len(raw)) > limit {
			return nil, fmt.Errorf("dicomio: %s: uncompressed size exceeds the limit of %d bytes", path, limit)
		}
	}
	h, err := parseNIfTIHeader(raw)
	if err != nil {
		return nil, fmt.Errorf("dicomio: %s: %w", path, err)
	}
	nx, ny, nz := h.dim[1], max(h.dim[2], 1), max(h.dim[3], 1)
	if h.dim[0] < 1 || h.dim[0] > 7 || nx < 1 || nx > 1<<16 || ny > 1<<16 || nz > 1<<16 {
		return nil, fmt.Errorf("dicomio: %s: absurd dimensions %v", path, h.dim[:h.dim[0]+1])
	}
	nvox := nx * ny * nz
	if int64(nvox) > lim.MaxVoxels {
		return nil, fmt.Errorf("dicomio: %s: %d voxels exceeds the limit of %d", path, nvox, lim.MaxVoxels)
	}
	nb := niftiBytes[h.datatype]
	if nb == 0 {
		return nil, fmt.Errorf("dicomio: %s: unsupported NIfTI datatype %d", path, h.datatype)
	}
	if h.voxOffset < 0 || h.voxOffset > int64(len(raw)) || int64(len(raw))-h.voxOffset < int64(nvox*nb) {
		return nil, fmt.Errorf("dicomio: %s: image data has %d bytes after offset %d, want %d for %dx%dx%d of %d bytes",
			path, int64(len(raw))-h.voxOffset, h.voxOffset, nvox*nb, nx, ny, nz, nb)
	}
	v := volume.New(nx, ny, nz)
	bo := h.order
	slope, inter := h.sclSlope, h.sclInter
	if slope == 0 || math.IsNaN(slope) || math.IsInf(slope, 0) {
		slope, inter = 1, 0
	}
	src := raw[h.voxOffset:]
	for i := 0; i < nvox; i++ {
		var x float64
		switch h.datatype {
		case 2:
			x = float64(src[i])
		case 256:
			x = float64(int8(src[i]))
		case 4:
			x = float64(int16(bo.Uint16(src[2*i:])))
		case 512:
			x = float64(bo.Uint16(src[2*i:]))
		case 8:
			x = float64(int32(bo.Uint32(src[4*i:])))
		case 768:
			x = float64(bo.Uint32(src[4*i:]))
		case 16:
			x = float64(math.Float32frombits(bo.Uint32(src[4*i:])))
		case 64:
			x = math.Float64frombits(bo.Uint64(src[8*i:]))
		}
		v.Voxels[i] = float32(x*slope + inter)
	}
	// Voxel-to-RAS affine, chosen as nibabel does: sform, then qform, then
	// pixdim alone.
	var m [3][4]float64
	switch {
	case h.sformCode > 0:
		m = h.srow
	case h.qformCode > 0:
		m = h.qformAffine()
	default:
		m = [3][4]float64{{h.pixdim[1], 0, 0, 0}, {0, h.pixdim[2], 0, 0}, {0, 0, h.pixdim[3], 0}}
	}
	for c := 0; c < 4; c++ { // RAS -> LPS
		m[0][c], m[1][c] = -m[0][c], -m[1][c]
	}
	for a := 0; a < 3; a++ {
		s := math.Sqrt(m[0][a]*m[0][a] + m[1][a]*m[1][a] + m[2][a]*m[2][a])
		if !(s > 0) {
			return nil, fmt.Errorf("dicomio: %s: affine column %d is zero", path, a)
		}
		v.Spacing[a] = s
		for r := 0; r < 3; r++ {
			v.Direction[a][r] = m[r][a] / s
		}
	}
	v.Origin = [3]float64{m[0][3], m[1][3], m[2][3]}
	return v, nil
}

// niftiBytes maps the NIfTI datatypes ReadNIfTI supports to their size.
var niftiBytes = map[int]int{2: 1, 256: 1, 4: 2, 512: 2, 8: 4, 768: 4, 16: 4, 64: 8}

// niftiHeader holds the fields of a NIfTI-1 or NIfTI-2 header that ReadNIfTI uses.
type niftiHeader struct {
	order                binary.ByteOrder
	dim                  [8]int
	datatype             int
	pixdim               [8]float64
	voxOffset            int64
	sclSlope, sclInter   float64
	qformCode, sformCode int
	quatern, qoffset     [3]float64
	srow                 [3][4]float64
}

// parseNIfTIHeader decodes the header at the start of raw, detecting the
// version from sizeof_hdr (348 or 540) in either byte order.
func parseNIfTIHeader(raw []byte) (*niftiHeader, error) {
	if len(raw) < 348 {
		return nil, fmt.Errorf("%d bytes is too short for a NIfTI header", len(raw))
	}
	h := &niftiHeader{}
	var v2 bool
	switch {
	case binary.LittleEndian.Uint32(raw) == 348:
		h.order = binary.LittleEndian
	case binary.BigEndian.Uint32(raw) == 348:
		h.order = binary.BigEndian
	case binary.LittleEndian.Uint32(raw) == 540:
		h.order, v2 = binary.LittleEndian, true
	case binary.BigEndian.Uint32(raw) == 540:
		h.order, v2 = binary.BigEndian, true
	default:
		return nil, fmt.Errorf("not a NIfTI file (sizeof_hdr is %d)", binary.LittleEndian.Uint32(raw))
	}
	o := h.order
	f32 := func(off int) float64 { return float64(math.Float32frombits(o.Uint32(raw[off:]))) }
	f64 := func(off int) float64 { return math.Float64frombits(o.Uint64(raw[off:])) }
	if !v2 {
		if string(raw[344:347]) != "n+1" && string(raw[344:347]) != "ni1" {
			return nil, fmt.Errorf("NIfTI-1 magic is %q", raw[344:348])
		}
		if string(raw[344:347]) == "ni1" {
			return nil, fmt.Errorf("two-file NIfTI (.hdr/.img) is not supported; convert it to a single .nii")
		}
		for i := 0; i < 8; i++ {
			h.dim[i] = int(int16(o.Uint16(raw[40+2*i:])))
			h.pixdim[i] = f32(76 + 4*i)
		}
		h.datatype = int(o.Uint16(raw[70:]))
		h.voxOffset = int64(f32(108))
		h.sclSlope, h.sclInter = f32(112), f32(116)
		h.qformCode, h.sformCode = int(int16(o.Uint16(raw[252:]))), int(int16(o.Uint16(raw[254:])))
		for i := 0; i < 3; i++ {
			h.quatern[i] = f32(256 + 4*i)
			h.qoffset[i] = f32(268 + 4*i)
			for c := 0; c < 4; c++ {
				h.srow[i][c] = f32(280 + 16*i + 4*c)
			}
		}
	} else {
		if len(raw) < 540 {
			return nil, fmt.Errorf("%d bytes is too short for a NIfTI-2 header", len(raw))
		}
		h.datatype = int(o.Uint16(raw[12:]))
		for i := 0; i < 8; i++ {
			d := int64(o.Uint64(raw[16+8*i:]))
			if d < -1 || d > 1<<31 {
				return nil, fmt.Errorf("NIfTI-2 dim[%d] = %d", i, d)
			}
			h.dim[i] = int(d)
			h.pixdim[i] = f64(104 + 8*i)
		}
		h.voxOffset = int64(o.Uint64(raw[168:]))
		h.sclSlope, h.sclInter = f64(176), f64(184)
		h.qformCode, h.sformCode = int(int32(o.Uint32(raw[344:]))), int(int32(o.Uint32(raw[348:])))
		for i := 0; i < 3; i++ {
			h.quatern[i] = f64(352 + 8*i)
			h.qoffset[i] = f64(376 + 8*i)
			for c := 0; c < 4; c++ {
				h.srow[i][c] = f64(400 + 32*i + 8*c)
			}
		}
	}
	return h, nil
}

// qformAffine returns the voxel-to-world affine of the quaternion form, as
// nifti_quatern_to_mat44.
func (h *niftiHeader) qformAffine() [3][4]float64 {
	b, c, d := h.quatern[0], h.quatern[1], h.quatern[2]
	a := 1 - (b*b + c*c + d*d)
	if a < 1e-7 {
		a = 1 / math.Sqrt(b*b+c*c+d*d)
		b, c, d = b*a, c*a, d*a
		a = 0
	} else {
		a = math.Sqrt(a)
	}
	qfac := 1.0
	if h.pixdim[0] < 0 {
		qfac = -1
	}
	dx, dy, dz := h.pixdim[1], h.pixdim[2], h.pixdim[3]*qfac
	if dx <= 0 {
		dx = 1
	}
	if dy <= 0 {
		dy = 1
	}
	if h.pixdim[3] <= 0 {
		dz = qfac
	}
	return [3][4]float64{
		{(a*a + b*b - c*c - d*d) * dx, 2 * (b*c - a*d) * dy, 2 * (b*d + a*c) * dz, h.qoffset[0]},
		{2 * (b*c + a*d) * dx, (a*a + c*c - b*b - d*d) * dy, 2 * (c*d - a*b) * dz, h.qoffset[1]},
		{2 * (b*d - a*c) * dx, 2 * (c*d + a*b) * dy, (a*a + d*d - c*c - b*b) * dz, h.qoffset[2]},
	}
}
