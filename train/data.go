package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// SkippedScan is a scan of a dataset that a run left out, and why.
type SkippedScan struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// scanItem is one labelled scan: a file-backed scan or a phantom.
type scanItem struct {
	name    string // for messages: the scan's path or "phantom 3 (NCP)"
	group   string // patient key: scans of one patient stay in one split
	label   int
	scan    *dicomio.Scan
	phantom *volume.PhantomOptions
}

// dataSet is a list of readable labelled scans and what was left out.
type dataSet struct {
	classes []string
	items   []scanItem
	skipped []SkippedScan
}

// Seed streams: each kind of randomness draws from its own generator,
// seeded from (Recipe.Seed, stream, epoch, ...).
const (
	streamShuffle uint64 = iota + 1
	streamAugment
	streamDropout
	streamMixup
	streamSplit
	streamPhantom
	streamInit
)

// splitmix64 is the SplitMix64 finaliser, a bijective 64-bit mixer.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// deriveSeed hashes a seed and a path of integers into a new seed.
func deriveSeed(seed uint64, parts ...uint64) uint64 {
	h := splitmix64(seed)
	for _, p := range parts {
		h = splitmix64(h ^ splitmix64(p+0x632be59bd9b4e019))
	}
	return h
}

// newRand returns a PCG generator seeded from (seed, parts...).
func newRand(seed uint64, parts ...uint64) *rand.Rand {
	s := deriveSeed(seed, parts...)
	return rand.New(rand.NewPCG(s, splitmix64(s)))
}

// scanLimits are the DICOM and NIfTI reading limits of training: defaults,
// one decoding worker per scan (scans are loaded in parallel instead).
var scanLimits = dicomio.Limits{Workers: 1}

// loadScan reads the volume of a dataset scan in its stored units (HU for
// DICOM and most NIfTI; grey values for slice stacks).
func loadScan(s dicomio.Scan) (*volume.Volume, error) { return dicomio.LoadScan(s, scanLimits) }

// load returns the item's volume.
func (it scanItem) load() (*volume.Volume, error) {
	if it.phantom != nil {
		p, err := volume.NewPhantom(*it.phantom)
		if err != nil {
			return nil, err
		}
		return p.CT, nil
	}
	return loadScan(*it.scan)
}

// openSource lists the scans of a data source (nothing is read yet).
func openSource(d DataSource) (*dataSet, error) {
	if d.Phantoms > 0 {
		ds := &dataSet{classes: append([]string(nil), volume.PhantomClassNames...)}
		for i := 0; i < d.Phantoms; i++ {
			c := volume.PhantomClass(i % len(volume.PhantomClassNames))
			o := &volume.PhantomOptions{
				Class: c, Seed: deriveSeed(d.PhantomSeed, streamPhantom, uint64(i)),
				Cols: d.PhantomCols, Rows: d.PhantomRows, Slices: d.PhantomSlices,
			}
			name := fmt.Sprintf("phantom %d (%s, seed %d)", i, c, d.PhantomSeed)
			group := name
			if d.PhantomTwins && c == volume.Normal {
				src := i - 2 // the CP phantom of the triple
				if (i/3)%2 == 1 {
					src = i - 1 // the NCP one
				}
				s := ds.items[src]
				o = &volume.PhantomOptions{Class: s.phantom.Class, Seed: s.phantom.Seed, Cols: o.Cols, Rows: o.Rows, Slices: o.Slices, Healthy: true}
				name = fmt.Sprintf("phantom %d (Normal, healthy twin of phantom %d, seed %d)", i, src, d.PhantomSeed)
				group = s.group
			}
			ds.items = append(ds.items, scanItem{name: name, group: group, label: int(c), phantom: o})
		}
		return ds, nil
	}
	var (
		set *dicomio.Dataset
		err error
	)
	if d.Folder != "" {
		set, err = dicomio.ReadFolderLayout(d.Folder)
	} else {
		root := d.Root
		if root == "" {
			root = filepath.Dir(d.Layout)
		}
		set, err = dicomio.ReadLayoutJSON(d.Layout, root)
	}
	if err != nil {
		return nil, fmt.Errorf("train: %s: %w", d, err)
	}
	ds := &dataSet{classes: set.Classes}
	for _, s := range set.Skipped {
		ds.skipped = append(ds.skipped, splitSkipped(s))
	}
	for i := range set.Scans {
		s := &set.Scans[i]
		ds.items = append(ds.items, scanItem{
			name: s.Path, group: s.Class + "\x00" + s.Patient, label: s.Label, scan: s,
		})
	}
	if len(ds.items) == 0 {
		return nil, fmt.Errorf("train: %s: no scans found (%d entries skipped)", d, len(ds.skipped))
	}
	return ds, nil
}

// splitSkipped turns dicomio's "path: reason" into a SkippedScan.
func splitSkipped(s string) SkippedScan {
	if i := strings.Index(s, ": "); i > 0 {
		return SkippedScan{Path: s[:i], Reason: s[i+2:]}
	}
	return SkippedScan{Reason: s}
}

// relabel maps the labels of ds onto the class list classes by name.
func (ds *dataSet) relabel(classes []string, what string) error {
	index := map[string]int{}
	for i, c := range classes {
		index[c] = i
	}
	m := make([]int, len(ds.classes))
	for i, c := range ds.classes {
		j, ok := index[c]
		if !ok {
			return fmt.Errorf("train: %s data has class %q, which the training data lacks (classes %s)", what, c, strings.Join(classes, ", "))
		}
		m[i] = j
	}
	for i := range ds.items {
		ds.items[i].label = m[ds.items[i].label]
	}
	ds.classes = classes
	return nil
}

// splitVal holds out about frac of the patients of each class (at least one
// when the class has two or more patients), chosen by seed. It returns the
// training and validation item indices, each in dataset order.
func splitVal(items []scanItem, frac float64, seed uint64) (trainIdx, valIdx []int) {
	if frac <= 0 {
		for i := range items {
			trainIdx = append(trainIdx, i)
		}
		return trainIdx, nil
	}
	// Patients by class (a patient counts under the class of its first scan).
	groupClass := map[string]int{}
	var groups []string
	for _, it := range items {
		if _, ok := groupClass[it.group]; !ok {
			groupClass[it.group] = it.label
			groups = append(groups, it.group)
		}
	}
	sort.Strings(groups)
	byClass := map[int][]string{}
	var labels []int
	for _, g := range groups {
		c := groupClass[g]
		if _, ok := byClass[c]; !ok {
			labels = append(labels, c)
		}
		byClass[c] = append(byClass[c], g)
	}
	sort.Ints(labels)
	rng := newRand(seed, streamSplit)
	val := map[string]bool{}
	for _, c := range labels {
		gs := byClass[c]
		rng.Shuffle(len(gs), func(i, j int) { gs[i], gs[j] = gs[j], gs[i] })
		n := int(frac*float64(len(gs)) + 0.5)
		if n == 0 && len(gs) >= 2 {
			n = 1
		}
		if n >= len(gs) {
			n = len(gs) - 1
		}
		for _, g := range gs[:n] {
			val[g] = true
		}
	}
	for i, it := range items {
		if val[it.group] {
			valIdx = append(valIdx, i)
		} else {
			trainIdx = append(trainIdx, i)
		}
	}
	return trainIdx, valIdx
}

// preparer turns items into network inputs with a pipeline, keeping an
// optional cache.
type preparer struct {
	pipeline volume.Pipeline
	input    [3]int // depth, height, width
	channels int
	workers  int
	cache    bool
	// lesions makes training items carry their lesion mask, mapped onto
	// the network input (for lesion guidance).
	lesions bool

	mu        sync.Mutex
	raw       map[int]*volume.Volume // training volumes by item, when caching
	rawLesion map[int]*volume.Mask   // their lesion masks, when caching with lesions
	hasLesion map[int]bool           // training items whose mask is not empty, with lesions
	pre       map[int][]float32      // preprocessed evaluation inputs, when caching
}

func newPreparer(p volume.Pipeline, input [3]int, channels, workers int, cache bool) *preparer {
	return &preparer{
		pipeline: p, input: input, channels: channels, workers: workers, cache: cache,
		raw: map[int]*volume.Volume{}, rawLesion: map[int]*volume.Mask{}, hasLesion: map[int]bool{}, pre: map[int][]float32{},
	}
}

// inputLen is the number of voxels of one input channel.
func (p *preparer) inputLen() int { return p.input[0] * p.input[1] * p.input[2] }

// loadWithLesion returns the item's volume and lesion mask on its grid.
func (it scanItem) loadWithLesion() (*volume.Volume, *volume.Mask, error) {
	return DatasetScan{Name: it.name, Label: it.label, item: it}.loadWithLesion()
}

// forwardMask maps a lesion mask on the original scan's grid onto the grid
// a pipeline produced (dims, Trace tr), writing it into out (volume order
// k, j, i; len dims[0]·dims[1]·dims[2]): out voxel (i, j, k) is 1 when the
// original voxel nearest to tr.OutToIn(i, j, k) is in the lesion, else 0.
func forwardMask(out []float32, tr volume.Trace, m *volume.Mask, dims [3]int) {
	clear(out)
	nx, ny, nz := m.Dims[0], m.Dims[1], m.Dims[2]
	for k := 0; k < dims[2]; k++ {
		for j := 0; j < dims[1]; j++ {
			for i := 0; i < dims[0]; i++ {
				q := tr.OutToIn([3]float64{float64(i), float64(j), float64(k)})
				a, b, c := int(math.Round(q[0])), int(math.Round(q[1])), int(math.Round(q[2]))
				if a < 0 || b < 0 || c < 0 || a >= nx || b >= ny || c >= nz {
					continue
				}
				if m.Bits[(c*ny+b)*nx+a] {
					out[(k*dims[1]+j)*dims[0]+i] = 1
				}
			}
		}
	}
}

// sampleLen is the number of values of one input sample (all channels).
func (p *preparer) sampleLen() int {
	return p.channels * p.input[0] * p.input[1] * p.input[2]
}

// prepare loads item it (number idx) and runs the pipeline on it with rng
// (nil: inference), writing the C×D×H×W input into dst and, when mdst is
// not nil (training with lesions), the lesion mask on the input grid
// (D×H×W, 1 inside) into mdst.
func (p *preparer) prepare(idx int, it scanItem, rng *rand.Rand, dst, mdst []float32) error {
	if rng == nil && p.cache {
		p.mu.Lock()
		x, ok := p.pre[idx]
		p.mu.Unlock()
		if ok {
			copy(dst, x)
			return nil
		}
	}
	var v *volume.Volume
	var m *volume.Mask
	if p.cache {
		p.mu.Lock()
		v, m = p.raw[idx], p.rawLesion[idx]
		p.mu.Unlock()
	}
	if v == nil || (mdst != nil && m == nil) {
		var err error
		if mdst != nil {
			v, m, err = it.loadWithLesion()
		} else {
			v, err = it.load()
		}
		if err != nil {
			return err
		}
	}
	out, tr, err := applyPipeline(p.pipeline, v, rng, p.input)
	if err != nil {
		return err
	}
	fillChannels(dst, out.Voxels, p.channels)
	if mdst != nil {
		forwardMask(mdst, tr, m, out.Dims)
	}
	return nil
}

// applyPipeline runs pl on v with rng and checks that the result has the
// input size [depth, height, width].
func applyPipeline(pl volume.Pipeline, v *volume.Volume, rng *rand.Rand, input [3]int) (*volume.Volume, volume.Trace, error) {
	out, tr, err := pl.Apply(v, rng)
	if err != nil {
		return nil, tr, err
	}
	want := [3]int{input[2], input[1], input[0]}
	if out.Dims != want {
		return nil, tr, fmt.Errorf("pipeline output is %d×%d×%d (cols×rows×slices), the network input is %d×%d×%d: end the pipeline with steps that fix the size (resize/center_crop, sample_slices)",
			out.Dims[0], out.Dims[1], out.Dims[2], want[0], want[1], want[2])
	}
	return out, tr, nil
}

// fillChannels writes vox (D×H×W, volume order k, j, i) into dst once per channel.
func fillChannels(dst, vox []float32, channels int) {
	n := len(vox)
	for c := 0; c < channels; c++ {
		copy(dst[c*n:(c+1)*n], vox)
	}
}

// check loads and preprocesses (inference mode) every item of idx in
// parallel, returning the readable ones and the others with their reasons.
// With caching, training items keep their raw volume and evaluation items
// their preprocessed input.
func (p *preparer) check(ctx context.Context, items []scanItem, idx []int, training bool, tick func()) (ok []int, bad []SkippedScan, err error) {
	errs := make([]error, len(idx))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(p.workers, len(idx)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				errs[j] = p.checkOne(idx[j], items[idx[j]], training)
				if tick != nil {
					tick()
				}
			}
		}()
	}
	for j := range idx {
		if ctx.Err() != nil {
			break
		}
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	for j, e := range errs {
		if e != nil {
			bad = append(bad, SkippedScan{Path: items[idx[j]].name, Reason: e.Error()})
			continue
		}
		ok = append(ok, idx[j])
	}
	return ok, bad, nil
}

func (p *preparer) checkOne(idx int, it scanItem, training bool) (err error) {
	var v *volume.Volume
	var m *volume.Mask
	withLesion := training && p.lesions
	if perr := tensor.Catch(func() {
		if withLesion {
			v, m, err = it.loadWithLesion()
		} else {
			v, err = it.load()
		}
	}); perr != nil {
		return perr
	}
	if err != nil {
		if withLesion && errors.Is(err, ErrNoLesionMask) {
			return fmt.Errorf("%w: lesion_guidance needs one for every training scan", err)
		}
		return err
	}
	out, _, err := applyPipeline(p.pipeline, v, nil, p.input)
	if err != nil {
		return err
	}
	if withLesion {
		p.mu.Lock()
		p.hasLesion[idx] = m.Count() > 0
		p.mu.Unlock()
	}
	if p.cache {
		p.mu.Lock()
		if training {
			p.raw[idx] = v
			if withLesion {
				p.rawLesion[idx] = m
			}
		} else {
			x := make([]float32, p.sampleLen())
			fillChannels(x, out.Voxels, p.channels)
			p.pre[idx] = x
		}
		p.mu.Unlock()
	}
	return nil
}

// batch is a prepared mini-batch: x is N×C×D×H×W; masks, for training
// with lesions, holds each scan's lesion mask on the input grid (N×D×H×W).
type batch struct {
	x      *tensor.Tensor
	labels []int
	items  []int
	masks  []float32
	err    error
}

// batches prepares the items of order in batches of size bs on a bounded
// pool of workers, prefetching up to two batches ahead of the consumer.
// rngFor gives the random source of an item (nil for inference); it must
// depend only on the item, so results do not depend on worker timing. The
// channel closes after the last batch, after a batch with an error, or
// when ctx is cancelled.
func (p *preparer) batches(ctx context.Context, items []scanItem, order []int, bs int, rngFor func(item int) *rand.Rand) <-chan batch {
	out := make(chan batch, 1)
	go func() {
		defer close(out)
		type job struct {
			pos       int
			dst, mdst []float32
		}
		n, nm := p.sampleLen(), p.inputLen()
		withMasks := p.lesions && rngFor != nil
		for lo := 0; lo < len(order); lo += bs {
			hi := min(lo+bs, len(order))
			b := batch{items: order[lo:hi]}
			data := make([]float32, (hi-lo)*n)
			if withMasks {
				b.masks = make([]float32, (hi-lo)*nm)
			}
			errs := make([]error, hi-lo)
			jobs := make(chan job)
			var wg sync.WaitGroup
			for w := 0; w < min(p.workers, hi-lo); w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := range jobs {
						item := order[lo+j.pos]
						var rng *rand.Rand
						if rngFor != nil {
							rng = rngFor(item)
						}
						var err error
						if perr := tensor.Catch(func() { err = p.prepare(item, items[item], rng, j.dst, j.mdst) }); perr != nil {
							err = perr
						}
						if err != nil {
							errs[j.pos] = fmt.Errorf("train: %s: %w", items[item].name, err)
						}
					}
				}()
			}
			for j := 0; j < hi-lo; j++ {
				jb := job{pos: j, dst: data[j*n : (j+1)*n]}
				if withMasks {
					jb.mdst = b.masks[j*nm : (j+1)*nm]
				}
				jobs <- jb
			}
			close(jobs)
			wg.Wait()
			b.err = errors.Join(errs...)
			if b.err == nil {
				shape := []int{hi - lo, p.channels, p.input[0], p.input[1], p.input[2]}
				b.x = tensor.New(data, shape...)
				for _, it := range b.items {
					b.labels = append(b.labels, items[it].label)
				}
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
			if b.err != nil {
				return
			}
		}
	}()
	return out
}

// labelCounts returns the number of items of idx per label.
func labelCounts(items []scanItem, idx []int, classes int) []int {
	n := make([]int, classes)
	for _, i := range idx {
		n[items[i].label]++
	}
	return n
}
