package api

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

// fakeScorer reads the input with dicomio (as the real scorer does), and
// answers a fixed result: probabilities CP 0.1, NCP 0.7, Normal 0.2 and,
// with a heatmap, heat(i, j, k) = i / (cols-1) written as heat.nii.gz
// (float32) plus a montage.
type fakeScorer struct {
	// delay is how long each Score takes (it returns early, with the
	// context's error, when cancelled).
	delay time.Duration
	// gate, when not nil, blocks Score until it is closed or ctx ends.
	gate chan struct{}
	// fail makes Score fail with this error; panicMsg makes it panic.
	fail     error
	panicMsg string
	// failFn, when not nil, makes Score fail with its error.
	failFn func(req ScoreRequest) error
	// modelsPanic makes Models panic.
	modelsPanic atomic.Bool
	// notReady, when set, is Ready's error message.
	notReady atomic.Pointer[string]
	started  atomic.Int64
	calls    atomic.Int64
}

func (f *fakeScorer) Models() []ModelInfo {
	if f.modelsPanic.Load() {
		panic("fake models exploded")
	}
	return []ModelInfo{
		{Name: "fake-small", Arch: "resnet10", Classes: []string{"CP", "NCP", "Normal"}, Params: 1234, Default: true, Description: "test model"},
		{Name: "fake-other", Arch: "densenet121", Classes: []string{"CP", "NCP", "Normal"}, Params: 99, Description: "another"},
	}
}

func (f *fakeScorer) Ready() error {
	if m := f.notReady.Load(); m != nil {
		return errors.New(*m)
	}
	return nil
}

func (f *fakeScorer) Score(ctx context.Context, req ScoreRequest) (json.RawMessage, error) {
	f.started.Add(1)
	defer f.calls.Add(1)
	progress := func(stage string, frac float64) {
		if req.Progress != nil {
			req.Progress(stage, frac)
		}
	}
	progress("discover", 0.05)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.panicMsg != "" {
		panic(f.panicMsg)
	}
	if f.fail != nil {
		return nil, f.fail
	}
	if f.failFn != nil {
		return nil, f.failFn(req)
	}
	progress("load", 0.2)
	scans, uids, err := readInput(ctx, req.Input, req.Limits)
	if err != nil {
		return nil, err
	}
	model := req.Model
	if model == "" {
		model = "fake-small"
	}
	method := req.Method
	if method == "" {
		method = "gradcam"
	}
	res := map[string]any{"model": map[string]any{"name": model, "version": "1", "arch": "resnet10",
		"classes": []string{"CP", "NCP", "Normal"}, "caveat": Caveat}}
	var series []map[string]any
	for n, v := range scans {
		progress("infer", 0.5)
		sr := map[string]any{
			"series_uid": uids[n], "description": "fake series", "dims": v.Dims, "spacing": v.Spacing,
			"probabilities": map[string]float64{"CP": 0.1, "NCP": 0.7, "Normal": 0.2}, "predicted": "NCP",
			"preprocessing": []any{}, "timings_ms": map[string]float64{"load": 1, "infer": 2}, "heatmap": nil, "warnings": []string{},
		}
		if req.Heatmap {
			progress("heatmap", 0.8)
			dir := filepath.Join(req.OutDir, strconv.Itoa(n))
			heat := v.Clone()
			d := v.Dims
			for k := range d[2] {
				for j := range d[1] {
					for i := range d[0] {
						heat.Set(i, j, k, float32(i)/float32(d[0]-1))
					}
				}
			}
			if err := dicomio.WriteNIfTI(filepath.Join(dir, "heat.nii.gz"), heat, dicomio.NIfTIFloat32); err != nil {
				return nil, err
			}
			img := image.NewGray(image.Rect(0, 0, 8, 4))
			img.Set(1, 1, color.Gray{Y: 200})
			var b bytes.Buffer
			if err := png.Encode(&b, img); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(dir, "montage.png"), b.Bytes(), 0o600); err != nil {
				return nil, err
			}
			share := 0.5
			sr["heatmap"] = map[string]any{"method": method, "layer": "layer4", "class": "NCP",
				"peak_mm": []float64{1, 2, 3}, "peak_voxel": []int{d[0] - 1, 0, 0}, "lung_share": share}
		}
		series = append(series, sr)
	}
	res["series"] = series
	// Scorers name inputs relative to the input folder: the server shows
	// the client's names instead.
	res["skipped"] = []map[string]string{{"path": "f000001.dcm", "reason": "listed by the fake"}}
	progress("done", 1)
	return json.Marshal(res)
}

// readInput loads every series of a stored input.
func readInput(ctx context.Context, in string, lim dicomio.Limits) ([]*volume.Volume, []string, error) {
	if strings.HasSuffix(in, ".nii") || strings.HasSuffix(in, ".nii.gz") {
		v, err := dicomio.ReadNIfTI(in, lim)
		if err != nil {
			return nil, nil, err
		}
		return []*volume.Volume{v}, []string{""}, nil
	}
	d, err := dicomio.Discover(in, lim)
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	if len(d.Series) == 0 {
		return nil, nil, errors.New("no CT series")
	}
	var vs []*volume.Volume
	var uids []string
	for _, s := range d.Series {
		v, err := s.Load(ctx)
		if err != nil {
			return nil, nil, err
		}
		vs = append(vs, v)
		uids = append(uids, s.UID)
	}
	return vs, uids, nil
}

// phantomSeries writes a small synthetic CT series (cols×rows×slices) and
// returns its files and the phantom's HU volume.
func phantomSeries(t testing.TB, dir string, seed uint64, cols, rows, slices int, patient string) ([]string, *volume.Volume) {
	t.Helper()
	p, err := volume.NewPhantom(volume.PhantomOptions{Seed: seed, Cols: cols, Rows: rows, Slices: slices})
	if err != nil {
		t.Fatal(err)
	}
	files, err := dicomio.WriteSeries(dir, p.CT, dicomio.WriteOptions{PatientName: patient, PatientID: "PID-998877", Seed: seed, SeriesDescription: "phantom"})
	if err != nil {
		t.Fatal(err)
	}
	return files, p.CT
}

// formFile is one file part of an upload form.
type formFile struct {
	name string
	data []byte
}

// form builds a multipart body with the given files and fields.
func form(t testing.TB, files []formFile, fields map[string]string) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		h := make(textproto.MIMEHeader)
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename="%s"`, f.name))
		h.Set("Content-Type", "application/octet-stream")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(f.data)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), mw.FormDataContentType()
}

// readFiles returns the files as form parts named by their base names.
func readFiles(t testing.TB, paths []string) []formFile {
	t.Helper()
	var out []formFile
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, formFile{name: filepath.Base(p), data: b})
	}
	return out
}

// zipOf builds a zip archive of the given entries.
func zipOf(t testing.TB, entries []formFile, method uint16) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, e := range entries {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// testServer is a Server behind an httptest server on 127.0.0.1.
type testServer struct {
	*Server
	ts    *httptest.Server
	token string
	logs  *syncBuffer
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTestServer starts a server on cfg (DataDir defaults to a temporary
// folder, Scorer to a fakeScorer, logs to a buffer at debug level) and
// shuts it down at the end of the test.
func newTestServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Scorer == nil {
		cfg.Scorer = &fakeScorer{}
	}
	logs := &syncBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Grace == 0 {
		cfg.Grace = 2 * time.Second
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return &testServer{Server: s, ts: ts, token: cfg.Token, logs: logs}
}

// do sends a request with the server's token (if any) and returns the
// response with its body read.
func (ts *testServer) do(t testing.TB, method, path string, body []byte, ctype string) (*http.Response, []byte) {
	t.Helper()
	return ts.doAuth(t, method, path, body, ctype, ts.token)
}

func (ts *testServer) doAuth(t testing.TB, method, path string, body []byte, ctype, token string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := ts.ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

// submit posts a study and returns the 202 answer (failing otherwise).
func (ts *testServer) submit(t testing.TB, files []formFile, fields map[string]string) Accepted {
	t.Helper()
	body, ct := form(t, files, fields)
	resp, b := ts.do(t, "POST", "/api/v1/studies", body, ct)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s", resp.StatusCode, b)
	}
	var a Accepted
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// job returns the job's state.
func (ts *testServer) job(t testing.TB, id string) Job {
	t.Helper()
	resp, b := ts.do(t, "GET", "/api/v1/jobs/"+id, nil, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("job %s: %d %s", id, resp.StatusCode, b)
	}
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// waitState polls a job until its state is one of want, failing after
// the timeout.
func (ts *testServer) waitState(t testing.TB, id string, timeout time.Duration, want ...string) Job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j := ts.job(t, id)
		for _, w := range want {
			if j.State == w {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: state %s (stage %s, error %q) after %v, want %v", id, j.State, j.Stage, j.Error, timeout, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// errorOf decodes an error body.
func errorOf(t testing.TB, b []byte) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	return e
}

func itoa(i int) string { return strconv.Itoa(i) }

func atof(t testing.TB, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
