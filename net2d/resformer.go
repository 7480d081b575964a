package net2d

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// ResFormerSizes maps the size names of the registry ("resformer-ti",
// "resformer-s", "resformer-b") to embedding width D and heads, as
// resformer_{tiny,small,base}_patch16: Ti 192/3, S 384/6, B 768/12.
var ResFormerSizes = map[string][2]int{"ti": {192, 3}, "s": {384, 6}, "b": {768, 12}}

// ResFormerConfig holds the options of a ResFormer: the Config of the
// "resformer-*" architectures. Zero fields take the defaults of the
// reference constructor (patch 16, depth 12, no dropout or stochastic
// depth); its training recipe uses drop_path 0.1 (0.2 for B).
type ResFormerConfig struct {
	// Patch is the patch size p (patch_embed is a p×p convolution with
	// stride p); inputs must have H and W divisible by it.
	Patch int `json:"patch,omitempty"`
	// Depth is the number of transformer blocks.
	Depth int `json:"depth,omitempty"`
	// DropRate is the dropout after the positional embedding, after each
	// attention projection and inside each MLP (the reference's drop_rate).
	DropRate float64 `json:"drop_rate,omitempty"`
	// AttnDrop is the dropout on the attention weights.
	AttnDrop float64 `json:"attn_drop,omitempty"`
	// DropPath is the stochastic-depth rate of the last block; block i of
	// L uses DropPath·i/(L−1).
	DropPath float64 `json:"drop_path,omitempty"`
}

// GlobalPosEmbed is ResFormer's global positional embedding (key prefix
// "pos_embed"): for an h×w token grid, the sine-cosine map E (D×h×w) of
// normalised coordinates — with D' = D/2, y_r = 2π(r+1)/(h + 10⁻⁶),
// x_c = 2π(c+1)/(w + 10⁻⁶) and d_j = 10000^(2⌊j/2⌋/D'),
//
//	E[j, r, c]    = sin(y_r/d_j) for even j, cos(y_r/d_j) for odd j    (j < D')
//	E[D'+j, r, c] = sin(x_c/d_j) for even j, cos(x_c/d_j) for odd j
//
// — recomputed for every input size, passed through a learnable depthwise
// 3×3 convolution embed_layer (padding 1, with bias), flattened row-major
// and added to the patch tokens (the CLS token gets 0). The reference
// assumes square grids (h = w = √(N−1)); rows and columns are taken apart
// here, which is the same for squares.
type GlobalPosEmbed struct {
	nn.Base
	EmbedLayer *nn.Conv
	Dim        int
}

// SineCosineGrid returns the map E above, 1×dim×h×w, for an even dim/2.
func SineCosineGrid(dim, h, w int) *tensor.Tensor {
	half := dim / 2
	out := tensor.Zeros(1, dim, h, w)
	d := out.Data()
	// As the reference, in float32: positions and divisors are float32.
	for j := 0; j < half; j++ {
		div := float32(math.Pow(10000, float64(float32(2*(j/2))/float32(half))))
		for r := 0; r < h; r++ {
			y := float32(r+1) / (float32(h) + 1e-6) * float32(2*math.Pi)
			for c := 0; c < w; c++ {
				x := float32(c+1) / (float32(w) + 1e-6) * float32(2*math.Pi)
				vy, vx := float64(y/div), float64(x/div)
				if j%2 == 0 {
					d[(j*h+r)*w+c] = float32(math.Sin(vy))
					d[((half+j)*h+r)*w+c] = float32(math.Sin(vx))
				} else {
					d[(j*h+r)*w+c] = float32(math.Cos(vy))
					d[((half+j)*h+r)*w+c] = float32(math.Cos(vx))
				}
			}
		}
	}
	return out
}

// Embedding returns the positional embedding of an h×w grid with a zero
// CLS row in front, 1×(1+h·w)×D.
func (g *GlobalPosEmbed) Embedding(h, w int) *tensor.Tensor {
	e := g.EmbedLayer.Forward(SineCosineGrid(g.Dim, h, w))
	e = tensor.Transpose(tensor.Reshape(e, 1, g.Dim, h*w), 1, 2)
	return tensor.Concat(1, tensor.Zeros(1, 1, g.Dim), e)
}

// Forward panics: the embedding needs the token grid; see Embedding.
func (g *GlobalPosEmbed) Forward(x *tensor.Tensor) *tensor.Tensor {
	panic(&tensor.ShapeError{Op: "net2d.GlobalPosEmbed", Msg: "use Embedding(h, w): the grid size is needed"})
}

// Attention is ResFormer's multi-head self-attention with the local
// positional embedding (key prefix "attn"): with q, k, v = split(qkv(x))
// per head (N×heads×T×d, d = D/heads),
//
//	out = proj( softmax(q·kᵀ/√d)·v + L(v) )
//
// where L(v) applies the depthwise 3×3 convolution get_v (d channels,
// padding 1, with bias, shared by the heads, initialised to zero) to each
// head's patch values arranged as a d×h×w map, and is 0 at the CLS token.
// Keys: qkv.{weight,bias}, proj.{weight,bias}, get_v.{weight,bias}.
type Attention struct {
	nn.Base
	QKV      *nn.Linear
	AttnDrop *nn.Dropout
	Proj     *nn.Linear
	ProjDrop *nn.Dropout
	GetV     *nn.Conv
	Heads    int
}

// Attend returns the attention output for tokens x (N×T×D, T = 1+h·w).
func (a *Attention) Attend(x *tensor.Tensor, h, w int) *tensor.Tensor {
	n, t, dim := x.Size(0), x.Size(1), x.Size(2)
	hd := dim / a.Heads
	qkv := tensor.Permute(tensor.Reshape(a.QKV.Forward(x), n, t, 3, a.Heads, hd), 2, 0, 3, 1, 4)
	part := func(i int) *tensor.Tensor {
		return tensor.Reshape(tensor.Slice(qkv, 0, i, i+1), n, a.Heads, t, hd)
	}
	q, k, v := part(0), part(1), part(2)
	att := tensor.MulScalar(tensor.MatMul(q, tensor.Transpose(k, 2, 3)), float32(1/math.Sqrt(float64(hd))))
	att = a.AttnDrop.Forward(tensor.Softmax(att, 3))
	out := tensor.MatMul(att, v)
	lv := tensor.Transpose(tensor.Slice(v, 2, 1, t), 2, 3) // N×heads×d×hw
	local := a.GetV.Forward(tensor.Reshape(lv, n*a.Heads, hd, h, w))
	local = tensor.Transpose(tensor.Reshape(local, n, a.Heads, hd, h*w), 2, 3)
	local = tensor.Concat(2, tensor.Zeros(n, a.Heads, 1, hd), local)
	out = tensor.Reshape(tensor.Transpose(tensor.Add(out, local), 1, 2), n, t, dim)
	return a.ProjDrop.Forward(a.Proj.Forward(out))
}

// Forward panics: attention needs the token grid; see Attend.
func (a *Attention) Forward(x *tensor.Tensor) *tensor.Tensor {
	panic(&tensor.ShapeError{Op: "net2d.Attention", Msg: "use Attend(x, h, w): the grid size is needed"})
}

// MLP is the transformer's feed-forward part, fc2(drop(GELU(fc1(x)))) then
// dropout (timm's Mlp; keys fc1, fc2).
type MLP struct {
	nn.Base
	FC1, FC2 *nn.Linear
	Drop     *nn.Dropout
}

// Forward returns drop(fc2(drop(GELU(fc1(x))))).
func (m *MLP) Forward(x *tensor.Tensor) *tensor.Tensor {
	return m.Drop.Forward(m.FC2.Forward(m.Drop.Forward(tensor.GELU(m.FC1.Forward(x)))))
}

// ViTBlock is a pre-norm transformer block (key prefix "blocks.i"):
// x + droppath(attn(norm1(x))), then + droppath(mlp(norm2(x))), LayerNorms
// with eps 10⁻⁶. Keys: norm1, attn.*, norm2, mlp.*.
type ViTBlock struct {
	nn.Base
	Norm1    *nn.LayerNorm
	Attn     *Attention
	DropPath *nn.StochasticDepth
	Norm2    *nn.LayerNorm
	MLP      *MLP
}

// Forward panics: a block needs the token grid; see ResFormer.Features.
func (b *ViTBlock) Forward(x *tensor.Tensor) *tensor.Tensor {
	panic(&tensor.ShapeError{Op: "net2d.ViTBlock", Msg: "run through ResFormer.Features: the grid size is needed"})
}

// ResFormer is the ResFormer ViT ("resformer-ti", "-s", "-b"): a p×p
// stride-p patch embedding, a learnable CLS token in front, the global
// positional embedding, Depth pre-norm blocks with the local positional
// embedding in their attention, a final LayerNorm and a linear head on the
// CLS token. It takes N×C×H×W for any H and W divisible by p. Keys, as the
// reference: cls_token, patch_embed.proj.*, pos_embed.embed_layer.*,
// blocks.i.{norm1,attn.qkv,attn.proj,attn.get_v,norm2,mlp.fc1,mlp.fc2}.*,
// norm.*, head.*.
type ResFormer struct {
	nn.Base
	ClsToken   *tensor.Tensor // 1×1×D
	PatchEmbed *nn.Sequential // "patch_embed", its child "proj"
	PatchProj  *nn.Conv
	PosEmbed   *GlobalPosEmbed
	PosDrop    *nn.Dropout
	Blocks     *nn.ModuleList[*ViTBlock]
	Norm       *nn.LayerNorm
	HeadFC     *nn.Linear // "head"
	Dim, Patch int
	spec       Spec
}

// NewResFormer returns a ResFormer of the given size ("ti", "s" or "b")
// for inChannels inputs and classes outputs, initialised as the
// reference: the CLS token and every Linear weight (head included)
// trunc-normal with std 0.02 in [−2, 2], Linear biases 0, LayerNorms 1 and
// 0, get_v 0, the other convolutions PyTorch's default. A nil rng draws
// nothing.
func NewResFormer(rng *rand.Rand, size string, inChannels, classes int, cfg ResFormerConfig) (*ResFormer, error) {
	dh, ok := ResFormerSizes[size]
	if !ok {
		return nil, fmt.Errorf("resformer: size %q (want ti, s or b)", size)
	}
	if cfg.Patch == 0 {
		cfg.Patch = 16
	}
	if cfg.Depth == 0 {
		cfg.Depth = 12
	}
	switch {
	case cfg.Patch < 1 || cfg.Depth < 1:
		return nil, fmt.Errorf("resformer: patch %d and depth %d must be positive", cfg.Patch, cfg.Depth)
	case !(cfg.DropRate >= 0 && cfg.DropRate < 1), !(cfg.AttnDrop >= 0 && cfg.AttnDrop < 1), !(cfg.DropPath >= 0 && cfg.DropPath < 1):
		return nil, fmt.Errorf("resformer: drop_rate %v, attn_drop %v, drop_path %v (each must be in [0, 1))", cfg.DropRate, cfg.AttnDrop, cfg.DropPath)
	}
	dim, heads := dh[0], dh[1]
	hd := dim / heads
	dr := dropRng(rng)
	linear := func(in, out int) *nn.Linear {
		l := nn.NewLinear(rng, in, out, true)
		nn.TruncNormal(rng, l.Weight, 0, 0.02, -2, 2)
		nn.Zeros(l.Bias)
		return l
	}
	r := &ResFormer{Dim: dim, Patch: cfg.Patch}
	r.ClsToken = r.Param("cls_token", tensor.Zeros(1, 1, dim))
	nn.TruncNormal(rng, r.ClsToken, 0, 0.02, -2, 2)
	r.PatchEmbed = nn.Child(r, "patch_embed", nn.NewSequential())
	r.PatchProj = nn.NewConv(rng, inChannels, dim, []int{cfg.Patch, cfg.Patch}, nn.ConvOpts{Stride: []int{cfg.Patch}})
	r.PatchEmbed.Add("proj", r.PatchProj)
	r.PosEmbed = nn.Child(r, "pos_embed", &GlobalPosEmbed{Dim: dim})
	r.PosEmbed.EmbedLayer = nn.Child(r.PosEmbed, "embed_layer", nn.NewConv(rng, dim, dim, []int{3, 3}, nn.ConvOpts{Padding: []int{1}, Groups: dim}))
	r.PosDrop = nn.Child(r, "pos_drop", nn.NewDropout(float32(cfg.DropRate), dr))
	r.Blocks = nn.Child(r, "blocks", nn.NewModuleList[*ViTBlock]())
	for i := 0; i < cfg.Depth; i++ {
		p := 0.0
		if cfg.Depth > 1 {
			p = cfg.DropPath * float64(i) / float64(cfg.Depth-1)
		}
		b := &ViTBlock{}
		b.Norm1 = nn.Child(b, "norm1", nn.NewLayerNorm([]int{dim}, 1e-6))
		a := &Attention{Heads: heads}
		a.QKV = nn.Child(a, "qkv", linear(dim, 3*dim))
		a.AttnDrop = nn.Child(a, "attn_drop", nn.NewDropout(float32(cfg.AttnDrop), dr))
		a.Proj = nn.Child(a, "proj", linear(dim, dim))
		a.ProjDrop = nn.Child(a, "proj_drop", nn.NewDropout(float32(cfg.DropRate), dr))
		a.GetV = nn.Child(a, "get_v", nn.NewConv(rng, hd, hd, []int{3, 3}, nn.ConvOpts{Padding: []int{1}, Groups: hd}))
		nn.Zeros(a.GetV.Weight)
		nn.Zeros(a.GetV.Bias)
		b.Attn = nn.Child(b, "attn", a)
		b.DropPath = nn.Child(b, "drop_path", nn.NewStochasticDepth(float32(p), false, dr))
		b.Norm2 = nn.Child(b, "norm2", nn.NewLayerNorm([]int{dim}, 1e-6))
		m := &MLP{}
		m.FC1 = nn.Child(m, "fc1", linear(dim, 4*dim))
		m.Drop = nn.Child(m, "drop", nn.NewDropout(float32(cfg.DropRate), dr))
		m.FC2 = nn.Child(m, "fc2", linear(4*dim, dim))
		b.MLP = nn.Child(b, "mlp", m)
		r.Blocks.Append(b)
	}
	r.Norm = nn.Child(r, "norm", nn.NewLayerNorm([]int{dim}, 1e-6))
	r.HeadFC = nn.Child(r, "head", linear(dim, classes))
	r.spec = Spec{Arch: "resformer-" + size, InChannels: inChannels, Classes: classes, Config: mustJSON(cfg)}
	return r, nil
}

// Features returns the final-normed tokens channel-first, N×D×(1+h·w) with
// the CLS token at index 0 and patch (r, c) at 1 + r·w + c, for x of shape
// N×C×H×W with h = H/p, w = W/p. tap sees, for each block i,
// "blocks.i.norm1": the normalised block input's patch tokens as a map
// N×D×h×w (the attention's input; replacing it, e.g. to take gradients,
// changes what the attention reads, and a replacement whose batch is r·N
// makes the rest of the network run on r copies of the batch), then
// "norm", the returned tensor.
func (r *ResFormer) Features(x *tensor.Tensor, tap Tap) *tensor.Tensor {
	checkInput("net2d.ResFormer", x, r.spec.InChannels)
	if x.Size(2)%r.Patch != 0 || x.Size(3)%r.Patch != 0 {
		panic(&tensor.ShapeError{Op: "net2d.ResFormer", Msg: fmt.Sprintf("input of shape %v: H and W must be multiples of the patch size %d", x.Shape(), r.Patch)})
	}
	p := r.PatchProj.Forward(x)
	n, h, w := p.Size(0), p.Size(2), p.Size(3)
	tok := tensor.Transpose(tensor.Reshape(p, n, r.Dim, h*w), 1, 2)
	tok = tensor.Concat(1, repeat(r.ClsToken, n), tok)
	tok = r.PosDrop.Forward(tensor.Add(tok, r.PosEmbed.Embedding(h, w)))
	for i, b := range r.Blocks.All() {
		y := b.Norm1.Forward(tok)
		if tap != nil {
			y, tok = tapTokens(tap, fmt.Sprintf("blocks.%d.norm1", i), y, tok, h, w)
		}
		tok = tensor.Add(tok, b.DropPath.Forward(b.Attn.Attend(y, h, w)))
		tok = tensor.Add(tok, b.DropPath.Forward(b.MLP.Forward(b.Norm2.Forward(tok))))
	}
	out := tensor.Transpose(r.Norm.Forward(tok), 1, 2)
	return callTap(tap, "norm", out)
}

// tapTokens shows tap the patch tokens of y (N×T×D) as a map N×D×h×w and
// rebuilds the tokens from its answer; when the answer has r·N items, the
// CLS token and the residual stream res are repeated r times to match.
func tapTokens(tap Tap, name string, y, res *tensor.Tensor, h, w int) (*tensor.Tensor, *tensor.Tensor) {
	n, t, d := y.Size(0), y.Size(1), y.Size(2)
	cls := tensor.Slice(y, 1, 0, 1)
	m := tensor.Reshape(tensor.Transpose(tensor.Slice(y, 1, 1, t), 1, 2), n, d, h, w)
	m = tap(name, m)
	if m.Dim() != 4 || m.Size(0)%n != 0 || m.Size(1) != d || m.Size(2) != h || m.Size(3) != w {
		panic(&tensor.ShapeError{Op: "net2d.ResFormer", Msg: fmt.Sprintf("tap %s returned shape %v for a %d×%d×%d×%d map", name, m.Shape(), n, d, h, w)})
	}
	if k := m.Size(0) / n; k > 1 {
		cls = tensor.Concat(0, repeatList(cls, k)...)
		res = tensor.Concat(0, repeatList(res, k)...)
		n *= k
	}
	p := tensor.Transpose(tensor.Reshape(m, n, d, h*w), 1, 2)
	return tensor.Concat(1, cls, p), res
}

// repeat returns t (1×…) repeated n times along axis 0.
func repeat(t *tensor.Tensor, n int) *tensor.Tensor {
	if n == 1 {
		return t
	}
	return tensor.Concat(0, repeatList(t, n)...)
}

func repeatList(t *tensor.Tensor, n int) []*tensor.Tensor {
	ts := make([]*tensor.Tensor, n)
	for i := range ts {
		ts[i] = t
	}
	return ts
}

// Pool returns the CLS token of the Features output, N×D: the pre-logit
// feature (the reference's distillation target "cls").
func (r *ResFormer) Pool(f *tensor.Tensor) *tensor.Tensor {
	return tensor.Reshape(tensor.Slice(f, 2, 0, 1), f.Size(0), f.Size(1))
}

// Head returns head(Pool(f)).
func (r *ResFormer) Head(f *tensor.Tensor) *tensor.Tensor { return r.HeadFC.Forward(r.Pool(f)) }

// Forward returns the logits N×K for x (N×C×H×W).
func (r *ResFormer) Forward(x *tensor.Tensor) *tensor.Tensor { return r.Head(r.Features(x, nil)) }

// ForwardCLS returns the logits N×K and the CLS feature N×D (the input of
// the head) for x: the two outputs multi-resolution training needs.
func (r *ResFormer) ForwardCLS(x *tensor.Tensor) (logits, cls *tensor.Tensor) {
	cls = r.Pool(r.Features(x, nil))
	return r.HeadFC.Forward(cls), cls
}

// Linear returns head.
func (r *ResFormer) Linear() *nn.Linear { return r.HeadFC }

// TapLayers returns blocks.0.norm1 … blocks.{L−1}.norm1, norm.
func (r *ResFormer) TapLayers() []string {
	out := make([]string, 0, r.Blocks.Len()+1)
	for i := 0; i < r.Blocks.Len(); i++ {
		out = append(out, fmt.Sprintf("blocks.%d.norm1", i))
	}
	return append(out, "norm")
}

// CAMLayer returns "blocks.{L−1}.norm1", the input of the last attention:
// the last place where the patch tokens still reach the CLS token (the
// gradient of the logits with respect to the final patch tokens is zero).
func (r *ResFormer) CAMLayer() string { return fmt.Sprintf("blocks.%d.norm1", r.Blocks.Len()-1) }

// Spec returns the network's architecture description.
func (r *ResFormer) Spec() Spec { return r.spec }

// NoWeightDecay reports whether the reference exempts the named parameter
// from weight decay: names containing pos_embed, get_v or cls_token.
func (r *ResFormer) NoWeightDecay(name string) bool {
	return strings.Contains(name, "pos_embed") || strings.Contains(name, "get_v") || strings.Contains(name, "cls_token")
}

func init() {
	for _, size := range []string{"ti", "s", "b"} {
		dh := ResFormerSizes[size]
		Register(Entry{
			Name: "resformer-" + size, Family: "resformer",
			Description: fmt.Sprintf("ResFormer-%s (Tian et al. 2023), ViT D=%d, %d heads, depth 12, patch 16, global-local positional embedding, any input size divisible by the patch", map[string]string{"ti": "Ti", "s": "S", "b": "B"}[size], dh[0], dh[1]),
			DefaultSpec: Spec{Arch: "resformer-" + size, InChannels: 3, Classes: 1000},
			Build: func(s Spec, rng *rand.Rand) (Classifier, error) {
				var cfg ResFormerConfig
				if err := DecodeConfig(s, &cfg); err != nil {
					return nil, err
				}
				return NewResFormer(rng, size, s.InChannels, s.Classes, cfg)
			},
		})
	}
}
