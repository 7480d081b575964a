package dicomio

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"github.com/ctlens/ctlens/volume"
)

// SOP class and transfer syntax UIDs used by WriteSeries.
const (
	CTImageStorageUID    = "1.2.840.10008.5.1.4.1.1.2"
	ExplicitVRLittleUID  = "1.2.840.10008.1.2.1"
	implementationUID    = "2.25.266210382166116102470374611392346411234"
	implementationString = "CTLENS_0_1"
)

// WriteOptions describes the series that WriteSeries writes. Empty UIDs are
// drawn from Seed as 2.25 (UUID-derived) UIDs.
type WriteOptions struct {
	PatientName, PatientID string
	StudyUID, SeriesUID    string
	FrameOfReferenceUID    string
	StudyDescription       string
	SeriesDescription      string
	SeriesNumber           int
	// RescaleIntercept and RescaleSlope map stored values to HU
	// (HU = stored*slope + intercept); zero slope means slope 1 and
	// intercept -1024.
	RescaleIntercept, RescaleSlope float64
	// Seed makes generated UIDs reproducible.
	Seed uint64
}

// uidFrom returns a 2.25 UID (a UUID written as a decimal integer) drawn
// from rng.
func uidFrom(rng *rand.Rand) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], rng.Uint64())
	binary.BigEndian.PutUint64(b[8:], rng.Uint64())
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant
	return "2.25." + new(big.Int).SetBytes(b[:]).String()
}

func ds(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// dsTrunc formats f as a DICOM decimal string of at most 16 characters.
func dsTrunc(f float64) string {
	for prec := 10; prec >= 0; prec-- {
		s := strconv.FormatFloat(f, 'f', prec, 64)
		if strings.Contains(s, ".") {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		if len(s) <= 16 {
			return s
		}
	}
	return strconv.FormatFloat(f, 'e', 8, 64)
}

// WriteSeries writes v as a CT image series of signed 16-bit slices in
// explicit VR little endian, one file per slice named IM0001.dcm, ... in
// dir, with the volume's geometry in ImagePositionPatient,
// ImageOrientationPatient, PixelSpacing and SliceThickness. Voxel values are
// rounded to the stored grid; a value outside int16 after rescaling is an
// error. It returns the file paths in slice order.
func WriteSeries(dir string, v *volume.Volume, o WriteOptions) ([]string, error) {
	if err := v.Validate(); err != nil {
		return nil, fmt.Errorf("dicomio: write series: %w", err)
	}
	slope, icpt := o.RescaleSlope, o.RescaleIntercept
	if slope == 0 {
		slope, icpt = 1, -1024
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0xd1c0))
	if o.StudyUID == "" {
		o.StudyUID = uidFrom(rng)
	}
	if o.SeriesUID == "" {
		o.SeriesUID = uidFrom(rng)
	}
	if o.FrameOfReferenceUID == "" {
		o.FrameOfReferenceUID = uidFrom(rng)
	}
	if o.PatientName == "" {
		o.PatientName = "PHANTOM^SYNTHETIC"
	}
	if o.PatientID == "" {
		o.PatientID = "SYNTH"
	}
	if o.SeriesNumber == 0 {
		o.SeriesNumber = 1
	}
	nz := v.Dims[2]
	sopUIDs := make([]string, nz)
	for k := range sopUIDs {
		sopUIDs[k] = uidFrom(rng)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("dicomio: write series: %w", err)
	}
	paths := make([]string, nz)
	errs := make([]error, nz)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				paths[k] = filepath.Join(dir, fmt.Sprintf("IM%04d.dcm", k+1))
				errs[k] = writeSlice(paths[k], v, k, sopUIDs[k], o, slope, icpt)
			}
		}()
	}
	for k := 0; k < nz; k++ {
		next <- k
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return paths, nil
}

func writeSlice(path string, v *volume.Volume, k int, sopUID string, o WriteOptions, slope, icpt float64) error {
	nx, ny := v.Dims[0], v.Dims[1]
	pix := make([]byte, 2*nx*ny)
	off := v.Index(0, 0, k)
	for n := 0; n < nx*ny; n++ {
		s := math.Round((float64(v.Voxels[off+n]) - icpt) / slope)
		if s < math.MinInt16 || s > math.MaxInt16 || math.IsNaN(s) {
			return fmt.Errorf("dicomio: write %s: voxel (%d, %d, %d) value %v does not fit int16 with slope %v intercept %v",
				path, n%nx, n/nx, k, v.Voxels[off+n], slope, icpt)
		}
		binary.LittleEndian.PutUint16(pix[2*n:], uint16(int16(s)))
	}
	ipp := v.VoxelToPatient([3]float64{0, 0, float64(k)})
	d := v.Direction
	type el struct {
		t   tag.Tag
		val any
	}
	els := []el{
		{tag.MediaStorageSOPClassUID, []string{CTImageStorageUID}},
		{tag.MediaStorageSOPInstanceUID, []string{sopUID}},
		{tag.TransferSyntaxUID, []string{ExplicitVRLittleUID}},
		{tag.ImplementationClassUID, []string{implementationUID}},
		{tag.ImplementationVersionName, []string{implementationString}},
		{tag.SpecificCharacterSet, []string{"ISO_IR 100"}},
		{tag.ImageType, []string{"DERIVED", "SECONDARY", "AXIAL"}},
		{tag.SOPClassUID, []string{CTImageStorageUID}},
		{tag.SOPInstanceUID, []string{sopUID}},
		{tag.Modality, []string{"CT"}},
		{tag.Manufacturer, []string{"ctlens synthetic phantom"}},
		{tag.StudyDescription, []string{o.StudyDescription}},
		{tag.SeriesDescription, []string{o.SeriesDescription}},
		{tag.PatientName, []string{o.PatientName}},
		{tag.PatientID, []string{o.PatientID}},
		{tag.SliceThickness, []string{dsTrunc(v.Spacing[2])}},
		{tag.KVP, []string{"120"}},
		{tag.StudyInstanceUID, []string{o.StudyUID}},
		{tag.SeriesInstanceUID, []string{o.SeriesUID}},
		{tag.SeriesNumber, []string{strconv.Itoa(o.SeriesNumber)}},
		{tag.InstanceNumber, []string{strconv.Itoa(k + 1)}},
		{tag.ImagePositionPatient, []string{dsTrunc(ipp[0]), dsTrunc(ipp[1]), dsTrunc(ipp[2])}},
		{tag.ImageOrientationPatient, []string{dsTrunc(d[0][0]), dsTrunc(d[0][1]), dsTrunc(d[0][2]), dsTrunc(d[1][0]), dsTrunc(d[1][1]), dsTrunc(d[1][2])}},
		{tag.FrameOfReferenceUID, []string{o.FrameOfReferenceUID}},
		{tag.SliceLocation, []string{dsTrunc(ipp[2])}},
		{tag.SamplesPerPixel, []int{1}},
		{tag.PhotometricInterpretation, []string{"MONOCHROME2"}},
		{tag.Rows, []int{ny}},
		{tag.Columns, []int{nx}},
		// PixelSpacing is row spacing (between rows, along j) then column
		// spacing (between columns, along i).
		{tag.PixelSpacing, []string{dsTrunc(v.Spacing[1]), dsTrunc(v.Spacing[0])}},
		{tag.BitsAllocated, []int{16}},
		{tag.BitsStored, []int{16}},
		{tag.HighBit, []int{15}},
		{tag.PixelRepresentation, []int{1}},
		{tag.WindowCenter, []string{"-600"}},
		{tag.WindowWidth, []string{"1500"}},
		{tag.RescaleIntercept, []string{ds(icpt)}},
		{tag.RescaleSlope, []string{ds(slope)}},
		{tag.RescaleType, []string{"HU"}},
	}
	var set dicom.Dataset
	for _, e := range els {
		de, err := dicom.NewElement(e.t, e.val)
		if err != nil {
			return fmt.Errorf("dicomio: write %s: tag %v: %w", path, e.t, err)
		}
		set.Elements = append(set.Elements, de)
	}
	pd, err := dicom.NewElement(tag.PixelData, dicom.PixelDataInfo{IntentionallyUnprocessed: true, UnprocessedValueData: pix})
	if err != nil {
		return fmt.Errorf("dicomio: write %s: pixel data: %w", path, err)
	}
	set.Elements = append(set.Elements, pd)
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("dicomio: write series: %w", err)
	}
	if err := dicom.Write(f, set); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("dicomio: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("dicomio: write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}
