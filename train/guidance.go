package train

import (
	"fmt"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// gridTargets averages input-grid masks (N×D×H×W, volume order) over the
// cells of a feature grid g (d, h, w) that divides the input grid in
// exactly: cell (z, y, x) covers input voxels [s·z, s·z+s) per axis, the
// block that trilinear upsampling with align_corners false places the cell
// on. It returns N×d·h·w lesion fractions in [0, 1].
func gridTargets(masks []float32, n int, input, g [3]int) ([]float32, error) {
	var s [3]int
	for a := 0; a < 3; a++ {
		if g[a] < 1 || input[a]%g[a] != 0 {
			return nil, fmt.Errorf("lesion_guidance: the input %v is not a whole multiple of the feature map %v", input, g)
		}
		s[a] = input[a] / g[a]
	}
	per := input[0] * input[1] * input[2]
	if len(masks) != n*per {
		return nil, fmt.Errorf("lesion_guidance: %d mask values for %d scans of %v", len(masks), n, input)
	}
	cells := g[0] * g[1] * g[2]
	out := make([]float32, n*cells)
	norm := 1 / float32(s[0]*s[1]*s[2])
	for b := 0; b < n; b++ {
		m := masks[b*per : (b+1)*per]
		o := out[b*cells : (b+1)*cells]
		for z := 0; z < input[0]; z++ {
			for y := 0; y < input[1]; y++ {
				row := m[(z*input[1]+y)*input[2] : (z*input[1]+y+1)*input[2]]
				base := ((z/s[0])*g[1] + y/s[1]) * g[2]
				for x, v := range row {
					o[base+x/s[2]] += v
				}
			}
		}
		for i := range o {
			o[i] *= norm
		}
	}
	return out, nil
}

// camMap applies the classifier's weights at every position of the
// feature map f (N×C×spatial…): the N×P×K class-activation maps
// M_k(p) = w_k·f(p), without the bias, which is what CAM shows and what
// Grad-CAM passes through its ReLU (up to a positive factor) at the final
// feature map.
func camMap(f *tensor.Tensor, fc *nn.Linear) *tensor.Tensor {
	n, c := f.Size(0), f.Size(1)
	return tensor.Linear(tensor.Permute(tensor.Reshape(f, n, c, -1), 0, 2, 1), fc.Weight, nil)
}

// bceWithLogits returns Σ w·(max(z,0) − z·y + log(1 + exp(−|z|))) / Σ w, the
// weighted mean binary cross-entropy of logits z against targets y in
// [0, 1] (torch.nn.functional.binary_cross_entropy_with_logits with
// weight, then divided by the weights' sum). y and w carry no gradient.
func bceWithLogits(z, y, w *tensor.Tensor) *tensor.Tensor {
	l := tensor.Add(tensor.Sub(tensor.ReLU(z), tensor.Mul(z, y)),
		tensor.Log(tensor.AddScalar(tensor.Exp(tensor.Neg(tensor.Abs(z))), 1)))
	sw := float32(0)
	for _, v := range w.Data() {
		sw += v
	}
	if sw == 0 {
		return tensor.MulScalar(tensor.SumAll(l), 0)
	}
	return tensor.MulScalar(tensor.SumAll(tensor.Mul(l, w)), 1/sw)
}

// guidanceLoss is the lesion-guidance term: at every position p of the
// feature map f, the class-activation map M_k(p) (camMap) is trained as a
// logit with binary cross-entropy towards
//
//   - the lesion fraction of p's cell (gridTargets) for the scan's own
//     class, when the scan has a lesion;
//   - 0 for every other class that has lesions (lesionClass), so a class's
//     map is hot only where its own kind of lesion lies.
//
// Classes without lesions (Normal) are not constrained. Lesion cells are
// few, so the two kinds of target are balanced (as in HED's class-balanced
// loss): the entries with a positive target and those with target 0 each
// carry half of the weight, spread evenly within the kind. masks are the
// input-grid lesion masks of the batch (N×D×H×W), input is [D, H, W].
func guidanceLoss(f *tensor.Tensor, fc *nn.Linear, masks []float32, labels []int, input [3]int, lesionClass []bool) (*tensor.Tensor, error) {
	if f.Dim() != 5 {
		return nil, fmt.Errorf("lesion_guidance: feature map of shape %v (want N×C×D×H×W)", f.Shape())
	}
	n := f.Size(0)
	g := [3]int{f.Size(2), f.Size(3), f.Size(4)}
	frac, err := gridTargets(masks, n, input, g)
	if err != nil {
		return nil, err
	}
	s := camMap(f, fc) // N×P×K
	k := s.Size(2)
	if len(lesionClass) != k {
		return nil, fmt.Errorf("lesion_guidance: %d classes, the model scores %d", len(lesionClass), k)
	}
	cells := g[0] * g[1] * g[2]
	y := tensor.Zeros(n, cells, k)
	w := tensor.Zeros(n, cells, k)
	yd, wd := y.Data(), w.Data()
	for b := 0; b < n; b++ {
		fr := frac[b*cells : (b+1)*cells]
		has := false
		for _, v := range fr {
			if v > 0 {
				has = true
				break
			}
		}
		for p := 0; p < cells; p++ {
			for c := 0; c < k; c++ {
				i := (b*cells+p)*k + c
				switch {
				case c == labels[b] && has:
					yd[i], wd[i] = fr[p], 1
				case c != labels[b] && lesionClass[c]:
					wd[i] = 1
				}
			}
		}
	}
	var npos, nneg float32
	for i, v := range wd {
		if v == 0 {
			continue
		}
		if yd[i] > 0 {
			npos++
		} else {
			nneg++
		}
	}
	for i, v := range wd {
		switch {
		case v == 0:
		case yd[i] > 0:
			wd[i] = 0.5 / npos
		case npos > 0:
			wd[i] = 0.5 / nneg
		default:
			wd[i] = 1 / nneg
		}
	}
	return bceWithLogits(s, y, w), nil
}
