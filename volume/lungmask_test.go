package volume

import (
	"testing"
)

// chestModel describes a synthetic chest built in the tests: air outside,
// an elliptic-cylinder body, a table below it, two ellipsoidal lungs with a
// vessel running through the right one, and a small gas bubble.
type chestModel struct {
	dims               [3]int
	bodyC, bodyR       [2]float64
	bodyK0, bodyK1     int
	lungC              [2][3]float64
	lungR              [3]float64
	vesselK0, vesselK1 int
	gasC               [3]float64
	gasR               float64
	tableJ             int
	sx, sy, sz         float64 // grid scale (1 for the test size)
	wantLung, wantGas  int
	wantBox            Box
	hasVessel          bool
}

func (m *chestModel) inLung(i, j, k int) bool {
	x, y, z := float64(i)/m.sx, float64(j)/m.sy, float64(k)/m.sz
	for _, c := range m.lungC {
		dx, dy, dz := (x-c[0])/m.lungR[0], (y-c[1])/m.lungR[1], (z-c[2])/m.lungR[2]
		if dx*dx+dy*dy+dz*dz <= 1 {
			return true
		}
	}
	return false
}

// build fills a volume in HU; it counts the lung voxels (by the lung
// predicate, vessels included since they lie inside the lung) and the gas
// voxels, and the lungs' bounding box.
func (m *chestModel) build() *Volume {
	v := New(m.dims[0], m.dims[1], m.dims[2])
	m.wantLung, m.wantGas = 0, 0
	m.wantBox = Box{Min: m.dims}
	for k := 0; k < m.dims[2]; k++ {
		for j := 0; j < m.dims[1]; j++ {
			for i := 0; i < m.dims[0]; i++ {
				x, y, z := float64(i)/m.sx, float64(j)/m.sy, float64(k)/m.sz
				hu := float32(-1000)
				if j >= int(float64(m.tableJ)*m.sy) {
					hu = 300
				}
				bx, by := (x-m.bodyC[0])/m.bodyR[0], (y-m.bodyC[1])/m.bodyR[1]
				if k >= int(float64(m.bodyK0)*m.sz) && k < int(float64(m.bodyK1)*m.sz) && bx*bx+by*by <= 1 {
					hu = 40
					gx, gy, gz := x-m.gasC[0], y-m.gasC[1], z-m.gasC[2]
					if gx*gx+gy*gy+gz*gz <= m.gasR*m.gasR {
						hu = -900
						m.wantGas++
					}
					if m.inLung(i, j, k) {
						hu = -850
						m.wantLung++
						p := [3]int{i, j, k}
						for a := 0; a < 3; a++ {
							m.wantBox.Min[a] = min(m.wantBox.Min[a], p[a])
							m.wantBox.Max[a] = max(m.wantBox.Max[a], p[a]+1)
						}
						c := m.lungC[0]
						if m.hasVessel && k >= m.vesselK0 && k < m.vesselK1 && (x == c[0] || x == c[0]+1) && y == c[1] {
							hu = 40 // a vessel: a hole in the lung of this slice
						}
					}
				}
				v.Set(i, j, k, hu)
			}
		}
	}
	return v
}

func smallChest() *chestModel {
	return &chestModel{
		dims:  [3]int{80, 64, 40},
		bodyC: [2]float64{40, 34}, bodyR: [2]float64{34, 24}, bodyK0: 2, bodyK1: 38,
		lungC:    [2][3]float64{{24, 32, 20}, {56, 32, 20}},
		lungR:    [3]float64{11, 13, 14},
		vesselK0: 14, vesselK1: 26, hasVessel: true,
		gasC: [3]float64{40, 50, 33}, gasR: 2.5,
		tableJ: 62,
		sx:     1, sy: 1, sz: 1,
	}
}

func TestLungMask(t *testing.T) {
	m := smallChest()
	v := m.build()
	if m.wantLung < 10000 || m.wantGas < 30 {
		t.Fatalf("model too small: %d lung, %d gas voxels", m.wantLung, m.wantGas)
	}
	for _, conn := range []int{6, 26} {
		o := DefaultLungMaskOptions
		o.Connectivity = conn
		mask, err := LungMask(v, o)
		if err != nil {
			t.Fatal(err)
		}
		if got := mask.Count(); got != m.wantLung {
			t.Errorf("%d-connectivity: %d lung voxels, want %d by construction", conn, got, m.wantLung)
		}
		for k := 0; k < m.dims[2]; k++ {
			for j := 0; j < m.dims[1]; j++ {
				for i := 0; i < m.dims[0]; i++ {
					if mask.Bits[v.Index(i, j, k)] != m.inLung(i, j, k) {
						t.Fatalf("%d-connectivity: voxel (%d,%d,%d) mask %v, lung %v", conn, i, j, k, !m.inLung(i, j, k), m.inLung(i, j, k))
					}
				}
			}
		}
		b, ok := mask.BoundingBox()
		if !ok || b != m.wantBox {
			t.Errorf("bounding box %v, want %v", b, m.wantBox)
		}
	}
	// keeping three components brings the gas bubble back, unless it is
	// under MinFraction of the largest.
	o := DefaultLungMaskOptions
	o.Components = 3
	mask, _ := LungMask(v, o)
	if got := mask.Count(); got != m.wantLung+m.wantGas {
		t.Errorf("3 components: %d voxels, want %d", got, m.wantLung+m.wantGas)
	}
	o.MinFraction = 0.1
	mask, _ = LungMask(v, o)
	if got := mask.Count(); got != m.wantLung {
		t.Errorf("3 components, min fraction 0.1: %d voxels, want %d", got, m.wantLung)
	}
	// without the hole filling the vessel voxels would be missing: check
	// they are present.
	c := m.lungC[0]
	if !mask.Bits[v.Index(int(c[0]), int(c[1]), 20)] || v.At(int(c[0]), int(c[1]), 20) != 40 {
		t.Error("vessel voxel is not in the mask (holes not filled)")
	}

	box, err := LungBox(v, DefaultLungMaskOptions, [3]int{3, 3, 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := m.wantBox.Grow([3]int{3, 3, 2}, v.Dims); box != want {
		t.Errorf("lung box %v, want %v", box, want)
	}
	soft := New(10, 10, 4)
	for p := range soft.Voxels {
		soft.Voxels[p] = 40
	}
	if _, err := LungBox(soft, DefaultLungMaskOptions, [3]int{}); err == nil {
		t.Error("lung box of a lungless volume: no error")
	}
	bad := DefaultLungMaskOptions
	bad.Connectivity = 18
	if _, err := LungMask(v, bad); err == nil {
		t.Error("18-connectivity accepted")
	}
	mv, err := mask.ToVolume(v)
	if err != nil || mv.Voxels[v.Index(int(c[0]), int(c[1]), 20)] != 1 || mv.Voxels[0] != 0 {
		t.Errorf("mask to volume: %v", err)
	}
}

// BenchmarkLungMask512 times LungMask on a 512×512×300 synthetic chest.
func BenchmarkLungMask512(b *testing.B) {
	m := smallChest()
	m.dims = [3]int{512, 512, 300}
	m.sx, m.sy, m.sz = 6.4, 8, 7.5
	m.hasVessel = false
	v := m.build()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		mask, err := LungMask(v, DefaultLungMaskOptions)
		if err != nil {
			b.Fatal(err)
		}
		if mask.Count() != m.wantLung {
			b.Fatalf("%d lung voxels, want %d", mask.Count(), m.wantLung)
		}
	}
	b.ReportMetric(float64(len(v.Voxels))*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mvoxel/s")
}
