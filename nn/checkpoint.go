package nn

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ctlens/ctlens/nn/safetensors"
	"github.com/ctlens/ctlens/tensor"
)

// AutoPrefix is the prefix that torch.nn.DataParallel and
// DistributedDataParallel put before every key; Load strips it
// automatically.
const AutoPrefix = "module."

// LoadOpts configures Load and LoadFile.
type LoadOpts struct {
	// Strict makes missing and unexpected keys an error (PyTorch's
	// strict=True); otherwise they are only listed in the report.
	Strict bool
	// StripPrefix is removed from the start of every checkpoint key that
	// has it, e.g. "backbone." or "model.". Independently, when every key
	// starts with AutoPrefix ("module.") and no model key does, that prefix
	// is removed too.
	StripPrefix string
}

// LoadReport describes what Load matched.
type LoadReport struct {
	Loaded     int      // model keys filled from the checkpoint
	Missing    []string // model keys absent from the checkpoint, sorted
	Unexpected []string // checkpoint keys (after prefix stripping) the model lacks, sorted
	Stripped   []string // prefixes removed from the checkpoint keys, in order applied
}

// LoadShapeError reports a checkpoint tensor whose shape differs from the
// model's tensor of the same key.
type LoadShapeError struct {
	Key        string
	Model      []int
	Checkpoint []int
}

// Error formats "nn: load KEY: shape [model], checkpoint has [file]".
func (e *LoadShapeError) Error() string {
	return fmt.Sprintf("nn: load %s: shape %v, checkpoint has %v", e.Key, e.Model, e.Checkpoint)
}

// LoadKeysError reports, for a strict load, the model keys the checkpoint
// lacks and the checkpoint keys the model lacks (both sorted).
type LoadKeysError struct {
	Missing    []string
	Unexpected []string
}

// Error formats "nn: load: N missing keys: a, b; M unexpected keys: c".
func (e *LoadKeysError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, fmt.Sprintf("%d missing %s: %s", len(e.Missing), plural(len(e.Missing), "key"), strings.Join(e.Missing, ", ")))
	}
	if len(e.Unexpected) > 0 {
		parts = append(parts, fmt.Sprintf("%d unexpected %s: %s", len(e.Unexpected), plural(len(e.Unexpected), "key"), strings.Join(e.Unexpected, ", ")))
	}
	return "nn: load: " + strings.Join(parts, "; ")
}

func plural(n int, s string) string {
	if n == 1 {
		return s
	}
	return s + "s"
}

// Save writes m's state dict (StateDict names, every tensor as F32) to the
// safetensors file at path, atomically, with the given metadata (may be
// nil; "format": "pt" is added unless metadata sets "format", as PyTorch's
// safetensors writer does).
func Save(path string, m Module, metadata map[string]string) error {
	return WriteTensors(path, StateDict(m), metadata)
}

// WriteTensors writes named tensors (e.g. Optimizer.State or EMA.State) to
// the safetensors file at path as F32, atomically, with metadata as in Save.
// Names must be unique and non-empty.
func WriteTensors(path string, ts []Named, metadata map[string]string) error {
	f := &safetensors.File{Metadata: map[string]string{}}
	maps.Copy(f.Metadata, metadata)
	if _, ok := f.Metadata["format"]; !ok {
		f.Metadata["format"] = "pt"
	}
	for _, t := range ts {
		if t.Tensor == nil {
			return fmt.Errorf("nn: save %s: tensor %q is nil", path, t.Name)
		}
		f.Tensors = append(f.Tensors, safetensors.Tensor{
			Name: t.Name, DType: "F32", Shape: append([]int{}, t.Tensor.Shape()...), Data: t.Tensor.Data(),
		})
	}
	if err := safetensors.WriteFile(path, f); err != nil {
		return fmt.Errorf("nn: save: %w", err)
	}
	return nil
}

// ReadTensors reads every tensor of the safetensors file at path (converted
// to float32) with its name, in file order, and the file's metadata.
func ReadTensors(path string) ([]Named, map[string]string, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("nn: read: %w", err)
	}
	out := make([]Named, len(f.Tensors))
	for i, t := range f.Tensors {
		out[i] = Named{t.Name, tensor.New(t.Data, t.Shape...)}
	}
	return out, f.Metadata, nil
}

// Load reads the safetensors file at path and copies its tensors into m's
// parameters and buffers by state-dict key; see LoadFile.
func Load(path string, m Module, o LoadOpts) (*LoadReport, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nn: load: %w", err)
	}
	return LoadFile(f, m, o)
}

// LoadFile copies the tensors of f into m's parameters and buffers (in
// place: the model's tensors keep their identity) by state-dict key, after
// prefix stripping as described in LoadOpts. Any dtype the safetensors
// package reads is accepted (F16, BF16, I64 num_batches_tracked, …). A
// shape mismatch is a *LoadShapeError and, with Strict, missing or
// unexpected keys are a *LoadKeysError; several are joined (errors.Join;
// errors.As finds each). On error m is unchanged; the report is returned
// with or without an error. A tensor shared by several modules is loaded from any of
// its keys and is not reported missing under the others.
func LoadFile(f *safetensors.File, m Module, o LoadOpts) (*LoadReport, error) {
	src := make([]Named, len(f.Tensors))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if len(t.Data) != tensor.Numel(t.Shape) {
			return nil, fmt.Errorf("nn: load %s: %d values for shape %v", t.Name, len(t.Data), t.Shape)
		}
		src[i] = Named{t.Name, tensor.New(t.Data, t.Shape...)}
	}
	return LoadState(src, m, o)
}

// LoadState copies named tensors into m by state-dict key, exactly as
// LoadFile.
func LoadState(state []Named, m Module, o LoadOpts) (*LoadReport, error) {
	rep := &LoadReport{}
	model := StateDict(m)
	keys := make([]string, len(state))
	for i, s := range state {
		keys[i] = s.Name
	}
	if p := o.StripPrefix; p != "" {
		strip := false
		for i, k := range keys {
			if rest, ok := strings.CutPrefix(k, p); ok {
				keys[i], strip = rest, true
			}
		}
		if strip {
			rep.Stripped = append(rep.Stripped, p)
		}
	}
	if allHavePrefix(keys, AutoPrefix) && !anyHasPrefix(model, AutoPrefix) {
		for i := range keys {
			keys[i] = keys[i][len(AutoPrefix):]
		}
		rep.Stripped = append(rep.Stripped, AutoPrefix)
	}

	byKey := make(map[string]*tensor.Tensor, len(state))
	for i, k := range keys {
		if _, dup := byKey[k]; dup {
			return nil, fmt.Errorf("nn: load: key %s appears twice in the checkpoint", k)
		}
		byKey[k] = state[i].Tensor
	}

	type pair struct{ dst, src *tensor.Tensor }
	var copies []pair
	var shapeErrs []error
	used := map[string]bool{}
	loaded := map[*tensor.Tensor]bool{}
	for _, mt := range model {
		s, ok := byKey[mt.Name]
		if !ok {
			continue
		}
		used[mt.Name] = true
		if s == nil || !tensor.SameShape(s.Shape(), mt.Tensor.Shape()) {
			var got []int
			if s != nil {
				got = append([]int{}, s.Shape()...)
			}
			shapeErrs = append(shapeErrs, &LoadShapeError{Key: mt.Name, Model: append([]int{}, mt.Tensor.Shape()...), Checkpoint: got})
			continue
		}
		copies = append(copies, pair{mt.Tensor, s})
		loaded[mt.Tensor] = true
		rep.Loaded++
	}
	for _, mt := range model {
		if !used[mt.Name] && !loaded[mt.Tensor] {
			rep.Missing = append(rep.Missing, mt.Name)
		}
	}
	for _, k := range keys {
		if !used[k] {
			rep.Unexpected = append(rep.Unexpected, k)
		}
	}
	slices.Sort(rep.Missing)
	slices.Sort(rep.Unexpected)
	errs := shapeErrs
	if o.Strict && (len(rep.Missing) > 0 || len(rep.Unexpected) > 0) {
		errs = append(errs, &LoadKeysError{Missing: rep.Missing, Unexpected: rep.Unexpected})
	}
	switch len(errs) {
	case 0:
	case 1:
		return rep, errs[0]
	default:
		return rep, errors.Join(errs...)
	}
	for _, c := range copies {
		copy(c.dst.Data(), c.src.Data())
	}
	return rep, nil
}

func allHavePrefix(keys []string, p string) bool {
	for _, k := range keys {
		if !strings.HasPrefix(k, p) {
			return false
		}
	}
	return len(keys) > 0
}

func anyHasPrefix(ts []Named, p string) bool {
	for _, t := range ts {
		if strings.HasPrefix(t.Name, p) {
			return true
		}
	}
	return false
}
