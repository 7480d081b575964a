package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestHandlerServesAssets(t *testing.T) {
	h := Handler()
	cases := []struct {
		name, method, path string
		status             int
		ctype              string // prefix
		body               string // substring
	}{
		{"root is the page", "GET", "/", 200, "text/html", `<script type="module" src="js/main.js">`},
		{"index.html", "GET", "/index.html", 200, "text/html", "Trained on synthetic data; not for clinical use."},
		{"style sheet", "GET", "/style.css", 200, "text/css", ".planes"},
		{"module", "GET", "/js/main.js", 200, "text/javascript", "import"},
		{"head", "HEAD", "/js/viewer.js", 200, "text/javascript", ""},
		{"unknown path", "GET", "/nope.js", 404, "text/plain", "no such page /nope.js"},
		{"no directory listing", "GET", "/js/", 404, "text/plain", "no such page"},
		{"no traversal", "GET", "/../web.go", 404, "text/plain", "no such page"},
		{"post refused", "POST", "/", 405, "text/plain", "method POST not allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
			body := rec.Body.String()
			if rec.Code != c.status {
				t.Fatalf("%s %s: status %d, want %d (body %q)", c.method, c.path, rec.Code, c.status, body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, c.ctype) {
				t.Errorf("Content-Type %q, want %s…", ct, c.ctype)
			}
			if !strings.Contains(body, c.body) {
				t.Errorf("body lacks %q", c.body)
			}
			if c.method == "HEAD" && body != "" {
				t.Errorf("HEAD returned a body of %d bytes", len(body))
			}
			if c.status == 405 && rec.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q, want \"GET, HEAD\"", rec.Header().Get("Allow"))
			}
			if c.status == 200 {
				for k, v := range map[string]string{"Content-Security-Policy": ContentSecurityPolicy, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"} {
					if got := rec.Header().Get(k); got != v {
						t.Errorf("%s %q, want %q", k, got, v)
					}
				}
			}
		})
	}
}

func TestHandlerETag(t *testing.T) {
	h := Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/style.css", nil))
	etag := rec.Header().Get("ETag")
	if len(etag) != 34 || etag[0] != '"' {
		t.Fatalf("ETag %q, want a quoted 32-hex-digit tag", etag)
	}
	req := httptest.NewRequest("GET", "/style.css", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match with the current ETag: status %d, want 304", rec.Code)
	}
	other := httptest.NewRecorder()
	h.ServeHTTP(other, httptest.NewRequest("GET", "/js/main.js", nil))
	if other.Header().Get("ETag") == etag {
		t.Errorf("two different files share ETag %s", etag)
	}
}

// TestAssetsSelfContained checks that the UI works offline: no file names an
// absolute URL (no CDN, fonts or analytics), every local reference of
// index.html and every ES-module import resolves to an embedded file.
func TestAssetsSelfContained(t *testing.T) {
	files := Files()
	absURL := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	ref := regexp.MustCompile(`(?:src|href)="([^"#:]+)"`)
	imp := regexp.MustCompile(`(?m)^import .* from "\./([^"]+)";`)
	n := 0
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		f, err := files.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		if m := absURL.Find(b); m != nil {
			t.Errorf("%s names an external URL %q", p, m)
		}
		check := func(target string) {
			if _, err := fs.Stat(files, target); err != nil {
				t.Errorf("%s refers to %s, which is not embedded", p, target)
			}
		}
		if p == "index.html" {
			for _, m := range ref.FindAllSubmatch(b, -1) {
				check(string(m[1]))
			}
		}
		if strings.HasPrefix(p, "js/") {
			for _, m := range imp.FindAllSubmatch(b, -1) {
				check("js/" + string(m[1]))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"index.html", "style.css", "js/main.js", "js/api.js", "js/viewer.js", "js/colormap.js"} {
		if _, err := fs.Stat(files, want); err != nil {
			t.Errorf("%s is not embedded (%d files are)", want, n)
		}
	}
}
