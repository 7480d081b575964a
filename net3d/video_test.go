package net3d

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// TestVideoGolden compares r3d_18, mc3_18 (fc without bias) and
// r2plus1d_18, with a 1-channel stem and 3 classes, with torchvision's
// (testdata/pytorch/golden_resnet3d.py): state-dict keys and shapes in
// order, every tap and the logits in eval mode.
func TestVideoGolden(t *testing.T) {
	for _, name := range []string{"r3d_18", "mc3_18", "r2plus1d_18"} {
		t.Run(name, func(t *testing.T) { checkGolden(t, name) })
	}
}

// TestVideoParamCounts checks parameter counts against torchvision's
// metadata (400 classes, 3 channels) and the CovidNet3D MC3_18 baseline
// (3 channels, 3 classes, fc without bias; reference-models.md §1.4, §4.2),
// and torchvision's initialisation.
func TestVideoParamCounts(t *testing.T) {
	for _, tc := range []struct {
		arch    string
		classes int
		cfg     string
		want    int
	}{
		{"r3d_18", 400, ``, 33_371_472},
		{"mc3_18", 400, ``, 11_695_440},
		{"r2plus1d_18", 400, ``, 31_505_325},
		{"mc3_18", 3, `{"fc_bias":false}`, 11_491_776},
	} {
		net, err := Build(Spec{Arch: tc.arch, InChannels: 3, Classes: tc.classes, Config: json.RawMessage(tc.cfg)}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if n := nn.NumParams(net); n != tc.want {
			t.Errorf("%s, %d classes %s: %d parameters, want %d", tc.arch, tc.classes, tc.cfg, n, tc.want)
		}
		v := net.(*VideoResNet)
		if (v.FC.Bias != nil) != !strings.Contains(tc.cfg, "false") {
			t.Errorf("%s %s: fc bias %v", tc.arch, tc.cfg, v.FC.Bias != nil)
		}
		if tc.arch != "r3d_18" {
			continue
		}
		// Kaiming normal, fan_out, ReLU gain; Linear N(0, 0.01²), bias 0.
		l4 := v.Layers[3].At(1).(*VideoBasicBlock)
		checkMoments(t, "layer4.1.conv1.0.weight", l4.Conv1.At(0).(*nn.Conv).Weight, 0, math.Sqrt(2.0/(512*27)), 0.02)
		checkMoments(t, "fc.weight", v.FC.Weight, 0, 0.01, 0.03)
		for _, b := range v.FC.Bias.Data() {
			if b != 0 {
				t.Fatalf("fc.bias has %v", b)
			}
		}
		bn := l4.Conv2.At(1).(*nn.BatchNorm)
		for i := range bn.Channels {
			if bn.Weight.At(i) != 1 || bn.Bias.At(i) != 0 {
				t.Fatalf("layer4.1.conv2.1: weight %v bias %v", bn.Weight.At(i), bn.Bias.At(i))
			}
		}
	}
}

// TestVideoMidplanes checks the (2+1)D widths against torchvision's
// per-block values (reference-models.md §4.1) and the built r2plus1d_18.
func TestVideoMidplanes(t *testing.T) {
	for _, tc := range []struct{ in, planes, want int }{
		{64, 64, 144}, {64, 128, 230}, {128, 128, 288}, {128, 256, 460},
		{256, 256, 576}, {256, 512, 921}, {512, 512, 1152},
	} {
		if got := VideoMidplanes(tc.in, tc.planes); got != tc.want {
			t.Errorf("VideoMidplanes(%d, %d) = %d, want %d", tc.in, tc.planes, got, tc.want)
		}
	}
	net, err := NewR2Plus1D18(rand.New(rand.NewPCG(1, 2)), 1, 2, DefaultVideoConfig())
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string][]int{}
	for _, p := range nn.StateDict(net) {
		shapes[p.Name] = p.Tensor.Shape()
	}
	for key, want := range map[string][]int{
		"stem.0.weight":                  {45, 1, 1, 7, 7},
		"stem.3.weight":                  {64, 45, 3, 1, 1},
		"layer4.0.conv1.0.0.weight":      {921, 256, 1, 3, 3},
		"layer4.0.conv1.0.3.weight":      {512, 921, 3, 1, 1},
		"layer4.0.conv2.0.0.weight":      {921, 512, 1, 3, 3},
		"layer4.1.conv2.0.1.running_var": {1152},
		"layer2.0.downsample.0.weight":   {128, 64, 1, 1, 1},
	} {
		if !tensor.SameShape(shapes[key], want) {
			t.Errorf("%s: shape %v, want %v", key, shapes[key], want)
		}
	}
}

func TestVideoBadSpecs(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{Arch: "mc3_18", InChannels: 1, Classes: 3, Config: json.RawMessage(`{"bias":false}`)}, `unknown field "bias"`},
		{Spec{Arch: "r3d_18", InChannels: 1, Classes: 3, Config: json.RawMessage(`{"dropout":-0.1}`)}, "dropout -0.1"},
		{Spec{Arch: "r2plus1d_18", InChannels: 0, Classes: 3}, "in_channels 0"},
	} {
		_, err := buildEntry(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: error %v, want one mentioning %q", tc.spec.Arch, tc.spec.Config, err, tc.want)
		}
	}
	for _, name := range []string{"r3d_18", "mc3_18", "r2plus1d_18"} {
		e, ok := Lookup(name)
		if !ok || e.Family != "torchvision-video" || e.DefaultSpec.Arch != name {
			t.Errorf("%s: registry entry %+v, %v", name, e, ok)
		}
	}
}
