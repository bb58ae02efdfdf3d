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

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmnist import calibration_batches, float_model as load_float_model, top1  # noqa: E402

import nncf  # noqa: E402
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--pairs", default="W8A8,W4A4,W3A3,W2A4,W2A2")
ap.add_argument("--calib", type=int, default=1024)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
calib = calibration_batches(a.calib)
float_model = load_float_model()

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
