package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ctlens/ctlens/api"
	"github.com/ctlens/ctlens/score"
)

// serveScorer is the api.Scorer of `ctlens serve`: package score's
// ScorePath with the models it was given, by name.
type serveScorer struct {
	models      []*score.Model
	defaultName string
}

// newServeScorer loads the bundled model and, when path is set, the
// checkpoint at path, which becomes the default (the bundled model stays
// available under its own name unless the checkpoint has the same name).
func newServeScorer(path string) (*serveScorer, error) {
	def, err := score.DefaultModel()
	if err != nil {
		return nil, fmt.Errorf("bundled model: %w", err)
	}
	s := &serveScorer{models: []*score.Model{def}, defaultName: def.Name}
	if path != "" {
		m, err := score.LoadModel(path)
		if err != nil {
			return nil, fmt.Errorf("--model: %w", err)
		}
		s.models = []*score.Model{m}
		if m.Name != def.Name {
			s.models = append(s.models, def)
		}
		s.defaultName = m.Name
	}
	return s, nil
}

// Models lists the served models.
func (s *serveScorer) Models() []api.ModelInfo {
	out := make([]api.ModelInfo, 0, len(s.models))
	for _, m := range s.models {
		out = append(out, api.ModelInfo{
			Name:        m.Name,
			Arch:        m.Arch,
			Classes:     append([]string(nil), m.ClassNames...),
			Params:      m.Params,
			Default:     m.Name == s.defaultName,
			Description: m.Description,
			Caveat:      m.Caveat,
		})
	}
	return out
}

// Score runs score.ScorePath. When no series could be scored the job
// fails with the series' errors; when some could, the result keeps the
// others' errors in their "error" fields.
func (s *serveScorer) Score(ctx context.Context, req api.ScoreRequest) (json.RawMessage, error) {
	name := req.Model
	if name == "" {
		name = s.defaultName
	}
	var m *score.Model
	for _, c := range s.models {
		if c.Name == name {
			m = c
		}
	}
	if m == nil {
		return nil, fmt.Errorf("unknown model %q", name)
	}
	res, err := score.ScorePath(ctx, req.Input, score.Options{
		Model:    m,
		Heatmap:  req.Heatmap,
		Method:   req.Method,
		OutDir:   req.OutDir,
		Limits:   req.Limits,
		Progress: req.Progress,
	})
	if err != nil {
		return nil, err
	}
	var failed []string
	for n, sr := range res.Series {
		if sr.Error != "" {
			failed = append(failed, fmt.Sprintf("series %d: %s", n, sr.Error))
		}
	}
	if len(res.Series) == 0 {
		return nil, score.ErrNoSeries
	}
	if len(failed) == len(res.Series) {
		return nil, errors.New("no series could be scored: " + strings.Join(failed, "; "))
	}
	return json.Marshal(res)
}
