package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ctlens/ctlens/api"
	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

func TestServeParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"2GiB", 2 << 30}, {"512MiB", 512 << 20}, {"64 KiB", 64 << 10}, {"1GB", 1e9}, {"10MB", 1e7},
		{"123", 123}, {"7B", 7}, {"1tib", 1 << 40}, {"0", 0}, {"-5MiB", 0}, {"1.5GiB", 0}, {"GiB", 0}, {"9999999TiB", 0},
	} {
		got, err := parseSize(c.in)
		if (c.want == 0) != (err != nil) || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

// serveTestOptions are the flags' defaults for a test on 127.0.0.1.
func serveTestOptions(data string) serveOptions {
	return serveOptions{addr: "127.0.0.1:0", data: data, workers: 1, queue: 4, maxUpload: "64MiB", logLevel: "info",
		maxFiles: 1000, maxVoxels: 1 << 24, retention: time.Hour, grace: 5 * time.Second}
}

func TestServeRefusesBadSettings(t *testing.T) {
	t.Setenv("CTLENS_TOKEN", "")
	data := t.TempDir()
	for _, c := range []struct {
		mod  func(*serveOptions)
		want string
	}{
		{func(o *serveOptions) { o.addr = "0.0.0.0:0" }, "not loopback: set a token"},
		{func(o *serveOptions) { o.addr = ":0" }, "not loopback: set a token"},
		{func(o *serveOptions) { o.maxUpload = "lots" }, "--max-upload"},
		{func(o *serveOptions) { o.workers = 0 }, "--workers"},
		{func(o *serveOptions) { o.logLevel = "loud" }, "--log-level"},
		{func(o *serveOptions) { o.model = filepath.Join(data, "missing.safetensors") }, "--model"},
	} {
		o := serveTestOptions(data)
		c.mod(&o)
		err := runServe(context.Background(), io.Discard, io.Discard, o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error containing %q", o, err, c.want)
		}
	}
	// Through the command line as well, flags reset afterwards.
	if out, err := run(t, "serve", "--addr", "0.0.0.0:0", "--data", data); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("serve on 0.0.0.0 without a token: %v\n%s", err, out)
	}
}

// startServe runs runServe until the returned stop function is called;
// it returns the base URL.
func startServe(t *testing.T, o serveOptions) (string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var logs bytes.Buffer
	done := make(chan error, 1)
	go func() {
		err := runServe(ctx, pw, &logs, o)
		pw.Close()
		done <- err
	}()
	lines := bufio.NewScanner(pr)
	re := regexp.MustCompile(`serving on (http://127\.0\.0\.1:\d+)`)
	var base string
	for lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil {
			base = m[1]
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if base == "" {
		cancel()
		t.Fatalf("serve did not start: %v", <-done)
	}
	return base, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("serve did not stop")
		}
	}
}

func serveGet(t *testing.T, url, token string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestServeEndToEnd runs `ctlens serve` with the bundled model, the web UI
// and a token on 127.0.0.1, scores a phantom series through the API, then
// stops and restarts it on the same data folder.
func TestServeEndToEnd(t *testing.T) {
	data := t.TempDir()
	o := serveTestOptions(data)
	o.token = "t0ken"
	base, stop := startServe(t, o)

	if resp, b := serveGet(t, base+"/", ""); resp.StatusCode != 200 || !strings.Contains(string(b), "<title>ctlens") {
		t.Fatalf("UI: %d %.200s", resp.StatusCode, b)
	}
	if resp, _ := serveGet(t, base+"/api/v1/models", ""); resp.StatusCode != 401 {
		t.Fatalf("models without the token: %d", resp.StatusCode)
	}
	resp, b := serveGet(t, base+"/api/v1/models", o.token)
	var models []api.ModelInfo
	if resp.StatusCode != 200 || json.Unmarshal(b, &models) != nil || len(models) != 1 || !models[0].Default ||
		strings.Join(models[0].Classes, ",") != "CP,NCP,Normal" || !strings.Contains(strings.ToLower(models[0].Caveat), "not for clinical use") {
		t.Fatalf("models: %d %s", resp.StatusCode, b)
	}

	p, err := volume.NewPhantom(volume.PhantomOptions{Class: volume.NCP, Seed: 3, Cols: 32, Slices: 20})
	if err != nil {
		t.Fatal(err)
	}
	files, err := dicomio.WriteSeries(t.TempDir(), p.CT, dicomio.WriteOptions{Seed: 3, PatientName: "ROE^RICHARD", PatientID: "MRN-1"})
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("method", "gradcam")
	for _, f := range files {
		w, _ := mw.CreateFormFile("file", filepath.Base(f))
		d, _ := os.ReadFile(f)
		w.Write(d)
	}
	mw.Close()
	req, _ := http.NewRequest("POST", base+"/api/v1/studies", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+o.token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var acc api.Accepted
	if resp.StatusCode != 202 || json.Unmarshal(b, &acc) != nil {
		t.Fatalf("submit: %d %s", resp.StatusCode, b)
	}
	var job api.Job
	deadline := time.Now().Add(60 * time.Second)
	for job.State != api.StateDone {
		if job.State == api.StateFailed || time.Now().After(deadline) {
			t.Fatalf("job %+v", job)
		}
		time.Sleep(50 * time.Millisecond)
		_, b := serveGet(t, base+acc.StatusURL, o.token)
		json.Unmarshal(b, &job)
	}
	resp, b = serveGet(t, base+"/api/v1/studies/"+acc.StudyID+"/result", o.token)
	var res api.Result
	if resp.StatusCode != 200 || json.Unmarshal(b, &res) != nil || res.StudyID != acc.StudyID || len(res.Series) != 1 {
		t.Fatalf("result: %d %s", resp.StatusCode, b)
	}
	sr := res.Series[0]
	sum := 0.0
	for _, v := range sr.Probabilities {
		sum += v
	}
	if math.Abs(sum-1) > 1e-6 || len(sr.Probabilities) != 3 || sr.Dims != p.CT.Dims || sr.Heatmap == nil || sr.Heatmap.Method != "gradcam" {
		t.Fatalf("series result %s", b)
	}
	series := base + "/api/v1/studies/" + acc.StudyID + "/series/0/"
	pv := sr.Heatmap.PeakVoxel
	for _, f := range []string{"heatmap.nii.gz", "montage.png", "volume.bin", "heat.bin",
		fmt.Sprintf("overlay/axial/%d.png", pv[2]), "overlay/coronal/0.png", "volume?plane=sagittal&index=3"} {
		if resp, b := serveGet(t, series+f, o.token); resp.StatusCode != 200 || len(b) == 0 {
			t.Fatalf("GET %s: %d %.300s", f, resp.StatusCode, b)
		}
	}
	// heat.bin is the scorer's heat.nii.gz (in [0, 1]) as round(255·h).
	_, hb := serveGet(t, series+"heat.bin", o.token)
	_, nb := serveGet(t, series+"heatmap.nii.gz", o.token)
	hp := filepath.Join(t.TempDir(), "heat.nii.gz")
	os.WriteFile(hp, nb, 0o600)
	hv, err := dicomio.ReadNIfTI(hp, dicomio.Limits{})
	if err != nil || len(hv.Voxels) != len(hb) {
		t.Fatalf("heat volume: %v", err)
	}
	for i, h := range hv.Voxels {
		if want := byte(math.Round(float64(h) * 255)); hb[i] != want {
			t.Fatalf("heat.bin[%d] = %d, want %d (heat %v)", i, hb[i], want, h)
		}
	}
	if hb[(pv[2]*p.CT.Dims[1]+pv[1])*p.CT.Dims[0]+pv[0]] != 255 {
		t.Fatalf("heat.bin at the peak voxel %v is not 255", pv)
	}
	resp, b = serveGet(t, base+"/api/v1/studies/"+acc.StudyID+"/report.md", o.token)
	if resp.StatusCode != 200 || !strings.Contains(strings.ToLower(string(b)), "not for clinical use") || !strings.Contains(string(b), "**"+sr.Predicted+"**") {
		t.Fatalf("report: %d %s", resp.StatusCode, b)
	}
	if resp, b := serveGet(t, base+"/metrics", ""); resp.StatusCode != 200 || !strings.Contains(string(b), "ctlens_inference_seconds_count 1\n") {
		t.Fatalf("metrics: %d %s", resp.StatusCode, b)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Restarted on the same folder, the study and its result are there.
	base, stop = startServe(t, o)
	defer stop()
	if resp, b := serveGet(t, base+"/api/v1/studies/"+acc.StudyID+"/result", o.token); resp.StatusCode != 200 {
		t.Fatalf("result after restart: %d %s", resp.StatusCode, b)
	}
	if resp, _ := serveGet(t, base+"/readyz", ""); resp.StatusCode != 200 {
		t.Fatalf("readyz after restart: %d", resp.StatusCode)
	}
}
