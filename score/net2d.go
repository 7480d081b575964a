package score

import (
	"fmt"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/net2d"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/nn/safetensors"
	"github.com/ctlens/ctlens/volume"
)

// is2DArch reports whether arch names a 2D architecture (package net2d)
// and not a 3D one.
func is2DArch(arch string) bool {
	if _, ok := net3d.Lookup(arch); ok {
		return false
	}
	_, ok := net2d.Lookup(arch)
	return ok
}

// load2D fills m from a 2D checkpoint (a net2d architecture): the slice
// preprocessing and aggregation of net2d.MetaSlices, the class names, and
// the network, frozen. The model's Pipeline is the equivalent volume
// pipeline (net2d.SlicePrep.Pipeline), shown as the result's
// preprocessing; Input is [1, height, width], one slice.
func (m *Model) load2D(f *safetensors.File, spec net3d.Spec) error {
	meta := f.Metadata
	prep, err := net2d.ParseSlicePrep(meta)
	if err != nil {
		return err
	}
	if err := m.readClassNames(spec.Classes); err != nil {
		return err
	}
	c, err := net2d.BuildShapes(net2d.Spec(spec))
	if err != nil {
		return err
	}
	if _, err := nn.LoadFile(f, c, nn.LoadOpts{Strict: true}); err != nil {
		return err
	}
	nn.SetTraining(c, false)
	nn.SetRequiresGrad(c, false)
	m.Classifier2D, m.Slices = c, prep
	m.Pipeline = prep.Pipeline()
	m.Input = [3]int{1, prep.Size[0], prep.Size[1]}
	m.Params = nn.NumParams(c)
	if e, ok := net2d.Lookup(spec.Arch); ok {
		m.Description = e.Description
	}
	return nil
}

// readClassNames reads net3d.MetaClassNames into m.ClassNames: classes
// distinct, non-empty names.
func (m *Model) readClassNames(classes int) error {
	if err := unmarshalMeta(m.Meta, net3d.MetaClassNames, &m.ClassNames); err != nil {
		return err
	}
	if len(m.ClassNames) != classes {
		return fmt.Errorf("metadata %s: %d class names for the spec's %d classes", net3d.MetaClassNames, len(m.ClassNames), classes)
	}
	seen := map[string]bool{}
	for _, c := range m.ClassNames {
		if c == "" || seen[c] {
			return fmt.Errorf("metadata %s: class names %q must be distinct and non-empty", net3d.MetaClassNames, m.ClassNames)
		}
		seen[c] = true
	}
	return nil
}

// predict2D scores every axial slice of scan (in HU) with the 2D network
// and aggregates the slice logits into the scan's logits z as m.Slices
// says (net2d.ScoreScan); p = softmax(z).
func (m *Model) predict2D(scan *volume.Volume) (logits []float32, probs []float64, err error) {
	m.mu.Lock()
	s, err := net2d.ScoreScan(m.Classifier2D, scan, m.Slices)
	m.mu.Unlock()
	if err != nil {
		return nil, nil, fmt.Errorf("score: infer: %w", err)
	}
	if len(s.Logits) != len(m.ClassNames) {
		return nil, nil, fmt.Errorf("score: infer: %d logits for %d classes", len(s.Logits), len(m.ClassNames))
	}
	if probs, err = Softmax(s.Logits); err != nil {
		return nil, nil, fmt.Errorf("score: infer: %w", err)
	}
	return s.Logits, probs, nil
}

// explain2D computes the heatmap of class for a 2D model: the raw map of
// method at the network's CAM layer for every axial slice of scan
// (net2d.ComputeSliceHeatmap, the class fixed), resized to the slice's rows
// × columns, stacked on the scan's grid and scaled to [0, 1] by min–max
// over the whole volume (hot = 1). Score, Probability and Logits are the
// scan's aggregated ones; Raw is nil (there is one raw map per slice) and
// Input is the heat itself (the slices are the network's inputs).
func (m *Model) explain2D(scan *volume.Volume, method cam.Method, class int) (*cam.Heatmap, error) {
	m.mu.Lock()
	sh, err := net2d.ComputeSliceHeatmap(m.Classifier2D, scan, m.Slices.Config(), cam.Options{Method: method, Classes: []int{class}})
	var s *net2d.ScanScore
	if err == nil {
		s, err = net2d.ScoreScan(m.Classifier2D, scan, m.Slices)
	}
	m.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("score: heatmap: %w", err)
	}
	heat := sh.Heat
	if err := cam.Normalize(heat.Voxels, cam.MinMax); err != nil {
		return nil, fmt.Errorf("score: heatmap: %w", err)
	}
	if class < 0 || class >= len(s.Logits) {
		return nil, fmt.Errorf("score: heatmap: class %d of %d", class, len(s.Logits))
	}
	return &cam.Heatmap{
		Method: method, Layer: sh.Layer, Class: class, Score: s.Logits[class], Probability: float32(s.Probs[class]),
		Logits: append([]float32(nil), s.Logits...), Input: heat, Heat: heat, Normalization: cam.MinMax,
	}, nil
}
