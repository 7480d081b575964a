package net3d

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// Metadata keys of a ctlens checkpoint (a safetensors file).
const (
	// MetaSpec holds the architecture Spec as JSON.
	MetaSpec = "ctlens.spec"
	// MetaClassNames holds the class names, by label, as a JSON array.
	MetaClassNames = "ctlens.class_names"
	// MetaSource names where imported weights came from.
	MetaSource = "ctlens.source"
)

// SaveCheckpoint writes c's state dict and its Spec (plus extra metadata) to
// path as safetensors.
func SaveCheckpoint(path string, c Classifier, meta map[string]string) error {
	spec, err := json.Marshal(c.Spec())
	if err != nil {
		return fmt.Errorf("net3d: save %s: %w", path, err)
	}
	all := map[string]string{MetaSpec: string(spec)}
	for k, v := range meta {
		all[k] = v
	}
	if err := nn.Save(path, c, all); err != nil {
		return fmt.Errorf("net3d: save %s: %w", path, err)
	}
	return nil
}

// LoadCheckpoint rebuilds the network described by a checkpoint's spec and
// loads its weights strictly. It returns the network (in training mode, as
// built) and the checkpoint's metadata.
func LoadCheckpoint(path string) (Classifier, map[string]string, error) {
	state, meta, err := nn.ReadTensors(path)
	if err != nil {
		return nil, nil, fmt.Errorf("net3d: %w", err)
	}
	raw, ok := meta[MetaSpec]
	if !ok {
		return nil, nil, fmt.Errorf("net3d: %s: no %s metadata: not a ctlens checkpoint (use `ctlens import` for PyTorch state dicts)", path, MetaSpec)
	}
	var spec Spec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return nil, nil, fmt.Errorf("net3d: %s: %s: %w", path, MetaSpec, err)
	}
	c, err := Build(spec, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("net3d: %s: %w", path, err)
	}
	if _, err := nn.LoadState(state, c, nn.LoadOpts{Strict: true}); err != nil {
		return nil, nil, fmt.Errorf("net3d: %s: %w", path, err)
	}
	return c, meta, nil
}

// ImportOpts controls Import.
type ImportOpts struct {
	// SumRGB adapts a stem trained on 3-channel input to the spec's
	// 1-channel input by summing its weights over the RGB axis.
	SumRGB bool
	// NewClassifier keeps the freshly initialised final linear layer when
	// the checkpoint's has another class count, instead of failing.
	NewClassifier bool
	// Strict fails on keys the model lacks or the checkpoint lacks (after the
	// adaptations above); otherwise they are only reported.
	Strict bool
}

// ImportReport says what Import did.
type ImportReport struct {
	*nn.LoadReport
	SummedRGB  []string // stem weights summed over RGB
	Replaced   []string // classifier tensors kept at their fresh initialisation
	Parameters int
}

// Import builds the network of spec (weights drawn from seed) and fills it
// from a PyTorch state dict (keys as in the reference implementation,
// "module." prefixes removed), applying the adaptations of o. Errors name
// the key and both shapes.
func Import(state []nn.Named, spec Spec, seed uint64, o ImportOpts) (Classifier, *ImportReport, error) {
	c, err := Build(spec, seed)
	if err != nil {
		return nil, nil, err
	}
	model := nn.StateDict(c)
	byName := map[string]*tensor.Tensor{}
	for _, m := range model {
		byName[m.Name] = m.Tensor
	}
	fc := c.Linear()
	rep := &ImportReport{}
	// The first convolution weight of the state dict is the stem.
	stem := ""
	for _, m := range model {
		if m.Tensor.Dim() >= 3 && m.Tensor.Dim() <= 5 && strings.HasSuffix(m.Name, "weight") {
			stem = m.Name
			break
		}
	}
	var adapted []nn.Named
	for _, s := range state {
		name := strings.TrimPrefix(s.Name, nn.AutoPrefix)
		dst, ok := byName[name]
		if !ok || tensor.SameShape(dst.Shape(), s.Tensor.Shape()) {
			adapted = append(adapted, nn.Named{Name: name, Tensor: s.Tensor})
			continue
		}
		switch {
		case o.SumRGB && name == stem && s.Tensor.Dim() == dst.Dim() && s.Tensor.Size(1) == 3 && dst.Size(1) == 1:
			adapted = append(adapted, nn.Named{Name: name, Tensor: tensor.Sum(s.Tensor.Detach(), []int{1}, true)})
			rep.SummedRGB = append(rep.SummedRGB, name)
		case o.NewClassifier && (dst == fc.Weight || (fc.Bias != nil && dst == fc.Bias)):
			rep.Replaced = append(rep.Replaced, name)
		default:
			return nil, nil, &nn.LoadShapeError{Key: name, Model: append([]int{}, dst.Shape()...), Checkpoint: append([]int{}, s.Tensor.Shape()...)}
		}
	}
	lr, err := nn.LoadState(adapted, c, nn.LoadOpts{})
	if err != nil {
		return nil, nil, err
	}
	// Replaced classifier tensors are expected to be missing.
	var missing []string
	for _, k := range lr.Missing {
		replaced := false
		for _, r := range rep.Replaced {
			replaced = replaced || r == k
		}
		if !replaced {
			missing = append(missing, k)
		}
	}
	lr.Missing = missing
	if o.Strict && (len(lr.Missing) > 0 || len(lr.Unexpected) > 0) {
		return nil, nil, &nn.LoadKeysError{Missing: lr.Missing, Unexpected: lr.Unexpected}
	}
	if lr.Loaded == 0 {
		return nil, nil, errors.New("net3d: import: no checkpoint key matches the model: is the architecture right?")
	}
	rep.LoadReport = lr
	rep.Parameters = nn.NumParams(c)
	return c, rep, nil
}
