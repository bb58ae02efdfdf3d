// The integer exporter (export.h); its LibTorch twin is integer_twin.cc, the evaluation of
// an export integer_eval.cc.
//
// The exporter walks the inlined, eval-specialized forward graph once, in order, and
// tracks what each tensor value is:
//   raw input    a model input before its quantizer
//   integer      a tensor of the integer model (name, quantization, shape)
//   pending      the float result of a conv/linear/add/pool whose output quantizer has
//                not been seen yet; ReLU, ReLU6 and BatchNorm between the op and that
//                quantizer are folded into it (clamp bounds, multiplier and bias)
// The quantizer that closes a pending op gives the op its output quantization; a
// quantizer on an integer tensor with other parameters becomes a one-input concat (a
// plain rescale), with the same parameters it is the identity.
#include "anybit/export/exporter.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace anybit {
namespace exporter {

int lowest_bit_exponent(double v) {
  int e = 0;
  const double m = std::frexp(std::fabs(v), &e);  // |v| = m * 2^e, m in [0.5, 1)
  uint64_t mant = static_cast<uint64_t>(std::ldexp(m, 53));
  return e - 53 + __builtin_ctzll(mant);
}

double codebook_step(const double* l, int64_t n) {
  double gap = 0, small = 0;
  for (int64_t k = 0; k < n; ++k) {
    if (l[k] != 0 && (small == 0 || std::fabs(l[k]) < small)) small = std::fabs(l[k]);
    if (k > 0 && l[k] > l[k - 1] && (gap == 0 || l[k] - l[k - 1] < gap)) gap = l[k] - l[k - 1];
  }
  std::vector<double> candidates;
  for (double base : {gap, small})
    for (int div = 1; div <= 4; ++div)
      if (base > 0) candidates.push_back(base / div);
  std::sort(candidates.rbegin(), candidates.rend());
  for (double d : candidates) {
    bool ok = true;
    for (int64_t k = 0; k < n && ok; ++k) {
      const double v = l[k] / d;
      ok = std::fabs(v) <= 32767 && std::fabs(v - std::nearbyint(v)) <= 1e-4 * std::max(1.0, std::fabs(v));
    }
    if (ok) return d;
  }
  return n > 0 && small == 0 ? 1.0 : 0.0;  // all levels 0
}

double binary_grid_step(const double* v, int64_t n) {
  int k = std::numeric_limits<int>::max();
  for (int64_t i = 0; i < n; ++i)
    if (v[i] != 0) k = std::min(k, lowest_bit_exponent(v[i]));
  return k == std::numeric_limits<int>::max() ? 1.0 : std::ldexp(1.0, k);
}

std::vector<double> tensor_values(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kDouble).contiguous().reshape({-1});
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

std::vector<double> float32_values(const at::Tensor& t) {
  return tensor_values(t.detach().to(at::kFloat));
}

ExportResult Exporter::run() {
  jit::Graph& graph = *g_.graph;
  for (size_t i = 1; i < graph.inputs().size(); ++i) raw_inputs_.insert(graph.inputs()[i]);
  for (jit::Node* n : graph.nodes()) visit(n);
  for (jit::Value* v : graph.outputs()) add_output(v);
  if (result_.model.inputs.empty())
    throw Error("the model input is not quantized: add a rule for role input (e.g. uint8)");
  result_.model.metadata["producer"] = "anybit 0.1.0";
  if (!options_.source.empty()) result_.model.metadata["source"] = options_.source;
  try {
    intsim::validate_model(result_.model, "exported model");
  } catch (const Error& e) {
    throw Error(std::string("export produced an invalid integer model (a bug): ") + e.what());
  }
  return std::move(result_);
}

c10::IValue Exporter::eval(jit::Value* v) {
  if (auto c = jit::toIValue(v)) return *c;
  std::string path;
  if (attr_path(v, self_, &path)) return resolve_attr(g_.module, path);
  jit::Node* n = v->node();
  if (n->kind() == c10::prim::ListConstruct) {
    c10::impl::GenericList list(c10::AnyType::get());
    bool ints = true;
    std::vector<c10::IValue> items;
    for (jit::Value* in : n->inputs()) {
      items.push_back(eval(in));
      ints = ints && items.back().isInt();
    }
    if (ints) {
      c10::List<int64_t> l;
      for (const auto& i : items) l.push_back(i.toInt());
      return l;
    }
    for (const auto& i : items) list.push_back(i);
    return list;
  }
  // the shape of a tensor the export computes: known per sample (batch 1)
  if ((n->kind() == c10::aten::size || n->kind() == c10::aten::dim) && (ints_.count(n->input(0)) || pending_.count(n->input(0)))) {
    std::vector<int64_t> shape = {1};
    const std::vector<int64_t>& s = ints_.count(n->input(0)) ? ints_.at(n->input(0)).shape : pending_.at(n->input(0)).shape;
    shape.insert(shape.end(), s.begin(), s.end());
    const int64_t rank = static_cast<int64_t>(shape.size());
    if (n->kind() == c10::aten::dim) return rank;
    if (n->inputs().size() == 1) return c10::List<int64_t>(shape);
    int64_t d = eval(n->input(1)).toInt();
    if (d < 0) d += rank;
    if (d < 0 || d >= rank) throw Error(where(n) + ": size of dimension " + std::to_string(d) + " of a rank-" + std::to_string(rank) + " tensor");
    return shape[d];
  }
  if ((n->kind() == c10::prim::ListUnpack || n->kind() == c10::prim::TupleUnpack) && n->inputs().size() == 1) {
    c10::IValue l = eval(n->input(0));
    if (l.isTuple() && v->offset() < l.toTupleRef().elements().size()) return l.toTupleRef().elements()[v->offset()];
    if (l.isList() && v->offset() < l.toListRef().size()) return l.toListRef()[v->offset()];
  }
  if (n->kind() == c10::prim::Constant || !n->maybeOperator())
    throw Error(where(n) + ": cannot evaluate " + std::string(n->kind().toQualString()) + " at export");
  jit::Stack stack;
  for (jit::Value* in : n->inputs()) stack.push_back(eval(in));
  torch::NoGradGuard no_grad;
  n->getOperation()(stack);
  return stack.at(v->offset());
}

std::vector<int64_t> Exporter::eval_ints(jit::Value* v, size_t expand_to) {
  c10::IValue iv = eval(v);
  std::vector<int64_t> out;
  if (iv.isInt()) out.assign(expand_to, iv.toInt());
  else if (iv.isIntList()) out = iv.toIntVector();
  else throw Error(where(v->node()) + ": expected integers");
  if (out.size() == 1 && expand_to > 1) out.assign(expand_to, out[0]);
  return out;
}

std::string Exporter::where(jit::Node* n) {
  for (jit::Value* o : n->outputs()) {
    auto it = value_point_.find(o);
    if (it != value_point_.end()) return it->second;
  }
  std::ostringstream s;
  s << n->kind().toQualString();
  return s.str();
}

std::string Exporter::quantizer_point(jit::Node* n) const {
  for (size_t i = 1; i < n->inputs().size(); ++i) {
    jit::Value* in = n->input(i);
    if (in->node()->kind() != c10::prim::GetAttr) continue;
    auto it = param_point_.find(in->node()->s(c10::attr::name));
    if (it != param_point_.end()) return it->second;
  }
  return "";
}

std::string Exporter::point_of(jit::Node* n) {
  const std::string p = quantizer_point(n);
  if (!p.empty()) return p;
  auto it = value_point_.find(n->input(0));
  return it != value_point_.end() ? it->second : std::string(n->kind().toQualString());
}

Quantizer Exporter::read_quantizer(jit::Node* n) {
  Quantizer q;
  q.kind = n->kind().toQualString();
  q.point = point_of(n);
  auto zps = [&](const at::Tensor& z) {
    std::vector<int32_t> out;
    for (double v : tensor_values(z))
      out.push_back(static_cast<int32_t>(std::min<double>(std::max<double>(std::nearbyint(v), q.qmin), q.qmax)));
    return out;
  };
  const qnode::OpInfo& in = qnode::info(qnode::op_of(n));
  switch (in.integer) {
  case qnode::IntegerForm::kUniform: {
    if (in.group >= 0 && eval(n->input(in.group)).toInt() != 0)
      throw Error(q.point + ": per-group quantization has no integer export (one scale per output channel at most)");
    if (in.axis >= 0) q.axis = eval(n->input(in.axis)).toInt();
    q.qmin = static_cast<int32_t>(eval(n->input(in.qmin)).toInt());
    q.qmax = static_cast<int32_t>(eval(n->input(in.qmax)).toInt());
    c10::IValue s = eval(n->input(in.scale)), z = eval(n->input(in.zero_point));
    q.scale = s.isTensor() ? float32_values(s.toTensor()) : std::vector<double>{static_cast<float>(s.toDouble())};
    q.zero_point = z.isTensor() ? zps(z.toTensor()) : std::vector<int32_t>{static_cast<int32_t>(z.toInt())};
    break;
  }
  case qnode::IntegerForm::kPact: {
    const int64_t bits = eval(n->input(in.bits)).toInt();
    const int64_t qmax = (int64_t{1} << bits) - 1;
    // the scale exactly as the PACT kernel computes it (fake_quant.cc)
    at::Tensor a = eval(n->input(1)).toTensor().detach().to(at::kFloat).reshape({1}).clamp_min(1e-8);
    q.scale = float32_values(a / static_cast<double>(qmax));
    q.zero_point = {0};
    q.qmin = 0;
    q.qmax = static_cast<int32_t>(qmax);
    break;
  }
  case qnode::IntegerForm::kSign:
    q.two_level_sign = true;
    q.scale = float32_values(eval(n->input(1)).toTensor());  // alpha
    q.axis = eval(n->input(in.axis)).toInt();
    q.zero_point = {0};
    q.qmin = -1;
    q.qmax = 1;
    break;
  case qnode::IntegerForm::kBinaryGrid:
    q.weights_only = q.binary_grid = true;
    q.weights_only_why = in.no_integer;
    q.scale = {1.0};  // read_weight finds each channel's step in the values
    q.zero_point = {0};
    q.axis = 0;
    break;
  case qnode::IntegerForm::kCodebook: {
    if (in.group >= 0 && eval(n->input(in.group)).toInt() != 0)
      throw Error(q.point + ": per-group codebooks have no integer export (one scale per output channel at most)");
    q.weights_only = true;
    q.weights_only_why = in.no_integer;
    q.axis = eval(n->input(in.axis)).toInt();
    const std::vector<double> s = float32_values(eval(n->input(in.scale)).toTensor());
    const at::Tensor levels = eval(n->input(in.levels)).toTensor().detach().to(at::kFloat).to(at::kDouble).contiguous();
    const int64_t rows = levels.dim() == 1 ? 1 : levels.size(0), L = levels.size(-1);
    const int64_t channels = std::max<int64_t>(rows, static_cast<int64_t>(s.size()));
    const double* lv = levels.data_ptr<double>();
    int64_t lo = 0, hi = 0;
    for (int64_t c = 0; c < channels && q.no_weights.empty(); ++c) {
      const double* row = lv + (rows == 1 ? 0 : c) * L;
      const double d = codebook_step(row, L);
      if (d <= 0) {
        q.no_weights = q.point + ": codebook levels that are not integers times a common step (within 16 "
                       "bits; NF4's and k-means levels are not) have no integer export: give such levels, e.g. "
                       "lut2:levels=-3/-1/1/3";
        break;
      }
      for (int64_t k = 0; k < L; ++k) {
        const int64_t v = static_cast<int64_t>(std::nearbyint(row[k] / d));
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      q.scale.push_back(s[s.size() == 1 ? 0 : c] * d);
    }
    q.zero_point = {0};
    q.qmin = static_cast<int32_t>(lo);
    q.qmax = static_cast<int32_t>(hi);
    break;
  }
  case qnode::IntegerForm::kNone:
    throw Error(q.point + ": " + q.kind + ": " + in.no_integer);
  }
  for (double s : q.scale)
    if (!(s > 0) || !std::isfinite(s))
      throw Error(q.point + ": quantizer scale " + std::to_string(s) + " is not a positive number");
  return q;
}

QuantParams Exporter::activation_params(const Quantizer& fq) {
  if (fq.weights_only) throw Error(fq.point + ": " + fq.kind + ": " + fq.weights_only_why);
  if (fq.two_level_sign)
    throw Error(fq.point + ": binary/ternary activations (alpha * sign) have no integer export; " +
                "quantize activations as uint1/int2 or wider");
  if (fq.scale.size() != 1 || fq.zero_point.size() != 1)
    throw Error(fq.point + ": per-channel activation quantization has no integer export");
  QuantParams q;
  q.scale = fq.scale[0];
  q.zero_point = fq.zero_point[0];
  q.qmin = fq.qmin;
  q.qmax = fq.qmax;
  return q;
}

std::string Exporter::unique_op_name(std::string base) {
  std::string name = base;
  for (int i = 2; op_names_.count(name); ++i) name = base + "#" + std::to_string(i);
  op_names_.insert(name);
  return name;
}

std::string Exporter::unique_tensor_name(std::string base) {
  std::string name = base;
  for (int i = 2; tensor_names_.count(name); ++i) name = base + "#" + std::to_string(i);
  tensor_names_.insert(name);
  return name;
}

std::string Exporter::op_name(jit::Node* n, const std::string& fallback) {
  for (jit::Value* o : n->outputs()) {
    auto it = value_point_.find(o);
    if (it != value_point_.end()) {
      std::string s = it->second;
      if (s.size() > 4 && s.compare(s.size() - 4, 4, ":out") == 0) s.resize(s.size() - 4);
      return s;
    }
  }
  return fallback;
}

const IntTensor& Exporter::need_int(jit::Value* v, jit::Node* user) {
  auto it = ints_.find(v);
  if (it != ints_.end()) return it->second;
  auto p = pending_.find(v);
  const std::string u = where(user) + " (" + user->kind().toQualString() + ")";
  if (p != pending_.end())
    throw Error(u + ": its input, the output of " + p->second.what +
                ", is not quantized: add a rule quantizing that output");
  if (raw_inputs_.count(v)) throw Error(u + ": reads the model input before any quantizer: add a rule for role input");
  throw Error(u + ": its input is a float tensor the integer model cannot compute (from " +
              std::string(v->node()->kind().toQualString()) + ")");
}

bool Exporter::carries_tensor(const c10::TypePtr& t) {
  if (t->kind() == c10::TypeKind::TensorType) return true;
  for (const c10::TypePtr& c : t->containedTypes())
    if (carries_tensor(c)) return true;
  return false;
}

void Exporter::visit(jit::Node* n) {
  const std::string k = n->kind().toQualString();
  bool any_tracked = false;
  for (jit::Value* in : n->inputs()) {
    any_tracked = any_tracked || tracked(in);
    if (in->node()->kind() == c10::prim::ListConstruct)  // cat's list of tensors
      for (jit::Value* item : in->node()->inputs()) any_tracked = any_tracked || tracked(item);
  }
  if (!any_tracked) {
    if (n->kind() == c10::prim::If || n->kind() == c10::prim::Loop)
      for (jit::Value* o : n->outputs())
        if (o->type()->kind() == c10::TypeKind::TensorType)
          throw Error(where(n) + ": data-dependent control flow (" + k + ") has no integer export");
    return;  // constants, attributes, sizes, weight quantizers: read when used
  }
  if (is_quantizer(n)) return on_quantizer(n);
  // a weight converted to the data's dtype (W.type_as(x)) reads only what x is, not its
  // values: read_weight reads the quantizer through it
  if (keeps_values(n) && !tracked(n->input(0))) return;
  // ops that read only what a tensor is, not its values (sizes, dim, is_nested, dtype):
  // evaluated when used; and the list of tensors a cat reads
  if (k == "prim::ListConstruct" && n->output()->type()->isSubtypeOf(*c10::ListType::ofTensors())) return;
  bool data_out = false;
  for (jit::Value* o : n->outputs()) data_out = data_out || carries_tensor(o->type());
  if (!data_out && n->blocks().empty()) return;
  if (k == "aten::_convolution" || k == "aten::conv2d") return on_conv(n, k == "aten::_convolution");
  if (k == "aten::linear") return on_linear(n);
  if (k == "aten::batch_norm") return on_batch_norm(n);
  if (k == "aten::relu" || k == "aten::relu_") return on_clamp(n, 0.0, kInf);
  if (k == "aten::hardtanh" || k == "aten::hardtanh_" || k == "aten::clamp" || k == "aten::clamp_") {
    c10::IValue lo = eval(n->input(1)), hi = eval(n->input(2));
    return on_clamp(n, lo.isNone() ? -kInf : lo.toScalar().toDouble(), hi.isNone() ? kInf : hi.toScalar().toDouble());
  }
  if (k == "aten::relu6") return on_clamp(n, 0.0, 6.0);
  if (k == "aten::add" || k == "aten::add_") return on_add(n);
  if (k == "aten::max_pool2d") return on_maxpool(n);
  if (k == "aten::avg_pool2d") return on_avgpool(n);
  if (k == "aten::adaptive_avg_pool2d") return on_adaptive_avgpool(n);
  if (k == "aten::mean") return on_mean(n);
  if (k == "aten::flatten" || k == "aten::view" || k == "aten::reshape") return on_flatten(n);
  if (k == "aten::cat") return on_cat(n);
  if (k == "aten::dropout" || k == "aten::dropout_" || k == "aten::feature_dropout" ||
      k == "aten::contiguous" || k == "aten::detach") {
    return alias(n->output(), n->input(0));
  }
  throw Error(where(n) + ": op " + k + " has no integer export (supported: conv2d, linear, " +
              "batch_norm, relu, relu6/hardtanh, clamp, add, max/avg/adaptive-avg pooling, mean, " +
              "flatten/view, cat, dropout)");
}

void Exporter::alias(jit::Value* to, jit::Value* from) {
  if (ints_.count(from)) ints_[to] = ints_[from];
  else if (pending_.count(from)) pending_[to] = pending_[from];
  else if (raw_inputs_.count(from)) raw_inputs_.insert(to);
}

void Exporter::on_quantizer(jit::Node* n) {
  jit::Value* x = n->input(0);
  Quantizer fq = read_quantizer(n);
  if (raw_inputs_.count(x)) {
    if (!result_.model.inputs.empty())
      throw Error(fq.point + ": anybit exports models with one input; this is the second");
    intsim::TensorSpec in;
    in.name = unique_tensor_name(fq.point);
    in.q = activation_params(fq);
    in.shape = input_shape();
    result_.model.inputs.push_back(in);
    ints_[n->output()] = IntTensor{in.name, in.q, in.shape};
    return;
  }
  const QuantParams q = activation_params(fq);
  if (pending_.count(x)) {
    Pending p = pending_.at(x);
    ints_[n->output()] = finalize(p, q, fq.point);
    return;
  }
  const IntTensor& t = need_int(x, n);
  const bool same = t.q.scale == q.scale && t.q.zero_point == q.zero_point;
  if (same && q.qmin <= t.q.qmin && t.q.qmax <= q.qmax) {
    ints_[n->output()] = t;  // quantizing integers onto their own grid: the identity
    return;
  }
  // a rescale onto another grid: a one-input concat (y = requantize(q - z, s_in / s_out))
  Pending p;
  p.op.kind = OpKind::kConcat;
  p.op.name = fq.point;
  p.what = "the rescale " + fq.point;
  p.op.inputs = {t.name};
  p.ins = {t.q};
  p.shape = t.shape;
  std::string base = fq.point;
  if (base.size() > 4 && base.compare(base.size() - 4, 4, ":out") == 0) base.resize(base.size() - 4);
  p.op.name = base + ":requantize";
  ints_[n->output()] = finalize(p, q, fq.point);
}

std::vector<int64_t> Exporter::input_shape() {
  if (!options_.input_shape.empty()) return options_.input_shape;
  if (g_.module.hasattr("anybit_input_shape")) return g_.module.attr("anybit_input_shape").toIntVector();
  throw Error("the model does not record its input shape (it was quantized without data): pass it, e.g. --input-shape 1,28,28");
}

void Exporter::read_weight(jit::Node* user, jit::Value* wv, Op* op, std::vector<double>* w_scale) {
  // the quantizer's output as the op reads it, through ops that keep its values
  // (W.contiguous(), W.to(x.dtype), W.type_as(x): the weight point sits before them)
  for (jit::Node* k = wv->node(); !is_quantizer(k) && keeps_values(k); k = wv->node()) wv = k->input(0);
  jit::Node* qn = wv->node();
  if (!is_quantizer(qn))
    throw Error(op->name + ": its weight is not quantized: add a rule for role weight (e.g. int8)");
  Quantizer fq = read_quantizer(qn);
  if (!fq.no_weights.empty()) throw Error(fq.no_weights);
  at::Tensor wq = eval(wv).toTensor().detach().to(at::kDouble).contiguous();  // fake-quantized
  const int64_t O = wq.size(0);
  if (fq.scale.size() != 1 && (fq.axis != 0 || static_cast<int64_t>(fq.scale.size()) != O))
    throw Error(fq.point + ": per-channel weights must have one scale per output channel (axis 0)");
  op->out_channels = O;
  const int64_t per = wq.numel() / std::max<int64_t>(O, 1);
  const double* pw = wq.data_ptr<double>();
  if (fq.binary_grid) {
    // each channel's values are integers times its finest power of two, exactly
    fq.scale.assign(static_cast<size_t>(O), 1.0);
    for (int64_t o = 0; o < O; ++o) {
      const double step = binary_grid_step(pw + o * per, per);
      for (int64_t i = 0; i < per; ++i)
        if (std::fabs(pw[o * per + i] / step) > 2147483647.0)
          throw Error(fq.point + ": the block scales of output channel " + std::to_string(o) +
                      " span too many octaves for 32-bit integer weights");
      fq.scale[static_cast<size_t>(o)] = step;
    }
    fq.qmin = 0, fq.qmax = 0;
  }
  op->weight.shape = wq.sizes().vec();
  op->weight.data.resize(wq.numel());
  int32_t lo = fq.qmin, hi = fq.qmax;
  for (int64_t o = 0; o < O; ++o) {
    const double s = fq.scale.size() == 1 ? fq.scale[0] : fq.scale[o];
    const int32_t z = fq.zero_point.size() == 1 ? fq.zero_point[0] : fq.zero_point[o];
    for (int64_t i = 0; i < per; ++i) {
      const double v = pw[o * per + i];
      const double r = std::nearbyint(v / s);
      // (q - z) * s was rounded to float32: allow its rounding error
      if (std::fabs(v - r * s) > 1e-3 * s + 1e-6 * std::fabs(v))
        throw Error(fq.point + ": weight value " + std::to_string(v) + " is not on its quantizer's grid");
      const int64_t q = static_cast<int64_t>(r) + z;
      lo = static_cast<int32_t>(std::min<int64_t>(lo, q));
      hi = static_cast<int32_t>(std::max<int64_t>(hi, q));
      op->weight.data[o * per + i] = static_cast<int32_t>(q);
    }
  }
  op->weight_qmin = lo;
  op->weight_qmax = hi;
  op->weight_zero_point = fq.zero_point;
  *w_scale = fq.scale;
  op->weight_scale = fq.scale;
}

}  // namespace exporter

ExportResult export_integer_model(const torch::jit::Module& quantized, const ExportOptions& options) {
  return exporter::Exporter(quantized, options).run();
}

void to_json(nlohmann::json& j, const ExportResult& r) {
  std::map<std::string, int> kinds;
  for (const auto& op : r.model.ops) kinds[intsim::op_kind_name(op.kind)]++;
  auto tensors = [](const std::vector<intsim::TensorSpec>& ts) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& t : ts)
      out.push_back({{"name", t.name}, {"shape", t.shape}, {"scale", t.q.scale}, {"zero_point", t.q.zero_point},
                     {"qmin", t.q.qmin}, {"qmax", t.q.qmax}});
    return out;
  };
  j = {{"op_count", r.model.ops.size()}, {"ops", kinds},
       {"notes", r.notes},               {"inputs", tensors(r.model.inputs)},
       {"outputs", tensors(r.model.outputs)}};
}

}  // namespace anybit
