package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// ErrNoLesionMask says a scan has no lesion mask (a file-backed scan
// without a LesionPath file next to it). Errors that report it wrap it.
var ErrNoLesionMask = errors.New("no lesion mask")

// Dataset is a labelled dataset listed from a DataSource by OpenDataset:
// the class names by label, the scans (nothing is read yet) and the
// entries left out while listing, with the reason.
type Dataset struct {
	Source  DataSource
	Classes []string
	Scans   []DatasetScan
	Skipped []SkippedScan
}

// DatasetScan is one labelled scan of a Dataset.
type DatasetScan struct {
	// Name identifies the scan: its path, or "phantom I (CLASS, seed S)".
	Name string
	// Label indexes the Dataset's Classes.
	Label int
	item  scanItem
}

// OpenDataset lists the scans of d exactly as a training run lists its
// data (a folder per class, a CovidNet3D JSON layout, or phantoms drawn
// from d.PhantomSeed, so that equal sources give equal scans). Lesion
// masks stored next to the scans (LesionPath) are not listed as skipped.
func OpenDataset(d DataSource) (*Dataset, error) {
	if err := d.Validate("data"); err != nil {
		return nil, err
	}
	ds, err := openSource(d)
	if err != nil {
		return nil, err
	}
	out := &Dataset{Source: d, Classes: ds.classes}
	for _, s := range ds.skipped {
		if !isLesionFile(s.Path) {
			out.Skipped = append(out.Skipped, s)
		}
	}
	for _, it := range ds.items {
		out.Scans = append(out.Scans, DatasetScan{Name: it.name, Label: it.label, item: it})
	}
	return out, nil
}

// Load reads the scan's volume (HU for DICOM and NIfTI scans and phantoms).
func (s DatasetScan) Load() (v *volume.Volume, err error) {
	if perr := tensor.Catch(func() { v, err = s.item.load() }); perr != nil {
		return nil, perr
	}
	return v, err
}

// LesionPath is where `ctlens synth` stores the lesion mask of the scan at
// scanPath (a series folder or a NIfTI file): the path without a .nii or
// .nii.gz extension, followed by ".lesion.nii.gz".
func LesionPath(scanPath string) string {
	p := filepath.Clean(scanPath)
	low := strings.ToLower(p)
	switch {
	case strings.HasSuffix(low, ".nii.gz"):
		p = p[:len(p)-len(".nii.gz")]
	case strings.HasSuffix(low, ".nii"):
		p = p[:len(p)-len(".nii")]
	}
	return p + ".lesion.nii.gz"
}

// isLesionFile reports whether path names a lesion mask (LesionPath).
func isLesionFile(path string) bool {
	low := strings.ToLower(path)
	return strings.HasSuffix(low, ".lesion.nii.gz") || strings.HasSuffix(low, ".lesion.nii")
}

// LoadWithLesion reads the scan and its lesion mask on the scan's grid
// (true where the mask's value exceeds 0.5): for a phantom the lesion
// drawn with it (volume.NewPhantom), for a file-backed scan the NIfTI file
// at LesionPath (an error wrapping ErrNoLesionMask when there is none).
// A lesion-free scan has an all-false mask.
func (s DatasetScan) LoadWithLesion() (v *volume.Volume, m *volume.Mask, err error) {
	if perr := tensor.Catch(func() { v, m, err = s.loadWithLesion() }); perr != nil {
		return nil, nil, perr
	}
	return v, m, err
}

func (s DatasetScan) loadWithLesion() (*volume.Volume, *volume.Mask, error) {
	if s.item.phantom != nil {
		p, err := volume.NewPhantom(*s.item.phantom)
		if err != nil {
			return nil, nil, err
		}
		return p.CT, maskOf(p.Lesion), nil
	}
	path := LesionPath(s.item.scan.Path)
	if !exists(path) {
		return nil, nil, fmt.Errorf("train: %s: %w (looked for %s)", s.Name, ErrNoLesionMask, path)
	}
	v, err := s.item.load()
	if err != nil {
		return nil, nil, err
	}
	lv, err := dicomio.ReadNIfTI(path, scanLimits)
	if err != nil {
		return nil, nil, fmt.Errorf("train: lesion mask of %s: %w", s.Name, err)
	}
	if lv.Dims != v.Dims {
		return nil, nil, fmt.Errorf("train: lesion mask %s is %v voxels, its scan %s is %v", path, lv.Dims, s.Name, v.Dims)
	}
	// The mask must lie on the scan's grid, not merely have its size.
	tol := 0.5 * math.Min(v.Spacing[0], math.Min(v.Spacing[1], v.Spacing[2]))
	for c := 0; c < 3; c++ {
		if math.Abs(lv.Origin[c]-v.Origin[c]) > tol {
			return nil, nil, fmt.Errorf("train: lesion mask %s has origin %v mm, its scan %s %v mm", path, lv.Origin, s.Name, v.Origin)
		}
	}
	return v, maskOf(lv), nil
}

// maskOf returns the voxels of v above 0.5.
func maskOf(v *volume.Volume) *volume.Mask {
	m := volume.NewMask(v.Dims)
	for i, x := range v.Voxels {
		m.Bits[i] = x > 0.5
	}
	return m
}

// labelMap returns, for each class of ds, its index in classes (the
// model's), or an error naming a class the model lacks.
func (ds *Dataset) labelMap(classes []string) ([]int, error) {
	index := map[string]int{}
	for i, c := range classes {
		index[c] = i
	}
	m := make([]int, len(ds.Classes))
	for i, c := range ds.Classes {
		j, ok := index[c]
		if !ok {
			return nil, fmt.Errorf("train: %s has class %q, which the model lacks (its classes: %s)", ds.Source, c, strings.Join(classes, ", "))
		}
		m[i] = j
	}
	return m, nil
}

// EvalOptions configures EvaluateModel; the zero value is usable.
type EvalOptions struct {
	// Workers is the number of scans loaded and preprocessed in parallel
	// (0: GOMAXPROCS). It does not change results.
	Workers int
	// BatchSize is the number of scans per forward pass (0: 8). The model
	// runs in evaluation mode, so it does not change results either.
	BatchSize int
	// Progress receives a progress bar (nil: none).
	Progress io.Writer
}

// EvaluateModel scores every scan of ds with m: each scan is loaded,
// prepared with p (Preprocessing.Tensor: the checkpoint's pipeline in
// inference mode) and run through m in evaluation mode without gradients
// (m is left that way). Labels are mapped onto p.Classes by name, so the
// result's labels, probability columns and p.Classes agree (a dataset
// class the model lacks is an error). Scans that cannot be read or
// prepared are left out and returned with the reason; none readable is an
// error. In the result, Probs[i] is softmax(logits) of scan i and Loss the
// mean cross-entropy −log Probs[i][Labels[i]].
func EvaluateModel(ctx context.Context, m net3d.Classifier, p Preprocessing, ds *Dataset, o EvalOptions) (*EvalResult, []SkippedScan, error) {
	if m == nil || ds == nil {
		return nil, nil, errors.New("train: evaluate: nil model or dataset")
	}
	if k := m.Spec().Classes; k != len(p.Classes) {
		return nil, nil, fmt.Errorf("train: evaluate: the model has %d classes, its preprocessing names %d (%s)", k, len(p.Classes), strings.Join(p.Classes, ", "))
	}
	lm, err := ds.labelMap(p.Classes)
	if err != nil {
		return nil, nil, err
	}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	bs := o.BatchSize
	if bs <= 0 {
		bs = 8
	}
	nn.SetTraining(m, false)
	nn.SetRequiresGrad(m, false)

	type prepared struct {
		idx []int
		xs  []*tensor.Tensor
		bad []SkippedScan
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunks := make(chan prepared, 1)
	go func() {
		defer close(chunks)
		for lo := 0; lo < len(ds.Scans); lo += bs {
			hi := min(lo+bs, len(ds.Scans))
			xs := make([]*tensor.Tensor, hi-lo)
			errs := make([]error, hi-lo)
			var wg sync.WaitGroup
			jobs := make(chan int)
			for w := 0; w < min(workers, hi-lo); w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := range jobs {
						xs[j], errs[j] = prepareScan(ds.Scans[lo+j], p)
					}
				}()
			}
			for j := range xs {
				jobs <- j
			}
			close(jobs)
			wg.Wait()
			var c prepared
			for j, x := range xs {
				if errs[j] != nil {
					c.bad = append(c.bad, SkippedScan{Path: ds.Scans[lo+j].Name, Reason: errs[j].Error()})
					continue
				}
				c.idx, c.xs = append(c.idx, lo+j), append(c.xs, x)
			}
			select {
			case chunks <- c:
			case <-ctx.Done():
				return
			}
		}
	}()

	res := &EvalResult{}
	skipped := append([]SkippedScan(nil), ds.Skipped...)
	bar := newBar(o.Progress, len(ds.Scans), "scoring")
	defer barFinish(bar)
	var lossSum float64
	correct := 0
	for c := range chunks {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		skipped = append(skipped, c.bad...)
		if len(c.xs) > 0 {
			labels := make([]int, len(c.idx))
			for j, i := range c.idx {
				labels[j] = lm[ds.Scans[i].Label]
			}
			var probs []float32
			var k int
			err := tensor.Catch(func() {
				logits := net3d.Forward(m, tensor.Concat(0, c.xs...))
				k = logits.Size(1)
				probs = tensor.Softmax(logits, 1).Data()
			})
			if err != nil {
				return nil, nil, fmt.Errorf("train: evaluate %s: %w", ds.Scans[c.idx[0]].Name, err)
			}
			for j, i := range c.idx {
				row := make([]float64, k)
				var sum float64
				for q := range row {
					row[q] = float64(probs[j*k+q])
					sum += row[q]
				}
				best := 0
				for q := range row {
					row[q] /= sum // exact float64 normalisation of the float32 softmax
					if row[q] > row[best] {
						best = q
					}
				}
				if best == labels[j] {
					correct++
				}
				lossSum -= math.Log(math.Max(row[labels[j]], math.SmallestNonzeroFloat64))
				res.Names = append(res.Names, ds.Scans[i].Name)
				res.Labels = append(res.Labels, labels[j])
				res.Probs = append(res.Probs, row)
			}
		}
		for range len(c.idx) + len(c.bad) {
			barAdd(bar)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if len(res.Labels) == 0 {
		return nil, skipped, fmt.Errorf("train: %s: no readable scan (%d skipped; first: %s: %s)", ds.Source, len(skipped), firstPath(skipped), firstReason(skipped))
	}
	res.Loss = lossSum / float64(len(res.Labels))
	res.Accuracy = float64(correct) / float64(len(res.Labels))
	return res, skipped, nil
}

// prepareScan loads s and prepares it with p.
func prepareScan(s DatasetScan, p Preprocessing) (x *tensor.Tensor, err error) {
	v, err := s.Load()
	if err != nil {
		return nil, err
	}
	if perr := tensor.Catch(func() { x, err = p.Tensor(v) }); perr != nil {
		return nil, perr
	}
	return x, err
}
