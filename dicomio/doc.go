// Package dicomio reads CT scans from DICOM: it finds the image series in
// a folder, a file or a zip archive, orders their slices in space, decodes
// their pixels in any common transfer syntax and returns a volume.Volume in
// Hounsfield units with its patient geometry.
//
// # Use
//
//	v, s, err := dicomio.LoadVolume("study.zip", dicomio.Limits{}) // largest CT series
//
//	d, err := dicomio.Discover("/data/study", dicomio.Limits{})    // every CT series
//	defer d.Close()
//	for _, s := range d.Series { ... s.Load(ctx) ... }
//	for _, k := range d.Skipped { log.Print(k.Path, ": ", k.Reason) }
//
// Discover parses headers only: it reads the first 16 KiB of each file
// (the whole file only when its header is longer) and groups objects by
// SeriesInstanceUID. Non-DICOM files, DICOMDIR, objects without pixel data
// (SR, RTSTRUCT, RT plans, waveforms), unreadable or unsupported objects
// and, unless Options.AllModalities is set, image series of other
// modalities are listed in Discovery.Skipped with the reason.
//
// # Geometry
//
// Slices are ordered by ImagePositionPatient projected on the slice
// normal n = row × column direction cosines (ImageOrientationPatient), in
// ascending order; without positions by InstanceNumber (with a warning).
// The volume's voxel (i, j, k) is column i, row j of slice k:
//
//	Direction[0] = IOP[0:3] (along a row, i), Direction[1] = IOP[3:6] (down a column, j), Direction[2] = n
//	Spacing = (PixelSpacing[1], PixelSpacing[0], median slice distance)
//	Origin = ImagePositionPatient of slice 0
//
// so that patient position = Origin + Σ_a Direction[a]·Spacing[a]·index[a].
// Duplicated positions keep the first object and warn; mixed sizes or
// orientations, gaps (a distance above 1.5 × the median) and non-uniform
// spacing (off the median by more than max(0.01 mm, 1 %)) are
// *GeometryError, the last two downgraded to warnings by
// Series.AllowIrregular. Enhanced (multi-frame) CT uses its per-frame
// functional groups; RT-style multi-frame objects their
// GridFrameOffsetVector.
//
// # Pixels
//
// Stored values are BitsAllocated-wide words (8, 16, 32, or 1-bit data)
// of which BitsStored bits ending at HighBit are the value, two's
// complement when PixelRepresentation is 1. Output = stored × RescaleSlope
// + RescaleIntercept (float32). Voxels whose stored value lies in
// [PixelPaddingValue, PixelPaddingRangeLimit] become PaddingHU (-1024) for
// CT, or the smallest non-padding value of their frame otherwise.
//
// Transfer syntaxes: implicit and explicit VR little endian, explicit big
// endian, deflated explicit little endian, RLE Lossless (this package's
// decoder), JPEG baseline 8-bit greyscale (image/jpeg), JPEG Lossless
// selection value 1 (processes 14 and 14 SV1), JPEG-LS lossless and near
// lossless and JPEG 2000 (lossless and lossy), the last three through
// github.com/cocosip/go-dicom-codec. Not supported, each with an
// *UnsupportedError naming it: 12-bit lossy JPEG, JPEG Lossless with
// other predictors, colour JPEG of any kind, JPEG 2000 in a JP2 wrapper,
// chroma-subsampled native YBR_*_422 data, and every other syntax (the
// error names the UID and its name). Fragments are joined per frame by the
// Basic Offset Table, else one fragment per frame, else codec start
// markers.
//
// # Speed
//
// Series.Load reads each object once, into a buffer reused from object to
// object, and decodes slices in parallel (Limits.Workers) straight into
// one preallocated volume, each worker writing its own slices. 16-bit
// samples are converted in dedicated loops (SSE2 on amd64, eight voxels
// per step). On Linux the volume's memory is advised MADV_HUGEPAGE, as
// NumPy does for large arrays: filling hundreds of MB of fresh memory
// otherwise costs one page fault per 4 KiB, more than the decoding itself.
// BenchmarkLoadSeries compares Discover + Load with pydicom + NumPy on a
// 200-slice 512x512 series.
//
// # Untrusted input
//
// Limits bounds files, bytes, zip sizes and ratios, voxels and image
// dimensions; exceeding one gives a *LimitError (errors.Is(err,
// ErrLimit)). Zip entries with absolute or ".." names, declared sizes above
// the limits, compression ratios above MaxZipRatio, or content longer than
// declared are rejected (ErrUnsafeZip). Before the third-party parser
// (github.com/suyashkumar/dicom) sees a byte stream, this package walks its
// element structure and checks that every length fits in what remains, so
// that no length read from a file makes that parser allocate more than the
// file's size; files without a file meta header are given one naming the
// syntax the walk validated, so the parser never guesses. JPEG and JPEG
// 2000 frame headers are checked against Rows, Columns and
// SamplesPerPixel before a codec runs. As defence in depth only, a panic
// inside the third-party parser or codecs is recovered and returned as an
// error. FuzzReadSlice and FuzzOpenZip exercise these paths.
//
// Errors name the file (or "archive.zip!entry"), the tag or frame, and
// the cause. Patient names and IDs are never read into these types or
// logged.
package dicomio
