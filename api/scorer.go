package api

import (
	"context"
	"encoding/json"

	"github.com/ctlens/ctlens/dicomio"
)

// Caveat is the warning every result and report carries.
const Caveat = "Trained on synthetic data; not for clinical use."

// Scorer runs a classification model (and optionally a heatmap method) on
// one stored input. The server calls Score from its worker goroutines, at
// most Config.Workers at a time, so implementations must be safe for that
// much concurrency.
type Scorer interface {
	// Models lists the models that ScoreRequest.Model may name; exactly
	// one of them should have Default set.
	Models() []ModelInfo
	// Score classifies every CT series of req.Input and returns the result
	// JSON of the contract ({"study_id", "model", "series": [...]}; the
	// server fills in study_id). Heatmap files of series n go to
	// req.OutDir/<n>/: heat.nii.gz, montage.png, <plane>_<index>.png
	// overlays and summary.json. Score must return soon after ctx is
	// cancelled.
	Score(ctx context.Context, req ScoreRequest) (json.RawMessage, error)
}

// ScoreRequest is one scoring run.
type ScoreRequest struct {
	// Input is a folder of DICOM files, a .zip archive of them, or a
	// .nii/.nii.gz file.
	Input string
	// OutDir receives the heatmap files, one folder per series index.
	OutDir string
	// Model names the model ("" for the default one).
	Model string
	// Heatmap asks for heatmaps made with Method ("gradcam", "gradcampp"
	// or "cam"; "" for the scorer's default).
	Heatmap bool
	Method  string // heatmap method
	// Limits bounds what reading Input may use.
	Limits dicomio.Limits
	// Progress, when not nil, receives the stage ("discover", "load",
	// "preprocess", "infer", "heatmap") and the job's fraction done in
	// [0, 1].
	Progress func(stage string, frac float64)
}

// ReadyChecker is optionally implemented by a Scorer whose model can be
// unavailable; GET /readyz answers 503 while Ready returns an error.
type ReadyChecker interface {
	Ready() error
}

// ModelInfo describes one model, as GET /api/v1/models lists it.
type ModelInfo struct {
	Name        string   `json:"name"`        // what ScoreRequest.Model names
	Arch        string   `json:"arch"`        // architecture, e.g. "covidnet3d-small"
	Classes     []string `json:"classes"`     // class names by label
	Params      int      `json:"params"`      // trainable parameters
	Default     bool     `json:"default"`     // used when a submission names no model
	Description string   `json:"description"` // what the model is
	Caveat      string   `json:"caveat"`      // shown with every result (Caveat when empty)
}

// Result is the part of a scorer's result JSON that the server reads (for
// file routes and reports); the JSON itself is stored and served as the
// scorer returned it, with study_id set.
type Result struct {
	StudyID string         `json:"study_id"` // set by the server
	Model   ResultModel    `json:"model"`    // the model that scored the study
	Series  []SeriesResult `json:"series"`   // one per scan found; n in the file routes indexes it
}

// ResultModel names the model that made a result.
type ResultModel struct {
	Name    string   `json:"name"`    // model name
	Version string   `json:"version"` // checkpoint version
	Arch    string   `json:"arch"`    // architecture
	Classes []string `json:"classes"` // class names
	Caveat  string   `json:"caveat"`  // the model's caveat
}

// SeriesResult is one series of a result: its grid (dims = cols, rows,
// slices; spacing in mm), class probabilities, prediction, heatmap summary
// (nil without a heatmap), warnings, and the error of a series that could
// not be scored.
type SeriesResult struct {
	SeriesUID     string             `json:"series_uid"`              // SeriesInstanceUID ("" for NIfTI)
	Description   string             `json:"description"`             // SeriesDescription
	Dims          [3]int             `json:"dims"`                    // cols, rows, slices
	Spacing       [3]float64         `json:"spacing"`                 // mm along i, j, k
	Probabilities map[string]float64 `json:"probabilities"`           // class → probability
	Predicted     string             `json:"predicted"`               // most probable class
	Preprocessing json.RawMessage    `json:"preprocessing,omitempty"` // volume.Pipeline JSON
	TimingsMS     map[string]float64 `json:"timings_ms"`              // stage → milliseconds
	Heatmap       *HeatmapResult     `json:"heatmap"`                 // nil without a heatmap
	Warnings      []string           `json:"warnings"`                // problems that did not stop scoring
	// Error, when set, is why the series could not be scored (the
	// other series of the study may have been).
	Error string `json:"error,omitempty"`
}

// HeatmapResult summarises one series' heatmap: the method and layer, the
// explained class, the hottest point in patient mm and voxel (i, j, k), and
// the share of heat inside the lungs.
type HeatmapResult struct {
	Method    string     `json:"method"`     // "gradcam", "gradcampp" or "cam"
	Layer     string     `json:"layer"`      // explained layer
	Class     string     `json:"class"`      // explained class
	PeakMM    [3]float64 `json:"peak_mm"`    // hottest point, LPS mm
	PeakVoxel [3]int     `json:"peak_voxel"` // hottest voxel (i, j, k)
	LungShare *float64   `json:"lung_share"` // share of heat inside the lungs; nil when unknown
}
