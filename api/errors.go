package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/ctlens/ctlens/dicomio"
)

// Error is an API failure: the HTTP status, a short machine-readable code
// and a message naming what is wrong (file, field or limit). It is written
// as {"error": Msg, "code": Code}; RetryAfter > 0 adds a Retry-After header
// (seconds).
type Error struct {
	Status     int    // HTTP status
	Code       string // short machine-readable code, e.g. "queue_full"
	Msg        string // what is wrong
	RetryAfter int    // seconds for a Retry-After header (0: none)
}

// Error returns "<status> <code>: <message>".
func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Msg) }

// errorf builds an *Error with a formatted message.
func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// errorBody is the JSON of an error response.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// writeJSON writes v as JSON with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// writeError answers err: an *Error as itself, anything else as 500
// "internal error" (the caller logs the cause).
func writeError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Code: "internal", Msg: "internal error"}
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ctlens"`)
	}
	writeJSON(w, e.Status, errorBody{Error: e.Msg, Code: e.Code})
}

// inputError maps an error from checking an upload with dicomio to an
// *Error: limits (*dicomio.LimitError, dicomio.ErrLimit, an oversized
// request body) are 413, unsafe zip archives (traversal, bombs, sizes that
// lie) and unreadable DICOM (*dicomio.ParseError) are 422. msg turns the
// error's text into what the client may see (stored paths replaced by the
// uploaded names).
func inputError(err error, msg func(string) string) *Error {
	var (
		e   *Error
		le  *dicomio.LimitError
		pe  *dicomio.ParseError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "request body exceeds the upload limit of %d bytes", mbe.Limit)
	case errors.As(err, &le):
		return errorf(http.StatusRequestEntityTooLarge, "limit_exceeded", "%s", msg(le.Error()))
	case errors.Is(err, dicomio.ErrLimit):
		return errorf(http.StatusRequestEntityTooLarge, "limit_exceeded", "%s", msg(err.Error()))
	case errors.Is(err, dicomio.ErrUnsafeZip):
		return errorf(http.StatusUnprocessableEntity, "unsafe_zip", "%s", msg(err.Error()))
	case errors.As(err, &pe):
		return errorf(http.StatusUnprocessableEntity, "bad_dicom", "%s", msg(err.Error()))
	default:
		return errorf(http.StatusUnprocessableEntity, "bad_input", "%s", msg(err.Error()))
	}
}
