package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestBenchInProcess measures a tiny CovidNet3D in this process and checks
// the report: timings, the MAC count (equal to `ctlens models`'s), GFLOP/s
// as 2·MACs per median second, and the peak RSS.
func TestBenchInProcess(t *testing.T) {
	for _, train := range []bool{false, true} {
		// Every flag is given: cobra keeps flag values between in-process runs.
		args := []string{"bench", "covidnet3d-small", "--shape", "2x1x8x32x32", "--no-fork", "--threads", "2", "--reps", "2",
			"--warmup", "0", "--rounds", "2", "--json", "--train=" + strconv.FormatBool(train)}
		out, err := run(t, args...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var rep benchReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if len(rep.Rows) != 1 || rep.PeakGFLOP <= 0 || rep.Threads != 2 {
			t.Fatalf("report %+v", rep)
		}
		r := rep.Rows[0]
		if len(r.MS) != 4 || r.MedianMS <= 0 || r.RSSMB <= 0 || r.Train != train {
			t.Errorf("row %+v: want 4 positive timings and an RSS", r)
		}
		mout, err := run(t, "models", "--family", "covidnet3d-small", "--input", "2x1x8x32x32", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var rows []modelInfo
		if err := json.Unmarshal([]byte(mout), &rows); err != nil || len(rows) != 1 {
			t.Fatalf("models: %v %s", err, mout)
		}
		if r.MACs != rows[0].MACs {
			t.Errorf("bench MACs %d, models MACs %d", r.MACs, rows[0].MACs)
		}
		want := 2 * float64(r.MACs) / 1e9 / (r.MedianMS / 1e3)
		if train {
			want *= 3
		}
		if d := r.GFLOPS/want - 1; d > 1e-9 || d < -1e-9 {
			t.Errorf("GFLOP/s %g, want %g", r.GFLOPS, want)
		}
	}
}

func TestBenchErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "no-such-net", "--shape", "1x1x8x8x8", "--threads", "1", "--reps", "1"}, "unknown architecture"},
		{[]string{"bench", "covidnet3d-small", "--shape", "1x1x8", "--threads", "1", "--reps", "1"}, "N x C x D x H x W"},
		{[]string{"bench", "covidnet3d-small", "--shape", "1x1x8x8x8", "--threads", "0", "--reps", "1"}, "--threads"},
		{[]string{"bench", "covidnet3d-small", "--shape", "1x1x8x8x8", "--threads", "1", "--reps", "0"}, "--reps"},
	} {
		out, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v (output %q), want %q", c.args, err, out, c.want)
		}
	}
}

// TestBenchChildAndPeer builds ctlens and runs `ctlens bench --peer` on a
// tiny model: ctlens in a child process and the PyTorch peer script, with
// the ratio ctlens/PyTorch computed from the two medians. It needs
// /usr/bin/python3 with torch and torchvision (a failure when CTLENS_CI=1).
func TestBenchChildAndPeer(t *testing.T) {
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import torch, torchvision").Run(); err != nil {
		if os.Getenv("CTLENS_CI") != "" {
			t.Fatalf("PyTorch is required with CTLENS_CI set: %v", err)
		}
		t.Skipf("no PyTorch at %s: %v", python, err)
	}
	exe := filepath.Join(t.TempDir(), "ctlens")
	if out, err := exec.Command("go", "build", "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "bench", "covidnet3d-small", "--shape", "1x1x8x32x32", "--reps", "1", "--warmup", "0",
		"--peer", "--python", python, "--peer-script", filepath.Join(root, "testdata/pytorch/bench_peer.py"), "--json")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var rep benchReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	r := rep.Rows[0]
	if r.RSSMB <= 0 || r.TorchRSSMB <= 0 || r.TorchMedMS <= 0 || len(r.TorchMS) != 1 {
		t.Fatalf("row %+v", r)
	}
	if d := r.Ratio/(r.MedianMS/r.TorchMedMS) - 1; d > 1e-9 || d < -1e-9 {
		t.Errorf("ratio %g, want %g", r.Ratio, r.MedianMS/r.TorchMedMS)
	}
}

// TestBenchGemm checks that `ctlens bench gemm` reports both bar sizes next
// to the FMA peak.
func TestBenchGemm(t *testing.T) {
	out, err := run(t, "bench", "gemm", "--threads", "1", "--reps", "1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"FMA peak", "256x2304x4096", "1024x1024x1024", "%PEAK"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
