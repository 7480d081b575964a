package dicomio

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/ctlens/ctlens/volume"
)

// Series is one image series found by Discover: its identity and its
// objects (in discovery order; Geometry and Load order them).
type Series struct {
	UID, StudyUID, SOPClassUID string
	// Modality is e.g. "CT"; Description is SeriesDescription.
	Modality, Description string
	// Rows and Cols are the image size of the first object.
	Rows, Cols int
	// Instances are the series' objects.
	Instances []*Instance
	// Warnings collects problems that did not stop reading (fallback
	// ordering, dropped duplicates, tilt, ...). Geometry and Load add to it.
	Warnings []string
	// AllowIrregular turns gaps and non-uniform slice spacing from errors
	// into warnings; the volume then uses the median spacing.
	AllowIrregular bool

	lim Limits
}

// NumSlices is the number of frames in the series (one per single-frame
// object), before duplicates are dropped.
func (s *Series) NumSlices() int {
	n := 0
	for _, in := range s.Instances {
		n += in.Frames
	}
	return n
}

// GeometryError reports a series whose slices do not form one regular
// volume: mixed sizes or orientations, gaps, non-uniform spacing.
type GeometryError struct {
	Series string
	Msg    string
}

func (e *GeometryError) Error() string {
	return fmt.Sprintf("dicomio: series %s: %s", e.Series, e.Msg)
}

// SliceRef is one slice of an ordered series: a frame of an object.
type SliceRef struct {
	Instance *Instance
	// Frame is the 0-based frame index within Instance.
	Frame int
	// Position is the slice's ImagePositionPatient (LPS mm).
	Position [3]float64
	// Location is Position projected on the slice normal (mm).
	Location float64
}

// Geometry is the ordered layout of a series as a volume.
type Geometry struct {
	// Slices in volume order (k = 0 first).
	Slices []SliceRef
	// Dims, Spacing, Origin and Direction are as in volume.Volume:
	// Direction[0] is the row direction (IOP[0:3]), Direction[1] the
	// column direction (IOP[3:6]), Direction[2] their cross product (the
	// slice normal); Spacing is PixelSpacing[1], PixelSpacing[0] and the
	// median distance between consecutive slice locations.
	Dims      [3]int
	Spacing   [3]float64
	Origin    [3]float64
	Direction [3][3]float64
	// Warnings are this ordering's problems that did not stop it.
	Warnings []string
}

// Tolerances of the geometry checks, in mm.
const (
	// dupTol: slices closer than this along the normal are duplicates.
	dupTol = 1e-3
	// spacingTolAbs and spacingTolRel: a spacing differing from the median
	// by more than max(abs, rel*median) is non-uniform.
	spacingTolAbs = 0.01
	spacingTolRel = 0.01
	// gapFactor: a spacing above gapFactor*median is a gap.
	gapFactor = 1.5
	// tiltTol: slice positions further than this from the line through
	// the first slice along the normal are reported (gantry tilt).
	tiltTol = 0.05
)

func dot(a, b [3]float64) float64 { return a[0]*b[0] + a[1]*b[1] + a[2]*b[2] }

// Geometry orders the series' slices along the slice normal (row × column
// direction of ImageOrientationPatient, positions projected on it) and
// computes spacing, origin and direction. Without positions it orders by
// InstanceNumber (warning). Duplicated positions keep the first object
// (lowest InstanceNumber) and warn. Mixed image sizes or orientations are
// errors; so are gaps (a spacing above 1.5 × median) and non-uniform
// spacing (off the median by more than max(0.01 mm, 1 %)) unless
// AllowIrregular is set.
func (s *Series) Geometry() (*Geometry, error) {
	if len(s.Instances) == 0 {
		return nil, &GeometryError{Series: s.UID, Msg: "no images"}
	}
	g := &Geometry{}
	warn := func(f string, a ...any) { g.Warnings = append(g.Warnings, fmt.Sprintf(f, a...)) }
	fail := func(f string, a ...any) error { return &GeometryError{Series: s.UID, Msg: fmt.Sprintf(f, a...)} }
	first := s.Instances[0]
	havePos := true
	for _, in := range s.Instances {
		if in.Rows != first.Rows || in.Cols != first.Cols || in.SamplesPerPixel != first.SamplesPerPixel {
			return nil, fail("mixed image sizes: %s is %dx%dx%d, %s is %dx%dx%d (columns x rows x samples)",
				first.Path, first.Cols, first.Rows, first.SamplesPerPixel, in.Path, in.Cols, in.Rows, in.SamplesPerPixel)
		}
		if in.HasOrientation != first.HasOrientation || (in.HasOrientation && !sameOrientation(in.Orientation, first.Orientation)) {
			return nil, fail("mixed orientation: %s has ImageOrientationPatient %v, %s has %v",
				first.Path, first.Orientation, in.Path, in.Orientation)
		}
		if in.HasPixelSpacing != first.HasPixelSpacing || math.Abs(in.PixelSpacing[0]-first.PixelSpacing[0]) > 1e-4 || math.Abs(in.PixelSpacing[1]-first.PixelSpacing[1]) > 1e-4 {
			return nil, fail("mixed pixel spacing: %s has %v, %s has %v", first.Path, first.PixelSpacing, in.Path, in.PixelSpacing)
		}
		if !in.HasPosition || !in.HasOrientation {
			havePos = false
		}
	}
	if first.SamplesPerPixel != 1 {
		return nil, fail("%d samples per pixel: a volume needs greyscale images", first.SamplesPerPixel)
	}
	o := first.Orientation
	if !first.HasOrientation {
		o = [6]float64{1, 0, 0, 0, 1, 0}
		warn("no ImageOrientationPatient: axial identity orientation assumed")
	}
	n := normal(o)
	g.Direction = [3][3]float64{{o[0], o[1], o[2]}, {o[3], o[4], o[5]}, n}
	g.Spacing[0], g.Spacing[1] = 1, 1
	if first.HasPixelSpacing {
		g.Spacing[0], g.Spacing[1] = first.PixelSpacing[1], first.PixelSpacing[0]
	} else {
		warn("no PixelSpacing: 1 mm assumed")
	}
	nominal := first.SpacingBetweenSlices
	if nominal == 0 {
		nominal = first.SliceThickness
	}

	// One reference per frame.
	var refs []SliceRef
	for _, in := range s.Instances {
		for f := 0; f < in.Frames; f++ {
			r := SliceRef{Instance: in, Frame: f, Position: in.Position}
			if in.FramePositions != nil {
				r.Position = in.FramePositions[f]
			} else if in.Frames > 1 {
				step := nominal
				if step == 0 {
					step = 1
				}
				for c := 0; c < 3; c++ {
					r.Position[c] += float64(f) * step * n[c]
				}
			}
			r.Location = dot(r.Position, n)
			refs = append(refs, r)
		}
		if in.Frames > 1 && in.FramePositions == nil {
			warn("%s: %d frames without per-frame positions: spaced %g mm along the normal (SpacingBetweenSlices or SliceThickness)", in.Path, in.Frames, nominal)
		}
	}
	byNumber := func(a, b SliceRef) bool {
		if a.Instance.InstanceNumber != b.Instance.InstanceNumber {
			return a.Instance.InstanceNumber < b.Instance.InstanceNumber
		}
		return a.Frame < b.Frame
	}
	if havePos {
		sort.SliceStable(refs, func(i, j int) bool {
			if math.Abs(refs[i].Location-refs[j].Location) > dupTol {
				return refs[i].Location < refs[j].Location
			}
			return byNumber(refs[i], refs[j])
		})
		// Drop duplicates (same location): keep the first.
		kept := refs[:1]
		for _, r := range refs[1:] {
			last := kept[len(kept)-1]
			if math.Abs(r.Location-last.Location) <= dupTol {
				warn("duplicate slice at %.3f mm along the normal: kept %s (frame %d), dropped %s (frame %d)",
					r.Location, last.Instance.Path, last.Frame+1, r.Instance.Path, r.Frame+1)
				continue
			}
			kept = append(kept, r)
		}
		refs = kept
	} else {
		sort.SliceStable(refs, func(i, j int) bool { return byNumber(refs[i], refs[j]) })
		warn("slices lack ImagePositionPatient/ImageOrientationPatient: ordered by InstanceNumber")
		step := nominal
		if step == 0 {
			step = 1
			warn("no slice positions, SpacingBetweenSlices or SliceThickness: 1 mm slice spacing assumed")
		}
		base := first.Position
		for k := range refs {
			for c := 0; c < 3; c++ {
				refs[k].Position[c] = base[c] + float64(k)*step*n[c]
			}
			refs[k].Location = dot(refs[k].Position, n)
		}
	}

	// Spacing along the normal.
	g.Spacing[2] = nominal
	if len(refs) > 1 {
		d := make([]float64, len(refs)-1)
		for i := range d {
			d[i] = refs[i+1].Location - refs[i].Location
		}
		sd := append([]float64(nil), d...)
		sort.Float64s(sd)
		med := sd[len(sd)/2]
		if len(sd)%2 == 0 {
			med = (sd[len(sd)/2-1] + sd[len(sd)/2]) / 2
		}
		g.Spacing[2] = med
		tol := math.Max(spacingTolAbs, spacingTolRel*med)
		for i, x := range d {
			var msg string
			switch {
			case x > gapFactor*med:
				msg = fmt.Sprintf("gap of %.4g mm between slices at %.3f mm (%s) and %.3f mm (%s), median spacing %.4g mm (missing slices?)",
					x, refs[i].Location, refs[i].Instance.Path, refs[i+1].Location, refs[i+1].Instance.Path, med)
			case math.Abs(x-med) > tol:
				msg = fmt.Sprintf("non-uniform slice spacing: %.4g mm between slices at %.3f mm (%s) and %.3f mm (%s), median %.4g mm",
					x, refs[i].Location, refs[i].Instance.Path, refs[i+1].Location, refs[i+1].Instance.Path, med)
			}
			if msg == "" {
				continue
			}
			if !s.AllowIrregular {
				return nil, fail("%s", msg)
			}
			warn("%s", msg)
		}
		// Positions off the normal line through the first slice.
		worst := 0.0
		for _, r := range refs {
			dl := r.Location - refs[0].Location
			var e [3]float64
			for c := 0; c < 3; c++ {
				e[c] = r.Position[c] - refs[0].Position[c] - dl*n[c]
			}
			worst = math.Max(worst, math.Sqrt(dot(e, e)))
		}
		if worst > tiltTol {
			warn("slice positions deviate up to %.3g mm from the slice normal (gantry tilt or shear): the volume assumes an orthogonal grid", worst)
		}
	}
	if !(g.Spacing[2] > 0) {
		if len(refs) == 1 {
			g.Spacing[2] = 1
			warn("single slice without SliceThickness: 1 mm slice spacing assumed")
		} else {
			return nil, fail("slice spacing %v mm", g.Spacing[2])
		}
	}
	g.Slices = refs
	g.Dims = [3]int{first.Cols, first.Rows, len(refs)}
	g.Origin = refs[0].Position
	if first.Photometric == "MONOCHROME1" {
		warn("MONOCHROME1 (inverted display): values are rescaled as stored, not inverted")
	}
	return g, nil
}

// Load reads the series' pixels into a volume in output units (HU for
// CT): voxel (i, j, k) = stored*RescaleSlope + RescaleIntercept of column
// i, row j of slice k in Geometry order; padding as at PaddingHU. Slices
// are decoded in parallel (Limits.Workers). Warnings are appended to
// s.Warnings.
func (s *Series) Load(ctx context.Context) (*volume.Volume, error) {
	lim := s.lim.withDefaults()
	g, err := s.Geometry()
	if err != nil {
		return nil, err
	}
	s.Warnings = append(s.Warnings, g.Warnings...)
	nvox := int64(g.Dims[0]) * int64(g.Dims[1]) * int64(g.Dims[2])
	if nvox > lim.MaxVoxels {
		return nil, &LimitError{What: "series " + s.UID, Limit: "MaxVoxels", Value: float64(nvox), Max: float64(lim.MaxVoxels)}
	}
	v := &volume.Volume{
		Voxels:    newVoxels(nvox),
		Dims:      g.Dims,
		Spacing:   g.Spacing,
		Origin:    g.Origin,
		Direction: g.Direction,
	}
	per := g.Dims[0] * g.Dims[1]
	// Group the slices by object so that each object is read once; each
	// job writes its own slices of v.Voxels, disjoint from the others'.
	jobs := make([]loadJob, 0, len(s.Instances))
	jobOf := make(map[*Instance]int, len(s.Instances))
	for k, r := range g.Slices {
		j, ok := jobOf[r.Instance]
		if !ok {
			j = len(jobs)
			jobOf[r.Instance] = j
			jobs = append(jobs, loadJob{in: r.Instance})
		}
		jobs[j].slots = append(jobs[j].slots, frameSlot{frame: r.Frame, k: k})
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	setErr := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		mu.Unlock()
	}
	worker := func() {
		defer wg.Done()
		bp, _ := readBufs.Get().(*[]byte) // this worker's file buffer
		if bp == nil {
			bp = new([]byte)
		}
		defer func() {
			if cap(*bp) <= maxPooledReadBuf {
				readBufs.Put(bp)
			}
		}()
		for ctx.Err() == nil {
			i := int(next.Add(1) - 1)
			if i >= len(jobs) {
				return
			}
			var err error
			if *bp, err = loadObject(&jobs[i], v.Voxels, per, lim, *bp); err != nil {
				setErr(fmt.Errorf("series %s: %w", s.UID, err))
			}
		}
	}
	workers := max(1, min(lim.Workers, len(jobs))) // the calling goroutine is one
	wg.Add(workers)
	for w := 1; w < workers; w++ {
		go worker()
	}
	worker() // the calling goroutine works too
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("dicomio: series %s: load cancelled: %w", s.UID, err)
	}
	return v, nil
}

// readBufs holds *[]byte file buffers for Load's workers, so that loading
// series after series reuses memory instead of faulting in fresh pages;
// buffers above maxPooledReadBuf bytes are not kept.
var readBufs sync.Pool

const maxPooledReadBuf = 64 << 20

// frameSlot sends frame (0-based) of an object to volume slice k.
type frameSlot struct{ frame, k int }

// loadJob is one object of a series and where its frames go.
type loadJob struct {
	in    *Instance
	slots []frameSlot
}

// loadObject decodes the wanted frames of one object into vox (slice k
// at vox[k*per:(k+1)*per]). buf is a reusable read buffer; the (possibly
// grown) buffer is returned.
func loadObject(j *loadJob, vox []float32, per int, lim Limits, buf []byte) ([]byte, error) {
	in := j.in
	if in.src == nil {
		return buf, fmt.Errorf("dicomio: %s: object has no source", in.Path)
	}
	data, err := in.src.read(lim, buf)
	if err != nil {
		return buf, err
	}
	if int64(len(data)) != in.Size {
		return data, fmt.Errorf("dicomio: %s: file changed since discovery (%d bytes, was %d)", in.Path, len(data), in.Size)
	}
	lay, err := scanLayout(data, lim.MaxFileBytes)
	if err != nil {
		return data, &ParseError{Path: in.Path, Err: err}
	}
	fd, err := frameData(in, lay)
	if err != nil {
		return data, err
	}
	for _, sl := range j.slots {
		slope, icpt := in.rescale(sl.frame)
		rescaleFrame(vox[sl.k*per:(sl.k+1)*per], fd[sl.frame], in, slope, icpt)
	}
	return data, nil
}

// LoadVolume discovers the CT series under path (folder, file or .zip)
// and loads the largest one (most slices). The Series is returned for its
// identity and Warnings.
func LoadVolume(path string, lim Limits) (*volume.Volume, *Series, error) {
	d, err := Discover(path, lim)
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	if len(d.Series) == 0 {
		msg := "no CT image series"
		if len(d.Skipped) > 0 {
			msg += fmt.Sprintf(" (%d files skipped, first: %s: %s)", len(d.Skipped), d.Skipped[0].Path, d.Skipped[0].Reason)
		}
		return nil, nil, fmt.Errorf("dicomio: %s: %s", path, msg)
	}
	s := d.Series[0]
	v, err := s.Load(context.Background())
	if err != nil {
		return nil, s, err
	}
	return v, s, nil
}
