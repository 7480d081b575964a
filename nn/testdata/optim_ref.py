# Reference values for nn/optim_test.go, computed with torch.optim.
# Run: /usr/bin/python3 nn/testdata/optim_ref.py
# Setting: parameters w = [1, -2, 0.5] and bias = [0.3]; at every step the
# gradient is c*p with c = [1, 0.5, 2] for w and [3] for bias (the gradient
# of sum(c*p^2)/2); weight decay applies to w only. Three steps; the printed
# values are the parameters after each step.
import torch

torch.set_default_dtype(torch.float32)


def run(make_opt, steps=3):
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    b = torch.tensor([0.3], requires_grad=True)
    cw = torch.tensor([1.0, 0.5, 2.0])
    cb = torch.tensor([3.0])
    opt = make_opt(w, b)
    out = []
    for _ in range(steps):
        w.grad = (cw * w).detach().clone()
        b.grad = (cb * b).detach().clone()
        opt.step()
        out.append((w.detach().tolist(), b.detach().tolist()))
    return out


cases = {
    "sgd_nesterov": lambda w, b: torch.optim.SGD(
        [{"params": [w], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}],
        lr=0.1, momentum=0.9, nesterov=True),
    "sgd_dampening": lambda w, b: torch.optim.SGD(
        [{"params": [w], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}],
        lr=0.1, momentum=0.9, dampening=0.5),
    "sgd_plain": lambda w, b: torch.optim.SGD([w, b], lr=0.1),
    "adam": lambda w, b: torch.optim.Adam(
        [{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
        lr=0.01, betas=(0.8, 0.95), eps=1e-8),
    "adamw": lambda w, b: torch.optim.AdamW(
        [{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
        lr=0.01, betas=(0.8, 0.95), eps=1e-8),
}
for name, mk in cases.items():
    print(name)
    for w, b in run(mk):
        print("\t{w: []float64{%s}, b: %.9g}," % (", ".join("%.9g" % v for v in w), b[0]))
