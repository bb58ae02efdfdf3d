"""Fast evaluation of modern networks (issue 23): torchvision's MobileNetV3, EfficientNet,
RegNet (squeeze-excite), ConvNeXt (LayerNorm, GELU, permutes) and a ViT, scripted and traced,
float and W8A8, evaluate on the fused oneDNN layers (ops outside them through ATen) with the
interpreter's predictions; what runs where is in the result's note."""
import warnings

import pytest
import torch
import torchvision

import anybit
from zoo import _config  # tests/zoo.py's W8A8 recipe

warnings.filterwarnings("ignore", category=FutureWarning)


def _vit():
    m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                             hidden_dim=64, mlp_dim=128)
    torch.nn.init.normal_(m.heads.head.weight, std=0.02)  # torchvision zero-initializes the head
    torch.nn.init.normal_(m.class_token, std=1.0)
    return m


MODELS = {
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(weights=None), 64),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(weights=None), 64),
    "regnet_y_400mf": (lambda: torchvision.models.regnet_y_400mf(weights=None), 64),
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(weights=None), 64),
    "vit": (_vit, 32),
}
# (model, form, quantized)
CASES = [(m, f, False) for m in MODELS for f in ("script", "trace")] + \
        [("mobilenet_v3_small", "script", True), ("regnet_y_400mf", "trace", True), ("vit", "script", True),
         ("vit", "trace", True), ("convnext_tiny", "script", True)]


@pytest.mark.parametrize("name,form,quantized", CASES)
def test_modern_networks_evaluate_on_onednn_with_the_interpreters_predictions(name, form, quantized):
    torch.manual_seed(0)
    build, size = MODELS[name]
    m = build().eval()
    x = torch.randn(32, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = m(x).argmax(1)
    sm = torch.jit.script(m) if form == "script" else torch.jit.trace(m, x[:2], check_trace=False)
    if quantized:
        sm = anybit.quantize(sm, _config(anybit.points(sm)), calib_data=[x[:16]], fold_bn=True)
    data = [(x, y)]
    fused = anybit.evaluate(sm, data, batch_size=32)
    interp = anybit.evaluate(sm, data, batch_size=32, fused=False)
    assert fused["runtime"] == "onednn", fused["runtime_note"]
    assert interp["runtime"] == "torchscript"
    assert fused["top1"] == interp["top1"]
    assert abs(fused["loss"] - interp["loss"]) <= 1e-3 * max(1.0, abs(interp["loss"]))
    # the note says how much ran where
    assert " ops on oneDNN, " in fused["runtime_note"] and " conv and linear layers in int8" in fused["runtime_note"]


def test_a_model_that_cannot_compile_falls_back_and_names_why():
    class Loop(torch.nn.Module):
        def forward(self, x):
            for _ in range(x.size(0)):
                x = x * 0.5
            return torch.flatten(x, 1)

    x = torch.randn(4, 3, 2, 2)
    r = anybit.evaluate(torch.jit.script(Loop()), [(x, torch.zeros(4, dtype=torch.long))], batch_size=4)
    assert r["runtime"] == "torchscript"
    assert "prim::Loop" in r["runtime_note"]
