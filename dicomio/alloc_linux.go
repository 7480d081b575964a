//go:build linux

package dicomio

import (
	"syscall"
	"unsafe"
)

// hugePageBytes is the size of an x86-64/arm64 (4 KiB base page)
// transparent huge page; smaller buffers are not advised.
const hugePageBytes = 2 << 20

// newVoxels returns n zeroed float32 values for a volume. A volume is
// hundreds of MB written once, so on Linux the 2 MiB-aligned interior of
// the buffer is advised MADV_HUGEPAGE before it is first touched (as NumPy
// does for its large arrays): the kernel then backs it with 2 MiB pages,
// one page fault per 2 MiB instead of one per 4 KiB, which is most of the
// cost of filling fresh memory. The advice is a hint: it is ignored when
// transparent huge pages are disabled, and it changes no contents. Once
// the volume is freed, the Go heap may reuse that range with huge pages
// (as every Go heap did before Go 1.21.1 where THP is "always").
func newVoxels(n int64) []float32 {
	v := make([]float32, n)
	if n*4 < 2*hugePageBytes {
		return v
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(v)))
	end := start + uintptr(n)*4
	lo := (start + hugePageBytes - 1) &^ (hugePageBytes - 1)
	hi := end &^ (hugePageBytes - 1)
	if hi > lo {
		b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), n*4)[lo-start : hi-start]
		_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE) // a hint: failure only costs speed
	}
	return v
}
