package train

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// evalPrep is the preprocessing of the tiny test model: 8×16×16 inputs.
func evalPrep(classes ...string) Preprocessing {
	if len(classes) == 0 {
		classes = volume.PhantomClassNames
	}
	return Preprocessing{Pipeline: volume.CovidNet3DPipeline(16, 8), Input: [3]int{8, 16, 16}, Channels: 1, Classes: classes}
}

// evalNet builds the tiny test network with seed 3 and puts its BatchNorm
// running statistics away from the identity, so that evaluation mode
// matters.
func evalNet(t *testing.T) net3d.Classifier {
	t.Helper()
	m, err := net3d.Build(net3d.Spec{Arch: tinyArch, InChannels: 1, Classes: 3}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []*nn.BatchNorm{m.(*tinyNet).BN1, m.(*tinyNet).BN2} {
		for i := range b.RunningMean.Data() {
			b.RunningMean.Data()[i] = 0.1 * float32(i+1)
			b.RunningVar.Data()[i] = 0.5 + 0.25*float32(i)
		}
	}
	return m
}

// referenceProbs runs m on every scan alone (batch of one, evaluation
// mode) and returns float64 softmax rows computed here from the logits.
func referenceProbs(t *testing.T, m net3d.Classifier, p Preprocessing, ds *Dataset) [][]float64 {
	t.Helper()
	nn.SetTraining(m, false)
	var out [][]float64
	for _, s := range ds.Scans {
		v, err := s.Load()
		if err != nil {
			t.Fatal(err)
		}
		x, err := p.Tensor(v)
		if err != nil {
			t.Fatal(err)
		}
		var z []float32
		if err := tensor.Catch(func() { z = net3d.Forward(m, x).Data() }); err != nil {
			t.Fatal(err)
		}
		hi := math.Inf(-1)
		for _, v := range z {
			hi = math.Max(hi, float64(v))
		}
		row := make([]float64, len(z))
		sum := 0.0
		for c, v := range z {
			row[c] = math.Exp(float64(v) - hi)
			sum += row[c]
		}
		for c := range row {
			row[c] /= sum
		}
		out = append(out, row)
	}
	return out
}

// EvaluateModel's probabilities, labels, loss and accuracy agree with a
// scan-by-scan forward pass and hand-computed softmax, loss and accuracy,
// for any batch size and worker count.
func TestEvaluateModelMatchesSingleScans(t *testing.T) {
	ds, err := OpenDataset(DataSource{Phantoms: 7, PhantomSeed: 11, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 8})
	if err != nil {
		t.Fatal(err)
	}
	m := evalNet(t)
	p := evalPrep()
	want := referenceProbs(t, m, p, ds)
	for _, o := range []EvalOptions{{Workers: 1, BatchSize: 1}, {Workers: 3, BatchSize: 4}, {}} {
		res, skipped, err := EvaluateModel(context.Background(), m, p, ds, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(skipped) != 0 || len(res.Probs) != 7 {
			t.Fatalf("%+v: %d scored, skipped %v", o, len(res.Probs), skipped)
		}
		loss, correct := 0.0, 0
		for i, row := range res.Probs {
			label := i % 3 // phantoms cycle CP, NCP, Normal
			if res.Labels[i] != label || res.Names[i] != ds.Scans[i].Name {
				t.Fatalf("%+v: scan %d is %q label %d, want %q label %d", o, i, res.Names[i], res.Labels[i], ds.Scans[i].Name, label)
			}
			best := 0
			for c := range row {
				if math.Abs(row[c]-want[i][c]) > 2e-6 {
					t.Fatalf("%+v: scan %d p[%d] = %v, single-scan reference %v", o, i, c, row[c], want[i][c])
				}
				if want[i][c] > want[i][best] {
					best = c
				}
			}
			if best == label {
				correct++
			}
			loss -= math.Log(want[i][label])
		}
		if math.Abs(res.Loss-loss/7) > 1e-5 || res.Accuracy != float64(correct)/7 {
			t.Fatalf("%+v: loss %v accuracy %v, want %v and %v", o, res.Loss, res.Accuracy, loss/7, float64(correct)/7)
		}
	}
}

// Dataset classes are mapped onto the model's class order by name; a class
// the model lacks is an error naming it.
func TestEvaluateModelMapsClasses(t *testing.T) {
	ds, err := OpenDataset(DataSource{Phantoms: 3, PhantomSeed: 2, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 8})
	if err != nil {
		t.Fatal(err)
	}
	m := evalNet(t)
	res, _, err := EvaluateModel(context.Background(), m, evalPrep("Normal", "CP", "NCP"), ds, EvalOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Phantoms 0, 1, 2 are CP, NCP, Normal: indices 1, 2, 0 of the model.
	if got := res.Labels; len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 0 {
		t.Fatalf("labels %v, want [1 2 0]", got)
	}
	_, _, err = EvaluateModel(context.Background(), m, evalPrep("Normal", "CP", "covid"), ds, EvalOptions{})
	if err == nil || !strings.Contains(err.Error(), `class "NCP"`) {
		t.Fatalf("dataset class missing from the model: %v", err)
	}
	_, _, err = EvaluateModel(context.Background(), m, evalPrep("a", "b"), ds, EvalOptions{})
	if err == nil || !strings.Contains(err.Error(), "3 classes") {
		t.Fatalf("2 class names for a 3-class model: %v", err)
	}
}

func TestLesionPath(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"d/CP/P00000/S1", "d/CP/P00000/S1.lesion.nii.gz"},
		{"d/CP/P00000/S1/", "d/CP/P00000/S1.lesion.nii.gz"},
		{"d/NCP/P1_S1.nii.gz", "d/NCP/P1_S1.lesion.nii.gz"},
		{"d/NCP/P1_S1.NII", "d/NCP/P1_S1.lesion.nii.gz"},
	} {
		if got := LesionPath(c.in); got != filepath.FromSlash(c.want) {
			t.Errorf("LesionPath(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// maskEquals compares a mask with the voxels of v above 0.5.
func maskEquals(t *testing.T, what string, m *volume.Mask, v *volume.Volume) {
	t.Helper()
	if m.Dims != v.Dims {
		t.Fatalf("%s: mask %v, volume %v", what, m.Dims, v.Dims)
	}
	n := 0
	for i, x := range v.Voxels {
		if m.Bits[i] != (x > 0.5) {
			t.Fatalf("%s: voxel %d mask %v, lesion value %v", what, i, m.Bits[i], x)
		}
		if m.Bits[i] {
			n++
		}
	}
	if n == 0 && !strings.Contains(what, "Normal") {
		t.Fatalf("%s: empty lesion mask", what)
	}
}

// A folder dataset of NIfTI phantoms with masks next to them as ctlens
// synth writes: lesions load on the scan grid, a missing mask wraps
// ErrNoLesionMask, a mask of another size is refused, and an unreadable
// scan is skipped by EvaluateModel with its reason.
func TestDatasetLesionsAndSkips(t *testing.T) {
	dir := t.TempDir()
	var phantoms []*volume.Phantom
	for i, c := range []volume.PhantomClass{volume.CP, volume.NCP, volume.Normal} {
		p, err := volume.NewPhantom(volume.PhantomOptions{Class: c, Seed: uint64(40 + i), Cols: 32, Rows: 32, Slices: 8})
		if err != nil {
			t.Fatal(err)
		}
		phantoms = append(phantoms, p)
		base := filepath.Join(dir, c.String(), "p"+c.String())
		if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := dicomio.WriteNIfTI(base+".nii.gz", p.CT, dicomio.NIfTIInt16); err != nil {
			t.Fatal(err)
		}
		if c != volume.Normal {
			if err := dicomio.WriteNIfTI(base+".lesion.nii.gz", p.Lesion, dicomio.NIfTIUint8); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A second CP scan whose mask has the wrong size.
	small, err := volume.NewPhantom(volume.PhantomOptions{Class: volume.CP, Seed: 9, Cols: 16, Rows: 16, Slices: 8})
	if err != nil {
		t.Fatal(err)
	}
	if err := dicomio.WriteNIfTI(filepath.Join(dir, "CP", "q.nii.gz"), phantoms[0].CT, dicomio.NIfTIInt16); err != nil {
		t.Fatal(err)
	}
	if err := dicomio.WriteNIfTI(filepath.Join(dir, "CP", "q.lesion.nii.gz"), small.Lesion, dicomio.NIfTIUint8); err != nil {
		t.Fatal(err)
	}
	// An unreadable scan.
	if err := os.WriteFile(filepath.Join(dir, "NCP", "broken.nii.gz"), []byte("not a nifti file"), 0o644); err != nil {
		t.Fatal(err)
	}

	ds, err := OpenDataset(DataSource{Folder: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Scans) != 5 {
		t.Fatalf("%d scans listed (want 5; lesion masks are not scans): %+v", len(ds.Scans), ds.Scans)
	}
	byName := map[string]DatasetScan{}
	for _, s := range ds.Scans {
		byName[filepath.Base(s.Name)] = s
	}
	for i, c := range []string{"CP", "NCP"} {
		v, m, err := byName["p"+c+".nii.gz"].LoadWithLesion()
		if err != nil {
			t.Fatal(err)
		}
		if v.Dims != phantoms[i].CT.Dims {
			t.Fatalf("%s: scan %v", c, v.Dims)
		}
		maskEquals(t, c, m, phantoms[i].Lesion)
	}
	if _, _, err := byName["pNormal.nii.gz"].LoadWithLesion(); !errors.Is(err, ErrNoLesionMask) {
		t.Fatalf("scan without a mask: %v", err)
	}
	if _, _, err := byName["q.nii.gz"].LoadWithLesion(); err == nil || !strings.Contains(err.Error(), "q.lesion.nii.gz") {
		t.Fatalf("mask of another size: %v", err)
	}

	res, skipped, err := EvaluateModel(context.Background(), evalNet(t), evalPrep(), ds, EvalOptions{Workers: 2, BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Labels) != 4 || len(skipped) != 1 || !strings.HasSuffix(skipped[0].Path, "broken.nii.gz") || skipped[0].Reason == "" {
		t.Fatalf("%d scored, skipped %+v", len(res.Labels), skipped)
	}
}

// Phantom lesions are the masks volume.NewPhantom draws with the same
// options (Normal phantoms have none).
func TestPhantomLesions(t *testing.T) {
	src := DataSource{Phantoms: 3, PhantomSeed: 4, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 8}
	ds, err := OpenDataset(src)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range ds.Scans {
		p, err := volume.NewPhantom(volume.PhantomOptions{Class: volume.PhantomClass(i % 3), Seed: deriveSeed(4, streamPhantom, uint64(i)), Cols: 32, Rows: 32, Slices: 8})
		if err != nil {
			t.Fatal(err)
		}
		v, m, err := s.LoadWithLesion()
		if err != nil {
			t.Fatal(err)
		}
		for j := range v.Voxels {
			if v.Voxels[j] != p.CT.Voxels[j] {
				t.Fatalf("%s: voxel %d differs from NewPhantom's", s.Name, j)
			}
		}
		maskEquals(t, s.Name, m, p.Lesion)
	}
	if _, err := OpenDataset(DataSource{}); err == nil {
		t.Fatal("empty source accepted")
	}
}

// macroByHand computes the macro F1 (from per-class counts) and the macro
// one-vs-rest AUC (Mann–Whitney pair counts, ties ½) of probs.
func macroByHand(labels []int, probs [][]float64) (f1, auc float64) {
	k := len(probs[0])
	for c := 0; c < k; c++ {
		tp, fp, fn := 0.0, 0.0, 0.0
		for i, row := range probs {
			pred := 0
			for q := range row {
				if row[q] > row[pred] {
					pred = q
				}
			}
			switch {
			case pred == c && labels[i] == c:
				tp++
			case pred == c:
				fp++
			case labels[i] == c:
				fn++
			}
		}
		if tp+fp+fn > 0 {
			f1 += 2 * tp / (2*tp + fp + fn) / float64(k)
		}
		var pairs, wins float64
		for i := range probs {
			for j := range probs {
				if labels[i] != c || labels[j] == c {
					continue
				}
				pairs++
				switch {
				case probs[i][c] > probs[j][c]:
					wins++
				case probs[i][c] == probs[j][c]:
					wins += 0.5
				}
			}
		}
		auc += wins / pairs / float64(k)
	}
	return f1, auc
}

// The per-epoch log carries the validation macro F1 and AUC, and a run
// with a test set writes a test report that agrees with its test result.
func TestRunLogsMetricsAndWritesTestReport(t *testing.T) {
	r := phantomRecipe(t)
	r.Epochs = 2
	r.EMADecay = 0
	r.MixupAlpha = 0
	r.Train.Phantoms = 15 // 3 validation scans per class
	r.ValFraction = 0.4
	r.Test = DataSource{Phantoms: 6, PhantomSeed: 99, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 8}
	res, err := Run(context.Background(), r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(r.Out, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	var rec EpochRecord
	for _, line := range jsonLines(b) {
		var ev EpochRecord
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Event == "epoch" && ev.Epoch == res.BestEpoch {
			rec = ev
		}
		if ev.Event == "epoch" && (ev.ValF1 == nil || ev.ValAUC == nil) {
			t.Fatalf("epoch line without validation F1/AUC: %s", line)
		}
	}
	// The best epoch's weights are reloaded for res.Val, so its metrics
	// are the logged ones.
	f1, auc := macroByHand(res.Val.Labels, res.Val.Probs)
	if rec.ValF1 == nil || math.Abs(*rec.ValF1-f1) > 1e-12 || math.Abs(*rec.ValAUC-auc) > 1e-12 {
		t.Fatalf("best epoch %d logs F1 %v AUC %v, by hand %v and %v", res.BestEpoch, rec.ValF1, rec.ValAUC, f1, auc)
	}

	if res.TestReport == nil {
		t.Fatal("no test report")
	}
	rep, err := ReadReportJSON(filepath.Join(r.Out, TestReportFile))
	if err != nil {
		t.Fatal(err)
	}
	tf1, tauc := macroByHand(res.Test.Labels, res.Test.Probs)
	if rep.Metrics.N != res.TestScans || rep.Summary.Accuracy != res.Test.Accuracy ||
		math.Abs(rep.Summary.F1-tf1) > 1e-12 || math.Abs(rep.Summary.AUC-tauc) > 1e-12 || rep.CI == nil {
		t.Fatalf("test report N %d acc %v F1 %v AUC %v CI %v; test result %d scans acc %v, by hand F1 %v AUC %v",
			rep.Metrics.N, rep.Summary.Accuracy, rep.Summary.F1, rep.Summary.AUC, rep.CI, res.TestScans, res.Test.Accuracy, tf1, tauc)
	}
	for _, f := range []string{TestReportMD, TestROCFile, TestPredictionsFile} {
		if st, err := os.Stat(filepath.Join(r.Out, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	csv, err := os.ReadFile(filepath.Join(r.Out, TestPredictionsFile))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(csv)), "\n"); len(lines) != 7 || lines[0] != "name,label,predicted,p_CP,p_NCP,p_Normal" {
		t.Fatalf("predictions CSV:\n%s", csv)
	}
}
