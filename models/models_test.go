package models_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/ctlens/ctlens/models"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn/safetensors"
	"github.com/ctlens/ctlens/volume"
)

// TestDefaultCheckpoint checks that the embedded file is a ctlens
// checkpoint with everything scoring reads: the covidnet3d-small spec for
// one channel and the three phantom classes, their names, a valid
// pipeline and the input size.
func TestDefaultCheckpoint(t *testing.T) {
	if n := len(models.Default); n < 1000 || n > 16<<20 {
		t.Fatalf("default checkpoint is %d bytes", n)
	}
	f, err := safetensors.Decode(models.Default)
	if err != nil {
		t.Fatal(err)
	}
	var spec net3d.Spec
	if err := json.Unmarshal([]byte(f.Metadata[net3d.MetaSpec]), &spec); err != nil {
		t.Fatalf("%s: %v", net3d.MetaSpec, err)
	}
	if spec.Arch != "covidnet3d-small" || spec.InChannels != 1 || spec.Classes != 3 {
		t.Errorf("spec %+v", spec)
	}
	var classes []string
	if err := json.Unmarshal([]byte(f.Metadata[net3d.MetaClassNames]), &classes); err != nil || !reflect.DeepEqual(classes, []string{"CP", "NCP", "Normal"}) {
		t.Errorf("class names %q: %v", f.Metadata[net3d.MetaClassNames], err)
	}
	if _, err := volume.ParsePipeline([]byte(f.Metadata["ctlens.pipeline"])); err != nil {
		t.Errorf("pipeline: %v", err)
	}
	var input [3]int
	if err := json.Unmarshal([]byte(f.Metadata["ctlens.input"]), &input); err != nil || input[0] < 1 || input[1] < 1 || input[2] < 1 {
		t.Errorf("input %q: %v", f.Metadata["ctlens.input"], err)
	}
	if len(f.Tensors) == 0 {
		t.Error("no tensors")
	}
}
