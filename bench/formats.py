"""Number formats side by side on the shipped Fashion-MNIST model (issue: any format): the
same rules with integer, minifloat, block (MX, NVFP4) and codebook (NF4, k-means) formats,
top-1 on the 10k real Fashion-MNIST test images.

    PYTHONPATH=python .venv/bin/python bench/formats.py [--formats int8,fp8:e4m3,...] [--weights-only]
        [--torchvision resnet18|mobilenet_v2]

Each row gives every conv and linear weight ("W") and, unless --weights-only, every activation
and the input ("A") one format: per output channel where the format has a scale of its own
(int, fp, nf4, lut), its own blocks for MX and NVFP4. Ranges are calibrated on 512 training
images with the mse calibrator (weights and activations), except NVFP4's tensor scale
(minmax: it scales each block by its own maximum) and the formats with nothing to calibrate
(MX; lut's levels are k-means). Float top-1: 92.89. One thread count is set (--threads,
default 2); the seconds are quantize + evaluate.
"""
import argparse
import time

import torch

import anybit

ap = argparse.ArgumentParser()
ap.add_argument("--formats", default="int8,fp8:e4m3,fp8:e5m2,mxfp8:e4m3,mxint8,int6,fp6:e3m2,fp6:e2m3,mxfp6:e3m2,"
                                     "int4,fp4:e2m1,mxfp4,nvfp4,nf4,lut4,int3,fp3:e1m1,lut3")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--weights-only", action="store_true", help="leave activations and the input float")
ap.add_argument("--torchvision", default="", help="instead of the shipped model: a torchvision architecture "
                "(resnet18, mobilenet_v2) with random weights on 256 random 64x64 images; top-1 is then the "
                "agreement with the float model's predictions, and SQNR that of the logits")
a = ap.parse_args()
torch.set_num_threads(a.threads)

MODEL = "models/fmnist_resnet.pt"


def weight_spec(fmt):
    return fmt if fmt.startswith(("mx", "nvfp4")) else fmt + ":per_channel"


def config(fmt):
    rules = [{"kind": ["conv", "linear"], "role": "weight", "spec": weight_spec(fmt)}]
    if not a.weights_only:
        rules.append({"role": ["input", "activation"], "spec": fmt})
    return {"calibrator": "minmax" if fmt == "nvfp4" else "mse", "weight_calibrator": "mse", "rules": rules}


if a.torchvision:
    import math
    import tempfile
    import warnings

    import torchvision
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    m = getattr(torchvision.models, a.torchvision)(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.rand(256, 3, 64, 64, generator=g) - mean) / std  # inputs as torchvision normalizes them
    with torch.no_grad():
        ref_logits = m(x)
    y = ref_logits.argmax(1)
    tmp = tempfile.mkdtemp()
    path = f"{tmp}/{a.torchvision}.pt"
    torch.jit.trace(m, x[:2]).save(path)
    print(f"{a.torchvision}, traced, random weights, BatchNorm folded, 256 random normalized 64x64 images")
    print("| format | W | A | agreement with float (%) | logits SQNR (dB) | seconds |")
    print("|---|---|---|---|---|---|")
    for fmt in a.formats.split(","):
        t0 = time.time()
        q = anybit.quantize(path, config(fmt), calib_data=[x[:32]], fold_bn=True)
        r = anybit.evaluate(q, [(x, y)], batch_size=64)
        with torch.no_grad():
            out = q(x)
        sqnr = 10 * math.log10(ref_logits.pow(2).sum().item() / max((out - ref_logits).pow(2).sum().item(), 1e-30))
        print(f"| {fmt} | {weight_spec(fmt)} | {'float' if a.weights_only else fmt} | {r['top1']:.2f} | {sqnr:.1f} | "
              f"{time.time() - t0:.1f} |", flush=True)
    raise SystemExit(0)

ref = anybit.load(MODEL)
print("| format | W | A | top-1 (%) | agreement with float (%) | seconds |")
print("|---|---|---|---|---|---|")
for fmt in a.formats.split(","):
    t0 = time.time()
    q = anybit.quantize(MODEL, config(fmt), calib_data="fmnist::train", calib_batches=4, batch_size=128)
    r = anybit.evaluate(q, "fmnist::test", reference=ref, batch_size=500)
    print(f"| {fmt} | {weight_spec(fmt)} | {'float' if a.weights_only else fmt} | {r['top1']:.2f} | "
          f"{r['agreement']:.2f} | {time.time() - t0:.1f} |", flush=True)
