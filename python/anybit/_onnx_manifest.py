"""The integer model directory as the ONNX exporter reads it (part of anybit.onnx_export).

The manifest's fields per op (the C++ loader's lists: unknown fields are errors), typed
access to manifest.json and its .npy arrays with the field path in every error, and the
choice of ONNX format for each integer range: QDQ with an 8-bit type where the range fits
one, a QONNX Quant of the range's own width otherwise. Pure Python over numpy.
"""
import json
import math
import os

import numpy as np

OPSET = 13
QONNX_DOMAIN = "qonnx.custom_op.general"
FORMAT_NAME = "anybit-int"
FORMAT_VERSION = 1

# Fields each op may carry (the C++ loader's lists: unknown fields are errors).
_COMMON = ("op", "name", "inputs", "output", "scale", "zero_point", "qmin", "qmax")
_WEIGHTED = ("weight", "weight_scale", "weight_zero_point", "weight_qmin", "weight_qmax", "bias", "m0", "shift")
_FIELDS = {
    "conv2d": _COMMON + _WEIGHTED + ("out_channels", "kernel", "stride", "padding", "dilation", "groups"),
    "linear": _COMMON + _WEIGHTED + ("out_features",),
    "add": _COMMON + ("input_m0", "input_shift", "left_shift", "m0", "shift"),
    "relu": _COMMON,
    "clamp": _COMMON,
    "maxpool2d": _COMMON + ("kernel", "stride", "padding", "dilation", "ceil_mode"),
    "avgpool2d": _COMMON + ("kernel", "stride", "padding", "m0", "shift"),
    "global_avgpool": _COMMON + ("m0", "shift"),
    "flatten": _COMMON,
    "concat": _COMMON + ("axis", "input_m0", "input_shift"),
}
# Ops whose output quantization is written in the manifest (the others derive it).
_REQUANTIZING = ("conv2d", "linear", "add", "avgpool2d", "global_avgpool", "concat")


class OnnxExportError(ValueError):
    """A model directory that cannot be exported; the message names the file and field."""


# --- quantization parameters -----------------------------------------------------------


class _Quant:
    """Uniform per-tensor quantization of one manifest tensor."""

    __slots__ = ("scale", "zero_point", "qmin", "qmax")

    def __init__(self, scale, zero_point, qmin, qmax):
        self.scale, self.zero_point, self.qmin, self.qmax = float(scale), int(zero_point), int(qmin), int(qmax)

    def replace(self, **kw):
        q = _Quant(self.scale, self.zero_point, self.qmin, self.qmax)
        for k, v in kw.items():
            setattr(q, k, v)
        return q


def _is_pow2(n):
    return n > 0 and n & (n - 1) == 0


class _Format:
    """How a tensor is quantized in ONNX: QDQ with an 8-bit dtype, or a QONNX Quant of
    `bits` bits. [lo, hi] is the integer range the format itself expresses."""

    __slots__ = ("qdq", "signed", "narrow", "bits", "lo", "hi")

    def __init__(self, qdq, signed, bits, narrow=False):
        self.qdq, self.signed, self.bits, self.narrow = qdq, signed, bits, narrow
        self.lo = -(1 << (bits - 1)) + int(narrow) if signed else 0
        self.hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1

    @property
    def np_dtype(self):
        return np.int8 if self.signed else np.uint8


def _width(qmin, qmax, zero_point=None):
    """(signed, bits) of the integer range [qmin, qmax]: the smallest signed (qmin < 0) or
    unsigned range holding it. Signed ranges get at least 2 bits (QONNX reads a signed
    1-bit Quant as bipolar {-1, +1}).

    The manifest records ranges, not widths, and a fused ReLU raises qmin to the zero
    point: [0, 127] is the ReLU of an int8 tensor as much as a uint7 one. For such a range
    (qmin == zero_point, qmax = 2^k - 1) the power-of-two reading wins: [z, 127] is int8,
    [z, 7] int4, but [0, 255] stays uint8 and [0, 15] uint4."""
    if qmin < 0:
        b = 2
        while qmin < -(1 << (b - 1)) or qmax > (1 << (b - 1)) - 1:
            b += 1
        return True, b
    k = max(1, int(qmax).bit_length())
    if qmin == zero_point and qmax == (1 << k) - 1 and _is_pow2(k + 1) and not _is_pow2(k):
        return True, k + 1
    return False, k


def _format(qmin, qmax, zero_points, zero_point_for_relu=None):
    """QDQ when the range is 8 bits wide and the dtype (int8 when signed, else uint8) holds
    the zero points; a QONNX Quant otherwise."""
    signed, bits = _width(qmin, qmax, zero_point_for_relu)
    if bits == 8:
        f = _Format(True, signed, 8)
        if all(f.lo <= z <= f.hi for z in zero_points):
            return f
    return _Format(False, signed, bits, narrow=signed and qmin == -(1 << (bits - 1)) + 1)


# --- manifest reading ------------------------------------------------------------------


class _Manifest:
    """Typed access to manifest.json with the field path in every error."""

    def __init__(self, model_dir):
        self.dir = os.fspath(model_dir)
        self.path = os.path.join(self.dir, "manifest.json")
        if not os.path.isdir(self.dir):
            raise OnnxExportError(f"{self.dir}: not a directory (expected an integer model directory)")
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise OnnxExportError(f"{self.path}: missing (not an anybit integer model directory?)") from None
        except OSError as e:
            raise OnnxExportError(f"{self.path}: cannot read: {e.strerror}") from None
        try:
            self.root = json.loads(text)
        except json.JSONDecodeError as e:
            raise OnnxExportError(f"{self.path}: not valid JSON: {e}") from None
        if not isinstance(self.root, dict):
            raise OnnxExportError(f"{self.path}: expected a JSON object at the top level")

    def fail(self, field, what):
        raise OnnxExportError(f"{self.path}: {field}: {what}")

    def get(self, obj, path, key, default=None, required=True):
        if key in obj:
            return obj[key]
        if required:
            self.fail(f"{path}.{key}" if path else key, "missing")
        return default

    def integer(self, obj, path, key, default=None, lo=-(2**31), hi=2**31 - 1):
        v = self.get(obj, path, key, default, required=default is None)
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(f"{path}.{key}", f"expected an integer, got {json.dumps(v)}")
        if not lo <= v <= hi:
            self.fail(f"{path}.{key}", f"{v} is outside the allowed range [{lo}, {hi}]")
        return v

    def positive(self, obj, path, key):
        v = self.get(obj, path, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            self.fail(f"{path}.{key}", f"expected a finite number > 0, got {json.dumps(v)}")
        return float(v)

    def string(self, obj, path, key):
        v = self.get(obj, path, key)
        if not isinstance(v, str) or not v:
            self.fail(f"{path}.{key}" if path else key, f"expected a non-empty string, got {json.dumps(v)}")
        return v

    def number_list(self, obj, path, key, n, positive):
        """A number or a list of n numbers (per tensor or per output channel): a list."""
        v = self.get(obj, path, key)
        values = v if isinstance(v, list) else [v]
        if len(values) not in (1, n):
            self.fail(f"{path}.{key}", f"expected 1 or {n} values, got {len(values)}")
        for x in values:
            ok = not isinstance(x, bool) and isinstance(x, (int, float))
            ok = ok and (math.isfinite(x) and x > 0 if positive else isinstance(x, int))
            if not ok:
                what = "finite numbers > 0" if positive else "integers"
                self.fail(f"{path}.{key}", f"expected {what}, got {json.dumps(v)[:60]}")
        return values

    def pair(self, obj, path, key, default, lo):
        v = obj.get(key, default)
        values = v if isinstance(v, list) else [v, v]
        if len(values) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x < lo for x in values):
            self.fail(f"{path}.{key}", f"expected an integer >= {lo} or a list of 2, got {json.dumps(v)}")
        return [int(x) for x in values]

    def quant(self, obj, path):
        q = _Quant(self.positive(obj, path, "scale"), self.integer(obj, path, "zero_point"),
                   self.integer(obj, path, "qmin"), self.integer(obj, path, "qmax"))
        if q.qmin > q.qmax:
            self.fail(f"{path}.qmin", f"qmin {q.qmin} exceeds qmax {q.qmax}")
        return q

    def array(self, obj, path, key):
        name = self.string(obj, path, key)
        if os.path.isabs(name) or "\\" in name or ".." in name.split("/"):
            self.fail(f"{path}.{key}", f"'{name}' must be a relative path inside the model directory")
        file = os.path.join(self.dir, name)
        try:
            a = np.load(file, allow_pickle=False)
        except FileNotFoundError:
            self.fail(f"{path}.{key}", f"{file}: missing")
        except (OSError, ValueError) as e:
            self.fail(f"{path}.{key}", f"{file}: not a valid .npy file ({e})")
        return a, name
