package score

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// tinyPipeline prepares a scan for tinyModel: the lung-range window, 8
// symmetric slices, 32×32 in-plane and a z-score.
func tinyPipeline() volume.Pipeline {
	return volume.Pipeline{
		{Op: "window", Center: -300, Width: 1800},
		{Op: "sample_slices", N: 8, Mode: "symmetric"},
		{Op: "resize", Cols: 32, Rows: 32},
		{Op: "normalize", Method: "zscore"},
	}
}

// writeCheckpoint saves c with the scoring metadata (pipeline, input
// 8×32×32, the phantom class names) plus extra, and returns the path.
func writeCheckpoint(t *testing.T, dir, name string, c net3d.Classifier, extra map[string]string) string {
	t.Helper()
	pl, err := json.Marshal(tinyPipeline())
	if err != nil {
		t.Fatal(err)
	}
	cls, _ := json.Marshal(volume.PhantomClassNames)
	meta := map[string]string{
		MetaPipeline:         string(pl),
		MetaInput:            "[8,32,32]",
		net3d.MetaClassNames: string(cls),
	}
	for k, v := range extra {
		if v == "" {
			delete(meta, k)
		} else {
			meta[k] = v
		}
	}
	path := filepath.Join(dir, name+".safetensors")
	if err := net3d.SaveCheckpoint(path, c, meta); err != nil {
		t.Fatal(err)
	}
	return path
}

// tinyNet builds a covidnet3d-small with random weights from seed, with
// total stride 8 (a 1×4×4 final feature map for the 8×32×32 input), and
// calibrates its BatchNorm running statistics on preprocessed phantoms
// (forward passes in training mode), so that its outputs depend on the
// scan and its heatmaps are not flat, as a trained network's.
func tinyNet(t *testing.T, seed uint64) net3d.Classifier {
	t.Helper()
	c := plainNet(t, seed)
	var batch []float32
	for i := 0; i < 4; i++ {
		ct := phantom(t, volume.PhantomClass(i%3), 1000+uint64(i), 0)
		pre, _, err := tinyPipeline().Apply(ct, nil)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, pre.Voxels...)
	}
	x := tensor.New(batch, 4, 1, 8, 32, 32)
	nn.SetRequiresGrad(c, false)
	nn.SetTraining(c, true)
	for i := 0; i < 30; i++ {
		net3d.Forward(c, x)
	}
	nn.SetTraining(c, false)
	nn.SetRequiresGrad(c, true)
	return c
}

// plainNet builds tinyNet's network without calibrating it.
func plainNet(t *testing.T, seed uint64) net3d.Classifier {
	t.Helper()
	spec := net3d.Spec{Arch: "covidnet3d-small", InChannels: 1, Classes: 3, Config: json.RawMessage(`{"stride_stages":[2,2,1,1,1,1]}`)}
	c, err := net3d.Build(spec, seed)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tinyModel writes and loads a random covidnet3d-small checkpoint.
func tinyModel(t *testing.T) *Model {
	t.Helper()
	tinyOnce.Do(func() {
		tinyBytes, tinyErr = os.ReadFile(writeCheckpoint(t, t.TempDir(), "tiny", tinyNet(t, 7), nil))
	})
	if tinyErr != nil {
		t.Fatal(tinyErr)
	}
	m, err := LoadModelBytes("tiny", tinyBytes)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var (
	tinyOnce  sync.Once
	tinyBytes []byte
	tinyErr   error
)

// phantom draws a small synthetic chest CT (32×32×20 unless size > 0).
func phantom(t *testing.T, class volume.PhantomClass, seed uint64, size int) *volume.Volume {
	t.Helper()
	if size == 0 {
		size = 32
	}
	p, err := volume.NewPhantom(volume.PhantomOptions{Class: class, Seed: seed, Cols: size, Slices: 20})
	if err != nil {
		t.Fatal(err)
	}
	return p.CT
}

// writeSeries writes v as a DICOM series in dir with a fixed series UID
// and a patient name and ID that must never show up in results.
func writeSeries(t *testing.T, dir string, v *volume.Volume, uid string) []string {
	t.Helper()
	paths, err := dicomio.WriteSeries(dir, v, dicomio.WriteOptions{
		SeriesUID: uid, SeriesDescription: "chest " + uid[len(uid)-1:],
		PatientName: "DOE^JANE", PatientID: "PID-424242", Seed: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// sum returns the sum of a probability map.
func sum(p map[string]float64) float64 {
	s := 0.0
	for _, v := range p {
		s += v
	}
	return s
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }
