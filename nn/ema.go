package nn

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ctlens/ctlens/tensor"
)

// EMAOpts configures NewEMA.
type EMAOpts struct {
	// Warmup lowers the decay of early updates to min(decay, (1+n)/(10+n)),
	// n the number of earlier updates (TensorFlow's num_updates form).
	Warmup bool
	// CopyBuffers copies buffers (BatchNorm running statistics) instead of
	// averaging them.
	CopyBuffers bool
}

// EMA keeps an exponential moving average ("shadow") of a module's
// parameters and buffers: after each optimizer step, Update sets
//
//	shadow ← d·shadow + (1 − d)·current
//
// for every parameter and floating buffer (buffers named
// "num_batches_tracked" are always copied). Apply swaps the averages into
// the module for evaluation and Restore swaps the trained values back.
type EMA struct {
	Decay   float64
	opts    EMAOpts
	names   []string         // state-dict names, with repeats of shared tensors
	slot    []int            // names[i] → index into live/shadow
	live    []*tensor.Tensor // unique tensors of the module
	average []bool           // averaged (else copied)
	shadow  [][]float32
	backup  [][]float32 // trained values while applied
	updates int
}

// NewEMA returns an EMA of m with the given decay (e.g. 0.9998), its shadow
// initialised to m's current values.
func NewEMA(m Module, decay float64, o EMAOpts) *EMA {
	e := &EMA{Decay: decay, opts: o}
	index := map[*tensor.Tensor]int{}
	isParam := map[*tensor.Tensor]bool{}
	for _, p := range NamedParameters(m) {
		isParam[p.Tensor] = true
	}
	for _, s := range StateDict(m) {
		i, ok := index[s.Tensor]
		if !ok {
			i = len(e.live)
			index[s.Tensor] = i
			e.live = append(e.live, s.Tensor)
			avg := isParam[s.Tensor] || (!o.CopyBuffers && !isCounter(s.Name))
			e.average = append(e.average, avg)
			e.shadow = append(e.shadow, append([]float32(nil), s.Tensor.Data()...))
		}
		e.names = append(e.names, s.Name)
		e.slot = append(e.slot, i)
	}
	return e
}

func isCounter(name string) bool {
	return name == "num_batches_tracked" || strings.HasSuffix(name, ".num_batches_tracked")
}

// Updates returns the number of Update calls so far (or as restored).
func (e *EMA) Updates() int { return e.updates }

// CurrentDecay returns the decay the next Update will use.
func (e *EMA) CurrentDecay() float64 {
	if e.opts.Warmup {
		n := float64(e.updates)
		return min(e.Decay, (1+n)/(10+n))
	}
	return e.Decay
}

// Update folds the module's current values into the average. It must not be
// called while the average is applied.
func (e *EMA) Update() {
	if e.backup != nil {
		panic("nn: EMA.Update while the average is applied; call Restore first")
	}
	d := e.CurrentDecay()
	for i, t := range e.live {
		src, dst := t.Data(), e.shadow[i]
		if !e.average[i] {
			copy(dst, src)
			continue
		}
		for j := range dst {
			dst[j] = float32(d*float64(dst[j]) + (1-d)*float64(src[j]))
		}
	}
	e.updates++
}

// Apply copies the averages into the module, keeping its trained values for
// Restore. Calling it again before Restore does nothing.
func (e *EMA) Apply() {
	if e.backup != nil {
		return
	}
	e.backup = make([][]float32, len(e.live))
	for i, t := range e.live {
		e.backup[i] = append([]float32(nil), t.Data()...)
		copy(t.Data(), e.shadow[i])
	}
}

// Restore copies the trained values saved by Apply back into the module.
// Without a preceding Apply it does nothing.
func (e *EMA) Restore() {
	if e.backup == nil {
		return
	}
	for i, t := range e.live {
		copy(t.Data(), e.backup[i])
	}
	e.backup = nil
}

// State returns copies of the averages under the module's state-dict keys,
// so that Save-ing them gives a checkpoint of the averaged model.
func (e *EMA) State() []Named {
	out := make([]Named, len(e.names))
	for k, name := range e.names {
		i := e.slot[k]
		out[k] = Named{name, copyTensor(e.shadow[i], e.live[i].Shape())}
	}
	return out
}

// LoadState restores averages saved by State and the update count (for
// warmup). Every key must be present with the module's shape; on error
// nothing is changed.
func (e *EMA) LoadState(state []Named, updates int) error {
	byName := make(map[string]*tensor.Tensor, len(state))
	for _, s := range state {
		byName[s.Name] = s.Tensor
	}
	shadow := make([][]float32, len(e.live))
	for k, name := range e.names {
		i := e.slot[k]
		t, ok := byName[name]
		if !ok {
			return fmt.Errorf("nn: EMA: load state: missing %s", name)
		}
		if t == nil || !tensor.SameShape(t.Shape(), e.live[i].Shape()) {
			return fmt.Errorf("nn: EMA: load state %s: shape %v, state has %s", name, e.live[i].Shape(), shapeString(t))
		}
		delete(byName, name)
		shadow[i] = append([]float32(nil), t.Data()...)
	}
	if len(byName) > 0 {
		return fmt.Errorf("nn: EMA: load state: unexpected %s", strings.Join(slices.Sorted(maps.Keys(byName)), ", "))
	}
	if updates < 0 {
		return fmt.Errorf("nn: EMA: load state: update count %d: want ≥ 0", updates)
	}
	e.shadow, e.updates = shadow, updates
	return nil
}
