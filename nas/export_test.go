package nas

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/score"
	"github.com/ctlens/ctlens/train"
	"github.com/ctlens/ctlens/volume"
)

// TestExportTrainScore takes the final spec of a search through training
// (train.Run, as `ctlens train --arch` does) and scores a phantom with the
// trained checkpoint through package score.
func TestExportTrainScore(t *testing.T) {
	c := tinyConfig(t)
	c.Epochs = 1
	res := runSearch(t, c)
	b, err := os.ReadFile(filepath.Join(c.Out, FinalFile))
	if err != nil {
		t.Fatal(err)
	}
	var spec net3d.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}

	r := train.DefaultRecipe()
	r.Model = spec
	r.Input = c.Input
	r.Train = train.DataSource{Phantoms: 9, PhantomSeed: 3, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 12}
	r.ValFraction = 0.34
	r.Epochs = 1
	r.BatchSize = 3
	r.Workers = 1
	r.Out = t.TempDir()
	if _, err := train.Run(context.Background(), r, train.Options{}); err != nil {
		t.Fatal(err)
	}

	m, err := score.LoadModel(filepath.Join(r.Out, train.BestFile))
	if err != nil {
		t.Fatal(err)
	}
	cn, ok := m.Classifier.(*net3d.CovidNet3D)
	if !ok {
		t.Fatalf("scored model is %T, want *net3d.CovidNet3D", m.Classifier)
	}
	if !slices.Equal(cn.Choices(), res.Choices) {
		t.Errorf("trained model has ops %v, search chose %v", cn.Choices(), res.Choices)
	}
	ph, err := volume.NewPhantom(volume.PhantomOptions{Class: volume.NCP, Seed: 99, Cols: 32, Rows: 32, Slices: 12})
	if err != nil {
		t.Fatal(err)
	}
	sr, err := score.ScoreVolume(context.Background(), ph.CT, score.Options{Model: m})
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, name := range volume.PhantomClassNames {
		p, ok := sr.Probabilities[name]
		if !ok || !(p >= 0 && p <= 1) {
			t.Errorf("probability of %s: %v (present %v)", name, p, ok)
		}
		sum += p
	}
	if math.Abs(sum-1) > 1e-9 || sr.Predicted == "" {
		t.Errorf("probabilities %v sum to %g, predicted %q", sr.Probabilities, sum, sr.Predicted)
	}
}
