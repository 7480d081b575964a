package volume

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSymmetricSliceIndices checks the centre-out sampler against a table
// worked by hand from the description in reference-models.md §1.3 (centre
// c = (n-1)/2 for odd n, n/2-1 for even n; interval n/d; order c, c+i, c-i,
// ...; upsampling: whole copies then the centre-out remainder), including
// the docstring examples of the reference code.
func TestSymmetricSliceIndices(t *testing.T) {
	cases := []struct {
		name string
		n, d int
		want []int
	}{
		{"docstring undersample 7->3 (c=3, i=2: 3,5,1)", 7, 3, []int{1, 3, 5}},
		{"docstring upsample 7->10 (r=3: 3,5,1)", 7, 10, []int{0, 1, 1, 2, 3, 3, 4, 5, 5, 6}},
		{"docstring upsample 7->15 (2 copies, r=1: 3)", 7, 15, []int{0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 6}},
		{"d = 2n gives every slice twice, not empty", 7, 14, []int{0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6}},
		{"d = 2n even", 4, 8, []int{0, 0, 1, 1, 2, 2, 3, 3}},
		{"d = 3n", 2, 6, []int{0, 0, 0, 1, 1, 1}},
		{"equal", 5, 5, []int{0, 1, 2, 3, 4}},
		{"single slice repeated", 1, 5, []int{0, 0, 0, 0, 0}},
		{"even n centre n/2-1 (2->5: r=1, c=0)", 2, 5, []int{0, 0, 0, 1, 1}},
		{"even n undersample interval 1 (6->4: c=2: 2,3,1,4)", 6, 4, []int{1, 2, 3, 4}},
		{"even n interval 2 (8->3: c=3: 3,5,1)", 8, 3, []int{1, 3, 5}},
		{"even n interval 2 even d (10->4: c=4: 4,6,2,8)", 10, 4, []int{2, 4, 6, 8}},
		{"odd d from even n (12->5: c=5, i=2: 5,7,3,9,1)", 12, 5, []int{1, 3, 5, 7, 9}},
		{"n = d+1 (9->8: c=4: 4,5,3,6,2,7,1,8)", 9, 8, []int{1, 2, 3, 4, 5, 6, 7, 8}},
		{"upsample 3 copies + centre (5->16)", 5, 16, []int{0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4}},
		{"odd n upsample (3->7: 2 copies, r=1: 1)", 3, 7, []int{0, 0, 1, 1, 1, 2, 2}},
		{"to one slice, odd n (7->1: c=3)", 7, 1, []int{3}},
		{"to one slice, even n (8->1: c=3)", 8, 1, []int{3}},
		{"interval 3 (10->3: c=4: 4,7,1)", 10, 3, []int{1, 4, 7}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := SymmetricSliceIndices(c.n, c.d)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("SymmetricSliceIndices(%d, %d) = %v, want %v", c.n, c.d, got, c.want)
			}
		})
	}
	// properties over a range: length d, sorted, in range, every slice at
	// least floor(d/n) times and at most ceil(d/n) times.
	for n := 1; n <= 40; n++ {
		for d := 1; d <= 90; d++ {
			got, err := SymmetricSliceIndices(n, d)
			if err != nil || len(got) != d || !slices.IsSorted(got) || got[0] < 0 || got[d-1] >= n {
				t.Fatalf("n=%d d=%d: %v %v", n, d, got, err)
			}
			count := make([]int, n)
			for _, x := range got {
				count[x]++
			}
			for s, c := range count {
				if c < d/n || c > (d+n-1)/n {
					t.Fatalf("n=%d d=%d: slice %d taken %d times", n, d, s, c)
				}
			}
		}
	}
	for _, nd := range [][2]int{{0, 3}, {3, 0}, {-1, 2}} {
		if _, err := SymmetricSliceIndices(nd[0], nd[1]); err == nil {
			t.Errorf("n=%d d=%d accepted", nd[0], nd[1])
		}
	}
}

func TestRandomSliceIndices(t *testing.T) {
	a, _ := RandomSliceIndices(50, 16, rand.New(rand.NewPCG(1, 2)))
	b, _ := RandomSliceIndices(50, 16, rand.New(rand.NewPCG(1, 2)))
	c, _ := RandomSliceIndices(50, 16, rand.New(rand.NewPCG(3, 4)))
	if !slices.Equal(a, b) || slices.Equal(a, c) {
		t.Errorf("seeded draws: %v %v %v", a, b, c)
	}
	if got, _ := RandomSliceIndices(6, 6, rand.New(rand.NewPCG(1, 1))); !slices.Equal(got, []int{0, 1, 2, 3, 4, 5}) {
		t.Errorf("n == d: %v", got)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	const trials = 4000
	// undersampling 10 -> 4: a uniform 4-subset keeps each slice with
	// probability 0.4 (sd of the count sqrt(4000·0.4·0.6) ≈ 31).
	kept := make([]int, 10)
	for t0 := 0; t0 < trials; t0++ {
		idx, err := RandomSliceIndices(10, 4, rng)
		if err != nil || len(idx) != 4 || !slices.IsSorted(idx) {
			t.Fatalf("undersample: %v %v", idx, err)
		}
		for p := 1; p < len(idx); p++ {
			if idx[p] == idx[p-1] {
				t.Fatalf("undersample repeated a slice: %v", idx)
			}
		}
		for _, x := range idx {
			kept[x]++
		}
	}
	for s, k := range kept {
		if math.Abs(float64(k)-0.4*trials) > 155 {
			t.Errorf("slice %d kept %d times of %d, want ≈ %v", s, k, trials, 0.4*trials)
		}
	}
	// upsampling 4 -> 10: each slice appears 1 + Binomial(6, 1/4) times,
	// mean 2.5; every slice at least once, duplicates adjacent (sorted).
	total := make([]int, 4)
	for t0 := 0; t0 < trials; t0++ {
		idx, err := RandomSliceIndices(4, 10, rng)
		if err != nil || len(idx) != 10 || !slices.IsSorted(idx) {
			t.Fatalf("upsample: %v %v", idx, err)
		}
		seen := make([]bool, 4)
		for _, x := range idx {
			seen[x] = true
			total[x]++
		}
		if slices.Contains(seen, false) {
			t.Fatalf("upsample dropped a slice: %v", idx)
		}
	}
	for s, k := range total {
		// sd of the sum: sqrt(4000·6·0.25·0.75) ≈ 67
		if math.Abs(float64(k)-2.5*trials) > 340 {
			t.Errorf("slice %d appears %d times, want ≈ %v", s, k, 2.5*trials)
		}
	}
	if _, err := RandomSliceIndices(5, 3, nil); err == nil {
		t.Error("nil source accepted")
	}
}

func TestSampleSlices(t *testing.T) {
	v := obliqueVolume(t, [3]int{3, 2, 7}, [3]float64{0.5, 0.5, 2}, nil)
	for k := 0; k < 7; k++ {
		for p := 0; p < 6; p++ {
			v.Voxels[k*6+p] = float32(100*k + p)
		}
	}
	out, step, err := SampleSlices(v, []int{1, 3, 5})
	if err != nil {
		t.Fatal(err)
	}
	for o, k := range []int{1, 3, 5} {
		if out.At(2, 1, o) != float32(100*k+5) {
			t.Errorf("slice %d holds %v, want slice %d", o, out.At(2, 1, o), k)
		}
	}
	// uniform sampling: exact geometry, spacing 4 mm, origin at slice 1
	if out.Spacing[2] != 4 || !near3(out.Origin, v.VoxelToPatient([3]float64{0, 0, 1}), 1e-12) {
		t.Errorf("geometry: spacing %v origin %v", out.Spacing, out.Origin)
	}
	for o := 0; o < 3; o++ {
		p := [3]float64{1, 1, float64(o)}
		if !near3(step.OutToIn(p), v.PatientToVoxel(out.VoxelToPatient(p)), 1e-9) {
			t.Errorf("step and geometry disagree at %v", p)
		}
	}
	// a single slice repeated: 1/d step centred on it
	rep, _, err := SampleSlices(v, []int{4, 4, 4, 4})
	if err != nil {
		t.Fatal(err)
	}
	if c := rep.VoxelToPatient([3]float64{0, 0, 1.5}); !near3(c, v.VoxelToPatient([3]float64{0, 0, 4}), 1e-9) || math.Abs(rep.Spacing[2]-0.5) > 1e-12 {
		t.Errorf("repeated slice geometry: centre %v spacing %v", c, rep.Spacing)
	}
	for _, bad := range [][]int{{}, {0, 7}, {3, 2}, {-1}} {
		if _, _, err := SampleSlices(v, bad); err == nil {
			t.Errorf("indices %v accepted", bad)
		}
	}
}
