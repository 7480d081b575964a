package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/tensor/gemm"
)

// benchOpts are the flags of `ctlens bench`.
type benchOpts struct {
	shape      string
	threads    int
	reps       int
	warmup     int
	rounds     int
	train      bool
	peer       bool
	python     string
	peerScript string
	cpuprofile string
	noFork     bool
	gogc       int
	asJSON     bool
	child      bool
}

// benchResult is one measurement of one model by ctlens or by the PyTorch
// peer: the JSON line a child process prints.
type benchResult struct {
	Model    string    `json:"model"`
	Shape    []int     `json:"shape"`
	Threads  int       `json:"threads"`
	Train    bool      `json:"train"`
	MS       []float64 `json:"ms"`
	MedianMS float64   `json:"median_ms"`
	RSSMB    float64   `json:"rss_mb"`
	MACs     int64     `json:"macs,omitempty"`
	Torch    string    `json:"torch,omitempty"`
}

// benchRow is one model's line of the report: ctlens and, with --peer,
// PyTorch, each over all rounds.
type benchRow struct {
	Model      string    `json:"model"`
	Shape      []int     `json:"shape"`
	Train      bool      `json:"train"`
	MS         []float64 `json:"ms"`
	MedianMS   float64   `json:"median_ms"`
	GFLOPS     float64   `json:"gflops"`
	PeakPct    float64   `json:"peak_pct"`
	RSSMB      float64   `json:"rss_mb"`
	MACs       int64     `json:"macs"`
	TorchMS    []float64 `json:"torch_ms,omitempty"`
	TorchMedMS float64   `json:"torch_median_ms,omitempty"`
	TorchRSSMB float64   `json:"torch_rss_mb,omitempty"`
	Ratio      float64   `json:"ratio,omitempty"`     // ctlens median / PyTorch median
	RSSRatio   float64   `json:"rss_ratio,omitempty"` // ctlens / PyTorch peak RSS
}

// benchReport is the JSON form of a `ctlens bench` run.
type benchReport struct {
	Threads   int        `json:"threads"`
	PeakGFLOP float64    `json:"peak_gflops"`
	LoadStart string     `json:"load_start"`
	LoadEnd   string     `json:"load_end"`
	Rows      []benchRow `json:"rows"`
}

func init() {
	var o benchOpts
	cmd := &cobra.Command{
		Use:   "bench [MODEL...]",
		Short: "Time whole-model inference or training steps (optionally against PyTorch), or the SGEMM",
		Long: `bench times registered models (default: mc3_18 r3d_18 r2plus1d_18; see ` + "`ctlens models`" + `) on a
random input of --shape (N x C x D x H x W) with --threads threads: one eval-mode, gradient-free
forward pass, or with --train one training step (forward, cross-entropy, backward, SGD with
momentum). Each model runs in a fresh child process (this executable re-run) per round, so
its peak resident memory (VmHWM) is its own; every child does --warmup untimed and --reps timed
runs, and the report gives the median over all rounds, GFLOP/s (2 x forward MACs per second,
3 times that for a training step), the percentage of the measured FMA peak of --threads
cores and the peak RSS. The children collect garbage at --gogc percent (default 50; Go's
default is 100) because the weights stay live throughout and Go lets garbage grow to GOGC%
of the live heap.

With --peer, testdata/pytorch/bench_peer.py runs the same architecture in PyTorch
(/usr/bin/python3, torch.set_num_threads and OMP/OPENBLAS_NUM_THREADS = --threads), each round
right after ctlens's, and the report adds PyTorch's median and RSS and the ratios
ctlens/PyTorch. The load average before and after is printed: the machine may be shared.

"ctlens bench gemm" measures the SGEMM at 256x2304x4096 and 1024x1024x1024 against the
FMA peak.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && args[0] == "gemm" {
				return benchGemm(cmd.OutOrStdout(), o.threads, o.reps)
			}
			if len(args) == 0 {
				args = []string{"mc3_18", "r3d_18", "r2plus1d_18"}
			}
			shape, err := parseShape(o.shape)
			if err != nil {
				return err
			}
			switch {
			case o.threads < 1:
				return fmt.Errorf("bench: --threads %d: want at least 1", o.threads)
			case o.reps < 1 || o.warmup < 0 || o.rounds < 1:
				return fmt.Errorf("bench: --reps %d, --warmup %d, --rounds %d: want reps ≥ 1, warmup ≥ 0, rounds ≥ 1", o.reps, o.warmup, o.rounds)
			}
			for _, m := range args {
				if _, ok := net3d.Lookup(m); !ok {
					return fmt.Errorf("bench: unknown architecture %q (see `ctlens models`)", m)
				}
			}
			if o.child {
				if len(args) != 1 {
					return fmt.Errorf("bench: --child runs exactly one model, got %v", args)
				}
				r, err := benchInProcess(args[0], shape, o)
				if err != nil {
					return err
				}
				return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
			}
			return benchRun(cmd.OutOrStdout(), args, shape, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.shape, "shape", "1x3x32x128x128", "input shape N x C x D x H x W (C is the models' input channels)")
	f.IntVar(&o.threads, "threads", 2, "threads (GOMAXPROCS for ctlens, torch.set_num_threads for PyTorch)")
	f.IntVar(&o.reps, "reps", 2, "timed runs per process (for gemm: timed products)")
	f.IntVar(&o.warmup, "warmup", 1, "untimed runs per process before the timed ones")
	f.IntVar(&o.rounds, "rounds", 1, "fresh processes per model (and per side with --peer), interleaved")
	f.BoolVar(&o.train, "train", false, "time a training step instead of inference")
	f.BoolVar(&o.peer, "peer", false, "also run testdata/pytorch/bench_peer.py and print ctlens/PyTorch ratios")
	f.StringVar(&o.python, "python", "/usr/bin/python3", "Python interpreter with torch and torchvision for --peer")
	f.StringVar(&o.peerScript, "peer-script", "testdata/pytorch/bench_peer.py", "PyTorch peer script for --peer")
	f.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the timed runs to this file (one model)")
	f.IntVar(&o.gogc, "gogc", 50, "garbage-collection target percentage while measuring (as GOGC; -1 keeps the environment's)")
	f.BoolVar(&o.noFork, "no-fork", false, "measure in this process instead of a child per model (RSS is then the whole process's)")
	f.BoolVar(&o.asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&o.child, "child", false, "internal: measure one model in this process and print one JSON line")
	_ = f.MarkHidden("child")
	rootCmd.AddCommand(cmd)
}

// benchInProcess builds the workload of model and times it in this process
// with GOMAXPROCS = o.threads.
func benchInProcess(model string, shape []int, o benchOpts) (benchResult, error) {
	prev := runtime.GOMAXPROCS(o.threads)
	defer runtime.GOMAXPROCS(prev)
	if o.gogc >= 0 {
		// A model's weights stay live for the whole run, and Go's collector
		// lets garbage grow to GOGC% of the live heap before collecting, so
		// with the default 100 the peak RSS approaches twice the weights
		// (PyTorch frees activations as soon as they are unreferenced).
		defer debug.SetGCPercent(debug.SetGCPercent(o.gogc))
	}
	w, err := net3d.NewWorkload(model, shape, o.train, 1)
	if err != nil {
		return benchResult{}, err
	}
	macs, err := w.MACs()
	if err != nil {
		return benchResult{}, fmt.Errorf("bench %s: %w", model, err)
	}
	for range o.warmup {
		if err := w.Run(); err != nil {
			return benchResult{}, fmt.Errorf("bench %s: %w", model, err)
		}
	}
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return benchResult{}, fmt.Errorf("bench: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return benchResult{}, fmt.Errorf("bench: cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	r := benchResult{Model: model, Shape: shape, Threads: o.threads, Train: o.train, MACs: macs}
	for range o.reps {
		t0 := time.Now()
		if err := w.Run(); err != nil {
			return benchResult{}, fmt.Errorf("bench %s: %w", model, err)
		}
		r.MS = append(r.MS, float64(time.Since(t0).Nanoseconds())/1e6)
	}
	r.MedianMS = median(r.MS)
	r.RSSMB = peakRSSMB()
	return r, nil
}

// benchRun measures every model (in child processes unless --no-fork,
// interleaved with the PyTorch peer when --peer) and prints the report.
func benchRun(out io.Writer, models []string, shape []int, o benchOpts) error {
	rep := benchReport{Threads: o.threads, LoadStart: loadAvg()}
	rep.PeakGFLOP = gemm.PeakGFLOPS(o.threads)
	for _, m := range models {
		row := benchRow{Model: m, Shape: shape, Train: o.train}
		var rss, trss []float64
		for round := range o.rounds {
			var r benchResult
			var err error
			if o.noFork {
				r, err = benchInProcess(m, shape, o)
			} else {
				r, err = benchChild(m, shape, o)
			}
			if err != nil {
				return err
			}
			row.MS = append(row.MS, r.MS...)
			row.MACs = r.MACs
			rss = append(rss, r.RSSMB)
			if o.peer {
				p, err := benchPeer(m, shape, o)
				if err != nil {
					return fmt.Errorf("bench %s: PyTorch peer (round %d): %w", m, round+1, err)
				}
				row.TorchMS = append(row.TorchMS, p.MS...)
				trss = append(trss, p.RSSMB)
			}
		}
		row.MedianMS = median(row.MS)
		row.RSSMB = median(rss)
		gflop := 2 * float64(row.MACs) / 1e9
		if o.train {
			gflop *= 3
		}
		row.GFLOPS = gflop / (row.MedianMS / 1e3)
		row.PeakPct = 100 * row.GFLOPS / rep.PeakGFLOP
		if o.peer {
			row.TorchMedMS = median(row.TorchMS)
			row.TorchRSSMB = median(trss)
			row.Ratio = row.MedianMS / row.TorchMedMS
			row.RSSRatio = row.RSSMB / row.TorchRSSMB
		}
		rep.Rows = append(rep.Rows, row)
	}
	rep.LoadEnd = loadAvg()
	if o.asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	mode := "inference (eval, no grad)"
	if o.train {
		mode = "training step (forward, cross-entropy, backward, SGD)"
	}
	fmt.Fprintf(out, "%s, %d threads, %d warm-up + %d timed runs per process, %d round(s); FMA peak %.1f GFLOP/s\n",
		mode, o.threads, o.warmup, o.reps, o.rounds, rep.PeakGFLOP)
	fmt.Fprintf(out, "load average: %s (start), %s (end)\n", rep.LoadStart, rep.LoadEnd)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	head := "MODEL\tINPUT\tGMACs\tMS\tGFLOP/S\t%PEAK\tRSS MB"
	if o.peer {
		head += "\tTORCH MS\tTORCH RSS MB\tTIME RATIO\tRSS RATIO"
	}
	fmt.Fprintln(tw, head)
	for _, r := range rep.Rows {
		line := fmt.Sprintf("%s\t%s\t%.2f\t%.0f\t%.1f\t%.1f\t%.0f", r.Model, shapeString(r.Shape), float64(r.MACs)/1e9,
			r.MedianMS, r.GFLOPS, r.PeakPct, r.RSSMB)
		if o.peer {
			line += fmt.Sprintf("\t%.0f\t%.0f\t%.2f\t%.2f", r.TorchMedMS, r.TorchRSSMB, r.Ratio, r.RSSRatio)
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// benchChild re-runs this executable as `ctlens bench --child MODEL` with
// GOMAXPROCS = threads and parses its JSON line.
func benchChild(model string, shape []int, o benchOpts) (benchResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return benchResult{}, fmt.Errorf("bench: cannot re-run ctlens: %w", err)
	}
	args := []string{"bench", "--child", model, "--shape", shapeString(shape), "--threads", strconv.Itoa(o.threads),
		"--reps", strconv.Itoa(o.reps), "--warmup", strconv.Itoa(o.warmup), "--gogc", strconv.Itoa(o.gogc)}
	if o.train {
		args = append(args, "--train")
	}
	if o.cpuprofile != "" {
		args = append(args, "--cpuprofile", o.cpuprofile)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(o.threads))
	return runJSONChild(cmd, "ctlens bench --child "+model)
}

// benchPeer runs the PyTorch peer script for model in a fresh process.
func benchPeer(model string, shape []int, o benchOpts) (benchResult, error) {
	if _, err := os.Stat(o.peerScript); err != nil {
		return benchResult{}, fmt.Errorf("peer script: %w (run from the repository root or set --peer-script)", err)
	}
	args := []string{o.peerScript, "--model", model, "--shape", shapeString(shape), "--threads", strconv.Itoa(o.threads),
		"--reps", strconv.Itoa(o.reps), "--warmup", strconv.Itoa(o.warmup)}
	if o.train {
		args = append(args, "--train")
	}
	cmd := exec.Command(o.python, args...)
	t := strconv.Itoa(o.threads)
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS="+t, "OPENBLAS_NUM_THREADS="+t, "MKL_NUM_THREADS="+t)
	return runJSONChild(cmd, o.python+" "+o.peerScript+" --model "+model)
}

// runJSONChild runs cmd and decodes the last line of its standard output.
func runJSONChild(cmd *exec.Cmd, what string) (benchResult, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return benchResult{}, fmt.Errorf("%s: %w: %s", what, err, lastLines(stderr.String(), 5))
	}
	var last string
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	var r benchResult
	if err := json.Unmarshal([]byte(last), &r); err != nil {
		return benchResult{}, fmt.Errorf("%s: output %q: %w", what, last, err)
	}
	if len(r.MS) == 0 {
		return benchResult{}, fmt.Errorf("%s: no timings in %q", what, last)
	}
	return r, nil
}

// benchGemm times C = A·B at the bar's sizes with the current SGEMM and
// prints GFLOP/s next to the FMA peak of threads cores.
func benchGemm(out io.Writer, threads, reps int) error {
	if threads < 1 || reps < 1 {
		return fmt.Errorf("bench gemm: --threads %d, --reps %d: want at least 1", threads, reps)
	}
	prev := runtime.GOMAXPROCS(threads)
	defer runtime.GOMAXPROCS(prev)
	load := loadAvg()
	peak := gemm.PeakGFLOPS(threads)
	fmt.Fprintf(out, "SGEMM %v, %d threads; FMA peak %.1f GFLOP/s; load average %s\n", gemm.Current(), threads, peak, load)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "M×N×K\tBEST MS\tGFLOP/S\t%PEAK\tGFLOP/CPU-S×THREADS\t%PEAK (CPU TIME)")
	for _, s := range [][3]int{{256, 2304, 4096}, {1024, 1024, 1024}} {
		m, n, k := s[0], s[1], s[2]
		a, b, c := benchFill(m*k, 1), benchFill(k*n, 2), make([]float32, m*n)
		gemm.Sgemm(false, false, m, n, k, 1, a, k, b, n, 0, c, n) // warm-up
		flop := 2 * float64(m) * float64(n) * float64(k)
		best, bestCPU := 0.0, 0.0
		for range max(reps, 3) {
			// One batch of products lasting at least 300 ms, so that the
			// process CPU time (in 10 ms ticks) is measured to about 3%.
			t0, c0 := time.Now(), processCPUSeconds()
			calls := 0
			for calls == 0 || time.Since(t0) < 300*time.Millisecond {
				gemm.Sgemm(false, false, m, n, k, 1, a, k, b, n, 0, c, n)
				calls++
			}
			wall, cpu := time.Since(t0).Seconds(), processCPUSeconds()-c0
			best = max(best, flop*float64(calls)/wall/1e9)
			if c0 >= 0 && cpu > 0 {
				// Per CPU second of the process, times the workers: the
				// rate had each worker a core of its own.
				bestCPU = max(bestCPU, flop*float64(calls)/cpu/1e9*float64(threads))
			}
		}
		fmt.Fprintf(tw, "%dx%dx%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\n", m, n, k, flop/best/1e6,
			best, 100*best/peak, bestCPU, 100*bestCPU/peak)
	}
	return tw.Flush()
}

// benchFill returns n deterministic values in [−1, 1).
func benchFill(n int, seed uint32) []float32 {
	v := make([]float32, n)
	x := seed*2654435761 + 1
	for i := range v {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		v[i] = float32(x)/(1<<31) - 1
	}
	return v
}

// shapeString formats a shape as 1x3x32x128x128.
func shapeString(s []int) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = strconv.Itoa(v)
	}
	return strings.Join(parts, "x")
}

// median returns the median of v (the mean of the middle two for even
// lengths), 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// peakRSSMB returns this process's peak resident set size (VmHWM) in MiB,
// or 0 where /proc/self/status cannot be read.
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// processCPUSeconds returns the user+system CPU time of this process from
// /proc/self/stat, or −1 where it cannot be read.
func processCPUSeconds() float64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return -1
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the whole line, in clock ticks (USER_HZ = 100).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (ut + st) / 100
}

// loadAvg returns the 1, 5 and 15 minute load averages, or "n/a".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "n/a"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "n/a"
	}
	return strings.Join(f[:3], " ")
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
