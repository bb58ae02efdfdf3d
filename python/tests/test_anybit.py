"""The Python package on models nobody here wrote (torchvision, random weights) and on
the shipped Fashion-MNIST model: user stories 1, 4 and 5, CLI parity, and errors."""
import os
import site
import subprocess
import sys
import tempfile
import warnings

import pytest
import torch
import torchvision

import anybit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FMNIST = os.path.join(ROOT, "models", "fmnist_resnet.pt")


def distinct(t):
    return torch.unique(t).numel()


def calib(shape, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(shape, generator=g) for _ in range(n)]


def test_story1_alexnet_gets_exactly_the_requested_bits_per_layer():
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    qm, report = anybit.quantize(model, os.path.join(ROOT, "examples", "story1_alexnet.yaml"),
                                 calib_data=calib((2, 3, 224, 224)), return_report=True)
    bits = {r["name"]: r["bits"] for r in report if r["bits"] < 32}
    assert bits == {
        "features.0.weight": 11, "features.3.weight": 11, "features.6.weight": 11,
        "features.8.weight": 11, "features.10.weight": 11, "classifier.1.weight": 10,
        "classifier.4.weight": 9, "classifier.6.weight": 9, "features.1:out": 9,
        "features.4:out": 8, "features.7:out": 5, "features.9:out": 5, "features.11:out": 7}
    outs = anybit.quantizer_outputs(qm, torch.rand(2, 3, 224, 224))
    assert len(outs) == 13
    for name, _, value in outs:
        assert distinct(value) <= 2 ** bits[name], name


def test_story4_resnet18_first_layer_int8_rest_binary():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    qm, report = anybit.quantize(model, os.path.join(ROOT, "examples", "story4_binary.yaml"),
                                 calib_data=calib((2, 3, 64, 64)), return_report=True)
    spec = {r["name"]: r["spec"] for r in report}
    assert spec["conv1.weight"] == "int8" and spec["input.0"] == "uint8"
    assert spec["layer1.0.conv1.weight"] == "binary:per_channel"
    assert spec["fc.weight"] == "float"
    outs = {name: v for name, _, v in anybit.quantizer_outputs(qm, torch.rand(2, 3, 64, 64))}
    assert distinct(outs["conv1.weight"]) <= 256
    w = outs["layer2.0.conv2.weight"]
    assert all(distinct(w[c]) <= 2 for c in range(w.shape[0]))  # +-alpha per output channel
    assert distinct(outs["layer1.0.relu:out"]) == 2
    qm(torch.rand(1, 3, 64, 64)).sum()  # runs


def test_story5_binarize_every_relu_output_of_mobilenet_v2():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    # ReLU6 outputs are >= 0, so their binary quantizer is uint1: levels {0, s}
    cfg = {"rules": [{"kind": "relu", "spec": "uint1"}]}
    qm, report = anybit.quantize(model, cfg, calib_data=calib((2, 3, 96, 96)), return_report=True)
    relus = [r["name"] for r in report if r["kind"] == "relu"]
    assert len(relus) == 35 and all(r["spec"] == "uint1" for r in report if r["kind"] == "relu")
    outs = anybit.quantizer_outputs(qm, torch.rand(2, 3, 96, 96))
    assert len(outs) == 35
    assert all(distinct(v) <= 2 for _, _, v in outs)
    assert sum(distinct(v) == 2 for _, _, v in outs) >= 30  # binary, not constant


def test_quantized_module_trains_with_autograd_and_saves():
    model = torchvision.models.resnet18(weights=None)
    cfg = {"rules": [{"kind": "conv", "role": "weight", "spec": "int4:per_channel:lsq"}]}
    qm = anybit.quantize(model, cfg)
    qm.train()
    qm(torch.randn(2, 3, 64, 64)).sum().backward()
    assert qm.conv1.weight.grad is not None
    with tempfile.TemporaryDirectory() as d:
        qm.eval()
        x = torch.randn(1, 3, 64, 64)
        qm.save(os.path.join(d, "q.pt"))
        assert torch.equal(anybit.load(os.path.join(d, "q.pt"))(x), qm(x))


def test_python_and_cli_give_identical_outputs():
    cfg = os.path.join(ROOT, "examples", "w4a4.yaml")
    exe = os.environ.get("ANYBIT_EXE", os.path.join(ROOT, "build", "anybit"))
    qm = anybit.quantize(torch.jit.load(FMNIST), cfg, calib_data="fmnist::train", calib_batches=2)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cli.pt")
        subprocess.run([exe, "quantize", FMNIST, "--config", cfg, "--data", "fmnist::train",
                        "--calib-batches", "2", "-o", out, "--no-progress"], check=True, capture_output=True)
        cli = anybit.load(out)
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(qm(x), cli(x))


def test_dataloader_calibration_and_evaluation_on_fashion_mnist():
    from torch.utils.data import DataLoader, TensorDataset
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 28, 28, generator=g)
    loader = DataLoader(TensorDataset(x, torch.zeros(256, dtype=torch.long)), batch_size=64)
    qm = anybit.quantize(torch.jit.load(FMNIST), os.path.join(ROOT, "examples", "w4a4.yaml"), calib_data=loader)
    r = anybit.evaluate(qm, "fmnist::test:limit=500", reference=torch.jit.load(FMNIST))
    assert r["samples"] == 500 and 0 <= r["top1"] <= 100 and "agreement" in r
    # the fused oneDNN layers by default, the interpreter on request: the same predictions
    assert r["runtime"] == "onednn" and "int8" in r["runtime_note"]
    ri = anybit.evaluate(qm, "fmnist::test:limit=500", reference=torch.jit.load(FMNIST), fused=False)
    assert ri["runtime"] == "torchscript" and ri["top1"] == r["top1"] and ri["agreement"] == r["agreement"]


@pytest.mark.parametrize("config,fragment", [
    ({"rules": [{"kind": "conv", "spc": "int8"}]}, "unknown key 'spc'"),
    ({"rules": [{"kind": "conv", "spec": "int0"}]}, "outside 1..16"),
    ({"rules": [{"match": "layer9.*", "spec": "int4"}]}, "matches no point"),
    ("missing_config.yaml", "missing_config.yaml"),
])
def test_bad_input_raises_anybit_error_with_the_cli_message(config, fragment):
    with pytest.raises(anybit.Error, match=fragment.replace(".", r"\.").replace("*", r"\*")):
        anybit.quantize(torch.jit.load(FMNIST), config)


def test_bad_model_and_data_raise_clear_errors():
    with pytest.raises(anybit.Error, match="/nonexistent.pt"):
        anybit.points("/nonexistent.pt")
    with pytest.raises(anybit.Error, match="/nonexistent/dir"):
        anybit.quantize(torch.jit.load(FMNIST), {"rules": [{"kind": "relu", "spec": "uint8"}]},
                        calib_data="fmnist:/nonexistent/dir")
    with pytest.raises(anybit.Error, match="shape"):
        anybit.quantize(torch.jit.load(FMNIST), {"rules": [{"kind": "relu", "spec": "uint8"}]},
                        calib_data=torch.rand(2, 3, 32, 32))

    class Unscriptable(torch.nn.Module):
        def forward(self, x):
            return x if isinstance(x, int) else x.numpy()

    with pytest.raises(anybit.Error, match="example_inputs"):
        anybit.points(Unscriptable())


def test_points_lists_named_points_in_forward_order():
    pts = anybit.points(torch.jit.load(FMNIST))
    names = [p["name"] for p in pts]
    assert names[0] == "input.0" and names[1] == "stem.0.weight" and "layer1:add:out" in names
    assert [p["index"] for p in pts] == list(range(len(pts)))
    assert anybit.canonical_spec("INT4:Per_Channel") == "int4:per_channel"


@pytest.mark.parametrize("script", sorted(f for f in os.listdir(os.path.join(ROOT, "examples", "python"))
                                          if f.endswith(".py")))
def test_every_python_example_runs(script):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    # the Python of this run (the project's .venv): its torch is the one the extension was built for
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "python", script)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip()


def test_sweep_mirrors_the_cli_and_resumes():
    with tempfile.TemporaryDirectory() as d:
        rows = anybit.sweep([FMNIST], d, pairs=[(8, 8), (4, 4)], methods=["mse"],
                            calib_data="fmnist::train:limit=256", eval_data="fmnist::test:limit=300", calib_batches=2)
        assert [(r["method"], r["wbits"]) for r in rows] == [("float", 32), ("mse", 8), ("mse", 4)]
        assert rows[1]["top1"] > 80
        for f in ("results.csv", "results.json", "accuracy.svg"):
            assert os.path.getsize(os.path.join(d, f)) > 0
        with pytest.raises(anybit.Error, match="--resume"):
            anybit.sweep([FMNIST], d, pairs=[(8, 8)], methods=["mse"])
        again = anybit.sweep([FMNIST], d, pairs=[(8, 8), (4, 4)], methods=["mse"], calib_data="fmnist::train:limit=256",
                             eval_data="fmnist::test:limit=300", calib_batches=2, resume=True)
        assert again == rows


def test_pip_install_into_a_virtualenv_without_network():
    with tempfile.TemporaryDirectory() as d:
        venv = os.path.join(d, "venv")
        # a venv of this run's Python that sees this Python's packages (its torch, the one the
        # extension was built for, and pip and setuptools): a .pth, as --system-site-packages would
        # show the base interpreter's (Debian's torch) where this Python is a venv on PyPI's torch
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
        vpy = os.path.join(venv, "bin", "python")
        pure = subprocess.run([vpy, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True).stdout.strip()
        with open(os.path.join(pure, "anybit_test_parent.pth"), "w") as f:
            f.write("\n".join(site.getsitepackages()) + "\n")
        subprocess.run([vpy, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-index",
                        os.path.join(ROOT, "python")], check=True, capture_output=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        r = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                            "import anybit, torch; print(anybit.__file__); "
                            "print(len(anybit.points(torch.jit.load(%r))))" % FMNIST],
                           cwd=d, capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        where, count = r.stdout.split()
        assert "site-packages" in where and count == "42"


def test_fold_bn_and_adaround_from_python():
    cfg = {"weight_calibrator": "mse", "rules": [{"kind": ["conv", "linear"], "role": "weight", "spec": "int3:per_channel"}]}
    plan = anybit.plan(torch.jit.load(FMNIST), cfg, fold_bn=True)
    assert not any(p["kind"] == "bn" for p in plan)
    qm = anybit.quantize(torch.jit.load(FMNIST), cfg, calib_data="fmnist::train:limit=128", calib_batches=1,
                         batch_size=128, fold_bn=True, adaround=50)
    x = torch.rand(4, 1, 28, 28)
    assert qm(x).shape == (4, 10)


def test_cross_layer_equalization_keeps_the_float_model():
    # 16-bit weights: close to float, so the equalized model must predict like the original
    cfg = {"rules": [{"kind": ["conv", "linear"], "role": "weight", "spec": "int16"}]}
    x = torch.rand(64, 1, 28, 28)
    ref = torch.jit.load(FMNIST).eval()(x)
    qm = anybit.quantize(torch.jit.load(FMNIST), cfg, fold_bn=True, cle=True)
    assert torch.allclose(qm(x), ref, atol=1e-2)
    with pytest.raises(anybit.Error, match="fold_bn"):
        anybit.quantize(torch.jit.load(FMNIST), cfg, cle=True)


def test_finetune_from_python_lowers_the_loss():
    cfg = {"rules": [{"kind": ["conv", "linear"], "role": "weight", "spec": "int2:per_channel:lsq"}]}
    qm = anybit.quantize(torch.jit.load(FMNIST), cfg, fold_bn=True)
    x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
    before = torch.nn.functional.cross_entropy(qm(x), y).item()
    trained, report = anybit.finetune(qm, (x, y), epochs=3, batch_size=64, lr=0.01, return_report=True)
    assert [r["epoch"] for r in report] == [1, 2, 3]
    assert torch.nn.functional.cross_entropy(trained(x), y).item() < before


def test_finetune_from_python_distils_and_freezes_batchnorm():
    # BatchNorm left in (no fold_bn), per-channel weights: trains, freezes after epoch 1 and
    # is folded; the float model is the teacher (as a path and as a ScriptModule alike)
    cfg = {"rules": [{"kind": ["conv", "linear"], "role": "weight", "spec": "int2:per_channel:lsq"}]}
    qm = anybit.quantize(torch.jit.load(FMNIST), cfg)
    x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
    trained, report = anybit.finetune(qm, (x, y), epochs=2, batch_size=64, lr=0.01, schedule="onecycle",
                                      teacher=FMNIST, kd_weight=1.0, kd_temperature=2.0, freeze_bn=1,
                                      return_report=True)
    assert [r["bn_folded"] for r in report] == [0, 9]
    assert all(r["train_kd_loss"] > 0 for r in report)
    assert "batch_norm" not in str(trained.graph) and "batch_norm" in str(qm.graph)
    _, again = anybit.finetune(qm, (x, y), epochs=1, batch_size=64, teacher=torch.jit.load(FMNIST),
                               return_report=True)
    assert again[0]["train_kd_loss"] > 0
    with pytest.raises(anybit.Error, match="freeze-bn epoch 3"):
        anybit.finetune(qm, (x, y), epochs=2, freeze_bn=3)


def test_signed_inputs_auto_sign_clipping_warning_and_strict():
    """torchvision ResNet-18 on inputs normalized as torchvision does (signed): auto8 chooses
    int8:asym, uint8 clips and says so (a warning, and an error with strict=True)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = [(torch.rand((2, 3, 64, 64), generator=g) - mean) / std for _ in range(2)]
    negative = float((torch.cat(x) < 0).double().mean())
    assert negative > 0.3
    cfg = {"rules": [{"role": "input", "spec": "auto8"}, {"kind": ["relu", "pool"], "spec": "auto4"},
                     {"match": "fc:out", "spec": "auto8"}]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", anybit.ClippingWarning)  # none expected
        _, report = anybit.quantize(model, cfg, calib_data=x, return_report=True)
    by = {r["name"]: r for r in report}
    assert by["input.0"]["spec"] == "int8:asym" and by["input.0"]["auto_spec"] == "auto8"
    assert by["input.0"]["clipped_low"] == 0.0
    assert by["relu:out"]["spec"] == "uint4" and by["maxpool:out"]["spec"] == "uint4"
    assert by["fc:out"]["spec"] == "int8:asym"
    cfg["rules"][0]["spec"] = "uint8"
    with pytest.warns(anybit.ClippingWarning, match=r"input.0: uint8 clips the .* below 0 .*use auto8"):
        _, report = anybit.quantize(model, cfg, calib_data=x, return_report=True)
    r = {r["name"]: r for r in report}["input.0"]
    assert abs(r["clipped_low"] - negative) < 1e-9 and "clip_warning" in r
    with pytest.raises(anybit.Error, match="strict: 1 quantizer"):
        anybit.quantize(model, cfg, calib_data=x, strict=True)


def test_data_spec_normalization_from_python():
    raw = anybit.evaluate(torch.jit.load(FMNIST), "fmnist::test:limit=300")
    shifted = anybit.evaluate(torch.jit.load(FMNIST), "fmnist::test:limit=300:mean=0.2860:std=0.3530")
    assert raw["samples"] == shifted["samples"] == 300
    assert raw["top1"] > 85 and shifted["top1"] < raw["top1"] - 20  # the model wants raw [0, 1] inputs
    with pytest.raises(anybit.Error, match=r"data spec 'fmnist::test:mean=0.1,0.2'.*mean has 2 values"):
        anybit.evaluate(torch.jit.load(FMNIST), "fmnist::test:mean=0.1,0.2")


class _InplaceAdd(torch.nn.Module):
    def __init__(s):
        super().__init__()
        s.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        s.fc = torch.nn.Linear(4, 2)

    def forward(s, x):
        y = s.conv(x)
        y += 100.0
        return s.fc(y.mean((2, 3)))


def test_captured_values_are_what_the_quantizer_produced_not_after_later_inplace_ops():
    torch.manual_seed(0)
    m = _InplaceAdd().eval()
    x = [torch.rand(4, 1, 8, 8) for _ in range(2)]
    qm = anybit.quantize(m, {"rules": [{"match": "conv:out", "spec": "int8"}]}, calib_data=x)
    (name, _, value), = anybit.quantizer_outputs(qm, x[0])
    with torch.no_grad():
        produced = m.conv(x[0])
    assert name == "conv:out" and abs(float(value.mean()) - float(produced.mean())) < 0.01, float(value.mean())


class _Block(torch.nn.Module):
    """conv-bn-relu-conv-bn + identity, relu: in place (torchvision's style) or not."""

    def __init__(s, inplace):
        super().__init__()
        s.inplace = inplace
        s.conv1 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        s.bn1 = torch.nn.BatchNorm2d(8)
        s.relu = torch.nn.ReLU(inplace=inplace)
        s.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        s.bn2 = torch.nn.BatchNorm2d(8)
        s.stem = torch.nn.Conv2d(1, 8, 3, padding=1)
        s.fc = torch.nn.Linear(8, 3)

    def forward(s, x):
        x = s.stem(x)
        out = s.relu(s.bn1(s.conv1(x)))
        out = s.bn2(s.conv2(out))
        if s.inplace:
            out += x
        else:
            out = out + x
        out = s.relu(out)
        return s.fc(out.mean((2, 3)))


def test_inplace_and_out_of_place_forms_give_identical_captures_and_ptq():
    torch.manual_seed(0)
    a = _Block(True).eval()
    a.bn1.running_mean.uniform_(-0.2, 0.2), a.bn2.running_var.uniform_(0.5, 2)  # not the identity
    b = _Block(False).eval()
    b.load_state_dict(a.state_dict())
    g = torch.Generator().manual_seed(1)
    x = [torch.rand(16, 1, 8, 8, generator=g) for _ in range(4)]
    cfg = {"rules": [{"kind": ["conv", "linear"], "role": "weight", "spec": "int4:per_channel"},
                     {"kind": ["relu", "add"], "spec": "auto4"}, {"match": "conv2:out", "spec": "int4"}]}
    qa = anybit.quantize(torch.jit.script(a), cfg, calib_data=x, fold_bn=True, adaround=40, bias_correction=True)
    qb = anybit.quantize(torch.jit.script(b), cfg, calib_data=x, fold_bn=True, adaround=40, bias_correction=True)
    oa = {n: v for n, _, v in anybit.quantizer_outputs(qa, x[0])}
    ob = {n: v for n, _, v in anybit.quantizer_outputs(qb, x[0])}
    assert oa.keys() == ob.keys() and "conv2:out" in oa
    for n in oa:
        assert torch.equal(oa[n], ob[n]), n
    sa, sb = qa.state_dict(), qb.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k  # AdaRound's weights, bias correction, every step
    # BRECQ (block reconstruction, learned steps too) alike
    ra = anybit.quantize(torch.jit.script(a), cfg, calib_data=x, fold_bn=True, brecq=30).state_dict()
    rb = anybit.quantize(torch.jit.script(b), cfg, calib_data=x, fold_bn=True, brecq=30).state_dict()
    assert ra.keys() == rb.keys()
    for k in ra:
        assert torch.equal(ra[k], rb[k]), k
