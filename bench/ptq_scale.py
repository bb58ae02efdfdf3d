"""Post-training methods at ImageNet scale on the CPU (BENCHMARKS.md "GPTQ"), 2 threads.

    python bench/ptq_scale.py [--anybit build/anybit] [--samples 256,1024] [--methods mse,gptq,brecq:5,brecq:25]

torchvision ResNet-18 with random weights, traced at 224x224; calibration images are noise
normalized as torchvision does (timing and memory only: accuracy means nothing here). Each
method is one `anybit quantize` at W4A8 (int4 per-channel weights, mse calibration, BatchNorm
folded), timed with /usr/bin/time (wall seconds, peak resident memory); for BRECQ, the sum
over blocks of its report's milliseconds an iteration.
"""
import argparse
import os
import re
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--anybit", default="build/anybit")
ap.add_argument("--out", default="/tmp/anybit-ptq-scale")
ap.add_argument("--samples", default="256")
ap.add_argument("--methods", default="mse,gptq")
ap.add_argument("--adaround-iters", type=int, default=3000)
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

torch.manual_seed(0)
m = torchvision.models.resnet18(weights=None).eval()
model = os.path.join(a.out, "resnet18.pt")
with torch.no_grad():
    torch.jit.trace(m, torch.zeros(1, 3, 224, 224)).save(model)
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
config = os.path.join(a.out, "w4a8.yaml")
with open(config, "w") as f:
    f.write("weight_calibrator: mse\ncalibrator: mse\nrules:\n"
            "  - {kind: [conv, linear], role: weight, spec: 'int4:per_channel'}\n"
            "  - {role: input, spec: auto8}\n"
            "  - {kind: [relu, pool, add], spec: auto8}\n")
print("| method | calibration samples | seconds | peak memory (GiB) | brecq: ms an iteration, all blocks |")
print("|---|---:|---:|---:|---:|")
for n in [int(s) for s in a.samples.split(",")]:
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(n, 3, 224, 224, generator=g) - mean) / std
    np.save(os.path.join(a.out, f"x{n}.npy"), x.numpy())
    np.save(os.path.join(a.out, f"y{n}.npy"), np.zeros(n, np.int64))
    data = f"npy:{a.out}/x{n}.npy:{a.out}/y{n}.npy"
    del x
    for method in a.methods.split(","):
        # adaround:N / brecq:N run N iterations per layer / block: two such runs give the cost of
        # one iteration and, with it, the projected time at the default iteration count
        name, _, iters = method.partition(":")
        extra = {"mse": [], "gptq": ["--gptq"], "adaround": ["--adaround", iters or str(a.adaround_iters)],
                 "brecq": ["--brecq", iters or "2000"]}[name]
        cmd = ["/usr/bin/time", "-f", "%e %M", a.anybit, "--threads", "2", "quantize", model, "-c", config, "-d", data,
               "--calib-batches", str((n + 63) // 64), "-b", "64", "--fold-bn", "--no-progress",
               "-o", os.path.join(a.out, f"{name}{n}.pt"), *extra]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(p.stderr)
        wall, kib = p.stderr.strip().splitlines()[-1].split()
        # BRECQ's report: each block's milliseconds an iteration (its learning loop alone)
        ms = [float(m) for m in re.findall(r", ([0-9.]+) ms an iteration$", p.stderr, re.M)]
        print(f"| {method} | {n} | {float(wall):.1f} | {int(kib) / 1024 / 1024:.2f} | "
              f"{f'{sum(ms):.0f} ({len(ms)} blocks)' if ms else ''} |", flush=True)
