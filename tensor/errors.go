package tensor

import "fmt"

// ShapeError reports an operation applied to tensors of incompatible shapes
// or with invalid arguments.
type ShapeError struct {
	Op  string // the operation, e.g. "Conv" or "Add"
	Msg string // what is wrong, naming the shapes involved
}

func (e *ShapeError) Error() string { return "tensor: " + e.Op + ": " + e.Msg }

// shapeErr panics with a *ShapeError for op.
func shapeErr(op, format string, args ...any) {
	panic(&ShapeError{Op: op, Msg: fmt.Sprintf(format, args...)})
}

// Catch runs f and converts a *ShapeError panic raised inside it into an
// ordinary error. Other panics propagate.
func Catch(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if se, ok := r.(*ShapeError); ok {
				err = se
				return
			}
			panic(r)
		}
	}()
	f()
	return nil
}
