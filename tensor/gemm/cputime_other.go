//go:build !linux

package gemm

// threadCPUTime returns -1: the CPU time of a thread is not read here.
func threadCPUTime() float64 { return -1 }

// processCPUTime returns -1: the CPU time of the process is not read here.
func processCPUTime() float64 { return -1 }
