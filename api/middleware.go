package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

type ctxKey int

const requestIDKey ctxKey = 0

// requestID returns the id of the request that ctx belongs to.
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// routePattern returns the chi pattern that matched r ("unmatched" when
// none did).
func routePattern(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil {
		if p := rc.RoutePattern(); p != "" {
			return p
		}
	}
	return "unmatched"
}

func asError(err error, e **Error) bool { return errors.As(err, e) }

// statusWriter records the status code and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

// WriteHeader records the first status code and passes it on.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write counts the bytes written (status 200 unless set before).
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes flushes through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// observe gives each request an id (X-Request-ID), recovers a panicking
// handler by answering 500 (the server keeps serving), and logs and counts
// the request by route pattern and status. Logs carry the method, route
// pattern (never the path with its ids' values or a query), status, size,
// duration and request id.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := newID()[:12]
		w.Header().Set("X-Request-ID", id)
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, id))
		sw := &statusWriter{ResponseWriter: w}
		t0 := time.Now()
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("handler panicked", "request_id", id, "route", routePattern(r), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if sw.status == 0 {
					writeError(sw, errorf(http.StatusInternalServerError, "internal", "internal error (request %s)", id))
				}
			}
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			route := routePattern(r)
			s.metrics.request(route, r.Method, status)
			level := slog.LevelInfo
			if route == "/metrics" || route == "/healthz" || route == "/readyz" || (status < 400 && r.Method == http.MethodGet) {
				level = slog.LevelDebug
			}
			s.log.Log(r.Context(), level, "request", "request_id", id, "method", r.Method, "route", route,
				"status", status, "bytes", sw.bytes, "ms", time.Since(t0).Milliseconds())
		}()
		next.ServeHTTP(sw, r)
	})
}

// timeout bounds a request: its context gets a deadline d away, and so do
// reads of its body and writes of its response on the connection.
func (s *Server) timeout(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			deadline := time.Now().Add(d)
			rc := http.NewResponseController(w)
			_ = rc.SetReadDeadline(deadline)
			_ = rc.SetWriteDeadline(deadline.Add(5 * time.Second))
			// The next request on a kept-alive connection must not inherit
			// this write deadline (the server resets only read deadlines).
			defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
			ctx, cancel := context.WithDeadline(r.Context(), deadline)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// auth checks the bearer token when one is configured: 401 without an
// Authorization header (or not a Bearer one), 403 with a wrong token.
func (s *Server) auth(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.cfg.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		if h == "" {
			writeError(w, errorf(http.StatusUnauthorized, "unauthorized", "missing Authorization header: send \"Authorization: Bearer <token>\""))
			return
		}
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			writeError(w, errorf(http.StatusUnauthorized, "unauthorized", "Authorization header is not \"Bearer <token>\""))
			return
		}
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			writeError(w, errorf(http.StatusForbidden, "forbidden", "the bearer token is not valid"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
