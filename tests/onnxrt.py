"""Runs an ONNX file with ONNX Runtime's CPU execution provider (the `onnxruntime` wheel from
PyPI, installed into the project's venv by scripts/install-deps.sh). Shared by the ONNX tests
(python/tests/test_onnx_export.py, tests/test_onnx_fmnist.py).

A test that needs it calls `require()` first: without onnxruntime the test is skipped (and
ctest shows it as skipped, see tests/pytest_skip_code.py), never passed.
"""
import platform
import re

import numpy as np
import pytest

LEVELS = ("disabled", "basic", "extended", "all")


def require():
    """Returns the onnxruntime module, or skips the calling test."""
    return pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (scripts/install-deps.sh "
                                                     "puts it in the project's venv, .venv)")


def int8_kernels_exact():
    """Whether ONNX Runtime's fused integer kernels (`opt="all"`: QLinearConv, QGemm) sum
    exactly on this CPU. On x86-64 without VNNI (AVX-512 VNNI or AVX-VNNI) its u8 x s8 kernels
    add pairs of products in saturating 16-bit lanes (vpmaddubsw, as ONNX Runtime's
    quantization documentation says), so 8-bit activations with 8-bit weights can come out
    several steps off; `opt="disabled"` (the graph's own float ops) is exact everywhere."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return True
    return re.search(r"\b(avx512_vnni|avx_vnni)\b", flags) is not None


def require_exact_int8():
    """Skips the calling test where ONNX Runtime's integer kernels saturate (int8_kernels_exact)."""
    if not int8_kernels_exact():
        pytest.skip("ONNX Runtime's u8s8 integer kernels saturate in 16 bits on this x86-64 CPU without VNNI")


def run(model_path, x, batch=500, opt="all", output=None):
    """Runs the model's single input over `x` ([N, ...]) in batches of `batch` rows and returns
    its first output (or the output named `output`) for all N rows as float32. `opt` is ONNX
    Runtime's graph optimization level; `all` fuses QDQ groups into integer kernels such as
    QLinearConv, `disabled` runs the graph's own float ops."""
    ort = require()
    if opt not in LEVELS:
        raise ValueError(f"opt must be one of {LEVELS}, not {opt!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt]
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{model_path}: the model has {len(inputs)} inputs, expected one")
    name = inputs[0].name
    outs = [output] if output else [sess.get_outputs()[0].name]
    x = np.ascontiguousarray(x, dtype=np.float32)
    parts = [sess.run(outs, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def version():
    return require().__version__
