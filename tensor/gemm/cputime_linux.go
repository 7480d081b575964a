package gemm

import "golang.org/x/sys/unix"

// threadCPUTime returns the CPU time, in seconds, used by the calling OS
// thread, or -1 when it cannot be read.
func threadCPUTime() float64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return -1
	}
	return float64(ts.Sec) + float64(ts.Nsec)*1e-9
}

// processCPUTime returns the CPU time, in seconds, used by all threads of
// the process, or -1 when it cannot be read.
func processCPUTime() float64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return -1
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)*1e-6
}
