package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLoad: 16 concurrent clients on loopback each submit 3 tiny phantom
// studies to a server with 2 workers and 8 queue places, retrying on
// 429/503, then poll their jobs and read results and viewer volumes. No
// response may be a 5xx other than a deliberate 503, and every accepted
// job must end done (none lost, none failed). Bounded: 48 jobs, 60 s.
func TestLoad(t *testing.T) {
	const clients, perClient = 16, 3
	sc := &fakeScorer{delay: 20 * time.Millisecond}
	ts := newTestServer(t, Config{Scorer: sc, Workers: 2, QueueSize: 8})
	body, ct := form(t, tinyStudy(t, 30), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		accepted []Accepted
		submitMS []float64
		problems []string
	)
	record := func(code int) {
		mu.Lock()
		statuses[code]++
		mu.Unlock()
	}
	problem := func(format string, a ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	call := func(method, path string, b []byte) (*http.Response, []byte, error) {
		var rd io.Reader
		if b != nil {
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, ts.ts.URL+path, rd)
		if err != nil {
			return nil, nil, err
		}
		if b != nil {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := ts.ts.Client().Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		rb, err := io.ReadAll(resp.Body)
		record(resp.StatusCode)
		return resp, rb, err
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range perClient {
				var acc Accepted
				for try := 0; ; try++ {
					s := time.Now()
					resp, b, err := call("POST", "/api/v1/studies", body)
					if err != nil {
						problem("client %d: submit: %v", c, err)
						return
					}
					if resp.StatusCode == http.StatusAccepted {
						json.Unmarshal(b, &acc)
						mu.Lock()
						accepted = append(accepted, acc)
						submitMS = append(submitMS, float64(time.Since(s).Microseconds())/1000)
						mu.Unlock()
						break
					}
					if resp.StatusCode != 429 && resp.StatusCode != 503 {
						problem("client %d: submit: %d %s", c, resp.StatusCode, b)
						return
					}
					if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
						problem("client %d: %d without a valid Retry-After (%q)", c, resp.StatusCode, resp.Header.Get("Retry-After"))
						return
					}
					// The header says seconds; the test waits less to stay short.
					time.Sleep(time.Duration(10+5*(c%4)) * time.Millisecond)
				}
				for {
					resp, b, err := call("GET", acc.StatusURL, nil)
					if err != nil || resp.StatusCode != 200 {
						problem("client %d: poll: %v %s", c, err, b)
						return
					}
					var j Job
					json.Unmarshal(b, &j)
					if j.State == StateDone {
						break
					}
					if j.State == StateFailed {
						problem("client %d: job %s failed: %s", c, j.ID, j.Error)
						return
					}
					time.Sleep(15 * time.Millisecond)
				}
				paths := []string{"/api/v1/studies/" + acc.StudyID + "/result"}
				if r == 0 {
					paths = append(paths, "/api/v1/studies/"+acc.StudyID+"/series/0/volume.bin", "/api/v1/studies/"+acc.StudyID+"/series/0/heat.bin")
				}
				for _, p := range paths {
					if resp, b, err := call("GET", p, nil); err != nil || resp.StatusCode != 200 {
						problem("client %d: GET %s: %v %s", c, p, err, b)
					}
				}
			}
		}()
	}
	// A reader of metrics and health beside the clients.
	stop := make(chan struct{})
	var mwg sync.WaitGroup
	mwg.Add(1)
	go func() {
		defer mwg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			for _, p := range []string{"/metrics", "/healthz", "/readyz"} {
				if resp, b, err := call("GET", p, nil); err != nil || resp.StatusCode != 200 {
					problem("GET %s: %v %s", p, err, b)
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	mwg.Wait()
	elapsed := time.Since(t0)
	for _, p := range problems {
		t.Error(p)
	}
	for code := range statuses {
		if code >= 500 && code != 503 {
			t.Errorf("%d responses with status %d", statuses[code], code)
		}
	}
	if len(accepted) != clients*perClient {
		t.Fatalf("%d jobs accepted, want %d", len(accepted), clients*perClient)
	}
	counts, err := ts.store.countByState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if counts[StateDone] != clients*perClient || counts[StateFailed] != 0 || counts[StateQueued] != 0 || counts[StateRunning] != 0 {
		t.Fatalf("job states %v, want %d done", counts, clients*perClient)
	}
	if n := sc.calls.Load(); n != clients*perClient {
		t.Fatalf("scorer ran %d times, want %d", n, clients*perClient)
	}
	sort.Float64s(submitMS)
	t.Logf("load: %d clients × %d studies in %v; statuses %v; accepted-submit latency p50 %.1f ms, p95 %.1f ms",
		clients, perClient, elapsed.Round(time.Millisecond), statuses, submitMS[len(submitMS)/2], submitMS[len(submitMS)*95/100])
}

// helperDirEnv names the data folder of the server run by
// TestHelperServerProcess in a child process.
const helperDirEnv = "CTLENS_API_HELPER_DIR"

// TestHelperServerProcess is not a test: run by TestKillDuringJobs in a
// child process (with CTLENS_API_HELPER_DIR set), it serves on 127.0.0.1
// with a scorer that never finishes, writes its address to <dir>/addr
// and waits to be killed.
func TestHelperServerProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		return
	}
	s, err := New(Config{DataDir: dir, Scorer: &fakeScorer{gate: make(chan struct{})}, Workers: 2, QueueSize: 8, Logger: quietLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ln, err := listenLoopback()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := os.WriteFile(filepath.Join(dir, "addr.tmp"), []byte(ln.Addr().String()), 0o600); err != nil {
		os.Exit(2)
	}
	os.Rename(filepath.Join(dir, "addr.tmp"), filepath.Join(dir, "addr"))
	s.Serve(ln)
	os.Exit(0)
}

func listenLoopback() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// TestKillDuringJobs: a server process is killed (SIGKILL) while two jobs
// run and two wait; a new server on the same data folder finds them
// (running ones re-queued) and completes all four.
func TestKillDuringJobs(t *testing.T) {
	if os.Getenv(helperDirEnv) != "" {
		t.Skip("inside the helper process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	var addr []byte
	waitFor(t, 30*time.Second, "the child server's address", func() bool {
		var err error
		addr, err = os.ReadFile(filepath.Join(dir, "addr"))
		return err == nil
	})
	if !strings.HasPrefix(string(addr), "127.0.0.1:") {
		t.Fatalf("child listens on %q", addr)
	}
	base := "http://" + string(addr)
	post := func() Accepted {
		body, ct := form(t, tinyStudy(t, 40), nil)
		resp, err := http.Post(base+"/api/v1/studies", ct, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 202 {
			t.Fatalf("submit to child: %d %s", resp.StatusCode, b)
		}
		var a Accepted
		json.Unmarshal(b, &a)
		return a
	}
	var jobs []Accepted
	for range 4 {
		jobs = append(jobs, post())
	}
	running := func() int {
		n := 0
		for _, a := range jobs {
			resp, err := http.Get(base + a.StatusURL)
			if err != nil {
				t.Fatal(err)
			}
			var j Job
			json.NewDecoder(resp.Body).Decode(&j)
			resp.Body.Close()
			if j.State == StateRunning {
				n++
			}
		}
		return n
	}
	waitFor(t, 20*time.Second, "two jobs running in the child", func() bool { return running() == 2 })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true

	st := openDB(t, dir)
	counts, err := st.countByState(context.Background())
	st.close()
	if err != nil {
		t.Fatal(err)
	}
	if counts[StateRunning] != 2 || counts[StateQueued] != 2 {
		t.Fatalf("after the kill: %v, want 2 running and 2 queued", counts)
	}
	sc := &fakeScorer{}
	ts := newTestServer(t, Config{DataDir: dir, Scorer: sc})
	for _, a := range jobs {
		if j := ts.waitState(t, a.JobID, 30*time.Second, StateDone, StateFailed); j.State != StateDone {
			t.Fatalf("after restart %+v", j)
		}
	}
	if n := sc.calls.Load(); n != 4 {
		t.Fatalf("restarted server scored %d jobs, want 4", n)
	}
}
