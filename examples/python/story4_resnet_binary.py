"""Story 4: first layer 8-bit input and weights, every other layer binarized, the
classifier left in float, on torchvision ResNet-18.
Run: PYTHONPATH=python .venv/bin/python examples/python/story4_resnet_binary.py"""
import os

import torch
import torchvision

import anybit

here = os.path.dirname(os.path.abspath(__file__))
model = torchvision.models.resnet18(weights=None).eval()
qm, report = anybit.quantize(model, os.path.join(here, "..", "story4_binary.yaml"),
                             calib_data=[torch.rand(2, 3, 64, 64)], return_report=True)
counts = {}
for r in report:
    counts[r["spec"]] = counts.get(r["spec"], 0) + 1
print("points per spec:", counts)
print("output:", tuple(qm(torch.rand(1, 3, 64, 64)).shape))
