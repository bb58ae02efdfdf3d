"""Number formats side by side on the shipped Fashion-MNIST model (issue: any format): the
same rules with integer, minifloat, block (MX, NVFP4) and codebook (NF4, k-means) formats,
top-1 on the 10k real Fashion-MNIST test images.

    PYTHONPATH=python .venv/bin/python bench/formats.py [--formats int8,fp8:e4m3,...] [--weights-only]

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


ref = anybit.load(MODEL)
print("| format | W | A | top-1 (%) | agreement with float (%) | seconds |")
print("|---|---|---|---|---|---|")
for fmt in a.formats.split(","):
    t0 = time.time()
    q = anybit.quantize(MODEL, config(fmt), calib_data="fmnist::train", calib_batches=4, batch_size=128)
    r = anybit.evaluate(q, "fmnist::test", reference=ref, batch_size=500)
    print(f"| {fmt} | {weight_spec(fmt)} | {'float' if a.weights_only else fmt} | {r['top1']:.2f} | "
          f"{r['agreement']:.2f} | {time.time() - t0:.1f} |", flush=True)
