"""Story 2: how accuracy falls with bits. Post-training quantization of the shipped
Fashion-MNIST model at W8A8..W2A2, calibrated on 512 training images, evaluated on 1000
test images (use the whole set for paper numbers: `anybit sweep`).
Run: PYTHONPATH=python .venv/bin/python examples/python/story2_sweep.py"""
import os

import torch

import anybit

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
model = torch.jit.load(os.path.join(root, "models", "fmnist_resnet.pt"))
test = "fmnist::test:limit=1000"
print(f"float: {anybit.evaluate(model, test)['top1']:.2f}%")
for bits in (8, 6, 4, 3, 2):
    cfg = {"calibrator": "mse", "weight_calibrator": "mse", "rules": [
        {"kind": ["conv", "linear"], "role": "weight", "spec": f"int{bits}:per_channel"},
        {"role": "input", "spec": f"uint{bits}"},
        {"kind": ["relu", "pool"], "spec": f"uint{bits}"},
        {"kind": "add", "spec": f"int{bits}"}]}
    qm = anybit.quantize(model, cfg, calib_data="fmnist::train:limit=512", calib_batches=4)
    r = anybit.evaluate(qm, test, reference=model)
    print(f"W{bits}A{bits}: {r['top1']:.2f}%  agreement with float {r['agreement']:.1f}%")
