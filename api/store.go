package api

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite", pure Go
)

// Job states.
const (
	StateQueued  = "queued"
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// errNotFound is returned by store lookups of unknown ids.
var errNotFound = errors.New("not found")

// store keeps studies and jobs in SQLite.
type store struct {
	db *sql.DB
}

const schema = `
CREATE TABLE IF NOT EXISTS studies (
	id      TEXT PRIMARY KEY,
	created INTEGER NOT NULL,
	kind    TEXT NOT NULL,
	input   TEXT NOT NULL,
	files   INTEGER NOT NULL,
	bytes   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
	id       TEXT PRIMARY KEY,
	study_id TEXT NOT NULL UNIQUE REFERENCES studies(id) ON DELETE CASCADE,
	state    TEXT NOT NULL,
	stage    TEXT NOT NULL,
	progress REAL NOT NULL DEFAULT 0,
	error    TEXT NOT NULL DEFAULT '',
	model    TEXT NOT NULL DEFAULT '',
	heatmap  INTEGER NOT NULL DEFAULT 1,
	method   TEXT NOT NULL DEFAULT '',
	attempts INTEGER NOT NULL DEFAULT 0,
	created  INTEGER NOT NULL,
	updated  INTEGER NOT NULL,
	result   BLOB
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created);
CREATE INDEX IF NOT EXISTS studies_created ON studies(created);
`

// openStore opens (creating if needed) the database at path.
func openStore(path string) (*store, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("api: open database %s: %w", path, err)
	}
	// One connection serialises every statement: no SQLITE_BUSY between
	// the server's own goroutines, and the load is small.
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("api: database %s: create schema: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// studyRow is one row of studies: the upload's kind ("dicom", "zip",
// "nifti"), its path relative to the data folder, file count and bytes.
type studyRow struct {
	ID      string
	Created time.Time
	Kind    string
	Input   string
	Files   int
	Bytes   int64
}

// jobRow is one row of jobs.
type jobRow struct {
	ID, StudyID  string
	State, Stage string
	Progress     float64
	Error        string
	Model        string
	Heatmap      bool
	Method       string
	Attempts     int
	Created      time.Time
	Updated      time.Time
	Result       []byte
}

func ms(t time.Time) int64     { return t.UnixMilli() }
func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }
func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// createStudy inserts a study and its queued job in one transaction.
func (s *store) createStudy(ctx context.Context, st studyRow, j jobRow) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO studies(id, created, kind, input, files, bytes) VALUES(?,?,?,?,?,?)`,
		st.ID, ms(st.Created), st.Kind, st.Input, st.Files, st.Bytes); err != nil {
		return fmt.Errorf("insert study %s: %w", st.ID, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO jobs(id, study_id, state, stage, progress, model, heatmap, method, created, updated) VALUES(?,?,?,?,?,?,?,?,?,?)`,
		j.ID, j.StudyID, j.State, j.Stage, j.Progress, j.Model, boolInt(j.Heatmap), j.Method, ms(j.Created), ms(j.Updated)); err != nil {
		return fmt.Errorf("insert job %s: %w", j.ID, err)
	}
	return tx.Commit()
}

const jobCols = `id, study_id, state, stage, progress, error, model, heatmap, method, attempts, created, updated, result`

func scanJob(row interface{ Scan(...any) error }) (*jobRow, error) {
	var (
		j                jobRow
		heat             int
		created, updated int64
	)
	err := row.Scan(&j.ID, &j.StudyID, &j.State, &j.Stage, &j.Progress, &j.Error, &j.Model, &heat, &j.Method, &j.Attempts, &created, &updated, &j.Result)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, err
	}
	j.Heatmap = heat != 0
	j.Created, j.Updated = fromMS(created), fromMS(updated)
	return &j, nil
}

// job returns the job with the given id.
func (s *store) job(ctx context.Context, id string) (*jobRow, error) {
	return scanJob(s.db.QueryRowContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id))
}

// jobOfStudy returns the job of the given study.
func (s *store) jobOfStudy(ctx context.Context, studyID string) (*jobRow, error) {
	return scanJob(s.db.QueryRowContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE study_id = ?`, studyID))
}

// study returns the study with the given id.
func (s *store) study(ctx context.Context, id string) (*studyRow, error) {
	var (
		st      studyRow
		created int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT id, created, kind, input, files, bytes FROM studies WHERE id = ?`, id).
		Scan(&st.ID, &created, &st.Kind, &st.Input, &st.Files, &st.Bytes)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, err
	}
	st.Created = fromMS(created)
	return &st, nil
}

// start moves a queued job to running and counts the attempt. It reports
// false when the job is gone or not queued.
func (s *store) start(ctx context.Context, id string, now time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE jobs SET state = ?, stage = 'discover', progress = 0, error = '', attempts = attempts + 1, updated = ? WHERE id = ? AND state = ?`,
		StateRunning, ms(now), id, StateQueued)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// progress records a running job's stage and fraction done.
func (s *store) progress(ctx context.Context, id, stage string, frac float64, now time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE jobs SET stage = ?, progress = ?, updated = ? WHERE id = ? AND state = ?`,
		stage, frac, ms(now), id, StateRunning)
	return err
}

// finish records a job's outcome: done with its result, or failed with
// its error message.
func (s *store) finish(ctx context.Context, id string, result []byte, errMsg string, now time.Time) error {
	var err error
	if errMsg == "" {
		_, err = s.db.ExecContext(ctx, `UPDATE jobs SET state = ?, stage = 'done', progress = 1, error = '', result = ?, updated = ? WHERE id = ?`,
			StateDone, result, ms(now), id)
	} else {
		_, err = s.db.ExecContext(ctx, `UPDATE jobs SET state = ?, error = ?, updated = ? WHERE id = ?`,
			StateFailed, errMsg, ms(now), id)
	}
	return err
}

// requeue puts a running job back in the queue.
func (s *store) requeue(ctx context.Context, id string, now time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE jobs SET state = ?, stage = 'upload', progress = 0, updated = ? WHERE id = ? AND state = ?`,
		StateQueued, ms(now), id, StateRunning)
	return err
}

// recoverRunning handles jobs left running by a process that stopped
// without finishing them: those started fewer than maxAttempts times go
// back to queued, the others fail. It returns how many of each.
func (s *store) recoverRunning(ctx context.Context, maxAttempts int, now time.Time) (requeued, failed int64, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE jobs SET state = ?, error = ?, updated = ? WHERE state = ? AND attempts >= ?`,
		StateFailed, fmt.Sprintf("the server stopped during this job %d times; giving up", maxAttempts), ms(now), StateRunning, maxAttempts)
	if err != nil {
		return 0, 0, err
	}
	failed, _ = res.RowsAffected()
	res, err = tx.ExecContext(ctx, `UPDATE jobs SET state = ?, stage = 'upload', progress = 0, updated = ? WHERE state = ?`,
		StateQueued, ms(now), StateRunning)
	if err != nil {
		return 0, 0, err
	}
	requeued, _ = res.RowsAffected()
	return requeued, failed, tx.Commit()
}

// queued returns the ids of queued jobs, oldest first.
func (s *store) queued(ctx context.Context) ([]string, error) {
	return s.ids(ctx, `SELECT id FROM jobs WHERE state = ? ORDER BY created, id`, StateQueued)
}

// expired returns the ids of studies created before t.
func (s *store) expired(ctx context.Context, t time.Time) ([]string, error) {
	return s.ids(ctx, `SELECT id FROM studies WHERE created < ? ORDER BY created`, ms(t))
}

func (s *store) ids(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// countByState returns the number of jobs in each state.
func (s *store) countByState(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, COUNT(*) FROM jobs GROUP BY state`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{StateQueued: 0, StateRunning: 0, StateDone: 0, StateFailed: 0}
	for rows.Next() {
		var (
			st string
			n  int
		)
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}

// deleteStudy removes a study and its job.
func (s *store) deleteStudy(ctx context.Context, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM jobs WHERE study_id = ?`, id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM studies WHERE id = ?`, id); err != nil {
		return err
	}
	return tx.Commit()
}
