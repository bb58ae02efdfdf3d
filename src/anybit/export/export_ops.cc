// Lowering each op of the graph to the integer model (the Exporter's handlers; exporter.h,
// export.cc).
#include "anybit/export/exporter.h"

#include <cmath>
#include <limits>

namespace anybit {
namespace exporter {

void Exporter::start_layer(jit::Node* n, jit::Value* xv, jit::Value* wv, jit::Value* bv, Pending* p) {
  const IntTensor& x = need_int(xv, n);
  std::string path;
  jit::Value* raw_w = is_quantizer(wv->node()) ? wv->node()->input(0) : wv;
  if (attr_path(raw_w, self_, &path) && path.size() > 7 && path.compare(path.size() - 7, 7, ".weight") == 0)
    path.resize(path.size() - 7);
  else
    path = op_name(n, p->op.kind == OpKind::kConv2d ? "conv" : "linear");
  p->op.name = unique_op_name(path);
  p->what = (p->op.kind == OpKind::kConv2d ? "conv " : "linear ") + p->op.name;
  p->op.inputs = {x.name};
  p->ins = {x.q};
  std::vector<double> ws;
  read_weight(n, wv, &p->op, &ws);
  const int64_t O = p->op.out_channels;
  p->acc_scale.resize(O);
  p->bias_real.assign(O, 0.0);
  for (int64_t o = 0; o < O; ++o) p->acc_scale[o] = x.q.scale * (ws.size() == 1 ? ws[0] : ws[o]);
  c10::IValue b = eval(bv);
  if (b.isTensor()) {
    std::vector<double> bias = tensor_values(b.toTensor());
    if (static_cast<int64_t>(bias.size()) != O) throw Error(p->what + ": bias has " + std::to_string(bias.size()) + " values");
    p->bias_real = bias;
    p->has_bias = true;
  }
}

void Exporter::on_conv(jit::Node* n, bool underscore) {
  Pending p;
  p.op.kind = OpKind::kConv2d;
  if (underscore && eval(n->input(6)).toBool()) throw Error(where(n) + ": transposed convolution has no integer export");
  if (!underscore && !eval(n->input(4)).isIntList())
    throw Error(where(n) + ": conv padding given as a string has no integer export");
  start_layer(n, n->input(0), n->input(1), n->input(2), &p);
  if (p.op.weight.shape.size() != 4) throw Error(p.what + ": only 2-d convolutions are exported");
  const auto stride = eval_ints(n->input(3)), pad = eval_ints(n->input(4)), dil = eval_ints(n->input(5));
  p.op.stride = {stride[0], stride[1]};
  p.op.padding = {pad[0], pad[1]};
  p.op.dilation = {dil[0], dil[1]};
  p.op.groups = eval(n->input(underscore ? 8 : 6)).toInt();
  p.op.kernel = {p.op.weight.shape[2], p.op.weight.shape[3]};
  const auto& in = ints_.at(n->input(0)).shape;
  if (in.size() != 3) throw Error(p.what + ": input shape " + shape_str(in) + " is not [C, H, W]");
  std::vector<int64_t> out{p.op.out_channels, 0, 0};
  for (int d = 0; d < 2; ++d)
    out[1 + d] = (in[1 + d] + 2 * p.op.padding[d] - p.op.dilation[d] * (p.op.kernel[d] - 1) - 1) / p.op.stride[d] + 1;
  p.shape = out;
  pending_[n->output()] = p;
}

void Exporter::on_linear(jit::Node* n) {
  Pending p;
  p.op.kind = OpKind::kLinear;
  start_layer(n, n->input(0), n->input(1), n->input(2), &p);
  p.shape = {p.op.out_channels};
  pending_[n->output()] = p;
}

void Exporter::on_batch_norm(jit::Node* n) {
  auto it = pending_.find(n->input(0));
  if (it == pending_.end() || (it->second.op.kind != OpKind::kConv2d && it->second.op.kind != OpKind::kLinear) ||
      it->second.lo != -kInf || it->second.hi != kInf)
    throw Error(where(n) + ": BatchNorm that does not directly follow a conv/linear has no integer export");
  Pending p = it->second;
  const int64_t O = p.op.out_channels;
  auto vec = [&](int i, double dflt) {
    c10::IValue v = eval(n->input(i));
    return v.isTensor() ? tensor_values(v.toTensor()) : std::vector<double>(O, dflt);
  };
  const std::vector<double> gamma = vec(1, 1.0), beta = vec(2, 0.0), mean = vec(3, 0.0), var = vec(4, 1.0);
  const double eps = eval(n->input(7)).toDouble();
  for (int64_t o = 0; o < O; ++o) {
    const double f = gamma[o] / std::sqrt(var[o] + eps);
    p.acc_scale[o] *= f;
    p.bias_real[o] = (p.bias_real[o] - mean[o]) * f + beta[o];
  }
  p.has_bias = true;
  pending_[n->output()] = p;
}

void Exporter::on_clamp(jit::Node* n, double lo, double hi) {
  jit::Value* x = n->input(0);
  auto it = pending_.find(x);
  if (it != pending_.end()) {
    Pending p = it->second;
    p.lo = std::max(p.lo, lo);
    p.hi = std::min(p.hi, hi);
    pending_[n->output()] = p;
    if (n->kind() == c10::aten::relu_ || n->kind() == c10::aten::hardtanh_ || n->kind() == c10::aten::clamp_)
      pending_[x] = p;  // the in-place op changed its input too
    return;
  }
  const IntTensor& t = need_int(x, n);
  Op op;
  op.name = unique_op_name(op_name(n, lo == 0 && hi == kInf ? "relu" : "clamp"));
  op.inputs = {t.name};
  IntTensor out = t;
  out.name = unique_tensor_name(op.name + ":out");
  op.output = out.name;
  const int32_t qlo = lo == -kInf ? t.q.qmin : intsim::quantize_uniform(static_cast<float>(lo), static_cast<float>(t.q.scale), t.q.zero_point, t.q.qmin, t.q.qmax);
  const int32_t qhi = hi == kInf ? t.q.qmax : intsim::quantize_uniform(static_cast<float>(hi), static_cast<float>(t.q.scale), t.q.zero_point, t.q.qmin, t.q.qmax);
  if (lo == 0 && hi == kInf) {
    op.kind = OpKind::kRelu;
    out.q.qmin = std::max(t.q.qmin, t.q.zero_point);
  } else {
    op.kind = OpKind::kClamp;
    out.q.qmin = std::max(t.q.qmin, qlo);
    out.q.qmax = std::min(t.q.qmax, qhi);
  }
  op.out = out.q;
  result_.model.ops.push_back(op);
  ints_[n->output()] = out;
  if (n->kind() == c10::aten::relu_ || n->kind() == c10::aten::hardtanh_ || n->kind() == c10::aten::clamp_)
    ints_[x] = out;
}

void Exporter::on_add(jit::Node* n) {
  if (!n->input(1)->type()->cast<c10::TensorType>())
    throw Error(where(n) + ": adding a constant has no integer export");
  if (n->inputs().size() > 2 && eval(n->input(2)).toScalar().toDouble() != 1.0)
    throw Error(where(n) + ": add with alpha != 1 has no integer export");
  const IntTensor& a = need_int(n->input(0), n);
  const IntTensor& b = need_int(n->input(1), n);
  if (a.shape != b.shape)
    throw Error(where(n) + ": add of shapes " + shape_str(a.shape) + " and " + shape_str(b.shape) + " (broadcasting has no integer export)");
  Pending p;
  p.op.kind = OpKind::kAdd;
  p.op.name = unique_op_name(op_name(n, "add"));
  p.what = "add " + p.op.name;
  p.op.inputs = {a.name, b.name};
  p.ins = {a.q, b.q};
  p.shape = a.shape;
  pending_[n->output()] = p;
  if (n->kind() == c10::aten::add_) pending_[n->input(0)] = p;
}

void Exporter::on_maxpool(jit::Node* n) {
  const IntTensor& t = need_int(n->input(0), n);
  Op op;
  op.kind = OpKind::kMaxPool2d;
  op.name = unique_op_name(op_name(n, "maxpool"));
  op.inputs = {t.name};
  const auto k = eval_ints(n->input(1)), pad = eval_ints(n->input(3)), dil = eval_ints(n->input(4));
  auto s = eval_ints(n->input(2));
  if (s.empty()) s = k;
  op.kernel = {k[0], k[1]};
  op.stride = {s[0], s[1]};
  op.padding = {pad[0], pad[1]};
  op.dilation = {dil[0], dil[1]};
  op.ceil_mode = eval(n->input(5)).toBool();
  IntTensor out = t;
  for (int d = 0; d < 2; ++d) {
    const int64_t span = t.shape[1 + d] + 2 * pad[d] - dil[d] * (k[d] - 1) - 1;
    int64_t o = (op.ceil_mode ? (span + s[d] - 1) / s[d] : span / s[d]) + 1;
    if (op.ceil_mode && (o - 1) * s[d] >= t.shape[1 + d] + pad[d]) --o;
    out.shape[1 + d] = o;
  }
  out.name = unique_tensor_name(op.name + ":out");
  op.output = out.name;
  op.out = t.q;
  result_.model.ops.push_back(op);
  ints_[n->output()] = out;
}

Pending Exporter::pool(jit::Node* n, OpKind kind, const IntTensor& t) {
  Pending p;
  p.op.kind = kind;
  p.op.name = unique_op_name(op_name(n, kind == OpKind::kAvgPool2d ? "avgpool2d" : "avgpool"));
  p.what = "pooling " + p.op.name;
  p.op.inputs = {t.name};
  p.ins = {t.q};
  return p;
}

void Exporter::on_avgpool(jit::Node* n) {
  const IntTensor& t = need_int(n->input(0), n);
  Pending p = pool(n, OpKind::kAvgPool2d, t);
  const auto k = eval_ints(n->input(1)), pad = eval_ints(n->input(3));
  auto s = eval_ints(n->input(2));
  if (s.empty()) s = k;
  if (eval(n->input(4)).toBool()) throw Error(p.what + ": ceil_mode average pooling has no integer export");
  if (!eval(n->input(5)).toBool() && (pad[0] || pad[1]))
    throw Error(p.what + ": count_include_pad=False with padding has no integer export");
  if (!eval(n->input(6)).isNone()) throw Error(p.what + ": divisor_override has no integer export");
  p.op.kernel = {k[0], k[1]};
  p.op.stride = {s[0], s[1]};
  p.op.padding = {pad[0], pad[1]};
  p.count = k[0] * k[1];
  p.shape = t.shape;
  for (int d = 0; d < 2; ++d) p.shape[1 + d] = (t.shape[1 + d] + 2 * pad[d] - k[d]) / s[d] + 1;
  pending_[n->output()] = p;
}

void Exporter::global_pool(jit::Node* n, const IntTensor& t, bool flatten_after) {
  Pending p = pool(n, OpKind::kGlobalAvgPool, t);
  if (t.shape.size() != 3) throw Error(p.what + ": input shape " + shape_str(t.shape) + " is not [C, H, W]");
  p.count = t.shape[1] * t.shape[2];
  p.shape = {t.shape[0], 1, 1};
  p.flatten_after = flatten_after;
  pending_[n->output()] = p;
}

void Exporter::on_adaptive_avgpool(jit::Node* n) {
  const IntTensor& t = need_int(n->input(0), n);
  const auto size = eval_ints(n->input(1));
  if (size.size() != 2 || size[0] < 1 || size[1] < 1)
    throw Error(where(n) + ": adaptive average pooling to " + shape_str(size) + " has no integer export");
  if (size[0] == 1 && size[1] == 1) return global_pool(n, t, false);
  if (t.shape.size() != 3)
    throw Error(where(n) + ": adaptive average pooling of shape " + shape_str(t.shape) + " (not [C, H, W]) has no integer export");
  if (size[0] == t.shape[1] && size[1] == t.shape[2]) return alias(n->output(), n->input(0));
  Pending p = pool(n, OpKind::kAdaptiveAvgPool2d, t);
  p.op.output_size = {size[0], size[1]};
  p.shape = {t.shape[0], size[0], size[1]};
  p.counts = intsim::adaptive_window_counts(t.shape[1], t.shape[2], size[0], size[1]);
  pending_[n->output()] = p;
}

void Exporter::on_mean(jit::Node* n) {
  const IntTensor& t = need_int(n->input(0), n);
  std::vector<int64_t> dims = eval_ints(n->input(1), 1);
  for (auto& d : dims) d = d < 0 ? d + 4 : d;
  std::sort(dims.begin(), dims.end());
  if (dims != std::vector<int64_t>{2, 3}) throw Error(where(n) + ": mean over other dims than H, W has no integer export");
  global_pool(n, t, !eval(n->input(2)).toBool());
}

void Exporter::on_flatten(jit::Node* n) {
  const IntTensor& t = need_int(n->input(0), n);
  const std::string k = n->kind().toQualString();
  if (k == "aten::flatten") {
    const int64_t start = eval(n->input(1)).toInt(), end = eval(n->input(2)).toInt();
    if (start != 1 || (end != -1 && end != static_cast<int64_t>(t.shape.size())))
      throw Error(where(n) + ": flatten(" + std::to_string(start) + ", " + std::to_string(end) + ") has no integer export (only flatten(x, 1))");
  } else {
    std::vector<int64_t> size = eval_ints(n->input(1), 1);
    int64_t numel = 1;
    for (int64_t s : t.shape) numel *= s;
    if (size.size() != 2 || (size[1] != -1 && size[1] != numel))
      throw Error(where(n) + ": " + k + " to " + shape_str(size) + " has no integer export (only [N, -1])");
  }
  if (t.shape.size() == 1) return alias(n->output(), n->input(0));
  Op op;
  op.kind = OpKind::kFlatten;
  op.name = unique_op_name(op_name(n, "flatten"));
  op.inputs = {t.name};
  IntTensor out = t;
  out.shape = {1};
  for (int64_t s : t.shape) out.shape[0] *= s;
  out.name = unique_tensor_name(op.name + ":out");
  op.output = out.name;
  op.out = t.q;
  result_.model.ops.push_back(op);
  ints_[n->output()] = out;
}

void Exporter::on_cat(jit::Node* n) {
  jit::Node* list = n->input(0)->node();
  if (list->kind() != c10::prim::ListConstruct) throw Error(where(n) + ": cat of a computed list has no integer export");
  Pending p;
  p.op.kind = OpKind::kConcat;
  p.op.name = unique_op_name(op_name(n, "cat"));
  p.what = "concat " + p.op.name;
  int64_t axis = eval(n->input(1)).toInt();
  for (jit::Value* v : list->inputs()) {
    const IntTensor& t = need_int(v, n);
    if (axis < 0) axis += static_cast<int64_t>(t.shape.size()) + 1;
    if (p.shape.empty()) p.shape = t.shape;
    else p.shape.at(axis - 1) += t.shape.at(axis - 1);
    p.op.inputs.push_back(t.name);
    p.ins.push_back(t.q);
  }
  if (axis < 1) throw Error(p.what + ": concatenating along the batch has no integer export");
  p.op.axis = axis;
  pending_[n->output()] = p;
}

IntTensor Exporter::finalize(Pending p, QuantParams q, const std::string& tensor_name) {
  Op& op = p.op;
  const double sy = q.scale;
  if (p.lo != -kInf)
    q.qmin = std::max(q.qmin, intsim::quantize_uniform(static_cast<float>(p.lo), static_cast<float>(sy), q.zero_point, q.qmin, q.qmax));
  if (p.hi != kInf)
    q.qmax = std::min(q.qmax, intsim::quantize_uniform(static_cast<float>(p.hi), static_cast<float>(sy), q.zero_point, q.qmin, q.qmax));
  auto mult = [&](double m) {
    try {
      return intsim::quantize_multiplier(m);
    } catch (const Error& e) {
      throw Error(p.what + ": " + e.what());
    }
  };
  switch (op.kind) {
    case OpKind::kConv2d:
    case OpKind::kLinear: {
      const int64_t O = op.out_channels;
      const int64_t per = static_cast<int64_t>(op.weight.data.size()) / O;
      bool negated = false;
      std::vector<int32_t> zps(O);
      for (int64_t o = 0; o < O; ++o) zps[o] = op.weight_zero_point.size() == 1 ? op.weight_zero_point[0] : op.weight_zero_point[o];
      std::vector<double> scale(O);
      for (int64_t o = 0; o < O; ++o) {
        if (p.acc_scale[o] < 0) {  // BatchNorm with a negative factor: negate the row
          for (int64_t i = 0; i < per; ++i) {
            int32_t& w = op.weight.data[o * per + i];
            w = 2 * zps[o] - w;
            op.weight_qmin = std::min(op.weight_qmin, w);
            op.weight_qmax = std::max(op.weight_qmax, w);
          }
          negated = true;
        }
        scale[o] = std::fabs(p.acc_scale[o]);
      }
      (void)negated;
      op.multiplier.clear();
      for (int64_t o = 0; o < O; ++o) op.multiplier.push_back(mult(scale[o] / sy));
      if (std::all_of(op.multiplier.begin(), op.multiplier.end(), [&](DyadicMultiplier m) { return m == op.multiplier[0]; }))
        op.multiplier.resize(1);
      if (p.has_bias) {
        op.bias.dtype = DType::kInt32;
        op.bias.shape = {O};
        op.bias.data.resize(O);
        for (int64_t o = 0; o < O; ++o) {
          const double b = scale[o] > 0 ? intsim::round_half_even(p.bias_real[o] / scale[o]) : 0.0;
          if (!(std::fabs(b) < 2147483647.0))
            throw Error(p.what + ": bias " + std::to_string(p.bias_real[o]) + " of channel " + std::to_string(o) +
                        " does not fit int32 at scale s_in * s_w = " + std::to_string(scale[o]));
          op.bias.data[o] = static_cast<int32_t>(b);
        }
      }
      int32_t wlo = op.weight_qmin, whi = op.weight_qmax;
      op.weight.dtype = (wlo >= -128 && whi <= 127) ? DType::kInt8
                        : (wlo >= -32768 && whi <= 32767) ? DType::kInt16 : DType::kInt32;
      break;
    }
    case OpKind::kAdd: {
      const double smax = std::max(p.ins[0].scale, p.ins[1].scale);
      int need = 0;  // bits of the largest |q - z| of either input
      for (const QuantParams& in : p.ins) {
        const int64_t m = std::max<int64_t>(std::llabs(int64_t{in.qmax} - in.zero_point), std::llabs(int64_t{in.qmin} - in.zero_point));
        while ((int64_t{1} << need) <= m) ++need;
      }
      op.left_shift = std::max(0, std::min(20, 30 - need));
      op.input_multipliers = {mult(p.ins[0].scale / (2 * smax)), mult(p.ins[1].scale / (2 * smax))};
      op.multiplier = {mult(2 * smax / (std::ldexp(1.0, op.left_shift) * sy))};
      break;
    }
    case OpKind::kAvgPool2d:
    case OpKind::kGlobalAvgPool:
      op.multiplier = {mult(p.ins[0].scale / (static_cast<double>(p.count) * sy))};
      break;
    case OpKind::kAdaptiveAvgPool2d:  // one multiplier per output position, or one for all
      op.multiplier.clear();
      for (int64_t c : p.counts) op.multiplier.push_back(mult(p.ins[0].scale / (static_cast<double>(c) * sy)));
      if (std::all_of(op.multiplier.begin(), op.multiplier.end(), [&](DyadicMultiplier m) { return m == op.multiplier[0]; }))
        op.multiplier.resize(1);
      break;
    case OpKind::kConcat:
      op.input_multipliers.clear();
      for (const QuantParams& in : p.ins) op.input_multipliers.push_back(mult(in.scale / sy));
      break;
    default:
      throw Error(p.what + ": internal: cannot close this op");
  }
  op.out = q;
  op.output = unique_tensor_name(tensor_name);
  result_.model.ops.push_back(op);
  IntTensor out{op.output, q, p.shape};
  if (p.flatten_after) {
    Op f;
    f.kind = OpKind::kFlatten;
    f.name = unique_op_name(op.name + ":flatten");
    f.inputs = {out.name};
    out.name = unique_tensor_name(op.output + ":flat");
    out.shape = {p.shape[0]};
    f.output = out.name;
    f.out = q;
    result_.model.ops.push_back(f);
  }
  return out;
}

void Exporter::add_output(jit::Value* v) {
  if (v->node()->kind() == c10::prim::TupleConstruct || v->node()->kind() == c10::prim::ListConstruct) {
    for (jit::Value* in : v->node()->inputs()) add_output(in);
    return;
  }
  auto p = pending_.find(v);
  if (p != pending_.end()) {
    Pending& pd = p->second;
    if (pd.op.kind != OpKind::kConv2d && pd.op.kind != OpKind::kLinear)
      throw Error("the model output (from " + pd.what + ") is not quantized: add a rule quantizing it");
    // An unquantized final layer (the logits) is exported as its int32 accumulator at
    // the finest channel scale: exact for per-tensor weights (M = 1).
    QuantParams q;
    q.scale = *std::min_element(pd.acc_scale.begin(), pd.acc_scale.end(), [](double a, double b) { return std::fabs(a) < std::fabs(b); });
    q.scale = std::fabs(q.scale);
    q.zero_point = 0;
    q.qmin = -std::numeric_limits<int32_t>::max();
    q.qmax = std::numeric_limits<int32_t>::max();
    result_.notes.push_back(pd.op.name + ":out is not quantized: exported as int32 at scale s_in * s_w = " +
                            std::to_string(q.scale) + " (the accumulator)");
    ints_[v] = finalize(pd, q, pd.op.name + ":out");
  }
  const IntTensor& t = need_int(v, v->node());
  intsim::TensorSpec out;
  out.name = t.name;
  result_.model.outputs.push_back(out);
}

}  // namespace exporter
}  // namespace anybit
