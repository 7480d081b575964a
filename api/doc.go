// Package api is ctlens's REST server: it accepts CT studies (DICOM files, a
// zip archive or a NIfTI volume) over HTTP, scores them on a bounded pool of
// workers through a [Scorer], keeps job states and results in SQLite inside
// a data folder, and serves results, heatmaps, viewer volumes, reports,
// Prometheus metrics and an OpenAPI 3 description of itself.
//
// # Routes
//
// Every route is declared once, in the table returned by [Routes]; the chi
// router and the OpenAPI document (GET /api/v1/openapi.json) are both built
// from it, so they cannot drift apart. The contract is
// notes/api-contract.md; errors are JSON {"error": "...", "code": "..."}.
//
// # Jobs
//
// POST /api/v1/studies streams the upload to <data>/studies/<id>/input,
// checks it with dicomio (path traversal, compression bombs, sizes, file
// and voxel counts), stores a "queued" job and returns 202. Workers take jobs
// in arrival order; at most Config.QueueSize jobs wait, and beyond that a
// submission is refused with 429 and Retry-After before its body is read
// (503 and Retry-After while the server shuts down). Job rows move
// queued → running → done | failed. A job interrupted by a shutdown goes
// back to queued; one found "running" at start (the process died) is
// queued again, at most Config.MaxAttempts times in all.
//
// # Storage
//
// <data>/ctlens.db holds the studies and jobs tables; <data>/studies/<id>/
// holds input/ (the upload), out/<n>/ (the scorer's files for series n)
// and cache/<n>/ (viewer volumes made on demand). Studies older than
// Config.Retention are deleted, rows and files, by a periodic sweep (one
// whose job is running waits for the next sweep; a waiting job leaves the
// queue).
//
// # Security
//
// With a token configured, every /api/ route needs "Authorization: Bearer
// <token>" (401 when missing, 403 when wrong); [CheckListen] refuses a
// listen address beyond loopback without one. Logs carry study, job and
// request ids only: uploaded files are stored under generated names, and
// neither file names nor DICOM attributes are logged.
package api
