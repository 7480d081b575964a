package api

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// inferenceBuckets are the upper bounds (seconds) of the inference-time
// histogram.
var inferenceBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// metrics holds the server's counters.
type metrics struct {
	mu       sync.Mutex
	requests map[[3]string]uint64 // route, method, status
	finished map[string]uint64    // done, failed, requeued
	rejected uint64
	bucket   []uint64 // cumulative counts per inferenceBuckets
	infSum   float64
	infCount uint64
}

func newMetrics() *metrics {
	return &metrics{requests: map[[3]string]uint64{}, finished: map[string]uint64{}, bucket: make([]uint64, len(inferenceBuckets))}
}

func (m *metrics) request(route, method string, status int) {
	m.mu.Lock()
	m.requests[[3]string{route, method, strconv.Itoa(status)}]++
	m.mu.Unlock()
}

func (m *metrics) jobFinished(outcome string) {
	m.mu.Lock()
	m.finished[outcome]++
	m.mu.Unlock()
}

func (m *metrics) queueRejected() {
	m.mu.Lock()
	m.rejected++
	m.mu.Unlock()
}

func (m *metrics) observeInference(secs float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, b := range inferenceBuckets {
		if secs <= b {
			m.bucket[i]++
		}
	}
	m.infSum += secs
	m.infCount++
}

// meanInference returns the mean job time in seconds, or def before the
// first job.
func (m *metrics) meanInference(def float64) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.infCount == 0 {
		return def
	}
	return m.infSum / float64(m.infCount)
}

// escapeLabel escapes a label value for the text exposition format.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// gauges is the live state written with the counters.
type gauges struct {
	jobs                            map[string]int
	waiting, reserved, running, cap int
	workers                         int
}

// write writes every metric in the Prometheus text exposition format.
func (m *metrics) write(w io.Writer, g gauges) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }

	p("# HELP ctlens_http_requests_total HTTP requests by route pattern, method and status code.\n")
	p("# TYPE ctlens_http_requests_total counter\n")
	keys := make([][3]string, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		if a[1] != b[1] {
			return a[1] < b[1]
		}
		return a[2] < b[2]
	})
	for _, k := range keys {
		p("ctlens_http_requests_total{route=\"%s\",method=\"%s\",status=\"%s\"} %d\n", escapeLabel(k[0]), escapeLabel(k[1]), k[2], m.requests[k])
	}

	p("# HELP ctlens_jobs Jobs in the database by state.\n")
	p("# TYPE ctlens_jobs gauge\n")
	for _, st := range []string{StateQueued, StateRunning, StateDone, StateFailed} {
		p("ctlens_jobs{state=\"%s\"} %d\n", st, g.jobs[st])
	}

	p("# HELP ctlens_jobs_finished_total Jobs that left the running state since start, by outcome.\n")
	p("# TYPE ctlens_jobs_finished_total counter\n")
	for _, o := range []string{"done", "failed", "requeued"} {
		p("ctlens_jobs_finished_total{outcome=\"%s\"} %d\n", o, m.finished[o])
	}

	p("# HELP ctlens_queue_depth Jobs waiting for a worker (plus uploads holding a place).\n")
	p("# TYPE ctlens_queue_depth gauge\n")
	p("ctlens_queue_depth %d\n", g.waiting+g.reserved)
	p("# HELP ctlens_queue_capacity Places in the job queue.\n")
	p("# TYPE ctlens_queue_capacity gauge\n")
	p("ctlens_queue_capacity %d\n", g.cap)
	p("# HELP ctlens_queue_rejected_total Submissions refused because the queue was full.\n")
	p("# TYPE ctlens_queue_rejected_total counter\n")
	p("ctlens_queue_rejected_total %d\n", m.rejected)
	p("# HELP ctlens_workers Worker goroutines.\n")
	p("# TYPE ctlens_workers gauge\n")
	p("ctlens_workers %d\n", g.workers)
	p("# HELP ctlens_workers_busy Workers running a job.\n")
	p("# TYPE ctlens_workers_busy gauge\n")
	p("ctlens_workers_busy %d\n", g.running)

	p("# HELP ctlens_inference_seconds Time to score one study (load, preprocess, infer, heatmap).\n")
	p("# TYPE ctlens_inference_seconds histogram\n")
	for i, b := range inferenceBuckets {
		p("ctlens_inference_seconds_bucket{le=\"%s\"} %d\n", fmtFloat(b), m.bucket[i])
	}
	p("ctlens_inference_seconds_bucket{le=\"+Inf\"} %d\n", m.infCount)
	p("ctlens_inference_seconds_sum %s\n", fmtFloat(m.infSum))
	p("ctlens_inference_seconds_count %d\n", m.infCount)
}
