//go:build !386 && !amd64

package gemm

// fewFloatRegisters reports that Go code has too few float registers (16 or
// fewer) to hold a 4×4 tile of accumulators with its operands.
const fewFloatRegisters = false
