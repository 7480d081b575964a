package api

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctlens/ctlens/dicomio"
)

// Config configures a Server. Zero fields take the defaults named.
type Config struct {
	// DataDir holds the database and the studies' files (required).
	DataDir string
	// Scorer runs the models (required).
	Scorer Scorer
	// Workers is the number of jobs run at once (default 2).
	Workers int
	// QueueSize is the number of jobs that may wait for a worker; further
	// submissions get 429 with Retry-After (default 16).
	QueueSize int
	// Token, when not empty, is the bearer token every /api/ route needs.
	Token string
	// Retention is how long a study is kept (default 168h; negative keeps
	// studies for ever). RetentionInterval is how often expired studies are
	// looked for (default Retention/24, between 1 s and 1 h).
	Retention         time.Duration
	RetentionInterval time.Duration // how often the sweep runs
	// MaxUpload bounds the request body of POST /api/v1/studies (default
	// 2 GiB); MaxSyncUpload that of POST /api/v1/score (default 64 MiB).
	MaxUpload     int64
	MaxSyncUpload int64 // body limit of POST /api/v1/score
	// Limits bounds what reading an upload may use: file count, bytes per
	// file, total uncompressed zip bytes, zip compression ratio, voxels
	// (zero fields: see DefaultLimits).
	Limits dicomio.Limits
	// Grace is how long Shutdown lets running jobs finish before it
	// cancels them and puts them back in the queue (default 30 s).
	Grace time.Duration
	// RequestTimeout bounds ordinary requests (default 30 s);
	// UploadTimeout the upload routes (default 30 min); SyncTimeout how
	// long POST /api/v1/score waits for its job (default 5 min).
	RequestTimeout, UploadTimeout, SyncTimeout time.Duration
	// MaxAttempts is how many times a job is started before a job that
	// keeps being interrupted is failed (default 3).
	MaxAttempts int
	// UI, when not nil, serves GET / and everything below it that no
	// other route takes.
	UI http.Handler
	// Logger receives the server's logs (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests move it for retention.
	Now func() time.Time
}

// DefaultLimits returns the input limits the server uses for zero fields
// of Config.Limits: 20000 files, 1 GiB per file, 16 GiB uncompressed per
// zip archive, compression ratio 200, 2^28 voxels (e.g. 512×512×1024) per
// series, images up to 4096×4096.
func DefaultLimits() dicomio.Limits {
	return dicomio.Limits{
		MaxFiles:     20000,
		MaxFileBytes: 1 << 30,
		MaxZipBytes:  16 << 30,
		MaxZipRatio:  200,
		MaxVoxels:    1 << 28,
		MaxRows:      4096,
		MaxCols:      4096,
		MaxFrames:    10000,
	}
}

func (c *Config) fill() error {
	if c.DataDir == "" {
		return errors.New("api: Config.DataDir is empty")
	}
	if c.Scorer == nil {
		return errors.New("api: Config.Scorer is nil")
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 16
	}
	def(&c.Retention, 168*time.Hour)
	if c.RetentionInterval <= 0 {
		c.RetentionInterval = min(max(c.Retention/24, time.Second), time.Hour)
	}
	if c.MaxUpload <= 0 {
		c.MaxUpload = 2 << 30
	}
	if c.MaxSyncUpload <= 0 {
		c.MaxSyncUpload = 64 << 20
	}
	d := DefaultLimits()
	l := &c.Limits
	if l.MaxFiles == 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxFileBytes == 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	if l.MaxZipBytes == 0 {
		l.MaxZipBytes = d.MaxZipBytes
	}
	if l.MaxZipRatio == 0 {
		l.MaxZipRatio = d.MaxZipRatio
	}
	if l.MaxVoxels == 0 {
		l.MaxVoxels = d.MaxVoxels
	}
	if l.MaxRows == 0 {
		l.MaxRows = d.MaxRows
	}
	if l.MaxCols == 0 {
		l.MaxCols = d.MaxCols
	}
	if l.MaxFrames == 0 {
		l.MaxFrames = d.MaxFrames
	}
	def(&c.Grace, 30*time.Second)
	def(&c.RequestTimeout, 30*time.Second)
	def(&c.UploadTimeout, 30*time.Minute)
	def(&c.SyncTimeout, 5*time.Minute)
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// CheckListen refuses to serve on addr (host:port) without a token unless
// the host is a loopback address ("127.0.0.0/8", "::1" or "localhost"); an
// empty host means every interface.
func CheckListen(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("api: listen address %q: %w", addr, err)
	}
	if token != "" || isLoopback(host) {
		return nil
	}
	return fmt.Errorf("api: listen address %q is not loopback: set a token (--token or CTLENS_TOKEN) so that /api/ requests need it", addr)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var (
	// errShutdown cancels running jobs when the grace period ends.
	errShutdown = errors.New("server shutting down")
	// errDeleted cancels a running job whose study is deleted.
	errDeleted = errors.New("study deleted")
)

// Server is the REST server. Create it with New, serve Handler (or call
// Serve), and stop it with Shutdown.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   *store
	q       *queue
	metrics *metrics
	routes  []Route
	handler http.Handler
	openapi []byte

	jobsCtx    context.Context
	cancelJobs context.CancelCauseFunc
	workers    sync.WaitGroup
	draining   atomic.Bool
	drainCh    chan struct{}
	stopSweep  chan struct{}
	sweepDone  chan struct{}
	shutdown   sync.Once
	httpMu     sync.Mutex
	httpSrvs   []*http.Server

	// cacheMu guards cacheLocks, one lock per study and series whose viewer
	// files are being made.
	cacheMu    sync.Mutex
	cacheLocks map[string]*sync.Mutex
	// viewSem bounds the scans loaded at once for viewer files.
	viewSem chan struct{}
}

// New opens (or creates) the data folder and its database, puts jobs left
// running by a previous process back in the queue (or fails those started
// Config.MaxAttempts times), queues every waiting job and starts the
// workers and the retention sweep.
func New(cfg Config) (*Server, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "studies"), 0o700); err != nil {
		return nil, fmt.Errorf("api: data folder: %w", err)
	}
	st, err := openStore(filepath.Join(cfg.DataDir, "ctlens.db"))
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		store:      st,
		q:          newQueue(cfg.QueueSize),
		metrics:    newMetrics(),
		drainCh:    make(chan struct{}),
		stopSweep:  make(chan struct{}),
		sweepDone:  make(chan struct{}),
		cacheLocks: map[string]*sync.Mutex{},
		viewSem:    make(chan struct{}, cfg.Workers),
	}
	s.jobsCtx, s.cancelJobs = context.WithCancelCause(context.Background())
	ctx := context.Background()
	requeued, failed, err := st.recoverRunning(ctx, cfg.MaxAttempts, cfg.Now())
	if err != nil {
		st.close()
		return nil, fmt.Errorf("api: recover jobs: %w", err)
	}
	if requeued > 0 || failed > 0 {
		s.log.Info("recovered jobs left running", "requeued", requeued, "failed", failed)
	}
	ids, err := st.queued(ctx)
	if err != nil {
		st.close()
		return nil, fmt.Errorf("api: list queued jobs: %w", err)
	}
	for _, id := range ids {
		s.q.push(id)
	}
	s.routes = Routes()
	s.handler = s.buildRouter()
	if s.openapi, err = json.MarshalIndent(OpenAPI(s.routes), "", "  "); err != nil {
		st.close()
		return nil, fmt.Errorf("api: openapi document: %w", err)
	}
	for range cfg.Workers {
		s.workers.Add(1)
		go s.worker()
	}
	go s.sweepLoop()
	return s, nil
}

// Handler returns the server's HTTP handler (API, metrics, UI).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers HTTP requests on ln until Shutdown; it returns nil after
// Shutdown and the listener's error otherwise.
func (s *Server) Serve(ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.httpMu.Lock()
	if s.draining.Load() {
		s.httpMu.Unlock()
		return errors.New("api: server is shut down")
	}
	s.httpSrvs = append(s.httpSrvs, hs)
	s.httpMu.Unlock()
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the server: new submissions get 503, listeners close and
// open requests finish (bounded by ctx); running jobs get Config.Grace to
// finish, then are cancelled and put back in the queue (state "queued" in
// the database) for the next start. It closes the database and returns
// the first error met.
func (s *Server) Shutdown(ctx context.Context) error {
	var first error
	s.shutdown.Do(func() {
		s.httpMu.Lock()
		s.draining.Store(true)
		close(s.drainCh)
		srvs := s.httpSrvs
		s.httpMu.Unlock()
		var hwg sync.WaitGroup
		errs := make([]error, len(srvs))
		for i, hs := range srvs {
			hwg.Add(1)
			go func() {
				defer hwg.Done()
				errs[i] = hs.Shutdown(ctx)
			}()
		}
		s.q.close()
		close(s.stopSweep)
		<-s.sweepDone

		workersDone := make(chan struct{})
		go func() { s.workers.Wait(); close(workersDone) }()
		grace := time.NewTimer(s.cfg.Grace)
		defer grace.Stop()
		select {
		case <-workersDone:
		case <-grace.C:
		case <-ctx.Done():
		}
		s.cancelJobs(errShutdown)
		// A scorer that honours its context returns at once; one that does
		// not is given a little time, then its jobs are re-queued here.
		select {
		case <-workersDone:
		case <-time.After(5 * time.Second):
			now := s.cfg.Now()
			for _, id := range s.q.runningIDs() {
				if err := s.store.requeue(context.Background(), id, now); err != nil && first == nil {
					first = err
				}
				s.log.Warn("job did not stop when cancelled; re-queued", "job_id", id)
			}
		}
		hwg.Wait()
		for _, err := range errs {
			if err != nil && first == nil {
				first = err
			}
		}
		if err := s.store.close(); err != nil && first == nil {
			first = err
		}
	})
	return first
}

// newID returns a random 20-character lowercase base32 id (100 bits).
func newID() string {
	var b [13]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		panic("api: crypto/rand failed: " + err.Error())
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))[:20]
}

// validID reports whether id could have been made by newID (so that it is
// safe in a path).
func validID(id string) bool {
	if len(id) != 20 {
		return false
	}
	for _, c := range id {
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

func (s *Server) studyDir(id string) string { return filepath.Join(s.cfg.DataDir, "studies", id) }

// worker runs queued jobs until the queue closes.
func (s *Server) worker() {
	defer s.workers.Done()
	for {
		id, ctx, rj, ok := s.q.pop(func() (context.Context, context.CancelCauseFunc) {
			return context.WithCancelCause(s.jobsCtx)
		})
		if !ok {
			return
		}
		s.runJob(ctx, id)
		rj.cancel(nil)
		s.q.finish(id)
	}
}

// runJob runs one job and records its outcome.
func (s *Server) runJob(ctx context.Context, id string) {
	bg := context.Background()
	started, err := s.store.start(bg, id, s.cfg.Now())
	if err != nil {
		s.log.Error("start job", "job_id", id, "err", err)
		return
	}
	if !started {
		return // deleted, or no longer queued
	}
	j, err := s.store.job(bg, id)
	if err != nil {
		s.log.Error("read job", "job_id", id, "err", err)
		return
	}
	st, err := s.store.study(bg, j.StudyID)
	if err != nil {
		s.log.Error("read study", "job_id", id, "study_id", j.StudyID, "err", err)
		_ = s.store.finish(bg, id, nil, "internal error: study record missing", s.cfg.Now())
		return
	}
	s.log.Info("job started", "job_id", id, "study_id", st.ID, "attempt", j.Attempts+1)
	var (
		pmu       sync.Mutex
		lastStage string
		lastWrite time.Time
	)
	progress := func(stage string, frac float64) {
		if frac < 0 || frac != frac {
			frac = 0
		}
		frac = min(frac, 1)
		pmu.Lock()
		defer pmu.Unlock()
		now := time.Now()
		if stage == lastStage && now.Sub(lastWrite) < 200*time.Millisecond {
			return
		}
		lastStage, lastWrite = stage, now
		if err := s.store.progress(bg, id, stage, frac, s.cfg.Now()); err != nil {
			s.log.Warn("record progress", "job_id", id, "err", err)
		}
	}
	req := ScoreRequest{
		Input:    filepath.Join(s.cfg.DataDir, filepath.FromSlash(st.Input)),
		OutDir:   filepath.Join(s.studyDir(st.ID), "out"),
		Model:    j.Model,
		Heatmap:  j.Heatmap,
		Method:   j.Method,
		Limits:   s.cfg.Limits,
		Progress: progress,
	}
	t0 := time.Now()
	raw, err := s.callScorer(ctx, req)
	secs := time.Since(t0).Seconds()
	now := s.cfg.Now()
	if err == nil {
		raw, err = withStudyID(raw, st.ID)
		if err != nil {
			err = fmt.Errorf("the scorer returned an invalid result: %w", err)
		}
	}
	switch {
	case err == nil:
		s.metrics.observeInference(secs)
		if err := s.store.finish(bg, id, raw, "", now); err != nil {
			s.log.Error("record result", "job_id", id, "err", err)
			return
		}
		s.metrics.jobFinished("done")
		s.log.Info("job done", "job_id", id, "study_id", st.ID, "seconds", secs)
	case ctx.Err() != nil && errors.Is(context.Cause(ctx), errShutdown):
		if err := s.store.requeue(bg, id, now); err != nil {
			s.log.Error("re-queue job", "job_id", id, "err", err)
		}
		s.metrics.jobFinished("requeued")
		s.log.Info("job interrupted by shutdown; re-queued", "job_id", id, "study_id", st.ID)
	case ctx.Err() != nil && errors.Is(context.Cause(ctx), errDeleted):
		s.log.Info("job cancelled: study deleted", "job_id", id, "study_id", st.ID)
	default:
		msg := strings.ReplaceAll(err.Error(), s.studyDir(st.ID)+string(filepath.Separator), "")
		if err := s.store.finish(bg, id, nil, msg, now); err != nil {
			s.log.Error("record failure", "job_id", id, "err", err)
		}
		s.metrics.jobFinished("failed")
		// The message names stored files (generated names) and DICOM
		// tags, never patient attributes.
		s.log.Warn("job failed", "job_id", id, "study_id", st.ID, "err", msg)
	}
}

// callScorer runs the scorer, turning a panic into an error.
func (s *Server) callScorer(ctx context.Context, req ScoreRequest) (raw json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("scorer panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			raw, err = nil, fmt.Errorf("internal error: the scorer panicked: %v", p)
		}
	}()
	return s.cfg.Scorer.Score(ctx, req)
}

// withStudyID checks that raw is a result object with a series array and
// sets its study_id.
func withStudyID(raw json.RawMessage, studyID string) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, err
	}
	if _, ok := m["series"]; !ok {
		return nil, errors.New(`no "series" array`)
	}
	id, _ := json.Marshal(studyID)
	m["study_id"] = id
	return json.Marshal(m)
}

// sweepLoop deletes expired studies every RetentionInterval.
func (s *Server) sweepLoop() {
	defer close(s.sweepDone)
	if s.cfg.Retention < 0 {
		<-s.stopSweep
		return
	}
	t := time.NewTicker(s.cfg.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-t.C:
			if n, err := s.sweep(context.Background()); err != nil {
				s.log.Error("retention sweep", "err", err)
			} else if n > 0 {
				s.log.Info("retention sweep", "deleted_studies", n)
			}
		}
	}
}

// sweep deletes the studies older than Retention (rows and files), except
// those whose job is running; it returns how many it deleted.
func (s *Server) sweep(ctx context.Context) (int, error) {
	ids, err := s.store.expired(ctx, s.cfg.Now().Add(-s.cfg.Retention))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		j, err := s.store.jobOfStudy(ctx, id)
		// pop moves a job from waiting to running atomically, so a job
		// that is neither removed here nor running is not in the queue.
		if err == nil && !s.q.remove(j.ID) && s.q.isRunning(j.ID) {
			continue
		}
		if err := s.deleteStudy(ctx, id); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// deleteStudy removes a study's rows, then its files.
func (s *Server) deleteStudy(ctx context.Context, id string) error {
	if err := s.store.deleteStudy(ctx, id); err != nil {
		return fmt.Errorf("delete study %s: %w", id, err)
	}
	if err := os.RemoveAll(s.studyDir(id)); err != nil {
		return fmt.Errorf("delete study %s files: %w", id, err)
	}
	return nil
}
