"""Data-parallel fine-tuning (`anybit finetune --nproc N`, Gloo): 2 processes give the same
weights as 1 process with the same global batch, within float tolerance."""
import os
import socket
import subprocess
import sys

import pytest
import torch

import anybit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXE = os.environ.get("ANYBIT_EXE", os.path.join(ROOT, "build", "anybit"))
FMNIST = os.path.join(ROOT, "models", "fmnist_resnet.pt")
DATA = "fmnist:/usr/share/datasets/fashion-mnist:train"


def run(*args, env=None):
    r = subprocess.run([EXE, "--threads", "1", *args], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def w4a4(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    q = str(d / "w4a4.pt")
    run("quantize", FMNIST, "-c", os.path.join(ROOT, "examples", "w4a4.yaml"), "-d", DATA + ":limit=256",
        "--calib-batches", "2", "--fold-bn", "-o", q, "--no-progress")
    return d, q


def params(path):
    return {k: v.detach().clone() for k, v in anybit.load(path).named_parameters()}


def finetune(q, out, limit, extra=(), env=None):
    return run("finetune", q, "-d", f"{DATA}:limit={limit}", "--epochs", "1", "-b", "64", "--lr", "0.05",
               "--teacher", FMNIST, "--kd-weight", "0.5", "-o", out, "--no-progress", *extra, env=env)


# 500 samples: 7 batches of 64 and one of 52; 129: the last batch has one sample, so the
# second process has none in it and must still take part in the gradient sum
@pytest.mark.parametrize("limit", [500, 129])
def test_two_processes_equal_one_with_the_same_global_batch(w4a4, limit):
    d, q = w4a4
    one, two = str(d / f"one{limit}.pt"), str(d / f"two{limit}.pt")
    r1 = finetune(q, one, limit)
    r2 = finetune(q, two, limit, ["--nproc", "2"])
    start, a, b = params(q), params(one), params(two)
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 1e-3  # training changed the weights...
    assert diff < 1e-4 * max(moved, 1.0)  # ...and both runs changed them alike
    # the reported epoch loss is over the global batch in both
    loss = lambda r: float(r.stdout.split("loss ")[1].split()[0])
    assert loss(r1) == pytest.approx(loss(r2), rel=1e-4)
    assert r2.stdout.count("wrote") == 1  # only rank 0 writes and prints


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_processes_started_by_hand_meet_through_a_tcp_store(w4a4):
    # what a multi-host run does (or torchrun): RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT
    d, q = w4a4
    one, two = str(d / "tcp_one.pt"), str(d / "tcp_two.pt")
    finetune(q, one, 256)
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen(
            [EXE, "--threads", "1", "finetune", q, "-d", f"{DATA}:limit=256", "--epochs", "1", "-b", "64", "--lr",
             "0.05", "--teacher", FMNIST, "--kd-weight", "0.5", "-o", two if rank == 0 else two + ".rank1",
             "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert not os.path.exists(two + ".rank1")  # ranks other than 0 write nothing
    a, b = params(one), params(two)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_bad_process_counts_are_clear_errors(w4a4):
    d, q = w4a4
    out = str(d / "bad.pt")
    r = subprocess.run([EXE, "finetune", q, "-d", f"{DATA}:limit=64", "-b", "2", "--nproc", "3", "-o", out],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "--nproc 3 is larger than the batch size 2" in r.stderr
    r = subprocess.run([EXE, "finetune", q, "-d", f"{DATA}:limit=64", "-o", out], capture_output=True, text=True,
                       env=dict(os.environ, WORLD_SIZE="2", RANK="0"))
    assert r.returncode != 0 and "MASTER_ADDR" in r.stderr
    r = subprocess.run([EXE, "finetune", q, "-d", f"{DATA}:limit=64", "-o", out], capture_output=True, text=True,
                       env=dict(os.environ, WORLD_SIZE="2", RANK="two", MASTER_ADDR="127.0.0.1"))
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0
    assert "RANK='two' is not an integer in [0, 1]" in r.stderr
    assert not os.path.exists(out)
