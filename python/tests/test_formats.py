"""Number formats beyond integers: minifloats (fpN:eXmY) equal PyTorch's own float8 casts;
torchvision models (scripted and traced, signed inputs, a transformer) quantize to
minifloat, MX, NVFP4 and codebook formats and evaluate fused with the interpreter's
predictions; none of them exports to the integer engine."""
import warnings

import pytest
import torch
import torchvision

import anybit

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.mark.parametrize("e,m,dtype", [(4, 3, torch.float8_e4m3fn), (5, 2, torch.float8_e5m2)])
def test_fp8_at_unit_scale_equals_torchs_float8_cast(e, m, dtype):
    codes = torch.arange(256, dtype=torch.uint8).view(dtype).float()
    values = codes[torch.isfinite(codes)].unique()  # sorted, -max..max
    mids = (values[1:] + values[:-1]) / 2  # every tie
    top = values.max().item()
    g = torch.Generator().manual_seed(0)
    rnd = (torch.randn(200000, generator=g) * torch.exp2(torch.randint(-20, 12, (200000,), generator=g).float()))
    rnd = rnd[rnd.abs() <= top]  # PyTorch's cast overflows to NaN or inf beyond; anybit's saturates
    x = torch.cat([values, mids, rnd])
    y = torch.ops.anybit.fake_quant_minifloat(x, torch.ones(1), -1, 0, e, m, 1.0)
    assert torch.equal(y, x.to(dtype).float())
    # beyond the largest value anybit saturates (the OCP saturating conversion)
    big = torch.tensor([top * 1.5, -top * 3, float("inf")])
    assert torch.equal(torch.ops.anybit.fake_quant_minifloat(big, torch.ones(1), -1, 0, e, m, 1.0),
                       torch.tensor([top, -top, top]))


def _vit():
    m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                             hidden_dim=64, mlp_dim=128)
    torch.nn.init.normal_(m.heads.head.weight, std=0.02)
    torch.nn.init.normal_(m.class_token, std=1.0)
    return m


CONFIG = {"rules": [{"kind": ["conv", "linear"], "role": "weight", "spec": "fp8:e4m3:per_channel"},
                    {"role": ["input", "activation"], "spec": "fp8:e4m3"}]}


@pytest.mark.parametrize("name,form", [("resnet18", "script"), ("resnet18", "trace"), ("vit", "script"),
                                       ("vit", "trace")])
def test_torchvision_models_quantize_to_fp8_and_evaluate_fused(name, form, tmp_path):
    torch.manual_seed(0)
    m = (torchvision.models.resnet18(weights=None) if name == "resnet18" else _vit()).eval()
    # inputs normalized as torchvision does: signed, which a minifloat holds without a zero point
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1)) - mean) / std
    with torch.no_grad():
        y = m(x).argmax(1)
    sm = torch.jit.script(m) if form == "script" else torch.jit.trace(m, x[:2], check_trace=False)
    q = anybit.quantize(sm, CONFIG, calib_data=[x[:16]], fold_bn=True)
    kinds = [n.kind() for n in q.inlined_graph.nodes()]
    assert kinds.count("anybit::fake_quant_minifloat") >= (20 if name == "resnet18" else 10)
    data = [(x, y)]
    fused = anybit.evaluate(q, data, batch_size=32)
    interp = anybit.evaluate(q, data, batch_size=32, fused=False)
    if name == "vit" or fused["runtime"] == "onednn":
        assert fused["runtime"] == "onednn", fused["runtime_note"]
        assert fused["top1"] == interp["top1"]
    else:
        # a random ResNet's logits are nearly tied: conv summation order flips an FP8 rounding,
        # and the first-batch check hands the evaluation back to the interpreter, saying so
        assert "agree with the interpreter" in fused["runtime_note"], fused["runtime_note"]
        assert fused["top1"] == interp["top1"]
    # FP8 keeps most of the float model's predictions
    assert fused["top1"] >= 75.0
    with pytest.raises(anybit.Error, match="minifloat values have no integer export"):
        anybit.export(q, tmp_path / "int")


@pytest.mark.parametrize("fmt", ["mxfp8:e4m3", "mxfp4", "mxint8", "nvfp4", "nf4", "lut4"])
def test_a_transformer_quantizes_to_block_and_codebook_formats(fmt, tmp_path):
    torch.manual_seed(0)
    m = _vit().eval()
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = m(x).argmax(1)
    sm = torch.jit.trace(m, x[:2], check_trace=False)
    w = fmt + ":per_channel" if fmt in ("nf4", "lut4") else fmt
    config = {"rules": [{"kind": ["conv", "linear"], "role": "weight", "spec": w},
                        {"role": ["input", "activation"], "spec": fmt}]}
    # MX computes every scale from its block: it needs no calibration data
    calib = None if fmt.startswith("mx") else [x[:16]]
    q, report = anybit.quantize(sm, config, calib_data=calib, return_report=True)
    quantized = [r for r in report if r["spec"] != "float"]
    assert len(quantized) >= 10 and all(r["params_chosen"] for r in quantized)
    fused = anybit.evaluate(q, [(x, y)], batch_size=32)
    interp = anybit.evaluate(q, [(x, y)], batch_size=32, fused=False)
    assert fused["runtime"] == "onednn", fused["runtime_note"]
    assert fused["top1"] == interp["top1"]
    # agreement with the float model on a random ViT (measured: mxfp8 84, mxint8 94, nvfp4 91,
    # nf4 28; mxfp4 12 and lut4 3, whose k-means levels clip the activations' outliers)
    floor = {"mxfp8:e4m3": 75.0, "mxint8": 85.0, "nvfp4": 75.0, "nf4": 15.0}.get(fmt, 0.0)
    assert fused["top1"] >= floor
    with pytest.raises(anybit.Error, match="no integer export"):
        anybit.export(q, tmp_path / "int")


def test_a_transformer_fine_tunes_with_learned_minifloat_scales_and_codebook_levels():
    torch.manual_seed(0)
    m = _vit().eval()
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3))
    sm = torch.jit.trace(m, x[:2], check_trace=False)
    config = {"rules": [{"kind": "linear", "role": "weight", "spec": "fp4:e2m1:per_channel:lsq"},
                        {"kind": "conv", "role": "weight", "spec": "lut3:per_channel:lsq"},
                        {"role": "activation", "kind": ["linear", "add"], "spec": "mxfp8:e4m3"}]}
    q = anybit.quantize(sm, config, calib_data=[x[:16]])
    before = {n: p.detach().clone() for n, p in q.named_parameters() if "anybit__" in n}
    assert any(n.endswith("__levels") for n in before) and any(n.endswith("__scale") for n in before)
    t, report = anybit.finetune(q, (x, y), epochs=1, lr=0.01, batch_size=16, max_steps=3, return_report=True)
    after = dict(t.named_parameters())
    moved = [n for n in before if not torch.equal(before[n], after[n].detach())]
    assert len(moved) > len(before) // 2, moved
    assert all(torch.isfinite(after[n]).all() for n in before)
    assert report[0]["steps"] == 3
