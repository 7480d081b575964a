package net2d

import (
	"errors"
	"fmt"

	"github.com/ctlens/ctlens/tensor"
)

// ScaleConsistencyLoss returns ResFormer's scale-consistency term for the
// CLS features f₀ … f_{n−1} (each B×D) of one batch at n resolutions in
// descending order:
//
//	S = Σ_{i=1}^{n−1} SmoothL1_β=1( f_i, LN(sg(f_{i−1})) )
//
// where sg stops the gradient (the teacher is the next-higher resolution's
// detached feature) and LN normalises each row to zero mean and unit
// variance without affine parameters, eps 10⁻⁶ ("feature whitening";
// losses.py, distillation type smooth-l1). Gradients flow to f₁ … f_{n−1}
// only. Fewer than two features give 0.
func ScaleConsistencyLoss(feats []*tensor.Tensor) (loss *tensor.Tensor, err error) {
	if err := checkFeats(feats); err != nil {
		return nil, err
	}
	err = tensor.Catch(func() {
		loss = tensor.Scalar(0)
		for i := 1; i < len(feats); i++ {
			t := feats[i-1].Detach()
			teacher := tensor.LayerNorm(t, nil, nil, 1, 1e-6)
			loss = tensor.Add(loss, tensor.SmoothL1(feats[i], teacher, 1))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("net2d: scale-consistency loss: %w", err)
	}
	return loss, nil
}

func checkFeats(feats []*tensor.Tensor) error {
	for i, f := range feats {
		if f == nil || f.Dim() != 2 {
			var shape []int
			if f != nil {
				shape = f.Shape()
			}
			return fmt.Errorf("net2d: scale-consistency loss: feature %d of shape %v (want B×D)", i, shape)
		}
		if i > 0 && !tensor.SameShape(f.Shape(), feats[0].Shape()) {
			return fmt.Errorf("net2d: scale-consistency loss: feature %d of shape %v differs from feature 0's %v", i, f.Shape(), feats[0].Shape())
		}
	}
	return nil
}

// MultiResolutionLoss returns the loss of one multi-resolution training
// step (engine.py, mode "co"): with task_i the classification loss at
// resolution i (descending order) and f_i its CLS feature,
//
//	L = (1/n) Σ_i task_i + (α/n)·ScaleConsistencyLoss(f)
//
// that is the mean over resolutions of task_i + α·SmoothL1(f_i, LN(sg(f_{i−1}))),
// the highest resolution having no teacher.
func MultiResolutionLoss(task, feats []*tensor.Tensor, alpha float32) (loss *tensor.Tensor, err error) {
	n := len(task)
	if n == 0 || len(feats) != n {
		return nil, fmt.Errorf("net2d: multi-resolution loss: %d task losses and %d features (want the same positive number)", n, len(feats))
	}
	for i, t := range task {
		if t == nil || t.Len() != 1 {
			return nil, fmt.Errorf("net2d: multi-resolution loss: task loss %d is not a scalar", i)
		}
	}
	s, err := ScaleConsistencyLoss(feats)
	if err != nil {
		return nil, err
	}
	err = tensor.Catch(func() {
		loss = tensor.MulScalar(s, alpha)
		for _, t := range task {
			loss = tensor.Add(loss, tensor.Reshape(t))
		}
		loss = tensor.MulScalar(loss, 1/float32(n))
	})
	if err != nil {
		return nil, fmt.Errorf("net2d: multi-resolution loss: %w", err)
	}
	return loss, nil
}

// ForwardResolutions runs r on the same batch at several resolutions,
// given as xs in strictly descending order of H·W (the reference asserts a
// descending --input-size list), and returns each resolution's logits and
// CLS feature, ready for MultiResolutionLoss.
func ForwardResolutions(r *ResFormer, xs []*tensor.Tensor) (logits, cls []*tensor.Tensor, err error) {
	if r == nil || len(xs) == 0 {
		return nil, nil, errors.New("net2d: forward resolutions: nil model or no inputs")
	}
	for i, x := range xs {
		if x == nil || x.Dim() != 4 {
			return nil, nil, fmt.Errorf("net2d: forward resolutions: input %d is not N×C×H×W", i)
		}
		if i > 0 && x.Size(2)*x.Size(3) >= xs[i-1].Size(2)*xs[i-1].Size(3) {
			return nil, nil, fmt.Errorf("net2d: forward resolutions: input %d (%d×%d) is not smaller than input %d (%d×%d): resolutions must descend",
				i, x.Size(2), x.Size(3), i-1, xs[i-1].Size(2), xs[i-1].Size(3))
		}
		if x.Size(0) != xs[0].Size(0) {
			return nil, nil, fmt.Errorf("net2d: forward resolutions: input %d has batch %d, input 0 has %d", i, x.Size(0), xs[0].Size(0))
		}
	}
	err = tensor.Catch(func() {
		for _, x := range xs {
			l, c := r.ForwardCLS(x)
			logits = append(logits, l)
			cls = append(cls, c)
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("net2d: forward resolutions: %w", err)
	}
	return logits, cls, nil
}
