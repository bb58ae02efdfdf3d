"""Calibrate + evaluate the shipped Fashion-MNIST model at W4A4 with a histogram
calibrator: anybit against the stock PyTorch recipe users try first (eager prepare_qat with
FakeQuantize(quant_min, quant_max) + HistogramObserver, calibrate with fake-quant disabled,
then evaluate), same model, same data, same threads, one run.

anybit is timed twice: through its Python package in this process (after `import anybit`,
as PyTorch is timed after `import torch`), and as the `anybit` command (a new process:
its start and LibTorch's loading are inside the time).

    /usr/bin/python3 bench/w4a4_vs_pytorch.py [--anybit build/anybit] [--threads 2] [--repeat 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.ao.quantization as tq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
from train_fmnist import FmnistResNet, load_split  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
CALIB = 1024  # training images, 8 batches of 128
EVAL_BATCH = 100  # the same evaluation batch for both


def pytorch_recipe(threads):
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = FmnistResNet()
    model.load_state_dict(torch.jit.load(os.path.join(ROOT, "models/fmnist_resnet.pt")).state_dict())
    act = tq.FakeQuantize.with_args(observer=tq.HistogramObserver, quant_min=0, quant_max=15,
                                    dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    wt = tq.FakeQuantize.with_args(observer=tq.MinMaxObserver, quant_min=-8, quant_max=7,
                                   dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    model.qconfig = tq.QConfig(activation=act, weight=wt)
    model.train()
    tq.prepare_qat(model, inplace=True)
    model.apply(tq.disable_fake_quant)
    model.apply(tq.enable_observer)
    xtr, _ = load_split(DATA, "train")
    xte, yte = load_split(DATA, "test")
    xtr = xtr[:CALIB]  # [N,1,28,28] float pixel/255, as the model expects
    t_cal = t0  # load + calibrate, as for anybit
    model.eval()  # BatchNorm uses its running statistics, as anybit's graph does
    with torch.no_grad():
        for b in range(0, CALIB, 128):
            model(xtr[b:b + 128])
    model.apply(tq.disable_observer)
    model.apply(tq.enable_fake_quant)
    t_eval = time.perf_counter()
    correct = 0
    with torch.no_grad():
        for b in range(0, len(yte), EVAL_BATCH):
            correct += (model(xte[b:b + EVAL_BATCH]).argmax(1) == yte[b:b + EVAL_BATCH]).sum().item()
    t1 = time.perf_counter()
    return {"top1": 100.0 * correct / len(yte), "calibrate_s": t_eval - t_cal, "evaluate_s": t1 - t_eval,
            "total_s": t1 - t0}


# int4 per-tensor symmetric weights and uint4 affine activations after every module: the
# placement and formats of the PyTorch recipe above
CONFIG = ("calibrator: mse\nrules:\n"
          "  - {kind: [conv, linear], role: weight, spec: int4}\n"
          "  - {kind: [conv, bn, relu, pool, linear, add], role: activation, spec: 'uint4:asym'}\n")


def anybit_python(threads):
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import anybit  # noqa: E402  (imported before the timer, as torch is)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    qm = anybit.quantize(os.path.join(ROOT, "models/fmnist_resnet.pt"), CONFIG, calib_data=f"fmnist:{DATA}:train",
                         calib_batches=8, batch_size=128)
    t_eval = time.perf_counter()
    ev = anybit.evaluate(qm, f"fmnist:{DATA}:test", batch_size=EVAL_BATCH)
    t1 = time.perf_counter()
    return {"top1": ev["top1"], "calibrate_s": t_eval - t0, "evaluate_s": t1 - t_eval, "total_s": t1 - t0,
            "runtime": ev.get("runtime", "")}


def anybit_run(exe, threads):
    with tempfile.TemporaryDirectory() as d:
        cpath, out = os.path.join(d, "w4a4.yaml"), os.path.join(d, "w4a4.pt")
        open(cpath, "w").write(CONFIG)
        t0 = time.perf_counter()
        r = subprocess.run([exe, "--threads", str(threads), "quantize", os.path.join(ROOT, "models/fmnist_resnet.pt"),
                            "--config", cpath, "--data", f"fmnist:{DATA}:train", "--calib-batches", "8",
                            "-b", "128", "-o", out, "--eval", f"fmnist:{DATA}:test",
                            "--eval-batch-size", str(EVAL_BATCH), "--json", "--no-progress"],
                           check=True, capture_output=True, text=True)
        t2 = time.perf_counter()
    ev = json.loads(r.stdout)["eval"]
    return {"top1": ev["top1"], "calibrate_s": t2 - t0 - ev["seconds"], "evaluate_s": ev["seconds"], "total_s": t2 - t0,
            "runtime": ev.get("runtime", "")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--anybit", default=os.path.join(ROOT, "build/anybit"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="run each tool this many times, report each run")
    a = ap.parse_args()
    rows = []
    for i in range(a.repeat):
        rows.append(("PyTorch eager prepare_qat + HistogramObserver", pytorch_recipe(a.threads)))
        rows.append(("anybit Python package (quantize + evaluate, in process)", anybit_python(a.threads)))
        rows.append(("anybit command (quantize --eval, new process)", anybit_run(a.anybit, a.threads)))
    print(f"W4A4, histogram calibration on {CALIB} training images, 10k test images, {a.threads} threads")
    print("| tool | top-1 | load + calibrate s | evaluate s | total s |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['top1']:.2f}% | {r['calibrate_s']:.2f} | {r['evaluate_s']:.2f} | {r['total_s']:.2f} |")
    for i in range(a.repeat):
        pt, py, cli = (r for _, r in rows[3 * i:3 * i + 3])
        print(f"\nrun {i + 1}: anybit speed-up, total: {pt['total_s'] / py['total_s']:.1f}x in process, "
              f"{pt['total_s'] / cli['total_s']:.1f}x as a command (evaluation on {py['runtime']})")


if __name__ == "__main__":
    main()
