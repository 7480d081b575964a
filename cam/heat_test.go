package cam

import (
	"math"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// blobNet is a network whose final feature map is its input (pool false)
// or the input average-pooled by 2 (pool true), with a linear head whose
// class 0 has weight +1 and class 1 weight −1, no bias: the CAM of class 0
// is the (pooled) input itself, a "network output" that is hot exactly
// where the preprocessed scan is bright.
type blobNet struct {
	nn.Base
	FC   *nn.Linear
	pool bool
}

func newBlobNet(pool bool) *blobNet {
	n := &blobNet{pool: pool}
	n.FC = nn.Child(n, "fc", &nn.Linear{In: 1, Out: 2})
	n.FC.Weight = n.FC.Param("weight", tensor.New([]float32{1, -1}, 2, 1))
	return n
}

func (n *blobNet) Features(x *tensor.Tensor, tap net3d.Tap) *tensor.Tensor {
	if n.pool {
		x = tensor.AvgPool(x, tensor.PoolOpts{Kernel: []int{2, 2, 2}, Stride: []int{2, 2, 2}})
	}
	if tap != nil {
		x = tap("features", x)
	}
	return x
}
func (n *blobNet) Head(f *tensor.Tensor) *tensor.Tensor { return net3d.GlobalPoolLinear(f, nil, n.FC) }
func (n *blobNet) Forward(x *tensor.Tensor) *tensor.Tensor {
	return n.Head(n.Features(x, nil))
}
func (n *blobNet) Linear() *nn.Linear  { return n.FC }
func (n *blobNet) TapLayers() []string { return []string{"features"} }
func (n *blobNet) Spec() net3d.Spec {
	return net3d.Spec{Arch: "blob", InChannels: 1, Classes: 2}
}

// blobScan returns a scan with an anisotropic Gaussian blob (σ 3 mm
// in-plane, 5 mm along k, peak 1000) centred on voxel c, on a grid whose
// slices run feet-to-head reversed (k along −z) and with an offset origin.
func blobScan(dims [3]int, spacing [3]float64, c [3]int) *volume.Volume {
	v := volume.New(dims[0], dims[1], dims[2])
	v.Spacing = spacing
	v.Origin = [3]float64{-20, 30, -100}
	v.Direction = [3][3]float64{{1, 0, 0}, {0, 1, 0}, {0, 0, -1}}
	sig := [3]float64{3, 3, 5}
	for k := 0; k < dims[2]; k++ {
		for j := 0; j < dims[1]; j++ {
			for i := 0; i < dims[0]; i++ {
				q := 0.0
				for a, d := range [3]int{i - c[0], j - c[1], k - c[2]} {
					x := float64(d) * spacing[a] / sig[a]
					q += x * x
				}
				v.Set(i, j, k, float32(1000*math.Exp(-q/2)))
			}
		}
	}
	return v
}

// centroid returns the heat-weighted mean voxel index of the voxels above
// half the maximum.
func centroid(v *volume.Volume) [3]float64 {
	_, mx, _ := Peak(v)
	var s [3]float64
	w := 0.0
	nx, ny := v.Dims[0], v.Dims[1]
	for p, x := range v.Voxels {
		if x < mx/2 {
			continue
		}
		idx := [3]int{p % nx, (p / nx) % ny, p / (nx * ny)}
		for a := range s {
			s[a] += float64(x) * float64(idx[a])
		}
		w += float64(x)
	}
	for a := range s {
		s[a] /= w
	}
	return s
}

// TestMapBackBlob places a hot blob in a scan, preprocesses it (resampling
// to a new spacing, centre crop, slice sampling down or up), lets a network
// whose CAM is its input (or its input pooled by 2) produce a map that is
// hot where the transformed blob is, and checks that Explain brings the
// peak back onto the blob's original voxel, within one voxel (within one
// feature cell for the pooled network), and its patient position.
func TestMapBackBlob(t *testing.T) {
	dims, spacing, c := [3]int{48, 40, 30}, [3]float64{0.7, 0.7, 2.0}, [3]int{30, 14, 19}
	scan := blobScan(dims, spacing, c)
	want := scan.VoxelToPatient([3]float64{float64(c[0]), float64(c[1]), float64(c[2])})
	cases := []struct {
		name string
		p    volume.Pipeline
		pool bool
		// tol is the allowed peak error per axis in voxels: one voxel, or
		// for the pooled network one feature cell (2 preprocessed voxels,
		// 2.8 mm = 4 voxels in-plane).
		tol float64
	}{
		{"downsample", volume.Pipeline{
			{Op: "resample_spacing", Spacing: []float64{1.4, 1.4, 3.0}},
			{Op: "center_crop", Cols: 20, Rows: 16},
			{Op: "sample_slices", N: 12, Mode: "symmetric"},
		}, false, 1},
		{"upsample-slices", volume.Pipeline{
			{Op: "resample_spacing", Spacing: []float64{1.05, 1.05, 2.0}},
			{Op: "center_crop", Cols: 28, Rows: 24},
			{Op: "sample_slices", N: 40, Mode: "symmetric"},
			{Op: "normalize", Method: "zscore"},
		}, false, 1},
		{"pooled", volume.Pipeline{
			{Op: "resample_spacing", Spacing: []float64{1.4, 1.4, 2.0}},
			{Op: "center_crop", Cols: 20, Rows: 16},
			{Op: "sample_slices", N: 16, Mode: "symmetric"},
		}, true, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, norm := range []Normalization{MinMax, MinMaxInverted} {
				hs, err := Explain(newBlobNet(tc.pool), tc.p, scan, Options{Method: CAM, Classes: []int{0}, Normalization: norm})
				if err != nil {
					t.Fatal(err)
				}
				h := hs[0]
				if h.Heat.Dims != scan.Dims || h.Heat.Origin != scan.Origin || h.Heat.Spacing != scan.Spacing || h.Heat.Direction != scan.Direction {
					t.Fatalf("heat geometry %v %v %v differs from the scan's", h.Heat.Dims, h.Heat.Origin, h.Heat.Spacing)
				}
				hot := h.Hot()
				pk, val, _ := Peak(hot)
				if !(val > 0.9 && val <= 1) {
					t.Errorf("%v: peak heat %v, want in (0.9, 1]", norm, val)
				}
				for a := 0; a < 3; a++ {
					if math.Abs(float64(pk[a]-c[a])) > tc.tol {
						t.Errorf("%v: peak at voxel %v, blob at %v", norm, pk, c)
					}
				}
				cen := centroid(hot)
				for a := 0; a < 3; a++ {
					if math.Abs(cen[a]-float64(c[a])) > 1 {
						t.Errorf("%v: centroid %v, blob at %v", norm, cen, c)
					}
				}
				s, err := Summarize(h, scan, volume.NewMask(scan.Dims), nil)
				if err != nil {
					t.Fatal(err)
				}
				got := s.Peak.PatientMM
				for a := 0; a < 3; a++ {
					if d := math.Abs(got[a] - want[a]); d > tc.tol*spacing[a]+1e-9 {
						t.Errorf("%v: peak at %v mm, blob at %v mm", norm, got, want)
					}
				}
				t.Logf("%v: peak voxel %v (blob %v), centroid %.2f", norm, pk, c, cen)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	cases := []struct {
		n       Normalization
		in, out []float32
	}{
		{MinMax, []float32{-2, 0, 2, 6}, []float32{0, 0.25, 0.5, 1}},
		{MinMaxInverted, []float32{-2, 0, 2, 6}, []float32{1, 0.75, 0.5, 0}},
		{MaxDivide, []float32{-2, 0, 2, 6}, []float32{0, 2.0 / 6, 4.0 / 6, 8.0 / 6}}, // not within [0, 1] when min < 0
		{MaxDivide, []float32{1, 2, 4}, []float32{0, 0.25, 0.75}},
		{MinMax, []float32{3, 3}, []float32{0, 0}},
		{MinMaxInverted, []float32{3, 3}, []float32{3, 3}}, // MONAI returns a constant map unchanged
		{MaxDivide, []float32{-3, -1}, []float32{0, 0}},
	}
	for _, c := range cases {
		x := append([]float32(nil), c.in...)
		if err := Normalize(x, c.n); err != nil {
			t.Fatal(err)
		}
		for i := range x {
			if math.Abs(float64(x[i]-c.out[i])) > 1e-6 {
				t.Errorf("%v %v: got %v, want %v", c.n, c.in, x, c.out)
				break
			}
		}
	}
	if err := Normalize([]float32{1, float32(math.NaN())}, MinMax); err == nil || !strings.Contains(err.Error(), "position 1") {
		t.Errorf("NaN: error %v", err)
	}
}

func TestInputFromVolume(t *testing.T) {
	v := volume.New(4, 3, 2)
	for i := range v.Voxels {
		v.Voxels[i] = float32(i)
	}
	x, err := InputFromVolume(v, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(x.Shape(), []int{1, 2, 2, 3, 4}) {
		t.Fatalf("shape %v", x.Shape())
	}
	for _, ch := range []int{0, 1} {
		if got, want := x.At(0, ch, 1, 2, 3), v.At(3, 2, 1); got != want {
			t.Errorf("channel %d: [k=1, j=2, i=3] = %v, voxel (3, 2, 1) = %v", ch, got, want)
		}
	}
	if _, err := InputFromVolume(&volume.Volume{Dims: [3]int{2, 2, 2}, Spacing: [3]float64{1, 1, 1}}, 1); err == nil {
		t.Error("volume without voxels accepted")
	}
	if _, err := Upsample(tensor.Zeros(1, 1, 2, 2), []int{4, 4, 4}); err == nil {
		t.Error("Upsample with a size of the wrong rank accepted")
	}
}
