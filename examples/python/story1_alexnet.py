"""Story 1: AlexNet with per-layer bits, from outside the model.
11-bit weights in every conv, 10-9-9 bits for the FC layers, 9-8-5-5-7 bits for the five
ReLU outputs of `features`. Run: PYTHONPATH=python .venv/bin/python examples/python/story1_alexnet.py"""
import os

import torch
import torchvision

import anybit

here = os.path.dirname(os.path.abspath(__file__))
model = torchvision.models.alexnet(weights=None).eval()  # any trained weights work the same way
calib = [torch.rand(4, 3, 224, 224) for _ in range(2)]   # use real images for real accuracy
qm, report = anybit.quantize(model, os.path.join(here, "..", "story1_alexnet.yaml"),
                             calib_data=calib, return_report=True)
for r in report:
    if r["spec"] != "float":
        print(f"{r['name']:<22} {r['spec']:<8} {r['params_chosen']}")
print("output shape:", tuple(qm(torch.rand(1, 3, 224, 224)).shape))
