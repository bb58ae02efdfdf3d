#!/usr/bin/env python3
"""Train anybit's shipped Fashion-MNIST model (FmnistResNet), deterministically.

Retrain with:   .venv/bin/python models/train_fmnist.py
                .venv/bin/python models/train_fmnist.py --normalize --name fmnist_resnet_norm
Quick test run: .venv/bin/python models/train_fmnist.py --epochs 1 --train-limit 2000 --out /tmp/fm

Input convention: float32 tensor [N, 1, 28, 28] = raw pixel / 255.0 (values in [0, 1]),
no mean/std normalization. With --normalize the model is trained the usual torchvision way,
on (pixel / 255 - 0.2860) / 0.3530 (ToTensor + Normalize((0.2860,), (0.3530,)), applied after
the augmentation as torchvision's transforms do), and takes such inputs. Output: logits [N, 10].

Writes into --out (default: the directory of this script), NAME = --name (fmnist_resnet):
  NAME.pt         torch.jit.script(model).save(...)
  NAME_traced.pt  torch.jit.trace(model, [1,1,28,28]).save(...), same weights
  NAME.json       metadata; accuracy measured on the reloaded scripted model
"""

import argparse
import gzip
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
ARCH = "FmnistResNet"
# torchvision-style Fashion-MNIST statistics (--normalize)
NORM_MEAN, NORM_STD = 0.2860, 0.3530
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


# ----------------------------------------------------------------------------- model

def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, + identity (or downsample), then ReLU.

    Each block owns its two ReLU modules (relu1, relu2) so that every activation point
    has its own module path. No in-place ops, no functional ReLU.
    """

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(cout, cout, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        else:
            self.downsample = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        identity = self.downsample(x)
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu1(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = out + identity
        out = self.relu2(out)
        return out


class FmnistResNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(
            conv3x3(1, 16, 1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.layer3 = BasicBlock(32, 64, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


# ----------------------------------------------------------------------------- data

def read_idx(path):
    """Read a gzip IDX file (ubyte) into a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if (magic >> 8) != 0x08:  # 0x08 = unsigned byte
        raise ValueError("%s: unsupported IDX type, magic 0x%08x" % (path, magic))
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    off = 4 + 4 * ndim
    arr = np.frombuffer(data, dtype=np.uint8, count=int(np.prod(dims)), offset=off)
    return arr.reshape(dims)


def load_split(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz"))
    assert images.shape[0] == labels.shape[0]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)  # [N,1,28,28]
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def augment(xb, gen, pad, flip_p):
    """Random crop with zero padding `pad` and random horizontal flip, per sample."""
    n = xb.shape[0]
    if pad > 0:
        h, w = xb.shape[2], xb.shape[3]
        padded = F.pad(xb, (pad, pad, pad, pad))
        offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
        # gather-based crop: build per-sample row/col indices
        rows = offs[:, 0:1] + torch.arange(h).unsqueeze(0)  # [n,h]
        cols = offs[:, 1:2] + torch.arange(w).unsqueeze(0)  # [n,w]
        idx_r = rows.view(n, 1, h, 1).expand(n, 1, h, padded.shape[3])
        tmp = torch.gather(padded, 2, idx_r)                 # [n,1,h,W+2p]
        idx_c = cols.view(n, 1, 1, w).expand(n, 1, h, w)
        xb = torch.gather(tmp, 3, idx_c)                     # [n,1,h,w]
    if flip_p <= 0:
        return xb
    flip = torch.rand(n, generator=gen) < flip_p
    if bool(flip.any()):
        xb = xb.clone()
        xb[flip] = torch.flip(xb[flip], dims=[3])
    return xb


def normalize(x, norm):
    """(x - mean) / std with norm = (mean, std), or x unchanged for norm None."""
    return x if norm is None else (x - norm[0]) / norm[1]


@torch.no_grad()
def evaluate(model, x, y, batch=1000, norm=None):
    correct = 0
    for i in range(0, x.shape[0], batch):
        logits = model(normalize(x[i:i + batch], norm))
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    return correct / x.shape[0]


# ----------------------------------------------------------------------------- main

def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", default=here, help="output directory (default: %(default)s)")
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    ap.add_argument("--train-limit", type=int, default=0,
                    help="use only the first N training images (0 = all); for quick tests")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--pad", type=int, default=2, help="random-crop padding (0 = off)")
    ap.add_argument("--no-flip", action="store_true", help="disable horizontal flip")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--normalize", action="store_true",
                    help="train and save a model that takes (x - %g) / %g inputs (torchvision Normalize)"
                         % (NORM_MEAN, NORM_STD))
    ap.add_argument("--name", default="fmnist_resnet", help="file name stem (default: %(default)s)")
    ap.add_argument("--no-channels-last", action="store_true",
                    help="train in NCHW instead of channels_last (speed only; the saved "
                         "model is always contiguous NCHW)")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    norm = (NORM_MEAN, NORM_STD) if args.normalize else None

    x_train, y_train = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "test")
    if args.train_limit > 0:
        x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    n_train, n_test = x_train.shape[0], x_test.shape[0]
    print("train %d, test %d, epochs %d, threads %d, torch %s"
          % (n_train, n_test, args.epochs, torch.get_num_threads(), torch.__version__),
          flush=True)

    model = FmnistResNet()
    mf = torch.contiguous_format if args.no_channels_last else torch.channels_last
    model = model.to(memory_format=mf)
    n_params = sum(p.numel() for p in model.parameters())
    print("%s: %d parameters" % (ARCH, n_params), flush=True)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no wd on BN and biases
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    total_steps = max(1, args.epochs * steps_per_epoch)
    warmup = min(steps_per_epoch // 2, total_steps // 10)

    def lr_at(step):  # short linear warmup, then cosine to 0
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * args.lr * (1.0 + math.cos(math.pi * t))

    loss_fn = nn.CrossEntropyLoss()
    step = 0
    test_acc = float("nan")
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        te = time.time()
        perm = torch.randperm(n_train, generator=gen)
        tot_loss, tot_correct = 0.0, 0
        for i in range(0, n_train, args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            xb = normalize(augment(xb, gen, args.pad, 0.0 if args.no_flip else 0.5), norm)
            xb = xb.contiguous(memory_format=mf)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tot_loss += float(loss) * yb.shape[0]
            tot_correct += int((logits.argmax(1) == yb).sum())
        model.eval()
        test_acc = evaluate(model, x_test, y_test, norm=norm)
        print("epoch %2d/%d  loss %.4f  train_acc %.4f  test_acc %.4f  lr %.4f  %.1fs"
              % (epoch + 1, args.epochs, tot_loss / n_train, tot_correct / n_train,
                 test_acc, lr_at(min(step, total_steps - 1)), time.time() - te),
              flush=True)
    train_wall = time.time() - t0

    model.eval()
    model = model.to(memory_format=torch.contiguous_format)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        assert t.is_contiguous(), name
    os.makedirs(args.out, exist_ok=True)
    script_path = os.path.join(args.out, args.name + ".pt")
    traced_path = os.path.join(args.out, args.name + "_traced.pt")
    json_path = os.path.join(args.out, args.name + ".json")

    scripted = torch.jit.script(model)
    scripted.save(script_path)
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(1, 1, 28, 28))
    traced.save(traced_path)

    # Measure on the reloaded artifacts, not on the in-memory model.
    loaded = torch.jit.load(script_path)
    loaded.eval()
    acc_script = evaluate(loaded, x_test, y_test, norm=norm)
    loaded_tr = torch.jit.load(traced_path)
    loaded_tr.eval()
    acc_traced = evaluate(loaded_tr, x_test, y_test, norm=norm)
    with torch.no_grad():
        probe = normalize(x_test[:256], norm)
        max_diff = float((loaded(probe) - loaded_tr(probe)).abs().max())
    print("reloaded scripted test_acc %.4f, traced test_acc %.4f, max |script-traced| %.3g"
          % (acc_script, acc_traced, max_diff), flush=True)

    argv_used = sys.argv[1:] if argv is None else list(argv)
    meta = {
        "architecture": ARCH,
        "description": "small ResNet: stem conv3x3(1->16)+BN+ReLU, BasicBlocks "
                       "16->16 (s1), 16->32 (s2), 32->64 (s2), global avg pool, Linear(64->10)",
        "num_parameters": n_params,
        "input": {"shape": [None, 1, 28, 28], "dtype": "float32",
                  "convention": ("(pixel / 255.0 - %g) / %g (torchvision Normalize); anybit data spec "
                                 "fmnist::test:mean=%g:std=%g" % (NORM_MEAN, NORM_STD, NORM_MEAN, NORM_STD))
                                if norm else "raw pixel / 255.0, values in [0,1], no mean/std normalization"},
        "output": {"shape": [None, 10], "kind": "logits"},
        "classes": CLASSES,
        "test_accuracy": acc_script,
        "test_accuracy_traced": acc_traced,
        "test_accuracy_measured_on": os.path.basename(script_path) + " reloaded with torch.jit.load, eval mode, "
                                     "full 10k Fashion-MNIST test set",
        "last_epoch_test_accuracy_in_memory": test_acc,
        "train_size": n_train,
        "test_size": n_test,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": "SGD momentum 0.9 nesterov, lr %g, weight decay %g (not on BN/bias), "
                     "linear warmup %d steps then cosine to 0" % (args.lr, args.weight_decay, warmup),
        "augmentation": "random crop pad %d, horizontal flip %s" % (args.pad, not args.no_flip),
        "seed": args.seed,
        "threads": args.threads,
        "train_wall_time_s": round(train_wall, 1),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "files": {"scripted": os.path.basename(script_path),
                  "traced": os.path.basename(traced_path)},
        "file_sizes_bytes": {"scripted": os.path.getsize(script_path),
                             "traced": os.path.getsize(traced_path)},
        "retrain_command": "/usr/bin/python3 models/train_fmnist.py" + (" --normalize --name " + args.name
                                                                         if norm else ""),
        "this_run_args": argv_used,
        "data": os.path.abspath(args.data_dir),
    }
    with open(json_path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print("wrote %s, %s, %s" % (script_path, traced_path, json_path), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
