package train

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"github.com/ctlens/ctlens/net2d"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// SliceOptions says which axial slices of a scan become labelled 2D
// samples and how they are prepared (the data fields of Recipe2D).
type SliceOptions struct {
	// WindowCenter and WindowWidth (HU) map each slice to [0, 1]; Size is
	// the stored slice's height and width.
	WindowCenter, WindowWidth float64
	Size                      int
	// Labels is LabelsScan or LabelsLesion, with MinLesionFraction;
	// MinLungFraction and SliceStride select slices (see Recipe2D).
	Labels            string
	MinLesionFraction float64
	MinLungFraction   float64
	SliceStride       int
	// Workers is the number of scans prepared in parallel (0: GOMAXPROCS).
	Workers int
}

// SliceOptions returns the data options of the recipe.
func (r Recipe2D) SliceOptions() SliceOptions {
	return SliceOptions{
		WindowCenter: r.WindowCenter, WindowWidth: r.WindowWidth, Size: r.Size, Labels: r.Labels,
		MinLesionFraction: r.MinLesionFraction, MinLungFraction: r.MinLungFraction, SliceStride: r.SliceStride,
		Workers: r.Workers,
	}
}

// SliceSet is a set of labelled axial slices held in memory, each one
// channel of Size × Size values: slice n is X[n·Size² : (n+1)·Size²], row
// j column i at j·Size + i.
type SliceSet struct {
	Classes []string
	Size    int
	X       []float32
	// Labels, Scan and Slice give each slice's class, the index of its
	// scan (into ScanNames and ScanLabels) and its index k in that scan.
	Labels []int
	Scan   []int
	Slice  []int
	// ScanNames and ScanLabels describe the scans that gave slices.
	ScanNames  []string
	ScanLabels []int
	// Skipped lists scans that gave no slice or could not be read.
	Skipped []SkippedScan
}

// Len returns the number of slices.
func (s *SliceSet) Len() int { return len(s.Labels) }

// LoadSlices reads every scan of src and keeps its selected slices,
// prepared as o says. Scans that cannot be read or give no slice are
// listed in Skipped; a source with no slice at all is an error.
func LoadSlices(ctx context.Context, src DataSource, o SliceOptions) (*SliceSet, error) {
	ds, err := openSource(src)
	if err != nil {
		return nil, err
	}
	idx := make([]int, len(ds.items))
	for i := range idx {
		idx[i] = i
	}
	set, err := buildSlices(ctx, ds.items, idx, ds.classes, o)
	if err != nil {
		return nil, err
	}
	set.Skipped = append(ds.skipped, set.Skipped...)
	if set.Len() == 0 {
		return nil, fmt.Errorf("train: %s: no slice selected (%d scans skipped; first: %s: %s)", src, len(set.Skipped), firstPath(set.Skipped), firstReason(set.Skipped))
	}
	return set, nil
}

// scanSlices is the outcome of preparing one scan.
type scanSlices struct {
	ks  []int
	x   []float32
	err error
}

// buildSlices prepares the slices of items[idx] in parallel and joins them
// in idx order.
func buildSlices(ctx context.Context, items []scanItem, idx []int, classes []string, o SliceOptions) (*SliceSet, error) {
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	out := make([]scanSlices, len(idx))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(workers, max(1, len(idx))); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				out[n].ks, out[n].x, out[n].err = prepareScanSlices(items[idx[n]], o)
			}
		}()
	}
	for n := range idx {
		if ctx.Err() != nil {
			break
		}
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	set := &SliceSet{Classes: classes, Size: o.Size}
	for n, i := range idx {
		it, r := items[i], out[n]
		if r.err != nil {
			set.Skipped = append(set.Skipped, SkippedScan{Path: it.name, Reason: r.err.Error()})
			continue
		}
		if len(r.ks) == 0 {
			set.Skipped = append(set.Skipped, SkippedScan{Path: it.name, Reason: "no slice selected"})
			continue
		}
		scan := len(set.ScanNames)
		set.ScanNames = append(set.ScanNames, it.name)
		set.ScanLabels = append(set.ScanLabels, it.label)
		set.X = append(set.X, r.x...)
		for _, k := range r.ks {
			set.Labels = append(set.Labels, it.label)
			set.Scan = append(set.Scan, scan)
			set.Slice = append(set.Slice, k)
		}
	}
	return set, nil
}

// prepareScanSlices loads one scan, selects its slices and returns their
// indices and prepared values (one channel, Size × Size each).
func prepareScanSlices(it scanItem, o SliceOptions) ([]int, []float32, error) {
	var ct, lesion, lungs *volume.Volume
	if it.phantom != nil {
		p, err := volume.NewPhantom(*it.phantom)
		if err != nil {
			return nil, nil, err
		}
		ct, lesion, lungs = p.CT, p.Lesion, p.Lungs
	} else {
		v, err := it.load()
		if err != nil {
			return nil, nil, err
		}
		ct = v
		if o.MinLungFraction > 0 {
			m, err := volume.LungMask(v, volume.DefaultLungMaskOptions)
			if err != nil {
				return nil, nil, err
			}
			if lungs, err = m.ToVolume(v); err != nil {
				return nil, nil, err
			}
		}
	}
	if o.Labels == LabelsLesion && lesion == nil {
		return nil, nil, fmt.Errorf("labels %q need a lesion mask (phantoms only)", LabelsLesion)
	}
	plane := ct.Dims[0] * ct.Dims[1]
	share := func(m *volume.Volume, k int) float64 {
		n := 0
		for _, x := range m.Voxels[k*plane : (k+1)*plane] {
			if x > 0 {
				n++
			}
		}
		return float64(n) / float64(plane)
	}
	diseased := o.Labels == LabelsLesion && it.label != int(volume.Normal)
	var ks []int
	for k := 0; k < ct.Dims[2]; k++ {
		if o.MinLungFraction > 0 && share(lungs, k) < o.MinLungFraction {
			continue
		}
		if diseased {
			if s := share(lesion, k); s == 0 || s < o.MinLesionFraction {
				continue
			}
		}
		ks = append(ks, k)
	}
	if stride := o.SliceStride; stride > 1 {
		kept := ks[:0]
		for i, k := range ks {
			if i%stride == 0 {
				kept = append(kept, k)
			}
		}
		ks = kept
	}
	if len(ks) == 0 {
		return nil, nil, nil
	}
	cfg := net2d.SliceConfig{Window: volume.WindowLevel{Center: o.WindowCenter, Width: o.WindowWidth}, Size: [2]int{o.Size, o.Size}}
	x, err := net2d.SliceInput(ct, ks, 1, cfg)
	if err != nil {
		return nil, nil, err
	}
	return ks, x.Data(), nil
}

// Batch returns slices idx as a tensor len(idx)×channels×Size×Size (the
// slice repeated in every channel), mirrored left–right where flip[n]
// (flip may be nil), and their labels.
func (s *SliceSet) Batch(idx []int, channels int, flip []bool) (*tensor.Tensor, []int) {
	per := s.Size * s.Size
	data := make([]float32, len(idx)*channels*per)
	labels := make([]int, len(idx))
	for n, i := range idx {
		src := s.X[i*per : (i+1)*per]
		dst := data[n*channels*per : (n*channels+1)*per]
		if flip != nil && flip[n] {
			for j := 0; j < s.Size; j++ {
				row, out := src[j*s.Size:(j+1)*s.Size], dst[j*s.Size:(j+1)*s.Size]
				for i := range row {
					out[i] = row[s.Size-1-i]
				}
			}
		} else {
			copy(dst, src)
		}
		for c := 1; c < channels; c++ {
			copy(data[(n*channels+c)*per:], dst)
		}
		labels[n] = s.Labels[i]
	}
	return tensor.New(data, len(idx), channels, s.Size, s.Size), labels
}

// classCounts returns the number of slices per class.
func (s *SliceSet) classCounts() []int {
	n := make([]int, len(s.Classes))
	for _, l := range s.Labels {
		n[l]++
	}
	return n
}
