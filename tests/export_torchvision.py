"""Exports torchvision models (random weights, no download) as scripted and traced
TorchScript files for anybit's tests: python3 tests/export_torchvision.py OUT_DIR [names]."""
import os
import sys

import torch
import torchvision


def main():
    out = sys.argv[1]
    names = sys.argv[2:] or ["alexnet", "resnet18", "mobilenet_v2"]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name in names:
        for mode in ("script", "trace"):
            path = os.path.join(out, f"{name}_{mode}.pt")
            if os.path.exists(path):
                continue
            model = getattr(torchvision.models, name)(weights=None).eval()
            if mode == "script":
                m = torch.jit.script(model)
            else:
                m = torch.jit.trace(model, torch.randn(1, 3, 224, 224))
            tmp = path + ".tmp"
            m.save(tmp)
            os.replace(tmp, path)
            print(path)


if __name__ == "__main__":
    main()
