package nas

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"

	"github.com/ctlens/ctlens/train"
	"github.com/ctlens/ctlens/volume"
)

// Item is one labelled scan of a search dataset.
type Item struct {
	// Name identifies the scan in messages (its path, or "phantom 3 (NCP)").
	Name string
	// Label is the class index into Dataset.Classes.
	Label int
	// Load reads the scan's volume (HU, or grey values for slice stacks).
	Load func() (*volume.Volume, error)
}

// Dataset is a list of labelled scans with class names by label.
type Dataset struct {
	Classes []string
	Items   []Item
	// Skipped lists entries of a folder or layout dataset that name no
	// readable scan, each "path: reason".
	Skipped []string
}

// OpenData lists the scans of a data source (train.DataSource: a folder
// per class, a CovidNet3D JSON layout, or synthetic phantoms). Nothing is
// read yet. Phantom i has class i mod 3 (CP, NCP, Normal) and is drawn
// from seed PhantomSeed·1000003 + i.
func OpenData(d train.DataSource) (*Dataset, error) {
	if err := validateData(d); err != nil {
		return nil, err
	}
	if d.Phantoms > 0 {
		ds := &Dataset{Classes: append([]string(nil), volume.PhantomClassNames...)}
		for i := range d.Phantoms {
			c := volume.PhantomClass(i % len(volume.PhantomClassNames))
			o := volume.PhantomOptions{
				Class: c, Seed: d.PhantomSeed*1000003 + uint64(i),
				Cols: d.PhantomCols, Rows: d.PhantomRows, Slices: d.PhantomSlices,
			}
			ds.Items = append(ds.Items, Item{
				Name:  fmt.Sprintf("phantom %d (%s)", i, c),
				Label: int(c),
				Load: func() (*volume.Volume, error) {
					p, err := volume.NewPhantom(o)
					if err != nil {
						return nil, err
					}
					return p.CT, nil
				},
			})
		}
		return ds, nil
	}
	set, err := train.OpenDataset(d)
	if err != nil {
		return nil, fmt.Errorf("nas: data %s: %w", d, err)
	}
	ds := &Dataset{Classes: set.Classes}
	for _, s := range set.Skipped {
		ds.Skipped = append(ds.Skipped, s.Path+": "+s.Reason)
	}
	for _, s := range set.Scans {
		ds.Items = append(ds.Items, Item{Name: s.Name, Label: s.Label, Load: s.Load})
	}
	if len(ds.Items) == 0 {
		return nil, fmt.Errorf("nas: data %s: no scans found (%d entries skipped)", d, len(ds.Skipped))
	}
	return ds, nil
}

// validateData checks the source as training does (train.DataSource.Validate);
// healthy twins are not drawn by the search's phantom list, so they are
// refused rather than ignored.
func validateData(d train.DataSource) error {
	if err := d.Validate("search data"); err != nil {
		return err
	}
	if d.PhantomTwins {
		return errors.New("nas: data: phantom_twins is not supported by the search")
	}
	return nil
}

// SplitHalves splits the items 50/50 within each class, as the reference's
// search splits its training set into a weight half and an architecture
// half; the order within each class is shuffled by seed. A class with an
// odd count gives its extra item to the weight half.
func SplitHalves(items []Item, seed uint64) (weights, arch []int) {
	byClass := map[int][]int{}
	var labels []int
	for i, it := range items {
		if _, ok := byClass[it.Label]; !ok {
			labels = append(labels, it.Label)
		}
		byClass[it.Label] = append(byClass[it.Label], i)
	}
	sort.Ints(labels)
	rng := rand.New(rand.NewPCG(seed, 0x5b11))
	for _, c := range labels {
		idx := byClass[c]
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		h := (len(idx) + 1) / 2
		weights = append(weights, idx[:h]...)
		arch = append(arch, idx[h:]...)
	}
	sort.Ints(weights)
	sort.Ints(arch)
	return weights, arch
}

// loader prepares network inputs from dataset items with a pipeline,
// keeping every loaded volume in memory (search datasets are small).
type loader struct {
	ds       *Dataset
	pipeline volume.Pipeline
	input    [3]int // depth, height, width
	channels int

	mu  sync.Mutex
	raw map[int]*volume.Volume
}

// volume returns item i's loaded volume, reading it on first use.
func (l *loader) volume(i int) (*volume.Volume, error) {
	l.mu.Lock()
	v, ok := l.raw[i]
	l.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := l.ds.Items[i].Load()
	if err != nil {
		return nil, fmt.Errorf("nas: %s: %w", l.ds.Items[i].Name, err)
	}
	l.mu.Lock()
	l.raw[i] = v
	l.mu.Unlock()
	return v, nil
}

// sample writes the C×D×H×W input of item i, prepared with rng (random
// pipeline ops active; nil: inference), into dst.
func (l *loader) sample(i int, rng *rand.Rand, dst []float32) error {
	v, err := l.volume(i)
	if err != nil {
		return err
	}
	out, _, err := l.pipeline.Apply(v, rng)
	if err != nil {
		return fmt.Errorf("nas: %s: pipeline: %w", l.ds.Items[i].Name, err)
	}
	want := [3]int{l.input[2], l.input[1], l.input[0]}
	if out.Dims != want {
		return fmt.Errorf("nas: %s: pipeline output is %d×%d×%d (cols×rows×slices), the network input is %d×%d×%d",
			l.ds.Items[i].Name, out.Dims[0], out.Dims[1], out.Dims[2], want[0], want[1], want[2])
	}
	n := len(out.Voxels)
	for c := range l.channels {
		copy(dst[c*n:(c+1)*n], out.Voxels)
	}
	return nil
}
