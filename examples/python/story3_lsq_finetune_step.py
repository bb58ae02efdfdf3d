"""Story 3 (the quantizer side): fixed-point and LSQ weights whose step learns. The
quantized module trains with autograd: here one SGD step on Fashion-MNIST images; the
fine-tuning loop itself is `anybit finetune` (see the fine-tuning issue).
Run: PYTHONPATH=python .venv/bin/python examples/python/story3_lsq_finetune_step.py"""
import os

import torch

import anybit

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
model = torch.jit.load(os.path.join(root, "models", "fmnist_resnet.pt"))
cfg = {"rules": [{"kind": "conv", "role": "weight", "spec": "int4:per_channel:lsq"},
                 {"kind": "linear", "role": "weight", "spec": "fixed:Q0.7"}]}
qm = anybit.quantize(model, cfg)
qm.train()
opt = torch.optim.SGD(qm.parameters(), lr=0.01)
x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
loss = torch.nn.functional.cross_entropy(qm(x), y)
loss.backward()
step = qm.anybit__stem_0_weight__scale
print("stem step sizes learn: grad norm", float(step.grad.norm()))
opt.step()
