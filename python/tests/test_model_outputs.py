"""Models that return more than their class scores (a named tuple as torchvision's GoogLeNet
and Inception return when scripted, an unnamed tuple, a dict): evaluation, sweeps and
fine-tuning take the scores from the element a user names, or the obvious one, and refuse to
guess between two tensors."""
import json
import os
import subprocess
import warnings
from typing import Dict, NamedTuple, Optional

import pytest
import torch
import torch.nn as nn

import anybit

EXE = os.environ.get("ANYBIT_EXE", os.path.join(os.path.dirname(__file__), "..", "..", "build", "anybit"))


class Outputs(NamedTuple):
    logits: torch.Tensor
    aux: Optional[torch.Tensor]


class _Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def features(self, x):
        return torch.relu(self.conv(x)).mean((2, 3))


class NamedOut(_Body):
    def forward(self, x) -> Outputs:
        if torch.jit.is_scripting():  # as torchvision's GoogLeNet warns: aten::warn in the graph
            warnings.warn("scripted, this model returns a tuple")
        return Outputs(self.fc(self.features(x)), None)


class PairOut(_Body):  # (features, logits): which one is the scores is the user's to say
    def forward(self, x):
        f = self.features(x)
        return f, self.fc(f)


class DictOut(_Body):
    def forward(self, x) -> Dict[str, torch.Tensor]:
        return {"logits": self.fc(self.features(x))}


class LogitsOnly(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)[1]


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g)
    torch.manual_seed(0)
    plain = PairOut().eval()
    with torch.no_grad():
        y = plain(x)[1].argmax(1)
    return plain, x, y


def scripted(cls, plain):
    m = cls().eval()
    m.load_state_dict(plain.state_dict())
    return torch.jit.script(m)


W8A8 = {"rules": [{"kind": ["conv", "linear"], "role": "weight", "spec": "int8:per_channel"},
                  {"kind": ["relu", "mean"], "role": "activation", "spec": "auto8"},
                  {"role": "input", "spec": "int8"}]}


@pytest.mark.parametrize("fused", [True, False])
def test_a_named_tuples_logits_field_is_the_scores_and_runs_fused(fused):
    plain, x, y = data()
    m = scripted(NamedOut, plain)
    r = anybit.evaluate(m, (x, y), fused=fused)
    assert r["top1"] == 100.0
    assert r["scores"] == "field 'logits' (element 0) of the model's Outputs"
    assert r["runtime"] == ("onednn" if fused else "torchscript"), r.get("runtime_note")
    q = anybit.quantize(m, W8A8, calib_data=[x[:16]])
    rq = anybit.evaluate(q, (x, y), fused=fused)
    assert rq["scores"] == r["scores"] and rq["top1"] > 80.0
    assert rq["top1"] == anybit.evaluate(q, (x, y), fused=not fused)["top1"]


def test_an_unnamed_pair_needs_its_index_and_is_never_guessed():
    plain, x, y = data()
    m = scripted(PairOut, plain)
    with pytest.raises(anybit.Error, match=r"Tuple\[Tensor, Tensor\]: which element holds the class scores"):
        anybit.evaluate(m, (x, y))
    r = anybit.evaluate(m, (x, y), scores=1)
    assert r["top1"] == 100.0 and r["scores"] == "element 1 of the model's Tuple[Tensor, Tensor]"
    assert r["runtime"] == "onednn", r.get("runtime_note")
    # element 0 is the features: 8 "classes", another answer, but the one asked for
    assert anybit.evaluate(m, (x, y), scores=0)["top1"] < 100.0
    traced = torch.jit.trace(plain, x[:2])
    assert anybit.evaluate(traced, (x, y), scores=1)["top1"] == 100.0
    logits_only = torch.jit.trace(LogitsOnly(plain), x[:2])
    with pytest.raises(anybit.Error, match="the model returns one tensor"):
        anybit.evaluate(logits_only, (x, y), scores=1)
    with pytest.raises(anybit.Error, match="3 elements|2 elements"):
        anybit.evaluate(m, (x, y), scores=2)


def test_a_dicts_logits_key_is_the_scores_and_a_missing_key_is_named():
    plain, x, y = data()
    m = scripted(DictOut, plain)
    r = anybit.evaluate(m, (x, y))
    assert r["top1"] == 100.0 and r["scores"] == "key 'logits' of the model's dict"
    with pytest.raises(anybit.Error, match=r"without the key 'out' \(its keys: logits\)"):
        anybit.evaluate(m, (x, y), scores="out")


def test_cli_eval_and_finetune_take_the_scores_flag(tmp_path):
    plain, x, y = data()
    import numpy as np
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    spec = f"npy:{tmp_path}/x.npy:{tmp_path}/y.npy"
    path = str(tmp_path / "pair.pt")
    scripted(PairOut, plain).save(path)
    r = subprocess.run([EXE, "eval", path, "-d", spec, "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 1 and "--scores" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = subprocess.run([EXE, "eval", path, "-d", spec, "--scores", "1", "--json", "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["top1"] == 100.0 and out["scores"] == "element 1 of the model's Tuple[Tensor, Tensor]"
    q = anybit.quantize(torch.jit.load(path), W8A8, calib_data=[x[:16]])
    qpath = str(tmp_path / "q.pt")
    q.save(qpath)
    ft = str(tmp_path / "ft.pt")
    r = subprocess.run([EXE, "finetune", qpath, "-d", spec, "-o", ft, "--max-steps", "2", "-b", "32",
                        "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 1 and "which element holds the class scores" in r.stderr and not os.path.exists(ft)
    r = subprocess.run([EXE, "finetune", qpath, "-d", spec, "-o", ft, "--max-steps", "2", "-b", "32",
                        "--scores", "1", "--teacher", path, "--eval", spec, "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "class scores: element 1" in r.stdout
    # the fine-tuned model keeps the model's own output, both elements
    assert isinstance(torch.jit.load(ft)(x[:2]), tuple)
