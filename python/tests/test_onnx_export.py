"""ONNX export of integer model directories (python/anybit/onnx_export.py).

The models are written here with NumPy, following docs/integer-format.md, and calibrated
with the test's own reference: a NumPy interpreter of the fake-quantized float semantics
(dequantize, float conv / pool / add, quantize with round-half-even and clamp). The
8-bit model must export as pure QDQ and run on ONNX Runtime (tests/onnxrt.py)
with the reference's argmax and within one output step of its logits; the 4-bit model
exports QONNX Quant nodes, which the test lowers to stock ONNX ops (Div, Round, Clip, ...)
per QONNX's definition to run them the same way.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE = os.path.join(ROOT, "python", "anybit", "onnx_export.py")

# Loaded from its file: the exporter needs numpy and onnx only, not the C++ extension that
# `import anybit` loads.
_spec = importlib.util.spec_from_file_location("anybit_onnx_export", MODULE)
ox = importlib.util.module_from_spec(_spec)
_ort_spec = importlib.util.spec_from_file_location("anybit_test_onnxrt", os.path.join(ROOT, "tests", "onnxrt.py"))
onnxrt = importlib.util.module_from_spec(_ort_spec)
_ort_spec.loader.exec_module(onnxrt)
_spec.loader.exec_module(ox)

INPUT_SHAPE = (3, 9, 9)


# --- reference: fake-quantized float semantics of a manifest ---------------------------


def fake_quant(x, q):
    """x^ = (clamp(round_half_even(x / s) + z, qmin, qmax) - z) * s, in float32 like ONNX
    (scale None: not quantized yet, while the test calibrates)."""
    if q["scale"] is None:
        return np.asarray(x, np.float32)
    s = np.float32(q["scale"])
    qv = np.clip(np.round(np.asarray(x, np.float32) / s) + q["zero_point"], q["qmin"], q["qmax"])
    return ((qv - q["zero_point"]) * s).astype(np.float32)


def pair(v, default):
    v = default if v is None else v
    return list(v) if isinstance(v, list) else [v, v]


def windows(x, kernel, stride, dilation, out_hw):
    """[N, C, OH, OW, kH, kW] windows of an already padded [N, C, H, W] array."""
    eff = [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    w = np.lib.stride_tricks.sliding_window_view(x, eff, axis=(2, 3))
    w = w[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]
    return w[:, :, :out_hw[0], :out_hw[1]]


def out_size(n, k, s, p, d, ceil_mode=False):
    """PyTorch's output size of a sliding window."""
    span = n + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    return out - 1 if ceil_mode and (out - 1) * s >= n + p else out


def ref_conv(x, w, b, op):
    k, s = pair(op.get("kernel"), 1), pair(op.get("stride"), 1)
    p, d = pair(op.get("padding"), 0), pair(op.get("dilation"), 1)
    g = op.get("groups", 1)
    oh, ow = (out_size(x.shape[2 + i], k[i], s[i], p[i], d[i]) for i in range(2))
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    win = windows(xp, k, s, d, (oh, ow))
    cin, cout = x.shape[1] // g, w.shape[0] // g
    y = np.concatenate([np.einsum("ncxyij,ocij->noxy", win[:, i * cin:(i + 1) * cin], w[i * cout:(i + 1) * cout])
                        for i in range(g)], axis=1)
    return y + b.reshape(1, -1, 1, 1)


def ref_pool(x, op, kind):
    k = pair(op["kernel"], None)
    s, p = pair(op.get("stride"), k), pair(op.get("padding"), 0)
    d = pair(op.get("dilation"), 1)
    ceil = op.get("ceil_mode", False)
    oh, ow = (out_size(x.shape[2 + i], k[i], s[i], p[i], d[i], ceil) for i in range(2))
    extra = [max(0, (o - 1) * s[i] + d[i] * (k[i] - 1) + 1 - x.shape[2 + i] - 2 * p[i]) for i, o in enumerate((oh, ow))]
    fill = -np.inf if kind == "maxpool2d" else 0.0  # PyTorch: max pads with -inf, avg counts zeros
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p[0], p[0] + extra[0]), (p[1], p[1] + extra[1])),
                constant_values=fill)
    win = windows(xp, k, s, d, (oh, ow))
    return win.max(axis=(4, 5)) if kind == "maxpool2d" else win.mean(axis=(4, 5))


def dequantized_weight(op, arrays):
    w = arrays[op["weight"]].astype(np.float64)
    o = w.shape[0]
    shape = (o,) + (1,) * (w.ndim - 1)
    sw = np.broadcast_to(np.asarray(op["weight_scale"], np.float64), (o,))
    zw = np.broadcast_to(np.asarray(op["weight_zero_point"], np.float64), (o,))
    wf = ((w - zw.reshape(shape)) * sw.reshape(shape)).astype(np.float32)
    return wf, sw


def run_reference(manifest, arrays, x, upto=None):
    """Fake-quantized float values of every tensor for float input x [N, ...]; stops after
    `upto` ops (None: all)."""
    inp = manifest["inputs"][0]
    t = {inp["name"]: (fake_quant(x, inp), inp)}
    for op in manifest["ops"][:upto]:
        kind = op["op"]
        xs = [t[n][0] for n in op["inputs"]]
        qin = t[op["inputs"][0]][1]
        q = {k: op[k] for k in ("scale", "zero_point", "qmin", "qmax") if k in op}
        if kind in ("conv2d", "linear"):
            wf, sw = dequantized_weight(op, arrays)
            b = (arrays[op["bias"]] * (np.float32(qin["scale"] * sw))).astype(np.float32) if "bias" in op else 0.0
            if kind == "conv2d":
                y = ref_conv(xs[0], wf.astype(np.float64), np.broadcast_to(b, (wf.shape[0],)), op)
            else:
                y = xs[0].astype(np.float64) @ wf.T.astype(np.float64) + b
        elif kind == "add":
            y = xs[0].astype(np.float64) + xs[1]
        elif kind == "relu":
            y, q = np.maximum(xs[0], 0), dict(qin, qmin=max(qin["qmin"], qin["zero_point"]))
        elif kind == "clamp":
            y, q = xs[0], dict(qin, qmin=op["qmin"], qmax=op["qmax"])
        elif kind in ("maxpool2d", "avgpool2d"):
            y = ref_pool(xs[0], op, kind)
            q = qin if kind == "maxpool2d" else q
        elif kind == "global_avgpool":
            y = xs[0].astype(np.float64).mean(axis=(2, 3), keepdims=True)
        elif kind == "flatten":
            y, q = xs[0].reshape(len(xs[0]), -1), qin
        elif kind == "concat":
            y = np.concatenate(xs, axis=op.get("axis", 1))
        else:
            raise AssertionError(kind)
        t[op["output"]] = (fake_quant(y.astype(np.float32), q), q)
    return t


# --- building integer models with NumPy --------------------------------------------------


class ModelWriter:
    """Writes an integer model op by op; each requantizing op's output quantization is
    calibrated on `calib` with the reference (min/max of its float output)."""

    def __init__(self, d, calib, input_q):
        self.d, self.calib, self.rng = d, calib, np.random.default_rng(1)
        self.arrays = {}
        self.m = {"format": "anybit-int", "version": 1, "metadata": {"producer": "test_onnx_export"},
                  "inputs": [dict(name="input.0", shape=list(INPUT_SHAPE), **input_q)], "ops": [], "outputs": []}

    def quant(self, name):
        return run_reference(self.m, self.arrays, self.calib[:1])[name][1]

    def save(self, name, a):
        self.arrays[name] = a
        np.save(os.path.join(self.d, name), a)
        return name

    def calibrated(self, op, qmin, qmax, relu=False):
        """Appends `op` with an output quantization covering its calibration values:
        asymmetric over [qmin, qmax], or with relu a fused ReLU (qmin raised to the zero
        point, which is 0 for a signed range: symmetric int8 with ReLU is [0, 127])."""
        op.update(scale=None, zero_point=0, qmin=qmin, qmax=qmax)
        self.m["ops"].append(op)
        y = run_reference(self.m, self.arrays, self.calib)[op["output"]][0]
        lo, hi = (0.0 if relu else min(float(y.min()), 0.0)), max(float(y.max()), 1e-3)
        # An irregular margin keeps scales from being rational multiples of each other,
        # which would put many values exactly on rounding ties (avgpool: n * s_in / 4).
        hi *= 1 + 0.05 * self.rng.random()
        if relu and qmin < 0:
            op.update(scale=hi / qmax, zero_point=0, qmin=0)
        else:
            s = (hi - lo) / (qmax - qmin)
            z = int(np.clip(round(qmin - lo / s), qmin, qmax))
            op.update(scale=s, zero_point=z, qmin=z if relu else qmin)
        return op["output"]

    def weighted(self, kind, name, x, out, wbits, per_channel, qrange, relu=False, **conv):
        """conv2d/linear with random weights quantized to wbits (symmetric, narrow range)."""
        cin = self.quant_shape(x)[0] // conv.get("groups", 1)
        shape = (out, cin) + tuple(pair(conv.get("kernel"), 1)) if kind == "conv2d" else (out, cin)
        w = self.rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        qmax_w = 2 ** (wbits - 1) - 1
        amax = np.abs(w).reshape(out, -1).max(axis=1) if per_channel else np.array([np.abs(w).max()])
        sw = amax / qmax_w
        wq = np.clip(np.round(w / sw.reshape((-1,) + (1,) * (w.ndim - 1))), -qmax_w, qmax_w).astype(np.int8)
        s_in = self.quant(x)["scale"]
        bias = np.round(self.rng.normal(0, 0.1, out) / (s_in * np.broadcast_to(sw, (out,)))).astype(np.int32)
        op = {"op": kind, "name": name, "inputs": [x], "output": f"{name}:out",
              ("out_channels" if kind == "conv2d" else "out_features"): out,
              "weight": self.save(f"{name}.weight.npy", wq),
              "weight_scale": [float(v) for v in sw] if per_channel else float(sw[0]),
              "weight_zero_point": 0, "weight_qmin": -qmax_w, "weight_qmax": qmax_w,
              "bias": self.save(f"{name}.bias.npy", bias), "m0": 1 << 30, "shift": 0, **conv}
        return self.calibrated(op, *qrange, relu=relu)

    def quant_shape(self, name):
        return run_reference(self.m, self.arrays, self.calib[:1])[name][0].shape[1:]

    def op(self, kind, name, inputs, qrange=None, **fields):
        """Appends a non-weighted op (m0/shift are placeholders: ONNX does not use them)."""
        op = {"op": kind, "name": name, "inputs": inputs, "output": f"{name}:out", **fields}
        if kind in ("add", "concat"):
            op.update(input_m0=[1 << 30] * len(inputs), input_shift=[0] * len(inputs))
        if kind == "add":
            op["left_shift"] = 20
        if qrange is None:
            self.m["ops"].append(op)
            return op["output"]
        if kind != "concat":
            op.update(m0=1 << 30, shift=0)
        return self.calibrated(op, *qrange)

    def finish(self, output):
        self.m["outputs"] = [{"name": output}]
        with open(os.path.join(self.d, "manifest.json"), "w") as f:
            json.dump(self.m, f, indent=1)
        return self.m


def build(d, bits):
    """A small residual CNN over every op of the format. bits=8: int8/uint8 everywhere;
    bits=4: 4-bit weights and activations, ternary fc weights, 16-bit logits."""
    rng = np.random.default_rng(0)
    calib = rng.random((16,) + INPUT_SHAPE, dtype=np.float32)
    w = ModelWriter(d, calib, {"scale": 1 / 255, "zero_point": 0, "qmin": 0, "qmax": 255})
    act = (-128, 127) if bits == 8 else (-8, 7)
    uact = (0, 255) if bits == 8 else (0, 15)
    x = w.weighted("conv2d", "conv1", "input.0", 8, bits, True, act, relu=True, kernel=[3, 3], padding=[1, 1])
    x = w.op("maxpool2d", "pool", [x], kernel=2, stride=2, ceil_mode=True)          # 9x9 -> 5x5
    y = w.weighted("conv2d", "conv2", x, 8, bits, True, act, kernel=3, padding=1, groups=2)
    x = w.op("add", "add", [x, y], act)
    x = w.op("relu", "relu", [x])
    q = w.quant(x)
    six = 60 if bits == 8 else 5  # a ReLU6-like clamp: [z, z + six]
    x = w.op("clamp", "relu6", [x], qmin=q["zero_point"], qmax=min(q["qmax"], q["zero_point"] + six))
    x = w.op("avgpool2d", "avg", [x], uact, kernel=2, stride=1)                      # 5x5 -> 4x4
    y = w.weighted("conv2d", "conv3", x, 4, bits, False, act, kernel=1)
    x = w.op("concat", "cat", [x, y], act, axis=1)                                   # 12 channels
    x = w.op("global_avgpool", "gap", [x], act)
    x = w.op("flatten", "flatten", [x])
    logits = (-128, 127) if bits == 8 else (-32768, 32767)
    x = w.weighted("linear", "fc", x, 10, 8 if bits == 8 else 2, bits == 4, logits)
    return w.finish(x), w.arrays


# --- running ONNX --------------------------------------------------------------------------


def lower_quant(model):
    """QONNX Quant -> stock ONNX, after QONNX's definition (qonnx.custom_op.general.quant):
    y = (clip(round(x / s + z), min_int, max_int) - z) * s with round half to even."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        if n.op_type != "Quant":
            nodes.append(n)
            continue
        a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
        bits = int(inits[n.input[3]])
        lo = -(2 ** (bits - 1)) + a["narrow"] if a["signed"] else 0
        hi = 2 ** (bits - 1) - 1 if a["signed"] else 2**bits - 1 - a["narrow"]
        x, s, z = n.input[:3]
        p = n.output[0] + "/lowered"
        model.graph.initializer.extend([numpy_helper.from_array(np.float32(lo), p + "/lo"),
                                        numpy_helper.from_array(np.float32(hi), p + "/hi")])
        nodes += [helper.make_node("Div", [x, s], [p + "/div"]), helper.make_node("Add", [p + "/div", z], [p + "/add"]),
                  helper.make_node("Round", [p + "/add"], [p + "/round"]),
                  helper.make_node("Clip", [p + "/round", p + "/lo", p + "/hi"], [p + "/clip"]),
                  helper.make_node("Sub", [p + "/clip", z], [p + "/sub"]),
                  helper.make_node("Mul", [p + "/sub", s], [n.output[0]])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]  # the bit widths are gone
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", ox.OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def run_onnxrt(tmp_path, model_path, x, opt="all"):
    return onnxrt.run(model_path, x, batch=37, opt=opt)


def check_against_reference(manifest, arrays, y, x):
    """argmax equal and every logit within one output step of the reference."""
    ref = run_reference(manifest, arrays, x)[manifest["outputs"][0]["name"]]
    ref_y, q = ref
    step = q["scale"]
    assert y.shape == ref_y.shape and y.dtype == np.float32
    diff = np.abs(y - ref_y)
    assert diff.max() <= step * 1.001, f"max |onnx - reference| = {diff.max() / step:.3f} steps"
    np.testing.assert_array_equal(y.argmax(axis=1), ref_y.argmax(axis=1))
    return int((diff > step * 1e-3).sum())


# --- tests -----------------------------------------------------------------------------


def export(tmp_path, bits, u8_weights=False):
    d = tmp_path / f"w{bits}a{bits}_int"
    d.mkdir()
    manifest, arrays = build(str(d), bits)
    out = tmp_path / f"w{bits}a{bits}.onnx"
    summary = ox.export_onnx(str(d), str(out), u8_weights=u8_weights)
    model = onnx.load(str(out))
    return manifest, arrays, summary, model, out


def test_8bit_model_is_pure_qdq_and_matches_reference_on_onnxruntime(tmp_path):
    check_8bit(tmp_path, "disabled")  # the graph's own float ops


def test_8bit_model_on_onnxruntimes_integer_kernels(tmp_path):
    # QDQ groups fused to integer kernels; its own ctest (onnx_runtime_integer_kernels), which
    # shows as skipped where those kernels saturate (x86-64 without VNNI)
    onnxrt.require_exact_int8()
    check_8bit(tmp_path, "all")


def test_u8_weights_dequantize_to_the_same_values_and_run_on_integer_kernels_on_any_cpu(tmp_path):
    # uint8 weights (w + 128, zero point z + 128): ONNX Runtime's u8 x u8 kernels, exact also
    # where its u8 x s8 ones saturate (x86-64 without VNNI)
    (tmp_path / "u8").mkdir()
    (tmp_path / "s8").mkdir()
    model = check_8bit(tmp_path / "u8", "all", u8_weights=True)
    _, _, _, signed, _ = export(tmp_path / "s8", 8)
    inits_u8 = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    inits_s8 = {i.name: numpy_helper.to_array(i) for i in signed.graph.initializer}
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("/quantized")
               and inits_s8[n.input[0]].dtype != np.int32]  # not the int32 biases
    assert len(weights) == 4
    for n in weights:
        w, z = inits_u8[n.input[0]], inits_u8[n.input[2]]
        ws, zs = inits_s8[n.input[0]], inits_s8[n.input[2]]
        assert w.dtype == np.uint8 and z.dtype == np.uint8 and ws.dtype == np.int8, n.name
        np.testing.assert_array_equal(w.astype(np.int64) - 128, ws)
        np.testing.assert_array_equal(z.astype(np.int64) - 128, zs)
    # and from the command line
    assert ox.main([str(tmp_path / "s8" / "w8a8_int"), "-o", str(tmp_path / "cli.onnx"), "--u8-weights"]) == 0
    cli = onnx.load(str(tmp_path / "cli.onnx"))
    quantized = [numpy_helper.to_array(i).dtype for i in cli.graph.initializer if i.name.endswith("/quantized")]
    assert sorted(map(str, quantized)) == ["int32"] * 4 + ["uint8"] * 4  # biases, weights


def check_8bit(tmp_path, opt, u8_weights=False):
    manifest, arrays, summary, model, out = export(tmp_path, 8, u8_weights)
    onnx.checker.check_model(model, full_check=True)
    n_tensors = 1 + len(manifest["ops"]) + 4  # input, op outputs, 4 weights
    assert summary["pure_qdq"] and summary["quant_tensors"] == 0 and summary["qdq_tensors"] == n_tensors
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "MaxPool", "Concat"} <= ops and "Quant" not in ops
    assert [o.domain for o in model.opset_import] == [""] and model.opset_import[0].version == 13
    # The fused ReLU of conv1 ([z, 127] in int8) is a Relu in front of its QuantizeLinear.
    relu_in = [n for n in model.graph.node if n.op_type == "Relu" and n.output[0].startswith("conv1:out")]
    assert len(relu_in) == 1
    # per-channel weights: DequantizeLinear on axis 0 with one scale per output channel
    dq = next(n for n in model.graph.node if n.output[0] == "conv1.weight/float")
    assert helper.get_attribute_value(dq.attribute[0]) == 0
    assert [i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input] == ["N"]

    x = np.random.default_rng(7).random((200,) + INPUT_SHAPE, dtype=np.float32)
    y = run_onnxrt(tmp_path, out, x, opt)
    off = check_against_reference(manifest, arrays, y, x)
    print(f"onnxruntime {onnxrt.version()} --opt {opt}: {off} of {y.size} logits one step off the reference")
    return model


def test_4bit_model_uses_qonnx_quant_and_matches_reference(tmp_path):
    manifest, arrays, summary, model, out = export(tmp_path, 4)
    onnx.checker.check_model(model, full_check=True)
    assert not summary["pure_qdq"]
    # 8-bit: the uint8 input and nothing else; the rest is 4-bit, ternary or 16-bit Quant.
    assert summary["qdq_tensors"] == 1 and summary["quant_tensors"] == len(manifest["ops"]) + 4
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 13), (ox.QONNX_DOMAIN, 1)}
    quants = {n.output[0]: n for n in model.graph.node if n.op_type == "Quant"}
    assert all(n.domain == ox.QONNX_DOMAIN for n in quants.values())
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}

    def fmt(name):
        n = quants[name]
        a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
        return int(inits[n.input[3]]), a["signed"], a["narrow"], a["rounding_mode"]

    assert fmt("conv1.weight/float") == (4, 1, 1, b"ROUND")  # [-7, 7]
    assert fmt("fc.weight/float") == (2, 1, 1, b"ROUND")     # ternary [-1, 1]
    assert fmt("fc:out") == (16, 1, 0, b"ROUND")
    assert fmt("avg:out") == (4, 0, 0, b"ROUND")             # uint4 [0, 15]
    assert fmt("conv1:out") == (4, 1, 0, b"ROUND")           # int4 with a fused ReLU: [0, 7] ...
    relu = next(n for n in model.graph.node if n.output[0] == quants["conv1:out"].input[0])
    assert relu.op_type == "Relu"                            # ... is a Relu before the Quant
    x = np.random.default_rng(8).random((120,) + INPUT_SHAPE, dtype=np.float32)
    lowered = tmp_path / "lowered.onnx"
    onnx.save(lower_quant(model), str(lowered))
    y = run_onnxrt(tmp_path, lowered, x, "disabled")
    check_against_reference(manifest, arrays, y, x)


def test_cli_writes_the_model_and_reports(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    build(str(d), 8)
    out = tmp_path / "cli.onnx"
    r = subprocess.run([sys.executable, MODULE, str(d), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "pure QDQ" in r.stdout and out.exists()
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def write_manifest(d, m):
    d.mkdir(exist_ok=True)
    (d / "manifest.json").write_text(json.dumps(m))


def small_manifest():
    q = {"scale": 0.1, "zero_point": 0, "qmin": -128, "qmax": 127}
    return {"format": "anybit-int", "version": 1, "inputs": [dict(name="x", shape=[4], **q)],
            "ops": [{"op": "relu", "name": "r", "inputs": ["x"], "output": "r:out"}], "outputs": [{"name": "r:out"}]}


def test_unknown_op_is_a_clear_error_and_writes_nothing(tmp_path):
    m = small_manifest()
    m["ops"].insert(0, {"op": "gelu", "name": "g", "inputs": ["x"], "output": "g:out"})
    write_manifest(tmp_path / "bad", m)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ox.OnnxExportError) as e:
        ox.export_onnx(str(tmp_path / "bad"), str(out))
    msg = str(e.value)
    assert "bad/manifest.json: ops[0].op: unknown op 'gelu' (expected one of: conv2d, linear," in msg
    assert not out.exists() and os.listdir(tmp_path) == ["bad"]
    # the CLI: one line on stderr, non-zero exit
    r = subprocess.run([sys.executable, MODULE, str(tmp_path / "bad"), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "ops[0].op: unknown op 'gelu'" in r.stderr


@pytest.mark.parametrize("edit, message", [
    (lambda d, m: os.remove(d / "manifest.json"), "manifest.json: missing"),
    (lambda d, m: m["ops"][0].update(strides=2), "ops[0].strides: unknown field"),
    (lambda d, m: m["ops"][0].update(inputs=["nope"]), "ops[0].inputs[0]: unknown tensor 'nope'"),
    (lambda d, m: m["inputs"][0].pop("scale"), "inputs[0].scale: missing"),
    (lambda d, m: m.update(format="other"), "format: expected \"anybit-int\""),
])
def test_bad_manifests_name_the_file_and_field(tmp_path, edit, message):
    d = tmp_path / "m"
    m = small_manifest()
    write_manifest(d, m)
    edit(d, m)
    if (d / "manifest.json").exists():
        write_manifest(d, m)
    with pytest.raises(ox.OnnxExportError) as e:
        ox.export_onnx(str(d), str(tmp_path / "out.onnx"))
    assert str(d / "manifest.json") in str(e.value) and message in str(e.value)


@pytest.mark.parametrize("qmin, qmax, z, expected", [
    (0, 255, 0, "qdq uint8"), (-128, 127, 5, "qdq int8"), (-127, 127, 0, "qdq int8"),
    (0, 127, 0, "qdq int8"),      # fused ReLU of int8, not uint7
    (9, 127, 9, "qdq int8"),      # the same with an asymmetric zero point
    (0, 255, -3, "quant u8"),     # zero point outside uint8
    (0, 127, 3, "quant u7"), (0, 15, 0, "quant u4"), (0, 7, 0, "quant s4"), (-8, 7, 0, "quant s4"),
    (-7, 7, 0, "quant s4 narrow"), (-1, 1, 0, "quant s2 narrow"), (0, 1, 0, "quant u1"),
    (-32768, 32767, 0, "quant s16"), (-(2**31) + 1, 2**31 - 1, 0, "quant s32 narrow"),
])
def test_format_of_a_range(qmin, qmax, z, expected):
    f = ox._format(qmin, qmax, [z], z)
    got = (f"qdq {'int8' if f.signed else 'uint8'}" if f.qdq else
           f"quant {'s' if f.signed else 'u'}{f.bits}" + (" narrow" if f.narrow else ""))
    assert got == expected


def test_narrow_ranges_get_relu_or_clip_before_quantizelinear(tmp_path):
    m = small_manifest()
    m["inputs"][0].update(zero_point=-3, qmin=-100, qmax=90)  # int8, narrower both ends: Clip
    write_manifest(tmp_path / "m", m)
    model, summary = ox.build_model(str(tmp_path / "m"))
    types = [n.op_type for n in model.graph.node]
    assert types[:3] == ["Clip", "QuantizeLinear", "DequantizeLinear"] and summary["pure_qdq"]
    clip = {i.name: float(numpy_helper.to_array(i)) for i in model.graph.initializer if "clip" in i.name}
    assert sorted(clip.values()) == pytest.approx([-9.7, 9.3])
    # relu of an int8 tensor: Relu node, then QDQ without another range node
    assert types[3:] == ["Relu", "QuantizeLinear", "DequantizeLinear"]
