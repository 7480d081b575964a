package cam

import (
	"errors"
	"fmt"
	"math"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/volume"
)

// ErrEmptyMask is returned by PointingGame for a lesion mask with no voxel.
var ErrEmptyMask = errors.New("cam: the lesion mask is empty")

// MaskFromVolume returns the mask of voxels of v greater than threshold
// (e.g. 0.5 for a 0/1 label volume).
func MaskFromVolume(v *volume.Volume, threshold float32) (*volume.Mask, error) {
	if v == nil {
		return nil, errors.New("cam: mask: nil volume")
	}
	if err := v.Validate(); err != nil {
		return nil, fmt.Errorf("cam: mask: %w", err)
	}
	m := volume.NewMask(v.Dims)
	for p, x := range v.Voxels {
		m.Bits[p] = x > threshold
	}
	return m, nil
}

// Pointing is the outcome of the pointing game on one scan.
type Pointing struct {
	// Peak is the hottest voxel (first in voxel order).
	Peak [3]int
	// DistanceMM is the distance in patient millimetres from the peak's
	// centre to the nearest lesion voxel centre (0 inside the lesion).
	DistanceMM float64
	// Hit is DistanceMM ≤ the tolerance.
	Hit bool
}

// PointingGame plays the pointing game (Zhang et al. 2016) on a heat map
// (hot = high) and a lesion mask on the same grid: the peak hits when it
// lies in the lesion or within tolMM millimetres of a lesion voxel centre,
// measured in patient space (spacing and direction of hot). An empty mask
// gives ErrEmptyMask.
func PointingGame(hot *volume.Volume, lesion *volume.Mask, tolMM float64) (Pointing, error) {
	if !(tolMM >= 0) || math.IsInf(tolMM, 0) {
		return Pointing{}, fmt.Errorf("cam: pointing game: tolerance %v mm (want finite, >= 0)", tolMM)
	}
	if lesion == nil {
		return Pointing{}, errors.New("cam: pointing game: nil lesion mask")
	}
	pk, _, err := Peak(hot)
	if err != nil {
		return Pointing{}, err
	}
	if lesion.Dims != hot.Dims || len(lesion.Bits) != len(hot.Voxels) {
		return Pointing{}, fmt.Errorf("cam: pointing game: mask grid %v differs from the heat's %v", lesion.Dims, hot.Dims)
	}
	res := Pointing{Peak: pk, DistanceMM: math.Inf(1)}
	if lesion.Bits[hot.Index(pk[0], pk[1], pk[2])] {
		res.DistanceMM, res.Hit = 0, true
		return res, nil
	}
	p0 := hot.VoxelToPatient([3]float64{float64(pk[0]), float64(pk[1]), float64(pk[2])})
	nx, ny := hot.Dims[0], hot.Dims[1]
	best := math.Inf(1)
	for p, in := range lesion.Bits {
		if !in {
			continue
		}
		q := hot.VoxelToPatient([3]float64{float64(p % nx), float64((p / nx) % ny), float64(p / (nx * ny))})
		d := 0.0
		for c := 0; c < 3; c++ {
			d += (q[c] - p0[c]) * (q[c] - p0[c])
		}
		best = math.Min(best, d)
	}
	if math.IsInf(best, 1) {
		return res, ErrEmptyMask
	}
	res.DistanceMM = math.Sqrt(best)
	res.Hit = res.DistanceMM <= tolMM
	return res, nil
}

// Case is one scan of a localisation evaluation.
type Case struct {
	// Name identifies the case in the report.
	Name string
	// Label is the true class, or -1 when unknown.
	Label int
	// Scan (HU) and Lesion (its lesion mask, on the scan's grid) are used
	// when Load is nil.
	Scan   *volume.Volume
	Lesion *volume.Mask
	// Load, when set, reads the scan and its lesion mask on demand, so that
	// only one case is in memory at a time.
	Load func() (*volume.Volume, *volume.Mask, error)
}

// EvalOptions configures Evaluate.
type EvalOptions struct {
	// CAM selects the method, layer and normalisation; CAM.Classes may hold
	// at most one class (the class explained in every scan), empty meaning
	// each scan's predicted class.
	CAM Options
	// UseLabel explains each case's Label instead (cases with Label −1
	// fall back to the predicted class).
	UseLabel bool
	// ToleranceMM is the pointing game's tolerance in millimetres.
	ToleranceMM float64
}

// EvalRow is one scan's result. Pointer fields are null when the scan has
// no lesion (or failed).
type EvalRow struct {
	// Name and Label are the case's.
	Name  string `json:"name"`
	Label int    `json:"label"`
	// Predicted is the argmax class; Class the explained one, Score its
	// logit and Probability its softmax probability.
	Predicted   int     `json:"predicted"`
	Class       int     `json:"class"`
	Score       float32 `json:"score"`
	Probability float32 `json:"probability"`
	// Peak is the hottest voxel.
	Peak PeakInfo `json:"peak"`
	// LesionVoxels counts the lesion mask's voxels.
	LesionVoxels int `json:"lesion_voxels"`
	// LesionFraction is lesion voxels / all voxels: the energy share of a
	// uniform map, the chance level for EnergyShare.
	LesionFraction float64 `json:"lesion_fraction"`
	// Hit and DistanceMM are the pointing game's outcome (see Pointing).
	Hit        *bool    `json:"hit"`
	DistanceMM *float64 `json:"distance_mm"`
	// EnergyShare is the share of heat inside the lesion (Share).
	EnergyShare *float64 `json:"energy_share"`
	// Error says why the case failed.
	Error string `json:"error,omitempty"`
}

// EvalSummary aggregates the rows of scans with a lesion.
type EvalSummary struct {
	// Method, Layer and ToleranceMM repeat the options.
	Method      string  `json:"method"`
	Layer       string  `json:"layer"`
	ToleranceMM float64 `json:"tolerance_mm"`
	// Scans counts the cases, Failed those with an Error, WithLesion those
	// scored (non-empty lesion mask), Hits their pointing-game hits.
	Scans      int `json:"scans"`
	Failed     int `json:"failed"`
	WithLesion int `json:"with_lesion"`
	Hits       int `json:"hits"`
	// PointingAccuracy is Hits / WithLesion (null without lesions).
	PointingAccuracy *float64 `json:"pointing_accuracy"`
	// MeanEnergyShare and MeanLesionFraction average over the scans with a
	// lesion (null without lesions).
	MeanEnergyShare *float64 `json:"mean_energy_share"`
	// MeanLesionFraction is the chance level of MeanEnergyShare.
	MeanLesionFraction *float64 `json:"mean_lesion_fraction"`
}

// EvalReport is the output of Evaluate.
type EvalReport struct {
	// Rows holds one row per case, in order; Summary aggregates them.
	Rows    []EvalRow   `json:"rows"`
	Summary EvalSummary `json:"summary"`
}

// Evaluate explains every case with m after pipeline p (Explain) and
// scores the heat (hot = high) against the case's lesion mask: the pointing
// game with o.ToleranceMM and the share of heat energy inside the lesion
// (Share). A case that cannot be loaded or explained gets a row with Error
// and counts as Failed; invalid options are returned as an error.
func Evaluate(m net3d.Classifier, p volume.Pipeline, cases []Case, o EvalOptions) (*EvalReport, error) {
	if m == nil {
		return nil, errors.New("cam: evaluate: nil model")
	}
	if !(o.ToleranceMM >= 0) || math.IsInf(o.ToleranceMM, 0) {
		return nil, fmt.Errorf("cam: evaluate: tolerance %v mm (want finite, >= 0)", o.ToleranceMM)
	}
	if len(o.CAM.Classes) > 1 {
		return nil, fmt.Errorf("cam: evaluate: %d classes given (want at most one)", len(o.CAM.Classes))
	}
	layer, err := o.CAM.check(m)
	if err != nil {
		return nil, fmt.Errorf("cam: evaluate: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("cam: evaluate: %w", err)
	}
	rep := &EvalReport{Summary: EvalSummary{Method: o.CAM.Method.String(), Layer: layer, ToleranceMM: o.ToleranceMM, Scans: len(cases)}}
	var sumShare, sumFrac float64
	for _, c := range cases {
		row := evalCase(m, p, c, o)
		if row.Error != "" {
			rep.Summary.Failed++
		} else if row.Hit != nil {
			rep.Summary.WithLesion++
			if *row.Hit {
				rep.Summary.Hits++
			}
			sumShare += *row.EnergyShare
			sumFrac += row.LesionFraction
		}
		rep.Rows = append(rep.Rows, row)
	}
	if n := float64(rep.Summary.WithLesion); n > 0 {
		acc, share, frac := float64(rep.Summary.Hits)/n, sumShare/n, sumFrac/n
		rep.Summary.PointingAccuracy, rep.Summary.MeanEnergyShare, rep.Summary.MeanLesionFraction = &acc, &share, &frac
	}
	return rep, nil
}

// evalCase scores one case; failures are recorded in the row.
func evalCase(m net3d.Classifier, p volume.Pipeline, c Case, o EvalOptions) EvalRow {
	row := EvalRow{Name: c.Name, Label: c.Label, Predicted: -1, Class: -1}
	fail := func(err error) EvalRow {
		row.Error = err.Error()
		return row
	}
	scan, lesion := c.Scan, c.Lesion
	if c.Load != nil {
		var err error
		if scan, lesion, err = c.Load(); err != nil {
			return fail(err)
		}
	}
	if scan == nil || lesion == nil {
		return fail(errors.New("cam: evaluate: case has no scan or no lesion mask"))
	}
	if lesion.Dims != scan.Dims || len(lesion.Bits) != len(scan.Voxels) {
		return fail(fmt.Errorf("cam: evaluate: lesion mask grid %v differs from the scan's %v", lesion.Dims, scan.Dims))
	}
	co := o.CAM
	if o.UseLabel && c.Label >= 0 {
		co.Classes = []int{c.Label}
	}
	hs, err := Explain(m, p, scan, co)
	if err != nil {
		return fail(err)
	}
	h := hs[0]
	row.Class, row.Score, row.Probability = h.Class, h.Score, h.Probability
	row.Predicted = argmax(h.Logits)
	hot := h.Hot()
	pk, _, err := Peak(hot)
	if err != nil {
		return fail(err)
	}
	row.Peak = PeakInfo{Voxel: pk, PatientMM: scan.VoxelToPatient([3]float64{float64(pk[0]), float64(pk[1]), float64(pk[2])}), Value: h.Heat.At(pk[0], pk[1], pk[2])}
	row.LesionVoxels = lesion.Count()
	row.LesionFraction = float64(row.LesionVoxels) / float64(len(lesion.Bits))
	if row.LesionVoxels == 0 {
		return row
	}
	pt, err := PointingGame(hot, lesion, o.ToleranceMM)
	if err != nil {
		return fail(err)
	}
	share, err := Share(hot, lesion)
	if err != nil {
		return fail(err)
	}
	row.Hit, row.DistanceMM, row.EnergyShare = &pt.Hit, &pt.DistanceMM, &share
	return row
}

// argmax returns the index of the first largest value (−1 when empty).
func argmax(x []float32) int {
	best := -1
	for i, v := range x {
		if best < 0 || v > x[best] {
			best = i
		}
	}
	return best
}
