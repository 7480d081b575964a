package volume

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
)

// PhantomClass is the diagnosis a synthetic chest CT is drawn for. The order
// follows the CC-CCII label map of the CovidNet3D paper: CP 0, NCP 1, Normal 2.
type PhantomClass int

const (
	// CP is common (bacterial) pneumonia: dense, mostly unilateral lobar
	// consolidation.
	CP PhantomClass = iota
	// NCP is novel-coronavirus (COVID-19-like) pneumonia: bilateral,
	// peripheral, multifocal ground-glass opacities.
	NCP
	// Normal has no lesion.
	Normal
)

// PhantomClassNames are the class names in label order.
var PhantomClassNames = []string{"CP", "NCP", "Normal"}

func (c PhantomClass) String() string {
	if c < 0 || int(c) >= len(PhantomClassNames) {
		return fmt.Sprintf("PhantomClass(%d)", int(c))
	}
	return PhantomClassNames[c]
}

// ParsePhantomClass returns the class with the given name (case-sensitive).
func ParsePhantomClass(name string) (PhantomClass, error) {
	for i, n := range PhantomClassNames {
		if n == name {
			return PhantomClass(i), nil
		}
	}
	return 0, fmt.Errorf("volume: unknown phantom class %q (want one of %v)", name, PhantomClassNames)
}

// PhantomOptions configures NewPhantom. Zero values are drawn at random (from
// Seed) within realistic ranges.
type PhantomOptions struct {
	Class PhantomClass
	Seed  uint64
	// Cols and Rows are the in-plane size in pixels (default 128).
	Cols, Rows int
	// Slices is the number of axial slices (default: enough to cover the
	// thorax at SliceSpacing, 40–72).
	Slices int
	// PixelSpacing is the in-plane spacing in mm (default 2.5–3.1).
	PixelSpacing float64
	// SliceSpacing is the distance between slices in mm (default 4–6).
	SliceSpacing float64
	// NoiseHU is the standard deviation of the scanner noise (default 12–35).
	NoiseHU float64
	// Healthy draws the healthy twin of the phantom of Class and Seed: the
	// same anatomy, confounders and noise, voxel for voxel, but without its
	// lesions (the result has class Normal and an empty lesion mask). A
	// pair of twins differs only where a lesion lies, which is what a
	// classifier that must look at the lesions is trained on.
	Healthy bool
}

// Phantom is a synthetic chest CT with its lesion mask.
type Phantom struct {
	Class PhantomClass
	Seed  uint64
	// CT holds Hounsfield units in [-1024, 3071] on whole numbers (as a
	// scanner stores them).
	CT *Volume
	// Lesion is 1 inside a lesion and 0 elsewhere, on CT's grid.
	Lesion *Volume
	// Lungs is 1 inside the lungs and 0 elsewhere, on CT's grid.
	Lungs *Volume
}

// ellipsoid is an axis-aligned ellipsoid in mm.
type ellipsoid struct{ c, r [3]float64 }

// q returns Σ((p-c)/r)², < 1 inside.
func (e ellipsoid) q(x, y, z float64) float64 {
	dx, dy, dz := (x-e.c[0])/e.r[0], (y-e.c[1])/e.r[1], (z-e.c[2])/e.r[2]
	return dx*dx + dy*dy + dz*dz
}

// tube is a line segment with a radius, in mm.
type tube struct {
	a, b [3]float64
	r    float64
}

// dist2 returns the squared distance from p to the segment.
func (t tube) dist2(p [3]float64) float64 {
	var ab, ap [3]float64
	var l2, dot float64
	for i := 0; i < 3; i++ {
		ab[i] = t.b[i] - t.a[i]
		ap[i] = p[i] - t.a[i]
		l2 += ab[i] * ab[i]
		dot += ab[i] * ap[i]
	}
	u := 0.0
	if l2 > 0 {
		u = math.Max(0, math.Min(1, dot/l2))
	}
	d := 0.0
	for i := 0; i < 3; i++ {
		e := ap[i] - u*ab[i]
		d += e * e
	}
	return d
}

// blob is an irregular lesion: a sphere whose radius is modulated by a few
// angular harmonics, with a soft edge.
type blob struct {
	c       [3]float64
	r       float64
	harm    [3][3]float64 // amplitude, frequency, phase per harmonic
	deltaHU float64       // HU added at the centre
	setHU   float64       // if non-zero, HU the lesion tends to (consolidation)
}

// weight returns the lesion's opacity at p in [0,1].
func (b blob) weight(p [3]float64) float64 {
	dx, dy, dz := p[0]-b.c[0], p[1]-b.c[1], p[2]-b.c[2]
	d := math.Sqrt(dx*dx + dy*dy + dz*dz)
	if d > 1.6*b.r {
		return 0
	}
	th := math.Atan2(dy, dx)
	ph := math.Atan2(dz, math.Hypot(dx, dy))
	r := b.r
	for _, h := range b.harm {
		r += h[0] * b.r * math.Sin(h[1]*th+h[2]) * math.Cos(h[1]*ph)
	}
	// Soft edge over 25% of the radius.
	t := (d - 0.85*r) / (0.3 * r)
	switch {
	case t <= 0:
		return 1
	case t >= 1:
		return 0
	}
	return 1 - t*t*(3-2*t)
}

// anatomy holds one phantom's randomly drawn structures, in mm, centred on
// the body axis.
type anatomy struct {
	bodyA, bodyB, fat   float64
	lungs               [2]ellipsoid
	lungHU, gravityHU   float64
	heart               ellipsoid
	tracheaR, carinaZ   float64
	tracheaY            float64
	bronchi             []tube
	vessels             []tube
	spineY, spineR      float64
	ribPeriod, ribThick float64
	ribPhase            float64
	lesions             []blob
	nodules             []blob // benign dense confounders
	atelectasis         float64
	texture             [6][4]float64
}

func uniform(rng *rand.Rand, lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }

// inLung returns which lung (0 right, 1 left) holds p, or -1, and the
// normalised depth q (< 1 inside).
func (a *anatomy) inLung(x, y, z float64) (int, float64) {
	for s, l := range a.lungs {
		t := (z - l.c[2]) / l.r[2]
		if t < -1 || t > 1 {
			continue
		}
		// Tapered apex (top), blunt base (diaphragm dome).
		var f float64
		if t > 0 {
			f = math.Sqrt(1 - t*t)
		} else {
			f = math.Sqrt(1 - t*t*t*t)
		}
		if f <= 0.02 {
			continue
		}
		dx := (x - l.c[0]) / (l.r[0] * f)
		dy := (y - l.c[1]) / (l.r[1] * f)
		q := dx*dx + dy*dy
		if q < 1 && a.heart.q(x, y, z) >= 1 {
			return s, q
		}
	}
	return -1, 2
}

func newAnatomy(o PhantomOptions, rng *rand.Rand, zLo, zHi float64) *anatomy {
	a := &anatomy{}
	a.bodyA = uniform(rng, 135, 170)
	a.bodyB = a.bodyA * uniform(rng, 0.62, 0.75)
	a.fat = uniform(rng, 6, 18)
	zMid := (zLo + zHi) / 2
	h := (zHi - zLo) * uniform(rng, 0.36, 0.44)
	for s := 0; s < 2; s++ {
		sign := float64(2*s - 1) // right lung at x<0 (patient right), left at x>0
		w := a.bodyA * uniform(rng, 0.31, 0.35)
		if s == 1 {
			w *= uniform(rng, 0.85, 0.95) // the heart takes room on the left
		}
		a.lungs[s] = ellipsoid{
			c: [3]float64{sign * a.bodyA * uniform(rng, 0.45, 0.49), a.bodyB * uniform(rng, 0.0, 0.08), zMid + uniform(rng, -8, 8)},
			r: [3]float64{w, a.bodyB * uniform(rng, 0.68, 0.76), h * uniform(rng, 0.95, 1.05)},
		}
	}
	a.lungHU = uniform(rng, -880, -810)
	a.gravityHU = uniform(rng, 0, 60)
	lz := a.lungs[0].c[2]
	a.heart = ellipsoid{
		c: [3]float64{a.bodyA * uniform(rng, 0.05, 0.15), -a.bodyB * uniform(rng, 0.05, 0.2), lz - h*uniform(rng, 0.35, 0.5)},
		r: [3]float64{a.bodyA * uniform(rng, 0.3, 0.38), a.bodyB * uniform(rng, 0.4, 0.5), h * uniform(rng, 0.35, 0.45)},
	}
	a.tracheaR = uniform(rng, 7, 10)
	a.tracheaY = -a.bodyB * uniform(rng, 0.1, 0.25)
	a.carinaZ = lz + h*uniform(rng, 0.2, 0.35)
	for s := 0; s < 2; s++ {
		sign := float64(2*s - 1)
		end := [3]float64{sign * a.bodyA * 0.3, a.tracheaY + 10, a.carinaZ - uniform(rng, 25, 40)}
		a.bronchi = append(a.bronchi, tube{a: [3]float64{0, a.tracheaY, a.carinaZ}, b: end, r: a.tracheaR * 0.7})
		// Vessels fan out from the hilum.
		hilum := [3]float64{sign * a.bodyA * 0.22, a.tracheaY + 15, a.carinaZ - 20}
		for v := 0; v < 14; v++ {
			l := a.lungs[s]
			var tip [3]float64
			for {
				tip = [3]float64{l.c[0] + uniform(rng, -1, 1)*l.r[0], l.c[1] + uniform(rng, -1, 1)*l.r[1], l.c[2] + uniform(rng, -1, 1)*l.r[2]}
				if side, q := a.inLung(tip[0], tip[1], tip[2]); side == s && q < 0.8 {
					break
				}
			}
			mid := [3]float64{(hilum[0] + tip[0]) / 2, (hilum[1] + tip[1]) / 2, (hilum[2] + tip[2]) / 2}
			r := uniform(rng, 2.0, 4.0)
			a.vessels = append(a.vessels, tube{a: hilum, b: mid, r: r}, tube{a: mid, b: tip, r: r * 0.55})
		}
	}
	a.spineY = a.bodyB * uniform(rng, 0.62, 0.72)
	a.spineR = uniform(rng, 14, 20)
	a.ribPeriod = uniform(rng, 24, 32)
	a.ribThick = uniform(rng, 8, 12)
	a.ribPhase = uniform(rng, 0, a.ribPeriod)
	for i := range a.texture {
		a.texture[i] = [4]float64{uniform(rng, 0.02, 0.08), uniform(rng, 0.02, 0.08), uniform(rng, 0.02, 0.08), uniform(rng, 0, 2*math.Pi)}
	}
	// Confounders present in every class: small calcified nodules and, in
	// some scans, dependent (posterior, basal) atelectasis.
	for n := rng.IntN(3); n > 0; n-- {
		p := a.randomLungPoint(rng, rng.IntN(2), 0.9)
		a.nodules = append(a.nodules, blob{c: p, r: uniform(rng, 2, 4), setHU: uniform(rng, 150, 400)})
	}
	if rng.Float64() < 0.35 {
		a.atelectasis = uniform(rng, 150, 350)
	}
	return a
}

// randomLungPoint draws a point inside lung s at normalised depth below qMax.
func (a *anatomy) randomLungPoint(rng *rand.Rand, s int, qMax float64) [3]float64 {
	l := a.lungs[s]
	for {
		p := [3]float64{l.c[0] + uniform(rng, -1, 1)*l.r[0], l.c[1] + uniform(rng, -1, 1)*l.r[1], l.c[2] + uniform(rng, -0.9, 0.8)*l.r[2]}
		if side, q := a.inLung(p[0], p[1], p[2]); side == s && q < qMax {
			return p
		}
	}
}

// peripheralLungPoint draws a point inside lung s close to its pleural
// surface (normalised depth between 0.55 and 0.9).
func (a *anatomy) peripheralLungPoint(rng *rand.Rand, s int) [3]float64 {
	for {
		p := a.randomLungPoint(rng, s, 0.9)
		if _, q := a.inLung(p[0], p[1], p[2]); q > 0.55 {
			return p
		}
	}
}

func randomHarmonics(rng *rand.Rand, amp float64) [3][3]float64 {
	var h [3][3]float64
	for i := range h {
		h[i] = [3]float64{uniform(rng, 0, amp), float64(2 + rng.IntN(4)), uniform(rng, 0, 2*math.Pi)}
	}
	return h
}

func (a *anatomy) addLesions(c PhantomClass, rng *rand.Rand) {
	switch c {
	case CP:
		// Lobar consolidation: one large dense region in one lung, sometimes
		// a smaller one in the other.
		s := rng.IntN(2)
		l := a.lungs[s]
		lower := rng.Float64() < 0.65
		zc := l.c[2] + l.r[2]*uniform(rng, 0.25, 0.5)
		if lower {
			zc = l.c[2] - l.r[2]*uniform(rng, 0.2, 0.5)
		}
		p := [3]float64{l.c[0] + uniform(rng, -0.3, 0.3)*l.r[0], l.c[1] + uniform(rng, -0.2, 0.4)*l.r[1], zc}
		a.lesions = append(a.lesions, blob{c: p, r: uniform(rng, 32, 52), harm: randomHarmonics(rng, 0.12), setHU: uniform(rng, -80, 40)})
		if rng.Float64() < 0.25 {
			q := a.randomLungPoint(rng, 1-s, 0.7)
			a.lesions = append(a.lesions, blob{c: q, r: uniform(rng, 10, 18), harm: randomHarmonics(rng, 0.15), setHU: uniform(rng, -100, 20)})
		}
	case NCP:
		// Multifocal peripheral ground glass in both lungs.
		n := 3 + rng.IntN(6)
		for i := 0; i < n; i++ {
			s := i % 2
			if i >= 2 {
				s = rng.IntN(2)
			}
			p := a.peripheralLungPoint(rng, s)
			a.lesions = append(a.lesions, blob{c: p, r: uniform(rng, 10, 24), harm: randomHarmonics(rng, 0.2), deltaHU: uniform(rng, 250, 520)})
		}
	}
}

// NewPhantom draws a synthetic chest CT of the given class.
func NewPhantom(o PhantomOptions) (*Phantom, error) {
	if o.Class < 0 || int(o.Class) >= len(PhantomClassNames) {
		return nil, fmt.Errorf("volume: phantom class %d out of range", int(o.Class))
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15))
	if o.Cols == 0 {
		o.Cols = 128
	}
	if o.Rows == 0 {
		o.Rows = o.Cols
	}
	if o.Cols < 16 || o.Rows < 16 || o.Cols > 1024 || o.Rows > 1024 {
		return nil, fmt.Errorf("volume: phantom size %dx%d outside 16..1024", o.Cols, o.Rows)
	}
	if o.PixelSpacing == 0 {
		o.PixelSpacing = uniform(rng, 2.5, 3.1) * 128 / float64(o.Cols)
	}
	if o.SliceSpacing == 0 {
		o.SliceSpacing = uniform(rng, 4, 6)
	}
	if o.Slices == 0 {
		o.Slices = int(math.Round(uniform(rng, 250, 320) / o.SliceSpacing))
	}
	if o.Slices < 4 || o.Slices > 2000 {
		return nil, fmt.Errorf("volume: phantom with %d slices outside 4..2000", o.Slices)
	}
	if o.NoiseHU == 0 {
		o.NoiseHU = uniform(rng, 12, 35)
	}
	ct := New(o.Cols, o.Rows, o.Slices)
	ct.Spacing = [3]float64{o.PixelSpacing, o.PixelSpacing, o.SliceSpacing}
	// Centre the body in the field of view; z increases towards the head.
	ct.Origin = [3]float64{-float64(o.Cols-1) / 2 * o.PixelSpacing, -float64(o.Rows-1) / 2 * o.PixelSpacing, 0}
	zHi := float64(o.Slices-1) * o.SliceSpacing
	a := newAnatomy(o, rng, 0, zHi)
	a.addLesions(o.Class, rng)
	class := o.Class
	if o.Healthy {
		// Drawn above so that the random stream (and with it the noise)
		// stays the twin's.
		a.lesions, class = nil, Normal
	}

	lesion := New(o.Cols, o.Rows, o.Slices)
	lungs := New(o.Cols, o.Rows, o.Slices)
	lesion.Spacing, lesion.Origin, lesion.Direction = ct.Spacing, ct.Origin, ct.Direction
	lungs.Spacing, lungs.Origin, lungs.Direction = ct.Spacing, ct.Origin, ct.Direction

	seeds := make([]uint64, o.Slices)
	for k := range seeds {
		seeds[k] = rng.Uint64()
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				a.renderSlice(ct, lesion, lungs, k, o.NoiseHU, rand.New(rand.NewPCG(seeds[k], uint64(k))))
			}
		}()
	}
	for k := 0; k < o.Slices; k++ {
		next <- k
	}
	close(next)
	wg.Wait()
	return &Phantom{Class: class, Seed: o.Seed, CT: ct, Lesion: lesion, Lungs: lungs}, nil
}

// renderSlice computes slice k of the phantom.
func (a *anatomy) renderSlice(ct, lesion, lungs *Volume, k int, noise float64, rng *rand.Rand) {
	nx, ny := ct.Dims[0], ct.Dims[1]
	z := ct.Origin[2] + float64(k)*ct.Spacing[2]
	ribOn := math.Mod(z-a.ribPhase+1000*a.ribPeriod, a.ribPeriod) < a.ribThick
	// Structures that can touch this slice.
	near := func(lo, hi float64) bool { return z >= lo && z <= hi }
	var vessels, bronchi []tube
	for _, t := range a.vessels {
		if near(math.Min(t.a[2], t.b[2])-t.r, math.Max(t.a[2], t.b[2])+t.r) {
			vessels = append(vessels, t)
		}
	}
	for _, t := range a.bronchi {
		if near(math.Min(t.a[2], t.b[2])-t.r, math.Max(t.a[2], t.b[2])+t.r) {
			bronchi = append(bronchi, t)
		}
	}
	var lesions, nodules []blob
	for _, b := range a.lesions {
		if near(b.c[2]-1.8*b.r, b.c[2]+1.8*b.r) {
			lesions = append(lesions, b)
		}
	}
	for _, b := range a.nodules {
		if near(b.c[2]-1.8*b.r, b.c[2]+1.8*b.r) {
			nodules = append(nodules, b)
		}
	}
	for j := 0; j < ny; j++ {
		y := ct.Origin[1] + float64(j)*ct.Spacing[1]
		for i := 0; i < nx; i++ {
			x := ct.Origin[0] + float64(i)*ct.Spacing[0]
			p := [3]float64{x, y, z}
			hu := -1000.0
			e := (x/a.bodyA)*(x/a.bodyA) + (y/a.bodyB)*(y/a.bodyB)
			inLesion := false
			if e < 1 {
				// Subcutaneous fat then muscle/soft tissue.
				depth := (1 - math.Sqrt(e)) * math.Min(a.bodyA, a.bodyB)
				hu = 40
				if depth < a.fat {
					hu = -100
				}
				// Ribs: small dense ovals just inside the chest wall.
				if ribOn && depth > a.fat+2 && depth < a.fat+12 && y < a.spineY &&
					math.Mod(math.Atan2(y/a.bodyB, x/a.bodyA)/(2*math.Pi)*18+100, 1) < 0.4 {
					hu = 650
				}
				// Spine: vertebral body with a cortical rim and the canal behind.
				if d := math.Hypot(x, y-a.spineY); d < a.spineR {
					hu = 300
					if d > a.spineR-3 {
						hu = 750
					}
				} else if math.Hypot(x, y-a.spineY-a.spineR-8) < 8 {
					hu = 20
				}
				if s, q := a.inLung(x, y, z); s >= 0 {
					lungs.Voxels[ct.Index(i, j, k)] = 1
					// Parenchyma: base density, gravity gradient towards the
					// back, a smooth texture.
					post := (y - a.lungs[s].c[1]) / a.lungs[s].r[1]
					hu = a.lungHU + a.gravityHU*(post+1)/2
					for _, t := range a.texture {
						hu += 12 * math.Sin(t[0]*x+t[1]*y+t[2]*z+t[3])
					}
					if a.atelectasis > 0 && post > 0.55 && z < a.lungs[s].c[2]-0.3*a.lungs[s].r[2] {
						hu += a.atelectasis * (post - 0.55) / 0.45 * math.Min(1, q+0.3)
					}
					for _, t := range vessels {
						if t.dist2(p) < t.r*t.r {
							hu = 40
						}
					}
					for _, b := range lesions {
						w := b.weight(p)
						if w <= 0 {
							continue
						}
						if b.setHU != 0 {
							hu = (1-w)*hu + w*b.setHU
						} else {
							hu += w * b.deltaHU
						}
						if w > 0.5 {
							inLesion = true
						}
					}
					for _, b := range nodules {
						if w := b.weight(p); w > 0 {
							hu = (1-w)*hu + w*b.setHU
						}
					}
				}
				if math.Hypot(x, y-a.tracheaY) < a.tracheaR && z > a.carinaZ {
					hu = -1000
				}
				for _, t := range bronchi {
					if t.dist2(p) < t.r*t.r {
						hu = -1000
					}
				}
			}
			hu += noise * rng.NormFloat64()
			hu = math.Round(math.Max(-1024, math.Min(3071, hu)))
			ct.Voxels[ct.Index(i, j, k)] = float32(hu)
			if inLesion {
				lesion.Voxels[ct.Index(i, j, k)] = 1
			}
		}
	}
}
