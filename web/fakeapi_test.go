package web

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strings"
	"sync"
)

// The fake API implements the routes of /work/notes/api-contract.md that the
// UI calls, over a small synthetic study, so the browser test does not
// depend on the real server.

const (
	fakeToken     = "s3cret"
	fakeModel     = "r3d18-synth"
	fakeVersion   = "1.2.0"
	fakeCaveat    = "Trained on synthetic data; not for clinical use."
	fakeLungHU    = -860
	fakeTissueHU  = 40
	fakeAirHU     = -1000
	fakeBlobSigma = 2.5 // voxels
)

// Synthetic grid: cols × rows × slices and spacing in mm.
var (
	fakeDims    = [3]int{40, 32, 20}
	fakeSpacing = [3]float64{0.8, 0.8, 2.5}
	fakePeak    = [3]int{28, 12, 14} // the hot blob's centre, inside the right lung
)

// fakeHU is the synthetic CT: air outside an elliptic body of soft tissue,
// two elliptic lungs in slices 3..17.
func fakeHU(i, j, k int) int16 {
	sq := func(x float64) float64 { return x * x }
	x, y := float64(i), float64(j)
	if sq((x-19.5)/18)+sq((y-15.5)/14) >= 1 {
		return fakeAirHU
	}
	if k >= 3 && k <= 17 {
		if sq((x-11)/6)+sq((y-14)/8) < 1 || sq((x-28)/6)+sq((y-14)/8) < 1 {
			return fakeLungHU
		}
	}
	return fakeTissueHU
}

// fakeHeat is 255·exp(−d²/(2σ²)) rounded, d the voxel distance to fakePeak.
func fakeHeat(i, j, k int) uint8 {
	d2 := float64((i-fakePeak[0])*(i-fakePeak[0]) + (j-fakePeak[1])*(j-fakePeak[1]) + (k-fakePeak[2])*(k-fakePeak[2]))
	return uint8(math.Round(255 * math.Exp(-d2/(2*fakeBlobSigma*fakeBlobSigma))))
}

// upload is what the fake server saw of one POST /api/v1/studies.
type upload struct {
	names    []string
	bodies   []string
	model    string
	heatmap  string
	method   string
	authz    string
	jobPolls int
}

type fakeAPI struct {
	mu      sync.Mutex
	uploads []*upload
	gets    []string // paths of authorised GETs, in order
	volume  []byte
	heat    []byte
}

func newFakeAPI() *fakeAPI {
	f := &fakeAPI{}
	n := fakeDims[0] * fakeDims[1] * fakeDims[2]
	f.volume = make([]byte, 2*n)
	f.heat = make([]byte, n)
	x := 0
	for k := 0; k < fakeDims[2]; k++ {
		for j := 0; j < fakeDims[1]; j++ {
			for i := 0; i < fakeDims[0]; i++ {
				binary.LittleEndian.PutUint16(f.volume[2*x:], uint16(fakeHU(i, j, k)))
				f.heat[x] = fakeHeat(i, j, k)
				x++
			}
		}
	}
	return f
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": msg, "code": code})
}

// study returns the upload of study or job id "st-N"/"job-N".
func (f *fakeAPI) study(id string) *upload {
	var n int
	if _, err := fmt.Sscanf(id[strings.IndexByte(id, '-')+1:], "%d", &n); err != nil || n < 1 || n > len(f.uploads) {
		return nil
	}
	return f.uploads[n-1]
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch a := r.Header.Get("Authorization"); {
	case a == "":
		writeErr(w, http.StatusUnauthorized, "unauthorized", "missing Authorization: Bearer token")
		return
	case a != "Bearer "+fakeToken:
		writeErr(w, http.StatusForbidden, "forbidden", "wrong bearer token")
		return
	}
	if r.Method == http.MethodGet {
		f.gets = append(f.gets, r.URL.Path)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/models", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, []map[string]any{
			{"name": "tiny-cnn", "arch": "cnn3d", "classes": []string{"CP", "NCP", "Normal"}, "params": 12345, "default": false,
				"description": "a tiny test network", "caveat": fakeCaveat},
			{"name": fakeModel, "arch": "r3d_18", "classes": []string{"CP", "NCP", "Normal"}, "params": 33000000, "default": true,
				"description": "3D ResNet-18", "caveat": fakeCaveat},
		})
	})
	mux.HandleFunc("POST /api/v1/studies", f.postStudy)
	mux.HandleFunc("GET /api/v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		u := f.study(r.PathValue("id"))
		if u == nil {
			writeErr(w, 404, "not_found", "no job "+r.PathValue("id"))
			return
		}
		u.jobPolls++
		id := strings.Replace(r.PathValue("id"), "job", "st", 1)
		job := map[string]any{"id": r.PathValue("id"), "study_id": id, "created": "2026-01-02T03:04:05Z", "updated": "2026-01-02T03:04:06Z"}
		switch u.jobPolls {
		case 1:
			job["state"], job["stage"], job["progress"] = "queued", "upload", 0.1
		case 2:
			job["state"], job["stage"], job["progress"] = "running", "infer", 0.6
		default:
			job["state"], job["stage"], job["progress"] = "done", "done", 1.0
		}
		writeJSON(w, 200, job)
	})
	mux.HandleFunc("GET /api/v1/studies/{id}/result", func(w http.ResponseWriter, r *http.Request) {
		u := f.study(r.PathValue("id"))
		if u == nil {
			writeErr(w, 404, "not_found", "no study "+r.PathValue("id"))
			return
		}
		if u.jobPolls < 3 {
			writeErr(w, 409, "not_done", "job is running")
			return
		}
		writeJSON(w, 200, fakeResult(r.PathValue("id")))
	})
	bin := func(body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if f.study(r.PathValue("id")) == nil || r.PathValue("n") != "0" {
				writeErr(w, 404, "not_found", "no series "+r.PathValue("n")+" in study "+r.PathValue("id"))
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("X-Dims", fmt.Sprintf("%d,%d,%d", fakeDims[0], fakeDims[1], fakeDims[2]))
			w.Header().Set("X-Spacing", fmt.Sprintf("%g,%g,%g", fakeSpacing[0], fakeSpacing[1], fakeSpacing[2]))
			_, _ = w.Write(body)
		}
	}
	mux.HandleFunc("GET /api/v1/studies/{id}/series/{n}/volume.bin", bin(f.volume))
	mux.HandleFunc("GET /api/v1/studies/{id}/series/{n}/heat.bin", bin(f.heat))
	mux.HandleFunc("GET /api/v1/studies/{id}/series/{n}/heatmap.nii.gz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = io.WriteString(w, "fake nifti")
	})
	mux.HandleFunc("GET /api/v1/studies/{id}/report.md", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
		_, _ = io.WriteString(w, fakeReport(r.PathValue("id")))
	})
	mux.ServeHTTP(w, r)
}

func fakeReport(id string) string {
	return "# ctlens report " + id + "\n\nPredicted: NCP\n\n" + fakeCaveat + "\n"
}

func (f *fakeAPI) postStudy(w http.ResponseWriter, r *http.Request) {
	// Read the parts by hand: multipart.FileHeader.Filename keeps only the
	// base name, and the test checks the folder paths the UI sends.
	mr, err := r.MultipartReader()
	if err != nil {
		writeErr(w, 400, "bad_request", "multipart form: "+err.Error())
		return
	}
	u := &upload{authz: r.Header.Get("Authorization")}
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeErr(w, 400, "bad_request", "multipart form: "+err.Error())
			return
		}
		_, params, _ := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
		b, err := io.ReadAll(p)
		if err != nil {
			writeErr(w, 400, "bad_request", "multipart form: "+err.Error())
			return
		}
		switch name := params["name"]; name {
		case "file":
			if strings.HasSuffix(params["filename"], ".txt") {
				writeErr(w, 415, "unsupported_media", params["filename"]+": not DICOM or NIfTI (no DICM preamble, no NIfTI header)")
				return
			}
			u.names = append(u.names, params["filename"])
			u.bodies = append(u.bodies, string(b))
		case "model":
			u.model = string(b)
		case "heatmap":
			u.heatmap = string(b)
		case "method":
			u.method = string(b)
		}
	}
	if len(u.names) == 0 {
		writeErr(w, 400, "no_files", "no file parts in the upload")
		return
	}
	f.uploads = append(f.uploads, u)
	n := len(f.uploads)
	writeJSON(w, 202, map[string]string{"study_id": fmt.Sprintf("st-%d", n), "job_id": fmt.Sprintf("job-%d", n),
		"status_url": fmt.Sprintf("/api/v1/jobs/job-%d", n)})
}

func fakeResult(id string) map[string]any {
	return map[string]any{
		"study_id": id,
		"model": map[string]any{"name": fakeModel, "version": fakeVersion, "arch": "r3d_18",
			"classes": []string{"CP", "NCP", "Normal"}, "caveat": fakeCaveat},
		"series": []map[string]any{{
			"series_uid":    "1.2.826.0.1.3680043.8.498.1",
			"description":   "Synthetic chest",
			"dims":          fakeDims,
			"spacing":       fakeSpacing,
			"probabilities": map[string]float64{"CP": 0.125, "NCP": 0.75, "Normal": 0.125},
			"predicted":     "NCP",
			"timings_ms":    map[string]float64{"load": 12, "preprocess": 30, "infer": 250, "heatmap": 90},
			"heatmap": map[string]any{"method": "gradcam", "layer": "layer4", "class": "NCP",
				"peak_mm": []float64{22.4, 9.6, 35}, "peak_voxel": fakePeak, "lung_share": 0.7},
			"warnings": []string{"slice spacing 2.5 mm resampled to 1.5 mm"},
		}},
	}
}

// lastUpload returns the most recent accepted upload.
func (f *fakeAPI) lastUpload() *upload {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.uploads) == 0 {
		return nil
	}
	return f.uploads[len(f.uploads)-1]
}
