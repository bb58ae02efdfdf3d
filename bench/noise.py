"""Noisy-hardware figures (BENCHMARKS.md "Noisy hardware"), 2 threads.

    python bench/noise.py [--anybit build/anybit] [--out DIR] [--part timing,curves] [--repeat N]

Timings are each model's fastest of N rounds (default 3).

timing: `anybit intsim` with the exact MAC and each noise model on the shipped model's
W8A8 export (examples/export_w8a8.yaml, 10k test images) and on torchvision's ResNet-18
(random weights, traced at 224x224, W8A8, 64 images of noise labelled by the float model).
curves: accuracy against gauss:rel noise (5 seeds per level, the 10k test images) of the
shipped model's W8A8 export after PTQ, after 2 epochs of fine-tuning, and after 2 epochs of
noise-aware fine-tuning (finetune --noise gauss:rel=0.1 and 0.3), the same seeds for all.
"""
import argparse
import json
import os
import re
import subprocess
import time

ap = argparse.ArgumentParser()
ap.add_argument("--anybit", default="build/anybit")
ap.add_argument("--out", default="/tmp/anybit-noise-bench")
ap.add_argument("--part", default="timing,curves")
ap.add_argument("--repeat", type=int, default=3,
                help="timing: rounds over the MAC models, each model's fastest run reported")
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
B = [a.anybit, "--threads", "2"]
O = a.out
MODELS = ["exact", "gauss:sigma=8", "gauss:rel=0.05", "gauss:fs=0.0005", "adc:bits=8,fs=0.05",
          "adc:bits=8,range=auto", "bitflip:rate=0.0001", "wnoise:rel=0.02"]


def run(cmd, **kw):
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def shipped_export():
    if not os.path.exists(f"{O}/w8a8_int/manifest.json"):
        run([*B, "quantize", "models/fmnist_resnet.pt", "--fold-bn", "--int32-bias", "-c", "examples/export_w8a8.yaml",
             "-d", "fmnist::train", "--calib-batches", "8", "-o", f"{O}/w8a8.pt", "--no-progress"])
        run([*B, "export", f"{O}/w8a8.pt", "-o", f"{O}/w8a8_int"])
    return f"{O}/w8a8_int", "fmnist::test", "fmnist::train"


def resnet18_export():
    d = f"{O}/resnet18"
    if os.path.exists(f"{d}/int/manifest.json"):
        return f"{d}/int", f"npy:{d}/x.npy:{d}/y.npy", f"npy:{d}/calib.npy"
    import numpy as np
    import torch
    import torchvision

    os.makedirs(d, exist_ok=True)
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(80, 3, 224, 224, generator=g)
    with torch.no_grad():
        torch.jit.trace(m, x[:1]).save(f"{d}/resnet18.pt")
        y = m(x[16:]).argmax(1)
    np.save(f"{d}/calib.npy", x[:16].numpy())
    np.save(f"{d}/x.npy", x[16:].numpy())
    np.save(f"{d}/y.npy", y.numpy())
    with open(f"{d}/w8a8.yaml", "w") as f:
        f.write("rules:\n  - {kind: [conv, linear], role: weight, spec: 'int8:per_channel'}\n"
                "  - {role: input, spec: uint8}\n  - {kind: [conv, linear], role: activation, spec: int8}\n"
                "  - {kind: [relu, pool], spec: uint8, optional: true}\n  - {kind: add, spec: int8, optional: true}\n")
    run([*B, "quantize", f"{d}/resnet18.pt", "--fold-bn", "--int32-bias", "-c", f"{d}/w8a8.yaml", "-d",
         f"npy:{d}/calib.npy", "--calib-batches", "1", "-b", "16", "-o", f"{d}/q.pt", "--no-progress"])
    run([*B, "export", f"{d}/q.pt", "-o", f"{d}/int"])
    return f"{d}/int", f"npy:{d}/x.npy:{d}/y.npy", f"npy:{d}/calib.npy"


def timing():
    rows = []
    for name, (model, data, calib), batch in (("shipped model, 10k images", shipped_export(), "100"),
                                               ("ResNet-18 224x224, 64 images", resnet18_export(), "16")):
        best = {}
        for _ in range(a.repeat):  # rounds, so that a slow spell of the machine hits every model
            for mac in MODELS:
                extra = ["--calib-data", calib, "--calib-samples", "16"] if "auto" in mac else []
                out = run([*B, "intsim", model, "-d", data, "--mac", mac, "--json", "--no-progress", "-b", batch,
                           *extra])
                j = json.loads(out)
                if mac not in best or j["seconds"] < best[mac][0]:
                    best[mac] = (j["seconds"], j["top1"])
        rows += [(name, mac, *best[mac]) for mac in MODELS]
    print("\n| model | MAC | seconds | x exact | top-1 |\n|---|---|---:|---:|---:|")
    base = {}
    for name, mac, s, t in rows:
        base.setdefault(name, s)
        print(f"| {name} | `{mac}` | {s:.2f} | {s / base[name]:.2f} | {t:.2f}% |")


def curves():
    model, data, _ = shipped_export()
    ft = {}
    for tag, noise in (("qat", []), ("qat-noise", ["--noise", "gauss:rel=0.3"]),
                       ("qat-noise01", ["--noise", "gauss:rel=0.1"])):
        if not os.path.exists(f"{O}/{tag}_int/manifest.json"):
            t0 = time.time()
            run([*B, "finetune", f"{O}/w8a8.pt", "-d", "fmnist::train", "--epochs", "2", "--lr", "0.005", *noise,
                 "-o", f"{O}/{tag}.pt", "--no-progress"])
            ft[tag] = time.time() - t0
            run([*B, "export", f"{O}/{tag}.pt", "-o", f"{O}/{tag}_int"])
    levels = "gauss:rel=0.05,0.1,0.2,0.3,0.5"
    res = {}
    for tag, m in (("PTQ", model), ("fine-tuned 2 epochs", f"{O}/qat_int"),
                   ("noise-aware fine-tuned 2 epochs (rel 0.1)", f"{O}/qat-noise01_int"),
                   ("noise-aware fine-tuned 2 epochs (rel 0.3)", f"{O}/qat-noise_int")):
        tagdir = f"{O}/sweep-{re.sub(r'[^a-z0-9]+', '-', tag.lower())}"
        run([*B, "intsim", m, "-d", data, "--mac", levels, "--seeds", "5", "-o", tagdir, "--resume", "--no-progress"])
        res[tag] = json.load(open(f"{tagdir}/noise.json"))
    print("\nfine-tuning seconds:", {k: round(v, 1) for k, v in ft.items()})
    head = list(res.values())[0]
    print("\n| model | exact | " + " | ".join(f"rel {lv['value']:g}" for lv in head["levels"]) + " |")
    print("|---|---:|" + "---:|" * len(head["levels"]))
    for tag, r in res.items():
        print(f"| {tag} | {r['exact']['top1']:.2f} | " +
              " | ".join(f"{lv['top1_mean']:.2f} ± {lv['top1_std']:.2f}" for lv in r["levels"]) + " |")


parts = a.part.split(",")
if "timing" in parts:
    timing()
if "curves" in parts:
    curves()
