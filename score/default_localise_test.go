package score

import (
	"context"
	"testing"

	"github.com/ctlens/ctlens/cam"
	"github.com/ctlens/ctlens/volume"
)

// TestDefaultModelPointsAtLesions scores held-out phantoms (seeds the
// bundled model never saw, at its training size of 64 pixels) with the
// bundled model and checks what README.md reports for it on 300 phantoms,
// with a margin for the small sample: the predicted class, and the peak of
// the Grad-CAM heatmap that scoring writes lying inside the phantom's
// lesion mask. The masks come from the phantom generator, not from the
// model.
func TestDefaultModelPointsAtLesions(t *testing.T) {
	m, err := DefaultModel()
	if err != nil {
		t.Fatal(err)
	}
	correct, scans, hits, lesions := 0, 0, 0, 0
	for i := 0; i < 24; i++ {
		c := volume.PhantomClass(i % 3)
		p, err := volume.NewPhantom(volume.PhantomOptions{Class: c, Seed: uint64(71_000 + i), Cols: 64})
		if err != nil {
			t.Fatal(err)
		}
		r, err := ScoreVolume(context.Background(), p.CT, Options{Model: m, Heatmap: true, Keep: true})
		if err != nil {
			t.Fatal(err)
		}
		scans++
		if r.Predicted == c.String() {
			correct++
		}
		if c == volume.Normal {
			continue
		}
		lesions++
		mask, err := cam.MaskFromVolume(p.Lesion, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := cam.PointingGame(r.Heat, mask, 0)
		if err != nil {
			t.Fatal(err)
		}
		if pt.Hit {
			hits++
		}
		t.Logf("phantom %d (%v): predicted %s, peak %v, %.1f mm from the lesion", i, c, r.Predicted, pt.Peak, pt.DistanceMM)
	}
	t.Logf("%d/%d correct, %d/%d peaks inside a lesion", correct, scans, hits, lesions)
	if correct < scans*80/100 {
		t.Errorf("%d of %d phantoms classified correctly, want at least 80 %%", correct, scans)
	}
	if hits < lesions*75/100 {
		t.Errorf("the heatmap peak lies inside a lesion for %d of %d lesion phantoms, want at least 75 %%", hits, lesions)
	}
}
