package api

import (
	"context"
	"sync"
)

// queue is the bounded FIFO of job ids waiting for a worker. Admission is
// bounded: reserve succeeds only while waiting jobs plus reservations are
// fewer than capacity. Jobs recovered at start are pushed without that
// bound, so that none is lost.
type queue struct {
	mu       sync.Mutex
	cond     *sync.Cond
	items    []string
	reserved int
	capacity int
	closed   bool
	// running maps the id of each running job to its cancel function and
	// a channel closed when its worker is done with it.
	running map[string]*runningJob
	// waiters maps a job id to channels closed when the job leaves the
	// running state (done, failed or re-queued).
	waiters map[string][]chan struct{}
}

type runningJob struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

func newQueue(capacity int) *queue {
	q := &queue{capacity: capacity, running: map[string]*runningJob{}, waiters: map[string][]chan struct{}{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// reserve takes one place in the queue for a submission still being
// uploaded; it reports false when the queue is full or closed.
func (q *queue) reserve() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.items)+q.reserved >= q.capacity {
		return false
	}
	q.reserved++
	return true
}

// release gives back a reservation that will not be used.
func (q *queue) release() {
	q.mu.Lock()
	q.reserved--
	q.mu.Unlock()
}

// commit turns a reservation into the queued job id.
func (q *queue) commit(id string) {
	q.mu.Lock()
	q.reserved--
	q.items = append(q.items, id)
	q.mu.Unlock()
	q.cond.Signal()
}

// push queues id regardless of capacity (recovery at start).
func (q *queue) push(id string) {
	q.mu.Lock()
	q.items = append(q.items, id)
	q.mu.Unlock()
	q.cond.Signal()
}

// remove takes a waiting job out of the queue; it reports whether it was
// there.
func (q *queue) remove(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, v := range q.items {
		if v == id {
			q.items = append(q.items[:i], q.items[i+1:]...)
			return true
		}
	}
	return false
}

// pop waits for a job and marks it running with the given cancel
// function; ok is false once the queue is closed.
func (q *queue) pop(newCtx func() (context.Context, context.CancelCauseFunc)) (id string, ctx context.Context, rj *runningJob, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return "", nil, nil, false
	}
	id = q.items[0]
	q.items = q.items[1:]
	ctx, cancel := newCtx()
	rj = &runningJob{cancel: cancel, done: make(chan struct{})}
	q.running[id] = rj
	return id, ctx, rj, true
}

// finish marks id no longer running and wakes its waiters.
func (q *queue) finish(id string) {
	q.mu.Lock()
	rj := q.running[id]
	delete(q.running, id)
	ws := q.waiters[id]
	delete(q.waiters, id)
	q.mu.Unlock()
	if rj != nil {
		close(rj.done)
	}
	for _, w := range ws {
		close(w)
	}
}

// wait returns a channel closed when job id next leaves the running state,
// and a function that stops waiting.
func (q *queue) wait(id string) (<-chan struct{}, func()) {
	c := make(chan struct{})
	q.mu.Lock()
	q.waiters[id] = append(q.waiters[id], c)
	q.mu.Unlock()
	return c, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		ws := q.waiters[id]
		for i, w := range ws {
			if w == c {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(q.waiters, id)
		} else {
			q.waiters[id] = ws
		}
	}
}

// cancelRunning cancels job id if it runs and returns the channel closed
// when its worker is done with it (nil if it does not run).
func (q *queue) cancelRunning(id string, cause error) <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	rj := q.running[id]
	if rj == nil {
		return nil
	}
	rj.cancel(cause)
	return rj.done
}

// isRunning reports whether job id is running.
func (q *queue) isRunning(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.running[id] != nil
}

// runningIDs returns the ids of the running jobs.
func (q *queue) runningIDs() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]string, 0, len(q.running))
	for id := range q.running {
		out = append(out, id)
	}
	return out
}

// close stops pop from handing out jobs and refuses reservations; jobs
// still waiting stay queued in the database.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// stats returns the number of waiting jobs, reservations and running jobs.
func (q *queue) stats() (waiting, reserved, running int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items), q.reserved, len(q.running)
}
