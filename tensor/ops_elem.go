package tensor

// Elementwise arithmetic with NumPy/PyTorch broadcasting, activations,
// reductions, softmax, matrix products and shape manipulation.

// Add returns a + b with broadcasting.
func Add(a, b *Tensor) *Tensor { panic("unimplemented") }

// Sub returns a - b with broadcasting.
func Sub(a, b *Tensor) *Tensor { panic("unimplemented") }

// Mul returns a * b elementwise with broadcasting.
func Mul(a, b *Tensor) *Tensor { panic("unimplemented") }

// Div returns a / b elementwise with broadcasting.
func Div(a, b *Tensor) *Tensor { panic("unimplemented") }

// AddScalar returns a + s.
func AddScalar(a *Tensor, s float32) *Tensor { panic("unimplemented") }

// MulScalar returns a * s.
func MulScalar(a *Tensor, s float32) *Tensor { panic("unimplemented") }

// Neg returns -a.
func Neg(a *Tensor) *Tensor { panic("unimplemented") }

// Exp returns e^a.
func Exp(a *Tensor) *Tensor { panic("unimplemented") }

// Log returns the natural logarithm of a.
func Log(a *Tensor) *Tensor { panic("unimplemented") }

// Sqrt returns the square root of a.
func Sqrt(a *Tensor) *Tensor { panic("unimplemented") }

// Pow returns a^p for a constant exponent p.
func Pow(a *Tensor, p float32) *Tensor { panic("unimplemented") }

// Abs returns |a|.
func Abs(a *Tensor) *Tensor { panic("unimplemented") }

// ReLU returns max(a, 0).
func ReLU(a *Tensor) *Tensor { panic("unimplemented") }

// ReLU6 returns min(max(a, 0), 6).
func ReLU6(a *Tensor) *Tensor { panic("unimplemented") }

// GELU returns a * Φ(a) with the exact (erf) Gaussian CDF, as PyTorch's default.
func GELU(a *Tensor) *Tensor { panic("unimplemented") }

// SiLU returns a * sigmoid(a).
func SiLU(a *Tensor) *Tensor { panic("unimplemented") }

// Sigmoid returns 1 / (1 + e^-a).
func Sigmoid(a *Tensor) *Tensor { panic("unimplemented") }

// Tanh returns tanh(a).
func Tanh(a *Tensor) *Tensor { panic("unimplemented") }

// Sum reduces a over axes (negative axes count from the end; none means all),
// keeping reduced axes as size 1 when keepDim.
func Sum(a *Tensor, axes []int, keepDim bool) *Tensor { panic("unimplemented") }

// Mean averages a over axes like Sum.
func Mean(a *Tensor, axes []int, keepDim bool) *Tensor { panic("unimplemented") }

// SumAll returns the sum of all elements as a 0-dimensional tensor.
func SumAll(a *Tensor) *Tensor { panic("unimplemented") }

// MeanAll returns the mean of all elements as a 0-dimensional tensor.
func MeanAll(a *Tensor) *Tensor { panic("unimplemented") }

// Max reduces a over one axis, returning the maxima (gradient flows to the
// first maximal element).
func Max(a *Tensor, axis int, keepDim bool) *Tensor { panic("unimplemented") }

// Argmax returns, for each position of the other axes, the index of the
// maximum along axis (no gradient).
func Argmax(a *Tensor, axis int) []int { panic("unimplemented") }

// Softmax returns exp(a) / sum(exp(a)) along axis, computed stably.
func Softmax(a *Tensor, axis int) *Tensor { panic("unimplemented") }

// LogSoftmax returns a - log(sum(exp(a))) along axis, computed stably.
func LogSoftmax(a *Tensor, axis int) *Tensor { panic("unimplemented") }

// MatMul returns the matrix product a·b. Both 2-D (m×k · k×n), or batched:
// a is B…×m×k and b is B…×k×n (same batch dims) or k×n (shared).
func MatMul(a, b *Tensor) *Tensor { panic("unimplemented") }

// Linear returns x·wᵀ + b for x of shape …×in, w of shape out×in and b of
// shape out (or nil), as torch.nn.functional.linear.
func Linear(x, w, b *Tensor) *Tensor { panic("unimplemented") }

// Reshape returns a view of a with a new shape of the same element count; one
// dimension may be -1 and is inferred.
func Reshape(a *Tensor, shape ...int) *Tensor { panic("unimplemented") }

// Flatten reshapes dimensions from start to the end into one.
func Flatten(a *Tensor, start int) *Tensor { panic("unimplemented") }

// Permute returns a with its dimensions reordered: result dim i is a's dim perm[i].
func Permute(a *Tensor, perm ...int) *Tensor { panic("unimplemented") }

// Transpose swaps dimensions i and j.
func Transpose(a *Tensor, i, j int) *Tensor { panic("unimplemented") }

// Slice returns the elements lo ≤ index < hi along axis (a view sharing
// storage when axis is 0 or all earlier dims are 1).
func Slice(a *Tensor, axis, lo, hi int) *Tensor { panic("unimplemented") }

// Concat joins tensors along axis; all other dimensions must match.
func Concat(axis int, ts ...*Tensor) *Tensor { panic("unimplemented") }

// Stack joins equally shaped tensors along a new axis.
func Stack(axis int, ts ...*Tensor) *Tensor { panic("unimplemented") }
