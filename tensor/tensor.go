// Package tensor provides contiguous float32 N-D tensors, the kernels that
// compute on them (elementwise, reductions, matrix products, convolution,
// pooling, normalisation, interpolation, losses) and reverse-mode automatic
// differentiation over all of them.
//
// Layout is row-major and, for images and volumes, channels-first as in
// PyTorch: N×C×L, N×C×H×W, N×C×D×H×W.
//
// Shape errors inside an op are programming errors of the caller; they are
// raised as a panic carrying a *ShapeError, which Catch turns back into an
// ordinary error at an API boundary (a model's forward pass, a loader).
//
// Gradients are recorded by data: an op's result records how to propagate
// gradients when any of its inputs requires them. A model whose parameters do
// not require gradients therefore runs with no recording cost.
package tensor

import (
	"fmt"
	"strings"
)

// Tensor is a contiguous float32 N-D array with an optional autograd node.
type Tensor struct {
	shape []int
	data  []float32

	requiresGrad bool
	retainGrad   bool
	grad         *Tensor

	// parents and backward form this tensor's autograd node: backward
	// receives the gradient of the result and accumulates into the parents.
	parents  []*Tensor
	backward func(g *Tensor)
}

// New returns a tensor with the given shape that uses data as storage.
// It panics with a *ShapeError if len(data) is not the product of shape.
func New(data []float32, shape ...int) *Tensor {
	n := checkShape(shape)
	if len(data) != n {
		panic(&ShapeError{Op: "New", Msg: fmt.Sprintf("%d values for shape %v (want %d)", len(data), shape, n)})
	}
	return &Tensor{shape: append([]int(nil), shape...), data: data}
}

// Zeros returns a tensor of the given shape filled with 0.
func Zeros(shape ...int) *Tensor {
	n := checkShape(shape)
	return &Tensor{shape: append([]int(nil), shape...), data: make([]float32, n)}
}

// Ones returns a tensor of the given shape filled with 1.
func Ones(shape ...int) *Tensor { return Full(1, shape...) }

// Full returns a tensor of the given shape filled with v.
func Full(v float32, shape ...int) *Tensor {
	t := Zeros(shape...)
	for i := range t.data {
		t.data[i] = v
	}
	return t
}

// Scalar returns a 0-dimensional tensor holding v.
func Scalar(v float32) *Tensor { return &Tensor{shape: []int{}, data: []float32{v}} }

// ZerosLike returns a zero tensor with t's shape.
func ZerosLike(t *Tensor) *Tensor { return Zeros(t.shape...) }

func checkShape(shape []int) int {
	n := 1
	for _, s := range shape {
		if s < 0 {
			panic(&ShapeError{Op: "New", Msg: fmt.Sprintf("negative dimension in shape %v", shape)})
		}
		n *= s
	}
	return n
}

// Shape returns the tensor's dimensions. The caller must not modify it.
func (t *Tensor) Shape() []int { return t.shape }

// Dim returns the number of dimensions.
func (t *Tensor) Dim() int { return len(t.shape) }

// Size returns dimension i; negative i counts from the end.
func (t *Tensor) Size(i int) int {
	if i < 0 {
		i += len(t.shape)
	}
	return t.shape[i]
}

// Len returns the number of elements.
func (t *Tensor) Len() int { return len(t.data) }

// Data returns the underlying storage in row-major order. Writing to it
// changes the tensor (and any view that shares it).
func (t *Tensor) Data() []float32 { return t.data }

// Item returns the only element of a one-element tensor.
func (t *Tensor) Item() float32 {
	if len(t.data) != 1 {
		panic(&ShapeError{Op: "Item", Msg: fmt.Sprintf("tensor of shape %v has %d elements", t.shape, len(t.data))})
	}
	return t.data[0]
}

// At returns the element at the given index.
func (t *Tensor) At(idx ...int) float32 { return t.data[t.offset(idx)] }

// Set stores v at the given index.
func (t *Tensor) Set(v float32, idx ...int) { t.data[t.offset(idx)] = v }

func (t *Tensor) offset(idx []int) int {
	if len(idx) != len(t.shape) {
		panic(&ShapeError{Op: "At", Msg: fmt.Sprintf("index %v for shape %v", idx, t.shape)})
	}
	off := 0
	for i, x := range idx {
		if x < 0 || x >= t.shape[i] {
			panic(&ShapeError{Op: "At", Msg: fmt.Sprintf("index %v out of range for shape %v", idx, t.shape)})
		}
		off = off*t.shape[i] + x
	}
	return off
}

// Clone returns a copy of t's values and shape, detached from the graph.
func (t *Tensor) Clone() *Tensor {
	return &Tensor{shape: append([]int(nil), t.shape...), data: append([]float32(nil), t.data...)}
}

// Detach returns a tensor sharing t's storage that is not part of any graph
// and does not require gradients.
func (t *Tensor) Detach() *Tensor {
	return &Tensor{shape: t.shape, data: t.data}
}

// String formats the shape and, for small tensors, the values.
func (t *Tensor) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Tensor%v", t.shape)
	if len(t.data) <= 16 {
		fmt.Fprintf(&b, "%v", t.data)
	}
	return b.String()
}

// Strides returns the row-major strides of shape.
func Strides(shape []int) []int {
	s := make([]int, len(shape))
	acc := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = acc
		acc *= shape[i]
	}
	return s
}

// SameShape reports whether a and b have identical dimensions.
func SameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Numel returns the product of shape.
func Numel(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}
