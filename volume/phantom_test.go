package volume

import (
	"math"
	"testing"
)

// lesionStats returns the mean HU inside the lesion mask, the lesion voxel
// count in the right (x<0) and left (x>0) lungs, and the mean lung HU outside
// lesions.
func lesionStats(p *Phantom) (meanLesion float64, right, left int, meanLung float64) {
	var sl, sn float64
	var nl, nn int
	v := p.CT
	for k := 0; k < v.Dims[2]; k++ {
		for j := 0; j < v.Dims[1]; j++ {
			for i := 0; i < v.Dims[0]; i++ {
				idx := v.Index(i, j, k)
				hu := float64(v.Voxels[idx])
				if p.Lesion.Voxels[idx] > 0 {
					sl += hu
					nl++
					if v.VoxelToPatient([3]float64{float64(i), float64(j), float64(k)})[0] < 0 {
						right++
					} else {
						left++
					}
				} else if p.Lungs.Voxels[idx] > 0 {
					sn += hu
					nn++
				}
			}
		}
	}
	if nl > 0 {
		meanLesion = sl / float64(nl)
	}
	return meanLesion, right, left, sn / float64(nn)
}

func TestPhantomClasses(t *testing.T) {
	bilateralNCP, unilateralCP := 0, 0
	const n = 6
	for seed := uint64(1); seed <= n; seed++ {
		for c := CP; c <= Normal; c++ {
			p, err := NewPhantom(PhantomOptions{Class: c, Seed: seed, Cols: 64})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.CT.Validate(); err != nil {
				t.Fatal(err)
			}
			mean, right, left, lung := lesionStats(p)
			if lung < -900 || lung > -700 {
				t.Errorf("%v seed %d: mean lung HU %.0f, want about -850", c, seed, lung)
			}
			switch c {
			case Normal:
				if right+left != 0 {
					t.Errorf("normal seed %d: %d lesion voxels", seed, right+left)
				}
			case CP:
				if right+left == 0 {
					t.Fatalf("CP seed %d: no lesion", seed)
				}
				if mean < -250 || mean > 100 {
					t.Errorf("CP seed %d: consolidation mean %.0f HU, want dense (-250..100)", seed, mean)
				}
				if float64(max(right, left)) > 0.8*float64(right+left) {
					unilateralCP++
				}
			case NCP:
				if right+left == 0 {
					t.Fatalf("NCP seed %d: no lesion", seed)
				}
				if mean < -750 || mean > -250 {
					t.Errorf("NCP seed %d: ground glass mean %.0f HU, want -750..-250", seed, mean)
				}
				if right > 0 && left > 0 {
					bilateralNCP++
				}
			}
			for _, x := range p.CT.Voxels {
				if x != float32(math.Round(float64(x))) || x < -1024 || x > 3071 {
					t.Fatalf("%v seed %d: voxel %v is not a stored CT value", c, seed, x)
				}
			}
		}
	}
	if bilateralNCP < n-1 {
		t.Errorf("only %d of %d NCP phantoms are bilateral", bilateralNCP, n)
	}
	if unilateralCP < n/2 {
		t.Errorf("only %d of %d CP phantoms are mostly unilateral", unilateralCP, n)
	}
}

func TestPhantomDeterministic(t *testing.T) {
	a, _ := NewPhantom(PhantomOptions{Class: NCP, Seed: 42, Cols: 48})
	b, _ := NewPhantom(PhantomOptions{Class: NCP, Seed: 42, Cols: 48})
	c, _ := NewPhantom(PhantomOptions{Class: NCP, Seed: 43, Cols: 48})
	if a.CT.Dims != b.CT.Dims || a.CT.Spacing != b.CT.Spacing {
		t.Fatal("same seed, different geometry")
	}
	for i := range a.CT.Voxels {
		if a.CT.Voxels[i] != b.CT.Voxels[i] || a.Lesion.Voxels[i] != b.Lesion.Voxels[i] {
			t.Fatalf("same seed differs at voxel %d", i)
		}
	}
	same := a.CT.Dims == c.CT.Dims
	if same {
		diff := 0
		for i := range a.CT.Voxels {
			if a.CT.Voxels[i] != c.CT.Voxels[i] {
				diff++
			}
		}
		same = diff == 0
	}
	if same {
		t.Fatal("different seeds gave identical phantoms")
	}
}

func TestPhantomBadOptions(t *testing.T) {
	for _, o := range []PhantomOptions{{Cols: 8}, {Cols: 4096}, {Slices: 2, Cols: 32}, {Class: 7}} {
		if _, err := NewPhantom(o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
