package train

import (
	"strings"
	"testing"

	"github.com/ctlens/ctlens/volume"
)

// TestPhantomTwins: with phantom_twins every Normal phantom is the healthy
// twin of the triple's CP (even triples) or NCP (odd triples) phantom,
// differs from it only inside the lesion's reach, and stays in its split.
func TestPhantomTwins(t *testing.T) {
	src := DataSource{Phantoms: 12, PhantomSeed: 5, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 12, PhantomTwins: true}
	if err := src.Validate("train"); err != nil {
		t.Fatal(err)
	}
	ds, err := openSource(src)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := openSource(DataSource{Phantoms: 12, PhantomSeed: 5, PhantomCols: 32, PhantomRows: 32, PhantomSlices: 12})
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range ds.items {
		if it.label != i%3 {
			t.Errorf("item %d: label %d", i, it.label)
		}
		if i%3 != 2 {
			if *it.phantom != *plain.items[i].phantom || it.group != plain.items[i].group {
				t.Errorf("item %d: a lesion phantom changed with twins: %+v", i, *it.phantom)
			}
			continue
		}
		src := i - 2
		if (i/3)%2 == 1 {
			src = i - 1
		}
		want := *ds.items[src].phantom
		want.Healthy = true
		if *it.phantom != want {
			t.Errorf("item %d: options %+v, want the twin of item %d %+v", i, *it.phantom, src, want)
		}
		if it.group != ds.items[src].group || !strings.Contains(it.name, "twin") {
			t.Errorf("item %d: group %q name %q, want item %d's group %q", i, it.group, it.name, src, ds.items[src].group)
		}
	}
	// The twin's scan equals its pair's outside the lesions.
	sick, err := volume.NewPhantom(*ds.items[0].phantom)
	if err != nil {
		t.Fatal(err)
	}
	twin, err := ds.items[2].load()
	if err != nil {
		t.Fatal(err)
	}
	same, outside := 0, 0
	for p, x := range sick.Lesion.Voxels {
		if x == 0 {
			outside++
			if sick.CT.Voxels[p] == twin.Voxels[p] {
				same++
			}
		}
	}
	if same < outside*95/100 {
		t.Errorf("twin equals its CP phantom at only %d of %d voxels outside the lesion", same, outside)
	}
	// Splits keep twins with their lesion phantoms.
	trainIdx, valIdx := splitVal(ds.items, 0.5, 3)
	in := map[int]bool{}
	for _, i := range valIdx {
		in[i] = true
	}
	if len(valIdx) == 0 || len(trainIdx) == 0 {
		t.Fatalf("split %v / %v", trainIdx, valIdx)
	}
	for i := 2; i < len(ds.items); i += 3 {
		src := i - 2
		if (i/3)%2 == 1 {
			src = i - 1
		}
		if in[i] != in[src] {
			t.Errorf("twin %d and its phantom %d in different splits", i, src)
		}
	}
	if err := (DataSource{Folder: "x", PhantomTwins: true}).Validate("train"); err == nil || !strings.Contains(err.Error(), "phantom_twins needs phantoms") {
		t.Errorf("twins without phantoms: %v", err)
	}
}
