package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// Accepted is the answer to a submission: the new study and job and where
// to poll the job.
type Accepted struct {
	StudyID   string `json:"study_id"`   // the stored study
	JobID     string `json:"job_id"`     // its scoring job
	StatusURL string `json:"status_url"` // "/api/v1/jobs/<job_id>"
}

// Job is a job as GET /api/v1/jobs/{id} shows it.
type Job struct {
	ID       string    `json:"id"`       // job id
	StudyID  string    `json:"study_id"` // the job's study
	State    string    `json:"state"`    // StateQueued, StateRunning, StateDone or StateFailed
	Progress float64   `json:"progress"` // fraction done, 0..1
	Stage    string    `json:"stage"`    // upload, discover, load, preprocess, infer, heatmap or done
	Error    string    `json:"error"`    // why the job failed ("" otherwise)
	Created  time.Time `json:"created"`  // submission time
	Updated  time.Time `json:"updated"`  // last change
}

var methods = map[string]bool{"gradcam": true, "gradcampp": true, "cam": true}

func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request) error {
	return s.submit(w, r, false)
}

func (s *Server) handleScore(w http.ResponseWriter, r *http.Request) error {
	return s.submit(w, r, true)
}

// retryAfter estimates in whole seconds (1..600) when a place in the
// queue frees: the waiting and running jobs times the mean job time,
// shared among the workers.
func (s *Server) retryAfter() int {
	waiting, reserved, running := s.q.stats()
	mean := s.metrics.meanInference(10)
	secs := mean * float64(waiting+reserved+running) / float64(s.cfg.Workers)
	return int(min(max(math.Ceil(secs), 1), 600))
}

// submit receives a study, checks it, stores it with a queued job and
// answers 202 (or, when wait is set, waits for the result).
func (s *Server) submit(w http.ResponseWriter, r *http.Request, wait bool) error {
	if s.draining.Load() {
		return &Error{Status: http.StatusServiceUnavailable, Code: "shutting_down", Msg: "the server is shutting down; retry later", RetryAfter: 30}
	}
	if !s.q.reserve() {
		s.metrics.queueRejected()
		return &Error{Status: http.StatusTooManyRequests, Code: "queue_full",
			Msg: fmt.Sprintf("the job queue is full (%d places); retry later", s.cfg.QueueSize), RetryAfter: s.retryAfter()}
	}
	committed := false
	defer func() {
		if !committed {
			s.q.release()
		}
	}()
	limit := s.cfg.MaxUpload
	if wait {
		limit = s.cfg.MaxSyncUpload
	}
	studyID := newID()
	dir := s.studyDir(studyID)
	fail := func(err error, msg func(string) string) error {
		_ = os.RemoveAll(dir)
		return inputError(err, msg)
	}
	u, err := s.receive(w, r, dir, limit)
	if err != nil {
		return fail(err, func(t string) string { return t })
	}
	names := u.names()
	msg := clientText(dir, names)
	if err := s.check(u, msg); err != nil {
		return fail(err, msg)
	}
	if err := s.checkModel(u); err != nil {
		return fail(err, msg)
	}
	if err := writeNames(dir, names); err != nil {
		_ = os.RemoveAll(dir)
		return err
	}
	now := s.cfg.Now()
	jobID := newID()
	st := studyRow{ID: studyID, Created: now, Kind: u.kind, Input: filepath.ToSlash(filepath.Join("studies", studyID, u.input)), Files: len(u.files), Bytes: u.bytes}
	jr := jobRow{ID: jobID, StudyID: studyID, State: StateQueued, Stage: "upload", Model: u.model, Heatmap: u.heatmap, Method: u.method, Created: now, Updated: now}
	if err := s.store.createStudy(context.Background(), st, jr); err != nil {
		_ = os.RemoveAll(dir)
		return err
	}
	var finished <-chan struct{}
	if wait {
		var stop func()
		finished, stop = s.q.wait(jobID)
		defer stop()
	}
	s.q.commit(jobID)
	committed = true
	s.log.Info("study accepted", "study_id", studyID, "job_id", jobID, "kind", u.kind, "files", len(u.files), "bytes", u.bytes, "request_id", requestID(r.Context()))
	acc := Accepted{StudyID: studyID, JobID: jobID, StatusURL: "/api/v1/jobs/" + jobID}
	w.Header().Set("Location", acc.StatusURL)
	if !wait {
		writeJSON(w, http.StatusAccepted, acc)
		return nil
	}
	waitCtx, cancel := context.WithTimeout(r.Context(), s.cfg.SyncTimeout)
	defer cancel()
	select {
	case <-finished:
	case <-s.drainCh:
		return &Error{Status: http.StatusServiceUnavailable, Code: "shutting_down", RetryAfter: 30,
			Msg: "the server is shutting down; job " + jobID + " stays queued: poll " + acc.StatusURL + " after the restart"}
	case <-waitCtx.Done():
		writeJSON(w, http.StatusAccepted, acc)
		return nil
	}
	j, err := s.store.job(context.Background(), jobID)
	if err != nil {
		return err
	}
	switch j.State {
	case StateDone:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(s.clientResult(j))
		return err
	case StateFailed:
		return errorf(http.StatusUnprocessableEntity, "job_failed", "scoring failed at stage %q: %s", j.Stage, readableJobError(dir, j.Error))
	}
	writeJSON(w, http.StatusAccepted, acc)
	return nil
}

// checkModel checks the model and method fields against the scorer.
func (s *Server) checkModel(u *upload) error {
	if u.model != "" {
		var names []string
		found := false
		for _, m := range s.cfg.Scorer.Models() {
			names = append(names, m.Name)
			found = found || m.Name == u.model
		}
		if !found {
			return errorf(http.StatusBadRequest, "unknown_model", "form field \"model\" is %q: not one of %s (GET /api/v1/models)", u.model, strings.Join(names, ", "))
		}
	}
	if u.method != "" && !methods[u.method] {
		return errorf(http.StatusBadRequest, "bad_field", "form field \"method\" is %q: want gradcam, gradcampp or cam", u.method)
	}
	return nil
}

// readableJobError words a stored job error for the study's client.
func readableJobError(dir, msg string) string {
	return clientText(dir, readNames(dir))(msg)
}

func (s *Server) jobJSON(j *jobRow) Job {
	out := Job{ID: j.ID, StudyID: j.StudyID, State: j.State, Progress: j.Progress, Stage: j.Stage, Created: j.Created, Updated: j.Updated}
	if j.Error != "" {
		out.Error = readableJobError(s.studyDir(j.StudyID), j.Error)
	}
	return out
}

// idParam returns the {id} path parameter, 404 when it cannot be an id.
func idParam(r *http.Request, what string) (string, error) {
	id := chi.URLParam(r, "id")
	if !validID(id) {
		return "", errorf(http.StatusNotFound, "not_found", "no %s with id %q", what, id)
	}
	return id, nil
}

func (s *Server) handleJob(w http.ResponseWriter, r *http.Request) error {
	id, err := idParam(r, "job")
	if err != nil {
		return err
	}
	j, err := s.store.job(r.Context(), id)
	if errors.Is(err, errNotFound) {
		return errorf(http.StatusNotFound, "not_found", "no job with id %q", id)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.jobJSON(j))
	return nil
}

// doneJob returns the study's job when it is done: 404 for an unknown
// study, 409 while it is queued or running or when it failed.
func (s *Server) doneJob(r *http.Request) (*jobRow, error) {
	id, err := idParam(r, "study")
	if err != nil {
		return nil, err
	}
	j, err := s.store.jobOfStudy(r.Context(), id)
	if errors.Is(err, errNotFound) {
		return nil, errorf(http.StatusNotFound, "not_found", "no study with id %q", id)
	}
	if err != nil {
		return nil, err
	}
	switch j.State {
	case StateDone:
		return j, nil
	case StateFailed:
		return nil, errorf(http.StatusConflict, "job_failed", "job failed: %s", readableJobError(s.studyDir(id), j.Error))
	}
	return nil, errorf(http.StatusConflict, "not_ready", "job is %s", j.State)
}

func (s *Server) handleResult(w http.ResponseWriter, r *http.Request) error {
	j, err := s.doneJob(r)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, err = w.Write(s.clientResult(j))
	return err
}

// clientResult is a done job's result as its client sees it: stored file
// names (in skipped files, sources and errors) replaced by the uploaded
// names.
func (s *Server) clientResult(j *jobRow) []byte {
	dir := s.studyDir(j.StudyID)
	names := readNames(dir)
	if len(names) == 0 {
		return j.Result
	}
	b, err := rewriteJSON(j.Result, clientText(dir, names))
	if err != nil {
		return j.Result
	}
	return b
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) error {
	id, err := idParam(r, "study")
	if err != nil {
		return err
	}
	ctx := r.Context()
	if _, err := s.store.study(ctx, id); errors.Is(err, errNotFound) {
		return errorf(http.StatusNotFound, "not_found", "no study with id %q", id)
	} else if err != nil {
		return err
	}
	if j, err := s.store.jobOfStudy(ctx, id); err == nil {
		if !s.q.remove(j.ID) {
			if done := s.q.cancelRunning(j.ID, errDeleted); done != nil {
				select {
				case <-done:
				case <-ctx.Done():
					return errorf(http.StatusServiceUnavailable, "busy", "the study's job did not stop in time; retry the deletion")
				}
			}
		}
	}
	if err := s.deleteStudy(ctx, id); err != nil {
		return err
	}
	s.log.Info("study deleted", "study_id", id, "request_id", requestID(ctx))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) error {
	ms := s.cfg.Scorer.Models()
	out := make([]ModelInfo, 0, len(ms))
	for _, m := range ms {
		if m.Caveat == "" {
			m.Caveat = Caveat
		}
		if m.Classes == nil {
			m.Classes = []string{}
		}
		out = append(out, m)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(s.openapi)
	return err
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, err := w.Write([]byte("ok\n"))
	return err
}

// ready returns why the server cannot take work, or nil.
func (s *Server) ready(ctx context.Context) error {
	if s.draining.Load() {
		return errors.New("the server is shutting down")
	}
	if len(s.cfg.Scorer.Models()) == 0 {
		return errors.New("no model is loaded")
	}
	if rc, ok := s.cfg.Scorer.(ReadyChecker); ok {
		if err := rc.Ready(); err != nil {
			return fmt.Errorf("model not ready: %w", err)
		}
	}
	if err := s.store.db.PingContext(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	f, err := os.CreateTemp(filepath.Join(s.cfg.DataDir, "studies"), ".ready-*")
	if err != nil {
		return fmt.Errorf("storage not writable: %w", err)
	}
	name := f.Name()
	_, werr := f.Write([]byte("ok"))
	cerr := f.Close()
	_ = os.Remove(name)
	if werr != nil || cerr != nil {
		return fmt.Errorf("storage not writable: %v", errors.Join(werr, cerr))
	}
	return nil
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) error {
	if err := s.ready(r.Context()); err != nil {
		return &Error{Status: http.StatusServiceUnavailable, Code: "not_ready", Msg: strings.ReplaceAll(err.Error(), s.cfg.DataDir, "<data>"), RetryAfter: 5}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, err := w.Write([]byte("ready\n"))
	return err
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	jobs, err := s.store.countByState(r.Context())
	if err != nil {
		return err
	}
	waiting, reserved, running := s.q.stats()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.metrics.write(w, gauges{jobs: jobs, waiting: waiting, reserved: reserved, running: running, cap: s.cfg.QueueSize, workers: s.cfg.Workers})
	return nil
}

// placeholderUI is served at / when no UI is configured.
const placeholderUI = `<!doctype html><meta charset="utf-8"><title>ctlens</title>
<h1>ctlens</h1><p>This server has no web UI built in. The REST API is described at
<a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</p><p>` + Caveat + `</p>
`

func (s *Server) handleUI(w http.ResponseWriter, r *http.Request) error {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		return errorf(http.StatusNotFound, "not_found", "no route for %s %s", r.Method, r.URL.Path)
	}
	if s.cfg.UI != nil {
		s.cfg.UI.ServeHTTP(w, r)
		return nil
	}
	if r.URL.Path != "/" {
		return errorf(http.StatusNotFound, "not_found", "no page %s", r.URL.Path)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write([]byte(placeholderUI))
	return err
}
