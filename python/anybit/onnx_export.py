"""ONNX export of an anybit integer model directory (docs/integer-format.md).

    summary = export_onnx("model_int", "model.onnx")
    python3 -m anybit.onnx_export model_int -o model.onnx

The result is a float-in, float-out ONNX model (opset 13) that computes the fake-quantized
semantics of the integer model: every manifest tensor becomes a float value holding its
dequantized integers ``(q - z) * s``, and every op is its float ONNX twin followed by the
quantization of its output:

    manifest                         ONNX
    --------------------------------------------------------------------------------------
    inputs[i] (float in)             [Relu|Clip] -> QuantizeLinear -> DequantizeLinear
    conv2d / linear                  Conv / Gemm(transB) on DQ(weight) and DQ(int32 bias)
    add, concat                      Add, Concat               (then the output quantization)
    avgpool2d, global_avgpool        AveragePool(count_include_pad=1), GlobalAveragePool
    relu, clamp                      Relu, Clip on the float value
    maxpool2d, flatten               MaxPool (ceil_mode as explicit end padding), Flatten
    every op output                  quantized again with the manifest's parameters

How a tensor is quantized depends on the width of its integer range [qmin, qmax]: the
smallest signed (qmin < 0) or unsigned bit width holding it, where a fused-ReLU range
(qmin == zero_point) such as [0, 127] reads as the ReLU of int8 rather than as uint7
(see ``_width``). relu, clamp, maxpool2d and flatten keep their input's format.

* 8-bit tensors use standard QDQ: QuantizeLinear/DequantizeLinear, uint8 for unsigned
  ranges and int8 for signed ones, per tensor for activations and per output channel
  (axis 0) for weights. A range narrower than the dtype's is enforced on the float value
  before QuantizeLinear: a Relu for a fused ReLU (qmin == zero_point), else a Clip to
  [(qmin - z) s, (qmax - z) s].
* Every other width (2, 4, 16 bits, int32 logits, ...) uses a QONNX ``Quant`` node
  (domain ``qonnx.custom_op.general``, output: the dequantized float; inputs x, scale,
  zeropt, bitwidth; attributes signed, narrow, rounding_mode="ROUND"), with ``narrow``
  for signed ranges that drop the minimum ([-7, 7]) and the same Relu/Clip where the
  range is narrower than what the bit width expresses. Weights are then float
  initializers (the dequantized integers) behind a per-channel Quant, as QONNX expects.
* Biases are always ``DequantizeLinear(bias_int32, s_in * s_w, 0)``, per channel when
  the weight scale is.

ONNX Runtime fuses the QDQ groups into integer kernels (QLinearConv, QGemm) at its default
graph optimization. On x86-64 CPUs without VNNI (AVX-512 VNNI or AVX-VNNI) those u8 x s8
kernels add pairs of products in saturating 16-bit lanes, so an 8-bit model can come out
several steps off (measured on the shipped W8A8 model on an AVX2-only CPU: 87.94% top-1
against 92.90%); there, run it with ``GraphOptimizationLevel.ORT_DISABLE_ALL`` (the graph's
own float ops, which give anybit's predictions), export with ``--u8-weights`` (uint8 weights
with zero point 128, the same values, which ONNX Runtime's u8 x u8 kernels sum exactly:
92.91% top-1 on that CPU at the default optimization), or use a CPU with VNNI.

The dyadic multipliers (``m0``/``shift``) are not used: ONNX runtimes requantize with the
float scales, so results can differ from the integer engine by one step where its two
roundings do (docs/integer-format.md, *Requantization*). A model without any Quant node
("pure QDQ") runs on any stock ONNX runtime; the others need a QONNX-aware tool.

Pure Python over numpy and onnx (Debian's python3-onnx 1.12 is enough). The module imports
nothing from anybit but its sibling ``_onnx_manifest.py`` (the manifest reading), so
``python3 python/anybit/onnx_export.py`` runs it without the C++ extension that
``python3 -m anybit.onnx_export`` (the package) loads.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

try:
    from ._onnx_manifest import (FORMAT_NAME, FORMAT_VERSION, OPSET, QONNX_DOMAIN, _FIELDS, _REQUANTIZING,
                                 OnnxExportError, _format, _Format, _Manifest)
except ImportError:  # run or loaded as a file, outside the package: the sibling by its path
    _here = os.path.dirname(os.path.abspath(__file__))
    if _here not in sys.path:
        sys.path.insert(0, _here)
    from _onnx_manifest import (FORMAT_NAME, FORMAT_VERSION, OPSET, QONNX_DOMAIN, _FIELDS, _REQUANTIZING,
                                OnnxExportError, _format, _Format, _Manifest)

__all__ = ["OnnxExportError", "export_onnx", "build_model", "main"]


# --- graph building --------------------------------------------------------------------


class _Builder:
    def __init__(self, manifest, u8_weights=False):
        self.m = manifest
        self.u8_weights = u8_weights  # signed 8-bit weights as uint8 + 128 (see export_onnx)
        self.nodes, self.inits = [], []
        self.used = set()  # ONNX value names (tensors and initializers)
        self.node_names = set()
        self.op_names = set()
        self.qdq_tensors = 0
        self.quant_tensors = 0
        # manifest tensor name -> (ONNX value name, shape without the batch, _Quant, _Format)
        self.tensors = {}

    # names ----------------------------------------------------------------------------

    def fresh(self, base):
        name, i = base, 2
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def node(self, op_type, inputs, outputs, name, domain=None, **attrs):
        unique, i = name, 2  # node names are a namespace of their own
        while unique in self.node_names:
            unique, i = f"{name}_{i}", i + 1
        self.node_names.add(unique)
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=unique, domain=domain, **attrs))

    def const(self, base, value):
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    # quantization ---------------------------------------------------------------------

    def _range_node(self, x, q, fmt, base):
        """Relu or Clip enforcing q's range where it is narrower than the format's."""
        lo_needed, hi_needed = q.qmin > fmt.lo, q.qmax < fmt.hi
        if not (lo_needed or hi_needed):
            return x
        y = self.fresh(base + "/range")
        if lo_needed and not hi_needed and q.qmin == q.zero_point:
            self.node("Relu", [x], [y], base + "/relu")
        else:
            lo = self.const(base + "/clip_min", np.float32((q.qmin - q.zero_point) * q.scale))
            hi = self.const(base + "/clip_max", np.float32((q.qmax - q.zero_point) * q.scale))
            self.node("Clip", [x, lo, hi], [y], base + "/clip")
        return y

    def quantize(self, x, q, out, fmt=None):
        """Fake-quantizes the float value `x` with q into the value `out` and returns the
        format used. `fmt` given: x already lies in q's range and is quantized in that
        format (the input's, for ops that keep their input's quantization)."""
        if fmt is None:
            fmt = _format(q.qmin, q.qmax, [q.zero_point], q.zero_point)
            x = self._range_node(x, q, fmt, out)
        scale = self.const(out + "/scale", np.float32(q.scale))
        if fmt.qdq:
            self.qdq_tensors += 1
            zp = self.const(out + "/zero_point", fmt.np_dtype(q.zero_point))
            qv = self.fresh(out + "/q")
            self.node("QuantizeLinear", [x, scale, zp], [qv], out + "/quantize")
            self.node("DequantizeLinear", [qv, scale, zp], [out], out + "/dequantize")
        else:
            self.quant_tensors += 1
            zp = self.const(out + "/zero_point", np.float32(q.zero_point))
            bw = self.const(out + "/bitwidth", np.float32(fmt.bits))
            self.node("Quant", [x, scale, zp, bw], [out], out + "/quant", domain=QONNX_DOMAIN,
                      signed=int(fmt.signed), narrow=int(fmt.narrow), rounding_mode="ROUND")
        return fmt

    def weight(self, path, base, w, scales, zero_points, wlo, whi):
        """The float weight value of a conv/linear op: DequantizeLinear of int8/uint8
        integers, or a Quant of the dequantized float weights for other widths. Returns
        the value name and the per-channel scales [O]."""
        o = w.shape[0]
        per_channel = len(scales) > 1 or len(zero_points) > 1
        bshape = (o,) + (1,) * (w.ndim - 1)
        s = np.broadcast_to(np.asarray(scales, np.float64), (o,))
        z = np.broadcast_to(np.asarray(zero_points, np.int64), (o,))
        fmt = _format(wlo, whi, z)
        out = self.fresh(base + "/float")
        if fmt.qdq and fmt.signed and self.u8_weights:  # the same values: (w + 128 - (z + 128)) * s
            fmt = _Format(True, False, 8)
            w, z = w.astype(np.int64) + 128, z + 128
        if fmt.qdq:
            self.qdq_tensors += 1
            wq = self.const(base + "/quantized", w.astype(fmt.np_dtype))
            if per_channel:
                sc = self.const(base + "/scale", s.astype(np.float32))
                zp = self.const(base + "/zero_point", z.astype(fmt.np_dtype))
                self.node("DequantizeLinear", [wq, sc, zp], [out], base + "/dequantize", axis=0)
            else:
                sc = self.const(base + "/scale", np.float32(s[0]))
                zp = self.const(base + "/zero_point", fmt.np_dtype(z[0]))
                self.node("DequantizeLinear", [wq, sc, zp], [out], base + "/dequantize")
        else:
            self.quant_tensors += 1
            if fmt.bits > 24:  # float32 holds integers exactly up to 2^24 only
                self.m.fail(f"{path}.weight", f"a {fmt.bits}-bit weight range [{wlo}, {whi}] has no exact float32 form")
            # QONNX keeps float weights: the dequantized integers, which the Quant
            # maps back onto themselves exactly.
            wf = ((w.astype(np.float64) - z.reshape(bshape)) * s.reshape(bshape)).astype(np.float32)
            wv = self.const(base + "/dequantized", wf)
            if per_channel:
                sc = self.const(base + "/scale", s.astype(np.float32).reshape(bshape))
                zp = self.const(base + "/zero_point", z.astype(np.float32).reshape(bshape))
            else:
                sc = self.const(base + "/scale", np.float32(s[0]))
                zp = self.const(base + "/zero_point", np.float32(z[0]))
            bw = self.const(base + "/bitwidth", np.float32(fmt.bits))
            self.node("Quant", [wv, sc, zp, bw], [out], base + "/quant", domain=QONNX_DOMAIN,
                      signed=int(fmt.signed), narrow=int(fmt.narrow), rounding_mode="ROUND")
        return out, s

    # ops ------------------------------------------------------------------------------

    def weighted(self, op, path, kind, x, in_shape, in_q):
        m = self.m
        conv = kind == "conv2d"
        o = m.integer(op, path, "out_channels" if conv else "out_features", lo=1)
        w, wfile = m.array(op, path, "weight")
        if conv:
            if len(in_shape) != 3:
                m.fail(f"{path}.inputs[0]", f"conv2d needs a [C,H,W] input, got shape {list(in_shape)}")
            if "kernel" not in op:
                m.fail(f"{path}.kernel", "missing")
            kernel = m.pair(op, path, "kernel", None, 1)
            stride = m.pair(op, path, "stride", 1, 1)
            pad = m.pair(op, path, "padding", 0, 0)
            dil = m.pair(op, path, "dilation", 1, 1)
            groups = m.integer(op, path, "groups", 1, lo=1)
            c = in_shape[0]
            if c % groups or o % groups:
                m.fail(f"{path}.groups", f"{groups} must divide the {c} input channels and the {o} output channels")
            wshape = (o, c // groups, kernel[0], kernel[1])
        else:
            if len(in_shape) != 1:
                m.fail(f"{path}.inputs[0]", f"linear needs a [features] input, got shape {list(in_shape)}")
            wshape = (o, in_shape[0])
        if w.dtype not in (np.int8, np.int16, np.int32) or w.shape != wshape:
            m.fail(f"{path}.weight", f"expected an int8, int16 or int32 array of shape {list(wshape)}, "
                                     f"got {w.dtype} {list(w.shape)} ({wfile})")
        info = np.iinfo(w.dtype)
        wlo = m.integer(op, path, "weight_qmin", int(info.min))
        whi = m.integer(op, path, "weight_qmax", int(info.max))
        if w.size and (w.min() < wlo or w.max() > whi):
            m.fail(f"{path}.weight", f"values outside weight_qmin..weight_qmax [{wlo}, {whi}] ({wfile})")
        scales = m.number_list(op, path, "weight_scale", o, positive=True)
        zps = m.number_list(op, path, "weight_zero_point", o, positive=False)
        wv, s_w = self.weight(path, op["name"] + ".weight", w, scales, zps, wlo, whi)
        inputs = [x, wv]
        if "bias" in op:
            b, bfile = m.array(op, path, "bias")
            if b.dtype != np.int32 or b.shape != (o,):
                m.fail(f"{path}.bias",
                       f"expected an int32 array of shape [{o}], got {b.dtype} {list(b.shape)} ({bfile})")
            base = op["name"] + ".bias"
            bq = self.const(base + "/quantized", b)
            bv = self.fresh(base + "/float")
            if len(scales) > 1:  # per-channel bias scale s_in * s_w[o]
                sc = self.const(base + "/scale", (in_q.scale * s_w).astype(np.float32))
                zp = self.const(base + "/zero_point", np.zeros(o, np.int32))
                self.node("DequantizeLinear", [bq, sc, zp], [bv], base + "/dequantize", axis=0)
            else:
                sc = self.const(base + "/scale", np.float32(in_q.scale * s_w[0]))
                zp = self.const(base + "/zero_point", np.int32(0))
                self.node("DequantizeLinear", [bq, sc, zp], [bv], base + "/dequantize")
            inputs.append(bv)
        y = self.fresh(op["output"] + "/float")
        if conv:
            oh = _window_out(in_shape[1], kernel[0], stride[0], pad[0], dil[0], False)
            ow = _window_out(in_shape[2], kernel[1], stride[1], pad[1], dil[1], False)
            if oh < 1 or ow < 1:
                m.fail(f"{path}.kernel", f"the dilated kernel is larger than the padded input {list(in_shape)}")
            self.node("Conv", inputs, [y], op["name"], kernel_shape=kernel, strides=stride,
                      pads=[pad[0], pad[1], pad[0], pad[1]], dilations=dil, group=groups)
            return y, (o, oh, ow)
        self.node("Gemm", inputs, [y], op["name"], transB=1)
        return y, (o,)

    def pool(self, op, path, kind, x, shape):
        m = self.m
        if len(shape) != 3:
            m.fail(f"{path}.inputs[0]", f"{kind} needs a [C,H,W] input, got shape {list(shape)}")
        if "kernel" not in op:
            m.fail(f"{path}.kernel", "missing")
        kernel = m.pair(op, path, "kernel", None, 1)
        stride = m.pair(op, path, "stride", kernel, 1)  # PyTorch: stride defaults to the kernel
        pad = m.pair(op, path, "padding", 0, 0)
        dil = m.pair(op, path, "dilation", 1, 1)
        ceil = op.get("ceil_mode", False)
        if not isinstance(ceil, bool):
            m.fail(f"{path}.ceil_mode", f"expected true or false, got {json.dumps(ceil)}")
        if kind == "avgpool2d" and ceil:
            m.fail(f"{path}.ceil_mode", "avgpool2d does not support ceil_mode")
        out_hw, pads_end = [], []
        for i in range(2):
            eff = dil[i] * (kernel[i] - 1) + 1
            if pad[i] > eff // 2:
                m.fail(f"{path}.padding", f"{pad[i]} is more than half the kernel {eff}")
            n = _window_out(shape[1 + i], kernel[i], stride[i], pad[i], dil[i], ceil)
            if n < 1:
                m.fail(f"{path}.kernel", f"window larger than the padded input {list(shape)}")
            out_hw.append(n)
            # PyTorch's ceil_mode as explicit end padding (MaxPool pads never win), so the
            # output size does not depend on how a runtime rounds ceil_mode.
            pads_end.append(max(pad[i], (n - 1) * stride[i] + eff - shape[1 + i] - pad[i]))
        y = self.fresh(op["output"] + "/float")
        pads = [pad[0], pad[1], pads_end[0], pads_end[1]]
        if kind == "maxpool2d":
            self.node("MaxPool", [x], [y], op["name"], kernel_shape=kernel, strides=stride, pads=pads, dilations=dil)
        else:
            self.node("AveragePool", [x], [y], op["name"], kernel_shape=kernel, strides=stride, pads=pads,
                      count_include_pad=1)
        return y, (shape[0], out_hw[0], out_hw[1])

    def op(self, k, op):
        m = self.m
        path = f"ops[{k}]"
        if not isinstance(op, dict):
            m.fail(path, "expected an object")
        kind = m.string(op, path, "op")
        if kind not in _FIELDS:
            m.fail(f"{path}.op", f"unknown op '{kind}' (expected one of: {', '.join(_FIELDS)})")
        for key in op:
            if key not in _FIELDS[kind]:
                m.fail(f"{path}.{key}", f"unknown field (expected one of: {', '.join(_FIELDS[kind])})")
        name = m.string(op, path, "name")
        if name in self.op_names:
            m.fail(f"{path}.name", f"duplicate op name '{name}'")
        self.op_names.add(name)
        inputs = self.get_inputs(op, path, kind)
        out = m.string(op, path, "output")
        if out in self.tensors:
            m.fail(f"{path}.output", f"tensor '{out}' is already defined")
        self.used.add(out)
        x, shape, q, in_fmt = inputs[0]
        if kind in _REQUANTIZING:
            declared, keep = m.quant(op, path), None
        else:
            # relu, clamp, maxpool2d and flatten keep their input's scale, zero point and
            # ONNX format (a ReLU6 of an int8 tensor is still int8): only the range moves.
            declared, keep = q, in_fmt
        if kind in ("conv2d", "linear"):
            y, shape = self.weighted(op, path, kind, x, shape, q)
        elif kind == "add":
            if shape != inputs[1][1]:
                m.fail(f"{path}.inputs", f"add needs equal shapes, got {list(shape)} and {list(inputs[1][1])}")
            y = self.fresh(out + "/float")
            self.node("Add", [x, inputs[1][0]], [y], name)
        elif kind == "relu":
            y = self.fresh(out + "/float")
            self.node("Relu", [x], [y], name)
            declared = q.replace(qmin=min(max(q.zero_point, q.qmin), q.qmax))
        elif kind == "clamp":
            lo, hi = m.integer(op, path, "qmin"), m.integer(op, path, "qmax")
            if lo > hi:
                m.fail(f"{path}.qmin", f"{lo} exceeds qmax {hi}")
            declared = q.replace(qmin=lo, qmax=hi)
            y = self.fresh(out + "/float")
            lo_v = self.const(name + "/clip_min", np.float32((lo - q.zero_point) * q.scale))
            hi_v = self.const(name + "/clip_max", np.float32((hi - q.zero_point) * q.scale))
            self.node("Clip", [x, lo_v, hi_v], [y], name)
        elif kind in ("maxpool2d", "avgpool2d"):
            y, shape = self.pool(op, path, kind, x, shape)
        elif kind == "global_avgpool":
            if len(shape) != 3:
                m.fail(f"{path}.inputs[0]", f"global_avgpool needs a [C,H,W] input, got shape {list(shape)}")
            y, shape = self.fresh(out + "/float"), (shape[0], 1, 1)
            self.node("GlobalAveragePool", [x], [y], name)
        elif kind == "flatten":
            y, shape = self.fresh(out + "/float"), (int(np.prod(shape)),)
            self.node("Flatten", [x], [y], name, axis=1)
        else:  # concat
            axis = m.integer(op, path, "axis", 1, lo=1, hi=len(shape))
            total = 0
            for j, (_, s, _, _) in enumerate(inputs):
                a, b = list(s), list(shape)
                if len(a) == len(b):
                    a[axis - 1] = b[axis - 1] = 0
                if a != b:
                    m.fail(f"{path}.inputs[{j}]", f"shape {list(s)} does not match {list(shape)} outside axis {axis}")
                total += s[axis - 1]
            shape = tuple(total if i == axis - 1 else d for i, d in enumerate(shape))
            y = self.fresh(out + "/float")
            self.node("Concat", [v for v, _, _, _ in inputs], [y], name, axis=axis)
        if keep is not None:
            self.check_derived(op, path, declared, out, clamp=kind == "clamp")
        fmt = self.quantize(y, declared, out, keep)
        self.tensors[out] = (out, tuple(shape), declared, fmt)

    def check_derived(self, op, path, q, tensor, clamp):
        """Derived quantization written in the manifest must match (as the C++ loader checks)."""
        keys = ("scale", "zero_point") if clamp else ("scale", "zero_point", "qmin", "qmax")
        for key in keys:
            if key not in op:
                continue
            want = getattr(q, key)
            got = op[key]
            same = (isinstance(got, (int, float)) and not isinstance(got, bool)
                    and (abs(got - want) <= 1e-6 * max(abs(got), want) if key == "scale" else got == want))
            if not same:
                self.m.fail(f"{path}.{key}", f"{json.dumps(got)} does not match the {key} {want} of tensor '{tensor}'")

    def get_inputs(self, op, path, kind):
        names = self.m.get(op, path, "inputs")
        n_ok = {"add": lambda n: n == 2, "concat": lambda n: n >= 1}.get(kind, lambda n: n == 1)
        if not isinstance(names, list) or not n_ok(len(names)):
            self.m.fail(f"{path}.inputs", f"wrong number of inputs for {kind}: {json.dumps(names)[:60]}")
        out = []
        for j, t in enumerate(names):
            if t not in self.tensors:
                self.m.fail(f"{path}.inputs[{j}]",
                            f"unknown tensor '{t}' (not a model input or an earlier op's output)")
            out.append(self.tensors[t])
        return out

    # whole model ----------------------------------------------------------------------

    def build(self):
        m, root = self.m, self.m.root
        for key in root:
            if key not in ("format", "version", "metadata", "inputs", "ops", "outputs"):
                m.fail(key, "unknown field (expected one of: format, version, metadata, inputs, ops, outputs)")
        if root.get("format") != FORMAT_NAME:
            m.fail("format", f"expected \"{FORMAT_NAME}\", got {json.dumps(root.get('format'))}")
        if not isinstance(root.get("version"), int) or isinstance(root["version"], bool) or root["version"] < 1:
            m.fail("version", f"expected an integer >= 1, got {json.dumps(root.get('version'))}")
        version = root["version"]
        if version > FORMAT_VERSION:
            m.fail("version", f"version {version} is newer than this exporter reads ({FORMAT_VERSION})")
        for key in ("inputs", "ops", "outputs"):
            if not isinstance(root.get(key), list) or (key != "ops" and not root[key]):
                m.fail(key, "expected a non-empty list" if key != "ops" else "expected a list")
        # Manifest tensor names are ONNX value names: reserve them before deriving others.
        self.used.update(t.get("name", "") for t in root["inputs"] if isinstance(t, dict))
        self.used.update(op.get("output", "") for op in root["ops"] if isinstance(op, dict))

        graph_inputs = []
        for i, t in enumerate(root["inputs"]):
            path = f"inputs[{i}]"
            if not isinstance(t, dict):
                m.fail(path, "expected an object")
            name = m.string(t, path, "name")
            if name in self.tensors:
                m.fail(f"{path}.name", f"duplicate tensor name '{name}'")
            shape = m.get(t, path, "shape")
            if not isinstance(shape, list) or not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                                                               for d in shape):
                m.fail(f"{path}.shape",
                       f"expected a list of dimensions >= 1 (without the batch), got {json.dumps(shape)}")
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N"] + shape))
            q = m.quant(t, path)
            value = self.fresh(name + "/dq")
            self.tensors[name] = (value, tuple(shape), q, self.quantize(name, q, value))

        for k, op in enumerate(root["ops"]):
            self.op(k, op)

        graph_outputs = []
        for i, t in enumerate(root["outputs"]):
            path = f"outputs[{i}]"
            if not isinstance(t, dict):
                m.fail(path, "expected an object")
            name = m.string(t, path, "name")
            if name not in self.tensors:
                m.fail(f"{path}.name", f"unknown tensor '{name}'")
            value, shape, _, _ = self.tensors[name]
            if "shape" in t and list(t["shape"]) != list(shape):
                m.fail(f"{path}.shape",
                       f"{json.dumps(t['shape'])} does not match the shape {list(shape)} of tensor '{name}'")
            graph_outputs.append(helper.make_tensor_value_info(value, TensorProto.FLOAT, ["N"] + list(shape)))

        graph = helper.make_graph(self.nodes, "anybit_int", graph_inputs, graph_outputs, self.inits)
        opsets = [helper.make_opsetid("", OPSET)]
        if self.quant_tensors:
            opsets.append(helper.make_opsetid(QONNX_DOMAIN, 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="anybit.onnx_export",
                                  doc_string=f"fake-quantized twin of the anybit integer model {m.dir}")
        model.ir_version = 7  # the IR version of opset 13: readable by older runtimes too
        metadata = root.get("metadata", {})
        if not isinstance(metadata, dict):
            m.fail("metadata", "expected an object")
        helper.set_model_props(model, {f"anybit.{k}": v if isinstance(v, str) else json.dumps(v)
                                       for k, v in metadata.items()})
        return model


def _window_out(n, k, s, p, d, ceil_mode):
    """Output size of a sliding window, PyTorch's formula (intsim's window_out_size)."""
    span = n + 2 * p - d * (k - 1) - 1
    if span < 0:
        return 0
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:  # the last window must start inside the input
        out -= 1
    return out


# --- public API ------------------------------------------------------------------------


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def build_model(model_dir, u8_weights=False):
    """The ONNX ModelProto and summary for an integer model directory (nothing written)."""
    b = _Builder(_Manifest(model_dir), u8_weights)
    model = b.build()
    summary = {"qdq_tensors": b.qdq_tensors, "quant_tensors": b.quant_tensors, "pure_qdq": b.quant_tensors == 0,
               "nodes": len(model.graph.node), "opset": OPSET}
    return model, summary


def export_onnx(model_dir, out_path, u8_weights=False):
    """Exports the integer model in `model_dir` to the ONNX file `out_path`.

    Returns a summary dict: ``qdq_tensors`` and ``quant_tensors`` (manifest tensors and
    conv/linear weights quantized with QuantizeLinear/DequantizeLinear resp. QONNX Quant;
    biases are not counted), ``pure_qdq`` (no Quant node: any ONNX runtime runs it),
    ``nodes``, ``opset`` and ``path``. Raises OnnxExportError naming the file and field
    for a model it cannot export; the output is written atomically (temporary file, then
    rename), so a failed export leaves no partial file behind.

    ``u8_weights``: signed 8-bit weights are written as uint8 ``w + 128`` with zero point
    ``z + 128``, which dequantize to the same values; ONNX Runtime then runs its u8 x u8
    kernels, exact on every CPU, where its u8 x s8 kernels saturate on x86-64 without VNNI.
    TensorRT wants int8 weights with zero point 0: leave it off for TensorRT.
    """
    model, summary = build_model(model_dir, u8_weights)
    try:
        # full_check also runs strict shape inference; nodes of the QONNX domain have no
        # registered schema and are skipped by both the checker and the inference.
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise OnnxExportError(f"{model_dir}: the exported ONNX model does not check: {e}") from None
    out_path = os.fspath(out_path)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out_path) + ".", suffix=".tmp", dir=out_dir)
    except OSError as e:
        raise OnnxExportError(f"{out_path}: cannot write in {out_dir}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, out_path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OnnxExportError(f"{out_path}: cannot write: {e.strerror}") from None
        raise
    summary["path"] = out_path
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m anybit.onnx_export",
        description="Export an anybit integer model directory (manifest.json + .npy) to ONNX: "
                    "QDQ for 8-bit tensors, QONNX Quant for other widths.")
    parser.add_argument("model_dir", help="integer model directory (from `anybit export`)")
    parser.add_argument("-o", "--output", required=True, help="ONNX file to write")
    parser.add_argument("--u8-weights", action="store_true",
                        help="8-bit signed weights as uint8 with zero point z + 128 (the same values), for ONNX "
                             "Runtime on x86-64 CPUs without VNNI, whose int8-weight kernels saturate")
    args = parser.parse_args(argv)
    try:
        s = export_onnx(args.model_dir, args.output, u8_weights=args.u8_weights)
    except OnnxExportError as e:
        print("anybit.onnx_export: error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        return 1
    kind = "pure QDQ (any ONNX runtime)" if s["pure_qdq"] else "QONNX (needs a QONNX-aware tool)"
    print(f"{s['path']}: {s['nodes']} nodes, {s['qdq_tensors']} QDQ tensors, "
          f"{s['quant_tensors']} Quant tensors; {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
