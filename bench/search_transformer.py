"""`anybit search` on a transformer (closing-note figure): two nn.TransformerEncoderLayer of
width 32 and a linear head, untrained, scripted and traced; 256 random token sequences
labelled by the float model's own argmax serve as calibration and evaluation data, so top-1
is agreement with float on the calibration data.

    PYTHONPATH=python .venv/bin/python bench/search_transformer.py [--out DIR]
"""
import argparse
import os
import shutil
import warnings

import numpy as np
import torch

import anybit

warnings.filterwarnings("ignore")
ap = argparse.ArgumentParser()
ap.add_argument("--out", default="/tmp/anybit-search-transformer")
a = ap.parse_args()
shutil.rmtree(a.out, ignore_errors=True)
os.makedirs(a.out)
torch.manual_seed(0)


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.enc(x).mean(1))


m = M().eval()
x = torch.randn(256, 8, 32)
with torch.no_grad():
    y = m(x).argmax(1)
np.save(f"{a.out}/x.npy", x.numpy())
np.save(f"{a.out}/y.npy", y.numpy())
data = f"npy:{a.out}/x.npy:{a.out}/y.npy"
for mode in ("script", "trace"):
    sm = torch.jit.script(m) if mode == "script" else torch.jit.trace(m, x[:1], check_trace=False)
    sm.save(f"{a.out}/{mode}.pt")
    r = anybit.search(f"{a.out}/{mode}.pt", f"{a.out}/search_{mode}", "avg-wbits=4", weights=(2, 4, 8),
                      calib_data=data, eval_data=data, calib_batches=2, sensitivity_samples=128, uniform=(4,))
    print(mode, len(r["layers"]), "layers:", ", ".join(f"{l['point']} W{l['wbits']} (input {l['input'] or 'float'})"
                                                     for l in r["layers"]))
    for row in r["rows"]:
        print(f"  {row['kind']:<8} {row['label']:<20} {row['avg_wbits']:.3f} bits  top-1 {row['top1']:.2f}%")
