// The integer exporter and its LibTorch twin (export.h).
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
#include "anybit/core/export.h"

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <chrono>
#include <filesystem>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include <unistd.h>

#include "anybit/core/quantize.h"
#include "anybit/data/progress.h"
#include "anybit/graph/graph.h"
#include "anybit/intsim/kernels.h"
#include "anybit/intsim/requantize.h"
#include "anybit/quant/node.h"
#include "anybit/quant/spec.h"

namespace anybit {
namespace jit = torch::jit;
using intsim::DyadicMultiplier;
using intsim::IntArray;
using intsim::Op;
using intsim::OpKind;
using intsim::QuantParams;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Parameters read off one quantizer node.
struct Quantizer {
  std::string kind;             // node kind, "anybit::fake_quant_affine"
  std::string point;            // point name, "" if the model does not say
  std::vector<double> scale;    // 1 (per tensor) or C (per channel), float32 values
  std::vector<int32_t> zero_point;
  int32_t qmin = 0, qmax = 0;
  int64_t axis = -1;
  bool two_level_sign = false;  // binary / ternary: levels are multiples of alpha
  // weights only (OpInfo::no_integer says why not as activations): MX, whose per-channel
  // steps read_weight finds in the values, and integer codebooks
  bool weights_only = false;
  std::string weights_only_why;  // the message for its use as an activation
  std::string no_weights;        // the message for its use as a weight ("" when it exports)
  bool binary_grid = false;
};

// The exponent of v's lowest set bit: v = odd * 2^k (v != 0, a float32 value as a double).
int lowest_bit_exponent(double v) {
  int e = 0;
  const double m = std::frexp(std::fabs(v), &e);  // |v| = m * 2^e, m in [0.5, 1)
  uint64_t mant = static_cast<uint64_t>(std::ldexp(m, 53));
  return e - 53 + __builtin_ctzll(mant);
}

// The step d of codebook levels l[0, n) (sorted, stored as float32) that makes every l / d
// an integer of at most 16 bits (up to float32's rounding: |l / d - round| <= 1e-4), the
// largest such of a few candidates (the smallest gap between levels and the smallest
// nonzero |level|, divided by 1..4); 0 when none does (NF4's levels, k-means levels).
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

// The largest power of two that every value of v[0, n) is an integer multiple of (1 when
// all are 0).
double binary_grid_step(const double* v, int64_t n) {
  int k = std::numeric_limits<int>::max();
  for (int64_t i = 0; i < n; ++i)
    if (v[i] != 0) k = std::min(k, lowest_bit_exponent(v[i]));
  return k == std::numeric_limits<int>::max() ? 1.0 : std::ldexp(1.0, k);
}

struct IntTensor {
  std::string name;
  QuantParams q;
  std::vector<int64_t> shape;  // without the batch
};

struct Pending {
  Op op;
  std::vector<int64_t> shape;
  std::string what;            // for messages: "conv layer1.0.conv1"
  // conv/linear: real output[o] = acc_scale[o] * sum (x - zx)(w - zw) + bias_real[o]
  std::vector<double> acc_scale;
  std::vector<double> bias_real;
  bool has_bias = false;
  // add, concat, pools: the inputs' quantization
  std::vector<QuantParams> ins;
  int64_t count = 1;           // pools: elements summed per output
  std::vector<int64_t> counts; // adaptive pools: elements summed per output position
  double lo = -kInf, hi = kInf;  // ReLU / ReLU6 / clamp folded before the quantizer
  bool flatten_after = false;  // mean(dim=[2,3]) without keepdim
};

std::vector<double> tensor_values(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kDouble).contiguous().reshape({-1});
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

std::vector<double> float32_values(const at::Tensor& t) {
  return tensor_values(t.detach().to(at::kFloat));
}

class Exporter {
 public:
  Exporter(const torch::jit::Module& quantized, const ExportOptions& options)
      : options_(options) {
    torch::jit::Module m = quantized.clone();
    m.eval();
    if (m.hasattr("anybit_points"))
      for (const auto& kv : m.attr("anybit_points").toGenericDict())
        param_point_[kv.key().toStringRef()] = kv.value().toStringRef();
    if (param_point_.empty())
      throw Error("the model has no anybit quantizers: quantize it first (anybit quantize)");
    g_ = analyze_module(m);
    specialize_fixed_ifs(g_, /*include_training=*/true);
    self_ = g_.graph->inputs().at(0);
    // A saved quantized model's graph has lost its module scopes (re-analyzed, its ops would be
    // named `conv:out`, `bn:out`): values are named by the quantizer that reads them, whose
    // parameters carry the point name the user knows (`features.3:out`).
    for (jit::Node* n : g_.graph->nodes()) {
      if (!is_quantizer(n)) continue;
      const std::string point = quantizer_point(n);
      if (!point.empty() && !value_point_.count(n->input(0))) value_point_[n->input(0)] = point;
    }
  }

  ExportResult run() {
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

 private:
  // ---- reading values --------------------------------------------------------------

  c10::IValue eval(jit::Value* v) {
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

  std::vector<int64_t> eval_ints(jit::Value* v, size_t expand_to = 2) {
    c10::IValue iv = eval(v);
    std::vector<int64_t> out;
    if (iv.isInt()) out.assign(expand_to, iv.toInt());
    else if (iv.isIntList()) out = iv.toIntVector();
    else throw Error(where(v->node()) + ": expected integers");
    if (out.size() == 1 && expand_to > 1) out.assign(expand_to, out[0]);
    return out;
  }

  std::string where(jit::Node* n) {
    for (jit::Value* o : n->outputs()) {
      auto it = value_point_.find(o);
      if (it != value_point_.end()) return it->second;
    }
    std::ostringstream s;
    s << n->kind().toQualString();
    return s.str();
  }

  // ---- quantizers ------------------------------------------------------------------

  static bool is_quantizer(jit::Node* n) { return qnode::is_quantizer(n); }

  // the point a quantizer node belongs to, from its parameters' attribute names ("" if none)
  std::string quantizer_point(jit::Node* n) const {
    for (size_t i = 1; i < n->inputs().size(); ++i) {
      jit::Value* in = n->input(i);
      if (in->node()->kind() != c10::prim::GetAttr) continue;
      auto it = param_point_.find(in->node()->s(c10::attr::name));
      if (it != param_point_.end()) return it->second;
    }
    return "";
  }

  std::string point_of(jit::Node* n) {
    const std::string p = quantizer_point(n);
    if (!p.empty()) return p;
    auto it = value_point_.find(n->input(0));
    return it != value_point_.end() ? it->second : std::string(n->kind().toQualString());
  }

  Quantizer read_quantizer(jit::Node* n) {
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

  // An activation quantizer as tensor parameters (one scale, one zero point).
  QuantParams activation_params(const Quantizer& fq) {
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

  // ---- names -------------------------------------------------------------------------

  std::string unique_op_name(std::string base) {
    std::string name = base;
    for (int i = 2; op_names_.count(name); ++i) name = base + "#" + std::to_string(i);
    op_names_.insert(name);
    return name;
  }
  std::string unique_tensor_name(std::string base) {
    std::string name = base;
    for (int i = 2; tensor_names_.count(name); ++i) name = base + "#" + std::to_string(i);
    tensor_names_.insert(name);
    return name;
  }
  std::string op_name(jit::Node* n, const std::string& fallback) {
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

  // ---- graph walk --------------------------------------------------------------------

  const IntTensor& need_int(jit::Value* v, jit::Node* user) {
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

  static bool carries_tensor(const c10::TypePtr& t) {
    if (t->kind() == c10::TypeKind::TensorType) return true;
    for (const c10::TypePtr& c : t->containedTypes())
      if (carries_tensor(c)) return true;
    return false;
  }

  bool tracked(jit::Value* v) const { return ints_.count(v) || pending_.count(v) || raw_inputs_.count(v); }

  void visit(jit::Node* n) {
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

  void alias(jit::Value* to, jit::Value* from) {
    if (ints_.count(from)) ints_[to] = ints_[from];
    else if (pending_.count(from)) pending_[to] = pending_[from];
    else if (raw_inputs_.count(from)) raw_inputs_.insert(to);
  }

  void on_quantizer(jit::Node* n) {
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

  std::vector<int64_t> input_shape() {
    if (!options_.input_shape.empty()) return options_.input_shape;
    if (g_.module.hasattr("anybit_input_shape")) return g_.module.attr("anybit_input_shape").toIntVector();
    throw Error("the model does not record its input shape (it was quantized without data): pass it, e.g. --input-shape 1,28,28");
  }

  // Quantized weight of a conv/linear: integers, scales, zero points, read off its quantizer.
  void read_weight(jit::Node* user, jit::Value* wv, Op* op, std::vector<double>* w_scale) {
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

  void start_layer(jit::Node* n, jit::Value* xv, jit::Value* wv, jit::Value* bv, Pending* p) {
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

  void on_conv(jit::Node* n, bool underscore) {
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

  void on_linear(jit::Node* n) {
    Pending p;
    p.op.kind = OpKind::kLinear;
    start_layer(n, n->input(0), n->input(1), n->input(2), &p);
    p.shape = {p.op.out_channels};
    pending_[n->output()] = p;
  }

  void on_batch_norm(jit::Node* n) {
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

  void on_clamp(jit::Node* n, double lo, double hi) {
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

  void on_add(jit::Node* n) {
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

  void on_maxpool(jit::Node* n) {
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

  Pending pool(jit::Node* n, OpKind kind, const IntTensor& t) {
    Pending p;
    p.op.kind = kind;
    p.op.name = unique_op_name(op_name(n, kind == OpKind::kAvgPool2d ? "avgpool2d" : "avgpool"));
    p.what = "pooling " + p.op.name;
    p.op.inputs = {t.name};
    p.ins = {t.q};
    return p;
  }

  void on_avgpool(jit::Node* n) {
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

  void global_pool(jit::Node* n, const IntTensor& t, bool flatten_after) {
    Pending p = pool(n, OpKind::kGlobalAvgPool, t);
    if (t.shape.size() != 3) throw Error(p.what + ": input shape " + shape_str(t.shape) + " is not [C, H, W]");
    p.count = t.shape[1] * t.shape[2];
    p.shape = {t.shape[0], 1, 1};
    p.flatten_after = flatten_after;
    pending_[n->output()] = p;
  }

  // Any output size: 1x1 is the global pool, the input's own size the identity, and every
  // other size an adaptive_avgpool2d, whose windows (PyTorch's, overlapping where the sizes
  // do not divide) differ in size: each output position gets the multiplier of its count.
  void on_adaptive_avgpool(jit::Node* n) {
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

  void on_mean(jit::Node* n) {
    const IntTensor& t = need_int(n->input(0), n);
    std::vector<int64_t> dims = eval_ints(n->input(1), 1);
    for (auto& d : dims) d = d < 0 ? d + 4 : d;
    std::sort(dims.begin(), dims.end());
    if (dims != std::vector<int64_t>{2, 3}) throw Error(where(n) + ": mean over other dims than H, W has no integer export");
    global_pool(n, t, !eval(n->input(2)).toBool());
  }

  void on_flatten(jit::Node* n) {
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

  void on_cat(jit::Node* n) {
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

  // Closes a pending op with its output quantization.
  IntTensor finalize(Pending p, QuantParams q, const std::string& tensor_name) {
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

  void add_output(jit::Value* v) {
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

  ExportOptions options_;
  ModelGraph g_;
  jit::Value* self_ = nullptr;
  std::map<std::string, std::string> param_point_;  // first quantizer parameter -> point
  std::map<jit::Value*, std::string> value_point_;  // activation value -> point
  std::set<jit::Value*> raw_inputs_;
  std::map<jit::Value*, IntTensor> ints_;
  std::map<jit::Value*, Pending> pending_;
  std::set<std::string> op_names_, tensor_names_;
  ExportResult result_;
};

// ---- the LibTorch twin of the integer engine -------------------------------------------

at::Tensor pow2(const at::Tensor& e) { return at::exp2(e.to(at::kDouble)).to(at::kLong); }

// multiply_by_dyadic on int64 tensors whose values lie in int32; m0/shift broadcast:
// round_half_even(x * m0 / 2^(31 + shift)), saturated to int32 (requantize.h), written as
// floor division and a remainder test.
at::Tensor mul_dyadic(const at::Tensor& x, const at::Tensor& m0, const at::Tensor& shift) {
  const at::Tensor p = x * m0;
  const at::Tensor d = pow2(shift + 31);
  const at::Tensor q = at::div(p, d, "floor");
  const at::Tensor twice_rem = (p - q * d) * 2;
  const at::Tensor up = (twice_rem > d).logical_or((twice_rem == d).logical_and(at::bitwise_and(q, 1) == 1));
  return (q + up.to(at::kLong)).clamp(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
}

// Multipliers as tensors shaped to broadcast over [N, C, ...] (channel axis 1).
std::pair<at::Tensor, at::Tensor> multiplier_tensors(const std::vector<DyadicMultiplier>& ms, int64_t dims) {
  std::vector<int64_t> m0, sh;
  for (const auto& m : ms) {
    m0.push_back(m.m0);
    sh.push_back(m.shift);
  }
  std::vector<int64_t> shape(std::max<int64_t>(dims, 2), 1);
  shape[1] = static_cast<int64_t>(ms.size());
  if (ms.size() == 1) shape.assign(1, 1);
  return {at::tensor(m0, at::kLong).reshape(shape), at::tensor(sh, at::kLong).reshape(shape)};
}

at::Tensor requant(const at::Tensor& acc, const std::vector<DyadicMultiplier>& ms, const QuantParams& q) {
  auto [m0, sh] = multiplier_tensors(ms, acc.dim());
  const at::Tensor a = acc.clamp(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
  return (mul_dyadic(a, m0, sh) + q.zero_point).clamp(q.qmin, q.qmax);
}

at::Tensor int_array(const IntArray& a) {
  return at::tensor(std::vector<int64_t>(a.data.begin(), a.data.end()), at::kLong).reshape(a.shape);
}

at::Tensor per_channel(const std::vector<int32_t>& v, int64_t dims) {
  std::vector<int64_t> shape(dims, 1);
  shape[0] = static_cast<int64_t>(v.size());
  return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).reshape(v.size() == 1 ? std::vector<int64_t>{1} : shape);
}

}  // namespace

intsim::Tensor to_engine_tensor(const at::Tensor& q) {
  const at::Tensor c = q.to(at::kInt).contiguous();
  intsim::Tensor t;
  t.shape = c.sizes().vec();
  t.data.assign(c.data_ptr<int32_t>(), c.data_ptr<int32_t>() + c.numel());
  return t;
}

ExportResult export_integer_model(const torch::jit::Module& quantized, const ExportOptions& options) {
  return Exporter(quantized, options).run();
}

at::Tensor quantize_input(const at::Tensor& x, const QuantParams& q) {
  const float inv = 1.0f / static_cast<float>(q.scale);
  return (x.to(at::kFloat) * inv).round().to(at::kLong).add(q.zero_point).clamp(q.qmin, q.qmax);
}

std::vector<at::Tensor> run_integer_reference(const intsim::Model& model, const std::vector<at::Tensor>& inputs) {
  torch::NoGradGuard no_grad;
  if (inputs.size() != model.inputs.size())
    throw Error("run_integer_reference: " + std::to_string(inputs.size()) + " inputs for a model with " +
                std::to_string(model.inputs.size()));
  std::map<std::string, std::pair<at::Tensor, QuantParams>> t;
  for (size_t i = 0; i < inputs.size(); ++i) t[model.inputs[i].name] = {inputs[i].to(at::kLong), model.inputs[i].q};
  const double kLimit = 2147483647.0;
  for (const Op& op : model.ops) {
    const auto& [x, xq] = t.at(op.inputs.at(0));
    at::Tensor y;
    switch (op.kind) {
      case OpKind::kConv2d:
      case OpKind::kLinear: {
        const at::Tensor xd = (x - xq.zero_point).to(at::kDouble);
        const at::Tensor w = (int_array(op.weight) - per_channel(op.weight_zero_point, static_cast<int64_t>(op.weight.shape.size()))).to(at::kDouble);
        at::Tensor acc = op.kind == OpKind::kConv2d
                             ? at::conv2d(xd, w, {}, {op.stride[0], op.stride[1]}, {op.padding[0], op.padding[1]},
                                          {op.dilation[0], op.dilation[1]}, op.groups)
                             : at::linear(xd, w);
        if (!op.bias.empty()) {
          std::vector<int64_t> shape(acc.dim(), 1);
          shape[1] = op.out_channels;
          acc = acc + int_array(op.bias).to(at::kDouble).reshape(shape);
        }
        if (acc.numel() && acc.abs().max().item<double>() > kLimit)
          throw Error(op.name + ": the accumulator leaves int32 (the reference models no overflow)");
        y = requant(acc.to(at::kLong), op.multiplier, op.out);
        break;
      }
      case OpKind::kAdd: {
        const auto& [b, bq] = t.at(op.inputs.at(1));
        auto [ma0, mash] = multiplier_tensors({op.input_multipliers[0]}, 1);
        auto [mb0, mbsh] = multiplier_tensors({op.input_multipliers[1]}, 1);
        const int64_t up = int64_t{1} << op.left_shift;
        const auto sat = [](const at::Tensor& v) { return v.clamp(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()); };
        const at::Tensor a2 = mul_dyadic(sat((x - xq.zero_point) * up), ma0, mash);
        const at::Tensor b2 = mul_dyadic(sat((b - bq.zero_point) * up), mb0, mbsh);
        y = requant(sat(a2 + b2), op.multiplier, op.out);
        break;
      }
      case OpKind::kRelu:
        y = x.clamp_min(xq.zero_point);
        break;
      case OpKind::kClamp:
        y = x.clamp(op.out.qmin, op.out.qmax);
        break;
      case OpKind::kMaxPool2d:
        y = at::max_pool2d(x.to(at::kDouble), {op.kernel[0], op.kernel[1]}, {op.stride[0], op.stride[1]},
                           {op.padding[0], op.padding[1]}, {op.dilation[0], op.dilation[1]}, op.ceil_mode)
                .to(at::kLong);
        break;
      case OpKind::kAvgPool2d: {
        const at::Tensor s = at::avg_pool2d((x - xq.zero_point).to(at::kDouble), {op.kernel[0], op.kernel[1]},
                                            {op.stride[0], op.stride[1]}, {op.padding[0], op.padding[1]}, false, true, 1);
        y = requant(s.round().to(at::kLong), op.multiplier, op.out);
        break;
      }
      case OpKind::kGlobalAvgPool:
        y = requant((x - xq.zero_point).sum({2, 3}, /*keepdim=*/true), op.multiplier, op.out);
        break;
      case OpKind::kAdaptiveAvgPool2d: {
        // The windows are ATen's own: its average times each window's count is the sum
        // (exact after rounding: sums of integers far below 2^53).
        const int64_t oh = op.output_size[0], ow = op.output_size[1], ih = x.size(2), iw = x.size(3);
        const std::vector<int64_t> counts = intsim::adaptive_window_counts(ih, iw, oh, ow);
        const at::Tensor mean = at::adaptive_avg_pool2d((x - xq.zero_point).to(at::kDouble), {oh, ow});
        const at::Tensor sum = (mean * at::tensor(counts, at::kDouble).reshape({1, 1, oh, ow})).round().to(at::kLong);
        // one multiplier per output position: broadcast over [N, C, oh, ow]
        std::vector<int64_t> m0, sh;
        for (const auto& m : op.multiplier) m0.push_back(m.m0), sh.push_back(m.shift);
        const std::vector<int64_t> mshape = op.multiplier.size() == 1 ? std::vector<int64_t>{1} : std::vector<int64_t>{1, 1, oh, ow};
        const at::Tensor a = sum.clamp(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
        y = (mul_dyadic(a, at::tensor(m0, at::kLong).reshape(mshape), at::tensor(sh, at::kLong).reshape(mshape)) + op.out.zero_point)
                .clamp(op.out.qmin, op.out.qmax);
        break;
      }
      case OpKind::kFlatten:
        y = x.reshape({x.size(0), -1});
        break;
      case OpKind::kConcat: {
        std::vector<at::Tensor> parts;
        for (size_t i = 0; i < op.inputs.size(); ++i) {
          const auto& [v, vq] = t.at(op.inputs[i]);
          parts.push_back(requant(v - vq.zero_point, {op.input_multipliers[i]}, op.out));
        }
        y = at::cat(parts, op.axis);
        break;
      }
    }
    QuantParams yq = op.out;
    if (op.kind == OpKind::kRelu) yq = xq, yq.qmin = std::max(xq.qmin, xq.zero_point);
    if (op.kind == OpKind::kMaxPool2d || op.kind == OpKind::kFlatten) yq = xq;
    t[op.output] = {y, yq};
  }
  std::vector<at::Tensor> out;
  for (const auto& o : model.outputs) out.push_back(t.at(o.name).first.to(at::kInt));
  return out;
}

namespace {

// Every quantized tensor of the engine (the model input and each op output that a quantizer
// of the reference produced) against the reference's value on the same batch: `tensors`
// holds the engine's values of the batch x (the evaluation keeps them for its first batch).
std::vector<LayerAgreement> compare_layers(const intsim::Model& model,
                                           const std::map<std::string, intsim::Tensor>& tensors,
                                           torch::jit::Module& reference, const at::Tensor& x) {
  std::map<std::string, QuantParams> params;
  for (const auto& i : model.inputs) params[i.name] = i.q;
  for (const auto& op : model.ops)
    if (op.kind != OpKind::kRelu && op.kind != OpKind::kMaxPool2d && op.kind != OpKind::kFlatten)
      params[op.output] = op.out;
  std::map<std::string, LayerAgreement> found;
  for (const QuantizerOutput& p : probe_quantizers(reference, x)) {
    auto t = tensors.find(p.point);
    auto q = params.find(p.point);
    if (t == tensors.end() || q == params.end() || found.count(p.point)) continue;
    const at::Tensor e = at::tensor(t->second.data, at::kInt).to(at::kLong);
    const at::Tensor f = quantize_input(p.value, q->second).reshape({-1});
    if (f.numel() != e.numel()) continue;
    const at::Tensor d = (f - e).abs();
    LayerAgreement a;
    a.point = p.point;
    a.equal = 100.0 * d.eq(0).to(at::kDouble).mean().item<double>();
    a.one_step = 100.0 * d.eq(1).to(at::kDouble).mean().item<double>();
    a.max_steps = d.max().item<int64_t>();
    found[p.point] = a;
  }
  std::vector<LayerAgreement> out;
  for (const auto& i : model.inputs)
    if (found.count(i.name)) out.push_back(found[i.name]);
  for (const auto& op : model.ops)
    if (found.count(op.output)) out.push_back(found[op.output]), found.erase(op.output);
  return out;
}

}  // namespace

void require_mac_calibration_data(const intsim::MacModel& mac, const DataSource* calib) {
  if (mac.needs_calibration() && !calib)
    throw Error("MAC model '" + mac.describe() + "' needs calibration data: give --calib-data SPEC (Python: calib_data=)");
}

IntegerEvalResult evaluate_integer(const intsim::Model& model, const DataSource& data,
                                   const IntegerEvalOptions& options, torch::jit::Module* reference) {
  if (model.inputs.size() != 1 || model.outputs.size() != 1)
    throw Error("integer evaluation needs a model with one input and one output");
  intsim::Engine engine(model, options.engine);
  const QuantParams& in_q = engine.model().inputs[0].q;
  const QuantParams& out_q = engine.model().outputs[0].q;
  if (options.engine.mac && options.engine.mac->needs_calibration()) {
    require_mac_calibration_data(*options.engine.mac, options.calib_data);
    auto [cx, cy] = options.calib_data->batch(0, std::min(options.calib_samples, options.calib_data->size()));
    if (cx.size(0) == 0) throw Error(options.calib_data->describe() + ": no calibration samples");
    try {
      engine.calibrate({to_engine_tensor(quantize_input(cx, in_q).to(at::kInt).contiguous())});
    } catch (const Error& e) {
      throw Error(options.calib_data->describe() + ": " + e.what());
    }
  }
  std::unique_ptr<torch::jit::Module> ref;
  if (reference) {
    ref = std::make_unique<torch::jit::Module>(reference->clone());
    ref->eval();
  }
  IntegerEvalResult r;
  int64_t correct1 = 0, correct5 = 0, agree = 0, n_equal = 0, n_one = 0, n_more = 0, n_values = 0;
  double seconds = 0;
  torch::NoGradGuard no_grad;
  data::ProgressBar bar("intsim", data.size(), options.progress);
  for (int64_t b = 0; b < data.size(); b += options.batch_size) {
    auto [x, y] = data.batch(b, options.batch_size);
    const auto t0 = std::chrono::steady_clock::now();
    at::Tensor qx = quantize_input(x, in_q).to(at::kInt).contiguous();
    std::vector<intsim::Tensor> out;
    std::map<std::string, intsim::Tensor> tensors;  // kept for the first batch's per-layer comparison
    try {
      out = engine.run({to_engine_tensor(qx)}, ref && b == 0 ? &tensors : nullptr);
    } catch (const Error& e) {
      throw Error(data.describe() + ": " + e.what());
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    at::Tensor q = at::tensor(out[0].data, at::kInt).reshape(out[0].shape).to(at::kLong).reshape({x.size(0), -1});
    at::Tensor logits = (q - out_q.zero_point).to(at::kDouble);  // monotone in the real value
    const at::Tensor pred = logits.argmax(1);
    correct1 += pred.eq(y).sum().item<int64_t>();
    const int64_t k = std::min<int64_t>(5, logits.size(1));
    correct5 += std::get<1>(logits.topk(k, 1)).eq(y.unsqueeze(1)).any(1).sum().item<int64_t>();
    if (ref) {
      at::Tensor f = ref->forward({x}).toTensor().reshape({x.size(0), -1});
      agree += f.argmax(1).eq(pred).sum().item<int64_t>();
      const at::Tensor fq = quantize_input(f, out_q);
      const at::Tensor d = (fq - q).abs();
      n_equal += d.eq(0).sum().item<int64_t>();
      n_one += d.eq(1).sum().item<int64_t>();
      n_more += d.gt(1).sum().item<int64_t>();
      n_values += d.numel();
      r.max_steps = std::max(r.max_steps, d.max().item<int64_t>());
    }
    if (ref && b == 0) r.layer_agreement = compare_layers(model, tensors, *ref, x);
    r.samples += x.size(0);
    bar.update(r.samples);
  }
  bar.finish();
  if (r.samples == 0) throw Error(data.describe() + ": no samples");
  r.top1 = 100.0 * correct1 / r.samples;
  r.top5 = 100.0 * correct5 / r.samples;
  r.seconds = seconds;
  if (ref) {
    r.agreement = 100.0 * agree / r.samples;
    r.equal = 100.0 * n_equal / n_values;
    r.one_step = 100.0 * n_one / n_values;
    r.more = 100.0 * n_more / n_values;
  }
  r.layers = engine.stats();
  return r;
}

void save_integer_model_atomic(const intsim::Model& m, const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path target = fs::path(dir).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/": the temporary is "out.tmpPID"
  if (target.empty()) throw Error("export: '" + dir + "' names no directory");
  std::error_code ec;
  if (fs::exists(target) && !fs::is_directory(target))
    throw Error(dir + ": exists and is not a directory; not overwriting it");
  if (fs::exists(target) && !fs::is_empty(target) && !fs::exists(target / "manifest.json"))
    throw Error(dir + ": exists and is not an anybit integer export; not overwriting it");
  const fs::path tmp = target.string() + ".tmp" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  try {
    intsim::save_model(m, tmp.string());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(target, ec);
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    throw Error(dir + ": cannot write (" + ec.message() + ")");
  }
}


}  // namespace anybit
