"""The stock PyTorch post-training recipe at low bits on the shipped Fashion-MNIST model,
for the side-by-side table with `anybit sweep` (BENCHMARKS.md):

eager prepare_qat with FakeQuantize(quant_min, quant_max) + HistogramObserver for
activations, and weights either per-tensor (HistogramObserver recipe) or per-channel
MinMaxObserver; BatchNorm fused into the convs (torch.ao.quantization.fuse_modules),
calibrated with fake-quant off on 1024 training images, evaluated on the 10k test set.
The first conv and the classifier stay at 8 bits as in anybit's --first-last-8bit rows
(and in the papers); --all-layers quantizes them at b bits too.

    /usr/bin/python3 bench/pytorch_lowbit.py [--threads 2] [--all-layers]
"""
import argparse
import os
import sys
import time

import torch
import torch.ao.quantization as tq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
from train_fmnist import FmnistResNet, load_split  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
PAIRS = [(4, 4), (3, 3), (2, 4), (2, 2)]


def qconfig(wbits, abits, per_channel):
    act = tq.FakeQuantize.with_args(observer=tq.HistogramObserver, quant_min=0, quant_max=2 ** abits - 1,
                                    dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    if per_channel:
        wt = tq.FakeQuantize.with_args(observer=tq.PerChannelMinMaxObserver, quant_min=-(2 ** (wbits - 1)),
                                       quant_max=2 ** (wbits - 1) - 1, dtype=torch.qint8,
                                       qscheme=torch.per_channel_symmetric, ch_axis=0)
    else:
        wt = tq.FakeQuantize.with_args(observer=tq.HistogramObserver, quant_min=-(2 ** (wbits - 1)),
                                       quant_max=2 ** (wbits - 1) - 1, dtype=torch.qint8,
                                       qscheme=torch.per_tensor_symmetric)
    return tq.QConfig(activation=act, weight=wt)


def run(wbits, abits, per_channel, all_layers, xtr, xte, yte):
    model = FmnistResNet()
    model.load_state_dict(torch.jit.load(os.path.join(ROOT, "models/fmnist_resnet.pt")).state_dict())
    model.eval()
    fuse = [["stem.0", "stem.1", "stem.2"]]
    for b in ("layer1", "layer2", "layer3"):
        fuse += [[f"{b}.conv1", f"{b}.bn1", f"{b}.relu1"], [f"{b}.conv2", f"{b}.bn2"]]
        if b != "layer1":
            fuse.append([f"{b}.downsample.0", f"{b}.downsample.1"])
    model = tq.fuse_modules(model, fuse)  # eval mode: BatchNorm folded into the convs
    model.qconfig = qconfig(wbits, abits, per_channel)
    if not all_layers:
        model.stem.qconfig = qconfig(8, 8, per_channel)
        model.fc.qconfig = qconfig(8, 8, per_channel)
    model.train()
    tq.prepare_qat(model, inplace=True)
    model.apply(tq.disable_fake_quant)
    model.apply(tq.enable_observer)
    model.eval()
    with torch.no_grad():
        for b in range(0, len(xtr), 128):
            model(xtr[b:b + 128])
    model.apply(tq.disable_observer)
    model.apply(tq.enable_fake_quant)
    correct = 0
    with torch.no_grad():
        for b in range(0, len(yte), 500):
            correct += (model(xte[b:b + 500]).argmax(1) == yte[b:b + 500]).sum().item()
    return 100.0 * correct / len(yte)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--all-layers", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    xtr, _ = load_split(DATA, "train")
    xtr = xtr[:1024]
    xte, yte = load_split(DATA, "test")
    print(f"stock PyTorch recipe, {'all layers' if a.all_layers else 'first conv and classifier at 8 bits'}, "
          f"{a.threads} threads")
    print("| weights | " + " | ".join(f"W{w}A{b}" for w, b in PAIRS) + " | seconds |")
    print("|---|" + "---:|" * (len(PAIRS) + 1))
    for per_channel in (False, True):
        t0 = time.perf_counter()
        accs = [run(w, b, per_channel, a.all_layers, xtr, xte, yte) for w, b in PAIRS]
        name = "per-channel MinMaxObserver" if per_channel else "per-tensor HistogramObserver"
        print(f"| {name} | " + " | ".join(f"{x:.2f}%" for x in accs) + f" | {time.perf_counter() - t0:.1f} |")


if __name__ == "__main__":
    main()
