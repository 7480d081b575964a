package tensor

// RequiresGrad reports whether gradients are computed for t.
func (t *Tensor) RequiresGrad() bool { return t.requiresGrad }

// SetRequiresGrad marks t as a leaf whose gradient is accumulated by
// Backward, and returns t.
func (t *Tensor) SetRequiresGrad(on bool) *Tensor {
	t.requiresGrad = on
	return t
}

// RetainGrad asks Backward to keep the gradient of a non-leaf tensor (an
// activation) so that Grad returns it afterwards. It returns t.
func (t *Tensor) RetainGrad() *Tensor {
	t.retainGrad = true
	return t
}

// Grad returns the accumulated gradient of t, or nil.
func (t *Tensor) Grad() *Tensor { return t.grad }

// SetGrad replaces t's accumulated gradient (nil clears it).
func (t *Tensor) SetGrad(g *Tensor) { t.grad = g }

// ZeroGrad clears the accumulated gradient.
func (t *Tensor) ZeroGrad() { t.grad = nil }

// IsLeaf reports whether t was not produced by a recorded op.
func (t *Tensor) IsLeaf() bool { return t.backward == nil }

// record attaches an autograd node to out when any parent requires
// gradients. back receives d(loss)/d(out) and must call accumulate on each
// parent that requires gradients.
func record(out *Tensor, back func(g *Tensor), parents ...*Tensor) *Tensor {
	for _, p := range parents {
		if p != nil && p.requiresGrad {
			out.requiresGrad = true
			out.parents = parents
			out.backward = back
			return out
		}
	}
	return out
}

// accumulate adds g into p's gradient if p requires gradients. g is copied,
// so a backward function may pass the same tensor to several parents.
func accumulate(p *Tensor, g *Tensor) {
	if p == nil || !p.requiresGrad {
		return
	}
	if !SameShape(p.shape, g.shape) {
		shapeErr("backward", "gradient of shape %v for tensor of shape %v", g.shape, p.shape)
	}
	if p.grad == nil {
		p.grad = &Tensor{shape: p.shape, data: append([]float32(nil), g.data...)}
		return
	}
	dst := p.grad.data
	for i, v := range g.data {
		dst[i] += v
	}
}

// Backward computes the gradient of t with respect to every tensor in its
// graph that requires gradients, accumulating into their Grad. t must hold a
// single element (a loss); use BackwardWith for other seeds.
func (t *Tensor) Backward() {
	if len(t.data) != 1 {
		shapeErr("Backward", "called on tensor of shape %v; want a single element", t.shape)
	}
	t.BackwardWith(Ones(t.shape...))
}

// BackwardWith runs reverse-mode differentiation from t with seed gradient
// seed (same shape as t). Gradients of leaves and of tensors marked with
// RetainGrad are kept; the graph is released afterwards.
func (t *Tensor) BackwardWith(seed *Tensor) {
	if !SameShape(seed.shape, t.shape) {
		shapeErr("BackwardWith", "seed of shape %v for tensor of shape %v", seed.shape, t.shape)
	}
	if !t.requiresGrad {
		shapeErr("Backward", "tensor of shape %v does not require gradients", t.shape)
	}
	order := topo(t)
	accumulate(t, seed)
	for i := len(order) - 1; i >= 0; i-- {
		n := order[i]
		if n.backward == nil {
			continue
		}
		g := n.grad
		if g != nil {
			n.backward(g)
		}
		if !n.retainGrad {
			n.grad = nil
		}
		n.backward = nil
		n.parents = nil
	}
}

// topo returns the tensors reachable from root in topological order
// (parents before children), iteratively so that deep graphs do not recurse.
func topo(root *Tensor) []*Tensor {
	var order []*Tensor
	visited := map[*Tensor]bool{}
	type frame struct {
		t *Tensor
		i int
	}
	stack := []frame{{root, 0}}
	visited[root] = true
	for len(stack) > 0 {
		f := &stack[len(stack)-1]
		if f.i < len(f.t.parents) {
			p := f.t.parents[f.i]
			f.i++
			if p != nil && p.requiresGrad && !visited[p] {
				visited[p] = true
				stack = append(stack, frame{p, 0})
			}
			continue
		}
		order = append(order, f.t)
		stack = stack[:len(stack)-1]
	}
	return order
}
