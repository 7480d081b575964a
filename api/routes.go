package api

import (
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// Timeout classes of routes.
const (
	// TimeoutRequest bounds a route by Config.RequestTimeout.
	TimeoutRequest = "request"
	// TimeoutUpload bounds a route by Config.UploadTimeout (uploads, large
	// downloads).
	TimeoutUpload = "upload"
	// TimeoutSync bounds a route by Config.UploadTimeout plus
	// Config.SyncTimeout (upload, then wait for the result).
	TimeoutSync = "sync"
)

// Route is one entry of the route table: the router registers it and the
// OpenAPI document describes it, from the same value.
type Route struct {
	// Method is the HTTP method; Pattern the chi pattern ({name} path
	// parameters). Subtree routes also take every path below Pattern (the
	// UI); the router registers them as Pattern + "*".
	Method, Pattern string
	Subtree         bool // also every path below Pattern
	// OperationID, Summary and Tag document the route.
	OperationID, Summary, Tag string
	// Auth says the route needs the bearer token (when one is set).
	Auth bool
	// Timeout is the route's timeout class (TimeoutRequest if empty).
	Timeout string
	// Upload says the body is the study upload form (multipart).
	Upload bool
	// Query lists the query parameters.
	Query []Param
	// Responses lists the documented responses.
	Responses []Response

	handle func(s *Server, w http.ResponseWriter, r *http.Request) error
}

// Param is a query parameter.
type Param struct {
	// Name and Description document the parameter.
	Name, Description string
	// Type is "string" or "integer".
	Type string
	// Enum lists the allowed strings.
	Enum []string
}

// Response is one documented response: status, description, media type
// and (for JSON) the name of the schema in the document's components.
type Response struct {
	Status      int    // HTTP status
	Description string // when it is given
	ContentType string // media type of the body ("" for none)
	Schema      string // components schema name for JSON bodies
}

func jsonResp(status int, desc, schema string) Response {
	return Response{Status: status, Description: desc, ContentType: "application/json", Schema: schema}
}

func errResp(status int, desc string) Response { return jsonResp(status, desc, "Error") }

// Routes returns the route table, in documentation order.
func Routes() []Route {
	const (
		studies = "studies"
		jobs    = "jobs"
		files   = "files"
		ops     = "operations"
	)
	queueFull := Response{Status: 429, Description: "the job queue is full; retry after Retry-After seconds", ContentType: "application/json", Schema: "Error"}
	busy := Response{Status: 503, Description: "the server is shutting down; retry after Retry-After seconds", ContentType: "application/json", Schema: "Error"}
	uploadErrs := []Response{
		errResp(400, "no file part, an empty file, an unsafe file name, a mix of input kinds or a bad form field"),
		errResp(408, "the upload did not finish within the upload timeout"),
		errResp(413, "the body, a file, the zip's uncompressed size, the file count or a series' voxel count exceeds its limit"),
		errResp(415, "not multipart/form-data, or no file is DICOM, a zip or NIfTI"),
		errResp(422, "unsafe zip (path traversal, compression bomb), unreadable DICOM or no CT series"),
		queueFull, busy,
	}
	seriesErrs := []Response{errResp(404, "unknown study, series index or file"), errResp(409, "the study's job is not done")}
	bin := func(desc string) Response {
		return Response{Status: 200, Description: desc + "; headers X-Dims: cols,rows,slices and X-Spacing: x,y,z (mm)", ContentType: "application/octet-stream"}
	}
	png := Response{Status: 200, Description: "PNG image", ContentType: "image/png"}
	return []Route{
		{Method: "POST", Pattern: "/api/v1/studies", OperationID: "submitStudy", Tag: studies, Auth: true, Timeout: TimeoutUpload, Upload: true,
			Summary:   "Upload a study (DICOM files, one .zip or one .nii/.nii.gz) and queue a scoring job",
			Responses: append([]Response{jsonResp(202, "accepted: the job is queued", "Accepted")}, uploadErrs...),
			handle:    (*Server).handleSubmit},
		{Method: "POST", Pattern: "/api/v1/score", OperationID: "scoreSync", Tag: studies, Auth: true, Timeout: TimeoutSync, Upload: true,
			Summary: "Upload a small study (at most the synchronous upload limit) and wait for its result",
			Responses: append([]Response{jsonResp(200, "the result", "Result"),
				jsonResp(202, "the job did not finish within the wait limit; poll status_url", "Accepted"),
				errResp(422, "the input was accepted but scoring failed")}, uploadErrs...),
			handle: (*Server).handleScore},
		{Method: "GET", Pattern: "/api/v1/jobs/{id}", OperationID: "getJob", Tag: jobs, Auth: true,
			Summary:   "State and progress of a job",
			Responses: []Response{jsonResp(200, "the job", "Job"), errResp(404, "unknown job")},
			handle:    (*Server).handleJob},
		{Method: "GET", Pattern: "/api/v1/studies/{id}/result", OperationID: "getResult", Tag: studies, Auth: true,
			Summary:   "Result of a study's job",
			Responses: []Response{jsonResp(200, "the result", "Result"), errResp(404, "unknown study"), errResp(409, "the job is queued, running or failed")},
			handle:    (*Server).handleResult},
		{Method: "DELETE", Pattern: "/api/v1/studies/{id}", OperationID: "deleteStudy", Tag: studies, Auth: true,
			Summary:   "Delete a study: its job (cancelled if running), rows and files",
			Responses: []Response{{Status: 204, Description: "deleted"}, errResp(404, "unknown study")},
			handle:    (*Server).handleDelete},
		{Method: "GET", Pattern: "/api/v1/studies/{id}/report.md", OperationID: "getReport", Tag: studies, Auth: true,
			Summary:   "Markdown report of the result, with the caveat",
			Responses: append([]Response{{Status: 200, Description: "Markdown", ContentType: "text/markdown"}}, seriesErrs...),
			handle:    (*Server).handleReport},
		{Method: "GET", Pattern: "/api/v1/studies/{id}/series/{n}/heatmap.nii.gz", OperationID: "getHeatmapNIfTI", Tag: files, Auth: true, Timeout: TimeoutUpload,
			Summary:   "Heat volume of series n on the scan's grid (NIfTI-1, gzip)",
			Responses: append([]Response{{Status: 200, Description: "NIfTI-1 volume, gzip-compressed", ContentType: "application/gzip"}}, seriesErrs...),
			handle:    (*Server).handleHeatNIfTI},
		{Method: "GET", Pattern: "/api/v1/studies/{id}/series/{n}/montage.png", OperationID: "getMontage", Tag: files, Auth: true,
			Summary:   "Montage of the hottest axial slices of series n",
			Responses: append([]Response{png}, seriesErrs...),
			handle:    (*Server).handleMontage},
		{Method: "GET", Pattern: "/api/v1/studies/{id}/series/{n}/overlay/{plane}/{index}.png", OperationID: "getOverlay", Tag: files, Auth: true, Timeout: TimeoutUpload,
			Summary:   "Slice index of the given plane with the heat blended over it",
			Responses: append([]Response{png, errResp(400, "bad plane or index")}, seriesErrs...),
			handle:    (*Server).handleOverlay},
		{Method: "GET", Pattern: "/api/v1/studies/{id}/series/{n}/volume", OperationID: "getVolume", Tag: files, Auth: true, Timeout: TimeoutUpload,
			Summary: "Scan voxels of series n as little-endian int16 HU: the whole volume (i fastest, then j, then k), or one slice with plane and index",
			Query: []Param{
				{Name: "plane", Type: "string", Enum: []string{"axial", "coronal", "sagittal"}, Description: "slice orientation (with index); the slice's voxels go along its first image axis fastest (axial: i then j; coronal: i then k; sagittal: j then k), and X-Slice-Dims gives their counts"},
				{Name: "index", Type: "integer", Description: "slice index along the plane's fixed axis"},
				{Name: "format", Type: "string", Enum: []string{"raw"}, Description: "only raw (the default)"},
			},
			Responses: append([]Response{bin("int16 HU voxels"), errResp(400, "bad plane, index or format")}, seriesErrs...),
			handle:    (*Server).handleVolume},
		{Method: "GET", Pattern: "/api/v1/studies/{id}/series/{n}/volume.bin", OperationID: "getVolumeBin", Tag: files, Auth: true, Timeout: TimeoutUpload,
			Summary:   "Scan voxels of series n: little-endian int16 HU, i fastest, then j, then k",
			Responses: append([]Response{bin("int16 HU voxels")}, seriesErrs...),
			handle:    (*Server).handleVolumeBin},
		{Method: "GET", Pattern: "/api/v1/studies/{id}/series/{n}/heat.bin", OperationID: "getHeatBin", Tag: files, Auth: true, Timeout: TimeoutUpload,
			Summary:   "Heat of series n on the scan's grid: uint8 0..255 = round(255·heat), same order and headers as volume.bin",
			Responses: append([]Response{bin("uint8 heat")}, seriesErrs...),
			handle:    (*Server).handleHeatBin},
		{Method: "GET", Pattern: "/api/v1/models", OperationID: "listModels", Tag: ops, Auth: true,
			Summary:   "Models that a submission's model field may name",
			Responses: []Response{jsonResp(200, "the models", "ModelList")},
			handle:    (*Server).handleModels},
		{Method: "GET", Pattern: "/api/v1/openapi.json", OperationID: "getOpenAPI", Tag: ops, Auth: true,
			Summary:   "This document",
			Responses: []Response{{Status: 200, Description: "OpenAPI 3.0 document", ContentType: "application/json"}},
			handle:    (*Server).handleOpenAPI},
		{Method: "GET", Pattern: "/healthz", OperationID: "healthz", Tag: ops,
			Summary:   "Liveness: 200 ok while the process serves",
			Responses: []Response{{Status: 200, Description: "ok", ContentType: "text/plain"}},
			handle:    (*Server).handleHealthz},
		{Method: "GET", Pattern: "/readyz", OperationID: "readyz", Tag: ops,
			Summary:   "Readiness: 200 when the model is loaded and storage writable",
			Responses: []Response{{Status: 200, Description: "ready", ContentType: "text/plain"}, errResp(503, "not ready, with the reason")},
			handle:    (*Server).handleReadyz},
		{Method: "GET", Pattern: "/metrics", OperationID: "metrics", Tag: ops,
			Summary:   "Prometheus metrics (text exposition format 0.0.4)",
			Responses: []Response{{Status: 200, Description: "metrics", ContentType: "text/plain; version=0.0.4"}},
			handle:    (*Server).handleMetrics},
		{Method: "GET", Pattern: "/", Subtree: true, OperationID: "ui", Tag: ops,
			Summary:   "The web UI (and its assets below /)",
			Responses: []Response{{Status: 200, Description: "HTML page or asset", ContentType: "text/html"}},
			handle:    (*Server).handleUI},
		{Method: "HEAD", Pattern: "/", Subtree: true, OperationID: "uiHead", Tag: ops,
			Summary:   "Headers of the web UI's pages",
			Responses: []Response{{Status: 200, Description: "headers only"}},
			handle:    (*Server).handleUI},
	}
}

// chiPattern is the pattern the router registers for rt.
func (rt Route) chiPattern() string {
	if rt.Subtree {
		return strings.TrimSuffix(rt.Pattern, "/") + "/*"
	}
	return rt.Pattern
}

var pathParamRE = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// pathParams returns the names of the {name} parameters of the pattern.
func (rt Route) pathParams() []string {
	var out []string
	for _, m := range pathParamRE.FindAllStringSubmatch(rt.Pattern, -1) {
		out = append(out, m[1])
	}
	return out
}

func (s *Server) timeoutOf(class string) time.Duration {
	switch class {
	case TimeoutUpload:
		return s.cfg.UploadTimeout
	case TimeoutSync:
		return s.cfg.UploadTimeout + s.cfg.SyncTimeout
	}
	return s.cfg.RequestTimeout
}

// buildRouter registers every route of the table on a chi router, with
// request ids, logging, metrics and panic recovery around all of them and
// per-route timeouts and authentication.
func (s *Server) buildRouter() http.Handler {
	r := chi.NewRouter()
	r.Use(s.observe)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(http.StatusNotFound, "not_found", "no route for %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(http.StatusMethodNotAllowed, "method_not_allowed", "method %s is not allowed on %s", r.Method, r.URL.Path))
	})
	for _, rt := range s.routes {
		mw := []func(http.Handler) http.Handler{s.timeout(s.timeoutOf(rt.Timeout))}
		if rt.Auth {
			mw = append(mw, s.auth)
		}
		r.With(mw...).Method(rt.Method, rt.chiPattern(), s.adapt(rt.handle))
	}
	return r
}

// adapt turns a handler that returns an error into an http.Handler that
// answers the error as JSON (logging unexpected ones).
func (s *Server) adapt(h func(*Server, http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(s, w, r); err != nil {
			var e *Error
			if !asError(err, &e) {
				s.log.Error("request failed", "request_id", requestID(r.Context()), "route", routePattern(r), "err", err)
			}
			writeError(w, err)
		}
	})
}
