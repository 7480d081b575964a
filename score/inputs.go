package score

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

// Input kinds.
const (
	// KindDICOM is a DICOM series (dicomio.Series).
	KindDICOM = "dicom"
	// KindNIfTI is a NIfTI-1 or NIfTI-2 file (.nii or .nii.gz).
	KindNIfTI = "nifti"
)

// Input is one scan found under a path: a CT series or a NIfTI file.
type Input struct {
	// Kind is KindDICOM or KindNIfTI.
	Kind string
	// Key identifies the scan across runs: the SeriesInstanceUID of a
	// DICOM series ("dicom:" and its Source when it has none), the Source
	// of a NIfTI file.
	Key string
	// Source is where the scan lies, relative to the scanned root with
	// forward slashes: the folder (or "archive.zip!folder") of a series'
	// first object, the file of a NIfTI volume. "." is the root itself.
	Source string
	// Series is the DICOM series (KindDICOM).
	Series *dicomio.Series
	// Path is the NIfTI file (KindNIfTI).
	Path string

	lim dicomio.Limits
}

// Skipped is an input file (or zip entry) that was not scored, and why.
type Skipped struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Inputs is what Find found under a path.
type Inputs struct {
	// Root is the path given to Find.
	Root string
	// Items are the scans: DICOM series (largest first, as
	// dicomio.Discover orders them), then NIfTI files by path.
	Items []*Input
	// Skipped lists the files left out with the reason (paths relative to
	// Root).
	Skipped []Skipped

	d         *dicomio.Discovery
	rootIsDir bool
}

// Close releases the zip archives the DICOM series may be read from; their
// series cannot be loaded afterwards.
func (in *Inputs) Close() error {
	if in.d == nil {
		return nil
	}
	return in.d.Close()
}

// ErrNoSeries is wrapped by the error of Find and ScorePath when a path
// holds no CT series and no NIfTI file (for example an HTTP handler's 422).
var ErrNoSeries = errors.New("no CT series or NIfTI volume")

// IsNIfTI reports whether name ends in .nii or .nii.gz (any case).
func IsNIfTI(name string) bool {
	n := strings.ToLower(name)
	return strings.HasSuffix(n, ".nii") || strings.HasSuffix(n, ".nii.gz")
}

// isLesionMask reports whether name is a lesion mask as `ctlens synth`
// writes them next to its scans ("<scan>.lesion.nii.gz").
func isLesionMask(name string) bool {
	n := strings.ToLower(filepath.Base(name))
	return strings.HasSuffix(n, ".lesion.nii") || strings.HasSuffix(n, ".lesion.nii.gz")
}

// Find lists the scans under path: a folder (searched recursively, zip
// archives in it included), a .zip archive, a single DICOM file or a
// .nii/.nii.gz file. DICOM objects are grouped into series by
// dicomio.Discover (headers only: nothing is decoded yet), and only CT
// series are kept; NIfTI files are listed by name (NIfTI inside zip
// archives are not read), except lesion masks named "*.lesion.nii.gz" as
// `ctlens synth` writes them. Every other file is in Skipped with its reason.
// When nothing can be scored the error wraps ErrNoSeries (the Inputs, with
// Skipped, is returned as well). The caller must Close the Inputs.
func Find(path string, lim dicomio.Limits) (*Inputs, error) {
	path = filepath.Clean(path)
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("score: %w", err)
	}
	res := &Inputs{Root: path, rootIsDir: st.IsDir()}
	if !st.IsDir() && IsNIfTI(path) {
		src := filepath.ToSlash(filepath.Base(path))
		res.Items = append(res.Items, &Input{Kind: KindNIfTI, Key: src, Source: src, Path: path, lim: lim})
		return res, nil
	}
	d, err := dicomio.Discover(path, lim)
	if err != nil {
		return nil, fmt.Errorf("score: %w", err)
	}
	res.d = d
	nifti := map[string]bool{}
	if st.IsDir() {
		err := filepath.WalkDir(path, func(p string, de fs.DirEntry, err error) error {
			if err == nil && de.Type().IsRegular() && IsNIfTI(p) {
				nifti[p] = true
				if isLesionMask(p) {
					res.Skipped = append(res.Skipped, Skipped{Path: p, Reason: "lesion mask (*.lesion.nii[.gz], as ctlens synth writes), not a scan"})
				} else {
					res.Items = append(res.Items, &Input{Kind: KindNIfTI, Path: p, lim: lim})
				}
			}
			return nil // unreadable entries are in the discovery's Skipped already
		})
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("score: %w", err)
		}
	}
	var series []*Input
	for _, s := range d.Series {
		src := res.rel(res.objectDir(s.Instances[0].Path))
		key := s.UID
		if key == "" {
			key = "dicom:" + src
		}
		series = append(series, &Input{Kind: KindDICOM, Key: key, Source: src, Series: s, lim: lim})
	}
	for _, it := range res.Items {
		it.Source = res.rel(it.Path)
		it.Key = it.Source
	}
	for i := range res.Skipped {
		res.Skipped[i].Path = res.rel(res.Skipped[i].Path)
	}
	sort.Slice(res.Items, func(i, j int) bool { return res.Items[i].Source < res.Items[j].Source })
	res.Items = append(series, res.Items...)
	for _, k := range d.Skipped {
		if !nifti[k.Path] {
			res.Skipped = append(res.Skipped, Skipped{Path: res.rel(k.Path), Reason: k.Reason})
		}
	}
	if len(res.Items) == 0 {
		msg := ""
		if len(res.Skipped) > 0 {
			msg = fmt.Sprintf(" (%d files skipped, first: %s: %s)", len(res.Skipped), res.Skipped[0].Path, res.Skipped[0].Reason)
		}
		return res, fmt.Errorf("score: %s: %w%s", filepath.Base(path), ErrNoSeries, msg)
	}
	return res, nil
}

// rel returns p (a path or zip label that Discover reported for the
// root) relative to the root, with forward slashes: "." for a folder root
// itself, the root's base name for a file root itself, and paths inside a
// zip root as "archive.zip!entry".
func (in *Inputs) rel(p string) string {
	root := filepath.Clean(in.Root)
	switch {
	case p == root && in.rootIsDir:
		return "."
	case p == root:
		return filepath.ToSlash(filepath.Base(root))
	case strings.HasPrefix(p, root+"!"):
		return filepath.ToSlash(filepath.Base(root) + p[len(root):])
	case strings.HasPrefix(p, root+string(filepath.Separator)):
		return filepath.ToSlash(p[len(root)+1:])
	}
	return filepath.ToSlash(filepath.Base(p))
}

// objectDir returns the folder holding a discovered object: its parent
// folder, or for a zip entry "archive.zip!dir/name" the label
// "archive.zip!dir" ("archive.zip" at the archive's top level). A file
// root is its own folder.
func (in *Inputs) objectDir(p string) string {
	if p == filepath.Clean(in.Root) && !in.rootIsDir {
		return p
	}
	if i := strings.LastIndex(p, "!"); i >= 0 {
		entry := p[i+1:]
		if j := strings.LastIndexAny(entry, `/\`); j >= 0 {
			return p[:i+1+j]
		}
		return p[:i]
	}
	return filepath.Dir(p)
}

// Load reads the scan: the series' pixels in HU (dicomio.Series.Load), or
// the NIfTI volume. warnings are the series' warnings (ordering fallbacks,
// dropped duplicates, tilt, ...).
func (in *Input) Load(ctx context.Context) (v *volume.Volume, warnings []string, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	switch in.Kind {
	case KindDICOM:
		v, err = in.Series.Load(ctx)
		return v, append([]string(nil), in.Series.Warnings...), err
	case KindNIfTI:
		v, err = dicomio.ReadNIfTI(in.Path, in.lim)
		if err != nil {
			return nil, nil, err
		}
		if err := v.Validate(); err != nil {
			return nil, nil, fmt.Errorf("score: %s: %w", in.Source, err)
		}
		if isBinary(v) {
			return nil, nil, fmt.Errorf("score: %s: every voxel is 0 or 1: a label mask, not a CT scan in HU", in.Source)
		}
		return v, nil, nil
	}
	return nil, nil, fmt.Errorf("score: input %s: unknown kind %q", in.Source, in.Kind)
}

// isBinary reports whether every voxel of v is 0 or 1.
func isBinary(v *volume.Volume) bool {
	for _, x := range v.Voxels {
		if x != 0 && x != 1 {
			return false
		}
	}
	return true
}
