package main

import (
	"archive/zip"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

// TestBrowserAgainstRealServer drives the embedded UI of a real `ctlens
// serve` (bundled model, SQLite) in headless Chromium: it uploads a zipped
// phantom DICOM series, waits for the result card, scrolls the axial plane
// and checks that the heatmap overlay is drawn in colour.
func TestBrowserAgainstRealServer(t *testing.T) {
	exe := os.Getenv("CTLENS_CHROMIUM")
	if exe == "" {
		exe, _ = exec.LookPath("chromium")
	}
	if exe == "" {
		if os.Getenv("CTLENS_CI") != "" {
			t.Fatal("chromium not found and CTLENS_CI is set")
		}
		t.Skip("chromium not found (apt-get install chromium)")
	}
	base, stop := startServe(t, serveTestOptions(t.TempDir()))
	defer stop()

	dir := t.TempDir()
	p, err := volume.NewPhantom(volume.PhantomOptions{Class: volume.CP, Seed: 11, Cols: 48, Slices: 24})
	if err != nil {
		t.Fatal(err)
	}
	files, err := dicomio.WriteSeries(filepath.Join(dir, "series"), p.CT, dicomio.WriteOptions{Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	zpath := filepath.Join(dir, "study.zip")
	zf, err := os.Create(zpath)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(zf)
	for _, f := range files {
		w, _ := zw.Create("series/" + filepath.Base(f))
		b, _ := os.ReadFile(f)
		w.Write(b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	zf.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(filepath.Join(dir, "profile")), chromedp.WindowSize(1400, 1000),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(what, js string, v any) {
		t.Helper()
		raw, err := chromedp.Run(bctx, chromedp.Evaluate[[]byte](js))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("%s: decode %s: %v", what, raw, err)
		}
	}
	wait := func(what, js string, d time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(bctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(d))); err != nil {
			var state string
			eval("page state", `document.getElementById("error").textContent + " | " + document.getElementById("status").textContent`, &state)
			t.Fatalf("%s: %v (error/status: %q)", what, err, state)
		}
	}

	do("open the UI", chromedp.Navigate(base+"/"))
	wait("models listed", `document.getElementById("model").options.length >= 1`, 15*time.Second)
	do("upload the zipped series", chromedp.SetUploadFiles(chromedp.ID("files"), []string{zpath}), chromedp.Click(chromedp.ID("submit")))
	wait("result and viewer", `!document.getElementById("result").hidden && !document.getElementById("viewer").hidden &&
		document.getElementById("plane-axial").dataset.index !== undefined`, 60*time.Second)

	var nProbs int
	eval("probabilities", `document.querySelectorAll("#probs li").length`, &nProbs)
	if nProbs != 3 {
		t.Errorf("%d class probabilities shown, want 3 (CP, NCP, Normal)", nProbs)
	}
	var before, after string
	eval("axial index", `document.getElementById("plane-axial").dataset.index`, &before)
	do("scroll the axial plane", chromedp.Focus(chromedp.ID("plane-axial")), chromedp.KeyEvent(kb.PageDown))
	wait("index changed", `document.getElementById("plane-axial").dataset.index !== `+strconv.Quote(before), 5*time.Second)
	eval("axial index", `document.getElementById("plane-axial").dataset.index`, &after)

	// At the hottest slice the overlay colours pixels red to yellow (jet's
	// hot end); the grey image has r = g = b and the crosshair is green, so
	// such pixels come only from the heatmap, and vanish with the overlay off.
	do("jump to the hottest slice", chromedp.Click(chromedp.ID("jump")))
	const countJS = `(() => {
		const c = document.getElementById("plane-axial");
		const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
		let n = 0;
		for (let i = 0; i < d.length; i += 4) {
			if (d[i] - d[i+2] > 60) n++;
		}
		return n;
	})()`
	var coloured, without int
	// The viewer redraws on the next animation frame: wait for it.
	wait("overlay drawn at the hottest slice", countJS+" >= 20", 5*time.Second)
	eval("hot pixels", countJS, &coloured)
	do("overlay off", chromedp.Click(chromedp.ID("overlay")))
	wait("overlay redrawn", countJS+" === 0", 5*time.Second)
	eval("hot pixels without overlay", countJS, &without)
	if coloured < 20 || without != 0 {
		t.Errorf("%d hot-coloured pixels on the axial plane at the hottest slice, %d with the overlay off: want some, then none", coloured, without)
	}
	t.Logf("axial index %s -> %s; %d coloured overlay pixels", before, after, coloured)
}
