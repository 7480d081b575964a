package web

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// chromiumPath finds headless Chromium: $CTLENS_CHROMIUM, then the usual
// binary names. Without one the test skips, unless CTLENS_CI is set.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CTLENS_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CTLENS_CI") != "" {
		t.Fatal("chromium not found (apt-get install -y chromium, or set CTLENS_CHROMIUM) and CTLENS_CI is set")
	}
	t.Skip("chromium not found; install the Debian package chromium to run the browser test")
	return ""
}

// pageProblems collects uncaught exceptions, console.error calls and error
// log entries other than failed network requests (the test provokes 401 and
// 415 on purpose).
type pageProblems struct {
	mu   sync.Mutex
	list []string
}

func (p *pageProblems) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError {
			b, _ := json.Marshal(ev.Args)
			msg = "console.error: " + string(b)
		}
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError && ev.Entry.Source != log.EntrySourceNetwork {
			msg = fmt.Sprintf("log %s: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
		}
	}
	if msg != "" {
		p.mu.Lock()
		p.list = append(p.list, msg)
		p.mu.Unlock()
	}
}

// canvasStats is what the page reports about a plane's pixels.
type canvasStats struct {
	W, H     int
	Index    string
	Red      int     // pixels with r − max(g, b) > 40 (the jet overlay's hot end)
	CX, CY   float64 // centroid of those pixels
	Pixel    [4]int  // the pixel at (PX, PY)
	Gray     [4]int  // the pixel at (GX, GY)
	LabelTxt string
}

// statsJS reads plane canvas id back and samples two pixels.
func statsJS(plane string, px, py, gx, gy int) string {
	return fmt.Sprintf(`(() => {
  const c = document.getElementById("plane-%s");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let red = 0, sx = 0, sy = 0;
  for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
    const q = 4 * (y * c.width + x);
    if (d[q] - Math.max(d[q + 1], d[q + 2]) > 40) { red++; sx += x + 0.5; sy += y + 0.5; }
  }
  const at = (x, y) => { const q = 4 * (y * c.width + x); return [d[q], d[q + 1], d[q + 2], d[q + 3]]; };
  return { W: c.width, H: c.height, Index: c.dataset.index || "", Red: red, CX: red ? sx / red : -1, CY: red ? sy / red : -1,
    Pixel: at(%d, %d), Gray: at(%d, %d), LabelTxt: document.getElementById("idx-%s").textContent };
})()`, plane, px, py, gx, gy, plane)
}

func near(a, b [4]int, tol int) bool {
	for c := 0; c < 3; c++ {
		if a[c]-b[c] > tol || b[c]-a[c] > tol {
			return false
		}
	}
	return true
}

// TestBrowserUI drives the UI in headless Chromium against the fake API:
// token, models, error display, upload with progress, job polling, the
// result card, the three planes (aspect, scrolling, window/level, overlay
// colours and position) and a download.
func TestBrowserUI(t *testing.T) {
	exe := chromiumPath(t)
	api := newFakeAPI()
	mux := http.NewServeMux()
	mux.Handle("/api/", api)
	mux.Handle("/", Handler())
	srv := httptest.NewServer(mux) // listens on 127.0.0.1
	defer srv.Close()

	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.txt")
	good := filepath.Join(dir, "study.nii.gz")
	goodBody := strings.Repeat("NIfTI-bytes-", 4000)
	if err := os.WriteFile(bad, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, []byte(goodBody), 0o644); err != nil {
		t.Fatal(err)
	}
	dlDir := filepath.Join(dir, "downloads")
	if err := os.Mkdir(dlDir, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.WindowSize(1400, 1000),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	probs := &pageProblems{}
	if err := chromedp.Listen(bctx, probs.listen); err != nil {
		t.Fatalf("start chromium %s: %v", exe, err)
	}
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
	wait := func(what, js string) {
		t.Helper()
		if _, err := chromedp.Run(bctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			var state string
			eval("page state", `document.getElementById("error").textContent + " | " + document.getElementById("status").textContent`, &state)
			t.Fatalf("%s: %v (error/status: %q)", what, err, state)
		}
	}
	text := func(id string) string {
		t.Helper()
		var s string
		eval("text of #"+id, fmt.Sprintf(`document.getElementById(%q).textContent`, id), &s)
		return s
	}

	if _, err := chromedp.CallBrowser(bctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dlDir}); err != nil {
		t.Fatalf("set download behaviour: %v", err)
	}

	// 1. Without a token the models call is refused, and the page says so.
	do("open the UI", chromedp.Navigate(srv.URL+"/"))
	wait("401 message", `!document.getElementById("error").hidden && document.getElementById("error").textContent.includes("enter the API token")`)

	// 2. The token is stored and sent; the models appear with the default selected.
	do("enter token", chromedp.SendKeys(chromedp.ID("token"), fakeToken), chromedp.Focus(chromedp.ID("model")))
	wait("models listed", `document.getElementById("model").options.length === 2 && document.getElementById("error").hidden`)
	var model, stored string
	eval("selected model", `document.getElementById("model").value`, &model)
	eval("stored token", `localStorage.getItem("ctlens.token")`, &stored)
	if model != fakeModel || stored != fakeToken {
		t.Errorf("selected model %q (want the default %q), stored token %q (want %q)", model, fakeModel, stored, fakeToken)
	}

	// 3. Submitting with no file names what is missing.
	do("submit empty", chromedp.Click(chromedp.ID("submit")))
	wait("no-file message", `document.getElementById("error").textContent.includes("Choose a DICOM folder")`)

	// 4. The API's {"error"} body is shown for a refused upload.
	do("upload bad file", chromedp.SetUploadFiles(chromedp.ID("files"), []string{bad}), chromedp.Click(chromedp.ID("submit")))
	wait("415 message", `document.getElementById("error").textContent.includes("bad.txt: not DICOM or NIfTI")`)
	if e := text("error"); !strings.Contains(e, "HTTP 415") || !strings.Contains(e, "unsupported_media") {
		t.Errorf("error text %q lacks the status and code", e)
	}

	// 5. A good upload is polled to the end and shown.
	do("upload study", chromedp.SetUploadFiles(chromedp.ID("files"), []string{good}), chromedp.Click(chromedp.ID("submit")))
	wait("result and viewer", `!document.getElementById("result").hidden && !document.getElementById("viewer").hidden &&
		document.getElementById("plane-axial").dataset.index !== undefined && document.getElementById("error").hidden`)
	u := api.lastUpload()
	if u == nil || len(u.names) != 1 || u.names[0] != "study.nii.gz" || u.bodies[0] != goodBody {
		t.Fatalf("server got upload %+v, want one part study.nii.gz with the file's %d bytes", u, len(goodBody))
	}
	if u.model != fakeModel || u.heatmap != "true" || u.method != "gradcam" || u.authz != "Bearer "+fakeToken {
		t.Errorf("upload fields model=%q heatmap=%q method=%q authz=%q", u.model, u.heatmap, u.method, u.authz)
	}
	if u.jobPolls < 3 {
		t.Errorf("job polled %d times, want until done (3)", u.jobPolls)
	}
	var upProgress, jobProgress float64
	eval("upload progress", `document.getElementById("upload-progress").value`, &upProgress)
	eval("job progress", `document.getElementById("job-progress").value`, &jobProgress)
	if upProgress != 100 || jobProgress != 100 {
		t.Errorf("progress bars at %v and %v, want 100 and 100", upProgress, jobProgress)
	}

	// 6. The result card: probabilities as bars, predicted class, model, caveat.
	type bar struct {
		Class, Value, Now string
		Frac              float64
	}
	var bars []bar
	eval("bars", `[...document.querySelectorAll("#probs li")].map(li => ({Class: li.dataset.class,
		Value: li.querySelector(".value").textContent, Now: li.querySelector(".bar").getAttribute("aria-valuenow"),
		Frac: li.querySelector(".fill").getBoundingClientRect().width / li.querySelector(".bar").getBoundingClientRect().width}))`, &bars)
	want := []bar{{"CP", "12.5%", "12.5", 0.125}, {"NCP", "75.0%", "75.0", 0.75}, {"Normal", "12.5%", "12.5", 0.125}}
	if len(bars) != len(want) {
		t.Fatalf("bars %+v, want %+v", bars, want)
	}
	for i, b := range bars {
		w := want[i]
		if b.Class != w.Class || b.Value != w.Value || b.Now != w.Now || math.Abs(b.Frac-w.Frac) > 0.02 {
			t.Errorf("bar %d = %+v, want %+v", i, b, w)
		}
	}
	if p := text("predicted"); p != "NCP" {
		t.Errorf("predicted %q, want NCP", p)
	}
	if m := text("model-name"); !strings.Contains(m, fakeModel) || !strings.Contains(m, fakeVersion) {
		t.Errorf("model line %q lacks name %s and version %s", m, fakeModel, fakeVersion)
	}
	if c := text("caveat"); c != fakeCaveat {
		t.Errorf("caveat %q, want %q", c, fakeCaveat)
	}
	if w := text("warnings"); !strings.Contains(w, "resampled") {
		t.Errorf("warnings %q lack the series warning", w)
	}

	// 7. Planes have the physical aspect ratio: the longer side 300 px,
	// sides ∝ dims × spacing (axial 32×25.6 mm, coronal 32×50, sagittal 25.6×50).
	ni, nj, nk := fakeDims[0], fakeDims[1], fakeDims[2]
	size := func(wmm, hmm float64) (int, int) {
		s := 300 / math.Max(wmm, hmm)
		return int(math.Round(wmm * s)), int(math.Round(hmm * s))
	}
	for _, pl := range []struct {
		name     string
		wmm, hmm float64
	}{
		{"axial", float64(ni) * fakeSpacing[0], float64(nj) * fakeSpacing[1]},
		{"coronal", float64(ni) * fakeSpacing[0], float64(nk) * fakeSpacing[2]},
		{"sagittal", float64(nj) * fakeSpacing[1], float64(nk) * fakeSpacing[2]},
	} {
		var st canvasStats
		eval(pl.name+" size", statsJS(pl.name, 0, 0, 0, 0), &st)
		ww, hh := size(pl.wmm, pl.hmm)
		if st.W != ww || st.H != hh {
			t.Errorf("%s canvas %d×%d, want %d×%d (aspect by spacing)", pl.name, st.W, st.H, ww, hh)
		}
	}

	// 8. Jump to the hottest slice: the three indices become peak_voxel.
	var axialIdx string
	eval("axial index", `document.getElementById("plane-axial").dataset.index`, &axialIdx)
	if axialIdx != fmt.Sprint(nk/2) {
		t.Errorf("initial axial index %s, want the middle slice %d", axialIdx, nk/2)
	}
	do("jump", chromedp.Click(chromedp.ID("jump")))
	wait("jumped", fmt.Sprintf(`document.getElementById("plane-axial").dataset.index === "%d" &&
		document.getElementById("plane-coronal").dataset.index === "%d" && document.getElementById("plane-sagittal").dataset.index === "%d"`,
		fakePeak[2], fakePeak[1], fakePeak[0]))

	// 9. The overlay (jet, 50 %, lung window W1500/L-600) is drawn where the blob is.
	// Voxel (i, j) covers axial canvas x ∈ [i, i+1)·W/ni, y ∈ [j, j+1)·H/nj; sample a
	// quarter voxel in from the corner to stay off the crosshair through the centre.
	aw, ah := size(float64(ni)*fakeSpacing[0], float64(nj)*fakeSpacing[1])
	vx := func(i int) int { return int((float64(i) + 0.25) * float64(aw) / float64(ni)) }
	vy := func(j int) int { return int((float64(j) + 0.25) * float64(ah) / float64(nj)) }
	gray := func(hu float64) int { // window W1500/L-600 maps [-1350, 150] HU onto 0..255
		return int(math.Round(math.Min(255, math.Max(0, (hu+1350)/1500*255))))
	}
	jetR := func(x float64) float64 { return math.Min(1, math.Max(0, 1.5-math.Abs(4*x-3))) } // MATLAB jet, red channel
	lung := gray(fakeLungHU)
	wantPeak := [4]int{int(0.5*float64(lung) + 0.5*255*jetR(1)), lung / 2, lung / 2, 255} // jet(1) = (0.5, 0, 0)
	var st canvasStats
	eval("axial pixels", statsJS("axial", vx(fakePeak[0]), vy(fakePeak[1]), vx(19), vy(28)), &st)
	if !near(st.Pixel, wantPeak, 3) {
		t.Errorf("axial pixel at the peak voxel = %v, want %v (jet(255) at 50%% over HU %d)", st.Pixel, wantPeak, fakeLungHU)
	}
	if g := gray(fakeTissueHU); !near(st.Gray, [4]int{g, g, g, 255}, 2) {
		t.Errorf("axial pixel far from the blob = %v, want gray %d (no overlay)", st.Gray, g)
	}
	cx := (float64(fakePeak[0]) + 0.5) * float64(aw) / float64(ni)
	cy := (float64(fakePeak[1]) + 0.5) * float64(ah) / float64(nj)
	if st.Red < 100 || math.Hypot(st.CX-cx, st.CY-cy) > 6 {
		t.Errorf("axial: %d hot-coloured pixels centred at (%.1f, %.1f), want ≥ 100 centred at (%.1f, %.1f)", st.Red, st.CX, st.CY, cx, cy)
	}
	// Coronal shows k upwards: slice k is row nk−1−k from the top.
	var cor canvasStats
	eval("coronal pixels", statsJS("coronal", 0, 0, 0, 0), &cor)
	ccy := (float64(nk-1-fakePeak[2]) + 0.5) * float64(cor.H) / float64(nk)
	ccx := (float64(fakePeak[0]) + 0.5) * float64(cor.W) / float64(ni)
	if cor.Red < 50 || math.Hypot(cor.CX-ccx, cor.CY-ccy) > 8 {
		t.Errorf("coronal: %d hot pixels centred at (%.1f, %.1f), want ≥ 50 centred at (%.1f, %.1f)", cor.Red, cor.CX, cor.CY, ccx, ccy)
	}

	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shotPath := filepath.Join(dir, "ui.png")
	if d := os.Getenv("CTLENS_WEB_SCREENSHOT_DIR"); d != "" {
		shotPath = filepath.Join(d, "ui.png")
	}
	if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shotPath, len(shot))

	// 10. Scrolling: keys and the mouse wheel move the focused plane.
	do("key up", chromedp.Focus(chromedp.ID("plane-axial")), chromedp.KeyEvent(kb.ArrowUp))
	wait("ArrowUp", fmt.Sprintf(`document.getElementById("plane-axial").dataset.index === "%d"`, fakePeak[2]+1))
	do("page down", chromedp.KeyEvent(kb.PageDown))
	wait("PageDown", fmt.Sprintf(`document.getElementById("plane-axial").dataset.index === "%d"`, fakePeak[2]+1-10))
	if l := text("idx-axial"); l != fmt.Sprintf("%d / %d", fakePeak[2]+1-10+1, nk) {
		t.Errorf("axial label %q, want %q", l, fmt.Sprintf("%d / %d", fakePeak[2]+1-10+1, nk))
	}
	var rect struct{ X, Y float64 }
	eval("axial rect", `(() => { const r = document.getElementById("plane-axial").getBoundingClientRect(); return {X: r.x + r.width / 2, Y: r.y + r.height / 2}; })()`, &rect)
	// cdproto omits a zero DeltaX, which Chromium requires for mouseWheel: send our own params.
	type wheelParams struct {
		Type   string  `json:"type"`
		X      float64 `json:"x"`
		Y      float64 `json:"y"`
		DeltaX float64 `json:"deltaX"`
		DeltaY float64 `json:"deltaY"`
	}
	wheel := cdp.Command[wheelParams, cdp.Empty]{Method: input.CommandDispatchMouseEvent}
	if _, err := chromedp.Call(bctx, wheel, wheelParams{Type: "mouseWheel", X: rect.X, Y: rect.Y, DeltaY: 120}); err != nil {
		t.Fatalf("wheel: %v", err)
	}
	wait("wheel", fmt.Sprintf(`document.getElementById("plane-axial").dataset.index === "%d"`, fakePeak[2]+1-10+1))

	// 11. Window/level: presets and a horizontal drag widen the window.
	do("mediastinum preset", chromedp.Click(chromedp.CSS(`[data-preset="mediastinum"]`)))
	wait("preset", `document.getElementById("ww").value === "350" && document.getElementById("wl").value === "50"`)
	held := func(p *input.DispatchMouseEventParams) { p.Button, p.Buttons = input.MouseButtonLeft, 1 }
	do("drag",
		chromedp.MouseEvent(input.DispatchMouseEventTypeMousePressed, rect.X, rect.Y, held, chromedp.ClickCount(1)),
		chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, rect.X+20, rect.Y, held),
		chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, rect.X+40, rect.Y, held),
		chromedp.MouseEvent(input.DispatchMouseEventTypeMouseReleased, rect.X+40, rect.Y, chromedp.ButtonType(input.MouseButtonLeft), chromedp.ClickCount(1)),
	)
	wait("drag widened", `Number(document.getElementById("ww").value) > 350 && document.getElementById("wl").value === "50"`)

	// 12. Overlay controls: opacity 0 hides it; hot at 100 % shows hot(h) itself.
	do("back to lung, jump", chromedp.Click(chromedp.CSS(`[data-preset="lung"]`)), chromedp.Click(chromedp.ID("jump")))
	wait("jumped again", fmt.Sprintf(`document.getElementById("plane-axial").dataset.index === "%d"`, fakePeak[2]))
	setRange := func(id, v string) string {
		return fmt.Sprintf(`(() => { const e = document.getElementById(%q); e.value = %q; e.dispatchEvent(new Event("input")); return true; })()`, id, v)
	}
	var ok bool
	eval("opacity 0", setRange("opacity", "0"), &ok)
	wait("overlay hidden", `(() => { const c = document.getElementById("plane-axial");
		const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
		for (let q = 0; q < d.length; q += 4) if (d[q] - Math.max(d[q + 1], d[q + 2]) > 40) return false; return true; })()`)
	eval("opacity 100", setRange("opacity", "100"), &ok)
	eval("hot", setRange("colormap", "hot"), &ok)
	hot := func(h uint8) [4]int { // r = 3x, g = 3x − 1, b = 3x − 2, clamped, x = h/255
		x := float64(h) / 255
		c := func(v float64) int { return int(math.Round(255 * math.Min(1, math.Max(0, v)))) }
		return [4]int{c(3 * x), c(3*x - 1), c(3*x - 2), 255}
	}
	nb := fakeHeat(fakePeak[0]+2, fakePeak[1], fakePeak[2]) // two voxels off the peak: mid heat, yellow
	wait("hot drawn", fmt.Sprintf(`(() => { const c = document.getElementById("plane-axial");
		const p = c.getContext("2d").getImageData(%d, %d, 1, 1).data; return p[0] > 240 && p[1] > 240; })()`, vx(fakePeak[0]), vy(fakePeak[1])))
	eval("hot pixels", statsJS("axial", vx(fakePeak[0]), vy(fakePeak[1]), vx(fakePeak[0]+2), vy(fakePeak[1])), &st)
	if !near(st.Pixel, hot(255), 2) || !near(st.Gray, hot(nb), 3) {
		t.Errorf("hot overlay: peak pixel %v (want %v), pixel two voxels off %v (want hot(%d) = %v)", st.Pixel, hot(255), st.Gray, nb, hot(nb))
	}

	// 13. The report download carries the token and saves the file.
	do("download report", chromedp.Click(chromedp.ID("dl-report")))
	reportPath := filepath.Join(dlDir, "st-1-report.md")
	var got []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got, err = os.ReadFile(reportPath); err == nil && len(got) > 0 {
			break
		}
	}
	if string(got) != fakeReport("st-1") {
		t.Errorf("downloaded report %s = %q (err %v), want %q", reportPath, got, err, fakeReport("st-1"))
	}

	// 14. A folder upload sends every file, named by its path in the folder.
	folder := filepath.Join(dir, "series1")
	if err := os.MkdirAll(filepath.Join(folder, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"IM0001.dcm": "one", "sub/IM0002.dcm": "two"} {
		if err := os.WriteFile(filepath.Join(folder, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do("choose folder", chromedp.SetUploadFiles(chromedp.ID("folder"), []string{folder}))
	wait("folder chosen", `document.getElementById("selection").textContent.startsWith("2 files chosen")`)
	do("upload folder", chromedp.Click(chromedp.ID("submit")))
	wait("second study shown", `document.getElementById("status").textContent === "Done." && !document.getElementById("submit").disabled`)
	u = api.lastUpload()
	if u == nil || strings.Join(u.names, ",") != "series1/IM0001.dcm,series1/sub/IM0002.dcm" || strings.Join(u.bodies, ",") != "one,two" {
		t.Errorf("folder upload: server got %+v, want parts series1/IM0001.dcm (one) and series1/sub/IM0002.dcm (two)", u)
	}

	probs.mu.Lock()
	defer probs.mu.Unlock()
	for _, p := range probs.list {
		t.Errorf("page problem: %s", p)
	}
}
