"""Mixed-precision search figures (BENCHMARKS.md "Mixed precision"), one run each, 2 threads.

    python bench/search.py [--anybit build/anybit] [--out DIR] [--only NAME,...]

Runs `anybit search` on the shipped models (sensitivity metrics kl, sqnr, hessian; methods
mse and brecq; a bit-operation budget with searched activation widths) and on torchvision's
ResNet-18 (random weights, 224x224, time only), then prints the tables BENCHMARKS.md shows.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--anybit", default="build/anybit")
ap.add_argument("--out", default="/tmp/anybit-search-bench")
ap.add_argument("--only", default="", help="comma-separated run names to run (the tables show every run in --out)")
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)

M = "models/fmnist_resnet.pt"
N = "models/fmnist_resnet_norm.pt"
NORM = ":mean=0.2860:std=0.3530"
runs = {
    "kl": [M, "--budget", "avg-wbits=2.5"],
    "sqnr": [M, "--budget", "avg-wbits=2.5", "--metric", "sqnr"],
    "hessian": [M, "--budget", "avg-wbits=2.5", "--metric", "hessian"],
    "norm": [N, "--budget", "avg-wbits=2.5", "-d", "fmnist::train" + NORM, "--eval", "fmnist::test" + NORM],
    "bops": [M, "--budget", "bops=0.25", "--acts", "4,6,8", "--uniform", "4"],
    "brecq": [M, "--budget", "avg-wbits=2.5", "--method", "brecq", "--uniform", "2,3"],
    "gptq": [M, "--budget", "avg-wbits=2.5", "--method", "gptq", "--uniform", "2,3"],
    "norm-brecq": [N, "--budget", "avg-wbits=2.5", "-d", "fmnist::train" + NORM, "--eval", "fmnist::test" + NORM,
                   "--method", "brecq", "--uniform", "2,3"],
}


def resnet18():
    """torchvision ResNet-18, random weights, traced at 224x224; 64 calibration and 256
    evaluation images of noise normalized as torchvision does, labelled by the float model."""
    import numpy as np
    import torch
    import torchvision

    d = os.path.join(a.out, "resnet18-data")
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.rand(320, 3, 224, 224, generator=g) - mean) / std
    with torch.no_grad():
        torch.jit.trace(m, x[:1]).save(f"{d}/resnet18.pt")
        y = torch.cat([m(x[i:i + 64]).argmax(1) for i in range(0, 320, 64)])
    np.save(f"{d}/calib_x.npy", x[:64].numpy())
    np.save(f"{d}/calib_y.npy", y[:64].numpy())
    np.save(f"{d}/eval_x.npy", x[64:].numpy())
    np.save(f"{d}/eval_y.npy", y[64:].numpy())
    return [f"{d}/resnet18.pt", "--budget", "avg-wbits=4", "-d", f"npy:{d}/calib_x.npy:{d}/calib_y.npy",
            "--eval", f"npy:{d}/eval_x.npy:{d}/eval_y.npy", "--calib-batches", "2", "--sensitivity-samples", "32",
            "--uniform", "4"]


only = [s for s in a.only.split(",") if s]
runs["resnet18"] = None
for name in list(runs):
    if only and name not in only:
        continue
    args = runs[name] if runs[name] is not None else resnet18()
    out = os.path.join(a.out, name)
    subprocess.run(["rm", "-rf", out], check=True)
    cmd = [a.anybit, "--threads", "2", "search", *args, "-o", out, "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        print(p.stdout, p.stderr, file=sys.stderr)
        sys.exit(f"{name}: anybit search failed")
    print(p.stdout, flush=True)
    with open(os.path.join(a.out, name + ".bench.json"), "w") as f:
        json.dump({"wall": wall, "peak_kib": int(p.stderr.strip().splitlines()[-1])}, f)
results = {}
for name in runs:
    if os.path.exists(os.path.join(a.out, name, "pareto.json")) and os.path.exists(os.path.join(a.out, name + ".bench.json")):
        results[name] = {**json.load(open(os.path.join(a.out, name, "pareto.json"))),
                         **json.load(open(os.path.join(a.out, name + ".bench.json")))}

print("\n## tables\n")
for name, j in results.items():
    rows = {(r["kind"], r["label"]): r for r in j["rows"]}
    fl = rows[("float", "float")]["top1"]
    print(f"### {name}: {j['budget']}, metric {j['metric']}, method {j['method']} (float {fl:.2f}%)\n")
    print("| config | avg weight bits | KiB | bops vs W8A8 | top-1 (%) | drop | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in j["rows"]:
        if r["kind"] == "float":
            continue
        print(f"| {r['kind']} {r['label']} | {r['avg_wbits']:.3f} | {r['size_bytes'] / 1024:.2f} | {r['bops']:.3f} "
              f"| {r['top1']:.2f} | {r['top1'] - fl:+.2f} | {r['seconds']:.1f} |")
    print(f"\nsensitivity {j['sensitivity_seconds']:.1f} s ({j['sensitivity_runs']} runs), solve "
          f"{j['solve_seconds'] * 1000:.1f} ms, whole search {j['total_seconds']:.1f} s (process {j['wall']:.1f} s"
          + (f", peak RSS {j['peak_kib'] / 1024:.0f} MiB" if j["peak_kib"] else "") + "); widths at the budget: "
          + ", ".join(f"{l['point'].replace('.weight', '')} W{l['wbits']}A{l['abits']}" for l in j["layers"]) + "\n")
