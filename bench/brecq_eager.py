"""BRECQ's block step in plain PyTorch eager against anybit's (BENCHMARKS.md "GPTQ"), 2 threads.

    python bench/brecq_eager.py [--anybit build/anybit] [--iterations 50] [--samples 64]

The block step is the one of ptq/brecq.h with QDrop inside the block, as the reference code
of BRECQ (github.com/yhhhli/BRECQ) and QDrop (github.com/wimh966/QDrop) writes it: AdaRound
soft weights s * clamp(floor(w / s) + h(V), qmin, qmax), activation quantizers with a learned
step through round-to-nearest with a straight-through gradient (QDrop's round_ste) and the step
as exp(u), QDrop's where(rand < p, x, fq(x)) after each of them, the loss
sum over channels, mean over the rest, plus AdaRound's regularizer after the warm-up, Adam on
V and on u (cosine-annealed). Each ResNet-18 basic block (torchvision, random weights,
BatchNorm folded, 224x224 inputs) learns `--iterations` steps on batches of 32 drawn from
`--samples` cached block inputs; the time is the whole loop's over its iterations.

anybit's side is `anybit quantize --brecq N` on the same ResNet-18 (traced, W4A8 as
bench/ptq_scale.py: int4 per-channel weights, 8-bit activations after every ReLU, pool and
add), whose report gives each block's milliseconds an iteration. Timing only: the weights
are random.
"""
import argparse
import math
import os
import re
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--anybit", default="build/anybit")
ap.add_argument("--out", default="/tmp/anybit-brecq-eager")
ap.add_argument("--iterations", type=int, default=50)
ap.add_argument("--samples", type=int, default=64)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

torch.set_num_threads(a.threads)
torch.manual_seed(0)
net = torchvision.models.resnet18(weights=None).eval()
model = os.path.join(a.out, "resnet18.pt")
with torch.no_grad():
    torch.jit.trace(net, torch.zeros(1, 3, 224, 224)).save(model)


def fold(conv, bn):
    """The conv's weight and bias with the BatchNorm after it folded in."""
    k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (conv.weight * k.view(-1, 1, 1, 1)).detach(), (bn.bias - bn.running_mean * k).detach()


ZETA, GAMMA = 1.1, -0.1


class SoftWeight:
    """AdaRound's rounding variables of one int4 per-channel weight."""

    def __init__(self, w):
        self.s = (w.abs().amax((1, 2, 3), keepdim=True) / 7).clamp_min(1e-8)
        self.w_floor = torch.floor(w / self.s)
        rest = w / self.s - self.w_floor
        self.v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)).requires_grad_(True)

    def h(self):
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def soft(self, h):
        return self.s * torch.clamp(self.w_floor + h, -8, 7)


def round_ste(x):
    return (x.round() - x).detach() + x


def fq(x, u, qmin, qmax):
    """QDrop's UniformAffineQuantizer with a learned step (zero point 0)."""
    delta = u.exp()
    return torch.clamp(round_ste(x / delta), qmin, qmax) * delta


def qdrop(x, p):
    return lambda q: torch.where(torch.rand_like(x) < p, x, q)


def eager_block(block, x_pool, iters):
    """Seconds one block step takes, eager."""
    w1, b1 = fold(block.conv1, block.bn1)
    w2, b2 = fold(block.conv2, block.bn2)
    ds = fold(block.downsample[0], block.downsample[1]) if block.downsample is not None else None
    stride = block.conv1.stride
    with torch.no_grad():
        def float_block(x):
            y = F.relu(F.conv2d(x, w1, b1, stride, 1))
            y = F.conv2d(y, w2, b2, 1, 1)
            return F.relu(y + (F.conv2d(x, ds[0], ds[1], stride) if ds else x))
        y_pool = torch.cat([float_block(x_pool[i:i + 32]) for i in range(0, len(x_pool), 32)])
        r1 = F.relu(F.conv2d(x_pool[:32], w1, b1, stride, 1))
    R = [SoftWeight(w1), SoftWeight(w2)] + ([SoftWeight(ds[0])] if ds else [])
    U = [torch.tensor(math.log(max(float(r1.max()), 1e-3) / 255)).requires_grad_(True),
         torch.tensor(math.log(max(float(y_pool.abs().max()), 1e-3) / 127)).requires_grad_(True),
         torch.tensor(math.log(max(float(y_pool.max()), 1e-3) / 255)).requires_grad_(True)]
    adam_v = torch.optim.Adam([r.v for r in R], lr=3e-3)
    adam_s = torch.optim.Adam(U, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    warmup = iters // 5
    t0 = time.perf_counter()
    for it in range(iters):
        idx = torch.randint(len(x_pool), (32,), generator=gen)
        x, target = x_pool.index_select(0, idx), y_pool.index_select(0, idx)
        hs = [r.h() for r in R]
        ws = [r.soft(h) for r, h in zip(R, hs)]
        y = F.relu(F.conv2d(x, ws[0], b1, stride, 1))
        y = qdrop(y, 0.5)(fq(y, U[0], 0, 255))
        y = F.conv2d(y, ws[1], b2, 1, 1)
        y = y + (F.conv2d(x, ws[2], ds[1], stride) if ds else x)
        y = qdrop(y, 0.5)(fq(y, U[1], -128, 127))
        y = F.relu(y)
        y = qdrop(y, 0.5)(fq(y, U[2], 0, 255))
        loss = (y - target).pow(2).sum(1).mean()
        if it >= warmup:
            beta = 20 + (2 - 20) * (it - warmup) / max(1, iters - warmup)
            loss = loss + 0.01 * sum((1 - (2 * h - 1).abs().pow(beta)).sum() for h in hs)
        adam_v.zero_grad()
        adam_s.zero_grad()
        loss.backward()
        adam_v.step()
        adam_s.step()
        for g in adam_s.param_groups:
            g["lr"] = 1e-4 * 0.5 * (1 + math.cos(math.pi * (it + 1) / iters))
    return (time.perf_counter() - t0) / iters


# anybit: the same model and blocks, its report's milliseconds an iteration per block
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
g = torch.Generator().manual_seed(1)
images = (torch.rand(a.samples, 3, 224, 224, generator=g) - mean) / std
np.save(os.path.join(a.out, "x.npy"), images.numpy())
np.save(os.path.join(a.out, "y.npy"), np.zeros(a.samples, np.int64))
config = os.path.join(a.out, "w4a8.yaml")
with open(config, "w") as f:
    f.write("weight_calibrator: mse\ncalibrator: mse\nrules:\n"
            "  - {kind: [conv, linear], role: weight, spec: 'int4:per_channel'}\n"
            "  - {role: input, spec: auto8}\n"
            "  - {kind: [relu, pool, add], spec: auto8}\n")
cmd = [a.anybit, "--threads", str(a.threads), "quantize", model, "-c", config, "-d",
       f"npy:{a.out}/x.npy:{a.out}/y.npy", "--calib-samples", str(a.samples), "-b", "32", "--fold-bn",
       "--no-progress", "--brecq", str(a.iterations), "-o", os.path.join(a.out, "brecq.pt")]
p = subprocess.run(cmd, capture_output=True, text=True)
if p.returncode != 0:
    sys.exit(p.stderr)
anybit_ms = {m.group(1): float(m.group(2))
             for m in re.finditer(r"^brecq (\S+) .*, ([0-9.]+) ms an iteration$", p.stderr, re.M)}

# eager: each basic block on its float input (the images through the float model up to it)
with torch.no_grad():
    x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
print(f"| block | anybit ms an iteration | eager ms an iteration | eager / anybit |")
print("|---|---:|---:|---:|")
tot_a = tot_e = 0.0
for lname in ["layer1", "layer2", "layer3", "layer4"]:
    for i, block in enumerate(getattr(net, lname)):
        name = f"{lname}.{i}"
        e = eager_block(block, x, a.iterations) * 1e3
        with torch.no_grad():
            x = block(x)
        if name not in anybit_ms:
            sys.exit(f"anybit's report has no block {name}:\n{p.stderr}")
        tot_a += anybit_ms[name]
        tot_e += e
        print(f"| {name} | {anybit_ms[name]:.1f} | {e:.1f} | {e / anybit_ms[name]:.2f}x |", flush=True)
print(f"| all 8 basic blocks | {tot_a:.1f} | {tot_e:.1f} | {tot_e / tot_a:.2f}x |")
