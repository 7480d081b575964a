// Package web is ctlens's browser user interface: one HTML page, a style
// sheet and a few ES modules, embedded in the binary and served without a
// build step or any third-party asset, so the UI works offline.
//
// The page talks only to the REST API of the same origin (/api/v1/...,
// see the api package): it uploads a folder, a .zip or a NIfTI file with
// upload progress, polls the job, shows the result (class probabilities,
// predicted class, model and the synthetic-data caveat) and a three-plane
// viewer of volume.bin with the heat.bin overlay.
//
// Mount [Handler] at "/" beside the API routes:
//
//	mux.Handle("/api/", api)
//	mux.Handle("/", web.Handler())
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy is the Content-Security-Policy header sent with every
// UI response: scripts, styles and connections only from the same origin,
// images also from blob: and data: URLs, no framing.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// asset is one embedded file ready to serve.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// Files returns the embedded UI files as a read-only file system rooted at
// the UI's top directory (index.html, style.css, js/*.js).
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		// fs.Sub fails only for an invalid directory name, and "static" is valid.
		panic("web: embedded static directory: " + err.Error())
	}
	return sub
}

// Handler returns the handler serving the UI: GET or HEAD of "/" or
// "/index.html" gives the page, "/style.css" and "/js/<name>.js" its assets;
// any other path is 404 and any other method 405 (with Allow: GET, HEAD).
// Responses carry a strong ETag (SHA-256 of the content, so If-None-Match
// gives 304), Cache-Control: no-cache, X-Content-Type-Options: nosniff and
// [ContentSecurityPolicy].
func Handler() http.Handler {
	assets := map[string]asset{}
	err := fs.WalkDir(Files(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(Files(), p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ctype := mime.TypeByExtension(path.Ext(p))
		if strings.HasSuffix(p, ".js") {
			ctype = "text/javascript; charset=utf-8"
		}
		if ctype == "" {
			ctype = http.DetectContentType(body)
		}
		assets["/"+p] = asset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
		return nil
	})
	if err != nil {
		panic("web: reading embedded files: " + err.Error())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "web: method "+r.Method+" not allowed (GET or HEAD)", http.StatusMethodNotAllowed)
			return
		}
		p := r.URL.Path
		if p == "/" {
			p = "/index.html"
		}
		a, ok := assets[p]
		if !ok {
			http.Error(w, "web: no such page "+r.URL.Path, http.StatusNotFound)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("ETag", a.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("Referrer-Policy", "no-referrer")
		http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(a.body))
	})
}
