package api

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/go-chi/chi/v5"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

// seriesRef is a done study's series n, with the study's result.
type seriesRef struct {
	studyID string
	n       int
	result  *Result
	series  *SeriesResult
	// out is the scorer's folder for the series, cache the server's.
	out, cache string
}

// seriesParam resolves {id} and {n} of a done study.
func (s *Server) seriesParam(r *http.Request) (*seriesRef, error) {
	j, err := s.doneJob(r)
	if err != nil {
		return nil, err
	}
	var res Result
	if err := json.Unmarshal(j.Result, &res); err != nil {
		return nil, fmt.Errorf("study %s: stored result: %w", j.StudyID, err)
	}
	ns := chi.URLParam(r, "n")
	n, err := strconv.Atoi(ns)
	if err != nil || n < 0 || n >= len(res.Series) {
		return nil, errorf(http.StatusNotFound, "not_found", "series %q not found: study %s has %d series (indices 0..%d)", ns, j.StudyID, len(res.Series), len(res.Series)-1)
	}
	if e := res.Series[n].Error; e != "" {
		return nil, errorf(http.StatusConflict, "series_failed", "series %d of study %s could not be scored: %s", n, j.StudyID, readableJobError(s.studyDir(j.StudyID), e))
	}
	dir := s.studyDir(j.StudyID)
	return &seriesRef{
		studyID: j.StudyID, n: n, result: &res, series: &res.Series[n],
		out:   filepath.Join(dir, "out", strconv.Itoa(n)),
		cache: filepath.Join(dir, "cache", strconv.Itoa(n)),
	}, nil
}

// serveFile serves a stored file with its media type (Range and
// conditional requests included).
func serveFile(w http.ResponseWriter, r *http.Request, path, ctype string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", st.ModTime(), f)
	return nil
}

// noHeatmap is the 404 for a series without a heatmap.
func noHeatmap(ref *seriesRef) error {
	return errorf(http.StatusNotFound, "no_heatmap", "series %d of study %s has no heatmap (submitted with heatmap=false, or the scorer made none)", ref.n, ref.studyID)
}

func (s *Server) handleHeatNIfTI(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.seriesParam(r)
	if err != nil {
		return err
	}
	p := filepath.Join(ref.out, "heat.nii.gz")
	if ref.series.Heatmap == nil || !exists(p) {
		return noHeatmap(ref)
	}
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s_series%d_heat.nii.gz"`, ref.studyID, ref.n))
	return serveFile(w, r, p, "application/gzip")
}

func (s *Server) handleMontage(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.seriesParam(r)
	if err != nil {
		return err
	}
	p := filepath.Join(ref.out, "montage.png")
	if ref.series.Heatmap == nil || !exists(p) {
		return errorf(http.StatusNotFound, "no_heatmap", "series %d of study %s has no montage (submitted with heatmap=false, or the scorer made none)", ref.n, ref.studyID)
	}
	return serveFile(w, r, p, "image/png")
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// planeIndex parses a plane name and a slice index and checks the index
// against the grid: axial slices run along k, coronal along j, sagittal
// along i.
func planeIndex(plane, index string, dims [3]int) (cam.Plane, int, error) {
	p, err := cam.ParsePlane(plane)
	if err != nil {
		return 0, 0, errorf(http.StatusBadRequest, "bad_plane", "plane %q: want axial, coronal or sagittal", plane)
	}
	axis := map[cam.Plane]int{cam.Axial: 2, cam.Coronal: 1, cam.Sagittal: 0}[p]
	k, err := strconv.Atoi(index)
	if err != nil || k < 0 || k >= dims[axis] {
		return 0, 0, errorf(http.StatusBadRequest, "bad_index", "%s slice index %q: want an integer in 0..%d", p, index, dims[axis]-1)
	}
	return p, k, nil
}

// heatViewer resolves the request's series and its viewer files, with a 404
// when the series has no heatmap.
func (s *Server) heatViewer(r *http.Request) (*seriesRef, *viewerFiles, error) {
	ref, err := s.seriesParam(r)
	if err != nil {
		return nil, nil, err
	}
	if ref.series.Heatmap == nil {
		return nil, nil, noHeatmap(ref)
	}
	v, err := s.viewer(r.Context(), ref)
	if err != nil {
		return nil, nil, err
	}
	if !v.hasHeat {
		return nil, nil, noHeatmap(ref)
	}
	return ref, v, nil
}

func (s *Server) handleOverlay(w http.ResponseWriter, r *http.Request) error {
	ref, v, err := s.heatViewer(r)
	if err != nil {
		return err
	}
	p, k, err := planeIndex(chi.URLParam(r, "plane"), chi.URLParam(r, "index"), v.meta.Dims)
	if err != nil {
		return err
	}
	// The scorer's own overlay when it drew this slice, else one drawn here.
	if own := filepath.Join(ref.out, fmt.Sprintf("%s_%03d.png", p, k)); exists(own) {
		return serveFile(w, r, own, "image/png")
	}
	path := filepath.Join(ref.cache, fmt.Sprintf("overlay_%s_%03d.png", p, k))
	if !exists(path) {
		scan, heat, err := v.load()
		if err != nil {
			return err
		}
		img, err := cam.Overlay(scan, heat, p, k, cam.OverlayOptions{})
		if err != nil {
			return fmt.Errorf("study %s series %d: overlay: %w", ref.studyID, ref.n, err)
		}
		if err := writeAtomic(path, func(f io.Writer) error { return png.Encode(f, img) }); err != nil {
			return err
		}
	}
	return serveFile(w, r, path, "image/png")
}

func (s *Server) handleVolumeBin(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.seriesParam(r)
	if err != nil {
		return err
	}
	v, err := s.viewer(r.Context(), ref)
	if err != nil {
		return err
	}
	v.setHeaders(w)
	return serveFile(w, r, v.volumePath, "application/octet-stream")
}

func (s *Server) handleHeatBin(w http.ResponseWriter, r *http.Request) error {
	_, v, err := s.heatViewer(r)
	if err != nil {
		return err
	}
	v.setHeaders(w)
	return serveFile(w, r, v.heatPath, "application/octet-stream")
}

// handleVolume serves the whole volume (as volume.bin) or, with plane and
// index, one slice of it.
func (s *Server) handleVolume(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if f := q.Get("format"); f != "" && f != "raw" {
		return errorf(http.StatusBadRequest, "bad_format", "format %q: only raw is served", f)
	}
	plane, index := q.Get("plane"), q.Get("index")
	if (plane == "") != (index == "") {
		return errorf(http.StatusBadRequest, "bad_query", "give both plane and index, or neither (whole volume)")
	}
	ref, err := s.seriesParam(r)
	if err != nil {
		return err
	}
	v, err := s.viewer(r.Context(), ref)
	if err != nil {
		return err
	}
	if plane == "" {
		v.setHeaders(w)
		return serveFile(w, r, v.volumePath, "application/octet-stream")
	}
	p, k, err := planeIndex(plane, index, v.meta.Dims)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(v.volumePath)
	if err != nil {
		return err
	}
	d := v.meta.Dims
	var a, b int // image axes: a fastest
	switch p {
	case cam.Axial:
		a, b = 0, 1
	case cam.Coronal:
		a, b = 0, 2
	default:
		a, b = 1, 2
	}
	out := make([]byte, 0, 2*d[a]*d[b])
	for y := range d[b] {
		for x := range d[a] {
			var ijk [3]int
			ijk[a], ijk[b] = x, y
			ijk[3-a-b] = k
			off := 2 * ((ijk[2]*d[1]+ijk[1])*d[0] + ijk[0])
			out = append(out, data[off], data[off+1])
		}
	}
	v.setHeaders(w)
	w.Header().Set("X-Slice-Dims", fmt.Sprintf("%d,%d", d[a], d[b]))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	_, err = w.Write(out)
	return err
}

// viewerMeta is the geometry of a series' viewer files.
type viewerMeta struct {
	Dims      [3]int        `json:"dims"`
	Spacing   [3]float64    `json:"spacing"`
	Origin    [3]float64    `json:"origin"`
	Direction [3][3]float64 `json:"direction"`
	Heat      bool          `json:"heat"`
}

// viewerFiles are a series' cached viewer files: volume.bin (int16 HU),
// heat.bin (uint8) and meta.json (geometry).
type viewerFiles struct {
	meta                 viewerMeta
	volumePath, heatPath string
	hasHeat              bool
}

func (v *viewerFiles) setHeaders(w http.ResponseWriter) {
	d, sp := v.meta.Dims, v.meta.Spacing
	w.Header().Set("X-Dims", fmt.Sprintf("%d,%d,%d", d[0], d[1], d[2]))
	w.Header().Set("X-Spacing", fmt.Sprintf("%s,%s,%s", fmtFloat(sp[0]), fmtFloat(sp[1]), fmtFloat(sp[2])))
	w.Header().Set("Access-Control-Expose-Headers", "X-Dims, X-Spacing, X-Slice-Dims")
}

// load rebuilds the scan (HU) and heat ([0, 1]) volumes from the files.
func (v *viewerFiles) load() (scan, heat *volume.Volume, err error) {
	d := v.meta.Dims
	n := d[0] * d[1] * d[2]
	raw, err := os.ReadFile(v.volumePath)
	if err != nil {
		return nil, nil, err
	}
	if len(raw) != 2*n {
		return nil, nil, fmt.Errorf("%s: %d bytes, want %d", v.volumePath, len(raw), 2*n)
	}
	scan = v.grid()
	for i := range n {
		scan.Voxels[i] = float32(int16(binary.LittleEndian.Uint16(raw[2*i:])))
	}
	hb, err := os.ReadFile(v.heatPath)
	if err != nil {
		return nil, nil, err
	}
	if len(hb) != n {
		return nil, nil, fmt.Errorf("%s: %d bytes, want %d", v.heatPath, len(hb), n)
	}
	heat = v.grid()
	for i, b := range hb {
		heat.Voxels[i] = float32(b) / 255
	}
	return scan, heat, nil
}

func (v *viewerFiles) grid() *volume.Volume {
	g := volume.New(v.meta.Dims[0], v.meta.Dims[1], v.meta.Dims[2])
	g.Spacing, g.Origin, g.Direction = v.meta.Spacing, v.meta.Origin, v.meta.Direction
	return g
}

// cacheLock returns the lock of one study's series cache.
func (s *Server) cacheLock(key string) *sync.Mutex {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	m := s.cacheLocks[key]
	if m == nil {
		m = &sync.Mutex{}
		s.cacheLocks[key] = m
	}
	return m
}

// viewer returns the series' viewer files, making them on first use: the
// scan is read again from the stored input (the series with the result's
// UID, or the NIfTI file), written as int16 HU, and the scorer's
// heat.nii.gz is brought onto the scan's grid and written as uint8.
func (s *Server) viewer(ctx context.Context, ref *seriesRef) (*viewerFiles, error) {
	v := &viewerFiles{volumePath: filepath.Join(ref.cache, "volume.bin"), heatPath: filepath.Join(ref.cache, "heat.bin")}
	metaPath := filepath.Join(ref.cache, "meta.json")
	readMeta := func() bool {
		b, err := os.ReadFile(metaPath)
		if err != nil || json.Unmarshal(b, &v.meta) != nil {
			return false
		}
		v.hasHeat = v.meta.Heat
		return true
	}
	if readMeta() {
		return v, nil
	}
	mu := s.cacheLock(ref.studyID + "/" + strconv.Itoa(ref.n))
	mu.Lock()
	defer mu.Unlock()
	if readMeta() {
		return v, nil
	}
	// Loading a scan takes memory: at most Workers loads run at once.
	select {
	case s.viewSem <- struct{}{}:
		defer func() { <-s.viewSem }()
	case <-ctx.Done():
		return nil, &Error{Status: http.StatusServiceUnavailable, Code: "busy", Msg: "the server is busy preparing other volumes; retry later", RetryAfter: 5}
	}
	scan, err := s.loadScan(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(ref.cache, 0o700); err != nil {
		return nil, err
	}
	if err := writeAtomic(v.volumePath, func(w io.Writer) error { return writeInt16(w, scan.Voxels) }); err != nil {
		return nil, err
	}
	v.meta = viewerMeta{Dims: scan.Dims, Spacing: scan.Spacing, Origin: scan.Origin, Direction: scan.Direction}
	heatFile := filepath.Join(ref.out, "heat.nii.gz")
	if ref.series.Heatmap != nil && exists(heatFile) {
		heat, err := dicomio.ReadNIfTI(heatFile, s.cfg.Limits)
		if err != nil {
			return nil, fmt.Errorf("study %s series %d: heat volume: %w", ref.studyID, ref.n, err)
		}
		h := heatOnGrid(heat, scan)
		if err := writeAtomic(v.heatPath, func(w io.Writer) error { _, err := w.Write(h); return err }); err != nil {
			return nil, err
		}
		v.meta.Heat, v.hasHeat = true, true
	}
	b, err := json.Marshal(v.meta)
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(metaPath, func(w io.Writer) error { _, err := w.Write(b); return err }); err != nil {
		return nil, err
	}
	return v, nil
}

// loadScan reads series n of a study from its stored input.
func (s *Server) loadScan(ctx context.Context, ref *seriesRef) (*volume.Volume, error) {
	st, err := s.store.study(ctx, ref.studyID)
	if err != nil {
		return nil, err
	}
	in := filepath.Join(s.cfg.DataDir, filepath.FromSlash(st.Input))
	if st.Kind == kindNIfTI {
		v, err := dicomio.ReadNIfTI(in, s.cfg.Limits)
		if err != nil {
			return nil, fmt.Errorf("study %s: read scan: %w", ref.studyID, err)
		}
		return v, nil
	}
	d, err := dicomio.Discover(in, s.cfg.Limits)
	if err != nil {
		return nil, fmt.Errorf("study %s: read scan: %w", ref.studyID, err)
	}
	defer d.Close()
	var sr *dicomio.Series
	for _, c := range d.Series {
		if c.UID == ref.series.SeriesUID {
			sr = c
		}
	}
	if sr == nil && ref.series.SeriesUID == "" && ref.n < len(d.Series) {
		sr = d.Series[ref.n]
	}
	if sr == nil {
		return nil, errorf(http.StatusNotFound, "not_found", "series %d (UID %s) is not in the stored input of study %s", ref.n, ref.series.SeriesUID, ref.studyID)
	}
	sr.AllowIrregular = true
	v, err := sr.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("study %s series %d: load: %w", ref.studyID, ref.n, err)
	}
	return v, nil
}

// writeInt16 writes HU values as little-endian int16, rounded to nearest
// and clamped to [-32768, 32767].
func writeInt16(w io.Writer, vox []float32) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	var b [2]byte
	for _, x := range vox {
		v := math.Round(float64(x))
		v = min(max(v, math.MinInt16), math.MaxInt16)
		binary.LittleEndian.PutUint16(b[:], uint16(int16(v)))
		if _, err := bw.Write(b[:]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// heatOnGrid returns the heat on the scan's voxel grid as uint8
// round(255·h). When heat already lies on the scan's grid (same dims) it
// is taken voxel by voxel; otherwise it is sampled trilinearly at each scan
// voxel's patient position (0 outside the heat volume). Heat outside
// [0, 1] is first min-max scaled to it.
func heatOnGrid(heat, scan *volume.Volume) []byte {
	lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
	for _, x := range heat.Voxels {
		lo, hi = min(lo, x), max(hi, x)
	}
	scale := func(x float32) float32 { return x }
	if lo < 0 || hi > 1 {
		if hi > lo {
			scale = func(x float32) float32 { return (x - lo) / (hi - lo) }
		} else {
			scale = func(float32) float32 { return 0 }
		}
	}
	d := scan.Dims
	out := make([]byte, d[0]*d[1]*d[2])
	q := func(x float32) byte { return byte(math.Round(float64(min(max(scale(x), 0), 1)) * 255)) }
	if heat.Dims == d {
		for i, x := range heat.Voxels {
			out[i] = q(x)
		}
		return out
	}
	for k := range d[2] {
		for j := range d[1] {
			for i := range d[0] {
				p := scan.VoxelToPatient([3]float64{float64(i), float64(j), float64(k)})
				h, ok := trilinear(heat, heat.PatientToVoxel(p))
				if ok {
					out[(k*d[1]+j)*d[0]+i] = q(h)
				}
			}
		}
	}
	return out
}

// trilinear samples v at continuous voxel position c; ok is false outside
// the grid (beyond half a voxel past the edge centres).
func trilinear(v *volume.Volume, c [3]float64) (float32, bool) {
	var i0 [3]int
	var f [3]float64
	for a := range 3 {
		n := v.Dims[a]
		if c[a] < -0.5 || c[a] > float64(n)-0.5 {
			return 0, false
		}
		x := min(max(c[a], 0), float64(n-1))
		i0[a] = min(int(math.Floor(x)), max(n-2, 0))
		f[a] = x - float64(i0[a])
		if n == 1 {
			f[a] = 0
		}
	}
	var sum float64
	for dz := range 2 {
		for dy := range 2 {
			for dx := range 2 {
				w := pick(f[0], dx) * pick(f[1], dy) * pick(f[2], dz)
				if w == 0 {
					continue
				}
				sum += w * float64(v.At(i0[0]+dx, i0[1]+dy, i0[2]+dz))
			}
		}
	}
	return float32(sum), true
}

func pick(f float64, d int) float64 {
	if d == 0 {
		return 1 - f
	}
	return f
}

// writeAtomic writes a file through a temporary file and a rename, so that
// a reader never sees it half written.
func writeAtomic(path string, fill func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = fill(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return errors.Join(fmt.Errorf("write %s", filepath.Base(path)), err)
	}
	return nil
}
