package volume

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// WindowLevel is a display window in Hounsfield units: Center (level L) and
// Width (W).
type WindowLevel struct {
	Center, Width float64
}

// Window presets.
var (
	// LungWindow is W1500/L-600: [-1350, 150] HU.
	LungWindow = WindowLevel{Center: -600, Width: 1500}
	// MediastinumWindow is W350/L50: [-125, 225] HU.
	MediastinumWindow = WindowLevel{Center: 50, Width: 350}
)

// WindowPreset returns the named preset: "lung" or "mediastinum"
// (case-insensitive).
func WindowPreset(name string) (WindowLevel, error) {
	switch strings.ToLower(name) {
	case "lung":
		return LungWindow, nil
	case "mediastinum", "mediastinal":
		return MediastinumWindow, nil
	}
	return WindowLevel{}, fmt.Errorf("volume: unknown window preset %q (want lung or mediastinum)", name)
}

// Apply returns Window(v, w.Center, w.Width).
func (w WindowLevel) Apply(v *Volume) (*Volume, error) { return Window(v, w.Center, w.Width) }

// Window returns v with every voxel x mapped to
// clamp((x - (L - W/2)) / W, 0, 1) for level L = center and width W: values
// at or below L-W/2 become 0, at or above L+W/2 become 1, linear between.
// (This is the plain linear window, not DICOM's c-0.5/w-1 variant.) W must
// be positive.
func Window(v *Volume, center, width float64) (*Volume, error) {
	if err := checkInput("window", v); err != nil {
		return nil, err
	}
	if !(width > 0) || math.IsInf(width, 0) || math.IsNaN(center) || math.IsInf(center, 0) {
		return nil, fmt.Errorf("volume: window: width %v, center %v (width must be positive and both finite)", width, center)
	}
	lo := center - width/2
	out := v.Clone()
	mapVoxels(out.Voxels, func(x float32) float32 {
		y := (float64(x) - lo) / width
		return float32(math.Max(0, math.Min(1, y)))
	})
	return out, nil
}

// mapVoxels replaces every x in vox by f(x), in parallel chunks.
func mapVoxels(vox []float32, f func(float32) float32) {
	const chunk = 1 << 16
	forEachIndex((len(vox)+chunk-1)/chunk, func(c int) {
		s := vox[c*chunk : min(len(vox), (c+1)*chunk)]
		for i, x := range s {
			s[i] = f(x)
		}
	})
}

// checkMask verifies that m (if not nil) matches v's dims and selects at
// least one voxel; it returns the selected count.
func checkMask(what string, v *Volume, m *Mask) (int, error) {
	if m == nil {
		return len(v.Voxels), nil
	}
	if m.Dims != v.Dims || len(m.Bits) != len(v.Voxels) {
		return 0, fmt.Errorf("volume: %s: mask of %v (%d voxels) for a volume of %v", what, m.Dims, len(m.Bits), v.Dims)
	}
	n := m.Count()
	if n == 0 {
		return 0, fmt.Errorf("volume: %s: the mask selects no voxel", what)
	}
	return n, nil
}

// volumeStats returns the float64 sum, sum of squares, min and
// max over the voxels selected by m (all when m is nil). Per-slice sums are combined
// in slice order, so results do not depend on scheduling.
func volumeStats(v *Volume, m *Mask) (sum, sumSq, lo, hi float64) {
	nz := v.Dims[2]
	plane := v.Dims[0] * v.Dims[1]
	type st struct {
		s, q, lo, hi float64
		any          bool
	}
	per := make([]st, nz)
	forEachIndex(nz, func(k int) {
		r := st{lo: math.Inf(1), hi: math.Inf(-1)}
		for p := k * plane; p < (k+1)*plane; p++ {
			if m != nil && !m.Bits[p] {
				continue
			}
			x := float64(v.Voxels[p])
			r.s += x
			r.q += x * x
			r.lo = math.Min(r.lo, x)
			r.hi = math.Max(r.hi, x)
			r.any = true
		}
		per[k] = r
	})
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, r := range per {
		if !r.any {
			continue
		}
		sum += r.s
		sumSq += r.q
		lo = math.Min(lo, r.lo)
		hi = math.Max(hi, r.hi)
	}
	return sum, sumSq, lo, hi
}

// NormalizeMinMax returns (x - min)/(max - min) for every voxel, with min
// and max taken over the voxels selected by mask (all voxels when mask is
// nil); voxels outside the mask may fall outside [0, 1]. A constant
// selection maps every voxel to 0.
func NormalizeMinMax(v *Volume, mask *Mask) (*Volume, error) {
	if err := checkInput("min-max normalisation", v); err != nil {
		return nil, err
	}
	if _, err := checkMask("min-max normalisation", v, mask); err != nil {
		return nil, err
	}
	_, _, lo, hi := volumeStats(v, mask)
	out := v.Clone()
	if !(hi > lo) {
		clear(out.Voxels)
		return out, nil
	}
	r := hi - lo
	mapVoxels(out.Voxels, func(x float32) float32 { return float32((float64(x) - lo) / r) })
	return out, nil
}

// ZScoreEpsilon is added to the standard deviation in NormalizeZScore (as
// in the HKBU CovidNet3D baseline pipeline).
const ZScoreEpsilon = 1e-5

// NormalizeZScore returns (x - μ)/(σ + 1e-5) for every voxel, where μ is
// the mean and σ the sample standard deviation (n-1 divisor, as
// torch.Tensor.std) of the voxels selected by mask (all voxels when mask is
// nil); σ is 0 for a single voxel.
func NormalizeZScore(v *Volume, mask *Mask) (*Volume, error) {
	if err := checkInput("z-score normalisation", v); err != nil {
		return nil, err
	}
	n, err := checkMask("z-score normalisation", v, mask)
	if err != nil {
		return nil, err
	}
	sum, _, _, _ := volumeStats(v, mask)
	mu := sum / float64(n)
	// second pass for a numerically stable variance
	plane := v.Dims[0] * v.Dims[1]
	per := make([]float64, v.Dims[2])
	forEachIndex(v.Dims[2], func(k int) {
		s := 0.0
		for p := k * plane; p < (k+1)*plane; p++ {
			if mask == nil || mask.Bits[p] {
				d := float64(v.Voxels[p]) - mu
				s += d * d
			}
		}
		per[k] = s
	})
	ss := 0.0
	for _, s := range per {
		ss += s
	}
	sigma := 0.0
	if n > 1 {
		sigma = math.Sqrt(ss / float64(n-1))
	}
	den := sigma + ZScoreEpsilon
	out := v.Clone()
	mapVoxels(out.Voxels, func(x float32) float32 { return float32((float64(x) - mu) / den) })
	return out, nil
}

// AdjustIntensity returns scale·x + shift for every voxel (intensity
// jitter).
func AdjustIntensity(v *Volume, scale, shift float64) (*Volume, error) {
	if err := checkInput("intensity adjustment", v); err != nil {
		return nil, err
	}
	if math.IsNaN(scale) || math.IsInf(scale, 0) || math.IsNaN(shift) || math.IsInf(shift, 0) {
		return nil, fmt.Errorf("volume: intensity adjustment: scale %v and shift %v must be finite", scale, shift)
	}
	out := v.Clone()
	mapVoxels(out.Voxels, func(x float32) float32 { return float32(scale*float64(x) + shift) })
	return out, nil
}

// AddGaussianNoise returns x + std·z for every voxel, z standard normal.
// Slice k draws from a PCG generator seeded (seed, k), so the result depends
// only on seed, not on scheduling.
func AddGaussianNoise(v *Volume, std float64, seed uint64) (*Volume, error) {
	if err := checkInput("gaussian noise", v); err != nil {
		return nil, err
	}
	if !(std >= 0) || math.IsInf(std, 0) {
		return nil, fmt.Errorf("volume: gaussian noise: standard deviation %v (must be finite and >= 0)", std)
	}
	out := v.Clone()
	plane := v.Dims[0] * v.Dims[1]
	forEachIndex(v.Dims[2], func(k int) {
		r := rand.New(rand.NewPCG(seed, uint64(k)))
		s := out.Voxels[k*plane : (k+1)*plane]
		for i := range s {
			s[i] += float32(std * r.NormFloat64())
		}
	})
	return out, nil
}
