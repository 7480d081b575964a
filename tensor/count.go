package tensor

import "sync/atomic"

var (
	countingMACs atomic.Int32
	macCount     atomic.Int64
)

// CountMACs runs f and returns the multiply-accumulate operations that the
// forward passes of Conv, Linear and MatMul performed inside it (a
// convolution counts Cout·(Cin/groups)·prod(kernel) per output position;
// backward passes are not counted). Ops run concurrently by other
// goroutines during f are counted too.
func CountMACs(f func()) int64 {
	countingMACs.Add(1)
	start := macCount.Load()
	defer countingMACs.Add(-1)
	f()
	return macCount.Load() - start
}

// addMACs records n multiply-accumulates when CountMACs is active.
func addMACs(n int) {
	if countingMACs.Load() > 0 {
		macCount.Add(int64(n))
	}
}
