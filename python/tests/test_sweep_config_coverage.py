"""A sweep's "W4A4" means what it says on any architecture: every activation that a conv,
linear or matmul reads is quantized, whether a ReLU, a SiLU/Hardswish/GELU, a LayerNorm, a
softmax or a squeeze-excite product made it. Checked on the quantized graph itself, by a walk
independent of the one that chooses the points."""
import pytest
import torch
import torchvision

import anybit
from zoo import TransformerClassifier

LAYOUT = {"aten::view", "aten::reshape", "aten::transpose", "aten::permute", "aten::contiguous", "aten::unsqueeze",
          "aten::squeeze", "aten::flatten", "aten::select", "aten::slice", "aten::expand", "aten::chunk",
          "aten::split", "aten::unbind", "aten::t", "aten::unflatten", "aten::dropout", "aten::dropout_",
          "aten::clone", "aten::detach", "aten::roll", "aten::flip", "aten::narrow", "aten::movedim",
          "aten::swapaxes", "aten::repeat", "aten::pixel_shuffle", "aten::pixel_unshuffle", "aten::channel_shuffle",
          "aten::upsample_nearest1d", "aten::upsample_nearest2d", "aten::upsample_nearest3d"}
ALGEBRA = {"aten::conv1d", "aten::conv2d", "aten::_convolution", "aten::linear", "aten::matmul", "aten::mm",
           "aten::bmm", "aten::addmm", "aten::einsum"}


def quantized(v, seen=0):
    """Whether value v was made by a quantizer, seen back through ops that only move data."""
    n = v.node()
    k = n.kind()
    if k.startswith("anybit::fake_quant") or k.startswith("aten::fake_quantize"):
        return True
    if seen > 32:
        return False
    if k == "prim::If":  # every branch must give a quantized value
        i = list(n.outputs()).index(v)
        return all(quantized(list(b.outputs())[i], seen + 1) for b in n.blocks())
    if k in ("prim::ListUnpack", "prim::TupleUnpack"):
        src = next(n.inputs()).node()
        if src.kind() in ("prim::ListConstruct", "prim::TupleConstruct"):
            return quantized(list(src.inputs())[list(n.outputs()).index(v)], seen + 1)
        return quantized(next(src.inputs()), seen + 1) if src.kind() in ("aten::unbind", "aten::chunk",
                                                                           "aten::split") else False
    if k in ("aten::pad", "aten::constant_pad_nd"):  # zero padding (Swin's windows)
        ins = list(n.inputs())
        mode = ins[2].toIValue() if k == "aten::pad" and len(ins) > 2 else "constant"
        value = ins[3 if k == "aten::pad" else 2].toIValue() if len(ins) > (3 if k == "aten::pad" else 2) else None
        return mode == "constant" and not value and quantized(ins[0], seen + 1)
    if k in LAYOUT:
        return quantized(next(n.inputs()), seen + 1)
    return False


def float_inputs(qm):
    """The conv/linear/matmul ops of the quantized model whose data operands are not all quantized."""
    out = []

    def walk(block):
        for n in block.nodes():
            for b in n.blocks():
                walk(b)
            if n.kind() not in ALGEBRA:
                continue
            ins = list(n.inputs())
            if n.kind() == "aten::addmm":
                data = [ins[1]]
            elif n.kind() in ("aten::linear", "aten::conv1d", "aten::conv2d", "aten::_convolution"):
                data = [ins[0]]
            elif n.kind() == "aten::einsum":  # its operands, as a list built in the graph
                data = list(ins[1].node().inputs())
            else:  # matmul, mm, bmm: the weight operand (a quantized parameter) is checked too
                data = ins[:2]
            if not all(quantized(v) for v in data):
                out.append(f"{n.kind()} {n.sourceRange().split(chr(10))[0][:80]}")
    walk(qm.inlined_graph)
    return out


def _vit():
    return torchvision.models.vit_b_16(weights=None, image_size=32)


class EinsumAttention(torch.nn.Module):
    """Attention written with einsum, as MaxViT's is: scores and values are products of two
    activations given as einsum's list of operands."""

    def __init__(self, d: int = 16, heads: int = 2, classes: int = 10):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.head = torch.nn.Linear(d, classes)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).unbind(2)
        q = q * (d // self.heads) ** -0.5
        a = torch.einsum("bthd,bshd->bhts", q, k).softmax(-1)
        o = torch.einsum("bhts,bshd->bthd", a, v).reshape(b, t, d)
        return self.head(o.mean(1))


class InModelNormalization(torch.nn.Module):
    """Layers that read values no op point makes: the input normalized inside the model, and a
    Hardswish written out with a division (each layer's data gets a point of its own)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
        self.conv1 = torch.nn.Conv2d(3, 8, 3)
        self.conv2 = torch.nn.Conv2d(8, 8, 3)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = self.conv1(x).clamp(0, 6)
        x = x * torch.nn.functional.relu6(x + 3) / 6
        return self.fc(self.conv2(x).mean((2, 3)))


class Upsampling(torch.nn.Module):
    """A decoder's ops: nearest upsampling and pixel shuffle only copy values (no second
    quantizer behind them), bilinear upsampling computes new ones (the next conv's data gets a
    point)."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 8, 3, padding=1)
        self.c3 = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.c4 = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = torch.nn.functional.interpolate(torch.relu(self.c1(x)), scale_factor=2.0, mode="nearest")
        y = torch.nn.functional.pixel_shuffle(self.c2(y), 2)
        z = torch.nn.functional.interpolate(torch.relu(self.c3(y)), scale_factor=0.5, mode="bilinear",
                                            align_corners=False)
        return self.c4(z).mean((2, 3))


MODELS = {
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(weights=None), (3, 64, 64)),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(weights=None), (3, 64, 64)),
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(weights=None), (3, 64, 64)),
    "vit_b_16": (_vit, (3, 32, 32)),
    "transformer_encoder": (TransformerClassifier, (8, 16)),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), (3, 64, 64)),
    # channel shuffle and chunk; Swin's zero-padded, rolled windows; einsum attention
    "shufflenet_v2": (lambda: torchvision.models.shufflenet_v2_x0_5(weights=None), (3, 64, 64)),
    "swin_t": (lambda: torchvision.models.swin_t(weights=None), (3, 64, 64)),
    "einsum_attention": (EinsumAttention, (8, 16)),
    "in_model_normalization": (InModelNormalization, (3, 16, 16)),
    "upsampling": (Upsampling, (3, 8, 8)),
}


@pytest.mark.parametrize("form", ["script", "trace"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_conv_linear_and_matmul_reads_a_quantized_activation_at_w4a4(name, form):
    make, shape = MODELS[name]
    torch.manual_seed(0)
    m = make().eval()
    x = torch.randn(4, *shape)
    sm = torch.jit.script(m) if form == "script" else torch.jit.trace(m, x[:2], check_trace=False)
    qm = anybit.quantize(sm, anybit.sweep_config("minmax", 4, 4), calib_data=[x], fold_bn=True)
    missing = float_inputs(qm)
    assert missing == [], f"{len(missing)} layers read float activations: {missing[:5]}"
    # and the check can fail: the config without the `feeds` rule leaves such layers float
    # wherever a layer reads something other than a ReLU, a pooling, an add or the input
    old = anybit.sweep_config("minmax", 4, 4).replace(
        "  - {role: activation, feeds: [conv, linear, matmul], spec: 'auto4', optional: true}\n", "")
    assert "feeds" not in old
    if name != "resnet18":  # a ReLU network: the old config covered it
        assert float_inputs(anybit.quantize(sm, old, calib_data=[x], fold_bn=True)), name


def test_quantize_notes_the_layer_inputs_a_users_config_leaves_float(tmp_path):
    """A config written for ReLU networks, on a MobileNetV3: `quantize` says which activations
    that layers read stay float, and how to select them; with the sweep's config it is quiet."""
    import json
    import os
    import subprocess

    import numpy as np

    exe = os.environ.get("ANYBIT_EXE", os.path.join(os.path.dirname(__file__), "..", "..", "build", "anybit"))
    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v3_small(weights=None).eval()
    x = torch.randn(8, 3, 64, 64)
    path = str(tmp_path / "m.pt")
    torch.jit.trace(m, x[:2]).save(path)
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", np.zeros(8, dtype=np.int64))
    data = f"npy:{tmp_path}/x.npy:{tmp_path}/y.npy"
    relu_pool = tmp_path / "relu_pool.yaml"
    relu_pool.write_text("rules:\n  - {kind: [conv, linear], role: weight, spec: 'int4:per_channel'}\n"
                         "  - {role: input, spec: auto8}\n  - {kind: [relu, pool], spec: auto4}\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(anybit.sweep_config("minmax", 4, 4))
    weights_only = tmp_path / "w.yaml"
    weights_only.write_text("rules: [{kind: [conv, linear], role: weight, spec: 'int4:per_channel'}]\n")

    def run(cfg, *extra):
        r = subprocess.run([exe, "quantize", path, "-c", str(cfg), "-d", data, "--fold-bn", "-o",
                            str(tmp_path / "q.pt"), "--no-progress", *extra], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r
    r = run(relu_pool)
    assert "activations that conv, linear or matmul layers read stay float: features.0.2:out (act)" in r.stderr
    assert "feeds: [conv, linear, matmul]" in r.stderr
    listed = json.loads(run(relu_pool, "--json").stdout)["float_layer_inputs"]
    assert len(listed) > 10 and "features.1.block.1:mul:out (mul)" in listed
    assert "stay float" not in run(sweep).stderr
    assert "stay float" not in run(weights_only).stderr  # weight-only: float activations are meant
    assert json.loads(run(sweep, "--json").stdout)["float_layer_inputs"] == []


def test_python_quantize_warns_as_the_cli_notes():
    torch.manual_seed(0)
    sm = torch.jit.trace(torchvision.models.mobilenet_v3_small(weights=None).eval(), torch.randn(2, 3, 64, 64))
    x = torch.randn(4, 3, 64, 64)
    relu_pool = {"rules": [{"kind": ["conv", "linear"], "role": "weight", "spec": "int4:per_channel"},
                           {"kind": ["relu", "pool"], "spec": "auto4"}]}
    with pytest.warns(anybit.CoverageWarning, match=r"activations that conv, linear or matmul layers read stay "
                                                    r"float: input\.0 \(input\), features\.0\.2:out \(act\)"):
        anybit.quantize(sm, relu_pool, calib_data=[x], fold_bn=True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", anybit.CoverageWarning)
        anybit.quantize(sm, anybit.sweep_config("minmax", 4, 4), calib_data=[x], fold_bn=True)
        anybit.quantize(sm, {"rules": [{"kind": "conv", "role": "weight", "spec": "int4"}]}, calib_data=[x])
        anybit.quantize(sm, {"rules": [{"role": "input", "spec": "auto8"}]}, calib_data=[x])  # input only


class EinsumWithParameter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(16, 10))

    def forward(self, x):
        return torch.relu(torch.einsum("bd,dk->bk", x, self.w))


def test_einsum_of_activations_gets_matmul_points_and_one_with_a_parameter_is_reported():
    torch.manual_seed(0)
    m, x = EinsumAttention().eval(), torch.randn(8, 8, 16)
    qm, report = anybit.quantize(torch.jit.script(m), anybit.sweep_config("minmax", 8, 8), calib_data=[x],
                                 return_report=True)
    ein = {r["name"]: r["spec"] for r in report if r["op"] == "aten::einsum"}
    assert ein["matmul:in0"].startswith("int8"), ein  # q * scale, the first einsum's operand
    with torch.no_grad():
        ref, out = m(x), qm(x)
    assert ((out - ref).norm() / ref.norm()).item() < 0.05
    # a weight given to einsum is not an activation: no point, and the user is told
    import warnings
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        anybit.quantize(torch.jit.script(EinsumWithParameter()), "rules: [{role: activation, spec: int8}]",
                        calib_data=[torch.randn(4, 16)])
    msgs = [str(a.message) for a in w if issubclass(a.category, anybit.CoverageWarning)]
    assert any("aten::einsum" in s and "parameter operand (w)" in s for s in msgs), msgs


def test_nearest_upsampling_and_pixel_shuffle_keep_the_quantized_values_bilinear_does_not():
    torch.manual_seed(0)
    m, x = Upsampling().eval(), torch.randn(4, 3, 8, 8)
    _, report = anybit.quantize(torch.jit.trace(m, x), anybit.sweep_config("minmax", 8, 8), calib_data=[x],
                                return_report=True)
    names = {r["name"] for r in report}
    assert "c2:in0" not in names and "c3:in0" not in names, names  # behind nearest and pixel shuffle
    assert "c4:in0" in names  # behind bilinear


def test_first_last_8bit_keeps_the_data_the_first_conv_reads_at_8_bits():
    """The input normalized inside forward is what the first conv reads: --first-last-8bit keeps
    it at 8 bits as it keeps a plain input; the layers after it keep the sweep's width."""
    torch.manual_seed(0)
    cfg = anybit.sweep_config("minmax", 4, 4, first_last_8bit=True)
    for model, x, first, later in ((InModelNormalization(), torch.rand(4, 3, 16, 16), "conv1:in0", "conv2:in0"),
                                   (Upsampling(), torch.randn(4, 3, 8, 8), "input.0", "relu:out")):
        _, report = anybit.quantize(torch.jit.trace(model.eval(), x), cfg, calib_data=[x], return_report=True)
        spec = {r["name"]: r["spec"] for r in report}
        assert spec[first].split(":")[0] in ("int8", "uint8"), (first, spec)
        assert spec[later].split(":")[0] in ("int4", "uint4"), (later, spec)
