"""Evaluation time of modern torchvision networks (issue: fast evaluation for modern
networks): `anybit eval` on the fused oneDNN layers against `--no-fuse` (the TorchScript
interpreter) against PyTorch eager, float and W8A8, random weights and random images.

    PYTHONPATH=python:tests ANYBIT_EXE=build/anybit .venv/bin/python bench/modern_eval.py \
        [--models mobilenet_v3_small,efficientnet_b0,convnext_tiny,vit] [--images 512] [--threads 2] [--repeat 3]

W8A8 is tests/zoo.py's recipe (int8 per-channel conv/linear weights, auto8 on every activation
kind with points and on the input, mse calibration on 16 images, BatchNorm folded). Each
`anybit eval` time is the whole evaluation as a user runs it (the first batch also runs in the
interpreter, which checks the compiled layers), process start and model load excluded (the
time `anybit eval --json` reports), the fastest of --repeat runs, with that run's peak
resident memory (the whole process, model load included). Labels are the float model's
predictions, so top-1 is the agreement with float. A second table gives the time per batch
after the first (each eval run again on the first batch alone, whose time is subtracted):
the steady state of a long evaluation, without the first batch's check and the plan's
construction.
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
ap.add_argument("--repeat", type=int, default=3, help="anybit runs per measurement; the fastest is taken")
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


def measured(cmd):
    """Runs cmd; returns its stdout and its peak resident memory in GB, from GNU time's %M
    (/usr/bin/time, Debian's `time` package; None without it). Python's own wait4 would
    count this process's memory too: its child is forked (or vforked) from it before exec."""
    gnu_time = os.path.exists("/usr/bin/time")
    with tempfile.NamedTemporaryFile("w+", suffix=".rss") as rss:
        full = ["/usr/bin/time", "-f", "%M", "-o", rss.name] + cmd if gnu_time else cmd
        out = subprocess.run(full, check=True, capture_output=True, text=True).stdout
        rss.seek(0)
        lines = rss.read().split()
    return out, int(lines[-1]) / 1e6 if gnu_time and lines else None


def gb(v):
    return "n/a" if v is None else f"{v:.2f}"


def cli_eval(model, data, fuse):
    cmd = [exe, "--threads", str(a.threads), "eval", model, "-d", data, "-b", str(a.batch), "--json", "--no-progress"]
    if not fuse:
        cmd.append("--no-fuse")
    runs = []
    for _ in range(a.repeat):
        out, peak = measured(cmd)
        r = json.loads(out)
        r = r.get("eval", r)  # the evaluation's record
        r["peak_gb"] = peak
        runs.append(r)
    return min(runs, key=lambda r: r["seconds"])  # the fastest run, with its own peak


print(f"torch {torch.__version__}, {a.threads} threads, {a.images} images of 3x64x64, batch {a.batch}, {'scripted' if a.form == 'script' else 'traced'}")
print("| model | weights | fused oneDNN | `--no-fuse` | PyTorch eager float | fused speed-up over interpreter | peak memory, fused / `--no-fuse` | runtime note |")
print("|---|---|---:|---:|---:|---:|---:|---|")
steady = []
for name in a.models.split(","):
    torch.manual_seed(0)
    m = build(name).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(a.images, 3, 64, 64, generator=g)
    with torch.no_grad():
        t = time.time()
        y = torch.cat([m(x[i:i + a.batch]) for i in range(0, a.images, a.batch)]).argmax(1)
        eager = time.time() - t
        eager_batch = eager / ((a.images + a.batch - 1) // a.batch)
    with tempfile.TemporaryDirectory() as d:
        np.save(d + "/x.npy", x.numpy())
        np.save(d + "/y.npy", y.numpy().astype(np.int64))
        np.save(d + "/x1.npy", x[:a.batch].numpy())
        np.save(d + "/y1.npy", y[:a.batch].numpy().astype(np.int64))
        data = f"npy:{d}/x.npy:{d}/y.npy"
        first = f"npy:{d}/x1.npy:{d}/y1.npy"  # the first batch alone
        sm = torch.jit.script(m) if a.form == "script" else torch.jit.trace(m, x[:2], check_trace=False)
        sm.save(d + "/float.pt")
        qm = anybit.quantize(sm, zoo._config(anybit.points(sm)), calib_data=[x[:16]], fold_bn=True)
        qm.save(d + "/w8a8.pt")
        for label in ("float", "w8a8"):
            f = cli_eval(f"{d}/{label}.pt", data, True)
            i = cli_eval(f"{d}/{label}.pt", data, False)
            note = f.get("runtime", "") + ": " + f.get("runtime_note", "")
            # the batches after the first: the whole run less a run of the first batch alone
            later = (a.images - 1) // a.batch
            fb = (f["seconds"] - cli_eval(f"{d}/{label}.pt", first, True)["seconds"]) / later * 1000
            ib = (i["seconds"] - cli_eval(f"{d}/{label}.pt", first, False)["seconds"]) / later * 1000
            steady.append(f"| {name} | {label} | {fb:.0f} ms | {ib:.0f} ms | {eager_batch * 1000:.0f} ms | {ib / fb:.2f}x |")
            print(f"| {name} | {label} | {f['seconds']:.2f} s ({f['top1']:.1f}%) | {i['seconds']:.2f} s ({i['top1']:.1f}%) | "
                  f"{eager:.2f} s | {i['seconds'] / f['seconds']:.1f}x | {gb(f['peak_gb'])} / {gb(i['peak_gb'])} GB | {note} |", flush=True)

print()
print("Per batch after the first (the whole run less a run of the first batch alone, over the later batches):")
print("| model | weights | fused oneDNN | `--no-fuse` | PyTorch eager float (mean over all) | fused speed-up over interpreter |")
print("|---|---|---:|---:|---:|---:|")
print("\n".join(steady))
