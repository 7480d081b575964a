package tensor_test

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/nn/safetensors"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/tensor/tensortest"
)

// goldenFile is written by testdata/pytorch/golden_ops.py (PyTorch); the
// test only reads it.
const goldenFile = "testdata/golden_ops.safetensors"

// goldenCase is one entry of the file's "cases" metadata: the op, its
// parameters, the input tensor keys in call order, the keys whose gradients
// are stored, and extra results stored after the forward pass.
type goldenCase struct {
	Name   string       `json:"name"`
	Op     string       `json:"op"`
	Params goldenParams `json:"params"`
	Inputs []string     `json:"inputs"`
	Grads  []string     `json:"grads"`
	Extra  []string     `json:"extra"`
}

// goldenParams is the union of every op's parameters, named as in the
// PyTorch call.
type goldenParams struct {
	Stride          []int   `json:"stride"`
	Padding         []int   `json:"padding"`
	Dilation        []int   `json:"dilation"`
	Groups          int     `json:"groups"`
	Kernel          []int   `json:"kernel"`
	CeilMode        bool    `json:"ceil_mode"`
	CountIncludePad bool    `json:"count_include_pad"`
	Out             []int   `json:"out"`
	Size            []int   `json:"size"`
	Mode            string  `json:"mode"`
	AlignCorners    bool    `json:"align_corners"`
	Training        bool    `json:"training"`
	Momentum        float32 `json:"momentum"`
	Eps             float32 `json:"eps"`
	NormDims        int     `json:"norm_dims"`
	Axis            int     `json:"axis"`
	LabelSmoothing  float32 `json:"label_smoothing"`
	Reduction       string  `json:"reduction"`
}

// goldenOps calls the tensor op for each case kind with the case's inputs
// (keyed as in the file; optional ones absent are nil).
var goldenOps = map[string]func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error){
	"conv": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.Conv(in["x"], in["w"], in["b"], tensor.ConvOpts{Stride: p.Stride, Padding: p.Padding, Dilation: p.Dilation, Groups: p.Groups}), nil
	},
	"batch_norm": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.BatchNorm(in["x"], in["w"], in["b"], in["rm"], in["rv"], p.Training, p.Momentum, p.Eps), nil
	},
	"layer_norm": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.LayerNorm(in["x"], in["w"], in["b"], p.NormDims, p.Eps), nil
	},
	"max_pool": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.MaxPool(in["x"], tensor.PoolOpts{Kernel: p.Kernel, Stride: p.Stride, Padding: p.Padding, Dilation: p.Dilation, CeilMode: p.CeilMode}), nil
	},
	"avg_pool": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.AvgPool(in["x"], tensor.PoolOpts{Kernel: p.Kernel, Stride: p.Stride, Padding: p.Padding, CeilMode: p.CeilMode, CountIncludePad: p.CountIncludePad}), nil
	},
	"adaptive_avg_pool": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.AdaptiveAvgPool(in["x"], p.Out...), nil
	},
	"interpolate": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		mode := map[string]tensor.InterpMode{"nearest": tensor.InterpNearest, "linear": tensor.InterpLinear}
		m, ok := mode[p.Mode]
		if !ok {
			return nil, fmt.Errorf("unknown interpolation mode %q", p.Mode)
		}
		return tensor.Interpolate(in["x"], p.Size, m, p.AlignCorners), nil
	},
	"relu": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.ReLU(in["x"]), nil
	},
	"gelu": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.GELU(in["x"]), nil
	},
	"softmax": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.Softmax(in["x"], p.Axis), nil
	},
	"log_softmax": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.LogSoftmax(in["x"], p.Axis), nil
	},
	"matmul": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.MatMul(in["a"], in["b"]), nil
	},
	"linear": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		return tensor.Linear(in["x"], in["w"], in["b"]), nil
	},
	"cross_entropy": func(in map[string]*tensor.Tensor, p goldenParams) (*tensor.Tensor, error) {
		red := map[string]tensor.Reduction{"mean": tensor.ReduceMean, "sum": tensor.ReduceSum, "none": tensor.ReduceNone}
		r, ok := red[p.Reduction]
		if !ok {
			return nil, fmt.Errorf("unknown reduction %q", p.Reduction)
		}
		var w []float32
		if cw := in["class_weight"]; cw != nil {
			w = cw.Data()
		}
		target := make([]int, in["target"].Len())
		for i, v := range in["target"].Data() {
			target[i] = int(v)
		}
		return tensor.CrossEntropy(in["x"], target, tensor.CEOpts{Weight: w, LabelSmoothing: p.LabelSmoothing, Reduction: r}), nil
	},
}

// TestGolden checks every case of the PyTorch golden file: the op's output,
// extra results and the gradients of sum(out·proj) with respect to its
// inputs, each within rtol 1e-5 and atol 1e-5·max|want|.
func TestGolden(t *testing.T) {
	f, err := safetensors.ReadFile(goldenFile)
	if err != nil {
		t.Fatalf("%v (regenerate with /usr/bin/python3 testdata/pytorch/golden_ops.py)", err)
	}
	var cases []goldenCase
	if err := json.Unmarshal([]byte(f.Metadata["cases"]), &cases); err != nil {
		t.Fatalf("%s: metadata \"cases\": %v", goldenFile, err)
	}
	if len(cases) == 0 {
		t.Fatalf("%s holds no cases", goldenFile)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) { runGolden(t, f, c) })
	}
}

// goldenTensor returns a fresh tensor holding the file's "<case>/<key>".
func goldenTensor(t *testing.T, f *safetensors.File, c goldenCase, key string) *tensor.Tensor {
	t.Helper()
	st, ok := f.Get(c.Name + "/" + key)
	if !ok {
		t.Fatalf("%s: no tensor %s/%s", goldenFile, c.Name, key)
	}
	return tensor.New(append([]float32(nil), st.Data...), st.Shape...)
}

// goldenClose compares got with want within rtol 1e-5 and atol
// 1e-5·max|want| (at least 1e-6 for all-zero wants).
func goldenClose(t *testing.T, what string, got, want *tensor.Tensor) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: missing (nil)", what)
		return
	}
	scale := 0.0
	for _, v := range want.Data() {
		scale = math.Max(scale, math.Abs(float64(v)))
	}
	atol := math.Max(1e-5*scale, 1e-6)
	if err := tensortest.AllClose(got, want, 1e-5, atol); err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	// The largest error as a fraction of the allowed one, for -v runs.
	worst := 0.0
	for i, w := range want.Data() {
		d := math.Abs(float64(got.Data()[i]) - float64(w))
		worst = math.Max(worst, d/(atol+1e-5*math.Abs(float64(w))))
	}
	t.Logf("%s: worst error %.3g of tolerance", what, worst)
}

func runGolden(t *testing.T, f *safetensors.File, c goldenCase) {
	op, ok := goldenOps[c.Op]
	if !ok {
		t.Fatalf("unknown op %q", c.Op)
	}
	in := map[string]*tensor.Tensor{}
	for _, k := range c.Inputs {
		in[k] = goldenTensor(t, f, c, k)
	}
	for _, k := range c.Grads {
		in[k].SetRequiresGrad(true)
	}
	// Ops still under construction panic; report that as this case's
	// failure rather than ending the whole test binary.
	var out *tensor.Tensor
	if msg := goldenRecover(func() {
		var err error
		out, err = op(in, c.Params)
		if err != nil {
			t.Fatal(err)
		}
	}); msg != "" {
		t.Fatalf("forward: %s", msg)
	}
	goldenClose(t, "output", out, goldenTensor(t, f, c, "out"))
	for _, k := range c.Extra {
		// Extra results are inputs updated in place: "rm_out" is "rm".
		goldenClose(t, k, in[strings.TrimSuffix(k, "_out")], goldenTensor(t, f, c, k))
	}
	if len(c.Grads) == 0 {
		return
	}
	if msg := goldenRecover(func() { out.BackwardWith(goldenTensor(t, f, c, "proj")) }); msg != "" {
		t.Fatalf("backward: %s", msg)
	}
	for _, k := range c.Grads {
		goldenClose(t, "gradient of "+k, in[k].Grad(), goldenTensor(t, f, c, "grad_"+k))
	}
}

// goldenRecover runs fn and returns the text of any panic it raises.
func goldenRecover(fn func()) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprintf("panic: %v", r)
		}
	}()
	fn()
	return ""
}
