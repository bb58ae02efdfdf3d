"""anybit.search (mixed precision) from Python: on an nn.Module nobody designed for it,
within each budget kind, with the config it writes taken by anybit.quantize unchanged."""
import os

import pytest
import torch

import anybit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FMNIST = os.path.join(ROOT, "models", "fmnist_resnet.pt")
CALIB = "fmnist::train:limit=256"
EVAL = "fmnist::test:limit=300"


class Small(torch.nn.Module):
    """Convs with and without bias, a grouped conv and a linear, untrained."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2, bias=False)
        self.fc = torch.nn.Linear(16 * 14 * 14, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(torch.flatten(x, 1))


def _count(layers):
    # by hand: c1 8*1*9 weights, 28*28*8*9 MACs; c2 16*4*9, 14*14*16*36; fc 10*3136, 31360
    hand = {"c1.weight": (72, 8, 56448), "c2.weight": (576, 16, 112896), "fc.weight": (31360, 10, 31360)}
    assert {l["point"]: (l["params"], l["macs"]) for l in layers} == {k: (p, m) for k, (p, _, m) in hand.items()}
    return hand


def test_search_a_module_within_each_budget(tmp_path):
    m = Small().eval()
    r = anybit.search(m, tmp_path / "a", "avg-wbits=3", weights=(2, 4, 8), calib_data=CALIB, eval_data=EVAL,
                      calib_batches=2, sensitivity_samples=128)
    hand = _count(r["layers"])
    bits = sum(hand[l["point"]][0] * l["wbits"] for l in r["layers"])
    assert bits <= 3 * sum(p for p, _, _ in hand.values())
    assert os.path.exists(r["config"])
    row = [x for x in r["rows"] if x["config"] == "config.yaml"][0]
    assert row["avg_wbits"] == pytest.approx(bits / 32008)
    # the config, given to quantize unchanged, reproduces the reported accuracy
    q = anybit.quantize(os.path.join(tmp_path, "a", "Small.pt"), r["config"], calib_data=CALIB, calib_batches=2,
                        fold_bn=True)
    assert anybit.evaluate(q, EVAL)["top1"] == pytest.approx(row["top1"], abs=1e-9)

    r = anybit.search(m, tmp_path / "a", "size=12KiB", weights=(2, 4, 8), calib_data=CALIB, eval_data=EVAL,
                      calib_batches=2, sensitivity_samples=128, resume=True)
    size_bits = sum(hand[l["point"]][0] * l["wbits"] + 32 * hand[l["point"]][1] for l in r["layers"])
    assert size_bits <= 12 * 1024 * 8
    r = anybit.search(m, tmp_path / "b", "bops=0.3", weights=(2, 4, 8), acts=(4, 8), calib_data=CALIB,
                      eval_data=EVAL, calib_batches=2, sensitivity_samples=128)
    bops = sum(hand[l["point"]][2] * l["wbits"] * l["abits"] for l in r["layers"])
    assert bops <= 0.3 * 64 * sum(mc for _, _, mc in hand.values())
    assert {l["abits"] for l in r["layers"]} <= {4, 8}


def test_bad_budget_is_an_anybit_error(tmp_path):
    with pytest.raises(anybit.Error, match="below the least"):
        anybit.search(FMNIST, tmp_path / "c", "avg-wbits=1", calib_data=CALIB, eval_data=EVAL)
    with pytest.raises(anybit.Error, match="unknown budget kind"):
        anybit.search(FMNIST, tmp_path / "d", "joules=1", calib_data=CALIB, eval_data=EVAL)


def test_search_torchvision_mobilenet_v2_traced(tmp_path):
    """Any model: every conv and linear of a traced torchvision MobileNetV2 (inputs normalized
    as torchvision does) gets a width, and every one reads a quantized input: the linear
    bottleneck (the projection conv's output after BatchNorm folding, read by the next block's
    conv) gets its quantizer from the config's `feeds` rule."""
    import numpy as np
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v2(weights=None, num_classes=10).eval()
    x = (torch.rand(96, 3, 32, 32) - 0.45) / 0.225
    with torch.no_grad():
        y = m(x).argmax(1)
    torch.jit.trace(m, x[:1]).save(str(tmp_path / "mnv2.pt"))
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    data = f"npy:{tmp_path}/x.npy:{tmp_path}/y.npy"
    # untrained, its logits are about 1e-10 for every class: KL cannot rank, and says so
    with pytest.raises(anybit.Error, match="softmax outputs on the calibration samples are uniform"):
        anybit.search(str(tmp_path / "mnv2.pt"), tmp_path / "kl", "avg-wbits=6", calib_data=data, eval_data=data)
    r = anybit.search(str(tmp_path / "mnv2.pt"), tmp_path / "s", "avg-wbits=6", weights=(4, 8), uniform=(4,),
                      metric="sqnr", calib_data=data, eval_data=data, calib_batches=1, sensitivity_samples=32)
    convs = [n for n, mod in m.named_modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [l["point"] for l in r["layers"]] == [n + ".weight" for n in convs]
    params = {n + ".weight": mod.weight.numel() for n, mod in m.named_modules()
              if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))}
    assert all(l["params"] == params[l["point"]] for l in r["layers"])
    assert sum(l["params"] * l["wbits"] for l in r["layers"]) <= 6 * sum(params.values())
    assert all(l["macs"] > 0 for l in r["layers"])
    assert all(l["input"] and l["abits"] == 8 for l in r["layers"]), [l for l in r["layers"] if not l["input"]]
    bottleneck = [l for l in r["layers"] if l["input"].endswith(".conv.2:out") or l["input"].endswith(".conv.3:out")]
    assert bottleneck, sorted({l["input"] for l in r["layers"]})
    assert {l["wbits"] for l in r["layers"]} == {4, 8}  # the budget is spent, not all at one width
