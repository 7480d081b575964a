//go:build !linux

package dicomio

// newVoxels returns n zeroed float32 values for a volume.
func newVoxels(n int64) []float32 { return make([]float32, n) }
