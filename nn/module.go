// Package nn builds neural networks on package tensor in the style of
// torch.nn: modules that own named parameters, buffers and child modules,
// layers with PyTorch's default initialisation, initialisers, optimizers,
// learning-rate schedules, gradient clipping, an exponential moving average
// of weights, and safetensors checkpoints.
//
// # Modules and names
//
// A module is any type that embeds Base and has a Forward method. Its
// constructor registers each parameter, buffer and child under the exact
// attribute name PyTorch uses, so that the dotted path of a tensor is its
// PyTorch state-dict key:
//
//	type Block struct {
//		nn.Base
//		Conv1 *nn.Conv
//		BN1   *nn.BatchNorm
//	}
//
//	func NewBlock(rng *rand.Rand, in, out int) *Block {
//		b := &Block{}
//		b.Conv1 = nn.Child(b, "conv1", nn.NewConv(rng, in, out, []int{3, 3, 3}, nn.ConvOpts{Padding: []int{1}, NoBias: true}))
//		b.BN1 = nn.Child(b, "bn1", nn.NewBatchNorm(out, nn.BatchNormOpts{}))
//		return b
//	}
//
//	func (b *Block) Forward(x *tensor.Tensor) *tensor.Tensor {
//		return tensor.ReLU(b.BN1.Forward(b.Conv1.Forward(x)))
//	}
//
// Registered under "layer1.0" of a network, this block yields the keys
// layer1.0.conv1.weight, layer1.0.bn1.weight, layer1.0.bn1.bias,
// layer1.0.bn1.running_mean, layer1.0.bn1.running_var and
// layer1.0.bn1.num_batches_tracked, in that order (as PyTorch's
// state_dict: a module's own parameters, then its own buffers, then its
// children in registration order).
//
// # Options
//
// The zero value of every options struct selects PyTorch's defaults (for
// example ConvOpts{} is stride 1, padding 0, dilation 1, one group, with
// bias; BatchNormOpts{} is eps 1e-5, momentum 0.1, affine, tracking running
// statistics).
//
// # Errors
//
// Invalid constructor arguments and shape misuse in Forward panic with a
// *tensor.ShapeError, as inside package tensor; Run (and tensor.Catch)
// turn that into an ordinary error at an API boundary. Checkpoint loading and
// optimizer state restoring return errors.
//
// # Training mode and gradients
//
// Modules start in training mode, as in PyTorch; SetTraining switches a whole
// tree. Parameters are created requiring gradients; SetRequiresGrad(m, false)
// freezes a model so that its forward pass records no autograd graph.
package nn

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/ctlens/ctlens/tensor"
)

// Module is a node of a network: it maps an input tensor to an output tensor
// and owns named parameters, buffers and child modules. Implement it by
// embedding Base (which supplies the unexported method) and defining
// Forward.
type Module interface {
	// Forward computes the module's output for input x. Shape misuse panics
	// with a *tensor.ShapeError; see Run.
	Forward(x *tensor.Tensor) *tensor.Tensor
	base() *Base
}

// Named is a tensor with its dotted state-dict name, e.g.
// "layer1.0.conv1.weight".
type Named struct {
	Name   string
	Tensor *tensor.Tensor
}

// NamedModule is a module with its dotted path from the root ("" for the
// root itself).
type NamedModule struct {
	Name   string
	Module Module
}

// Base holds a module's registered parameters, buffers and children, in
// registration order, and its training flag. Its zero value is an empty
// module in training mode. Embed it in every module type.
type Base struct {
	eval     bool
	params   []Named
	buffers  []Named
	children []NamedModule
}

func (b *Base) base() *Base { return b }

// Training reports whether the module is in training mode (the default).
func (b *Base) Training() bool { return !b.eval }

// Param registers t as a parameter called name (a PyTorch attribute name such
// as "weight"), marks it as requiring gradients and returns it.
func (b *Base) Param(name string, t *tensor.Tensor) *tensor.Tensor {
	b.checkName("Param", name, t == nil)
	t.SetRequiresGrad(true)
	b.params = append(b.params, Named{name, t})
	return t
}

// Buffer registers t as a persistent buffer (state saved in the state dict
// but not trained, e.g. "running_mean") called name and returns it.
func (b *Base) Buffer(name string, t *tensor.Tensor) *tensor.Tensor {
	b.checkName("Buffer", name, t == nil)
	b.buffers = append(b.buffers, Named{name, t})
	return t
}

// AddChild registers m as a child module called name. See Child for the
// typed form.
func (b *Base) AddChild(name string, m Module) {
	b.checkName("AddChild", name, isNil(m))
	b.children = append(b.children, NamedModule{name, m})
}

// Params returns the module's own parameters (not its children's), in
// registration order, with their local names.
func (b *Base) Params() []Named { return append([]Named(nil), b.params...) }

// Buffers returns the module's own buffers, in registration order, with
// their local names.
func (b *Base) Buffers() []Named { return append([]Named(nil), b.buffers...) }

// Children returns the module's direct children in registration order.
func (b *Base) Children() []NamedModule { return append([]NamedModule(nil), b.children...) }

func (b *Base) checkName(op, name string, isNil bool) {
	switch {
	case name == "":
		shapePanic("nn."+op, "empty name")
	case strings.Contains(name, "."):
		shapePanic("nn."+op, "name %q contains a dot", name)
	case isNil:
		shapePanic("nn."+op, "nil value for %q", name)
	}
	for _, p := range b.params {
		if p.Name == name {
			shapePanic("nn."+op, "name %q already registered as a parameter", name)
		}
	}
	for _, p := range b.buffers {
		if p.Name == name {
			shapePanic("nn."+op, "name %q already registered as a buffer", name)
		}
	}
	for _, c := range b.children {
		if c.Name == name {
			shapePanic("nn."+op, "name %q already registered as a child module", name)
		}
	}
}

func isNil(m Module) bool {
	if m == nil {
		return true
	}
	v := reflect.ValueOf(m)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

func shapePanic(op, format string, args ...any) {
	panic(&tensor.ShapeError{Op: op, Msg: fmt.Sprintf(format, args...)})
}

// Child registers m as a child of parent called name and returns m, keeping
// its concrete type: b.Conv1 = nn.Child(b, "conv1", nn.NewConv(...)).
func Child[M Module](parent Module, name string, m M) M {
	parent.base().AddChild(name, m)
	return m
}

// NamedModules returns m and all its descendants in depth-first
// registration order, each with its dotted path ("" for m itself). A module
// registered twice appears once, under its first path.
func NamedModules(m Module) []NamedModule {
	var out []NamedModule
	seen := map[*Base]bool{}
	var walk func(prefix string, m Module)
	walk = func(prefix string, m Module) {
		b := m.base()
		if seen[b] {
			return
		}
		seen[b] = true
		out = append(out, NamedModule{prefix, m})
		for _, c := range b.children {
			walk(join(prefix, c.Name), c.Module)
		}
	}
	walk("", m)
	return out
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// walkTensors visits every registered parameter (params true) or buffer of
// the tree in state-dict order, with full names, including repeats of shared
// modules and tensors.
func walkTensors(m Module, params, buffers bool, visit func(name string, t *tensor.Tensor)) {
	var walk func(prefix string, m Module)
	walk = func(prefix string, m Module) {
		b := m.base()
		if params {
			for _, p := range b.params {
				visit(join(prefix, p.Name), p.Tensor)
			}
		}
		if buffers {
			for _, p := range b.buffers {
				visit(join(prefix, p.Name), p.Tensor)
			}
		}
		for _, c := range b.children {
			walk(join(prefix, c.Name), c.Module)
		}
	}
	walk("", m)
}

func dedup(m Module, params, buffers bool) []Named {
	var out []Named
	seen := map[*tensor.Tensor]bool{}
	walkTensors(m, params, buffers, func(name string, t *tensor.Tensor) {
		if !seen[t] {
			seen[t] = true
			out = append(out, Named{name, t})
		}
	})
	return out
}

// NamedParameters returns every parameter of m's tree with its dotted name,
// in PyTorch's named_parameters order; a tensor shared by several modules
// appears once, under its first name.
func NamedParameters(m Module) []Named { return dedup(m, true, false) }

// NamedBuffers returns every buffer of m's tree with its dotted name, in
// PyTorch's named_buffers order, without repeats.
func NamedBuffers(m Module) []Named { return dedup(m, false, true) }

// StateDict returns the parameters and buffers of m's tree under their
// state-dict keys, in PyTorch's state_dict order: for each module (depth
// first, in registration order) its parameters, then its buffers. The
// tensors are m's own (not copies). A shared tensor appears under each of
// its names, as in PyTorch.
func StateDict(m Module) []Named {
	var out []Named
	var walk func(prefix string, m Module)
	walk = func(prefix string, m Module) {
		b := m.base()
		for _, p := range b.params {
			out = append(out, Named{join(prefix, p.Name), p.Tensor})
		}
		for _, p := range b.buffers {
			out = append(out, Named{join(prefix, p.Name), p.Tensor})
		}
		for _, c := range b.children {
			walk(join(prefix, c.Name), c.Module)
		}
	}
	walk("", m)
	return out
}

// SetTraining puts m and all its descendants in training mode (on) or
// evaluation mode (off), as torch.nn.Module.train(on).
func SetTraining(m Module, on bool) {
	for _, nm := range NamedModules(m) {
		nm.Module.base().eval = !on
	}
}

// SetRequiresGrad marks every parameter of m's tree as requiring gradients
// (on) or not. With all parameters frozen, a forward pass on an input that
// does not require gradients records no autograd graph.
func SetRequiresGrad(m Module, on bool) {
	for _, p := range NamedParameters(m) {
		p.Tensor.SetRequiresGrad(on)
	}
}

// NumParams returns the number of parameter elements of m's tree, each
// shared tensor counted once: sum(p.numel() for p in m.parameters()).
func NumParams(m Module) int {
	n := 0
	for _, p := range NamedParameters(m) {
		n += p.Tensor.Len()
	}
	return n
}

// Run returns m.Forward(x), converting a *tensor.ShapeError panic raised
// inside it into an error: the safe entry point for inputs that come from
// outside the program.
func Run(m Module, x *tensor.Tensor) (y *tensor.Tensor, err error) {
	err = tensor.Catch(func() { y = m.Forward(x) })
	if err != nil {
		return nil, fmt.Errorf("nn: forward %T: %w", m, err)
	}
	return y, nil
}

// EvalFrozen puts m in evaluation mode with every parameter frozen (no
// gradient) and returns the function that restores each module's mode and
// each parameter's flag as they were.
func EvalFrozen(m Module) (restore func()) {
	mods := NamedModules(m)
	training := make([]bool, len(mods))
	for i, nm := range mods {
		if t, ok := nm.Module.(interface{ Training() bool }); ok {
			training[i] = t.Training()
		}
	}
	params := NamedParameters(m)
	req := make([]bool, len(params))
	for i, p := range params {
		req[i] = p.Tensor.RequiresGrad()
	}
	SetTraining(m, false)
	SetRequiresGrad(m, false)
	return func() {
		// NamedModules lists a parent before its children, so setting each
		// subtree in that order leaves every module with its own flag.
		for i, nm := range mods {
			SetTraining(nm.Module, training[i])
		}
		for i, p := range params {
			p.Tensor.SetRequiresGrad(req[i])
		}
	}
}
