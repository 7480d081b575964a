package net3d

import (
	"fmt"
	"math/rand/v2"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// Workload is one benchmark case of a registered architecture: an
// inference forward pass (evaluation mode, no gradients, as PyTorch's
// model.eval() under torch.no_grad()) or a training step (training mode,
// forward, mean cross-entropy against labels n mod classes, backward, SGD
// with learning rate 0.01 and momentum 0.9) on a fixed random input. It is
// what `ctlens bench` and the package benchmarks time, and what
// testdata/pytorch/bench_peer.py repeats in PyTorch.
type Workload struct {
	Model Classifier
	Input *tensor.Tensor
	Train bool

	opt    *nn.SGD
	target []int
}

// NewWorkload builds arch's default spec with in channels shape[1] (weights
// drawn from seed), an input of shape N×C×D×H×W with values N(0, 1), and
// for a training workload the optimizer. Errors name the architecture.
func NewWorkload(arch string, shape []int, train bool, seed uint64) (*Workload, error) {
	e, ok := Lookup(arch)
	if !ok {
		return nil, fmt.Errorf("net3d: bench: unknown architecture %q (see `ctlens models`)", arch)
	}
	if len(shape) != 5 {
		return nil, fmt.Errorf("net3d: bench %s: input shape %v: want N×C×D×H×W", arch, shape)
	}
	for _, s := range shape {
		if s < 1 {
			return nil, fmt.Errorf("net3d: bench %s: input shape %v: want positive sizes", arch, shape)
		}
	}
	spec := e.DefaultSpec
	spec.InChannels = shape[1]
	m, err := Build(spec, seed)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0xbe7c))
	x := tensor.Zeros(shape...)
	for i := range x.Data() {
		x.Data()[i] = float32(rng.NormFloat64())
	}
	w := &Workload{Model: m, Input: x, Train: train}
	if train {
		nn.SetTraining(m, true)
		nn.SetRequiresGrad(m, true)
		w.opt, err = nn.NewSGD(nn.NamedParameters(m), nn.SGDConfig{LR: 0.01, Momentum: 0.9})
		if err != nil {
			return nil, fmt.Errorf("net3d: bench %s: %w", arch, err)
		}
		w.target = make([]int, shape[0])
		for i := range w.target {
			w.target[i] = i % spec.Classes
		}
	} else {
		nn.SetTraining(m, false)
		nn.SetRequiresGrad(m, false)
	}
	return w, nil
}

// Run performs one forward pass (inference) or one training step. Shape
// errors are returned, not panicked.
func (w *Workload) Run() error {
	return tensor.Catch(func() {
		if !w.Train {
			w.Model.Forward(w.Input)
			return
		}
		for _, p := range nn.NamedParameters(w.Model) {
			p.Tensor.ZeroGrad()
		}
		loss := tensor.CrossEntropy(w.Model.Forward(w.Input), w.target, tensor.CEOpts{})
		loss.Backward()
		w.opt.Step()
	})
}

// MACs returns the multiply-accumulates of one forward pass on the input
// (tensor.CountMACs over an evaluation-mode, gradient-free forward; the
// model's mode and gradient flags are restored afterwards). A training step
// does about three times as many: forward, input gradient, weight gradient.
func (w *Workload) MACs() (int64, error) {
	var n int64
	err := tensor.Catch(func() {
		if w.Train {
			nn.SetTraining(w.Model, false)
			nn.SetRequiresGrad(w.Model, false)
			defer nn.SetTraining(w.Model, true)
			defer nn.SetRequiresGrad(w.Model, true)
		}
		n = tensor.CountMACs(func() { w.Model.Forward(w.Input) })
	})
	return n, err
}
