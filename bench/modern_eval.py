"""Evaluation time of modern torchvision networks (issue: fast evaluation for modern
networks): `anybit eval` on the fused oneDNN layers against `--no-fuse` (the TorchScript
interpreter) against PyTorch eager, float and W8A8, random weights and random images.

    PYTHONPATH=python:tests ANYBIT_EXE=build/anybit .venv/bin/python bench/modern_eval.py \
        [--models mobilenet_v3_small,efficientnet_b0,convnext_tiny,vit] [--images 512] [--threads 2]

W8A8 is tests/zoo.py's recipe (int8 per-channel conv/linear weights, auto8 on every activation
kind with points and on the input, mse calibration on 16 images, BatchNorm folded). Each
`anybit eval` time is the whole evaluation as a user runs it (the first batch also runs in the
interpreter, which checks the compiled layers), process start and model load excluded (the
time `anybit eval --json` reports). Labels are the float model's predictions, so top-1 is the
agreement with float.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
ap = argparse.ArgumentParser()
ap.add_argument("--models", default="mobilenet_v3_small,efficientnet_b0,convnext_tiny,vit")
ap.add_argument("--images", type=int, default=512)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--form", default="script", choices=["script", "trace"])
a = ap.parse_args()
torch.set_num_threads(a.threads)
exe = os.environ.get("ANYBIT_EXE", "build/anybit")

import anybit  # noqa: E402
import zoo  # noqa: E402


def build(name):
    import torchvision
    if name == "vit":  # the smallest size vit_b_16 takes at patch 16 with a 4x4 grid
        m = torchvision.models.vit_b_16(weights=None, image_size=64)
        torch.nn.init.normal_(m.heads.head.weight, std=0.02)
        torch.nn.init.normal_(m.class_token, std=1.0)
        return m
    return getattr(torchvision.models, name)(weights=None)


def cli_eval(model, data, fuse):
    cmd = [exe, "--threads", str(a.threads), "eval", model, "-d", data, "-b", str(a.batch), "--json", "--no-progress"]
    if not fuse:
        cmd.append("--no-fuse")
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return r


print(f"torch {torch.__version__}, {a.threads} threads, {a.images} images of 3x64x64, batch {a.batch}, {a.form}ed")
print("| model | weights | fused oneDNN | `--no-fuse` | PyTorch eager float | fused speed-up over interpreter | runtime note |")
print("|---|---|---:|---:|---:|---:|---|")
for name in a.models.split(","):
    torch.manual_seed(0)
    m = build(name).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(a.images, 3, 64, 64, generator=g)
    with torch.no_grad():
        t = time.time()
        y = torch.cat([m(x[i:i + a.batch]) for i in range(0, a.images, a.batch)]).argmax(1)
        eager = time.time() - t
    with tempfile.TemporaryDirectory() as d:
        np.save(d + "/x.npy", x.numpy())
        np.save(d + "/y.npy", y.numpy().astype(np.int64))
        data = f"npy:{d}/x.npy:{d}/y.npy"
        sm = torch.jit.script(m) if a.form == "script" else torch.jit.trace(m, x[:2], check_trace=False)
        sm.save(d + "/float.pt")
        qm = anybit.quantize(sm, zoo._config(anybit.points(sm)), calib_data=[x[:16]], fold_bn=True)
        qm.save(d + "/w8a8.pt")
        for label in ("float", "w8a8"):
            f = cli_eval(f"{d}/{label}.pt", data, True)
            i = cli_eval(f"{d}/{label}.pt", data, False)
            note = f["eval"]["runtime"] + ": " + f["eval"].get("runtime_note", "") if "eval" in f else f.get("runtime", "") + ": " + f.get("runtime_note", "")
            fe = f.get("eval", f)
            ie = i.get("eval", i)
            print(f"| {name} | {label} | {fe['seconds']:.2f} s ({fe['top1']:.1f}%) | {ie['seconds']:.2f} s ({ie['top1']:.1f}%) | "
                  f"{eager:.2f} s | {ie['seconds'] / fe['seconds']:.1f}x | {note} |", flush=True)
