"""How many conv, linear and matmul layers read a float activation under the sweep's W4A4
config, with and without the `feeds` rule (docs/config.md), on torchvision's modern networks
and a transformer encoder (random weights, scripted and traced, BatchNorm folded, calibrated
on 4 random inputs). The walk is python/tests/test_sweep_config_coverage.py's.

    OMP_NUM_THREADS=2 PYTHONPATH=python:tests:python/tests .venv/bin/python bench/sweep_coverage.py
"""
import warnings

import torch

import anybit
from test_sweep_config_coverage import ALGEBRA, MODELS, float_inputs

warnings.filterwarnings("ignore")
FEEDS = "  - {role: activation, feeds: [conv, linear, matmul], spec: 'auto4', optional: true}\n"
new = anybit.sweep_config("minmax", 4, 4)
old = new.replace(FEEDS, "")
assert old != new
print("| model | form | conv/linear/matmul ops | reading a float activation, without `feeds` | with `feeds` |")
print("|---|---|---:|---:|---:|")
for name, (make, shape) in MODELS.items():
    torch.manual_seed(0)
    m = make().eval()
    x = torch.randn(4, *shape)
    for form in ("script", "trace"):
        sm = torch.jit.script(m) if form == "script" else torch.jit.trace(m, x[:2], check_trace=False)
        counts = []
        for cfg in (old, new):
            qm = anybit.quantize(sm, cfg, calib_data=[x], fold_bn=True)
            counts.append(len(float_inputs(qm)))
        total = 0

        def walk(block):
            global total
            for n in block.nodes():
                for b in n.blocks():
                    walk(b)
                total += n.kind() in ALGEBRA
        walk(qm.inlined_graph)
        print(f"| {name} | {form} | {total} | {counts[0]} | {counts[1]} |", flush=True)
