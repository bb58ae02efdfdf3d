"""Brevitas post-training quantization of the shipped Fashion-MNIST model, the configs of
`anybit sweep --first-last-8bit`: per-channel weights of W bits, the inputs of every conv
and linear at A bits (unsigned where they follow a ReLU or are the image), the first conv,
the last linear's weights and the model input at 8 bits. Run by bench/peers/run.sh in
Brevitas' own venv; prints one JSON line per (pair, method).

    python bench/peers/brevitas_ptq.py --pairs W8A8,W4A4 [--calib 1024] [--threads 2]
"""
import argparse
import copy
import json
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmnist import calibration_batches, float_model as load_float_model, top1  # noqa: E402

import brevitas.nn as qnn  # noqa: E402
from brevitas.graph.calibrate import bias_correction_mode, calibration_mode  # noqa: E402
from brevitas.graph.gptq import gptq_mode  # noqa: E402
from brevitas.graph.quantize import layerwise_quantize, preprocess_for_quantize  # noqa: E402
from brevitas.quant import (Int8ActPerTensorFloat, Int8ActPerTensorFloatMSE, Int8WeightPerChannelFloat,  # noqa: E402
                            Int8WeightPerChannelFloatMSE, Uint8ActPerTensorFloat, Uint8ActPerTensorFloatMSE)

ap = argparse.ArgumentParser()
ap.add_argument("--pairs", default="W8A8,W4A4,W3A3,W2A4,W2A2")
ap.add_argument("--methods", default="calibrate,bias_correction,gptq,mse,mse_gptq",
                help="calibrate: Brevitas' default statistics; mse: its MSE weight and activation quantizers")
ap.add_argument("--calib", type=int, default=1024)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

calib = calibration_batches(a.calib)
float_model = load_float_model()


def quantized(w, act, mse):
    m = preprocess_for_quantize(copy.deepcopy(float_model))  # BatchNorm merged into the convs
    WQ = Int8WeightPerChannelFloatMSE if mse else Int8WeightPerChannelFloat
    UQ = Uint8ActPerTensorFloatMSE if mse else Uint8ActPerTensorFloat
    SQ = Int8ActPerTensorFloatMSE if mse else Int8ActPerTensorFloat
    def conv(wb, ab, signed):
        return (qnn.QuantConv2d, {"weight_quant": WQ, "weight_bit_width": wb,
                                  "input_quant": SQ if signed else UQ,
                                  "input_bit_width": ab, "return_quant_tensor": False})
    layer_map = {nn.Conv2d: conv(w, act, False),
                 nn.Linear: (qnn.QuantLinear, {"weight_quant": WQ, "weight_bit_width": 8,
                                               "input_quant": UQ, "input_bit_width": act,
                                               "return_quant_tensor": False})}
    q = layerwise_quantize(m, compute_layer_map=layer_map)
    # first conv: 8-bit weights and 8-bit image input (the first-last-8bit rule)
    first = next(mod for mod in q.modules() if isinstance(mod, qnn.QuantConv2d))
    first8 = layerwise_quantize(nn.Sequential(nn.Conv2d(first.in_channels, first.out_channels, first.kernel_size,
                                                          first.stride, first.padding, bias=first.bias is not None)),
                                compute_layer_map={nn.Conv2d: conv(8, 8, False)})[0]
    first8.load_state_dict(first.state_dict(), strict=False)
    for name, mod in q.named_modules():
        for cname, child in mod.named_children():
            if child is first:
                setattr(mod, cname, first8)
    return q.eval()


for pair in a.pairs.split(","):
    w, act = int(pair[1:pair.index("A")]), int(pair[pair.index("A") + 1:])
    for method in a.methods.split(","):
        t0 = time.time()
        q = quantized(w, act, method.startswith("mse"))
        with torch.no_grad(), calibration_mode(q):
            for x in calib:
                q(x)
        with torch.no_grad():
            q(calib[0])  # initializes the weight quantizers (Brevitas' GPTQ needs them)
        if method == "bias_correction":
            with torch.no_grad(), bias_correction_mode(q):
                for x in calib:
                    q(x)
        if method in ("gptq", "mse_gptq"):
            with torch.no_grad(), gptq_mode(q) as g:
                for _ in range(g.num_layers):
                    for x in calib:
                        g.model(x)
                    g.update()
        seconds = time.time() - t0
        print(json.dumps({"peer": "brevitas 0.13.4", "pair": pair, "method": method, "top1": round(top1(q), 2),
                          "seconds": round(seconds, 1)}), flush=True)
