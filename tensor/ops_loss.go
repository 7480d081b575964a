package tensor

import "math/rand/v2"

// Reduction selects how a loss reduces per-element values.
type Reduction int

const (
	// ReduceMean averages (for weighted cross-entropy: divides by the sum of
	// the targets' weights, as PyTorch).
	ReduceMean Reduction = iota
	// ReduceSum adds.
	ReduceSum
	// ReduceNone returns per-sample values.
	ReduceNone
)

// CEOpts configures CrossEntropy.
type CEOpts struct {
	Weight         []float32 // per-class weights, or nil
	LabelSmoothing float32   // in [0, 1)
	Reduction      Reduction
}

// CrossEntropy returns the cross-entropy between logits (N×C) and class
// indices target (length N), as torch.nn.functional.cross_entropy with
// weight, label_smoothing and reduction.
func CrossEntropy(logits *Tensor, target []int, o CEOpts) *Tensor { panic("unimplemented") }

// SmoothL1 returns the mean smooth-L1 (Huber with threshold beta) loss
// between x and y, as torch.nn.functional.smooth_l1_loss.
func SmoothL1(x, y *Tensor, beta float32) *Tensor { panic("unimplemented") }

// MSE returns the mean squared error between x and y.
func MSE(x, y *Tensor) *Tensor { panic("unimplemented") }

// Dropout zeroes each element with probability p and scales the rest by
// 1/(1-p) when training; otherwise it returns x.
func Dropout(x *Tensor, p float32, training bool, rng *rand.Rand) *Tensor { panic("unimplemented") }

// StochasticDepth drops whole samples (batch mode false: each sample of the
// first dim independently, torchvision's "row") or the whole batch (true)
// with probability p and scales survivors by 1/(1-p) when training.
func StochasticDepth(x *Tensor, p float32, wholeBatch, training bool, rng *rand.Rand) *Tensor {
	panic("unimplemented")
}
