package net3d

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// TestBuildReportsSpecErrors checks that errors from a family's builder and
// from the spec reach the caller.
func TestBuildReportsSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{Arch: "no-such-net", InChannels: 1, Classes: 2}, "unknown architecture"},
		{Spec{Arch: "resnet3d-18", InChannels: 0, Classes: 2}, "in_channels"},
		{Spec{Arch: "resnet3d-18", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"shortcut":"C"}`)}, "shortcut"},
		{Spec{Arch: "resnet3d-18", InChannels: 1, Classes: 2, Config: json.RawMessage(`{"no_such_field":1}`)}, "no_such_field"},
	} {
		c, err := Build(tc.spec, 1)
		if err == nil || c != nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Build(%+v) = %v, %v; want an error mentioning %q", tc.spec, c, err, tc.want)
		}
	}
}

// TestBuildShapesMatchesBuild checks that every registered architecture
// builds without drawing weights, with the same state-dict names and shapes
// as a seeded build.
func TestBuildShapesMatchesBuild(t *testing.T) {
	for _, e := range Entries() {
		spec := e.DefaultSpec
		if strings.Contains(e.Name, "200") || strings.Contains(e.Name, "152") || strings.Contains(e.Name, "264") || strings.Contains(e.Name, "101") || strings.Contains(e.Name, "34") || strings.Contains(e.Name, "201") {
			continue // the seeded build of the largest ones is slow; same code paths as smaller depths
		}
		a, err := BuildShapes(spec)
		if err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		b, err := Build(spec, 1)
		if err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		sa, sb := nn.StateDict(a), nn.StateDict(b)
		if len(sa) != len(sb) {
			t.Fatalf("%s: %d vs %d tensors", e.Name, len(sa), len(sb))
		}
		for i := range sa {
			if sa[i].Name != sb[i].Name || !tensor.SameShape(sa[i].Tensor.Shape(), sb[i].Tensor.Shape()) {
				t.Fatalf("%s: tensor %d: %s %v vs %s %v", e.Name, i, sa[i].Name, sa[i].Tensor.Shape(), sb[i].Name, sb[i].Tensor.Shape())
			}
		}
	}
}
