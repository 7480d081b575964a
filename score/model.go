// Package score is the scoring pipeline shared by the command line, the
// REST server and the web UI: it finds the CT series (and NIfTI volumes)
// under a path, loads each one, prepares it with the model's own
// preprocessing pipeline, runs the classifier, and optionally explains the
// predicted class with a class-activation heatmap mapped back onto the
// scan.
//
// For a series the class probabilities are the softmax of the network's
// logits z over the model's K classes,
//
//	p_c = exp(z_c − max z) / Σ_k exp(z_k − max z),
//
// computed in float64; the predicted class is argmax_c p_c (the first on a
// tie).
//
// Results (Result, SeriesResult) marshal to the result JSON of the REST
// contract. No patient name or ID is read, stored or logged: series are
// identified by their SeriesInstanceUID, their description and their
// location under the scored path.
package score

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/models"
	"github.com/ctlens/ctlens/net2d"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/nn/safetensors"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// Checkpoint metadata keys read besides net3d.MetaSpec and
// net3d.MetaClassNames. MetaPipeline and MetaInput are the keys that
// package train writes (train.MetaPipeline, train.MetaInput), repeated here
// so that scoring does not depend on the training code.
const (
	// MetaPipeline holds the preprocessing volume.Pipeline as JSON.
	MetaPipeline = "ctlens.pipeline"
	// MetaInput holds the network input size [depth, height, width] as JSON.
	MetaInput = "ctlens.input"
	// MetaName optionally names the model (default: the file name without
	// its extension, or DefaultName for the bundled model).
	MetaName = "ctlens.name"
	// MetaVersion optionally gives the model version (default: "sha256:"
	// and the first 12 hex digits of the checkpoint's SHA-256).
	MetaVersion = "ctlens.version"
	// MetaCaveat optionally replaces the model's caveat.
	MetaCaveat = "ctlens.caveat"
	// MetaDescription optionally describes the model (default: the
	// architecture's registry description).
	MetaDescription = "ctlens.description"
)

// DefaultName is the name of the bundled model (models.Default).
const DefaultName = "default"

// DefaultCaveat is the caveat of the bundled model unless its checkpoint
// carries MetaCaveat.
const DefaultCaveat = "Trained on synthetic phantoms; not for clinical use."

// GenericCaveat is the caveat of any other checkpoint without MetaCaveat.
const GenericCaveat = "Research model, not validated; not for clinical use."

// Model is a classifier ready for scoring: its frozen network (evaluation
// mode, no parameter requires a gradient) and what its checkpoint says about
// preparing a scan and naming the classes.
//
// A Model is safe for use by several goroutines: inference and heatmaps
// (cam.Compute switches training and requires-grad flags while it runs and
// restores them afterwards) are serialised by a per-model mutex. The
// tensor kernels are multi-threaded already, so the mutex costs little
// throughput; loading and preprocessing of other series run in parallel.
// The exported fields must not be changed while the model is in use.
type Model struct {
	// Name identifies the model (in results and in the REST API).
	Name string
	// Version distinguishes checkpoints of the same name.
	Version string
	// Arch is the registered architecture (net3d.Spec.Arch, or a net2d
	// architecture for a 2D model).
	Arch string
	// Description says what the model is.
	Description string
	// ClassNames names the classes by label.
	ClassNames []string
	// Pipeline prepares a scan in HU for the network; it is applied in
	// inference mode (random ops skipped). For a 2D model it is the
	// equivalent of the per-slice preparation (Slices.Pipeline), which
	// Predict applies slice by slice.
	Pipeline volume.Pipeline
	// Input is the network input size, depth × height × width; the
	// pipeline's output must be Input[2] columns × Input[1] rows ×
	// Input[0] slices. For a 2D model it is one slice, [1, height, width].
	Input [3]int
	// Channels is the number of input channels (the scan is repeated in each).
	Channels int
	// Params is the number of trainable parameters.
	Params int
	// Caveat is shown with every result.
	Caveat string
	// Classifier is the network of a 3D model (nil for a 2D model).
	Classifier net3d.Classifier
	// Classifier2D is the network of a 2D model (a net2d architecture;
	// nil for a 3D model): it scores every axial slice of the scan and the
	// slice logits are aggregated into the scan's logits as Slices says.
	Classifier2D net2d.Classifier
	// Slices is a 2D model's slice preparation and aggregation
	// (net2d.MetaSlices of its checkpoint).
	Slices net2d.SlicePrep
	// Meta is the checkpoint's metadata.
	Meta map[string]string

	mu sync.Mutex
}

// Info is the model's identity in a Result.
type Info struct {
	Name    string   `json:"name"`
	Version string   `json:"version"`
	Arch    string   `json:"arch"`
	Classes []string `json:"classes"`
	Caveat  string   `json:"caveat"`
}

// Info returns the model's identity as results show it.
func (m *Model) Info() Info {
	return Info{Name: m.Name, Version: m.Version, Arch: m.Arch, Classes: append([]string(nil), m.ClassNames...), Caveat: m.Caveat}
}

// LoadModel reads a ctlens checkpoint (net3d.SaveCheckpoint, or the best or
// last checkpoint of `ctlens train`) that carries the preprocessing
// metadata MetaPipeline, MetaInput and net3d.MetaClassNames, and returns the
// frozen model. A checkpoint whose spec names a 2D architecture (package
// net2d, e.g. the checkpoints of a 2D `ctlens train` run) carries
// net2d.MetaSlices and net3d.MetaClassNames instead. Its name is MetaName
// or the file name without extension.
func LoadModel(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("score: load model: %w", err)
	}
	name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	m, err := LoadModelBytes(name, b)
	if err != nil {
		return nil, fmt.Errorf("score: load model %s: %w", path, err)
	}
	return m, nil
}

var (
	defaultOnce  sync.Once
	defaultModel *Model
	defaultErr   error
)

// DefaultModel returns the bundled model (models.Default), decoded once and
// shared. Its name is DefaultName and its caveat DefaultCaveat, unless its
// checkpoint sets MetaName or MetaCaveat.
func DefaultModel() (*Model, error) {
	defaultOnce.Do(func() {
		defaultModel, defaultErr = LoadModelBytes(DefaultName, models.Default)
		if defaultErr != nil {
			defaultErr = fmt.Errorf("score: bundled default model: %w", defaultErr)
			return
		}
		if defaultModel.Meta[MetaCaveat] == "" {
			defaultModel.Caveat = DefaultCaveat
		}
	})
	return defaultModel, defaultErr
}

// LoadModelBytes decodes a ctlens checkpoint held in b (see LoadModel);
// name is used unless the checkpoint sets MetaName.
func LoadModelBytes(name string, b []byte) (*Model, error) {
	f, err := safetensors.Decode(b)
	if err != nil {
		return nil, err
	}
	meta := f.Metadata
	raw, ok := meta[net3d.MetaSpec]
	if !ok {
		return nil, fmt.Errorf("no %s metadata: not a ctlens checkpoint (use `ctlens import` for PyTorch state dicts)", net3d.MetaSpec)
	}
	var spec net3d.Spec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", net3d.MetaSpec, err)
	}
	m := &Model{Name: name, Arch: spec.Arch, Channels: spec.InChannels, Meta: meta}
	if is2DArch(spec.Arch) {
		if err := m.load2D(f, spec); err != nil {
			return nil, err
		}
		m.identify(b)
		return m, nil
	}
	rawPl, ok := meta[MetaPipeline]
	if !ok {
		return nil, fmt.Errorf("no %s metadata: the checkpoint does not say how to prepare a scan (checkpoints of `ctlens train` do)", MetaPipeline)
	}
	if m.Pipeline, err = volume.ParsePipeline([]byte(rawPl)); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", MetaPipeline, err)
	}
	if err := unmarshalMeta(meta, MetaInput, &m.Input); err != nil {
		return nil, err
	}
	for i, n := range m.Input {
		if n < 1 || n > 4096 {
			return nil, fmt.Errorf("metadata %s: input[%d] = %d (want 1..4096)", MetaInput, i, n)
		}
	}
	if err := m.readClassNames(spec.Classes); err != nil {
		return nil, err
	}
	if m.Classifier, err = net3d.Build(spec, 0); err != nil {
		return nil, err
	}
	if _, err := nn.LoadFile(f, m.Classifier, nn.LoadOpts{Strict: true}); err != nil {
		return nil, err
	}
	nn.SetTraining(m.Classifier, false)
	nn.SetRequiresGrad(m.Classifier, false)
	m.Params = nn.NumParams(m.Classifier)
	if e, ok := net3d.Lookup(spec.Arch); ok {
		m.Description = e.Description
	}
	m.identify(b)
	return m, nil
}

// identify sets the model's version (from the checkpoint bytes b unless
// MetaVersion is set), and its name, caveat and description from the
// metadata where set.
func (m *Model) identify(b []byte) {
	meta := m.Meta
	sum := sha256.Sum256(b)
	m.Version = "sha256:" + hex.EncodeToString(sum[:6])
	if v := meta[MetaVersion]; v != "" {
		m.Version = v
	}
	if v := meta[MetaName]; v != "" {
		m.Name = v
	}
	m.Caveat = GenericCaveat
	if v := meta[MetaCaveat]; v != "" {
		m.Caveat = v
	}
	if v := meta[MetaDescription]; v != "" {
		m.Description = v
	}
}

// unmarshalMeta decodes the JSON metadata value of key into dst.
func unmarshalMeta(meta map[string]string, key string, dst any) error {
	raw, ok := meta[key]
	if !ok {
		return fmt.Errorf("no %s metadata (checkpoints of `ctlens train` have it)", key)
	}
	if err := json.Unmarshal([]byte(raw), dst); err != nil {
		return fmt.Errorf("metadata %s: %w", key, err)
	}
	return nil
}

// Prepare applies the model's pipeline to v (a scan in HU, not modified) in
// inference mode and checks that the result has the network's input size.
// It returns the prepared volume and the Trace that maps it back onto v.
// For a 2D model, which prepares each slice as it scores it, it returns v
// itself and an empty Trace.
func (m *Model) Prepare(v *volume.Volume) (*volume.Volume, volume.Trace, error) {
	if m.Classifier2D != nil {
		if v == nil {
			return nil, volume.Trace{}, errors.New("score: preprocess: nil volume")
		}
		return v, volume.Trace{}, nil
	}
	pre, tr, err := m.Pipeline.Apply(v, nil)
	if err != nil {
		return nil, volume.Trace{}, fmt.Errorf("score: preprocess: %w", err)
	}
	want := [3]int{m.Input[2], m.Input[1], m.Input[0]}
	if pre.Dims != want {
		return nil, volume.Trace{}, fmt.Errorf("score: preprocess: the pipeline's output is %d×%d×%d (cols×rows×slices), the network input is %d×%d×%d",
			pre.Dims[0], pre.Dims[1], pre.Dims[2], want[0], want[1], want[2])
	}
	return pre, tr, nil
}

// Predict runs the network on a prepared volume (Prepare's output) and
// returns the logits z and the probabilities p = softmax(z) (see the
// package comment), one per class. For a 2D model z are the aggregated
// slice logits (see Model.Classifier2D).
func (m *Model) Predict(pre *volume.Volume) (logits []float32, probs []float64, err error) {
	if m.Classifier2D != nil {
		return m.predict2D(pre)
	}
	x, err := cam.InputFromVolume(pre, m.Channels)
	if err != nil {
		return nil, nil, fmt.Errorf("score: infer: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var y *tensor.Tensor
	if err := tensor.Catch(func() { y = net3d.Forward(m.Classifier, x) }); err != nil {
		return nil, nil, fmt.Errorf("score: infer: %w", err)
	}
	if y.Dim() != 2 || y.Size(0) != 1 || y.Size(1) != len(m.ClassNames) {
		return nil, nil, fmt.Errorf("score: infer: logits of shape %v (want 1×%d)", y.Shape(), len(m.ClassNames))
	}
	logits = append([]float32(nil), y.Data()...)
	probs, err = Softmax(logits)
	if err != nil {
		return nil, nil, fmt.Errorf("score: infer: %w", err)
	}
	return logits, probs, nil
}

// Softmax returns p_c = exp(z_c − max z) / Σ_k exp(z_k − max z) in float64.
// A non-finite logit is an error.
func Softmax(z []float32) ([]float64, error) {
	if len(z) == 0 {
		return nil, errors.New("softmax of no logits")
	}
	hi := math.Inf(-1)
	for c, v := range z {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("logit %d is %v", c, v)
		}
		hi = math.Max(hi, f)
	}
	p := make([]float64, len(z))
	s := 0.0
	for c, v := range z {
		p[c] = math.Exp(float64(v) - hi)
		s += p[c]
	}
	for c := range p {
		p[c] /= s
	}
	return p, nil
}

// Explain computes the class-activation map of class for a prepared volume
// pre (with the Trace tr that produced it from scan) as cam.Explain does:
// the raw map of method at the final feature map, upsampled trilinearly
// to the network input, scaled to [0, 1] by min–max (hot = 1) and mapped
// back onto scan's grid with cam.ToScan (0 where the pipeline cropped or
// skipped voxels; the hottest scan voxel is 1).
// For a 2D model the maps of every slice are stacked instead (pre and tr
// are not used; see explain2D).
func (m *Model) Explain(scan, pre *volume.Volume, tr volume.Trace, method cam.Method, class int) (*cam.Heatmap, error) {
	if m.Classifier2D != nil {
		return m.explain2D(scan, method, class)
	}
	x, err := cam.InputFromVolume(pre, m.Channels)
	if err != nil {
		return nil, fmt.Errorf("score: heatmap: %w", err)
	}
	m.mu.Lock()
	res, err := cam.Compute(m.Classifier, x, cam.Options{Method: method, Classes: []int{class}})
	m.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("score: heatmap: %w", err)
	}
	mp := res.Maps[0]
	in, heat, err := cam.ToScan(mp.Raw, pre, tr, scan, cam.MinMax)
	if err != nil {
		return nil, fmt.Errorf("score: heatmap: %w", err)
	}
	logits := res.Logits.Data()
	probs, err := Softmax(logits)
	if err != nil {
		return nil, fmt.Errorf("score: heatmap: %w", err)
	}
	return &cam.Heatmap{
		Method: method, Layer: res.Layer, Class: class, Score: mp.Scores[0], Probability: float32(probs[class]),
		Logits: append([]float32(nil), logits...), Raw: mp.Raw, Input: in, Heat: heat,
		Normalization: cam.MinMax, ScoreFactorDropped: mp.ScoreFactorDropped,
	}, nil
}
