// Package net2d holds the 2D image networks of ctlens — ResNet-RS (Bello et
// al. 2021, timm's layout) and ResFormer (Tian et al. 2023, the official
// layout) — with parameter names equal to their PyTorch state-dict keys, the
// scale-consistency loss of ResFormer's multi-resolution training, and the
// slice-to-volume pieces that score a CT scan with a 2D model slice by slice
// (per-slice inputs, score aggregation, attention pooling, and Grad-CAM
// heatmaps stacked back onto the scan's grid).
//
// Every network maps a batch N×C×H×W to class logits N×K and implements
// Classifier, the 2D counterpart of net3d.Classifier, so that package cam
// computes its class-activation maps.
package net2d

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// Tap observes, and may replace, the output of a named layer during a
// forward pass (net3d.Tap: the same type, so cam's taps apply).
type Tap = net3d.Tap

// Classifier is a 2D network ending in a pooling step and one linear layer.
type Classifier interface {
	nn.Module
	// Features runs the network up to its last layer before pooling and
	// returns that output. tap (may be nil) is called with the output of
	// each layer named by TapLayers, in order; the last of them is the
	// returned tensor. ResNet-RS returns the feature map N×C×h×w; ResFormer
	// returns its final-normed tokens channel-first, N×D×(1+h·w), the CLS
	// token first.
	Features(x *tensor.Tensor, tap Tap) *tensor.Tensor
	// Pool maps the output of Features to the pre-logit features N×C:
	// the spatial mean for ResNet-RS, the CLS token for ResFormer.
	Pool(features *tensor.Tensor) *tensor.Tensor
	// Head maps the output of Features to logits N×K: Pool, dropout
	// (training only, where configured) and the final linear layer.
	Head(features *tensor.Tensor) *tensor.Tensor
	// Linear returns the final linear layer (weight K×C, bias K).
	Linear() *nn.Linear
	// TapLayers lists the layer names Features reports to a Tap, in forward
	// order (dotted state-dict prefixes such as "layer3" or "blocks.11.norm1").
	TapLayers() []string
	// CAMLayer is the tap layer whose Grad-CAM map is the network's default
	// 2D heatmap: a 2D map (N×C×h×w) on which the logits depend.
	CAMLayer() string
	// Spec returns the architecture description the network was built from.
	Spec() Spec
}

// Spec names an architecture and its hyperparameters; it has the fields
// and JSON form of net3d.Spec and is stored in checkpoints the same way.
type Spec struct {
	// Arch is the registry name, e.g. "resnetrs-50", "resformer-ti".
	Arch string `json:"arch"`
	// InChannels is the number of input channels (1 for a CT slice, 3 for
	// RGB-replicated or multi-window slices).
	InChannels int `json:"in_channels"`
	// Classes is the number of output classes.
	Classes int `json:"classes"`
	// Config holds family-specific options as JSON (ResNetRSConfig,
	// ResFormerConfig); empty means the family's defaults.
	Config json.RawMessage `json:"config,omitempty"`
}

// Entry is a registered architecture.
type Entry struct {
	Name        string
	Family      string
	Description string
	// DefaultSpec is the spec a user starts from.
	DefaultSpec Spec
	// Build constructs a network with weights initialised as in the
	// reference implementation, drawing from rng (no draws when rng is nil).
	Build func(s Spec, rng *rand.Rand) (Classifier, error)
}

var (
	regMu    sync.RWMutex
	registry = map[string]Entry{}
)

// Register adds an architecture to the registry. It panics on a duplicate
// name (a programming error at init time).
func Register(e Entry) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[e.Name]; dup {
		panic("net2d: duplicate architecture " + e.Name)
	}
	registry[e.Name] = e
}

// Lookup returns the registered architecture with the given name.
func Lookup(name string) (Entry, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	e, ok := registry[name]
	return e, ok
}

// Entries returns all registered architectures sorted by family and name.
func Entries() []Entry {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]Entry, 0, len(registry))
	for _, e := range registry {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Family != out[j].Family {
			return out[i].Family < out[j].Family
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Build constructs the network described by s with weights drawn from seed.
// Unknown architectures and shape or option errors in the spec are
// returned, never panicked.
func Build(s Spec, seed uint64) (Classifier, error) {
	return build(s, rand.New(rand.NewPCG(seed, 0x2d)))
}

// BuildShapes constructs the network described by s without drawing its
// weights (they stay zero): for counting parameters of large architectures
// quickly. Such a network must be filled from a checkpoint before its
// outputs mean anything.
func BuildShapes(s Spec) (Classifier, error) { return build(s, nil) }

func build(s Spec, rng *rand.Rand) (c Classifier, err error) {
	e, ok := Lookup(s.Arch)
	if !ok {
		return nil, fmt.Errorf("net2d: unknown architecture %q", s.Arch)
	}
	if s.InChannels < 1 || s.Classes < 1 {
		return nil, fmt.Errorf("net2d: %s: in_channels %d and classes %d must be positive", s.Arch, s.InChannels, s.Classes)
	}
	var berr error
	err = tensor.Catch(func() { c, berr = e.Build(s, rng) })
	if err == nil {
		err = berr
	}
	if err != nil {
		return nil, fmt.Errorf("net2d: build %s: %w", s.Arch, err)
	}
	return c, nil
}

// DecodeConfig unmarshals s.Config into cfg (a pointer to a family's Config
// struct, pre-filled with defaults); an empty config leaves cfg unchanged.
// Unknown fields are an error.
func DecodeConfig(s Spec, cfg any) error {
	if len(s.Config) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(s.Config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("net2d: %s config: %w", s.Arch, err)
	}
	return nil
}

// Forward runs c on x (N×C×H×W) and returns the logits N×K:
// Head(Features(x, nil)).
func Forward(c Classifier, x *tensor.Tensor) *tensor.Tensor { return c.Head(c.Features(x, nil)) }

// Run is Forward with shape errors (a wrong channel count, an input size
// the network cannot take) returned instead of panicked.
func Run(c Classifier, x *tensor.Tensor) (y *tensor.Tensor, err error) {
	if x == nil || x.Dim() != 4 {
		var shape []int
		if x != nil {
			shape = x.Shape()
		}
		return nil, fmt.Errorf("net2d: %s: input of shape %v (want N×C×H×W)", c.Spec().Arch, shape)
	}
	err = tensor.Catch(func() { y = Forward(c, x) })
	if err != nil {
		return nil, fmt.Errorf("net2d: %s: %w", c.Spec().Arch, err)
	}
	return y, nil
}

// SaveCheckpoint writes c's state dict and its Spec (under
// net3d.MetaSpec, plus extra metadata) to path as safetensors.
func SaveCheckpoint(path string, c Classifier, meta map[string]string) error {
	spec, err := json.Marshal(c.Spec())
	if err != nil {
		return fmt.Errorf("net2d: save %s: %w", path, err)
	}
	all := map[string]string{net3d.MetaSpec: string(spec)}
	for k, v := range meta {
		all[k] = v
	}
	if err := nn.Save(path, c, all); err != nil {
		return fmt.Errorf("net2d: save %s: %w", path, err)
	}
	return nil
}

// LoadCheckpoint rebuilds the network described by a checkpoint's spec and
// loads its weights strictly. It returns the network (in training mode, as
// built) and the checkpoint's metadata.
func LoadCheckpoint(path string) (Classifier, map[string]string, error) {
	state, meta, err := nn.ReadTensors(path)
	if err != nil {
		return nil, nil, fmt.Errorf("net2d: %w", err)
	}
	raw, ok := meta[net3d.MetaSpec]
	if !ok {
		return nil, nil, fmt.Errorf("net2d: %s: no %s metadata: not a ctlens checkpoint", path, net3d.MetaSpec)
	}
	var spec Spec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return nil, nil, fmt.Errorf("net2d: %s: %s: %w", path, net3d.MetaSpec, err)
	}
	c, err := BuildShapes(spec)
	if err != nil {
		return nil, nil, fmt.Errorf("net2d: %s: %w", path, err)
	}
	if _, err := nn.LoadState(state, c, nn.LoadOpts{Strict: true}); err != nil {
		return nil, nil, fmt.Errorf("net2d: %s: %w", path, err)
	}
	return c, meta, nil
}

// callTap applies tap to a layer output when tap is set.
func callTap(tap Tap, layer string, out *tensor.Tensor) *tensor.Tensor {
	if tap == nil {
		return out
	}
	return tap(layer, out)
}

// checkInput panics with a *tensor.ShapeError unless x is N×in×H×W.
func checkInput(op string, x *tensor.Tensor, in int) {
	if x.Dim() != 4 || x.Size(1) != in {
		panic(&tensor.ShapeError{Op: op, Msg: fmt.Sprintf("input of shape %v: want N×%d×H×W", x.Shape(), in)})
	}
}

// mustJSON marshals a config struct (which cannot fail for the plain
// structs of this package).
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
