package net3d

import (
	"encoding/json"
	"strings"
	"testing"
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
