"""Story 5: from outside, by layer type: binarize every ReLU output of MobileNetV2
(35 ReLU6 calls), and quantize the output of every op to 8 bits on ResNet-18.
Run: PYTHONPATH=python .venv/bin/python examples/python/story5_binarize_relus.py"""
import torch
import torchvision

import anybit

mnv2 = torchvision.models.mobilenet_v2(weights=None).eval()
# ReLU6 outputs are >= 0: their binary quantizer is uint1, levels {0, s}
q = anybit.quantize(mnv2, {"rules": [{"kind": "relu", "spec": "uint1"}]}, calib_data=[torch.rand(2, 3, 96, 96)])
levels = [torch.unique(v).numel() for _, _, v in anybit.quantizer_outputs(q, torch.rand(2, 3, 96, 96))]
print(f"{len(levels)} ReLU outputs binarized; levels per output: {sorted(set(levels))}")

r18 = torchvision.models.resnet18(weights=None).eval()
plan = anybit.plan(r18, {"rules": [{"kind": "any", "role": "activation", "spec": "int8"}]})
print(sum(p["spec"] == "int8" for p in plan), "op outputs of ResNet-18 get int8")
