package api

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
)

// TestBadInputs sends every kind of bad upload and checks the status, the
// code and that the message names what is wrong; no study may be left
// behind.
func TestBadInputs(t *testing.T) {
	ts := newTestServer(t, Config{
		MaxUpload:     256 << 10,
		MaxSyncUpload: 64 << 10,
		Limits:        dicomio.Limits{MaxFiles: 8, MaxZipBytes: 5 << 19, MaxVoxels: 2000},
	})
	dir := t.TempDir()
	good, ct := phantomSeries(t, filepath.Join(dir, "good"), 3, 16, 16, 6, "")
	goodFiles := readFiles(t, good)
	big, _ := phantomSeries(t, filepath.Join(dir, "big"), 4, 16, 16, 8, "")
	nii := filepath.Join(dir, "scan.nii")
	if err := dicomio.WriteNIfTI(nii, ct, dicomio.NIfTIInt16); err != nil {
		t.Fatal(err)
	}
	niiData, _ := os.ReadFile(nii)
	hugeNii := append([]byte(nil), niiData...)
	for a := range 3 {
		binary.LittleEndian.PutUint16(hugeNii[42+2*a:], 4000)
	}
	var gzGarbage bytes.Buffer
	zw := gzip.NewWriter(&gzGarbage)
	zw.Write(bytes.Repeat([]byte("not a nifti header "), 40))
	zw.Close()
	badDICOM := append(make([]byte, 128), []byte("DICM\x02\x00\x10\x00UI\xff\xff")...)
	badDICOM = append(badDICOM, bytes.Repeat([]byte{0xee}, 200)...)
	zeros1M := make([]byte, 1<<20)
	bomb := zipOf(t, []formFile{{name: "bomb.dcm", data: make([]byte, 2<<20)}}, 8)
	tooBigZip := zipOf(t, []formFile{{name: "a.dcm", data: zeros1M}, {name: "b.dcm", data: zeros1M}, {name: "c.dcm", data: zeros1M}}, 8)
	nineFiles := make([]formFile, 9)
	for i := range nineFiles {
		nineFiles[i] = goodFiles[i%len(goodFiles)]
		nineFiles[i].name = "IM" + itoa(i) + ".dcm"
	}

	type tc struct {
		name   string
		path   string
		files  []formFile
		fields map[string]string
		body   []byte // raw body instead of a form
		ctype  string
		status int
		code   string
		msg    string
	}
	cases := []tc{
		{name: "not multipart", body: []byte(`{"file": "x"}`), ctype: "application/json", status: 415, code: "bad_content_type", msg: "multipart/form-data"},
		{name: "no content type", body: []byte(`x`), status: 415, code: "bad_content_type", msg: "multipart/form-data"},
		{name: "malformed multipart", body: []byte("--other\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--other--\r\n"), ctype: "multipart/form-data; boundary=zzz", status: 400, code: "bad_multipart", msg: "malformed multipart"},
		{name: "empty form", status: 400, code: "no_files", msg: `no "file" part`},
		{name: "fields only", fields: map[string]string{"model": "fake-small"}, status: 400, code: "no_files", msg: `no "file" part`},
		{name: "empty file", files: []formFile{{name: "empty.dcm"}}, status: 400, code: "empty_file", msg: `"empty.dcm" is empty`},
		{name: "oversized", files: []formFile{{name: "huge.dcm", data: make([]byte, 300<<10)}}, status: 413, code: "too_large", msg: "upload limit of 262144 bytes"},
		{name: "oversized sync", path: "/api/v1/score", files: []formFile{{name: "mid.dcm", data: make([]byte, 100<<10)}}, status: 413, code: "too_large", msg: "upload limit of 65536 bytes"},
		{name: "not DICOM", files: []formFile{{name: "notes.txt", data: []byte("hello, this is a text file, not a scan")}}, status: 415, code: "not_dicom", msg: "notes.txt: not DICOM"},
		{name: "gzip not NIfTI", files: []formFile{{name: "x.nii.gz", data: gzGarbage.Bytes()}}, status: 415, code: "not_dicom", msg: "x.nii.gz: not DICOM"},
		{name: "corrupt DICOM", files: []formFile{{name: "bad.dcm", data: badDICOM}}, status: 422, code: "no_ct_series", msg: "bad.dcm"},
		{name: "path traversal name", files: []formFile{{name: "../../etc/passwd", data: goodFiles[0].data}}, status: 400, code: "unsafe_path", msg: "path traversal"},
		{name: "absolute name", files: []formFile{{name: "/etc/passwd", data: goodFiles[0].data}}, status: 400, code: "unsafe_path", msg: "absolute path"},
		{name: "backslash traversal", files: []formFile{{name: `..\\..\\boot.ini`, data: goodFiles[0].data}}, status: 400, code: "unsafe_path", msg: "path traversal"},
		{name: "zip traversal", files: []formFile{{name: "evil.zip", data: zipOf(t, []formFile{{name: "../evil.dcm", data: goodFiles[0].data}}, 8)}}, status: 422, code: "unsafe_zip", msg: "path traversal"},
		{name: "zip absolute", files: []formFile{{name: "evil.zip", data: zipOf(t, []formFile{{name: "/abs/evil.dcm", data: goodFiles[0].data}}, 0)}}, status: 422, code: "unsafe_zip", msg: "absolute path"},
		{name: "zip bomb", files: []formFile{{name: "bomb.zip", data: bomb}}, status: 422, code: "unsafe_zip", msg: "compression bomb"},
		{name: "zip total size", files: []formFile{{name: "big.zip", data: tooBigZip}}, status: 413, code: "limit_exceeded", msg: "MaxZipBytes"},
		{name: "too many files", files: nineFiles, status: 413, code: "limit_exceeded", msg: "more than 8 files"},
		{name: "too many voxels", files: readFiles(t, big), status: 413, code: "limit_exceeded", msg: "MaxVoxels"},
		{name: "NIfTI too many voxels", files: []formFile{{name: "huge.nii", data: hugeNii}}, status: 413, code: "limit_exceeded", msg: "huge.nii: MaxVoxels"},
		{name: "zip and DICOM", files: []formFile{{name: "a.zip", data: zipOf(t, goodFiles, 8)}, goodFiles[0]}, status: 400, code: "mixed_input", msg: "1 zip"},
		{name: "two NIfTI", files: []formFile{{name: "a.nii", data: niiData}, {name: "b.nii", data: niiData}}, status: 400, code: "mixed_input", msg: "2 NIfTI"},
		{name: "unknown model", files: goodFiles, fields: map[string]string{"model": "gpt"}, status: 400, code: "unknown_model", msg: `"gpt": not one of fake-small, fake-other`},
		{name: "bad heatmap", files: goodFiles, fields: map[string]string{"heatmap": "maybe"}, status: 400, code: "bad_field", msg: `"heatmap" is "maybe"`},
		{name: "bad method", files: goodFiles, fields: map[string]string{"method": "saliency"}, status: 400, code: "bad_field", msg: `"method" is "saliency"`},
		{name: "long field", files: goodFiles, fields: map[string]string{"model": strings.Repeat("m", 300)}, status: 400, code: "bad_field", msg: "longer than 256 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body, ct := c.body, c.ctype
			if body == nil {
				body, ct = form(t, c.files, c.fields)
			}
			path := c.path
			if path == "" {
				path = "/api/v1/studies"
			}
			resp, b := ts.do(t, "POST", path, body, ct)
			e := errorOf(t, b)
			if resp.StatusCode != c.status || e.Code != c.code || !strings.Contains(e.Error, c.msg) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", resp.StatusCode, e.Code, e.Error, c.status, c.code, c.msg)
			}
			t.Logf("%d %s: %s", resp.StatusCode, e.Code, e.Error)
			if strings.Contains(e.Error, ts.cfg.DataDir) {
				t.Fatalf("message leaks the data folder: %q", e.Error)
			}
		})
	}

	// A body of unknown length over the limit is cut off while streaming.
	t.Run("oversized chunked", func(t *testing.T) {
		body, ct := form(t, []formFile{{name: "huge.dcm", data: make([]byte, 300<<10)}}, nil)
		req, _ := http.NewRequest("POST", ts.ts.URL+"/api/v1/studies", io.MultiReader(bytes.NewReader(body)))
		req.Header.Set("Content-Type", ct)
		resp, err := ts.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if req.ContentLength != 0 || resp.StatusCode != 413 || errorOf(t, b).Code != "too_large" {
			t.Fatalf("chunked oversized: content length %d, %d %s", req.ContentLength, resp.StatusCode, b)
		}
	})

	entries, err := os.ReadDir(filepath.Join(ts.cfg.DataDir, "studies"))
	if err != nil || len(entries) != 0 {
		t.Fatalf("studies left behind by refused uploads: %v %v", entries, err)
	}
	counts, err := ts.store.countByState(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for st, n := range counts {
		if n != 0 {
			t.Fatalf("%d %s jobs after refused uploads", n, st)
		}
	}
	// The good files are accepted by the same server.
	ts.submit(t, goodFiles, nil)
}

func TestAuth(t *testing.T) {
	ts := newTestServer(t, Config{Token: "s3cret-token"})
	for _, rt := range Routes() {
		path := strings.NewReplacer("{id}", "aaaaaaaaaaaaaaaaaaaa", "{n}", "0", "{plane}", "axial", "{index}", "0").Replace(rt.Pattern)
		resp, b := ts.doAuth(t, rt.Method, path, nil, "", "")
		if !rt.Auth {
			if resp.StatusCode == 401 || resp.StatusCode == 403 {
				t.Fatalf("%s %s is open but answered %d", rt.Method, path, resp.StatusCode)
			}
			continue
		}
		if !strings.HasPrefix(rt.Pattern, "/api/") {
			t.Fatalf("route %s needs a token but is not under /api/", rt.Pattern)
		}
		if resp.StatusCode != 401 || errorOf(t, b).Code != "unauthorized" || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("%s %s without token: %d %s", rt.Method, path, resp.StatusCode, b)
		}
		resp, b = ts.doAuth(t, rt.Method, path, nil, "", "wrong")
		if e := errorOf(t, b); resp.StatusCode != 403 || e.Code != "forbidden" || !strings.Contains(e.Error, "not valid") {
			t.Fatalf("%s %s with a wrong token: %d %s", rt.Method, path, resp.StatusCode, b)
		}
	}
	req, _ := http.NewRequest("GET", ts.ts.URL+"/api/v1/models", nil)
	req.Header.Set("Authorization", "Basic czNjcmV0LXRva2Vu")
	resp, err := ts.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("Basic auth: %d, want 401", resp.StatusCode)
	}
	if resp, b := ts.do(t, "GET", "/api/v1/models", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("models with the token: %d %s", resp.StatusCode, b)
	}
	files, _ := phantomSeries(t, t.TempDir(), 5, 16, 16, 4, "")
	acc := ts.submit(t, readFiles(t, files), nil)
	ts.waitState(t, acc.JobID, 20e9, StateDone)
}

func TestCheckListen(t *testing.T) {
	for _, c := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:8080", "", true},
		{"127.0.0.2:0", "", true},
		{"localhost:8080", "", true},
		{"[::1]:8080", "", true},
		{"0.0.0.0:8080", "", false},
		{":8080", "", false},
		{"[::]:8080", "", false},
		{"192.168.1.10:8080", "", false},
		{"example.org:80", "", false},
		{"0.0.0.0:8080", "tok", true},
		{"no-port", "tok", false},
	} {
		err := CheckListen(c.addr, c.token)
		if (err == nil) != c.ok {
			t.Errorf("CheckListen(%q, %q) = %v, want ok=%v", c.addr, c.token, err, c.ok)
		}
		if err != nil && c.token == "" && !strings.Contains(err.Error(), "token") && c.addr != "no-port" {
			t.Errorf("CheckListen(%q): %v does not mention the token", c.addr, err)
		}
	}
}
