"""GPTQ (quantize(..., gptq=True), `anybit quantize --gptq`) on torchvision architectures,
scripted and traced, inputs normalized as torchvision does: every conv and linear weight
(depthwise convs too) lands on its grid and the model's output is closer to float than with
round-to-nearest on the same grid."""
import pytest
import torch
import torchvision

import anybit

CONFIG = {"weight_calibrator": "mse", "calibrator": "mse",
          "rules": [{"kind": ["conv", "linear"], "role": "weight", "spec": "int3:per_channel"},
                    {"role": "input", "spec": "auto8"},
                    {"kind": ["relu", "act", "add", "pool"], "spec": "auto8", "optional": True}]}


@pytest.mark.parametrize("arch,mode", [("resnet18", "trace"), ("mobilenet_v2", "script")])
def test_gptq_on_torchvision(arch, mode):
    torch.manual_seed(0)
    m = getattr(torchvision.models, arch)(weights=None, num_classes=10)
    x = (torch.rand(64, 3, 32, 32) - 0.45) / 0.225
    # BatchNorm statistics of the inputs, as a trained network has them (an untrained
    # MobileNetV2's logits are otherwise about 1e-10)
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(x)
    m.eval()
    sm = torch.jit.trace(m, x[:1]) if mode == "trace" else torch.jit.script(m)
    with torch.no_grad():
        ref = m(x)
    near = anybit.quantize(sm, CONFIG, calib_data=x, fold_bn=True)
    g = anybit.quantize(sm, CONFIG, calib_data=x, fold_bn=True, gptq=True)
    with torch.no_grad():
        e_near = (near(x) - ref).pow(2).mean().item()
        e_gptq = (g(x) - ref).pow(2).mean().item()
    assert e_gptq < e_near, (e_gptq, e_near)
    # each weight is either GPTQ'd (on its grid: the quantizer node gives it back unchanged)
    # or, where GPTQ did not beat nearest rounding on its objective, rounded to nearest as
    # without GPTQ; most are GPTQ'd, with other integers than nearest rounding
    def attr(mod, path):
        for p in path.split("."):
            mod = getattr(mod, p)
        return mod

    gptqd = differ = 0
    near_out = {n: v for n, _, v in anybit.quantizer_outputs(near, x[:2])}
    names = [n for n, _, _ in anybit.quantizer_outputs(g, x[:2]) if n.endswith(".weight")]
    for name, _, value in anybit.quantizer_outputs(g, x[:2]):
        if not name.endswith(".weight"):
            continue
        if torch.equal(attr(g, name).detach(), value):
            gptqd += 1
            differ += not torch.equal(value, near_out[name])
        else:
            assert torch.equal(value, near_out[name]), name
    convs = [n for n, mod in m.named_modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(names) == len(convs)
    assert gptqd >= 0.6 * len(convs) and differ >= 0.5 * len(convs), (gptqd, differ, len(convs))
