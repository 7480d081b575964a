package nn

import (
	"math"
	"testing"

	"github.com/ctlens/ctlens/tensor"
)

// TestPyTorchNet loads a checkpoint written by PyTorch (testdata/torch_net.py:
// "module." keys, I64 num_batches_tracked) into the equivalent nn network and
// compares its outputs, running statistics and gradients with PyTorch's.
func TestPyTorchNet(t *testing.T) {
	n := newTestNet(99)
	rep, err := Load("testdata/torch_net.safetensors", n, LoadOpts{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Loaded != len(testNetKeys) || len(rep.Stripped) != 1 {
		t.Errorf("report %+v", rep)
	}
	if got := n.BN1.NumBatchesTracked.Item(); got != 2 {
		t.Errorf("num_batches_tracked = %v, want 2", got)
	}
	ioList, _, err := ReadTensors("testdata/torch_net_io.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	io := map[string]*tensor.Tensor{}
	for _, s := range ioList {
		io[s.Name] = s.Tensor
	}
	check := func(what string, got, want *tensor.Tensor, tol float64) {
		t.Helper()
		if !tensor.SameShape(got.Shape(), want.Shape()) {
			t.Fatalf("%s: shape %v, want %v", what, got.Shape(), want.Shape())
		}
		worst := 0.0
		for i, v := range got.Data() {
			w := float64(want.Data()[i])
			worst = max(worst, math.Abs(float64(v)-w)/math.Max(1, math.Abs(w)))
		}
		if worst > tol {
			t.Errorf("%s: max relative difference %.3g > %.3g", what, worst, tol)
		}
	}

	SetTraining(n, false)
	SetRequiresGrad(n, false)
	y, err := Run(n, io["x"])
	if err != nil {
		t.Fatal(err)
	}
	if y.RequiresGrad() {
		t.Error("frozen eval forward recorded a graph")
	}
	check("y_eval", y, io["y_eval"], 1e-5)

	SetTraining(n, true)
	SetRequiresGrad(n, true)
	y, err = Run(n, io["x"])
	if err != nil {
		t.Fatal(err)
	}
	check("y_train", y, io["y_train"], 1e-5)
	check("bn1.running_mean", n.BN1.RunningMean, io["bn1.running_mean"], 1e-5)
	check("bn1.running_var", n.BN1.RunningVar, io["bn1.running_var"], 1e-5)
	check("bn1.num_batches_tracked", n.BN1.NumBatchesTracked, io["bn1.num_batches_tracked"], 0)
	loss := tensor.SumAll(tensor.Mul(y, io["r"]))
	if err := tensor.Catch(loss.Backward); err != nil {
		t.Fatal(err)
	}
	check("grad conv1.weight", n.Conv1.Weight.Grad(), io["grad.conv1.weight"], 1e-4)
	check("grad bn1.weight", n.BN1.Weight.Grad(), io["grad.bn1.weight"], 1e-4)
	check("grad fc.weight", n.FC.Weight.Grad(), io["grad.fc.weight"], 1e-4)
}
