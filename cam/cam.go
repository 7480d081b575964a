// Package cam computes class-activation heatmaps — CAM (Zhou et al. 2016),
// Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al.
// 2018), with MONAI's formulas — for networks with a global-pool + linear
// head, brings them back onto the original scan's voxel grid through the
// preprocessing Trace so that a heat voxel lies over the same patient voxel,
// writes them out (NIfTI heat volume, PNG overlays and montages, a JSON
// summary) and scores their localisation against lesion masks (pointing
// game, energy share).
//
// The map computation (Compute) is generic over the number of spatial
// dimensions: it needs only Features/Head/Linear/TapLayers (the Model
// interface, which net3d.Classifier satisfies). Everything that speaks of
// scans (Explain, overlays, evaluation) is 3-D.
//
// # Formulas
//
// With A the activation of the chosen layer (N×C×spatial…), g = ∂y_c/∂A the
// gradient of the class-c logit y_c, Σ_s a sum over the spatial positions
// and S their number:
//
//	CAM        M(s) = Σ_k W[c,k]·A_k(s) (+ b_c with Options.CAMBias)    at the final feature map
//	Grad-CAM   w_k = (1/S) Σ_s g_k(s);                      M = ReLU(Σ_k w_k·A_k)
//	Grad-CAM++ α_k(s) = g_k(s)² / (D_k(s) + 1e-7),  D_k(s) = 2g_k(s)² + Σ_s' A_k(s')·g_k(s')³
//	           (a zero D replaced by 1 before the 1e-7 is added);
//	           w_k = Σ_s α_k(s)·ReLU(exp(y_c)·g_k(s));    M = ReLU(Σ_k w_k·A_k)
//
// These are monai.visualize.CAM, GradCAM and GradCAMpp; the raw maps match
// them (see testdata/pytorch/golden_cam.py). CAM is not passed through a
// ReLU (as in MONAI and the CovidNet3D code).
package cam

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// Model is what the maps need of a network whose head is global average
// pooling followed by one linear layer, or that linear layer applied at
// every position followed by a pooling whose weights sum to one (such as
// net3d.LSEPoolLinear, for which CAM is the class-score map and Grad-CAM
// is still ReLU(CAM)/S at the final map): net3d.Classifier satisfies it, and
// so does any 2-D (or 1-D) model with the same methods. Features maps
// N×C_in×spatial… to the pre-pool map N×C×spatial'…, calling tap with the
// output of each layer named by TapLayers in forward order; Head maps that
// feature map to logits N×K; Linear is the head's final layer (weight K×C).
type Model interface {
	nn.Module
	Features(x *tensor.Tensor, tap net3d.Tap) *tensor.Tensor
	Head(features *tensor.Tensor) *tensor.Tensor
	Linear() *nn.Linear
	TapLayers() []string
}

// Method selects the class-activation method.
type Method int

const (
	// CAM weights the final feature map by the linear layer's class row.
	CAM Method = iota
	// GradCAM weights a layer's channels by their spatially averaged gradients.
	GradCAM
	// GradCAMpp weights a layer's channels by α-weighted positive gradients.
	GradCAMpp
)

// String returns "cam", "gradcam" or "gradcam++".
func (m Method) String() string {
	switch m {
	case CAM:
		return "cam"
	case GradCAM:
		return "gradcam"
	case GradCAMpp:
		return "gradcam++"
	}
	return fmt.Sprintf("Method(%d)", int(m))
}

// ParseMethod maps "cam", "gradcam" (or "grad-cam") and "gradcam++" (or
// "gradcampp", "grad-cam++"), case-insensitively, to a Method.
func ParseMethod(s string) (Method, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "cam":
		return CAM, nil
	case "gradcam", "grad-cam":
		return GradCAM, nil
	case "gradcam++", "gradcampp", "grad-cam++":
		return GradCAMpp, nil
	}
	return 0, fmt.Errorf("cam: unknown method %q (want cam, gradcam or gradcam++)", s)
}

// MarshalText writes the method's String form.
func (m Method) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads a method name as ParseMethod.
func (m *Method) UnmarshalText(b []byte) error {
	v, err := ParseMethod(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Options configures Compute (and Explain, which adds Normalization).
type Options struct {
	// Method is CAM (the default), GradCAM or GradCAMpp.
	Method Method
	// Layer is the TapLayers name whose activation is explained; "" means
	// the last one, the final feature map. CAM accepts only that one.
	Layer string
	// Classes are the classes to explain, the same for every batch item;
	// empty means each item's own argmax class (one map).
	Classes []int
	// CAMBias adds the linear layer's bias b_c at every position of a CAM
	// map (MONAI's CAM does; Zhou et al. and the CovidNet3D code do not).
	// The default (false) leaves it out. It only shifts the raw map: every
	// min–max normalisation removes it.
	CAMBias bool
	// Normalization is how Explain scales the upsampled map to [0, 1]
	// (Compute returns raw maps and ignores it).
	Normalization Normalization
}

// Map is one class-activation map of a batch.
type Map struct {
	// Classes holds the explained class of each batch item.
	Classes []int
	// Scores holds each item's logit of its class.
	Scores []float32
	// Raw is the map at the layer's resolution, N×1×spatial…, before
	// upsampling or normalisation.
	Raw *tensor.Tensor
	// ScoreFactorDropped is set for a Grad-CAM++ map whose constant factor
	// exp(score) would overflow float32: it is left out, so Raw is MONAI's map
	// divided by exp(score) (a positive constant per item; the normalised map
	// is the same).
	ScoreFactorDropped bool
}

// Result is the output of Compute.
type Result struct {
	// Logits are the network's outputs for the batch, N×K.
	Logits *tensor.Tensor
	// Layer is the explained layer's name.
	Layer string
	// Maps holds one map per requested class (one for argmax).
	Maps []Map
}

// Compute runs m on x (N×C_in×spatial…) once and returns the raw
// class-activation maps described in the package comment for the classes
// of o (or each item's argmax).
//
// The model is put in evaluation mode and its parameters stop requiring
// gradients while it runs; both are restored afterwards. For Grad-CAM and
// Grad-CAM++ with several classes, the network up to the explained layer
// runs once; the layers after it run on a batch that repeats the activation
// once per class (so they must treat batch items independently, as every
// net3d family does in evaluation mode), and one backward pass seeded with
// each copy's class gives every class its own gradient.
//
// Bad options (unknown layer, class out of range, CAM at an inner layer)
// and shape errors inside the network are returned as errors.
func Compute(m Model, x *tensor.Tensor, o Options) (res *Result, err error) {
	if m == nil || x == nil {
		return nil, errors.New("cam: compute: nil model or input")
	}
	if x.Dim() < 3 {
		return nil, fmt.Errorf("cam: compute: input of shape %v (want N×C×spatial…)", x.Shape())
	}
	layer, err := o.check(m)
	if err != nil {
		return nil, fmt.Errorf("cam: compute: %w", err)
	}
	restore := nn.EvalFrozen(m)
	defer restore()
	var inner error
	err = tensor.Catch(func() {
		if o.Method == CAM {
			res, inner = computeCAM(m, x, layer, o)
		} else {
			res, inner = computeGrad(m, x, layer, o)
		}
	})
	if err == nil {
		err = inner
	}
	if err != nil {
		return nil, fmt.Errorf("cam: compute %s at %s: %w", o.Method, layer, err)
	}
	return res, nil
}

// check validates o against m and returns the layer to explain.
func (o Options) check(m Model) (string, error) {
	taps := m.TapLayers()
	if len(taps) == 0 {
		return "", errors.New("the model reports no tap layers")
	}
	layer := o.Layer
	if layer == "" {
		layer = taps[len(taps)-1]
	}
	if !slices.Contains(taps, layer) {
		return "", fmt.Errorf("layer %q is not one of the model's tap layers (%s)", layer, strings.Join(taps, ", "))
	}
	switch o.Method {
	case CAM:
		if layer != taps[len(taps)-1] {
			return "", fmt.Errorf("CAM needs the final feature map (layer %q), not %q; use gradcam or gradcam++ for inner layers", taps[len(taps)-1], layer)
		}
	case GradCAM, GradCAMpp:
	default:
		return "", fmt.Errorf("unknown method %d", int(o.Method))
	}
	fc := m.Linear()
	if fc == nil || fc.Weight == nil || fc.Weight.Dim() != 2 {
		return "", errors.New("the model has no final linear layer")
	}
	nClass := fc.Weight.Size(0)
	for _, c := range o.Classes {
		if c < 0 || c >= nClass {
			return "", fmt.Errorf("class %d out of range (the model has %d classes)", c, nClass)
		}
	}
	return layer, nil
}

// classesFor returns, for each requested map, the class of each item.
func classesFor(o Options, logits *tensor.Tensor, n int) [][]int {
	if len(o.Classes) == 0 {
		return [][]int{tensor.Argmax(logits, 1)[:n]}
	}
	out := make([][]int, len(o.Classes))
	for k, c := range o.Classes {
		out[k] = make([]int, n)
		for i := range out[k] {
			out[k][i] = c
		}
	}
	return out
}

// checkLogits verifies the head's output shape.
func checkLogits(logits *tensor.Tensor, rows, classes int) error {
	if logits.Dim() != 2 || logits.Size(0) != rows || logits.Size(1) != classes {
		return fmt.Errorf("head output of shape %v (want %d×%d)", logits.Shape(), rows, classes)
	}
	return nil
}

// computeCAM evaluates the linear layer at every position of the final
// feature map.
func computeCAM(m Model, x *tensor.Tensor, layer string, o Options) (*Result, error) {
	f := m.Features(x, nil)
	logits := m.Head(f)
	w := m.Linear().Weight
	nClass, ch := w.Size(0), w.Size(1)
	if f.Dim() < 3 || f.Size(1) != ch {
		return nil, fmt.Errorf("feature map of shape %v does not match the linear layer's %d input features", f.Shape(), ch)
	}
	n := f.Size(0)
	if err := checkLogits(logits, n, nClass); err != nil {
		return nil, err
	}
	var bias []float32
	if o.CAMBias && m.Linear().Bias != nil {
		bias = m.Linear().Bias.Data()
	}
	sp := f.Len() / (n * ch)
	res := &Result{Logits: logits.Detach(), Layer: layer}
	for _, cls := range classesFor(o, logits, n) {
		mp := newMap(f.Shape(), cls, logits)
		for i, c := range cls {
			wc := w.Data()[c*ch : (c+1)*ch]
			out := make([]float64, sp)
			act := f.Data()[i*ch*sp : (i+1)*ch*sp]
			for k, wk := range wc {
				row := act[k*sp : (k+1)*sp]
				for s, a := range row {
					out[s] += float64(wk) * float64(a)
				}
			}
			b := 0.0
			if bias != nil {
				b = float64(bias[c])
			}
			dst := mp.Raw.Data()[i*sp : (i+1)*sp]
			for s := range out {
				dst[s] = float32(out[s] + b)
			}
		}
		res.Maps = append(res.Maps, mp)
	}
	return res, nil
}

// newMap allocates a map N×1×spatial… for activation shape act.
func newMap(act []int, cls []int, logits *tensor.Tensor) Map {
	shape := append([]int{act[0], 1}, act[2:]...)
	mp := Map{Classes: cls, Scores: make([]float32, len(cls)), Raw: tensor.Zeros(shape...)}
	for i, c := range cls {
		mp.Scores[i] = logits.At(i, c)
	}
	return mp
}

// computeGrad runs the forward pass with the explained activation replaced
// by one gradient-requiring copy per map, back-propagates every copy's
// class score in one pass, and forms the Grad-CAM or Grad-CAM++ maps.
func computeGrad(m Model, x *tensor.Tensor, layer string, o Options) (*Result, error) {
	nMaps := max(len(o.Classes), 1)
	var act *tensor.Tensor
	var leaves []*tensor.Tensor
	tap := func(name string, out *tensor.Tensor) *tensor.Tensor {
		if name != layer || act != nil {
			return out
		}
		act = out.Detach()
		leaves = make([]*tensor.Tensor, nMaps)
		for k := range leaves {
			// Separate leaves (each with its own gradient) sharing act's values.
			leaves[k] = out.Detach().SetRequiresGrad(true)
		}
		if nMaps == 1 {
			return leaves[0]
		}
		return tensor.Concat(0, leaves...)
	}
	logits := m.Head(m.Features(x, tap))
	if act == nil {
		return nil, fmt.Errorf("the model did not report layer %q to its tap", layer)
	}
	if act.Dim() < 3 {
		return nil, fmt.Errorf("activation of shape %v (want N×C×spatial…)", act.Shape())
	}
	n, ch := act.Size(0), act.Size(1)
	nClass := m.Linear().Weight.Size(0)
	if err := checkLogits(logits, n*nMaps, nClass); err != nil {
		return nil, err
	}
	if !logits.RequiresGrad() {
		return nil, fmt.Errorf("the logits do not depend on layer %q", layer)
	}
	first := tensor.Slice(logits.Detach(), 0, 0, n)
	cls := classesFor(o, first, n)
	seed := tensor.Zeros(n*nMaps, nClass)
	for k := range cls {
		for i, c := range cls[k] {
			seed.Set(1, k*n+i, c)
		}
	}
	logits.BackwardWith(seed)
	res := &Result{Logits: first.Clone(), Layer: layer}
	sp := act.Len() / (n * ch)
	for k := range cls {
		g := leaves[k].Grad()
		if g == nil {
			return nil, fmt.Errorf("no gradient reached layer %q", layer)
		}
		mp := Map{Classes: cls[k], Scores: make([]float32, n), Raw: tensor.Zeros(append([]int{n, 1}, act.Shape()[2:]...)...)}
		for i, c := range cls[k] {
			mp.Scores[i] = logits.At(k*n+i, c)
			a := act.Data()[i*ch*sp : (i+1)*ch*sp]
			gi := g.Data()[i*ch*sp : (i+1)*ch*sp]
			dst := mp.Raw.Data()[i*sp : (i+1)*sp]
			if o.Method == GradCAM {
				gradCAM(a, gi, ch, sp, dst)
			} else if gradCAMpp(a, gi, ch, sp, float64(mp.Scores[i]), dst) {
				mp.ScoreFactorDropped = true
			}
		}
		res.Maps = append(res.Maps, mp)
	}
	return res, nil
}

// weightedSum returns Σ_k w_k·A_k(s) for the ch×sp activation a.
func weightedSum(a []float32, w []float64, ch, sp int) []float64 {
	out := make([]float64, sp)
	for k := 0; k < ch; k++ {
		if w[k] == 0 {
			continue
		}
		row := a[k*sp : (k+1)*sp]
		for s, v := range row {
			out[s] += w[k] * float64(v)
		}
	}
	return out
}

// gradCAM writes ReLU(Σ_k mean(g_k)·A_k) into dst.
func gradCAM(a, g []float32, ch, sp int, dst []float32) {
	w := make([]float64, ch)
	for k := range w {
		s := 0.0
		for _, v := range g[k*sp : (k+1)*sp] {
			s += float64(v)
		}
		w[k] = s / float64(sp)
	}
	for s, v := range weightedSum(a, w, ch, sp) {
		dst[s] = float32(math.Max(v, 0))
	}
}

// gradCAMpp writes MONAI's Grad-CAM++ map into dst. exp(score) > 0 is
// factored out of the ReLUs; it multiplies the result unless that would
// overflow float32, in which case it is left out and true is returned.
func gradCAMpp(a, g []float32, ch, sp int, score float64, dst []float32) (dropped bool) {
	w := make([]float64, ch)
	for k := range w {
		ak, gk := a[k*sp:(k+1)*sp], g[k*sp:(k+1)*sp]
		ag3 := 0.0
		for s, gv := range gk {
			x := float64(gv)
			ag3 += float64(ak[s]) * x * x * x
		}
		sum := 0.0
		for _, gv := range gk {
			x := float64(gv)
			if x <= 0 {
				continue // ReLU(exp(score)·g) is 0
			}
			dr := 2*x*x + ag3
			if dr == 0 {
				dr = 1
			}
			sum += x * x / (dr + 1e-7) * x
		}
		w[k] = sum
	}
	scale := math.Exp(score)
	out := weightedSum(a, w, ch, sp)
	peak := 0.0
	for _, v := range out {
		peak = math.Max(peak, v)
	}
	if math.IsInf(scale, 1) || peak*scale > math.MaxFloat32 {
		scale, dropped = 1, true
	}
	for s, v := range out {
		dst[s] = float32(math.Max(v, 0) * scale)
	}
	return dropped
}
