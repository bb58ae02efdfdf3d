"""What the peer scripts share: the shipped model as an nn.Module (models/train_fmnist.py's
FmnistResNet with the TorchScript file's weights), 1024 calibration images in batches of
128, the 10k test set, and top-1 on it."""
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "models"))
from train_fmnist import FmnistResNet, load_split  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def float_model():
    m = FmnistResNet()
    m.load_state_dict(dict(torch.jit.load(os.path.join(ROOT, "models", "fmnist_resnet.pt")).state_dict().items()))
    return m.eval()


def calibration_batches(samples=1024, batch=128):
    x, _ = load_split(DATA, "train")
    return [x[i:i + batch] for i in range(0, samples, batch)]


_test = None


def top1(m):
    global _test
    if _test is None:
        _test = load_split(DATA, "test")
    x, y = _test
    with torch.no_grad():
        return 100.0 * sum((m(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum().item()
                           for i in range(0, len(x), 500)) / len(x)
