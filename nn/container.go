package nn

import (
	"strconv"

	"github.com/ctlens/ctlens/tensor"
)

// Sequential applies its children in order (torch.nn.Sequential). Children
// added by NewSequential and Append are named "0", "1", …; Add names them
// explicitly (torch.nn.Sequential(OrderedDict(...)), as torchvision's
// DenseNet "features.conv0").
type Sequential struct {
	Base
	mods []Module
}

// NewSequential returns a Sequential of mods named "0", "1", ….
func NewSequential(mods ...Module) *Sequential {
	s := &Sequential{}
	for _, m := range mods {
		s.Append(m)
	}
	return s
}

// Append adds m under the name of its index and returns s.
func (s *Sequential) Append(m Module) *Sequential {
	return s.Add(strconv.Itoa(len(s.mods)), m)
}

// Add adds m under the given name and returns s.
func (s *Sequential) Add(name string, m Module) *Sequential {
	s.AddChild(name, m)
	s.mods = append(s.mods, m)
	return s
}

// Len returns the number of modules.
func (s *Sequential) Len() int { return len(s.mods) }

// At returns the i-th module.
func (s *Sequential) At(i int) Module { return s.mods[i] }

// Forward returns mods[n−1](…mods[1](mods[0](x))); with no modules, x.
func (s *Sequential) Forward(x *tensor.Tensor) *tensor.Tensor {
	for _, m := range s.mods {
		x = m.Forward(x)
	}
	return x
}

// ModuleList holds modules of one type named "0", "1", …
// (torch.nn.ModuleList), for a model whose Forward iterates them itself.
// Its zero value is an empty list.
type ModuleList[M Module] struct {
	Base
	mods []M
}

// NewModuleList returns a list of mods named "0", "1", ….
func NewModuleList[M Module](mods ...M) *ModuleList[M] {
	l := &ModuleList[M]{}
	for _, m := range mods {
		l.Append(m)
	}
	return l
}

// Append adds m under the name of its index and returns it.
func (l *ModuleList[M]) Append(m M) M {
	l.AddChild(strconv.Itoa(len(l.mods)), m)
	l.mods = append(l.mods, m)
	return m
}

// Len returns the number of modules.
func (l *ModuleList[M]) Len() int { return len(l.mods) }

// At returns the i-th module.
func (l *ModuleList[M]) At(i int) M { return l.mods[i] }

// All returns the modules in order; the caller must not modify the slice.
func (l *ModuleList[M]) All() []M { return l.mods }

// Forward panics with a *tensor.ShapeError: a ModuleList, like PyTorch's,
// has no forward of its own; iterate All in the owner's Forward.
func (l *ModuleList[M]) Forward(x *tensor.Tensor) *tensor.Tensor {
	shapePanic("nn.ModuleList", "a ModuleList has no Forward; iterate its modules")
	return nil
}
