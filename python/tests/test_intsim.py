"""The integer export and the integer engine from Python: anybit.export, anybit.intsim_run
and anybit.intsim_evaluate (docs/integer-format.md), held to the engine's LibTorch twin
(anybit::run_integer_reference), to the fake-quantized model and to the CLI."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

import anybit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FMNIST = os.path.join(ROOT, "models", "fmnist_resnet.pt")
W8A8 = os.path.join(ROOT, "examples", "export_w8a8.yaml")
EXE = os.environ.get("ANYBIT_EXE", os.path.join(ROOT, "build", "anybit"))


# The small model's export layout, as examples/export_w8a8.yaml lays out the shipped one:
# each conv fused with its ReLU, the conv feeding the residual add quantized before it.
SMALL_CONFIG = {"rules": [{"kind": ["conv", "linear"], "role": "weight", "spec": "int8:per_channel"},
                          {"role": "input", "spec": "uint8"},
                          {"match": ["block.conv2:out", "fc:out"], "spec": "int8"},
                          {"kind": ["relu", "pool"], "spec": "uint8"}]}


class Block(nn.Module):
    """conv-BN-ReLU, then conv + residual add + ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.conv2(y) + y)


class Small(nn.Module):
    """Block, max pool, global average pool, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.block = Block()
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.gap(self.pool(self.block(x))), 1))


def rand(n, seed):
    return torch.rand(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(quantized ScriptModule, its export directory, export's return value)."""
    torch.manual_seed(0)
    m = Small().eval()
    with torch.no_grad():
        m.block.bn1.running_mean.uniform_(-0.2, 0.2)
        m.block.bn1.running_var.uniform_(0.5, 2.0)
    qm = anybit.quantize(m, SMALL_CONFIG, calib_data=rand(64, 1), fold_bn=True, int32_bias=True)
    d = str(tmp_path_factory.mktemp("small") / "int")
    return qm, d, anybit.export(qm, d)


def manifest(d):
    with open(os.path.join(d, "manifest.json")) as f:
        return json.load(f)


def test_export_writes_the_integer_model_and_reports_its_ops(small, tmp_path):
    qm, d, r = small
    m = manifest(d)
    assert m["format"] == "anybit-int"
    assert r["output"] == d and r["op_count"] == len(m["ops"]) and isinstance(r["notes"], list)
    assert r["ops"] == {"conv2d": 2, "add": 1, "maxpool2d": 1, "global_avgpool": 1, "flatten": 1, "linear": 1}, \
        r["ops"]  # BatchNorm folded, the ReLUs fused (an output qmin equal to the zero point)
    assert sum(r["ops"].values()) == r["op_count"]
    assert r["inputs"][0]["shape"] == [1, 12, 12] and r["inputs"][0]["qmin"] == 0 and r["inputs"][0]["qmax"] == 255
    assert r["outputs"][0]["shape"] == [10]
    w = np.load(os.path.join(d, next(op["weight"] for op in m["ops"] if op["op"] == "conv2d")))
    assert w.dtype == np.int8 and w.shape == (8, 1, 3, 3)
    # a ScriptModule and its saved file export the same arrays; input_shape overrides
    p = str(tmp_path / "q.pt")
    qm.save(p)
    r2 = anybit.export(p, str(tmp_path / "int2"), input_shape=[1, 16, 16])
    assert r2["inputs"][0]["shape"] == [1, 16, 16]
    for op in manifest(d)["ops"]:
        for k in ("weight", "bias"):
            if k in op:
                assert np.array_equal(np.load(os.path.join(d, op[k])), np.load(str(tmp_path / "int2" / op[k])))
    # an earlier export is replaced, also when named with a trailing slash
    assert anybit.export(p, d)["op_count"] == r["op_count"]
    anybit.export(p, d + "/")
    assert manifest(d)["ops"] == m["ops"] and sorted(os.listdir(os.path.dirname(d))) == ["int"]
    assert manifest(d)["metadata"]["source"] == p and m["metadata"]["source"] == "<Small>"


def test_intsim_run_equals_the_libtorch_twin_bit_for_bit(small):
    qm, d, r = small
    x = rand(40, 2).numpy()
    out = anybit.intsim_run(d, [x])
    assert len(out) == 1 and out[0].dtype == np.int32 and out[0].shape == (40, 10)
    assert np.array_equal(out[0], anybit._anybit.integer_reference(d, [x])[0])
    # integer inputs are used as given; float inputs are quantized like the fake-quantized model
    q = r["inputs"][0]
    xi = np.clip(np.round(x * (np.float32(1) / np.float32(q["scale"]))) + q["zero_point"], q["qmin"], q["qmax"])
    assert np.array_equal(anybit.intsim_run(d, [xi.astype(np.uint8)])[0], out[0])
    assert np.array_equal(anybit.intsim_run(d, torch.from_numpy(xi.astype(np.int64)))[0], out[0])
    # threads and kernel paths do not change the result
    assert np.array_equal(anybit.intsim_run(d, [x], threads=1, reference_kernels=True)[0], out[0])
    # and the result is the fake-quantized model's up to the dyadic roundings
    with torch.no_grad():
        f = qm(torch.from_numpy(x)).numpy()
    fq = np.round(f / np.float32(r["outputs"][0]["scale"])) + r["outputs"][0]["zero_point"]
    assert np.abs(fq - out[0]).max() <= 2
    assert (f.argmax(1) == out[0].argmax(1)).mean() >= 0.9


def test_intsim_run_narrow_accumulator_and_mac_models(small):
    _, d, _ = small
    x = rand(8, 3).numpy()
    exact, stats = anybit.intsim_run(d, [x], return_stats=True)
    assert [s["op"] for s in stats][:2] == ["conv2d", "conv2d"]
    assert all(s["overflows"] == 0 for s in stats)
    narrow, stats = anybit.intsim_run(d, [x], acc_bits=10, overflow="saturate", return_stats=True)
    assert sum(s["overflows"] for s in stats) > 0
    assert not np.array_equal(narrow[0], exact[0])
    noisy, stats = anybit.intsim_run(d, [x], mac="gauss:sigma=50,seed=1", return_stats=True)
    assert max(s["max_abs_error"] for s in stats) > 0
    again = anybit.intsim_run(d, [x], mac="gauss:sigma=50,seed=1")
    assert np.array_equal(noisy[0], again[0])  # a seed reproduces a run


def test_intsim_errors_name_the_file_and_field(small, tmp_path):
    _, d, _ = small
    x = rand(2, 4).numpy()
    with pytest.raises(anybit.Error, match="/nonexistent/manifest.json"):
        anybit.intsim_run("/nonexistent", [x])
    with pytest.raises(anybit.Error, match="/nonexistent/manifest.json"):
        anybit.intsim_evaluate("/nonexistent", "fmnist::test:limit=10", progress=False)
    bad = str(tmp_path / "bad")
    shutil.copytree(d, bad)
    m = manifest(bad)
    w = m["ops"][0]["weight"]
    with open(os.path.join(bad, w), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(bad, w)) - 8)
    with pytest.raises(anybit.Error, match=r"manifest\.json: ops\[0\]\.weight: .*" + w.replace(".", r"\.") + ".*truncated"):
        anybit.intsim_run(bad, [x])
    m["ops"][1]["strides"] = [1, 1]
    shutil.copy(os.path.join(d, w), os.path.join(bad, w))
    with open(os.path.join(bad, "manifest.json"), "w") as f:
        json.dump(m, f)
    with pytest.raises(anybit.Error, match=r"manifest\.json: ops\[1\].*strides"):
        anybit.intsim_run(bad, [x])
    with pytest.raises(anybit.Error, match=r"expected shape \[N,1,12,12\]"):
        anybit.intsim_run(d, [x[:, :, :11]])
    with pytest.raises(anybit.Error, match=r"outside \[qmin, qmax\] = \[0, 255\]"):
        anybit.intsim_run(d, [np.full((1, 1, 12, 12), 256)])
    with pytest.raises(anybit.Error, match="does not fit int32"):
        anybit.intsim_run(d, [np.full((1, 1, 12, 12), 2 ** 33)])
    with pytest.raises(anybit.Error, match="1 input"):
        anybit.intsim_run(d, [x, x])
    with pytest.raises(anybit.Error, match="8..32 bits"):
        anybit.intsim_run(d, [x], acc_bits=40)
    with pytest.raises(anybit.Error, match="wrap or saturate"):
        anybit.intsim_run(d, [x], overflow="clip")
    with pytest.raises(anybit.Error, match="unknown model 'noise'"):
        anybit.intsim_run(d, [x], mac="noise")


def test_export_errors(small, tmp_path):
    qm = small[0]
    with pytest.raises(anybit.Error, match="no anybit quantizers"):
        anybit.export(torch.jit.load(FMNIST), str(tmp_path / "x"))
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(anybit.Error, match="not an anybit integer export; not overwriting it"):
        anybit.export(qm, str(tmp_path))
    assert os.listdir(tmp_path) == ["keep.txt"] and (tmp_path / "keep.txt").read_text() == "mine"
    with pytest.raises(anybit.Error, match="input_shape"):
        anybit.export(qm, str(tmp_path / "x"), input_shape=[0, 12, 12])
    with pytest.raises(anybit.Error, match="/nonexistent.pt"):
        anybit.export("/nonexistent.pt", str(tmp_path / "x"))


@pytest.fixture(scope="module")
def fmnist_w8a8(tmp_path_factory):
    """The shipped model quantized from Python with int32 biases, and the CLI's twin."""
    d = tmp_path_factory.mktemp("fmnist")
    qm = anybit.quantize(FMNIST, W8A8, calib_data="fmnist::train:limit=512", calib_batches=4, fold_bn=True,
                         int32_bias=True)
    py = str(d / "py.pt")
    qm.save(py)
    cli = str(d / "cli.pt")
    subprocess.run([EXE, "quantize", FMNIST, "--config", W8A8, "--data", "fmnist::train:limit=512",
                    "--calib-batches", "4", "--fold-bn", "--int32-bias", "-o", cli, "--no-progress"],
                   check=True, capture_output=True)
    return d, py, cli


def test_python_quantize_int32_bias_and_export_match_the_cli(fmnist_w8a8):
    d, py, cli = fmnist_w8a8
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(anybit.load(py)(x), anybit.load(cli)(x))
    anybit.export(py, str(d / "py_int"))
    subprocess.run([EXE, "export", cli, "-o", str(d / "cli_int")], check=True, capture_output=True)
    for op in manifest(str(d / "cli_int"))["ops"]:
        for k in ("weight", "bias"):
            if k in op:
                assert np.array_equal(np.load(str(d / "py_int" / op[k])), np.load(str(d / "cli_int" / op[k])))
    a, b = manifest(str(d / "py_int")), manifest(str(d / "cli_int"))
    assert a["ops"] == b["ops"] and a["inputs"] == b["inputs"] and a["outputs"] == b["outputs"]


def test_intsim_evaluate_gives_the_cli_json(fmnist_w8a8):
    d, py, cli = fmnist_w8a8
    subprocess.run([EXE, "export", cli, "-o", str(d / "eval_int")], check=True, capture_output=True)
    model = str(d / "eval_int")
    data = "fmnist::test:limit=300"
    r = subprocess.run([EXE, "intsim", model, "-d", data, "--reference", cli, "--json", "--no-progress"],
                       check=True, capture_output=True, text=True)
    want = json.loads(r.stdout)
    got = anybit.intsim_evaluate(model, data, reference=cli, progress=False)
    assert set(got) == set(want)
    for k in want:
        if k != "seconds":
            assert got[k] == want[k], k
    assert got["samples"] == 300 and got["agreement"] >= 98
    # the same from tensors, and the engine's argmax on them gives the same top-1
    x = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    y = torch.randint(0, 10, (50,), generator=torch.Generator().manual_seed(6))
    r = anybit.intsim_evaluate(model, (x, y), reference=anybit.load(cli), progress=False)
    out = anybit.intsim_run(model, [x.numpy()])[0]
    assert r["data"] == "<python data>" and r["samples"] == 50
    assert r["top1"] == pytest.approx(100.0 * (out.argmax(1) == y.numpy()).mean())


def test_noise_sweep_statistics_resume_and_reproducibility(fmnist_w8a8, tmp_path):
    """A noise sweep's levels are the mean/std/min/max of its runs; the runs do not depend on
    the thread count or the batch size (keyed draws); --resume reuses them; the CLI agrees."""
    d, py, cli = fmnist_w8a8
    model = str(d / "noise_int")
    if not os.path.exists(model):
        subprocess.run([EXE, "export", cli, "-o", model], check=True, capture_output=True)
    data = "fmnist::test:limit=300"
    out = tmp_path / "sweep"
    r = anybit.noise_sweep(model, data, "gauss:rel=0.05,0.3", seeds=3, out=str(out), threads=2, batch_size=64,
                           progress=False)
    assert r["key"] == "rel" and [lv["value"] for lv in r["levels"]] == [0.05, 0.3]
    assert len(r["runs"]) == 6 and [x["seed"] for x in r["runs"]] == [0, 1, 2, 0, 1, 2]
    for lv in r["levels"]:
        top1 = [x["top1"] for x in r["runs"] if x["value"] == lv["value"]]
        assert lv["runs"] == 3
        assert lv["top1_mean"] == pytest.approx(np.mean(top1))
        assert lv["top1_std"] == pytest.approx(np.std(top1, ddof=1))
        assert (lv["top1_min"], lv["top1_max"]) == (min(top1), max(top1))
    assert r["levels"][1]["top1_mean"] < r["levels"][0]["top1_mean"] <= r["exact"]["top1"] + 1
    assert len(set(x["top1"] for x in r["runs"][3:])) > 1  # the seeds differ
    for f in ("noise.csv", "noise.json", "noise.svg", "results.jsonl"):
        assert (out / f).exists(), f
    # one thread, another batch size: the same numbers, run by run
    again = anybit.noise_sweep(model, data, "gauss:rel=0.05,0.3", seeds=3, threads=1, batch_size=100, progress=False)
    assert [x["top1"] for x in again["runs"]] == [x["top1"] for x in r["runs"]]
    # resume: every run is read back (a changed log line proves it is not recomputed)
    lines = (out / "results.jsonl").read_text().splitlines()
    rec = json.loads(lines[-1])
    rec["top1"] = 12.34
    lines[-1] = json.dumps(rec)
    (out / "results.jsonl").write_text("\n".join(lines) + "\n")
    resumed = anybit.noise_sweep(model, data, "gauss:rel=0.05,0.3", seeds=3, out=str(out), resume=True,
                                 progress=False)
    assert resumed["runs"][-1]["top1"] == 12.34 and resumed["runs"][0]["top1"] == r["runs"][0]["top1"]
    # the CLI prints the same table
    p = subprocess.run([EXE, "--threads", "2", "intsim", model, "-d", data, "--mac", "gauss:rel=0.05,0.3",
                        "--seeds", "3", "--no-progress"], check=True, capture_output=True, text=True)
    assert r["table"] in p.stdout


def test_adc_range_auto_needs_and_uses_calibration_data(fmnist_w8a8):
    d, py, cli = fmnist_w8a8
    model = str(d / "noise_int")
    if not os.path.exists(model):
        subprocess.run([EXE, "export", cli, "-o", model], check=True, capture_output=True)
    data = "fmnist::test:limit=200"
    with pytest.raises(anybit.Error, match="needs calibration data"):
        anybit.intsim_evaluate(model, data, mac="adc:bits=8,range=auto", progress=False)
    exact = anybit.intsim_evaluate(model, data, progress=False)
    fine = anybit.intsim_evaluate(model, data, mac="adc:bits=12,range=auto", calib_data="fmnist::train:limit=64",
                                  progress=False)
    coarse = anybit.intsim_evaluate(model, data, mac="adc:bits=3,range=auto", calib_data="fmnist::train:limit=64",
                                    progress=False)
    assert abs(fine["top1"] - exact["top1"]) <= 1.0  # a 12-bit ADC over the calibrated range reads almost exactly
    assert coarse["top1"] < fine["top1"]
    assert fine["layers"][0]["mean_abs_error"] > 0
    # an ADC whose full scale is a small fraction of the layer's reachable range clips, and says so
    clipping = anybit.intsim_evaluate(model, data, mac="adc:bits=6,fs=0.01", progress=False)
    convs = [l for l in clipping["layers"] if l["op"] == "conv2d"]
    assert sum(l["clipped"] for l in convs) > 0 and all(l["clipped"] == 0 for l in exact["layers"])


def test_noise_aware_finetune_adds_the_noise_while_training_only(fmnist_w8a8):
    d, py, cli = fmnist_w8a8
    data = "fmnist::train:limit=512"
    still = dict(epochs=1, lr=0.0, schedule="constant", momentum=0.0, weight_decay=0.0, return_report=True)
    # lr 0: the weights stay, so the reported training accuracy is that of the forward pass
    m0, r0 = anybit.finetune(cli, data, **still)
    m1, r1 = anybit.finetune(cli, data, noise="gauss:rel=1.0", **still)
    assert r1[0]["train_top1"] < r0[0]["train_top1"] - 5, (r0, r1)
    # the same seed draws the same noise; the saved model has none: it computes the input model
    _, r2 = anybit.finetune(cli, data, noise="gauss:rel=1.0", **still)
    assert r2[0]["train_loss"] == r1[0]["train_loss"]
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    assert torch.equal(m1(x), anybit.load(cli)(x))
    assert "randn_like" not in str(m1.graph) and "randn_like" not in str(m1.inlined_graph)
    with pytest.raises(anybit.Error, match="gauss:rel=R"):
        anybit.finetune(cli, data, epochs=1, noise="adc:bits=8,range=10")
    with pytest.raises(anybit.Error, match="unknown parameter"):
        anybit.finetune(cli, data, epochs=1, noise="gauss:rate=0.1")
