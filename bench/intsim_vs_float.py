"""The integer engine against LibTorch float inference of the same model, same data, same
threads, one run: the shipped Fashion-MNIST model, its W8A8 integer export
(examples/export_w8a8.yaml), the 10k test set, batch 100 in both.

    /usr/bin/python3 bench/intsim_vs_float.py [--anybit build/anybit] [--threads 1,2] [--repeat 3]

Both times are measured inside the CLI around the model runs only (`anybit eval` runs the
float model frozen, BatchNorm folded, as a user deploys it; `anybit intsim` times the engine
including the quantization of the input). Rows: the exact MAC with a 32-bit accumulator
(the fast path), a 16-bit saturating accumulator (every addition checked: the stepwise
path), and a plug-in MAC model (one call per dot product). The best of --repeat runs.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "fmnist:/usr/share/datasets/fashion-mnist"


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ, ANYBIT_NO_PROGRESS="1"))
    return json.loads(out.stdout)


def best(cmd, repeat):
    runs = [run_json(cmd) for _ in range(repeat)]
    return min(r["seconds"] for r in runs), runs[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anybit", default=os.path.join(ROOT, "build", "anybit"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    exe = a.anybit
    model = os.path.join(ROOT, "models", "fmnist_resnet.pt")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        q, ex = os.path.join(d, "w8a8.pt"), os.path.join(d, "w8a8_int")
        subprocess.run([exe, "quantize", model, "--fold-bn", "--int32-bias", "-c",
                        os.path.join(ROOT, "examples", "export_w8a8.yaml"), "-d", DATA + ":train",
                        "--calib-batches", "8", "-o", q, "--no-progress"], check=True, capture_output=True)
        subprocess.run([exe, "export", q, "-o", ex], check=True, capture_output=True)
        for t in [int(v) for v in a.threads.split(",")]:
            f_s, f = best([exe, "--threads", str(t), "eval", model, "-d", DATA + ":test", "--json", "--no-progress"],
                          a.repeat)
            for label, extra, reps in [("exact MAC, 32-bit accumulator", [], a.repeat),
                                       ("exact MAC, 16-bit saturating accumulator",
                                        ["--acc-bits", "16", "--overflow", "saturate"], a.repeat),
                                       ("plug-in MAC (gauss:sigma=2,seed=1)", ["--mac", "gauss:sigma=2,seed=1"], 1)]:
                e_s, e = best([exe, "--threads", str(t), "intsim", ex, "-d", DATA + ":test", "--json", "--no-progress"]
                              + extra, reps)
                rows.append(dict(threads=t, engine=label, float_s=f_s, float_top1=f["top1"], engine_s=e_s,
                                 engine_top1=e["top1"], ratio=e_s / f_s))
    print("| threads | engine | float s | engine s | engine / float | float top-1 | engine top-1 |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['threads']} | {r['engine']} | {r['float_s']:.2f} | {r['engine_s']:.2f} | {r['ratio']:.2f}x "
              f"| {r['float_top1']:.2f}% | {r['engine_top1']:.2f}% |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
