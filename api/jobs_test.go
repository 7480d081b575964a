package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond every 5 ms until it holds, failing after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tinyStudy(t testing.TB, seed uint64) []formFile {
	t.Helper()
	files, _ := phantomSeries(t, t.TempDir(), seed, 16, 16, 4, "")
	return readFiles(t, files)
}

func TestQueueFullAndNotReady(t *testing.T) {
	gate := make(chan struct{})
	sc := &fakeScorer{gate: gate}
	ts := newTestServer(t, Config{Scorer: sc, Workers: 1, QueueSize: 2})
	study := tinyStudy(t, 7)
	a1 := ts.submit(t, study, nil)
	waitFor(t, 10*time.Second, "job 1 to start", func() bool { return sc.started.Load() == 1 })
	a2 := ts.submit(t, study, nil)
	a3 := ts.submit(t, study, nil)

	body, ct := form(t, study, nil)
	for _, path := range []string{"/api/v1/studies", "/api/v1/score"} {
		resp, b := ts.do(t, "POST", path, body, ct)
		e := errorOf(t, b)
		ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if resp.StatusCode != 429 || e.Code != "queue_full" || !strings.Contains(e.Error, "queue is full (2 places)") || err != nil || ra < 1 || ra > 600 {
			t.Fatalf("POST %s on a full queue: %d Retry-After %q %s", path, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
	}

	resp, b := ts.do(t, "GET", "/api/v1/studies/"+a1.StudyID+"/result", nil, "")
	if e := errorOf(t, b); resp.StatusCode != 409 || e.Error != "job is running" {
		t.Fatalf("result of a running job: %d %s", resp.StatusCode, b)
	}
	resp, b = ts.do(t, "GET", "/api/v1/studies/"+a2.StudyID+"/series/0/volume.bin", nil, "")
	if e := errorOf(t, b); resp.StatusCode != 409 || e.Error != "job is queued" {
		t.Fatalf("volume of a queued job: %d %s", resp.StatusCode, b)
	}
	if j := ts.job(t, a2.JobID); j.State != StateQueued || j.Stage != "upload" || j.Progress != 0 {
		t.Fatalf("queued job %+v", j)
	}
	if j := ts.job(t, a1.JobID); j.State != StateRunning || j.Stage != "discover" {
		t.Fatalf("running job %+v", j)
	}
	_, m := ts.do(t, "GET", "/metrics", nil, "")
	for _, want := range []string{"ctlens_queue_depth 2\n", "ctlens_queue_rejected_total 2\n", "ctlens_workers_busy 1\n", `ctlens_jobs{state="queued"} 2`} {
		if !strings.Contains(string(m), want) {
			t.Fatalf("metrics lack %q:\n%s", want, m)
		}
	}

	close(gate)
	for _, a := range []Accepted{a1, a2, a3} {
		if j := ts.waitState(t, a.JobID, 20*time.Second, StateDone, StateFailed); j.State != StateDone {
			t.Fatalf("job %+v", j)
		}
	}
	ts.submit(t, study, nil)
}

func TestJobErrorsAndSyncScore(t *testing.T) {
	sc := &fakeScorer{}
	ts := newTestServer(t, Config{Scorer: sc})
	study := tinyStudy(t, 8)
	body, ct := form(t, study, nil)
	resp, b := ts.do(t, "POST", "/api/v1/score", body, ct)
	var res Result
	if resp.StatusCode != 200 || json.Unmarshal(b, &res) != nil || len(res.Series) != 1 || res.Series[0].Probabilities["NCP"] != 0.7 {
		t.Fatalf("sync score: %d %s", resp.StatusCode, b)
	}
	// The synchronous study is stored like any other.
	if resp, b := ts.do(t, "GET", "/api/v1/studies/"+res.StudyID+"/report.md", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("report of a sync study: %d %s", resp.StatusCode, b)
	}

	// A failing job: its error names the client's file, not the stored one.
	sc.failFn = func(req ScoreRequest) error {
		return fmt.Errorf("dicomio: %s: unsupported transfer syntax 1.2.840.10008.1.2.4.100", filepath.Join(req.Input, "f000002.dcm"))
	}
	resp, b = ts.do(t, "POST", "/api/v1/score", body, ct)
	e := errorOf(t, b)
	want := "dicomio: " + study[1].name + ": unsupported transfer syntax"
	if resp.StatusCode != 422 || e.Code != "job_failed" || !strings.Contains(e.Error, want) || strings.Contains(e.Error, "f000002") {
		t.Fatalf("sync score of a failing job: %d %s (want %q)", resp.StatusCode, b, want)
	}
	acc := ts.submit(t, study, nil)
	j := ts.waitState(t, acc.JobID, 10*time.Second, StateFailed, StateDone)
	if j.State != StateFailed || !strings.Contains(j.Error, want) {
		t.Fatalf("failed job %+v", j)
	}
	resp, b = ts.do(t, "GET", "/api/v1/studies/"+acc.StudyID+"/result", nil, "")
	if e := errorOf(t, b); resp.StatusCode != 409 || e.Code != "job_failed" || !strings.Contains(e.Error, want) {
		t.Fatalf("result of a failed job: %d %s", resp.StatusCode, b)
	}
	for _, p := range []string{"/api/v1/jobs/aaaaaaaaaaaaaaaaaaaa", "/api/v1/jobs/../../etc", "/api/v1/jobs/x", "/api/v1/studies/aaaaaaaaaaaaaaaaaaaa/result",
		"/api/v1/studies/aaaaaaaaaaaaaaaaaaaa/report.md", "/api/v1/studies/aaaaaaaaaaaaaaaaaaaa/series/0/heat.bin", "/api/v1/nothing"} {
		resp, b := ts.do(t, "GET", p, nil, "")
		if resp.StatusCode != 404 || errorOf(t, b).Error == "" {
			t.Fatalf("GET %s: %d %s, want 404", p, resp.StatusCode, b)
		}
	}
	if resp, b := ts.do(t, "DELETE", "/api/v1/studies/aaaaaaaaaaaaaaaaaaaa", nil, ""); resp.StatusCode != 404 {
		t.Fatalf("DELETE unknown: %d %s", resp.StatusCode, b)
	}
	if resp, b := ts.do(t, "PUT", "/api/v1/models", nil, ""); resp.StatusCode != 405 || errorOf(t, b).Code != "method_not_allowed" {
		t.Fatalf("PUT models: %d %s", resp.StatusCode, b)
	}
}

func TestDeleteRunningJob(t *testing.T) {
	sc := &fakeScorer{gate: make(chan struct{})}
	ts := newTestServer(t, Config{Scorer: sc, Workers: 1})
	a := ts.submit(t, tinyStudy(t, 9), nil)
	waitFor(t, 10*time.Second, "job to start", func() bool { return sc.started.Load() == 1 })
	b := ts.submit(t, tinyStudy(t, 10), nil)
	for _, acc := range []Accepted{a, b} { // running, then queued
		if resp, body := ts.do(t, "DELETE", "/api/v1/studies/"+acc.StudyID, nil, ""); resp.StatusCode != 204 {
			t.Fatalf("delete: %d %s", resp.StatusCode, body)
		}
		if _, err := os.Stat(ts.studyDir(acc.StudyID)); !os.IsNotExist(err) {
			t.Fatalf("files of %s still there", acc.StudyID)
		}
		if resp, _ := ts.do(t, "GET", "/api/v1/jobs/"+acc.JobID, nil, ""); resp.StatusCode != 404 {
			t.Fatalf("job after delete: %d", resp.StatusCode)
		}
	}
	if w, r, n := ts.q.stats(); w != 0 || r != 0 || n != 0 {
		t.Fatalf("queue after deletes: %d waiting, %d reserved, %d running", w, r, n)
	}
}

// openDB opens the database of a data folder that no server uses.
func openDB(t testing.TB, dir string) *store {
	t.Helper()
	st, err := openStore(filepath.Join(dir, "ctlens.db"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func jobState(t testing.TB, st *store, id string) *jobRow {
	t.Helper()
	j, err := st.job(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestShutdownRequeuesThenRestartCompletes: a job still running when the
// grace period ends goes back to queued; a new server on the same data
// folder runs it (and the one that never started) to completion.
func TestShutdownRequeuesThenRestartCompletes(t *testing.T) {
	dir := t.TempDir()
	sc := &fakeScorer{gate: make(chan struct{})}
	s1, err := New(Config{DataDir: dir, Scorer: sc, Workers: 1, Grace: 200 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h1 := httptest.NewServer(s1.Handler())
	ts1 := &testServer{Server: s1, ts: h1}
	a := ts1.submit(t, tinyStudy(t, 11), nil)
	b := ts1.submit(t, tinyStudy(t, 12), nil)
	waitFor(t, 10*time.Second, "job to start", func() bool { return sc.started.Load() == 1 })

	done := make(chan error)
	t0 := time.Now()
	go func() { done <- s1.Shutdown(context.Background()) }()
	waitFor(t, 5*time.Second, "draining", s1.draining.Load)
	body, ct := form(t, tinyStudy(t, 13), nil)
	resp, rb := ts1.do(t, "POST", "/api/v1/studies", body, ct)
	if e := errorOf(t, rb); resp.StatusCode != 503 || e.Code != "shutting_down" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("submit while shutting down: %d %s", resp.StatusCode, rb)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if el := time.Since(t0); el < 200*time.Millisecond || el > 5*time.Second {
		t.Fatalf("shutdown took %v with a 200 ms grace", el)
	}
	h1.Close()
	st := openDB(t, dir)
	for _, acc := range []Accepted{a, b} {
		if j := jobState(t, st, acc.JobID); j.State != StateQueued {
			t.Fatalf("after shutdown job %s is %s, want queued", acc.JobID, j.State)
		}
	}
	st.close()

	ts2 := newTestServer(t, Config{DataDir: dir})
	for _, acc := range []Accepted{a, b} {
		if j := ts2.waitState(t, acc.JobID, 20*time.Second, StateDone, StateFailed); j.State != StateDone {
			t.Fatalf("after restart %+v", j)
		}
	}
}

func TestShutdownLetsRunningJobFinish(t *testing.T) {
	dir := t.TempDir()
	sc := &fakeScorer{delay: 300 * time.Millisecond}
	s1, err := New(Config{DataDir: dir, Scorer: sc, Workers: 1, Grace: 10 * time.Second, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h1 := httptest.NewServer(s1.Handler())
	defer h1.Close()
	a := (&testServer{Server: s1, ts: h1}).submit(t, tinyStudy(t, 14), nil)
	waitFor(t, 10*time.Second, "job to start", func() bool { return sc.started.Load() == 1 })
	if err := s1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := openDB(t, dir)
	defer st.close()
	if j := jobState(t, st, a.JobID); j.State != StateDone || len(j.Result) == 0 {
		t.Fatalf("job after a graceful shutdown: %s", j.State)
	}
}

// TestRecoverRunningJobs: jobs found "running" in SQLite at start are
// queued again and complete, unless they have used up their attempts.
func TestRecoverRunningJobs(t *testing.T) {
	dir := t.TempDir()
	s1, err := New(Config{DataDir: dir, Scorer: &fakeScorer{gate: make(chan struct{})}, Workers: 1, QueueSize: 4, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h1 := httptest.NewServer(s1.Handler())
	ts1 := &testServer{Server: s1, ts: h1}
	a := ts1.submit(t, tinyStudy(t, 15), nil)
	b := ts1.submit(t, tinyStudy(t, 16), nil)
	h1.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s1.cfg.Grace = time.Millisecond
	if err := s1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// What a crash leaves: both rows "running", b on its third attempt.
	st := openDB(t, dir)
	if _, err := st.db.Exec(`UPDATE jobs SET state = 'running', stage = 'infer', progress = 0.5, attempts = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.db.Exec(`UPDATE jobs SET attempts = 3 WHERE id = ?`, b.JobID); err != nil {
		t.Fatal(err)
	}
	st.close()

	ts2 := newTestServer(t, Config{DataDir: dir})
	if j := ts2.waitState(t, a.JobID, 20*time.Second, StateDone, StateFailed); j.State != StateDone {
		t.Fatalf("recovered job %+v", j)
	}
	j := ts2.job(t, b.JobID)
	if j.State != StateFailed || !strings.Contains(j.Error, "stopped during this job 3 times") {
		t.Fatalf("job interrupted 3 times: %+v", j)
	}
	if !strings.Contains(ts2.logs.String(), `"requeued":1`) {
		t.Fatalf("recovery not logged: %s", ts2.logs.String())
	}
}

func TestRetention(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	ts := newTestServer(t, Config{Retention: time.Hour, RetentionInterval: 10 * time.Millisecond, Now: clock})
	old := ts.submit(t, tinyStudy(t, 17), nil)
	ts.waitState(t, old.JobID, 20*time.Second, StateDone)
	if resp, _ := ts.do(t, "GET", "/api/v1/studies/"+old.StudyID+"/series/0/heat.bin", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("heat.bin: %d", resp.StatusCode)
	}
	now.Add(int64(59 * time.Minute))
	young := ts.submit(t, tinyStudy(t, 18), nil)
	ts.waitState(t, young.JobID, 20*time.Second, StateDone)
	time.Sleep(50 * time.Millisecond) // a few sweeps: nothing is an hour old yet
	if resp, _ := ts.do(t, "GET", "/api/v1/jobs/"+old.JobID, nil, ""); resp.StatusCode != 200 {
		t.Fatalf("59-minute-old study deleted (%d)", resp.StatusCode)
	}
	now.Add(int64(2 * time.Minute)) // old: 61 min, young: 2 min
	waitFor(t, 10*time.Second, "the old study's rows and files to go", func() bool {
		resp, _ := ts.do(t, "GET", "/api/v1/jobs/"+old.JobID, nil, "")
		_, err := os.Stat(ts.studyDir(old.StudyID))
		return resp.StatusCode == 404 && os.IsNotExist(err)
	})
	if _, err := ts.store.study(context.Background(), old.StudyID); !errors.Is(err, errNotFound) {
		t.Fatalf("expired study's row remains: %v", err)
	}
	if resp, _ := ts.do(t, "GET", "/api/v1/studies/"+young.StudyID+"/result", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("young study gone (%d)", resp.StatusCode)
	}
	if _, err := os.Stat(ts.studyDir(young.StudyID)); err != nil {
		t.Fatal(err)
	}
}

func TestPanicRecovery(t *testing.T) {
	sc := &fakeScorer{}
	ts := newTestServer(t, Config{Scorer: sc})
	sc.modelsPanic.Store(true)
	resp, b := ts.do(t, "GET", "/api/v1/models", nil, "")
	e := errorOf(t, b)
	if resp.StatusCode != 500 || e.Code != "internal" || !strings.Contains(e.Error, resp.Header.Get("X-Request-ID")) {
		t.Fatalf("panicking handler: %d %s", resp.StatusCode, b)
	}
	sc.modelsPanic.Store(false)
	if resp, b := ts.do(t, "GET", "/api/v1/models", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("models after a panic: %d %s", resp.StatusCode, b)
	}
	if resp, _ := ts.do(t, "GET", "/healthz", nil, ""); resp.StatusCode != 200 {
		t.Fatal("healthz after a panic")
	}
	if !strings.Contains(ts.logs.String(), "handler panicked") {
		t.Fatal("panic not logged")
	}
	// A panicking scorer fails its job; the worker lives on.
	sc.panicMsg = "scorer exploded"
	a := ts.submit(t, tinyStudy(t, 19), nil)
	if j := ts.waitState(t, a.JobID, 10*time.Second, StateFailed, StateDone); j.State != StateFailed || !strings.Contains(j.Error, "scorer panicked: scorer exploded") {
		t.Fatalf("job of a panicking scorer: %+v", j)
	}
	sc.panicMsg = ""
	a = ts.submit(t, tinyStudy(t, 20), nil)
	ts.waitState(t, a.JobID, 10*time.Second, StateDone)
}

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-z_]+="(?:[^"\\]|\\.)*"(?:,[a-z_]+="(?:[^"\\]|\\.)*")*\})? (-?[0-9.]+(?:e[+-]?[0-9]+)?|\+Inf|NaN)$`)

// parseMetrics checks the text exposition format (every sample after a
// TYPE line of its family) and returns the samples by name{labels}.
func parseMetrics(t testing.TB, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	typed := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			f := strings.Fields(line)
			if len(f) != 4 {
				t.Fatalf("bad TYPE line %q", line)
			}
			typed[f[2]] = f[3]
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("bad sample line %q", line)
		}
		fam := m[1]
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b := strings.TrimSuffix(fam, suf); typed[b] == "histogram" {
				fam = b
			}
		}
		if typed[fam] == "" {
			t.Fatalf("sample %q before its TYPE line", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatal(err)
		}
		out[m[1]+m[2]] = v
	}
	return out
}

func TestMetricsAndReadyz(t *testing.T) {
	sc := &fakeScorer{}
	ts := newTestServer(t, Config{Scorer: sc})
	for range 3 {
		ts.do(t, "GET", "/healthz", nil, "")
	}
	ts.do(t, "GET", "/api/v1/jobs/aaaaaaaaaaaaaaaaaaaa", nil, "")
	t0 := time.Now()
	a := ts.submit(t, tinyStudy(t, 21), nil)
	ts.waitState(t, a.JobID, 20*time.Second, StateDone)
	elapsed := time.Since(t0).Seconds()
	resp, b := ts.do(t, "GET", "/metrics", nil, "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("metrics: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	m := parseMetrics(t, string(b))
	for k, want := range map[string]float64{
		`ctlens_http_requests_total{route="/healthz",method="GET",status="200"}`:          3,
		`ctlens_http_requests_total{route="/api/v1/jobs/{id}",method="GET",status="404"}`: 1,
		`ctlens_http_requests_total{route="/api/v1/studies",method="POST",status="202"}`:  1,
		`ctlens_jobs{state="done"}`:                  1,
		`ctlens_jobs{state="queued"}`:                0,
		`ctlens_jobs_finished_total{outcome="done"}`: 1,
		`ctlens_queue_depth`:                         0,
		`ctlens_queue_capacity`:                      16,
		`ctlens_workers`:                             2,
		`ctlens_inference_seconds_count`:             1,
		`ctlens_inference_seconds_bucket{le="+Inf"}`: 1,
		`ctlens_inference_seconds_bucket{le="600"}`:  1,
	} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	if s := m["ctlens_inference_seconds_sum"]; s <= 0 || s > elapsed {
		t.Errorf("inference seconds sum %v, want in (0, %v]", s, elapsed)
	}

	resp, b = ts.do(t, "GET", "/readyz", nil, "")
	if resp.StatusCode != 200 || string(b) != "ready\n" {
		t.Fatalf("readyz: %d %s", resp.StatusCode, b)
	}
	msg := "weights not loaded"
	sc.notReady.Store(&msg)
	resp, b = ts.do(t, "GET", "/readyz", nil, "")
	if e := errorOf(t, b); resp.StatusCode != 503 || !strings.Contains(e.Error, "weights not loaded") {
		t.Fatalf("readyz with the model not ready: %d %s", resp.StatusCode, b)
	}
	sc.notReady.Store(nil)
	if err := os.Chmod(filepath.Join(ts.cfg.DataDir, "studies"), 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(filepath.Join(ts.cfg.DataDir, "studies"), 0o700)
	if os.Geteuid() != 0 { // root writes anyway
		resp, b = ts.do(t, "GET", "/readyz", nil, "")
		if e := errorOf(t, b); resp.StatusCode != 503 || !strings.Contains(e.Error, "storage not writable") {
			t.Fatalf("readyz with read-only storage: %d %s", resp.StatusCode, b)
		}
	}
	resp, b = ts.do(t, "GET", "/healthz", nil, "")
	if resp.StatusCode != 200 || string(b) != "ok\n" {
		t.Fatalf("healthz: %d %s", resp.StatusCode, b)
	}
}

// TestNoPatientDataInLogs runs uploads whose file names and DICOM
// attributes carry a patient's name and id, and checks that neither
// reaches the logs.
func TestNoPatientDataInLogs(t *testing.T) {
	ts := newTestServer(t, Config{})
	files, _ := phantomSeries(t, t.TempDir(), 22, 16, 16, 4, "Doe^Jane")
	study := readFiles(t, files)
	for i := range study {
		study[i].name = "Doe_Jane_PID-998877/" + study[i].name
	}
	a := ts.submit(t, study, nil)
	ts.waitState(t, a.JobID, 20*time.Second, StateDone)
	ts.do(t, "GET", "/api/v1/studies/"+a.StudyID+"/report.md", nil, "")
	body, ct := form(t, []formFile{{name: "Doe_Jane_PID-998877.txt", data: []byte("not a scan")}}, nil)
	if resp, _ := ts.do(t, "POST", "/api/v1/studies", body, ct); resp.StatusCode != 415 {
		t.Fatalf("text upload: %d", resp.StatusCode)
	}
	logs := ts.logs.String()
	if !strings.Contains(logs, a.StudyID) || !strings.Contains(logs, a.JobID) {
		t.Fatalf("logs lack the study and job ids:\n%s", logs)
	}
	for _, secret := range []string{"Doe", "Jane", "998877"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain %q:\n%s", secret, logs)
		}
	}
}

// TestUploadTimeout: an upload that stalls gets 408 when the upload
// timeout passes, and the server keeps serving.
func TestUploadTimeout(t *testing.T) {
	ts := newTestServer(t, Config{UploadTimeout: 300 * time.Millisecond})
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("POST", ts.ts.URL+"/api/v1/studies", pr)
	req.Header.Set("Content-Type", "multipart/form-data; boundary=XyZ")
	go func() {
		pw.Write([]byte("--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.dcm\"\r\n\r\n"))
		pw.Write(make([]byte, 1000)) // then nothing more
	}()
	t0 := time.Now()
	resp, err := ts.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if e := errorOf(t, b); resp.StatusCode != 408 || e.Code != "timeout" || !strings.Contains(e.Error, `"slow.dcm"`) {
		t.Fatalf("stalled upload: %d %s", resp.StatusCode, b)
	}
	if el := time.Since(t0); el > 5*time.Second {
		t.Fatalf("stalled upload answered after %v", el)
	}
	if resp, _ := ts.do(t, "GET", "/healthz", nil, ""); resp.StatusCode != 200 {
		t.Fatal("healthz after a timed-out upload")
	}
	entries, _ := os.ReadDir(filepath.Join(ts.cfg.DataDir, "studies"))
	if len(entries) != 0 {
		t.Fatalf("timed-out upload left %d studies", len(entries))
	}
}
