package dicomio

import (
	"errors"
	"fmt"
	"runtime"
)

// Limits bounds the resources that reading untrusted DICOM input may use.
// A zero field means "use the default" (see DefaultLimits); a negative
// field means "no limit" for that resource.
type Limits struct {
	// MaxFiles is the largest number of files (or zip entries) examined by
	// Discover. Default 100000.
	MaxFiles int
	// MaxFileBytes is the largest size in bytes of one DICOM file or zip
	// entry (uncompressed). Default 2 GiB.
	MaxFileBytes int64
	// MaxZipBytes is the largest total uncompressed size in bytes of all the
	// entries of one zip archive. Default 16 GiB.
	MaxZipBytes int64
	// MaxZipRatio is the largest accepted ratio of uncompressed to
	// compressed size of one zip entry (compression-bomb guard). Default 200.
	MaxZipRatio float64
	// MaxVoxels is the largest number of voxels (rows*cols*slices*samples)
	// of one loaded volume. Default 2^31-1.
	MaxVoxels int64
	// MaxRows, MaxCols and MaxFrames bound the Rows, Columns and
	// NumberOfFrames of one image. Defaults 8192, 8192 and 10000.
	MaxRows, MaxCols, MaxFrames int
	// Workers is the number of slices decoded in parallel by Series.Load.
	// Default runtime.GOMAXPROCS(0).
	Workers int
}

// DefaultLimits returns the limits used for zero fields of a Limits value.
func DefaultLimits() Limits {
	return Limits{
		MaxFiles:     100000,
		MaxFileBytes: 2 << 30,
		MaxZipBytes:  16 << 30,
		MaxZipRatio:  200,
		MaxVoxels:    1<<31 - 1,
		MaxRows:      8192,
		MaxCols:      8192,
		MaxFrames:    10000,
		Workers:      runtime.GOMAXPROCS(0),
	}
}

// withDefaults fills the zero fields of l from DefaultLimits and turns
// negative fields into "unlimited".
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	const big = int64(1) << 62
	fi := func(v *int, def int) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = int(^uint(0) >> 2)
		}
	}
	fi64 := func(v *int64, def int64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = big
		}
	}
	fi(&l.MaxFiles, d.MaxFiles)
	fi64(&l.MaxFileBytes, d.MaxFileBytes)
	fi64(&l.MaxZipBytes, d.MaxZipBytes)
	if l.MaxZipRatio == 0 {
		l.MaxZipRatio = d.MaxZipRatio
	} else if l.MaxZipRatio < 0 {
		l.MaxZipRatio = 1e300
	}
	fi64(&l.MaxVoxels, d.MaxVoxels)
	fi(&l.MaxRows, d.MaxRows)
	fi(&l.MaxCols, d.MaxCols)
	fi(&l.MaxFrames, d.MaxFrames)
	if l.Workers <= 0 {
		l.Workers = d.Workers
	}
	return l
}

// ErrLimit is wrapped by every *LimitError, so that callers can test
// errors.Is(err, ErrLimit) (for example to answer HTTP 413).
var ErrLimit = errors.New("limit exceeded")

// LimitError reports input that exceeds one of the Limits.
type LimitError struct {
	// What names the input (file, zip entry or series).
	What string
	// Limit is the name of the Limits field, e.g. "MaxFileBytes".
	Limit string
	// Value is the offending amount and Max the limit.
	Value, Max float64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("dicomio: %s: %s: %.6g exceeds limit %.6g", e.What, e.Limit, e.Value, e.Max)
}

// Unwrap returns ErrLimit.
func (e *LimitError) Unwrap() error { return ErrLimit }
