package volume

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// opaqueStep hides a step's concrete type, forcing MapBack's general
// per-voxel path.
type opaqueStep struct{ Step }

func TestStepInverses(t *testing.T) {
	v := obliqueVolume(t, [3]int{20, 18, 12}, [3]float64{0.7, 0.9, 2.5}, nil)
	var steps []Step
	add := func(_ *Volume, s Step, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, s)
	}
	add(ResampleSpacing(v, [3]float64{1.1, 1.3, 1.7}, Linear))
	add(ResampleShape(v, [3]int{7, 30, 5}, Nearest))
	add(ResizeSlices(v, 9, 33, Linear))
	add(Crop(v, [3]int{-3, 4, 2}, [3]int{10, 10, 5}, 0))
	add(CenterCrop(v, 15, 25, 0))
	add(Flip(v, 0))
	add(Flip(v, 2))
	add(RotateZoom(v, 23, 0.8, Linear, 0))
	for _, idx := range [][]int{{1, 3, 5}, {0, 1, 1, 2, 3, 3, 4, 5, 5, 6}, {4, 4, 4}, {7}, {0, 0, 0, 1, 1}, {2, 5, 6, 11}} {
		_, s, err := SampleSlices(New(20, 18, 12), idx)
		if err != nil {
			t.Fatal(err)
		}
		if s.OutDims()[2] != len(idx) {
			t.Fatalf("slice map out dims %v", s.OutDims())
		}
		steps = append(steps, s)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, s := range steps {
		in := s.InDims()
		for n := 0; n < 200; n++ {
			var x [3]float64
			for a := 0; a < 3; a++ {
				// inside and somewhat outside the input extent
				x[a] = (rng.Float64()*1.4-0.2)*float64(in[a]) - 0.5
			}
			if n < 24 { // also exact voxel centres
				x = [3]float64{float64(n % in[0]), float64(n % in[1]), float64(n % in[2])}
			}
			if y := s.OutToIn(s.InToOut(x)); !near3(x, y, 1e-9) {
				t.Fatalf("%s: OutToIn(InToOut(%v)) = %v", s.Name(), x, y)
			}
		}
	}
}

// TestSliceMapHand checks the slice map against values worked by hand.
func TestSliceMapHand(t *testing.T) {
	k := func(s SliceMap, x float64) float64 { return s.InToOut([3]float64{0, 0, x})[2] }
	o := func(s SliceMap, x float64) float64 { return s.OutToIn([3]float64{0, 0, x})[2] }
	a := SliceMap{In: [3]int{1, 1, 7}, Out: [3]int{1, 1, 3}, Index: []int{1, 3, 5}}
	for _, c := range [][2]float64{{0, -0.5}, {1, 0}, {2, 0.5}, {3, 1}, {5, 2}, {6, 2.5}} {
		if got := k(a, c[0]); math.Abs(got-c[1]) > 1e-12 {
			t.Errorf("[1 3 5]: in %v -> out %v, want %v", c[0], got, c[1])
		}
	}
	b := SliceMap{In: [3]int{1, 1, 7}, Out: [3]int{1, 1, 10}, Index: []int{0, 1, 1, 2, 3, 3, 4, 5, 5, 6}}
	// slice 1 is copied to outputs 1 and 2: their middle 1.5; 0.5 lies
	// halfway between outputs 0 and 1; 3 -> outputs 4, 5 -> 4.5.
	for _, c := range [][2]float64{{1, 1.5}, {0.5, 0.5}, {3, 4.5}, {2.5, 3.5}, {0, 0}, {6, 9}, {6.5, 9.5}} {
		if got := k(b, c[0]); math.Abs(got-c[1]) > 1e-12 {
			t.Errorf("upsampled: in %v -> out %v, want %v", c[0], got, c[1])
		}
	}
	if got := o(b, 1.5); got != 1 {
		t.Errorf("upsampled: out 1.5 -> in %v, want 1", got)
	}
	if got := o(b, -0.5); got != -0.5 {
		t.Errorf("upsampled: out -0.5 -> in %v, want -0.5", got)
	}
}

// blobVolume returns an oblique volume with a Gaussian blob (σ = 4 mm)
// centred at voxel c.
func blobVolume(t *testing.T, c [3]float64) *Volume {
	t.Helper()
	v := obliqueVolume(t, [3]int{64, 56, 40}, [3]float64{0.8, 0.8, 2.5}, nil)
	pc := v.VoxelToPatient(c)
	for k := 0; k < v.Dims[2]; k++ {
		for j := 0; j < v.Dims[1]; j++ {
			for i := 0; i < v.Dims[0]; i++ {
				p := v.VoxelToPatient([3]float64{float64(i), float64(j), float64(k)})
				d2 := 0.0
				for a := 0; a < 3; a++ {
					d2 += (p[a] - pc[a]) * (p[a] - pc[a])
				}
				v.Set(i, j, k, float32(math.Exp(-d2/(2*16))))
			}
		}
	}
	return v
}

func argmax(v *Volume) [3]int {
	best, bi := float32(math.Inf(-1)), 0
	for p, x := range v.Voxels {
		if x > best {
			best, bi = x, p
		}
	}
	return [3]int{bi % v.Dims[0], (bi / v.Dims[0]) % v.Dims[1], bi / (v.Dims[0] * v.Dims[1])}
}

// TestMapBackBlob runs a hot blob through resample + crop + slice sampling +
// resize, maps the transformed volume back with Trace.MapBack, and checks
// that the peak lands on the blob's original voxel (within one voxel, i.e.
// within the voxel size in patient space).
func TestMapBackBlob(t *testing.T) {
	c := [3]float64{22.3, 30.6, 21.2}
	orig := blobVolume(t, c)
	p := Pipeline{
		{Op: "resample_spacing", Spacing: []float64{1.6, 1.6, 2.5}},
		{Op: "center_crop", Cols: 28, Rows: 24},
		{Op: "sample_slices", N: 16, Mode: "symmetric"},
		{Op: "resize", Cols: 48, Rows: 48},
	}
	out, tr, err := p.Apply(orig, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Steps) != 4 || out.Dims != [3]int{48, 48, 16} {
		t.Fatalf("trace of %d steps, final dims %v", len(tr.Steps), out.Dims)
	}
	// the final peak, mapped by the trace, is near the blob centre
	fp := argmax(out)
	src := tr.OutToIn([3]float64{float64(fp[0]), float64(fp[1]), float64(fp[2])})
	for a := 0; a < 3; a++ {
		if math.Abs(src[a]-c[a]) > 1.5 {
			t.Errorf("final peak %v maps to %v, blob at %v", fp, src, c)
		}
	}
	back, err := tr.MapBack(out, orig)
	if err != nil {
		t.Fatal(err)
	}
	if back.Dims != orig.Dims || back.Origin != orig.Origin || back.Spacing != orig.Spacing || back.Direction != orig.Direction {
		t.Fatalf("map back geometry differs from the original")
	}
	bp := argmax(back)
	for a := 0; a < 3; a++ {
		if math.Abs(float64(bp[a])-c[a]) > 1 {
			t.Errorf("mapped-back peak at voxel %v, blob at %v", bp, c)
		}
	}
	pb := orig.VoxelToPatient([3]float64{float64(bp[0]), float64(bp[1]), float64(bp[2])})
	pc := orig.VoxelToPatient(c)
	d := math.Sqrt((pb[0]-pc[0])*(pb[0]-pc[0]) + (pb[1]-pc[1])*(pb[1]-pc[1]) + (pb[2]-pc[2])*(pb[2]-pc[2]))
	if d > 2.5 {
		t.Errorf("mapped-back peak %.2f mm from the blob (voxel 0.8×0.8×2.5 mm)", d)
	}
	// cropped-away voxels (the in-plane border) are zero; the peak is
	// near the original value 1
	if back.At(0, 0, 20) != 0 || back.At(63, 55, 20) != 0 {
		t.Errorf("cropped-away corner not zero: %v %v", back.At(0, 0, 20), back.At(63, 55, 20))
	}
	if x := back.At(bp[0], bp[1], bp[2]); x < 0.8 {
		t.Errorf("peak value %v after the round trip", x)
	}

	// the general per-voxel path gives the same map
	var opaque Trace
	for _, s := range tr.Steps {
		opaque.Append(opaqueStep{s})
	}
	gen, err := opaque.MapBack(out, orig)
	if err != nil {
		t.Fatal(err)
	}
	for q := range gen.Voxels {
		if math.Abs(float64(gen.Voxels[q]-back.Voxels[q])) > 1e-5 {
			t.Fatalf("voxel %d: general path %v, separable path %v", q, gen.Voxels[q], back.Voxels[q])
		}
	}

	// JSON round trip keeps the trace
	data, err := json.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	var tr2 Trace
	if err := json.Unmarshal(data, &tr2); err != nil {
		t.Fatalf("%v in %s", err, data)
	}
	back2, err := tr2.MapBack(out, orig)
	if err != nil {
		t.Fatal(err)
	}
	for q := range back2.Voxels {
		if back2.Voxels[q] != back.Voxels[q] {
			t.Fatalf("map back differs after a JSON round trip")
		}
	}
	if _, err := json.Marshal(opaque); err == nil {
		t.Error("unknown step type serialised")
	}

	// grid mismatches are errors
	if _, err := tr.MapBack(orig, orig); err == nil {
		t.Error("map of the wrong dims accepted")
	}
	if _, err := tr.MapBack(out, out); err == nil {
		t.Error("original of the wrong dims accepted")
	}
}

// TestMapBackRotation checks the general path with a rotation: a blob
// rotated about the slice axis maps back onto its original voxel.
func TestMapBackRotation(t *testing.T) {
	c := [3]float64{40.2, 22.7, 12}
	orig := blobVolume(t, c)
	rot, s1, err := RotateZoom(orig, 35, 1.2, Linear, 0)
	if err != nil {
		t.Fatal(err)
	}
	fl, s2, err := Flip(rot, 1)
	if err != nil {
		t.Fatal(err)
	}
	tr := Trace{Steps: []Step{s1, s2}}
	back, err := tr.MapBack(fl, orig)
	if err != nil {
		t.Fatal(err)
	}
	bp := argmax(back)
	for a := 0; a < 3; a++ {
		if math.Abs(float64(bp[a])-c[a]) > 1 {
			t.Errorf("peak at %v, blob at %v", bp, c)
		}
	}
	data, _ := json.Marshal(tr)
	if !strings.Contains(string(data), `"kind":"affine"`) || !strings.Contains(string(data), `"name":"rotate_zoom"`) {
		t.Errorf("trace JSON %s", data)
	}
}

func TestTraceJSONErrors(t *testing.T) {
	for _, bad := range []string{
		`{"steps":[{"kind":"warp","in":[1,1,1],"out":[1,1,1]}]}`,
		`{"steps":[{"kind":"axis_affine","in":[2,2,2],"out":[2,2,2],"scale":[1,0,1],"shift":[0,0,0]}]}`,
		`{"steps":[{"kind":"axis_affine","in":[2,2,2],"out":[2,2,2]}]}`,
		`{"steps":[{"kind":"affine","in":[2,2,2],"out":[2,2,2],"matrix":[[1,0,0],[0,0,0],[0,0,1]],"shift":[0,0,0]}]}`,
		`{"steps":[{"kind":"slice_map","in":[2,2,5],"out":[2,2,3],"index":[0,3,2]}]}`,
		`{"steps":[{"kind":"slice_map","in":[2,2,5],"out":[2,2,2],"index":[0,5]}]}`,
		`{"steps":[{"kind":"slice_map","in":[2,2,5],"out":[2,2,3],"index":[0,1]}]}`,
		`{"steps":[{"kind":"axis_affine","in":[2,2,2],"out":[0,2,2],"scale":[1,1,1],"shift":[0,0,0]}]}`,
		`{"steps":[{"kind":"axis_affine","in":[2,2,2],"out":[3,2,2],"scale":[1,1,1],"shift":[0,0,0]},` +
			`{"kind":"axis_affine","in":[2,2,2],"out":[2,2,2],"scale":[1,1,1],"shift":[0,0,0]}]}`,
		`[1,2]`,
	} {
		var tr Trace
		if err := json.Unmarshal([]byte(bad), &tr); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// BenchmarkMapBack512 maps a 128×128×32 map back onto a 512×512×300 scan
// through the inference pipeline resample_shape + sample_slices + resize.
func BenchmarkMapBack512(b *testing.B) {
	orig := New(512, 512, 300)
	p := Pipeline{
		{Op: "resample_shape", Dims: []int{160, 160, 300}},
		{Op: "sample_slices", N: 32, Mode: "symmetric"},
		{Op: "resize", Cols: 128, Rows: 128},
	}
	start := time.Now()
	out, tr, err := p.Apply(orig, nil)
	if err != nil {
		b.Fatal(err)
	}
	pipe := time.Since(start).Seconds()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		if _, err := tr.MapBack(out, orig); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(pipe, "pipeline-s")
}
