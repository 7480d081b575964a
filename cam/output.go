package cam

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

// Peak returns the first voxel (in voxel order) holding the largest value
// of v, and that value.
func Peak(v *volume.Volume) ([3]int, float32, error) {
	if v == nil {
		return [3]int{}, 0, errors.New("cam: peak: nil volume")
	}
	if err := v.Validate(); err != nil {
		return [3]int{}, 0, fmt.Errorf("cam: peak: %w", err)
	}
	best, at := float32(math.Inf(-1)), 0
	for p, x := range v.Voxels {
		if x > best {
			best, at = x, p
		}
	}
	nx, ny := v.Dims[0], v.Dims[1]
	return [3]int{at % nx, (at / nx) % ny, at / (nx * ny)}, best, nil
}

// Share returns Σ_{mask} h / Σ h for a non-negative map h on the mask's
// grid: the part of the heat energy inside the mask. It is 0 when the map
// sums to 0.
func Share(h *volume.Volume, mask *volume.Mask) (float64, error) {
	if h == nil || mask == nil {
		return 0, errors.New("cam: share: nil heat or mask")
	}
	if err := h.Validate(); err != nil {
		return 0, fmt.Errorf("cam: share: %w", err)
	}
	if mask.Dims != h.Dims || len(mask.Bits) != len(h.Voxels) {
		return 0, fmt.Errorf("cam: share: mask grid %v differs from the heat's %v", mask.Dims, h.Dims)
	}
	var in, all float64
	for p, x := range h.Voxels {
		v := float64(x)
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("cam: share: heat %v at voxel %d (want finite, non-negative)", x, p)
		}
		all += v
		if mask.Bits[p] {
			in += v
		}
	}
	if all == 0 {
		return 0, nil
	}
	return in / all, nil
}

// PeakInfo locates the hottest voxel.
type PeakInfo struct {
	// Voxel is the (i, j, k) index on the scan's grid.
	Voxel [3]int `json:"voxel"`
	// PatientMM is its LPS position in millimetres.
	PatientMM [3]float64 `json:"patient_mm"`
	// Value is the heat there, in the heatmap's normalisation.
	Value float32 `json:"value"`
}

// Summary describes a heatmap in numbers (the JSON written next to it).
type Summary struct {
	// Method is "cam", "gradcam" or "gradcam++"; Layer the explained layer.
	Method string `json:"method"`
	Layer  string `json:"layer"`
	// Class is the explained class and ClassName its name, when known.
	Class     int    `json:"class"`
	ClassName string `json:"class_name,omitempty"`
	// Score is the class logit, Probability its softmax probability.
	Score       float32 `json:"score"`
	Probability float32 `json:"probability"`
	// Normalization names how Heat was scaled (see Normalization).
	Normalization string `json:"normalization"`
	// HotIsHigh is false for the inverted (MONAI default) normalisation.
	HotIsHigh bool `json:"hot_is_high"`
	// RawShape is the map's shape at the layer, 1×1×d×h×w.
	RawShape []int `json:"raw_shape"`
	// Dims and Spacing (mm) describe the scan grid the heat lies on.
	Dims    [3]int     `json:"dims"`
	Spacing [3]float64 `json:"spacing_mm"`
	// Peak is the hottest voxel of the scan grid.
	Peak PeakInfo `json:"peak"`
	// LungShare is the share of heat (hot = high) inside the lung mask;
	// null when no lung mask could be made (LungMaskError says why).
	LungShare *float64 `json:"lung_share"`
	// LungVoxels counts the lung mask's voxels.
	LungVoxels int `json:"lung_voxels"`
	// LungMaskError is why the lung mask could not be computed.
	LungMaskError string `json:"lung_mask_error,omitempty"`
	// ScoreFactorDropped: see Map.
	ScoreFactorDropped bool `json:"score_factor_dropped,omitempty"`
}

// Summarize describes h on scan's grid. lungs is the lung mask on that
// grid; nil means volume.LungMask(scan, volume.DefaultLungMaskOptions)
// (scan in HU), whose failure is recorded in the summary, not returned.
// classNames (may be nil) names the classes.
func Summarize(h *Heatmap, scan *volume.Volume, lungs *volume.Mask, classNames []string) (*Summary, error) {
	if h == nil || h.Heat == nil {
		return nil, errors.New("cam: summary: nil heatmap")
	}
	if err := checkPair("summary", scan, h.Heat); err != nil {
		return nil, err
	}
	hot := h.Hot()
	ijk, _, err := Peak(hot)
	if err != nil {
		return nil, err
	}
	s := &Summary{
		Method: h.Method.String(), Layer: h.Layer, Class: h.Class, Score: h.Score, Probability: h.Probability,
		Normalization: h.Normalization.String(), HotIsHigh: h.Normalization.HotIsHigh(),
		Dims: scan.Dims, Spacing: scan.Spacing, ScoreFactorDropped: h.ScoreFactorDropped,
		Peak: PeakInfo{
			Voxel:     ijk,
			PatientMM: scan.VoxelToPatient([3]float64{float64(ijk[0]), float64(ijk[1]), float64(ijk[2])}),
			Value:     h.Heat.At(ijk[0], ijk[1], ijk[2]),
		},
	}
	if h.Raw != nil {
		s.RawShape = append([]int(nil), h.Raw.Shape()...)
	}
	if h.Class >= 0 && h.Class < len(classNames) {
		s.ClassName = classNames[h.Class]
	}
	if lungs == nil {
		lungs, err = volume.LungMask(scan, volume.DefaultLungMaskOptions)
		if err != nil {
			s.LungMaskError = err.Error()
			return s, nil
		}
	}
	share, err := Share(hot, lungs)
	if err != nil {
		return nil, err
	}
	s.LungShare = &share
	s.LungVoxels = lungs.Count()
	return s, nil
}

// WriteOptions configures Write.
type WriteOptions struct {
	// Prefix starts every file name; "" means "<method>_class<c>_" (method
	// "gradcampp" for Grad-CAM++).
	Prefix string
	// Overlay styles the PNGs.
	Overlay OverlayOptions
	// Axial, Coronal and Sagittal list the slices to draw; nil means the
	// slice through the peak voxel, an empty non-nil list none.
	Axial, Coronal, Sagittal []int
	// Montage is how many of the hottest axial slices to tile (0 means 12,
	// negative none).
	Montage int
	// ClassNames names the classes in the summary.
	ClassNames []string
	// Lungs is the lung mask for the summary (nil: computed, see Summarize).
	Lungs *volume.Mask
}

// Write saves h under dir: the heat volume as float32 NIfTI with the
// scan's affine (<prefix>heat.nii.gz), one PNG overlay per chosen slice
// (<prefix><plane>_<index>.png), the montage of the hottest axial slices
// (<prefix>montage.png) and the summary (<prefix>summary.json). It
// returns the paths written and the summary.
func Write(dir string, scan *volume.Volume, h *Heatmap, o WriteOptions) ([]string, *Summary, error) {
	if h == nil {
		return nil, nil, errors.New("cam: write: nil heatmap")
	}
	sum, err := Summarize(h, scan, o.Lungs, o.ClassNames)
	if err != nil {
		return nil, nil, err
	}
	prefix := o.Prefix
	if prefix == "" {
		prefix = fmt.Sprintf("%s_class%d_", strings.ReplaceAll(h.Method.String(), "+", "p"), h.Class)
	}
	var files []string
	path := filepath.Join(dir, prefix+"heat.nii.gz")
	if err := dicomio.WriteNIfTI(path, h.Heat, dicomio.NIfTIFloat32); err != nil {
		return files, nil, fmt.Errorf("cam: write: %w", err)
	}
	files = append(files, path)
	hot := h.Hot()
	pk := sum.Peak.Voxel
	for _, pl := range []struct {
		p     Plane
		list  []int
		peakK int
	}{{Axial, o.Axial, pk[2]}, {Coronal, o.Coronal, pk[1]}, {Sagittal, o.Sagittal, pk[0]}} {
		list := pl.list
		if list == nil {
			list = []int{pl.peakK}
		}
		for _, idx := range list {
			img, err := Overlay(scan, hot, pl.p, idx, o.Overlay)
			if err != nil {
				return files, nil, err
			}
			path := filepath.Join(dir, fmt.Sprintf("%s%s_%03d.png", prefix, pl.p, idx))
			if err := WritePNG(path, img); err != nil {
				return files, nil, err
			}
			files = append(files, path)
		}
	}
	if n := o.Montage; n >= 0 {
		if n == 0 {
			n = 12
		}
		img, _, err := Montage(scan, hot, n, o.Overlay)
		if err != nil {
			return files, nil, err
		}
		path := filepath.Join(dir, prefix+"montage.png")
		if err := WritePNG(path, img); err != nil {
			return files, nil, err
		}
		files = append(files, path)
	}
	js, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return files, nil, fmt.Errorf("cam: write summary: %w", err)
	}
	path = filepath.Join(dir, prefix+"summary.json")
	if err := os.WriteFile(path, append(js, '\n'), 0o644); err != nil {
		return files, nil, fmt.Errorf("cam: write %s: %w", path, err)
	}
	files = append(files, path)
	return files, sum, nil
}
