#!/usr/bin/python3
"""Writes tensor/testdata/golden_ops.safetensors: PyTorch reference values
for the tensor package's ops, checked by tensor/golden_test.go.

For each case it stores, under "<case>/<key>": the inputs, the output
("out"), a fixed random projection of the output's shape ("proj") and the
gradients of sum(out * proj) with respect to the inputs ("grad_<key>"),
plus any extra results (a batch norm's updated running statistics). The
metadata entry "cases" is a JSON list of {name, op, params, inputs, grads,
extra} that tells the Go test how to call each op.

Run from the repository root with Debian's PyTorch (float32 throughout,
seeded, single-threaded, so the file is reproducible):

    /usr/bin/python3 testdata/pytorch/golden_ops.py
"""

import json
import os
import sys

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stfile  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tensor", "testdata", "golden_ops.safetensors")

torch.manual_seed(20240601)
torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)

cases = []
tensors = []


def add(name, op, params, inputs, grads, fn, extra=None):
    """Runs fn on leaf copies of inputs (those named in grads require
    gradients), backpropagates sum(out * proj) and records everything.
    extra, if given, maps names to tensors read after the forward pass."""
    leaves = {}
    for k, v in inputs.items():
        t = v.detach().clone()
        if k in grads:
            t.requires_grad_(True)
        leaves[k] = t
    for k, v in leaves.items():
        tensors.append(stfile.f32(f"{name}/{k}", v.detach().numpy()))
    out = fn(**leaves)
    proj = torch.randn(out.shape)
    if grads:
        (out * proj).sum().backward()
    tensors.append(stfile.f32(f"{name}/out", out.detach().numpy()))
    tensors.append(stfile.f32(f"{name}/proj", proj.numpy()))
    for k in grads:
        tensors.append(stfile.f32(f"{name}/grad_{k}", leaves[k].grad.numpy()))
    ex = extra(leaves) if extra else {}
    for k, v in ex.items():
        tensors.append(stfile.f32(f"{name}/{k}", v.detach().numpy()))
    cases.append({"name": name, "op": op, "params": params, "inputs": list(inputs), "grads": list(grads), "extra": list(ex)})


def rn(*shape):
    return torch.randn(*shape)


# ---- convolution -------------------------------------------------------------


def conv_case(name, x, w, bias, stride, padding, dilation, groups):
    fn = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.dim()]
    inputs = {"x": x, "w": w}
    if bias:
        inputs["b"] = rn(w.shape[0])
    params = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}

    def f(x, w, b=None):
        return fn(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    add(name, "conv", params, inputs, list(inputs), f)


conv_case("conv1d_basic", rn(2, 3, 8), rn(4, 3, 3), True, [1], [0], [1], 1)
conv_case("conv1d_s2_p1_d2_g2", rn(2, 4, 11), rn(6, 2, 3), True, [2], [1], [2], 2)
conv_case("conv1d_depthwise", rn(1, 3, 9), rn(3, 1, 5), False, [1], [2], [1], 3)
conv_case("conv2d_s21_p12_d12", rn(2, 3, 9, 8), rn(4, 3, 3, 3), True, [2, 1], [1, 2], [1, 2], 1)
conv_case("conv2d_groups2", rn(1, 4, 7, 7), rn(6, 2, 3, 3), True, [1, 1], [1, 1], [1, 1], 2)
conv_case("conv2d_depthwise_s2", rn(2, 4, 8, 8), rn(4, 1, 3, 3), True, [2, 2], [1, 1], [1, 1], 4)
conv_case("conv2d_depthwise_mult2", rn(1, 3, 6, 7), rn(6, 1, 3, 3), False, [1, 1], [1, 1], [2, 1], 3)
conv_case("conv2d_pointwise", rn(2, 5, 4, 3), rn(3, 5, 1, 1), False, [1, 1], [0, 0], [1, 1], 1)
conv_case("conv2d_k5_s3_p2", rn(1, 2, 11, 10), rn(3, 2, 5, 4), True, [3, 2], [2, 1], [1, 1], 1)
conv_case("conv3d_s121_p101_d211", rn(1, 3, 6, 7, 5), rn(4, 3, 3, 3, 3), True, [1, 2, 1], [1, 0, 1], [2, 1, 1], 1)
conv_case("conv3d_depthwise_s2", rn(2, 4, 5, 6, 6), rn(4, 1, 3, 3, 3), True, [2, 2, 2], [1, 1, 1], [1, 1, 1], 4)
conv_case("conv3d_groups2_k133", rn(1, 4, 4, 6, 5), rn(6, 2, 1, 3, 3), True, [1, 1, 1], [0, 1, 1], [1, 1, 1], 2)
conv_case("conv3d_k311_s2", rn(2, 3, 7, 4, 4), rn(2, 3, 3, 1, 1), False, [2, 1, 1], [1, 0, 0], [1, 1, 1], 1)
conv_case("conv3d_stem_k7_s2_p3", rn(1, 2, 9, 10, 8), rn(3, 2, 7, 7, 7), True, [2, 2, 2], [3, 3, 3], [1, 1, 1], 1)

# ---- normalisation -------------------------------------------------------------


def bn_case(name, shape, training, affine, momentum=0.1, eps=1e-5):
    c = shape[1]
    inputs = {"x": rn(*shape) * 2 + 0.5, "rm": rn(c) * 0.1, "rv": torch.rand(c) + 0.5}
    if affine:
        inputs["w"] = rn(c)
        inputs["b"] = rn(c)
    grads = ["x", "w", "b"] if affine else ["x"]
    params = {"training": training, "momentum": momentum, "eps": eps}

    def f(x, rm, rv, w=None, b=None):
        return F.batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=eps)

    extra = (lambda lv: {"rm_out": lv["rm"], "rv_out": lv["rv"]}) if training else None
    add(name, "batch_norm", params, inputs, grads, f, extra)


bn_case("batch_norm2d_train", (4, 3, 5, 6), True, True)
bn_case("batch_norm3d_train", (2, 3, 4, 3, 5), True, True, momentum=0.2, eps=1e-3)
bn_case("batch_norm1d_train_noaffine", (8, 5), True, False)
bn_case("batch_norm2d_eval", (3, 4, 3, 5), False, True)
bn_case("batch_norm3d_eval", (2, 3, 3, 4, 2), False, True)


def ln_case(name, shape, norm_dims, affine, eps=1e-5):
    ns = shape[len(shape) - norm_dims :]
    inputs = {"x": rn(*shape) * 1.5 - 0.3}
    if affine:
        inputs["w"] = rn(*ns)
        inputs["b"] = rn(*ns)

    def f(x, w=None, b=None):
        return F.layer_norm(x, ns, w, b, eps)

    add(name, "layer_norm", {"norm_dims": norm_dims, "eps": eps}, inputs, list(inputs), f)


ln_case("layer_norm_last2", (3, 4, 5), 2, True)
ln_case("layer_norm_last1_plain", (2, 3, 7), 1, False)
ln_case("layer_norm_last1_eps", (6, 8), 1, True, eps=1e-3)

# ---- pooling ---------------------------------------------------------------------


def pool_case(name, kind, shape, kernel, stride, padding, ceil_mode, dilation=None, count_include_pad=True):
    nd = len(shape) - 2
    x = rn(*shape)
    params = {"kernel": kernel, "stride": stride, "padding": padding, "ceil_mode": ceil_mode}
    if kind == "max_pool":
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
        params["dilation"] = dilation or [1] * nd

        def f(x):
            return fn(x, kernel, stride, padding, params["dilation"], ceil_mode=ceil_mode)
    else:
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
        params["count_include_pad"] = count_include_pad

        def f(x):
            return fn(x, kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)

    add(name, kind, params, {"x": x}, ["x"], f)


pool_case("max_pool1d_k3_s2_p1_ceil", "max_pool", (2, 3, 10), [3], [2], [1], True)
pool_case("max_pool1d_k2_s2", "max_pool", (1, 2, 9), [2], [2], [0], False)
pool_case("max_pool2d_k3_s2_p1", "max_pool", (2, 3, 9, 8), [3, 3], [2, 2], [1, 1], False)
pool_case("max_pool2d_k3_s2_p1_ceil", "max_pool", (1, 2, 8, 10), [3, 3], [2, 2], [1, 1], True)
pool_case("max_pool2d_k23_s12_d12_ceil", "max_pool", (1, 2, 7, 9), [2, 3], [1, 2], [1, 0], True, dilation=[1, 2])
pool_case("max_pool3d_k3_s2_p1_ceil", "max_pool", (1, 2, 6, 7, 8), [3, 3, 3], [2, 2, 2], [1, 1, 1], True)
pool_case("max_pool3d_k133_s122", "max_pool", (2, 2, 3, 7, 6), [1, 3, 3], [1, 2, 2], [0, 1, 1], False)
pool_case("avg_pool1d_k4_s3_p2_ceil_cip", "avg_pool", (2, 3, 11), [4], [3], [2], True, count_include_pad=True)
pool_case("avg_pool1d_k3_s2_p1_nocip", "avg_pool", (1, 2, 8), [3], [2], [1], False, count_include_pad=False)
pool_case("avg_pool2d_k3_s2_p1_ceil_cip", "avg_pool", (2, 2, 8, 9), [3, 3], [2, 2], [1, 1], True, count_include_pad=True)
pool_case("avg_pool2d_k3_s2_p1_ceil_nocip", "avg_pool", (2, 2, 8, 9), [3, 3], [2, 2], [1, 1], True, count_include_pad=False)
pool_case("avg_pool2d_k2_s2_ceil", "avg_pool", (1, 3, 7, 5), [2, 2], [2, 2], [0, 0], True)
pool_case("avg_pool3d_k3_s2_p1_nocip", "avg_pool", (1, 2, 6, 7, 5), [3, 3, 3], [2, 2, 2], [1, 1, 1], False, count_include_pad=False)
pool_case("avg_pool3d_k3_s2_p1_ceil_cip", "avg_pool", (1, 2, 6, 7, 5), [3, 3, 3], [2, 2, 2], [1, 1, 1], True, count_include_pad=True)
pool_case("avg_pool3d_k2_s1", "avg_pool", (2, 2, 3, 4, 3), [2, 2, 2], [1, 1, 1], [0, 0, 0], False)


def adaptive_case(name, shape, out):
    fn = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[len(out)]
    add(name, "adaptive_avg_pool", {"out": out}, {"x": rn(*shape)}, ["x"], lambda x: fn(x, out))


adaptive_case("adaptive_avg_pool3d_7x5x6_to_3x2x4", (2, 3, 7, 5, 6), [3, 2, 4])
adaptive_case("adaptive_avg_pool3d_to_1", (2, 4, 3, 5, 4), [1, 1, 1])
adaptive_case("adaptive_avg_pool3d_up_3x4x2_to_5x4x3", (1, 2, 3, 4, 2), [5, 4, 3])
adaptive_case("adaptive_avg_pool2d_9x7_to_4x3", (1, 2, 9, 7), [4, 3])

# ---- interpolation -----------------------------------------------------------------


def interp_case(name, shape, size, mode, align_corners):
    ac = align_corners if mode != "nearest" else None
    params = {"size": size, "mode": "nearest" if mode == "nearest" else "linear", "align_corners": bool(align_corners)}
    add(name, "interpolate", params, {"x": rn(*shape)}, ["x"],
        lambda x: F.interpolate(x, size=size, mode=mode, align_corners=ac))


interp_case("nearest1d_5_to_8", (2, 2, 5), [8], "nearest", False)
interp_case("nearest1d_7_to_3", (1, 2, 7), [3], "nearest", False)
interp_case("nearest2d_5x6_to_3x9", (1, 2, 5, 6), [3, 9], "nearest", False)
interp_case("nearest3d_3x4x5_to_5x3x7", (1, 2, 3, 4, 5), [5, 3, 7], "nearest", False)
for ac in (False, True):
    s = "ac" if ac else "noac"
    interp_case(f"linear_5_to_9_{s}", (2, 2, 5), [9], "linear", ac)
    interp_case(f"linear_7_to_3_{s}", (1, 3, 7), [3], "linear", ac)
    interp_case(f"bilinear_4x5_to_7x3_{s}", (1, 2, 4, 5), [7, 3], "bilinear", ac)
    interp_case(f"trilinear_3x4x5_to_5x7x3_{s}", (1, 2, 3, 4, 5), [5, 7, 3], "trilinear", ac)
    interp_case(f"trilinear_6x5x4_to_3x2x4_{s}", (2, 1, 6, 5, 4), [3, 2, 4], "trilinear", ac)

# ---- activations, softmax, products ------------------------------------------------------

add("relu", "relu", {}, {"x": rn(3, 7)}, ["x"], lambda x: F.relu(x))
add("gelu", "gelu", {}, {"x": torch.linspace(-6, 6, 40).reshape(5, 8) + rn(5, 8) * 0.05}, ["x"], lambda x: F.gelu(x))
add("softmax_last", "softmax", {"axis": -1}, {"x": rn(2, 3, 5) * 3}, ["x"], lambda x: F.softmax(x, dim=-1))
add("softmax_axis1", "softmax", {"axis": 1}, {"x": rn(2, 4, 3) * 3}, ["x"], lambda x: F.softmax(x, dim=1))
add("log_softmax_last", "log_softmax", {"axis": -1}, {"x": rn(3, 6) * 3}, ["x"], lambda x: F.log_softmax(x, dim=-1))
add("log_softmax_axis0", "log_softmax", {"axis": 0}, {"x": rn(4, 3, 2) * 3}, ["x"], lambda x: F.log_softmax(x, dim=0))
add("matmul_2d", "matmul", {}, {"a": rn(5, 7), "b": rn(7, 3)}, ["a", "b"], lambda a, b: torch.matmul(a, b))
add("matmul_batched", "matmul", {}, {"a": rn(2, 3, 4, 5), "b": rn(2, 3, 5, 6)}, ["a", "b"], lambda a, b: torch.matmul(a, b))
add("matmul_shared_rhs", "matmul", {}, {"a": rn(2, 4, 5), "b": rn(5, 3)}, ["a", "b"], lambda a, b: torch.matmul(a, b))
add("linear_bias", "linear", {}, {"x": rn(2, 3, 7), "w": rn(5, 7), "b": rn(5)}, ["x", "w", "b"], lambda x, w, b: F.linear(x, w, b))
add("linear_nobias", "linear", {}, {"x": rn(4, 6), "w": rn(3, 6)}, ["x", "w"], lambda x, w: F.linear(x, w))

# ---- cross-entropy --------------------------------------------------------------------------


def ce_case(name, n, c, weighted, smoothing, reduction):
    target = torch.randint(0, c, (n,))
    inputs = {"x": rn(n, c) * 2, "target": target.to(torch.float32)}
    if weighted:
        inputs["class_weight"] = torch.rand(c) * 2 + 0.1
    params = {"label_smoothing": smoothing, "reduction": reduction}

    def f(x, target, class_weight=None):
        return F.cross_entropy(x, target.long(), weight=class_weight, label_smoothing=smoothing, reduction=reduction)

    add(name, "cross_entropy", params, inputs, ["x"], f)


ce_case("cross_entropy_mean", 6, 5, False, 0.0, "mean")
ce_case("cross_entropy_weighted_smoothed_mean", 7, 4, True, 0.1, "mean")
ce_case("cross_entropy_weighted_smoothed_sum", 5, 3, True, 0.25, "sum")
ce_case("cross_entropy_weighted_smoothed_none", 6, 5, True, 0.2, "none")
ce_case("cross_entropy_smoothed_mean", 8, 2, False, 0.1, "mean")

stfile.write(OUT, tensors, {
    "cases": json.dumps(cases, sort_keys=True, separators=(",", ":")),
    "generator": "testdata/pytorch/golden_ops.py",
    "torch": torch.__version__.split("+")[0],
})
print(f"wrote {OUT}: {len(cases)} cases, {len(tensors)} tensors, {os.path.getsize(OUT)} bytes")
