"""AlexNet (torchvision, random weights) at 224x224: W8A8 per-channel quantization, integer
export and the integer engine (issue 15: the seeds' AlexNet exports at its own size, where its
adaptive average pool is the identity, and at 64 and 256, where it pools 1x1 and 7x7 to 6x6).

    PYTHONPATH=python ANYBIT_EXE=build/anybit .venv/bin/python bench/alexnet224_export.py [--sizes 224,256,64]
"""
import argparse
import tempfile
import time
import warnings

import torch
import torchvision

import anybit

warnings.filterwarnings("ignore", category=FutureWarning)
ap = argparse.ArgumentParser()
ap.add_argument("--sizes", default="224,256,64")
ap.add_argument("--samples", type=int, default=32)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
m = torchvision.models.alexnet(weights=None).eval()
sm = torch.jit.script(m)
cfg = {"calibrator": "mse", "rules": [
    {"kind": ["conv", "linear", "relu", "pool"], "role": "activation", "spec": "auto8", "optional": True},
    {"kind": ["conv", "linear"], "role": "weight", "spec": "int8:per_channel"},
    {"role": "input", "spec": "auto8"}]}
print(f"torch {torch.__version__}, {a.threads} threads, {a.samples} random images")
for size in [int(s) for s in a.sizes.split(",")]:
    g = torch.Generator().manual_seed(1)
    calib = [torch.randn(8, 3, size, size, generator=g) for _ in range(2)]
    x = torch.randn(a.samples, 3, size, size, generator=g)
    t = time.time()
    qm = anybit.quantize(sm, cfg, calib_data=calib, int32_bias=True)
    tq = time.time() - t
    with tempfile.TemporaryDirectory() as d:
        t = time.time()
        info = anybit.export(qm, d + "/int")
        te = time.time() - t
        with torch.no_grad():
            fq = qm(x)
        t = time.time()
        out = anybit.intsim_run(d + "/int", x, threads=a.threads)[0]
        ti = time.time() - t
    o = info["outputs"][0]
    q = (torch.from_numpy(out).double() - o["zero_point"]) * o["scale"]
    agree = float((q.argmax(1) == fq.argmax(1)).double().mean())
    pools = {k: v for k, v in info["ops"].items() if "pool" in k}
    print(f"{size}x{size}: quantize {tq:.1f} s, export {te:.1f} s ({info['op_count']} ops, pools {pools}), "
          f"engine {ti:.2f} s, argmax agreement with the fake-quant model {100 * agree:.1f}%")
