package volume

import (
	"math"
	"testing"
)

func rowVolume(vals ...float32) *Volume {
	v := New(len(vals), 1, 1)
	copy(v.Voxels, vals)
	return v
}

func TestWindow(t *testing.T) {
	cases := []struct {
		name string
		w    WindowLevel
		in   []float32
		want []float64
	}{
		// lung W1500/L-600: [-1350, 150]
		{"lung", LungWindow, []float32{-2000, -1350, -975, -600, 150, 1000}, []float64{0, 0, 0.25, 0.5, 1, 1}},
		// mediastinum W350/L50: [-125, 225]
		{"mediastinum", MediastinumWindow, []float32{-1000, -125, 50, 137.5, 225, 400}, []float64{0, 0, 0.5, 0.75, 1, 1}},
		// W100/L0: (x+50)/100
		{"custom", WindowLevel{Center: 0, Width: 100}, []float32{-60, -40, 10}, []float64{0, 0.1, 0.6}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := c.w.Apply(rowVolume(c.in...))
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range c.want {
				if math.Abs(float64(out.Voxels[i])-w) > 1e-6 {
					t.Errorf("window(%v) = %v, want %v", c.in[i], out.Voxels[i], w)
				}
			}
		})
	}
	if LungWindow != (WindowLevel{-600, 1500}) || MediastinumWindow != (WindowLevel{50, 350}) {
		t.Error("preset values changed")
	}
	if w, err := WindowPreset("Lung"); err != nil || w != LungWindow {
		t.Errorf("preset lung: %v %v", w, err)
	}
	if _, err := WindowPreset("bone"); err == nil {
		t.Error("unknown preset accepted")
	}
	if _, err := Window(rowVolume(1), 0, 0); err == nil {
		t.Error("zero width accepted")
	}
}

func TestNormalize(t *testing.T) {
	v := rowVolume(2, 4, 6, 10)
	out, err := NormalizeMinMax(v, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range []float64{0, 0.25, 0.5, 1} {
		if math.Abs(float64(out.Voxels[i])-w) > 1e-7 {
			t.Errorf("minmax[%d] = %v, want %v", i, out.Voxels[i], w)
		}
	}
	m := NewMask(v.Dims)
	m.Bits[1], m.Bits[2] = true, true // min 4, max 6
	out, err = NormalizeMinMax(v, m)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range []float64{-1, 0, 1, 3} {
		if math.Abs(float64(out.Voxels[i])-w) > 1e-7 {
			t.Errorf("masked minmax[%d] = %v, want %v", i, out.Voxels[i], w)
		}
	}
	// z-score of 1,2,3,4: mean 2.5, sample variance 5/3
	z, err := NormalizeZScore(rowVolume(1, 2, 3, 4), nil)
	if err != nil {
		t.Fatal(err)
	}
	sd := math.Sqrt(5.0/3) + 1e-5
	for i, x := range []float64{1, 2, 3, 4} {
		if w := (x - 2.5) / sd; math.Abs(float64(z.Voxels[i])-w) > 1e-6 {
			t.Errorf("zscore[%d] = %v, want %v", i, z.Voxels[i], w)
		}
	}
	// masked z-score over {4, 6}: mean 5, sd sqrt(2)
	z, _ = NormalizeZScore(v, m)
	if w := (10 - 5) / (math.Sqrt(2) + 1e-5); math.Abs(float64(z.Voxels[3])-w) > 1e-5 {
		t.Errorf("masked zscore = %v, want %v", z.Voxels[3], w)
	}
	if c, _ := NormalizeMinMax(rowVolume(3, 3, 3), nil); c.Voxels[0] != 0 || c.Voxels[2] != 0 {
		t.Errorf("constant minmax = %v, want zeros", c.Voxels)
	}
	if _, err := NormalizeZScore(v, NewMask(v.Dims)); err == nil {
		t.Error("empty mask accepted")
	}
	if _, err := NormalizeZScore(v, NewMask([3]int{2, 2, 1})); err == nil {
		t.Error("mask of wrong dims accepted")
	}
	if v.Voxels[0] != 2 {
		t.Error("input modified")
	}
}

func TestIntensityJitterAndNoise(t *testing.T) {
	j, err := AdjustIntensity(rowVolume(1, -2), 1.5, 0.25)
	if err != nil || j.Voxels[0] != 1.75 || j.Voxels[1] != -2.75 {
		t.Errorf("adjust = %v %v, want [1.75 -2.75]", j.Voxels, err)
	}
	v := New(64, 32, 16)
	a, err := AddGaussianNoise(v, 2, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := AddGaussianNoise(v, 2, 7)
	c, _ := AddGaussianNoise(v, 2, 8)
	same, diff := true, false
	var s, q float64
	for p := range a.Voxels {
		same = same && a.Voxels[p] == b.Voxels[p]
		diff = diff || a.Voxels[p] != c.Voxels[p]
		s += float64(a.Voxels[p])
		q += float64(a.Voxels[p]) * float64(a.Voxels[p])
	}
	if !same || !diff {
		t.Errorf("noise determinism: same seed equal %v, other seed differs %v", same, diff)
	}
	n := float64(len(a.Voxels))
	mean, sd := s/n, math.Sqrt(q/n-(s/n)*(s/n))
	// 32768 draws: standard error of the mean 2/181 = 0.011, of the sd ≈ 0.008
	if math.Abs(mean) > 0.06 || math.Abs(sd-2) > 0.05 {
		t.Errorf("noise mean %v sd %v, want 0 and 2", mean, sd)
	}
	if _, err := AddGaussianNoise(v, -1, 1); err == nil {
		t.Error("negative std accepted")
	}
}
