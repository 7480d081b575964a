package net3d

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// Supernet is the CovidNet3D search space as one network: the Mobile3DNet
// with every candidate op of every cell allocated, weights shared across
// architectures, as the reference's Mobile3DNet under NNI. Its state dict
// is exactly the reference's (candidates under
// blocks.{2i+2}.mobile_inverted_conv.choices.{j}.*, all of them), so a
// reference checkpoint loads strictly with nn.Load.
//
// A forward pass runs either the fixed per-cell choice (Forward, Features,
// set with SetChoices) or per-forward masks (ForwardWithMasks,
// FeaturesWithMasks), the hook for a differentiable (Gumbel-softmax)
// architecture search. Derive extracts a single-path CovidNet3D.
//
// Its layers are those of Mobile3DNet. Supernet implements
// Classifier for its current choices; its Spec is the spec of that
// single-path architecture.
type Supernet struct {
	Mobile3DNet
}

// NewSupernet builds the supernet of spec s: s.Arch is "covidnet3d" or
// "covidnet3d-small" (the preset under s.Config) and the config's ops, if
// any, give the initial choices. Weights are initialised as PyTorch's
// defaults from a generator seeded with seed, as Build.
func NewSupernet(s Spec, seed uint64) (*Supernet, error) {
	base, err := covidPreset(s.Arch)
	if err != nil {
		return nil, err
	}
	cfg, l, err := decodeCovidConfig(s, base)
	if err != nil {
		return nil, err
	}
	n := &Supernet{}
	rng := rand.New(rand.NewPCG(seed, 0x3d))
	if err := tensor.Catch(func() { n.init(rng, s, cfg, l, true) }); err != nil {
		return nil, fmt.Errorf("net3d: supernet %s: %w", s.Arch, err)
	}
	return n, nil
}

// Forward returns the logits N×K of the current choices: Head(Features(x, nil)).
func (s *Supernet) Forward(x *tensor.Tensor) *tensor.Tensor { return s.Head(s.Features(x, nil)) }

// Features runs the current choice of every cell, as CovidNet3D.Features.
func (s *Supernet) Features(x *tensor.Tensor, tap Tap) *tensor.Tensor {
	return s.features(x, tap, fixedCell)
}

// Head returns classifier(flatten(global_avg_pooling(f))): logits N×K, as
// CovidNet3D.Head.
func (s *Supernet) Head(f *tensor.Tensor) *tensor.Tensor { return s.head(f) }

// Linear returns classifier.linear (weight K×FeatureMix, bias K).
func (s *Supernet) Linear() *nn.Linear { return s.Classifier.Linear }

// TapLayers returns the layers Features and FeaturesWithMasks report, as
// CovidNet3D.TapLayers.
func (s *Supernet) TapLayers() []string { return slices.Clone(s.taps) }

// Spec returns the spec of the single-path network of the current choices
// (Arch, InChannels, Classes and the full Config with ops).
func (s *Supernet) Spec() Spec { return s.specWith(s.Choices()) }

// NumCells returns the number of searchable cells.
func (s *Supernet) NumCells() int { return len(s.cells) }

// Cells describes the searchable cells in forward order, each with its
// candidate names (len(Candidates) is the candidate count, 9 or 10, and the
// length its mask must have).
func (s *Supernet) Cells() []CellInfo { return cloneCells(s.layout.cells) }

// Choices returns the current choice of every cell in forward order.
func (s *Supernet) Choices() []int {
	out := make([]int, len(s.cells))
	for i, c := range s.cells {
		out[i] = c.Choice
	}
	return out
}

// SetChoices fixes the op of every cell (candidate indices in forward
// order) for Forward and Features.
func (s *Supernet) SetChoices(choices []int) error {
	if err := s.checkChoices(choices); err != nil {
		return err
	}
	for i, c := range s.cells {
		c.Choice = choices[i]
	}
	return nil
}

func (s *Supernet) checkChoices(choices []int) error {
	if len(choices) != len(s.cells) {
		return fmt.Errorf("net3d: supernet: %d choices for %d cells", len(choices), len(s.cells))
	}
	for i, c := range s.cells {
		if k := len(c.Cell.Candidates); choices[i] < 0 || choices[i] >= k {
			return fmt.Errorf("net3d: supernet: choice %d for cell %s: want 0–%d", choices[i], c.Cell.Key, k-1)
		}
	}
	return nil
}

// SpecFor returns the spec of the single-path CovidNet3D with the given
// choices (its Config is the supernet's configuration with those ops), as
// stored in a checkpoint of the derived network.
func (s *Supernet) SpecFor(choices []int) (Spec, error) {
	if err := s.checkChoices(choices); err != nil {
		return Spec{}, err
	}
	return s.specWith(choices), nil
}

// Derive returns the single-path CovidNet3D with the given choices, its
// weights and BatchNorm buffers copied from the chosen candidates (and the
// shared layers) of the supernet, in the supernet's training mode. For the
// same input it computes what the supernet computes with those choices
// fixed. Its classifier dropout draws from a generator seeded from the
// supernet's.
func (s *Supernet) Derive(choices []int) (*CovidNet3D, error) {
	if err := s.checkChoices(choices); err != nil {
		return nil, err
	}
	l := *s.layout
	l.ops = slices.Clone(choices)
	seed := uint64(0x5eed)
	if d := s.Classifier.Dropout; d != nil {
		seed = d.Rng.Uint64()
	}
	m := &CovidNet3D{}
	if err := tensor.Catch(func() { m.init(rand.New(rand.NewPCG(seed, 0x3d)), s.spec, s.cfg, &l, false) }); err != nil {
		return nil, fmt.Errorf("net3d: derive %s: %w", s.spec.Arch, err)
	}
	src := map[string]*tensor.Tensor{}
	for _, t := range nn.StateDict(s) {
		src[t.Name] = t.Tensor
	}
	for _, t := range nn.StateDict(m) {
		w, ok := src[t.Name]
		if !ok || !tensor.SameShape(w.Shape(), t.Tensor.Shape()) {
			return nil, fmt.Errorf("net3d: derive %s: supernet has no tensor %s of shape %v", s.spec.Arch, t.Name, t.Tensor.Shape())
		}
		copy(t.Tensor.Data(), w.Data())
	}
	nn.SetTraining(m, s.Training())
	return m, nil
}

// MaskMode selects how FeaturesWithMasks combines a cell's candidates.
type MaskMode int

const (
	// MaskHard runs only the candidates whose mask entry is non-zero
	// (normally one: a hard, straight-through Gumbel-softmax sample) and
	// multiplies each output by its mask value, so that the gradient of the
	// loss reaches the selected entries: ∂L/∂m_j = ⟨∂L/∂y, g_j(x)⟩. Entries
	// of candidates that do not run receive gradient 0 (as in NNI, which
	// runs only the selected op).
	MaskHard MaskMode = iota
	// MaskSoft runs every candidate and returns the mask-weighted sum (a
	// continuous relaxation, as DARTS); every entry receives
	// ⟨∂L/∂y, g_j(x)⟩.
	MaskSoft
)

// String returns "hard" or "soft".
func (m MaskMode) String() string {
	switch m {
	case MaskHard:
		return "hard"
	case MaskSoft:
		return "soft"
	}
	return fmt.Sprintf("MaskMode(%d)", int(m))
}

// FeaturesWithMasks runs the supernet with one mask per cell instead of the
// fixed choices and returns the feature_mix_layer output, reporting
// TapLayers to tap (may be nil). masks[i] is a tensor of shape [K_i] (K_i =
// len(Cells()[i].Candidates)) that may require gradients or come from a
// graph (e.g. a Gumbel-softmax of architecture logits); cell i with
// calibration output x then returns
//
//	y = s·x + Σ_j m_j·g_j(x)
//
// with s = 1 when the cell has a shortcut and g_j the effective op of
// MobileInvertedResidualBlock (an MBConv's output; x for identity; for Zero,
// 0 with a shortcut and x without one). With a one-hot mask of ones this is
// exactly the reference block for the selected op. In MaskHard mode the
// sum runs over the non-zero entries only, of which there must be at
// least one; in MaskSoft mode over all. Wrong mask counts, shapes or
// values, and input shape errors, are returned as errors.
func (s *Supernet) FeaturesWithMasks(x *tensor.Tensor, masks []*tensor.Tensor, mode MaskMode, tap Tap) (f *tensor.Tensor, err error) {
	if mode != MaskHard && mode != MaskSoft {
		return nil, fmt.Errorf("net3d: supernet: unknown mask mode %d", int(mode))
	}
	if len(masks) != len(s.cells) {
		return nil, fmt.Errorf("net3d: supernet: %d masks for %d cells", len(masks), len(s.cells))
	}
	for i, c := range s.cells {
		m, k := masks[i], len(c.Cell.Candidates)
		if m == nil || m.Dim() != 1 || m.Size(0) != k {
			var shape []int
			if m != nil {
				shape = m.Shape()
			}
			return nil, fmt.Errorf("net3d: supernet: mask for cell %s has shape %v, want [%d]", c.Cell.Key, shape, k)
		}
		nonzero := false
		for j, v := range m.Data() {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("net3d: supernet: mask for cell %s: entry %d is %v", c.Cell.Key, j, v)
			}
			nonzero = nonzero || v != 0
		}
		if mode == MaskHard && !nonzero {
			return nil, fmt.Errorf("net3d: supernet: hard mask for cell %s selects no candidate (all entries 0)", c.Cell.Key)
		}
	}
	err = tensor.Catch(func() {
		f = s.features(x, tap, func(i int, b *MobileInvertedResidualBlock, x *tensor.Tensor) *tensor.Tensor {
			return b.forwardMask(x, masks[i], mode)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("net3d: supernet %s: %w", s.spec.Arch, err)
	}
	return f, nil
}

// ForwardWithMasks returns the logits N×K of the masked supernet:
// Head(FeaturesWithMasks(x, masks, mode, nil)).
func (s *Supernet) ForwardWithMasks(x *tensor.Tensor, masks []*tensor.Tensor, mode MaskMode) (*tensor.Tensor, error) {
	f, err := s.FeaturesWithMasks(x, masks, mode, nil)
	if err != nil {
		return nil, err
	}
	var y *tensor.Tensor
	if err := tensor.Catch(func() { y = s.Head(f) }); err != nil {
		return nil, fmt.Errorf("net3d: supernet %s: %w", s.spec.Arch, err)
	}
	return y, nil
}

// forwardMask returns s·x + Σ_j m_j·g_j(x) over the candidates that mode
// runs (see FeaturesWithMasks).
func (b *MobileInvertedResidualBlock) forwardMask(x, mask *tensor.Tensor, mode MaskMode) *tensor.Tensor {
	m := mask.Data()
	var y *tensor.Tensor
	if b.Cell.Shortcut {
		y = x
	}
	for j := range b.Cell.Candidates {
		if mode == MaskHard && m[j] == 0 {
			continue
		}
		g := b.effective(j, x)
		if g == nil {
			continue
		}
		t := tensor.Mul(g, tensor.Slice(mask, 0, j, j+1))
		if y == nil {
			y = t
		} else {
			y = tensor.Add(y, t)
		}
	}
	if y == nil {
		y = tensor.ZerosLike(x)
	}
	return y
}

var _ Classifier = (*Supernet)(nil)
