package cam

import (
	"fmt"
	"math"
	"testing"

	"github.com/ctlens/ctlens/tensor"
)

// closeTo checks |got − want| ≤ tol·max|want| + 1e-6 elementwise and the
// shapes; it returns the largest difference relative to max|want|.
func closeTo(t *testing.T, name string, got, want *tensor.Tensor, tol float64) float64 {
	t.Helper()
	if want == nil {
		t.Fatalf("%s: golden tensor missing", name)
	}
	if !tensor.SameShape(got.Shape(), want.Shape()) {
		t.Fatalf("%s: shape %v, want %v", name, got.Shape(), want.Shape())
	}
	scale := 0.0
	for _, v := range want.Data() {
		scale = math.Max(scale, math.Abs(float64(v)))
	}
	worst, at := 0.0, 0
	for i, v := range want.Data() {
		if d := math.Abs(float64(got.Data()[i]) - float64(v)); d > worst {
			worst, at = d, i
		}
	}
	if worst > tol*scale+1e-6 {
		t.Errorf("%s: element %d is %v, want %v (max |diff| %.3g, scale %.3g)", name, at, got.Data()[at], want.Data()[at], worst, scale)
	}
	return worst / math.Max(scale, 1e-30)
}

// TestGoldenMaps compares raw, upsampled and MONAI-normalised maps with the
// PyTorch reference of testdata/pytorch/golden_cam.py: Grad-CAM and
// Grad-CAM++ at an inner layer (layer2, stride 2) and the last one, CAM
// with and without the bias, for each item's argmax class and for two
// classes requested together.
func TestGoldenMaps(t *testing.T) {
	net, g := loadGolden(t)
	x := g["x"]
	size := x.Shape()[2:]
	argmax := g["classes/argmax"].Data()
	type tc struct {
		name   string
		method Method
		layer  string
		bias   bool
		key    string
	}
	cases := []tc{
		{"gradcam-layer2", GradCAM, "layer2", false, "gradcam/layer2"},
		{"gradcam-layer3", GradCAM, "layer3", false, "gradcam/layer3"},
		{"gradcampp-layer2", GradCAMpp, "layer2", false, "gradcampp/layer2"},
		{"gradcampp-layer3", GradCAMpp, "", false, "gradcampp/layer3"},
		{"cam-bias", CAM, "layer3", true, "cam/bias"},
		{"cam-nobias", CAM, "", false, "cam/nobias"},
	}
	worst := 0.0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, choice := range []struct {
				classes []int
				keys    []string
			}{{nil, []string{"argmax"}}, {[]int{1, 0}, []string{"c1", "c0"}}} {
				res, err := Compute(net, x, Options{Method: c.method, Layer: c.layer, Classes: choice.classes, CAMBias: c.bias})
				if err != nil {
					t.Fatal(err)
				}
				closeTo(t, "logits", res.Logits, g["logits"], 1e-5)
				if len(res.Maps) != len(choice.keys) {
					t.Fatalf("%d maps, want %d", len(res.Maps), len(choice.keys))
				}
				for k, mp := range res.Maps {
					ck := choice.keys[k]
					wantCls := g["classes/"+ck].Data()
					for i, cl := range mp.Classes {
						if float32(cl) != wantCls[i] {
							t.Errorf("%s: item %d class %d, want %v", ck, i, cl, wantCls[i])
						}
						if ck == "argmax" && float32(cl) != argmax[i] {
							t.Errorf("argmax item %d: %d", i, cl)
						}
						if mp.Scores[i] != res.Logits.At(i, cl) {
							t.Errorf("%s: item %d score %v, logit %v", ck, i, mp.Scores[i], res.Logits.At(i, cl))
						}
					}
					base := fmt.Sprintf("%s/%s/", c.key, ck)
					worst = math.Max(worst, closeTo(t, base+"raw", mp.Raw, g[base+"raw"], 1e-4))
					up, err := Upsample(mp.Raw, size)
					if err != nil {
						t.Fatal(err)
					}
					worst = math.Max(worst, closeTo(t, base+"up", up, g[base+"up"], 1e-4))
					// MONAI's default normaliser, per batch item.
					n := up.Size(0)
					per := up.Len() / n
					for i := 0; i < n; i++ {
						if err := Normalize(up.Data()[i*per:(i+1)*per], MinMaxInverted); err != nil {
							t.Fatal(err)
						}
					}
					closeTo(t, base+"norm", up, g[base+"norm"], 1e-4)
				}
			}
		})
	}
	t.Logf("largest difference from PyTorch relative to the map's peak: %.3g", worst)
}
