"""Exports torchvision models (random weights, no download) as scripted and traced
TorchScript files for anybit's tests: python3 tests/export_torchvision.py OUT_DIR [names]."""
import os
import sys

import torch
import torchvision


class RootBn(torch.nn.Module):
    """Conv + BatchNorm directly on the root module (not nested), with and without conv bias."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 10)
        for bn in (self.bn1, self.bn2):  # statistics that make folding visible
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(-1.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class AdaptivePool(torch.nn.Module):
    """AlexNet's shape in small: conv features (the feature map keeps the input's size), then
    adaptive average pooling to 6x6 whatever that size is (windows that overlap and differ
    in size), then the classifier."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
            torch.nn.MaxPool2d(3, stride=1, padding=1),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(inplace=True))
        self.avgpool = torch.nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = torch.nn.Sequential(
            torch.nn.Dropout(), torch.nn.Linear(16 * 6 * 6, 32), torch.nn.ReLU(inplace=True),
            torch.nn.Linear(32, 10))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def main():
    out = sys.argv[1]
    names = sys.argv[2:] or ["alexnet", "resnet18", "mobilenet_v2", "root_bn", "adaptive_pool"]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name in names:
        for mode in ("script", "trace"):
            path = os.path.join(out, f"{name}_{mode}.pt")
            if os.path.exists(path):
                continue
            if name == "root_bn":
                torch.manual_seed(1)  # its own seed: the same model whichever files exist
                model = RootBn().eval()
            elif name == "adaptive_pool":
                torch.manual_seed(2)
                model = AdaptivePool().eval()
            else:
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
