// Validating the exported integer model (docs/integer-format.md), and the op kinds' names.
// Reading the manifest is model_read.cc, saving model_write.cc.
//
// Validation is the engine's first line of defence: once validate_model accepts a model,
// every shape, index and integer range the kernels rely on has been checked, so the
// kernels themselves carry no checks.
#include "anybit/intsim/model.h"

#include <cmath>
#include <set>

#include "anybit/intsim/model_internal.h"

namespace anybit {
namespace intsim {

using namespace detail;  // NOLINT: the model files' shared helpers

namespace detail {

std::string array_file_name_problem(const std::string& file) {
  if (file.empty()) return "empty file name";
  if (file[0] == '/' || file.find('\\') != std::string::npos)
    return "'" + file + "' must be a relative path inside the model directory";
  size_t start = 0;
  while (start <= file.size()) {
    const size_t end = std::min(file.find('/', start), file.size());
    if (end - start == 2 && file.compare(start, 2, "..") == 0)
      return "'" + file + "' must not leave the model directory";
    start = end + 1;
  }
  return "";
}

}  // namespace detail

namespace {

// --- validation helpers ------------------------------------------------------------------

bool is_weight_dtype(DType d) {
  return d == DType::kInt8 || d == DType::kInt16 || d == DType::kInt32;
}

void check_quant(const QuantParams& q, const std::string& origin, const std::string& path) {
  if (!std::isfinite(q.scale) || q.scale <= 0)
    fail(origin, path + ".scale", "expected a finite number > 0, got " + std::to_string(q.scale));
  if (q.qmin > q.qmax)
    fail(origin, path + ".qmin",
         "qmin " + std::to_string(q.qmin) + " exceeds qmax " + std::to_string(q.qmax));
  // The engine holds q - z in int32 (the operands of a MAC): both ends must fit.
  if (int64_t{q.qmax} - q.zero_point > kInt32Max || int64_t{q.zero_point} - q.qmin > kInt32Max)
    fail(origin, path + ".zero_point",
         std::to_string(q.zero_point) + " is too far from the range " + range_str(q.qmin, q.qmax) +
             ": q - zero_point must fit in int32");
}

void check_shape(const std::vector<int64_t>& shape, const std::string& origin,
                 const std::string& path) {
  if (shape.empty()) fail(origin, path, "expected at least one dimension (without the batch)");
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 1 || d > kMaxDim) fail(origin, path, "dimension " + std::to_string(d) + " in " + ints_str(shape) + " is not in [1, 2^31)");
    if (n > kMaxElements / d) fail(origin, path, "shape " + ints_str(shape) + " has more than 2^31 elements");
    n *= d;
  }
}

void check_int_array(const IntArray& a, const std::vector<int64_t>& expected_shape,
                     bool weight_dtypes, const std::string& origin, const std::string& path) {
  const bool dtype_ok = weight_dtypes ? is_weight_dtype(a.dtype) : a.dtype == DType::kInt32;
  const char* want = weight_dtypes ? "an int8, int16 or int32" : "an int32";
  if (!dtype_ok || a.shape != expected_shape)
    fail(origin, path, std::string("expected ") + want + " array of shape " +
                           ints_str(expected_shape) + ", got " + dtype_name(a.dtype) + " " +
                           ints_str(a.shape) + (a.file.empty() ? "" : " (" + a.file + ")"));
  const int64_t n = shape_numel(expected_shape, origin + ": " + path);
  if (static_cast<int64_t>(a.data.size()) != n)
    fail(origin, path, "holds " + std::to_string(a.data.size()) + " values, shape " +
                           ints_str(a.shape) + " needs " + std::to_string(n));
}

void check_multipliers(const std::vector<DyadicMultiplier>& m, size_t allowed_a, size_t allowed_b,
                       const std::string& origin, const std::string& path) {
  if (m.size() != allowed_a && m.size() != allowed_b)
    fail(origin, path + ".m0",
         "expected " + std::to_string(allowed_a) +
             (allowed_b != allowed_a ? " or " + std::to_string(allowed_b) : std::string()) +
             " multipliers, got " + std::to_string(m.size()));
  for (size_t i = 0; i < m.size(); ++i) {
    if (m[i].m0 < 0)
      fail(origin, path + ".m0[" + std::to_string(i) + "]",
           std::to_string(m[i].m0) + " is negative (m0 must be in [0, 2^31))");
    if (m[i].shift < -31 || m[i].shift > 31)
      fail(origin, path + ".shift[" + std::to_string(i) + "]",
           std::to_string(m[i].shift) + " is outside [-31, 31]");
  }
}

// Output size of a sliding window (PyTorch's pooling_output_shape / conv formula).
int64_t window_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1;
  if (span < 0) return 0;
  int64_t out = (span + (ceil_mode ? s - 1 : 0)) / s + 1;
  // With ceil_mode the last window must start inside the input or its left padding.
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

void check_window(const Op& op, bool use_dilation, const std::string& origin,
                  const std::string& path) {
  for (int i = 0; i < 2; ++i) {
    if (op.kernel[i] < 1 || op.kernel[i] > kMaxDim) fail(origin, path + ".kernel", "must be >= 1");
    if (op.stride[i] < 1 || op.stride[i] > kMaxDim) fail(origin, path + ".stride", "must be >= 1");
    if (op.padding[i] < 0 || op.padding[i] > kMaxDim) fail(origin, path + ".padding", "must be >= 0");
    if (op.dilation[i] < 1 || op.dilation[i] > kMaxDim) fail(origin, path + ".dilation", "must be >= 1");
    if (!use_dilation && op.dilation[i] != 1)
      fail(origin, path + ".dilation", std::string(op_kind_name(op.kind)) + " has no dilation");
  }
}

std::vector<int64_t> pool_out_shape(const Op& op, const std::vector<int64_t>& in,
                                    const std::string& origin, const std::string& path) {
  for (int i = 0; i < 2; ++i) {
    // PyTorch: "pad should be at most half of effective kernel size", so that every
    // window holds at least one real element.
    const int64_t eff = op.dilation[i] * (op.kernel[i] - 1) + 1;
    if (op.padding[i] > eff / 2)
      fail(origin, path + ".padding", std::to_string(op.padding[i]) +
                                          " is more than half the kernel " + std::to_string(eff));
  }
  const int64_t oh = window_out_size(in[1], op.kernel[0], op.stride[0], op.padding[0], op.dilation[0], op.ceil_mode);
  const int64_t ow = window_out_size(in[2], op.kernel[1], op.stride[1], op.padding[1], op.dilation[1], op.ceil_mode);
  if (oh < 1 || ow < 1)
    fail(origin, path + ".kernel", "window larger than the padded input " + ints_str(in));
  return {in[0], oh, ow};
}

}  // namespace

const char* op_kind_name(OpKind kind) {
  switch (kind) {
    case OpKind::kConv2d: return "conv2d";
    case OpKind::kLinear: return "linear";
    case OpKind::kAdd: return "add";
    case OpKind::kRelu: return "relu";
    case OpKind::kClamp: return "clamp";
    case OpKind::kMaxPool2d: return "maxpool2d";
    case OpKind::kAvgPool2d: return "avgpool2d";
    case OpKind::kGlobalAvgPool: return "global_avgpool";
    case OpKind::kAdaptiveAvgPool2d: return "adaptive_avgpool2d";
    case OpKind::kFlatten: return "flatten";
    case OpKind::kConcat: return "concat";
  }
  return "?";
}

OpKind parse_op_kind(const std::string& name) {
  static const OpKind kAll[] = {OpKind::kConv2d,    OpKind::kLinear,         OpKind::kAdd,
                                OpKind::kRelu,      OpKind::kClamp,          OpKind::kMaxPool2d,
                                OpKind::kAvgPool2d, OpKind::kGlobalAvgPool,  OpKind::kAdaptiveAvgPool2d,
                                OpKind::kFlatten,   OpKind::kConcat};
  std::string list;
  for (OpKind k : kAll) {
    if (name == op_kind_name(k)) return k;
    list += (list.empty() ? "" : ", ") + std::string(op_kind_name(k));
  }
  throw Error("unknown op '" + name + "' (expected one of: " + list + ")");
}

int64_t shape_numel(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && n > kMaxElements / d))
      throw Error(what + ": shape " + ints_str(shape) + " is invalid or has more than 2^31 elements");
    n *= d;
  }
  return n;
}

std::map<std::string, TensorInfo> validate_model(Model& m, const std::string& origin) {
  std::map<std::string, TensorInfo> tensors;
  if (m.inputs.empty()) fail(origin, "inputs", "the model has no inputs");
  for (size_t i = 0; i < m.inputs.size(); ++i) {
    const std::string path = "inputs[" + std::to_string(i) + "]";
    const TensorSpec& in = m.inputs[i];
    if (in.name.empty()) fail(origin, path + ".name", "empty tensor name");
    if (tensors.count(in.name)) fail(origin, path + ".name", "duplicate tensor name '" + in.name + "'");
    check_shape(in.shape, origin, path + ".shape");
    check_quant(in.q, origin, path);
    tensors[in.name] = {in.shape, in.q, -1};
  }

  std::set<std::string> op_names;
  for (size_t k = 0; k < m.ops.size(); ++k) {
    Op& op = m.ops[k];
    const std::string path = "ops[" + std::to_string(k) + "]";
    const char* kind = op_kind_name(op.kind);
    if (op.name.empty()) fail(origin, path + ".name", "empty op name");
    if (!op_names.insert(op.name).second)
      fail(origin, path + ".name", "duplicate op name '" + op.name + "'");

    // Inputs: known tensors, defined earlier (the op list is in topological order).
    size_t min_inputs = 1, max_inputs = 1;
    if (op.kind == OpKind::kAdd) min_inputs = max_inputs = 2;
    if (op.kind == OpKind::kConcat) max_inputs = std::numeric_limits<size_t>::max();
    if (op.inputs.size() < min_inputs || op.inputs.size() > max_inputs)
      fail(origin, path + ".inputs",
           std::string(kind) + " takes " +
               (op.kind == OpKind::kConcat ? std::string("at least 1 input")
                                           : std::to_string(min_inputs) +
                                                 (min_inputs == 1 ? " input" : " inputs")) +
               ", got " + std::to_string(op.inputs.size()));
    std::vector<const TensorInfo*> in;
    for (size_t j = 0; j < op.inputs.size(); ++j) {
      auto it = tensors.find(op.inputs[j]);
      if (it == tensors.end())
        fail(origin, path + ".inputs[" + std::to_string(j) + "]",
             "unknown tensor '" + op.inputs[j] + "' (not a model input or an earlier op's output)");
      in.push_back(&it->second);
    }
    if (op.output.empty()) fail(origin, path + ".output", "empty tensor name");
    if (tensors.count(op.output))
      fail(origin, path + ".output", "tensor '" + op.output + "' is already defined");

    auto need_rank = [&](size_t j, size_t rank, const char* layout) {
      if (in[j]->shape.size() != rank)
        fail(origin, path + ".inputs[" + std::to_string(j) + "]",
             std::string(kind) + " needs a " + layout + " input, '" + op.inputs[j] +
                 "' has shape " + ints_str(in[j]->shape));
    };

    TensorInfo out;
    out.producer = static_cast<int>(k);
    switch (op.kind) {
      case OpKind::kConv2d:
      case OpKind::kLinear: {
        const bool conv = op.kind == OpKind::kConv2d;
        const int64_t O = op.out_channels;
        const char* o_field = conv ? ".out_channels" : ".out_features";
        if (O < 1 || O > kMaxDim) fail(origin, path + o_field, "must be >= 1");
        std::vector<int64_t> wshape;
        if (conv) {
          need_rank(0, 3, "[C,H,W]");
          check_window(op, true, origin, path);
          const int64_t C = in[0]->shape[0];
          if (op.groups < 1 || C % op.groups != 0 || O % op.groups != 0)
            fail(origin, path + ".groups",
                 std::to_string(op.groups) + " must divide the " + std::to_string(C) +
                     " input channels and the " + std::to_string(O) + " output channels");
          wshape = {O, C / op.groups, op.kernel[0], op.kernel[1]};
          const int64_t oh = window_out_size(in[0]->shape[1], op.kernel[0], op.stride[0], op.padding[0], op.dilation[0], false);
          const int64_t ow = window_out_size(in[0]->shape[2], op.kernel[1], op.stride[1], op.padding[1], op.dilation[1], false);
          if (oh < 1 || ow < 1)
            fail(origin, path + ".kernel",
                 "the dilated kernel is larger than the padded input " + ints_str(in[0]->shape));
          out.shape = {O, oh, ow};
        } else {
          need_rank(0, 1, "[features]");
          wshape = {O, in[0]->shape[0]};
          out.shape = {O};
        }
        if (op.weight_qmin > op.weight_qmax)
          fail(origin, path + ".weight_qmin", std::to_string(op.weight_qmin) + " exceeds weight_qmax " + std::to_string(op.weight_qmax));
        check_int_array(op.weight, wshape, true, origin, path + ".weight");
        for (size_t i = 0; i < op.weight.data.size(); ++i) {
          const int32_t w = op.weight.data[i];
          if (w < op.weight_qmin || w > op.weight_qmax)
            fail(origin, path + ".weight",
                 "value " + std::to_string(w) + " at index " + std::to_string(i) +
                     " is outside weight_qmin..weight_qmax " + range_str(op.weight_qmin, op.weight_qmax));
        }
        const size_t on = static_cast<size_t>(O);
        if (op.weight_zero_point.size() != 1 && op.weight_zero_point.size() != on)
          fail(origin, path + ".weight_zero_point",
               "expected 1 or " + std::to_string(O) + " values, got " + std::to_string(op.weight_zero_point.size()));
        for (int32_t zw : op.weight_zero_point)
          if (int64_t{op.weight_qmax} - zw > kInt32Max || int64_t{zw} - op.weight_qmin > kInt32Max)
            fail(origin, path + ".weight_zero_point",
                 std::to_string(zw) + " is too far from " + range_str(op.weight_qmin, op.weight_qmax) +
                     ": w - zero_point must fit in int32");
        if (op.weight_scale.size() != 1 && op.weight_scale.size() != on)
          fail(origin, path + ".weight_scale",
               "expected 1 or " + std::to_string(O) + " values, got " + std::to_string(op.weight_scale.size()));
        for (double s : op.weight_scale)
          if (!std::isfinite(s) || s <= 0)
            fail(origin, path + ".weight_scale", "expected finite numbers > 0, got " + std::to_string(s));
        if (!op.bias.empty()) check_int_array(op.bias, {O}, false, origin, path + ".bias");
        check_multipliers(op.multiplier, 1, on, origin, path);
        check_quant(op.out, origin, path);
        out.q = op.out;
        break;
      }
      case OpKind::kAdd: {
        if (in[0]->shape != in[1]->shape)
          fail(origin, path + ".inputs",
               "add needs equal shapes, got " + ints_str(in[0]->shape) + " and " + ints_str(in[1]->shape));
        check_multipliers(op.input_multipliers, 2, 2, origin, path + ".input");
        check_multipliers(op.multiplier, 1, 1, origin, path);
        if (op.left_shift < 0 || op.left_shift > 30)
          fail(origin, path + ".left_shift", std::to_string(op.left_shift) + " is outside [0, 30]");
        for (size_t j = 0; j < 2; ++j) {
          const QuantParams& q = in[j]->q;
          const int64_t mag = std::max(int64_t{q.qmax} - q.zero_point, int64_t{q.zero_point} - q.qmin);
          if ((mag << op.left_shift) > kInt32Max)
            fail(origin, path + ".left_shift",
                 std::to_string(op.left_shift) + " overflows int32 for input '" + op.inputs[j] +
                     "' (range " + range_str(q.qmin, q.qmax) + ", zero point " +
                     std::to_string(q.zero_point) + ")");
        }
        check_quant(op.out, origin, path);
        out.shape = in[0]->shape;
        out.q = op.out;
        break;
      }
      case OpKind::kRelu: {
        out.shape = in[0]->shape;
        out.q = in[0]->q;
        // relu(x) = max(q, z): real zero is the zero point (clamped into the range).
        out.q.qmin = std::min(std::max(out.q.zero_point, out.q.qmin), out.q.qmax);
        op.out = out.q;
        break;
      }
      case OpKind::kClamp: {
        if (op.out.qmin > op.out.qmax)
          fail(origin, path + ".qmin", std::to_string(op.out.qmin) + " exceeds qmax " + std::to_string(op.out.qmax));
        out.shape = in[0]->shape;
        out.q = in[0]->q;
        out.q.qmin = op.out.qmin;
        out.q.qmax = op.out.qmax;
        check_quant(out.q, origin, path);
        op.out = out.q;
        break;
      }
      case OpKind::kMaxPool2d:
      case OpKind::kAvgPool2d: {
        need_rank(0, 3, "[C,H,W]");
        const bool avg = op.kind == OpKind::kAvgPool2d;
        check_window(op, !avg, origin, path);
        if (avg && op.ceil_mode)
          fail(origin, path + ".ceil_mode", "avgpool2d does not support ceil_mode");
        out.shape = pool_out_shape(op, in[0]->shape, origin, path);
        if (avg) {
          check_multipliers(op.multiplier, 1, 1, origin, path);
          check_quant(op.out, origin, path);
          out.q = op.out;
        } else {
          out.q = in[0]->q;
          op.out = out.q;
        }
        break;
      }
      case OpKind::kGlobalAvgPool: {
        need_rank(0, 3, "[C,H,W]");
        check_multipliers(op.multiplier, 1, 1, origin, path);
        check_quant(op.out, origin, path);
        out.shape = {in[0]->shape[0], 1, 1};
        out.q = op.out;
        break;
      }
      case OpKind::kAdaptiveAvgPool2d: {
        need_rank(0, 3, "[C,H,W]");
        for (int i = 0; i < 2; ++i)
          if (op.output_size[i] < 1 || op.output_size[i] > kMaxDim)
            fail(origin, path + ".output_size", "must be >= 1");
        out.shape = {in[0]->shape[0], op.output_size[0], op.output_size[1]};
        check_shape(out.shape, origin, path + ".output_size");
        // one multiplier for all windows, or one per output position (their sizes differ)
        check_multipliers(op.multiplier, 1, static_cast<size_t>(op.output_size[0] * op.output_size[1]),
                          origin, path);
        check_quant(op.out, origin, path);
        out.q = op.out;
        break;
      }
      case OpKind::kFlatten: {
        out.shape = {shape_numel(in[0]->shape, origin)};
        out.q = in[0]->q;
        op.out = out.q;
        break;
      }
      case OpKind::kConcat: {
        const int64_t rank = static_cast<int64_t>(in[0]->shape.size());
        if (op.axis < 1 || op.axis > rank)
          fail(origin, path + ".axis",
               std::to_string(op.axis) + " is outside [1, " + std::to_string(rank) +
                   "] (axis 0 is the batch)");
        out.shape = in[0]->shape;
        out.shape[op.axis - 1] = 0;
        for (size_t j = 0; j < in.size(); ++j) {
          std::vector<int64_t> a = in[j]->shape, b = in[0]->shape;
          if (a.size() == b.size()) a[op.axis - 1] = b[op.axis - 1] = 0;
          if (a != b)
            fail(origin, path + ".inputs[" + std::to_string(j) + "]",
                 "shape " + ints_str(in[j]->shape) + " does not match " + ints_str(in[0]->shape) +
                     " outside axis " + std::to_string(op.axis));
          out.shape[op.axis - 1] += in[j]->shape[op.axis - 1];
        }
        check_shape(out.shape, origin, path + ".output");
        check_multipliers(op.input_multipliers, in.size(), in.size(), origin, path + ".input");
        check_quant(op.out, origin, path);
        out.q = op.out;
        break;
      }
    }
    tensors[op.output] = out;
  }

  if (m.outputs.empty()) fail(origin, "outputs", "the model has no outputs");
  for (size_t i = 0; i < m.outputs.size(); ++i) {
    auto it = tensors.find(m.outputs[i].name);
    if (it == tensors.end())
      fail(origin, "outputs[" + std::to_string(i) + "].name",
           "unknown tensor '" + m.outputs[i].name + "'");
    m.outputs[i].shape = it->second.shape;
    m.outputs[i].q = it->second.q;
  }
  return tensors;
}

}  // namespace intsim
}  // namespace anybit
