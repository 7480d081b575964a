package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// problem is one Sgemm call with its inputs, stored as the caller lays them
// out (A is m×k or k×m when transA, with padding up to lda, and so on).
type problem struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
}

func (p problem) String() string {
	return fmt.Sprintf("tA=%v tB=%v m=%d n=%d k=%d alpha=%g beta=%g lda=%d ldb=%d ldc=%d",
		p.transA, p.transB, p.m, p.n, p.k, p.alpha, p.beta, p.lda, p.ldb, p.ldc)
}

// newProblem fills A, B and C with random values in [-1, 1); padding
// elements (outside the logical matrices) hold NaN so that reading them
// poisons the result. When beta is 0, C is entirely NaN.
func newProblem(rng *rand.Rand, transA, transB bool, m, n, k int, alpha, beta float32, pad int) problem {
	p := problem{transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	p.a, p.lda = randMatrix(rng, ar, ac, pad)
	p.b, p.ldb = randMatrix(rng, br, bc, pad)
	p.c, p.ldc = randMatrix(rng, m, n, pad)
	if beta == 0 {
		for i := range p.c {
			p.c[i] = float32(math.NaN())
		}
	}
	return p
}

func randMatrix(rng *rand.Rand, rows, cols, pad int) ([]float32, int) {
	ld := max(cols+pad, 1)
	s := make([]float32, max(rows*ld, 1))
	for i := range s {
		s[i] = float32(math.NaN())
	}
	for i := range rows {
		for j := range cols {
			s[i*ld+j] = 2*rng.Float32() - 1
		}
	}
	return s, ld
}

// reference computes the expected C in float64 by the definition, with an
// error bound per element for a float32 computation: each of the k products
// and the sums of a float32 dot product contribute at most one rounding
// each, so |error| <= (k+4) * 2^-24 * (|alpha| sum|a||b| + |beta c|), doubled
// for slack.
func reference(p problem) (want, bound []float64) {
	want = make([]float64, p.m*p.n)
	bound = make([]float64, p.m*p.n)
	const u = 1.0 / (1 << 24)
	for i := range p.m {
		for j := range p.n {
			var s, sa float64
			for q := range p.k {
				var av, bv float64
				if p.transA {
					av = float64(p.a[q*p.lda+i])
				} else {
					av = float64(p.a[i*p.lda+q])
				}
				if p.transB {
					bv = float64(p.b[j*p.ldb+q])
				} else {
					bv = float64(p.b[q*p.ldb+j])
				}
				s += av * bv
				sa += math.Abs(av * bv)
			}
			alpha, beta := float64(p.alpha), float64(p.beta)
			v := alpha * s
			mag := math.Abs(alpha) * sa
			if p.beta != 0 {
				cv := float64(p.c[i*p.ldc+j])
				v += beta * cv
				mag += math.Abs(beta * cv)
			}
			want[i*p.n+j] = v
			bound[i*p.n+j] = 2*float64(p.k+4)*u*mag + 1e-30
		}
	}
	return want, bound
}

// check runs impl on a copy of p and compares C with the reference,
// including that padding between rows of C is untouched.
func check(t *testing.T, impl Impl, p problem) {
	t.Helper()
	want, bound := reference(p)
	checkAgainst(t, impl, p, want, bound)
}

// checkAgainst is check with the reference already computed.
func checkAgainst(t *testing.T, impl Impl, p problem, want, bound []float64) {
	t.Helper()
	c := append([]float32(nil), p.c...)
	impl.Sgemm(p.transA, p.transB, p.m, p.n, p.k, p.alpha, p.a, p.lda, p.b, p.ldb, p.beta, c, p.ldc)
	bad := 0
	for i := range p.m {
		for j := 0; j < p.ldc && i*p.ldc+j < len(c); j++ {
			got := c[i*p.ldc+j]
			if j >= p.n {
				if !math.IsNaN(float64(got)) {
					t.Fatalf("%v %v: padding C[%d][%d] written (%g)", impl, p, i, j, got)
				}
				continue
			}
			w, b := want[i*p.n+j], bound[i*p.n+j]
			if d := math.Abs(float64(got) - w); !(d <= b) {
				bad++
				if bad <= 3 {
					t.Errorf("%v %v: C[%d][%d] = %g, want %g (|diff| %.3g > bound %.3g)", impl, p, i, j, got, w, d, b)
				}
			}
		}
	}
	if bad > 3 {
		t.Fatalf("%v %v: %d wrong elements", impl, p, bad)
	}
}

// allImpls lists every implementation usable here, then both pure-Go tiles
// (whichever Portable does not use would otherwise go untested on this
// architecture), then the package-level Sgemm.
func allImpls() []Impl {
	return append(append([]Impl(nil), implementations...),
		driverImpl{"portable4x4", portable4x4}, driverImpl{"portable2x4", portable2x4}, front{})
}

// driverImpl runs the blocked driver d directly.
type driverImpl struct {
	name string
	d    *blocked
}

func (i driverImpl) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	i.d.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func (i driverImpl) String() string { return i.name }

// front calls the package-level Sgemm, whatever implementation it uses.
type front struct{}

func (front) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func (front) String() string { return "Sgemm" }

var scalars = [][2]float32{{1, 0}, {1, 1}, {-0.75, 0}, {-0.75, 1}, {1, 0.5}, {1.5, -2}, {0, 0}, {0, 0.5}}

// TestSmallShapes runs every shape with all dimensions from a set of sizes
// around the 4×4 and 6×16 register tiles, all four transpose combinations,
// minimal and padded leading dimensions and several alpha, beta pairs.
func TestSmallShapes(t *testing.T) {
	sizes := []int{1, 2, 3, 4, 5, 6, 7, 9, 12, 15, 16, 17, 23, 33}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, impl := range allImpls() {
		for _, m := range sizes {
			for _, n := range sizes {
				for _, k := range []int{0, 1, 2, 5, 8, 17} {
					for tr := range 4 {
						s := scalars[rng.IntN(len(scalars))]
						p := newProblem(rng, tr&1 != 0, tr&2 != 0, m, n, k, s[0], s[1], rng.IntN(2)*3)
						check(t, impl, p)
					}
				}
			}
		}
	}
}

// TestScalars runs one tile-crossing shape with every alpha, beta pair, every
// transpose combination and both minimal and padded leading dimensions.
func TestScalars(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, impl := range allImpls() {
		for _, s := range scalars {
			for tr := range 4 {
				for _, pad := range []int{0, 5} {
					check(t, impl, newProblem(rng, tr&1 != 0, tr&2 != 0, 19, 37, 29, s[0], s[1], pad))
				}
			}
		}
	}
}

// TestBlockEdges runs shapes that cross the cache blocks (kc = 256, mc = 128
// or 144, nc = 1024 or 2048) and the parallel split.
func TestBlockEdges(t *testing.T) {
	shapes := [][3]int{
		{145, 40, 257}, {7, 2050, 9}, {129, 1030, 5}, {300, 19, 520}, {1, 700, 300},
		{700, 1, 300}, {130, 140, 120}, {97, 203, 262},
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, impl := range allImpls() {
		for i, sh := range shapes {
			tr := i % 4
			s := scalars[i%len(scalars)]
			if s[0] == 0 {
				s[0] = 0.5
			}
			check(t, impl, newProblem(rng, tr&1 != 0, tr&2 != 0, sh[0], sh[1], sh[2], s[0], s[1], 1+i%3))
		}
	}
}

// TestWorkers runs products big enough for 4 workers (m*n*k >= 4 * 2^21)
// with GOMAXPROCS of 1, 3 and 4, so that no split, splits into 3 and a 2×2
// grid (181×203) or 4 row strips (250×13) are exercised.
func TestWorkers(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	var problems []problem
	for tr := range 4 {
		problems = append(problems,
			newProblem(rng, tr&1 != 0, tr&2 != 0, 181, 203, 241, 1, 0, 2),
			newProblem(rng, tr&1 != 0, tr&2 != 0, 250, 13, 2600, -1, 0.5, 0))
	}
	for _, p := range problems {
		want, bound := reference(p)
		for _, procs := range []int{1, 3, 4} {
			runtime.GOMAXPROCS(procs)
			for _, impl := range allImpls() {
				checkAgainst(t, impl, p, want, bound)
			}
		}
	}
}

// TestAlphaZeroSkipsAB checks that with alpha = 0 (or k = 0) A and B are not
// read: NaN in them must not reach C = beta*C.
func TestAlphaZeroSkipsAB(t *testing.T) {
	nan := float32(math.NaN())
	for _, impl := range allImpls() {
		a := []float32{nan, nan, nan, nan}
		b := []float32{nan, nan, nan, nan}
		c := []float32{1, 2, 3, 4}
		impl.Sgemm(false, false, 2, 2, 2, 0, a, 2, b, 2, 3, c, 2)
		if want := []float32{3, 6, 9, 12}; fmt.Sprint(c) != fmt.Sprint(want) {
			t.Errorf("%v: alpha=0 beta=3: C = %v, want %v", impl, c, want)
		}
		c = []float32{nan, nan, nan, nan}
		impl.Sgemm(true, true, 2, 2, 2, 0, a, 2, b, 2, 0, c, 2)
		if want := []float32{0, 0, 0, 0}; fmt.Sprint(c) != fmt.Sprint(want) {
			t.Errorf("%v: alpha=0 beta=0: C = %v, want %v", impl, c, want)
		}
		c = []float32{nan, nan, nan, nan}
		impl.Sgemm(false, false, 2, 2, 0, 1, nil, 0, nil, 2, 0, c, 2)
		if want := []float32{0, 0, 0, 0}; fmt.Sprint(c) != fmt.Sprint(want) {
			t.Errorf("%v: k=0 beta=0: C = %v, want %v", impl, c, want)
		}
	}
}

// TestConcurrent runs several different products at once from separate
// goroutines through Sgemm and every implementation.
func TestConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			impl := allImpls()[g%len(allImpls())]
			for i := range 3 {
				m, n, k := 40+g*13+i, 150-g*7, 90+g*11
				check(t, impl, newProblem(rng, g&1 != 0, g&2 != 0, m, n, k, 1, float32(i%2), 1))
			}
		}()
	}
	wg.Wait()
}

// TestBadArgs checks that malformed arguments panic with a message naming
// the operand instead of corrupting memory.
func TestBadArgs(t *testing.T) {
	a := make([]float32, 12)
	cases := []struct {
		name, want string
		call       func(Impl)
	}{
		{"short lda", "lda=2 < 3", func(i Impl) { i.Sgemm(false, false, 2, 2, 3, 1, a, 2, a, 2, 0, a, 2) }},
		{"short a", "len(a)=5", func(i Impl) { i.Sgemm(true, false, 4, 2, 2, 1, a[:5], 4, a, 2, 0, a, 2) }},
		{"short b", "len(b)=3", func(i Impl) { i.Sgemm(false, true, 2, 2, 2, 1, a, 2, a[:3], 2, 0, a, 2) }},
		{"short c", "len(c)=7", func(i Impl) { i.Sgemm(false, false, 2, 4, 2, 1, a, 2, a, 4, 0, a[:7], 4) }},
		{"negative", "negative dimension", func(i Impl) { i.Sgemm(false, false, -1, 2, 2, 1, a, 2, a, 2, 0, a, 2) }},
	}
	for _, impl := range allImpls() {
		for _, tc := range cases {
			func() {
				defer func() {
					r := recover()
					if msg, _ := r.(string); !strings.Contains(msg, tc.want) {
						t.Errorf("%v %s: panic %v, want one containing %q", impl, tc.name, r, tc.want)
					}
				}()
				tc.call(impl)
			}()
		}
	}
}

// TestDefault checks that Sgemm uses the fastest implementation available.
func TestDefault(t *testing.T) {
	if got, want := Current(), implementations[len(implementations)-1]; got != want {
		t.Errorf("Current() = %v, want %v", got, want)
	}
	old := Use(Portable{})
	if Current() != (Portable{}) {
		t.Errorf("after Use(Portable{}), Current() = %v", Current())
	}
	Use(old)
}

// TestPeakGFLOPS checks that the peak measurement is a plausible rate: more
// than 0.1 GFLOP/s, and below 64 flops per cycle per core at 6 GHz.
func TestPeakGFLOPS(t *testing.T) {
	if testing.Short() {
		t.Skip("measures for about 0.2 s")
	}
	if g := PeakGFLOPS(1); !(g > 0.1 && g < 64*6) {
		t.Errorf("PeakGFLOPS(1) = %g", g)
	}
}

// TestGrid checks the split of C among workers on cases worked by hand.
func TestGrid(t *testing.T) {
	d := &blocked{mr: 8, nr: 32}
	cases := []struct{ m, n, workers, gm, gn int }{
		{256, 2304, 2, 1, 2},  // 1/256+2/2304 < 2/256+1/2304: split the columns
		{2304, 256, 2, 2, 1},  // and the rows when they are the longer side
		{1024, 1024, 4, 2, 2}, // 2/1024+2/1024 beats 1/1024+4/1024
		{8, 64, 3, 1, 2},      // one row tile, two column tiles: 2 workers fit
		{8, 32, 4, 1, 1},      // a single tile: no split
	}
	for _, c := range cases {
		if gm, gn := d.grid(c.m, c.n, c.workers); gm != c.gm || gn != c.gn {
			t.Errorf("grid(%d, %d, %d) = %d×%d, want %d×%d", c.m, c.n, c.workers, gm, gn, c.gm, c.gn)
		}
	}
}
