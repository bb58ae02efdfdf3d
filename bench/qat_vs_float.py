"""Time one epoch of quantization-aware training (W4A4, examples/w4a4.yaml) against one
epoch of plain float training of the same model, both through `anybit finetune`, same
data, batch, optimizer and thread count, in one run, and print the ratio (issue target:
a QAT epoch costs at most 1.5x a float epoch).

The float runs:
  float, BN folded   the same BatchNorm-folded graph as the QAT model, without quantizers
                     (`anybit quantize --fold-bn --rule kind=conv,role=weight,spec=float`):
                     the ratio against it is the cost of the fake-quant ops alone
  float, BatchNorm   the shipped model as trained, BatchNorm in training mode

    /usr/bin/python3 bench/qat_vs_float.py [--anybit build/anybit] [--threads 2] [--max-steps N] [--repeat R]

With --repeat R the three runs are interleaved R times and each keeps its fastest time per
step (on a shared machine the minimum is the least disturbed measurement).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "fmnist_resnet.pt")
EPOCH_LINE = re.compile(r"epoch 1: loss ([0-9.]+).*\((\d+) steps, ([0-9.]+) s\)")


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}")
    return p.stdout


def one_epoch(args, model, out):
    cmd = [args.anybit, "--threads", str(args.threads), "finetune", model, "-d", args.data, "--epochs", "1",
           "--lr", "0.01", "--no-progress", "-o", out]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    m = EPOCH_LINE.search(run(cmd))
    if not m:
        sys.exit(f"no epoch line from {' '.join(cmd)}")
    return int(m.group(2)), float(m.group(3))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anybit", default=os.path.join(ROOT, "build", "anybit"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default="fmnist::train")
    ap.add_argument("--config", default=os.path.join(ROOT, "examples", "w4a4.yaml"))
    ap.add_argument("--max-steps", type=int, default=0, help="time this many steps instead of a whole epoch")
    ap.add_argument("--repeat", type=int, default=1, help="interleave the runs this many times, keep the fastest")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        qat, flt = os.path.join(tmp, "w4a4.pt"), os.path.join(tmp, "float_folded.pt")
        common = [args.anybit, "--threads", str(args.threads), "quantize", MODEL, "-d", args.data,
                  "--fold-bn", "--no-progress"]
        run(common + ["-c", args.config, "-o", qat])
        run(common + ["--rule", "kind=conv,role=weight,spec=float", "-o", flt])
        rows = [("float, BN folded", flt), ("W4A4 QAT", qat), ("float, BatchNorm", MODEL)]
        best = {}
        for _ in range(args.repeat):
            for name, model in rows:
                steps, secs = one_epoch(args, model, os.path.join(tmp, "out.pt"))
                if name not in best or secs < best[name][1]:
                    best[name] = (steps, secs)
        print(f"threads {args.threads}, batch 128, SGD, data {args.data}, fastest of {args.repeat}")
        print(f"| run | steps | seconds | ms/step |\n|---|---:|---:|---:|")
        times = {}
        for name, _ in rows:
            steps, secs = best[name]
            times[name] = secs / steps
            print(f"| {name} | {steps} | {secs:.1f} | {1000 * secs / steps:.1f} |")
    q = times["W4A4 QAT"]
    print(f"\nQAT / float (BN folded): {q / times['float, BN folded']:.2f}x")
    print(f"QAT / float (BatchNorm): {q / times['float, BatchNorm']:.2f}x   (target: at most 1.5x)")


if __name__ == "__main__":
    main()
