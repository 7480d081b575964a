package api

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"image/png"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

// checkVolumeBin compares volume.bin with the scan's HU (whole numbers in
// the phantom, so exact) and its headers with the scan's grid.
func checkVolumeBin(t *testing.T, resp *http.Response, b []byte, ct *volume.Volume) {
	t.Helper()
	if resp.StatusCode != 200 {
		t.Fatalf("volume.bin: %d %s", resp.StatusCode, b)
	}
	d := ct.Dims
	if got, want := resp.Header.Get("X-Dims"), strings.Join([]string{itoa(d[0]), itoa(d[1]), itoa(d[2])}, ","); got != want {
		t.Fatalf("X-Dims %q, want %q", got, want)
	}
	sp := strings.Split(resp.Header.Get("X-Spacing"), ",")
	if len(sp) != 3 {
		t.Fatalf("X-Spacing %q", resp.Header.Get("X-Spacing"))
	}
	for a := range 3 {
		if v := atof(t, sp[a]); math.Abs(v-ct.Spacing[a]) > 1e-4 {
			t.Fatalf("X-Spacing[%d] = %v, want %v", a, v, ct.Spacing[a])
		}
	}
	if len(b) != 2*len(ct.Voxels) {
		t.Fatalf("volume.bin: %d bytes, want %d", len(b), 2*len(ct.Voxels))
	}
	for i, x := range ct.Voxels {
		if got := int16(binary.LittleEndian.Uint16(b[2*i:])); float32(got) != x {
			t.Fatalf("volume.bin voxel %d = %d, want %v", i, got, x)
		}
	}
}

func TestSubmitDICOMAndEveryResultRoute(t *testing.T) {
	ts := newTestServer(t, Config{})
	files, ct := phantomSeries(t, t.TempDir(), 1, 16, 16, 6, "Doe^Jane")
	acc := ts.submit(t, readFiles(t, files), map[string]string{"method": "cam", "model": "fake-other"})
	if acc.StatusURL != "/api/v1/jobs/"+acc.JobID || !validID(acc.StudyID) || !validID(acc.JobID) {
		t.Fatalf("accepted %+v", acc)
	}
	j := ts.waitState(t, acc.JobID, 20*time.Second, StateDone, StateFailed)
	if j.State != StateDone || j.Progress != 1 || j.Stage != "done" || j.StudyID != acc.StudyID {
		t.Fatalf("job %+v", j)
	}

	resp, b := ts.do(t, "GET", "/api/v1/studies/"+acc.StudyID+"/result", nil, "")
	if resp.StatusCode != 200 {
		t.Fatalf("result: %d %s", resp.StatusCode, b)
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.StudyID != acc.StudyID || len(res.Series) != 1 || res.Series[0].Predicted != "NCP" || res.Model.Name != "fake-other" ||
		res.Series[0].Heatmap == nil || res.Series[0].Heatmap.Method != "cam" || res.Series[0].Dims != ct.Dims {
		t.Fatalf("result %s", b)
	}
	var skipped struct {
		Skipped []struct{ Path string } `json:"skipped"`
	}
	json.Unmarshal(b, &skipped)
	if len(skipped.Skipped) != 1 || skipped.Skipped[0].Path != filepath.Base(files[0]) {
		t.Fatalf("skipped %+v: want the client's name %q for the stored f000001.dcm", skipped, filepath.Base(files[0]))
	}
	base := "/api/v1/studies/" + acc.StudyID + "/series/0/"

	resp, b = ts.do(t, "GET", base+"heatmap.nii.gz", nil, "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/gzip" {
		t.Fatalf("heatmap.nii.gz: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p := filepath.Join(t.TempDir(), "h.nii.gz")
	os.WriteFile(p, b, 0o600)
	hv, err := dicomio.ReadNIfTI(p, dicomio.Limits{})
	if err != nil || hv.Dims != ct.Dims || hv.At(15, 3, 2) != 1 || hv.At(0, 3, 2) != 0 {
		t.Fatalf("heatmap.nii.gz: %v %v", err, hv)
	}

	resp, b = ts.do(t, "GET", base+"montage.png", nil, "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("montage: %d", resp.StatusCode)
	}
	if img, err := png.Decode(bytes.NewReader(b)); err != nil || img.Bounds().Dx() != 8 {
		t.Fatalf("montage: %v", err)
	}

	resp, b = ts.do(t, "GET", base+"volume.bin", nil, "")
	checkVolumeBin(t, resp, b, ct)

	// heat.bin: heat(i, j, k) = i/15 → round(255 i / 15) = 17 i.
	resp, b = ts.do(t, "GET", base+"heat.bin", nil, "")
	if resp.StatusCode != 200 || len(b) != len(ct.Voxels) || resp.Header.Get("X-Dims") != "16,16,6" {
		t.Fatalf("heat.bin: %d, %d bytes, X-Dims %q", resp.StatusCode, len(b), resp.Header.Get("X-Dims"))
	}
	for idx, v := range b {
		if i := idx % 16; int(v) != 17*i {
			t.Fatalf("heat.bin[%d] = %d, want %d", idx, v, 17*i)
		}
	}

	// One coronal slice (j = 5): voxels (i, 5, k), i fastest.
	resp, b = ts.do(t, "GET", base+"volume?plane=coronal&index=5&format=raw", nil, "")
	if resp.StatusCode != 200 || resp.Header.Get("X-Slice-Dims") != "16,6" || len(b) != 2*16*6 {
		t.Fatalf("volume slice: %d %q %d bytes", resp.StatusCode, resp.Header.Get("X-Slice-Dims"), len(b))
	}
	for k := range 6 {
		for i := range 16 {
			if got := int16(binary.LittleEndian.Uint16(b[2*(k*16+i):])); float32(got) != ct.At(i, 5, k) {
				t.Fatalf("coronal slice (%d, 5, %d) = %d, want %v", i, k, got, ct.At(i, 5, k))
			}
		}
	}
	resp, b = ts.do(t, "GET", base+"volume", nil, "")
	checkVolumeBin(t, resp, b, ct)
	for _, q := range []string{"?plane=axial", "?plane=oblique&index=1", "?plane=axial&index=6", "?plane=axial&index=x", "?format=png"} {
		if resp, b := ts.do(t, "GET", base+"volume"+q, nil, ""); resp.StatusCode != 400 || errorOf(t, b).Error == "" {
			t.Fatalf("volume%s: %d %s, want 400", q, resp.StatusCode, b)
		}
	}

	for _, pl := range []string{"axial/2", "coronal/0", "sagittal/15"} {
		resp, b = ts.do(t, "GET", base+"overlay/"+pl+".png", nil, "")
		if resp.StatusCode != 200 {
			t.Fatalf("overlay %s: %d %s", pl, resp.StatusCode, b)
		}
		if _, err := png.Decode(bytes.NewReader(b)); err != nil {
			t.Fatalf("overlay %s: %v", pl, err)
		}
	}
	resp, b = ts.do(t, "GET", base+"overlay/axial/6.png", nil, "")
	if e := errorOf(t, b); resp.StatusCode != 400 || !strings.Contains(e.Error, "0..5") {
		t.Fatalf("overlay out of range: %d %s", resp.StatusCode, b)
	}
	resp, b = ts.do(t, "GET", base+"overlay/oblique/1.png", nil, "")
	if resp.StatusCode != 400 || errorOf(t, b).Code != "bad_plane" {
		t.Fatalf("overlay bad plane: %d %s", resp.StatusCode, b)
	}
	resp, b = ts.do(t, "GET", "/api/v1/studies/"+acc.StudyID+"/series/1/volume.bin", nil, "")
	if e := errorOf(t, b); resp.StatusCode != 404 || !strings.Contains(e.Error, "has 1 series") {
		t.Fatalf("series 1: %d %s", resp.StatusCode, b)
	}

	resp, b = ts.do(t, "GET", "/api/v1/studies/"+acc.StudyID+"/report.md", nil, "")
	rep := string(b)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/markdown") ||
		!strings.Contains(rep, Caveat) || !strings.Contains(rep, "**NCP**") || !strings.Contains(rep, "| NCP | 70.0 % |") ||
		!strings.Contains(rep, "16 × 16 × 6 voxels") {
		t.Fatalf("report: %d\n%s", resp.StatusCode, rep)
	}

	resp, b = ts.do(t, "DELETE", "/api/v1/studies/"+acc.StudyID, nil, "")
	if resp.StatusCode != 204 {
		t.Fatalf("delete: %d %s", resp.StatusCode, b)
	}
	if _, err := os.Stat(ts.studyDir(acc.StudyID)); !os.IsNotExist(err) {
		t.Fatalf("study folder still there: %v", err)
	}
	for _, p := range []string{"/api/v1/studies/" + acc.StudyID + "/result", "/api/v1/jobs/" + acc.JobID, base + "volume.bin"} {
		if resp, b := ts.do(t, "GET", p, nil, ""); resp.StatusCode != 404 {
			t.Fatalf("GET %s after delete: %d %s", p, resp.StatusCode, b)
		}
	}
	if resp, b := ts.do(t, "DELETE", "/api/v1/studies/"+acc.StudyID, nil, ""); resp.StatusCode != 404 {
		t.Fatalf("second delete: %d %s", resp.StatusCode, b)
	}
}

func TestSubmitZipAndNIfTI(t *testing.T) {
	ts := newTestServer(t, Config{})
	files, ct := phantomSeries(t, t.TempDir(), 2, 16, 16, 5, "")
	entries := readFiles(t, files)
	for i := range entries {
		entries[i].name = "study/series 1/" + entries[i].name
	}
	acc := ts.submit(t, []formFile{{name: "study.zip", data: zipOf(t, entries, 8)}}, nil)
	if j := ts.waitState(t, acc.JobID, 20*time.Second, StateDone, StateFailed); j.State != StateDone {
		t.Fatalf("zip job %+v", j)
	}
	resp, b := ts.do(t, "GET", "/api/v1/studies/"+acc.StudyID+"/series/0/volume.bin", nil, "")
	checkVolumeBin(t, resp, b, ct)

	// NIfTI, gzip-compressed, with heatmap=false.
	nii := filepath.Join(t.TempDir(), "scan.nii.gz")
	if err := dicomio.WriteNIfTI(nii, ct, dicomio.NIfTIInt16); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(nii)
	acc = ts.submit(t, []formFile{{name: "scan.nii.gz", data: data}}, map[string]string{"heatmap": "false"})
	if j := ts.waitState(t, acc.JobID, 20*time.Second, StateDone, StateFailed); j.State != StateDone {
		t.Fatalf("nifti job %+v", j)
	}
	resp, b = ts.do(t, "GET", "/api/v1/studies/"+acc.StudyID+"/series/0/volume.bin", nil, "")
	checkVolumeBin(t, resp, b, ct)
	for _, f := range []string{"heat.bin", "heatmap.nii.gz", "montage.png", "overlay/axial/0.png"} {
		resp, b := ts.do(t, "GET", "/api/v1/studies/"+acc.StudyID+"/series/0/"+f, nil, "")
		if resp.StatusCode != 404 || errorOf(t, b).Code != "no_heatmap" {
			t.Fatalf("%s without heatmap: %d %s", f, resp.StatusCode, b)
		}
	}
	// Uncompressed NIfTI too.
	var raw bytes.Buffer
	zr, _ := gzip.NewReader(bytes.NewReader(data))
	io.Copy(&raw, zr)
	acc = ts.submit(t, []formFile{{name: "scan.nii", data: raw.Bytes()}}, nil)
	if j := ts.waitState(t, acc.JobID, 20*time.Second, StateDone, StateFailed); j.State != StateDone {
		t.Fatalf("nii job %+v", j)
	}
}
