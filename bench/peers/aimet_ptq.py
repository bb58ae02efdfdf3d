"""AIMET (aimet-torch) post-training quantization of the shipped Fashion-MNIST model at the
peer table's pairs (bench/peers/run.sh runs it in AIMET's own venv). AIMET places its own
quantizers (its per-channel default config: symmetric per-channel conv/linear weights, every
op's output after a conv+ReLU, add+ReLU or linear+ReLU group, the model input); the bit
widths are its default_param_bw / default_output_bw, with the first conv's weights, the
classifier's weights and the model input at 8 bits (the sweep's --first-last-8bit).
BatchNorm is folded first (AIMET's fold_all_batch_norms). Methods: `ptq` (AIMET's default
calibration, post_training_tf_enhanced) and `adaround` (AIMET's AdaRound, 3000 iterations
per layer as anybit's, then the same calibration of the activations). Prints one JSON line
per (pair, method); a pair AIMET refuses is a line with its error.

    python bench/peers/aimet_ptq.py --pairs W8A8,W4A4 [--methods ptq,adaround] [--calib 1024] [--threads 2]
"""
import argparse
import copy
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmnist import calibration_batches, float_model as load_float_model, top1  # noqa: E402

import aimet_torch  # noqa: E402
from aimet_torch.adaround.adaround_weight import Adaround, AdaroundParameters  # noqa: E402
from aimet_torch.batch_norm_fold import fold_all_batch_norms  # noqa: E402
from aimet_torch.common.defs import QuantScheme  # noqa: E402
from aimet_torch.quantization.affine import QuantizeDequantize  # noqa: E402
from aimet_torch.quantsim import QuantizationSimModel  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--pairs", default="W8A8,W4A4,W3A3,W2A4,W2A2")
ap.add_argument("--methods", default="ptq,adaround")
ap.add_argument("--calib", type=int, default=1024)
ap.add_argument("--adaround-iterations", type=int, default=3000)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
calib = calibration_batches(a.calib)
dummy = torch.zeros(1, 1, 28, 28)
CONFIG = os.path.join(os.path.dirname(aimet_torch.__file__), "common", "quantsim_config",
                      "default_config_per_channel.json")
VERSION = getattr(aimet_torch, "__version__", "2.42.0")


def folded():
    m = copy.deepcopy(load_float_model())
    fold_all_batch_norms(m, input_shapes=(1, 1, 28, 28))
    return m.eval()


def forward(model, _):
    with torch.no_grad():
        for x in calib:
            model(x)


def eight_bit_ends(sim, model):
    """The first conv's weights and input and the classifier's weights at 8 bits."""
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    qm = dict(sim.model.named_modules())
    for name in (convs[0], linears[-1]):
        q = qm[name].param_quantizers["weight"]
        qm[name].param_quantizers["weight"] = QuantizeDequantize(q.shape, bitwidth=8, symmetric=True)
    q = qm[convs[0]].input_quantizers[0]
    if q is not None:
        qm[convs[0]].input_quantizers[0] = QuantizeDequantize(q.shape, bitwidth=8, symmetric=False)
    return [dict(model.named_modules())[n] for n in (convs[0], linears[-1])]


for pair in a.pairs.split(","):
    w, act = int(pair[1:pair.index("A")]), int(pair[pair.index("A") + 1:])
    for method in a.methods.split(","):
        t0 = time.time()
        row = {"peer": f"aimet-torch {VERSION}", "pair": pair, "method": method}
        try:
            model = folded()
            if method == "adaround":
                ends = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
                params = AdaroundParameters(data_loader=[(x, None) for x in calib], num_batches=len(calib),
                                            default_num_iterations=a.adaround_iterations,
                                            forward_fn=lambda m, batch: m(batch[0]))
                with tempfile.TemporaryDirectory() as d:
                    model = Adaround.apply_adaround(model, dummy, params, path=d, filename_prefix="adaround",
                                                    default_param_bw=w,
                                                    param_bw_override_list=[(ends[0], 8), (ends[-1], 8)],
                                                    default_quant_scheme=QuantScheme.post_training_tf_enhanced,
                                                    default_config_file=CONFIG)
                    sim = QuantizationSimModel(model, dummy, quant_scheme=QuantScheme.post_training_tf_enhanced,
                                               default_output_bw=act, default_param_bw=w, config_file=CONFIG)
                    eight_bit_ends(sim, model)
                    sim.set_and_freeze_param_encodings(os.path.join(d, "adaround.encodings"))
                    sim.compute_encodings(forward, None)
            else:
                sim = QuantizationSimModel(model, dummy, quant_scheme=QuantScheme.post_training_tf_enhanced,
                                           default_output_bw=act, default_param_bw=w, config_file=CONFIG)
                eight_bit_ends(sim, model)
                sim.compute_encodings(forward, None)
            row["seconds"] = round(time.time() - t0, 1)
            row["top1"] = round(top1(sim.model), 2)
        except Exception as e:  # a pair AIMET cannot express: say so
            row["error"] = (str(e).splitlines() or [type(e).__name__])[0][:200]
        print(json.dumps(row), flush=True)
