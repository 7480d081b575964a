// Package net3d holds the 3D classification networks of ctlens — ResNet3D
// (Hara and MedicalNet layouts), DenseNet3D (MONAI and Hara layouts),
// torchvision's r3d_18, mc3_18 and r2plus1d_18, and CovidNet3D built from an
// architecture spec — with parameter names equal to their PyTorch state-dict
// keys, and the registry of architectures behind `ctlens models`.
//
// Every network maps a batch N×C×D×H×W to class logits N×K and implements
// Classifier, which exposes what class-activation maps need.
package net3d

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// Tap observes, and may replace, the output of a named layer during a
// forward pass. It returns the tensor the network continues with: the same
// one to observe it, or e.g. out.Detach().SetRequiresGrad(true) to take
// gradients with respect to that activation (Grad-CAM).
type Tap func(layer string, out *tensor.Tensor) *tensor.Tensor

// Classifier is a 3D network with a global-pool + linear head.
type Classifier interface {
	nn.Module
	// Features runs the network up to (and including) the last layer before
	// global pooling and returns that feature map, N×C×d×h×w. tap (may be
	// nil) is called with the output of each layer named by TapLayers, in
	// order; the last of them is the returned feature map.
	Features(x *tensor.Tensor, tap Tap) *tensor.Tensor
	// Head maps a feature map from Features to logits N×K: global average
	// pooling, flattening, dropout (training only) and the final linear layer.
	Head(features *tensor.Tensor) *tensor.Tensor
	// Linear returns the final linear layer (weight K×C, bias K or nil).
	Linear() *nn.Linear
	// TapLayers lists the layer names Features reports to a Tap, in forward
	// order (dotted state-dict prefixes such as "layer3" or "features.denseblock2").
	TapLayers() []string
	// Spec returns the architecture description the network was built from.
	Spec() Spec
}

// Spec names an architecture and its hyperparameters. It is stored inside
// checkpoints so that a network can be rebuilt before its weights load.
type Spec struct {
	// Arch is the registry name, e.g. "resnet3d-101", "mc3_18", "covidnet3d".
	Arch string `json:"arch"`
	// InChannels is the number of input channels (1 for CT, 3 for RGB-replicated slices).
	InChannels int `json:"in_channels"`
	// Classes is the number of output classes.
	Classes int `json:"classes"`
	// Config holds family-specific options as JSON (see each family's
	// Config type); empty means the family's defaults.
	Config json.RawMessage `json:"config,omitempty"`
}

// Entry is a registered architecture.
type Entry struct {
	Name        string
	Family      string
	Description string
	// DefaultSpec is the spec `ctlens models` describes (and a user starts from).
	DefaultSpec Spec
	// Build constructs a network with weights initialised as in the reference
	// implementation, drawing from rng.
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
		panic("net3d: duplicate architecture " + e.Name)
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
// Shape or option errors in the spec are returned, never panicked.
func Build(s Spec, seed uint64) (c Classifier, err error) {
	return build(s, rand.New(rand.NewPCG(seed, 0x3d)))
}

// build constructs s with weights drawn from rng (none when rng is nil).
func build(s Spec, rng *rand.Rand) (c Classifier, err error) {
	e, ok := Lookup(s.Arch)
	if !ok {
		return nil, fmt.Errorf("net3d: unknown architecture %q (see `ctlens models`)", s.Arch)
	}
	if s.InChannels < 1 || s.Classes < 1 {
		return nil, fmt.Errorf("net3d: %s: in_channels %d and classes %d must be positive", s.Arch, s.InChannels, s.Classes)
	}
	var berr error
	err = tensor.Catch(func() { c, berr = e.Build(s, rng) })
	if err == nil {
		err = berr
	}
	if err != nil {
		return nil, fmt.Errorf("net3d: build %s: %w", s.Arch, err)
	}
	return c, nil
}

// BuildShapes constructs the network described by s without drawing its
// weights (they stay zero, untouched memory): for counting parameters and
// MACs of large architectures quickly. Such a network must be filled from a
// checkpoint before its outputs mean anything.
func BuildShapes(s Spec) (Classifier, error) { return build(s, nil) }

// DecodeConfig unmarshals s.Config into cfg (a pointer to a family's Config
// struct, pre-filled with defaults); empty config leaves cfg unchanged.
// Unknown fields are an error.
func DecodeConfig(s Spec, cfg any) error {
	if len(s.Config) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(s.Config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("net3d: %s config: %w", s.Arch, err)
	}
	return nil
}

// Forward runs c on x: Head(Features(x, nil)).
func Forward(c Classifier, x *tensor.Tensor) *tensor.Tensor { return c.Head(c.Features(x, nil)) }

// callTap applies tap to a layer output when tap is set.
func callTap(tap Tap, layer string, out *tensor.Tensor) *tensor.Tensor {
	if tap == nil {
		return out
	}
	return tap(layer, out)
}

// GlobalPoolLinear is the common head: adaptive average pooling to 1, flatten,
// optional dropout (active in training), linear.
func GlobalPoolLinear(f *tensor.Tensor, drop *nn.Dropout, fc *nn.Linear) *tensor.Tensor {
	n := f.Size(0)
	x := tensor.Reshape(tensor.Mean(f, spatialAxes(f), false), n, -1)
	if drop != nil {
		x = drop.Forward(x)
	}
	return fc.Forward(x)
}

// DefaultPoolR is the log-sum-exp sharpness of a CovidNet3D "lse" head
// whose config leaves pool_r at 0.
const DefaultPoolR = 5

// LSEPoolLinear is a head that scores every position and pools the scores:
// with s_c(p) = w_c·dropout(f(p)) + b_c the linear classifier at position p
// of the P positions of f (N×C×spatial…), the logit of class c is
//
//	z_c = (1/r) · log((1/P) · Σ_p exp(r · s_c(p))),
//
// a smooth maximum between the mean (r → 0) and the maximum (r → ∞) of
// the score map (Pinheiro and Collobert 2015). Because the pooling weights
// ∂z_c/∂s_c(p) sum to 1, as average pooling's do, Grad-CAM at f is still
// proportional to ReLU(CAM), and the CAM is the score map minus b_c.
func LSEPoolLinear(f *tensor.Tensor, drop *nn.Dropout, fc *nn.Linear, r float64) *tensor.Tensor {
	n, c := f.Size(0), f.Size(1)
	x := tensor.Permute(tensor.Reshape(f, n, c, -1), 0, 2, 1) // N×P×C
	if drop != nil {
		x = drop.Forward(x)
	}
	s := tensor.MulScalar(fc.Forward(x), float32(r)) // N×P×K, r·s
	// log-mean-exp along P, shifted by the (constant) maximum for range.
	m := tensor.Max(s, 1, true).Detach()
	lme := tensor.Add(tensor.Log(tensor.Mean(tensor.Exp(tensor.Sub(s, m)), []int{1}, true)), m)
	return tensor.MulScalar(tensor.Reshape(lme, n, -1), float32(1/r))
}

// spatialAxes returns the axes after N and C.
func spatialAxes(t *tensor.Tensor) []int {
	ax := make([]int, 0, t.Dim()-2)
	for i := 2; i < t.Dim(); i++ {
		ax = append(ax, i)
	}
	return ax
}
