package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
)

// mdEscape makes text safe inside a Markdown line or table cell: line
// breaks become spaces and Markdown's punctuation is backslash-escaped.
func mdEscape(s string) string {
	s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune("\\`*_[]<>|~", c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Report renders a result as a short Markdown report: the caveat, the
// model, and per series its grid, prediction, class probabilities (in
// percent, highest first), heatmap summary and warnings.
func Report(r *Result) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# ctlens report: study %s\n\n", mdEscape(r.StudyID))
	caveat := r.Model.Caveat
	if caveat == "" {
		caveat = Caveat
	}
	p("> **%s**\n\n", mdEscape(caveat))
	p("Model: %s", mdEscape(r.Model.Name))
	if r.Model.Version != "" {
		p(" %s", mdEscape(r.Model.Version))
	}
	if r.Model.Arch != "" {
		p(" (%s)", mdEscape(r.Model.Arch))
	}
	p("; classes: %s.\n", mdEscape(strings.Join(r.Model.Classes, ", ")))
	if len(r.Series) == 0 {
		p("\nNo series was scored.\n")
	}
	for n, s := range r.Series {
		p("\n## Series %d", n)
		if s.Description != "" {
			p(": %s", mdEscape(s.Description))
		}
		p("\n\n")
		if s.SeriesUID != "" {
			p("- Series UID: %s\n", mdEscape(s.SeriesUID))
		}
		p("- Grid: %d × %d × %d voxels, spacing %s × %s × %s mm\n", s.Dims[0], s.Dims[1], s.Dims[2],
			fmtMM(s.Spacing[0]), fmtMM(s.Spacing[1]), fmtMM(s.Spacing[2]))
		if s.Error != "" {
			p("- Not scored: %s\n", mdEscape(s.Error))
			continue
		}
		p("- Predicted class: **%s**\n", mdEscape(s.Predicted))
		if h := s.Heatmap; h != nil {
			p("- Heatmap: %s at layer %s for class %s; peak at (%.1f, %.1f, %.1f) mm, voxel (%d, %d, %d)",
				mdEscape(h.Method), mdEscape(h.Layer), mdEscape(h.Class), h.PeakMM[0], h.PeakMM[1], h.PeakMM[2],
				h.PeakVoxel[0], h.PeakVoxel[1], h.PeakVoxel[2])
			if h.LungShare != nil {
				p("; %.0f %% of the heat inside the lungs", 100**h.LungShare)
			}
			p("\n")
		}
		classes := make([]string, 0, len(s.Probabilities))
		for c := range s.Probabilities {
			classes = append(classes, c)
		}
		sort.Slice(classes, func(i, j int) bool {
			pi, pj := s.Probabilities[classes[i]], s.Probabilities[classes[j]]
			if pi != pj {
				return pi > pj
			}
			return classes[i] < classes[j]
		})
		p("\n| Class | Probability |\n|---|---:|\n")
		for _, c := range classes {
			p("| %s | %.1f %% |\n", mdEscape(c), 100*s.Probabilities[c])
		}
		if len(s.Warnings) > 0 {
			p("\nWarnings:\n\n")
			for _, w := range s.Warnings {
				p("- %s\n", mdEscape(w))
			}
		}
	}
	p("\n---\n%s\n", mdEscape(caveat))
	return b.String()
}

func fmtMM(v float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

func (s *Server) handleReport(w http.ResponseWriter, r *http.Request) error {
	j, err := s.doneJob(r)
	if err != nil {
		return err
	}
	var res Result
	if err := json.Unmarshal(s.clientResult(j), &res); err != nil {
		return fmt.Errorf("study %s: stored result: %w", j.StudyID, err)
	}
	w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, err = w.Write([]byte(Report(&res)))
	return err
}
