"""NNCF post-training quantization (nncf.quantize) of the shipped Fashion-MNIST model at
the peer table's pairs (bench/peers/run.sh runs it in NNCF's own venv). NNCF chooses its
own quantizer placement (its hardware patterns); the bit widths of weights and activations
are set through AdvancedQuantizationParameters. Prints one JSON line per pair.

    python bench/peers/nncf_ptq.py --pairs W8A8,W4A4 [--calib 1024] [--threads 2]
"""
import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "models"))
from train_fmnist import FmnistResNet, read_idx  # noqa: E402

import nncf  # noqa: E402
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--pairs", default="W8A8,W4A4,W3A3,W2A4,W2A2")
ap.add_argument("--calib", type=int, default=1024)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
D = "/usr/share/datasets/fashion-mnist"


def load(split):
    pre = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(D, f"{pre}-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
    y = read_idx(os.path.join(D, f"{pre}-labels-idx1-ubyte.gz")).astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


xtr, _ = load("train")
xte, yte = load("test")
calib = [xtr[i:i + 128] for i in range(0, a.calib, 128)]
ts = torch.jit.load(os.path.join(ROOT, "models", "fmnist_resnet.pt"))
float_model = FmnistResNet()
float_model.load_state_dict(dict(ts.state_dict().items()))
float_model.eval()


def top1(m):
    with torch.no_grad():
        return 100.0 * sum((m(xte[i:i + 500]).argmax(1) == yte[i:i + 500]).sum().item()
                           for i in range(0, len(xte), 500)) / len(xte)


for pair in a.pairs.split(","):
    w, act = int(pair[1:pair.index("A")]), int(pair[pair.index("A") + 1:])
    t0 = time.time()
    adv = AdvancedQuantizationParameters(weights_quantization_params=QuantizationParameters(num_bits=w),
                                         activations_quantization_params=QuantizationParameters(num_bits=act))
    try:
        q = nncf.quantize(copy.deepcopy(float_model), nncf.Dataset(calib), subset_size=a.calib,
                          advanced_parameters=adv)
        seconds = time.time() - t0
        print(json.dumps({"peer": f"nncf {nncf.__version__}", "pair": pair, "method": "quantize",
                          "top1": round(top1(q), 2), "seconds": round(seconds, 1)}), flush=True)
    except Exception as e:  # a pair NNCF cannot express: say so
        print(json.dumps({"peer": f"nncf {nncf.__version__}", "pair": pair, "method": "quantize",
                          "error": str(e).splitlines()[0][:200]}), flush=True)
