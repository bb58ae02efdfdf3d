// Lowers a frozen TorchScript graph onto oneDNN primitives with fused post-ops; see
// fused_eval.h. Two stages: compile() turns the graph into Steps (a layer plus the
// element-wise ops fused after it, shapes unknown); a Plan instantiates the Steps as
// oneDNN primitives and buffers for one input shape, cached per shape.
#include "anybit/core/fused_eval.h"

#include <ATen/Parallel.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <unordered_map>

#include "anybit/quant/fake_quant.h"
#include "anybit/quant/spec.h"

namespace anybit {
namespace {
namespace jit = torch::jit;
using dnnl::memory;
using Tag = memory::format_tag;
using Dims = memory::dims;

// One element-wise op of a fused chain, in oneDNN's terms.
struct PostOp {
  enum Kind { kLinear, kClip, kRound, kRelu, kMulChannel, kAddChannel, kMaxChannel, kMinChannel, kAddTensor };
  PostOp(Kind k, float a_ = 0, float b_ = 0) : kind(k), a(a_), b(b_) {}
  Kind kind;
  float a = 0, b = 0;      // kLinear: a * x + b; kClip: [a, b]
  std::vector<float> chan;  // per-channel operand (channel = dim 1)
  int value = -1;           // kAddTensor: the value added
};

struct Step {
  enum Kind { kConv, kLinear, kPool, kEltwise, kAdd, kFlatten };
  explicit Step(Kind k) : kind(k) {}
  Kind kind;
  int in = -1, in2 = -1, out = -1;
  at::Tensor weight, bias;  // float32, contiguous
  std::vector<int64_t> stride, padding, dilation, kernel;
  int64_t groups = 1;
  bool max_pool = false, global_pool = false, count_include_pad = true;
  std::vector<PostOp> post;
  // conv weights on an integer grid: weight = qweight * wstep[out channel], |qweight| <= 127
  at::Tensor qweight;  // int8, the weight's shape; undefined when the weight is not on one
  std::vector<float> wstep;
};

// Whether every weight of each output channel is k * s_c with an integer |k| <= 127, as a
// fake-quantized weight of at most 8 bits is (a float weight is not): then s_c and k.
// s_c is recovered from the smallest nonzero |w| of the channel, w_min = m * s_c, trying
// m = 1..32; k = round(w / s_c) must then be integral for every weight to 1e-3.
bool integer_grid(const at::Tensor& w, at::Tensor* k_out, std::vector<float>* steps) {
  const int64_t channels = w.size(0), per = w.numel() / channels;
  const float* pw = w.data_ptr<float>();
  at::Tensor k = at::empty(w.sizes(), at::kChar);
  int8_t* pk = k.data_ptr<int8_t>();
  steps->assign(channels, 1.0f);
  for (int64_t c = 0; c < channels; ++c) {
    const float* v = pw + c * per;
    float vmin = std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < per; ++i)
      if (v[i] != 0.0f) vmin = std::min(vmin, std::fabs(v[i]));
    if (!std::isfinite(vmin)) {  // an all-zero channel
      std::fill(pk + c * per, pk + (c + 1) * per, 0);
      continue;
    }
    bool found = false;
    for (int m = 1; m <= 32 && !found; ++m) {
      const double step = static_cast<double>(vmin) / m;
      found = true;
      for (int64_t i = 0; i < per && found; ++i) {
        const double r = v[i] / step, q = std::nearbyint(r);
        found = std::fabs(r - q) <= 1e-3 && std::fabs(q) <= 127;
        pk[c * per + i] = static_cast<int8_t>(q);
      }
      if (found) (*steps)[c] = static_cast<float>(step);
    }
    if (!found) return false;
  }
  *k_out = k;
  return true;
}

// The fake-quantizer x^ = round(clamp(x * inv, lo, hi)) * s (fake_quant.h) as post-ops:
// the same float operations in the same order, so the result is the kernel's bit for bit.
void append_fake_quant(std::vector<PostOp>& post, const std::vector<AffineGrid>& g) {
  if (g.size() == 1) {
    post.push_back({PostOp::kLinear, g[0].inv, 0.0f});
    post.push_back({PostOp::kClip, g[0].lo, g[0].hi});
    post.push_back({PostOp::kRound});
    post.push_back({PostOp::kLinear, g[0].scale, 0.0f});
    return;
  }
  PostOp inv{PostOp::kMulChannel}, lo{PostOp::kMaxChannel}, hi{PostOp::kMinChannel}, sc{PostOp::kMulChannel};
  for (const AffineGrid& c : g) {
    inv.chan.push_back(c.inv);
    lo.chan.push_back(c.lo);
    hi.chan.push_back(c.hi);
    sc.chan.push_back(c.scale);
  }
  post.push_back(inv);
  post.push_back(lo);
  post.push_back(hi);
  post.push_back({PostOp::kRound});
  post.push_back(sc);
}

class Unsupported : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

bool is_tensor(const jit::Value* v) { return v->type()->kind() == c10::TypeKind::TensorType; }

// Ops whose uses of a tensor only read its metadata (shape checks that scripting inserts).
bool reads_metadata_only(const jit::Node* n) {
  const std::string k = n->kind().toQualString();
  return k == "aten::size" || k == "aten::dim" || k == "aten::len" || k == "aten::numel";
}

class Compiler {
 public:
  std::vector<Step> steps;
  int num_values = 0;
  int output = -1;
  int fused = 0;

  void run(const std::shared_ptr<jit::Graph>& graph) {
    if (graph->inputs().size() != 2 || !is_tensor(graph->inputs()[1]))
      throw Unsupported("forward must take one tensor");
    add_value(graph->inputs()[1], -1);
    for (jit::Node* n : graph->nodes()) lower(n);
    if (graph->outputs().size() != 1 || !is_tensor(graph->outputs()[0]))
      throw Unsupported("forward must return one tensor");
    output = id(graph->outputs()[0]);
  }

 private:
  std::unordered_map<const jit::Value*, int> ids_;
  std::vector<int> producer_;  // value -> step writing it (-1: the input)
  std::vector<int> uses_;      // value -> graph uses that read its data

  static int data_uses(const jit::Value* v) {
    int n = 0;
    for (const jit::Use& u : v->uses())
      if (!reads_metadata_only(u.user)) ++n;
    return n;
  }
  int add_value(const jit::Value* v, int step) {
    ids_[v] = num_values;
    producer_.push_back(step);
    uses_.push_back(data_uses(v));
    return num_values++;
  }
  int id(const jit::Value* v) const {
    auto it = ids_.find(v);
    if (it == ids_.end()) throw Unsupported("a tensor (%" + v->debugName() + ") is not computed by a lowered op");
    return it->second;
  }
  // An op output that is another name for its input (dropout in eval, contiguous).
  void alias(const jit::Value* out, const jit::Value* in) {
    const int i = id(in);
    ids_[out] = i;
    uses_[i] += data_uses(out) - 1;
  }

  static c10::IValue constant(const jit::Node* n, size_t i) {
    auto v = jit::toIValue(n->input(i));
    if (!v) throw Unsupported(std::string(n->kind().toQualString()) + ": argument " + std::to_string(i) +
                              " is computed at run time");
    return *v;
  }
  static at::Tensor constant_tensor(const jit::Node* n, size_t i) {
    c10::IValue v = constant(n, i);
    if (v.isNone()) return {};
    if (!v.isTensor()) throw Unsupported(std::string(n->kind().toQualString()) + ": argument " + std::to_string(i) + " is not a tensor");
    return v.toTensor().detach().to(at::kFloat).contiguous();
  }
  static std::vector<int64_t> constant_ints(const jit::Node* n, size_t i) {
    c10::IValue v = constant(n, i);
    if (v.isInt()) return {v.toInt(), v.toInt()};
    return v.toIntVector();
  }
  static double constant_double(const jit::Node* n, size_t i) {
    c10::IValue v = constant(n, i);
    if (v.isTensor()) return v.toTensor().item<double>();
    return v.isInt() ? static_cast<double>(v.toInt()) : v.toDouble();
  }

  int new_step(Step s, const jit::Value* out) {
    steps.push_back(std::move(s));
    const int idx = static_cast<int>(steps.size()) - 1;
    steps[idx].out = add_value(out, idx);
    return idx;
  }
  // Whether the next element-wise op on value v can run as a post-op of v's producer: v
  // is the producer's current output and nothing else reads it.
  int open_step(int v) const {
    const int s = producer_[v];
    if (s < 0 || steps[s].out != v || uses_[v] != 1 || steps[s].kind == Step::kFlatten) return -1;
    return s;
  }
  void elementwise(const jit::Node* n, std::vector<PostOp> post) {
    const int v = id(n->input(0));
    const int s = open_step(v);
    if (s >= 0) {
      for (PostOp& p : post) steps[s].post.push_back(std::move(p));
      steps[s].out = add_value(n->output(), s);
      ++fused;
      return;
    }
    Step e{Step::kEltwise};
    e.in = v;
    e.post = std::move(post);
    new_step(std::move(e), n->output());
  }
  void add(const jit::Node* n) {
    if (n->inputs().size() > 2 && constant_double(n, 2) != 1.0) throw Unsupported("aten::add with alpha != 1");
    if (!is_tensor(n->input(1))) {
      elementwise(n, {{PostOp::kLinear, 1.0f, static_cast<float>(constant_double(n, 1))}});
      return;
    }
    const int a = id(n->input(0)), b = id(n->input(1));
    // fuse into the producer of one operand when the other one is ready before it runs
    for (auto [x, other] : {std::pair<int, int>{a, b}, std::pair<int, int>{b, a}}) {
      const int s = open_step(x);
      if (s >= 0 && producer_[other] < s && x != other) {
        PostOp p{PostOp::kAddTensor};
        p.value = other;
        steps[s].post.push_back(p);
        steps[s].out = add_value(n->output(), s);
        ++fused;
        return;
      }
    }
    Step e{Step::kAdd};
    e.in = a;
    e.in2 = b;
    new_step(std::move(e), n->output());
  }

  void lower(jit::Node* n) {
    const std::string k = n->kind().toQualString();
    bool tensor_out = false;
    for (const jit::Value* o : n->outputs()) tensor_out |= is_tensor(o);
    if (!tensor_out) {
      // shape checks, constants, raising on bad input: nothing to compute, unless a block
      // computes tensors (control flow on data is not lowered)
      for (const jit::Block* b : n->blocks())
        for (const jit::Node* m : b->nodes())
          for (const jit::Value* o : m->outputs())
            if (is_tensor(o)) throw Unsupported(k + " computes tensors in a block");
      if (n->kind() == c10::prim::If && n->outputs().size() > 0) throw Unsupported("prim::If with outputs");
      return;
    }
    if (n->kind() == c10::prim::Constant) return;
    if (k.back() == '_' && k != "aten::relu_" && k != "aten::add_" && k != "aten::hardtanh_" && k != "aten::clamp_")
      throw Unsupported("op " + k + " is not lowered");
    if (k.back() == '_' && uses_[id(n->input(0))] != 1)
      throw Unsupported(k + " writes a tensor that is read again");

    if (k == "aten::conv2d" || k == "aten::_convolution") {
      Step s{Step::kConv};
      s.in = id(n->input(0));
      s.weight = constant_tensor(n, 1);
      s.bias = constant_tensor(n, 2);
      s.stride = constant_ints(n, 3);
      s.dilation = constant_ints(n, 5);
      if (k == "aten::conv2d") {
        c10::IValue pad = constant(n, 4);
        if (pad.isString()) throw Unsupported("conv2d with padding='" + pad.toStringRef() + "'");
        s.padding = constant_ints(n, 4);
        s.groups = constant(n, 6).toInt();
      } else {
        s.padding = constant_ints(n, 4);
        if (constant(n, 6).toBool()) throw Unsupported("transposed convolution");
        s.groups = constant(n, 8).toInt();
      }
      if (!s.weight.defined() || s.weight.dim() != 4) throw Unsupported(k + " with a weight that is not 4-D");
      new_step(std::move(s), n->output());
    } else if (k == "aten::linear") {
      Step s{Step::kLinear};
      s.in = id(n->input(0));
      s.weight = constant_tensor(n, 1);
      s.bias = constant_tensor(n, 2);
      if (!s.weight.defined() || s.weight.dim() != 2) throw Unsupported("aten::linear with a weight that is not 2-D");
      new_step(std::move(s), n->output());
    } else if (k == "anybit::fake_quant_affine") {
      const at::Tensor scale = constant_tensor(n, 1), zp = constant_tensor(n, 2);
      const int64_t axis = constant(n, 3).toInt(), group = constant(n, 4).toInt();
      const int64_t qmin = constant(n, 5).toInt(), qmax = constant(n, 6).toInt();
      if (constant(n, 7).toInt() != 0) throw Unsupported("fake_quant_affine rounds other than half to even");
      if (group > 0) throw Unsupported("fake_quant_affine per group");
      if (scale.numel() > 1 && axis != 1) throw Unsupported("fake_quant_affine per channel along axis " + std::to_string(axis));
      std::vector<PostOp> post;
      append_fake_quant(post, affine_grid(scale, zp, scale.numel(), qmin, qmax));
      elementwise(n, std::move(post));
    } else if (k == "aten::fake_quantize_per_tensor_affine" || k == "aten::fake_quantize_per_channel_affine") {
      const bool per_channel = k == "aten::fake_quantize_per_channel_affine";
      c10::IValue s = constant(n, 1), z = constant(n, 2);
      const at::Tensor scale = s.isTensor() ? s.toTensor() : at::full({1}, s.toDouble());
      const at::Tensor zp = z.isTensor() ? z.toTensor() : at::full({1}, static_cast<double>(z.toInt()));
      const size_t lim = per_channel ? 4 : 3;
      if (per_channel && constant(n, 3).toInt() != 1) throw Unsupported(k + " along an axis other than 1");
      std::vector<PostOp> post;
      append_fake_quant(post, affine_grid(scale, zp, scale.numel(), constant(n, lim).toInt(), constant(n, lim + 1).toInt()));
      elementwise(n, std::move(post));
    } else if (k == "aten::batch_norm") {
      if (constant(n, 5).toBool()) throw Unsupported("aten::batch_norm in training mode");
      const at::Tensor w = constant_tensor(n, 1), b = constant_tensor(n, 2), mean = constant_tensor(n, 3),
                       var = constant_tensor(n, 4);
      if (!mean.defined() || !var.defined()) throw Unsupported("aten::batch_norm without running statistics");
      const float eps = static_cast<float>(constant_double(n, 7));
      // ATen's inference BatchNorm: alpha = w / sqrt(var + eps), beta = b - mean * alpha,
      // y = x * alpha + beta (batch_norm_cpu_collect_linear_and_constant_terms)
      PostOp mul{PostOp::kMulChannel}, plus{PostOp::kAddChannel};
      for (int64_t c = 0; c < mean.numel(); ++c) {
        const float invstd = 1 / std::sqrt(var.data_ptr<float>()[c] + eps);
        const float alpha = invstd * (w.defined() ? w.data_ptr<float>()[c] : 1.0f);
        mul.chan.push_back(alpha);
        plus.chan.push_back((b.defined() ? b.data_ptr<float>()[c] : 0.0f) - mean.data_ptr<float>()[c] * alpha);
      }
      elementwise(n, {mul, plus});
    } else if (k == "aten::relu" || k == "aten::relu_") {
      elementwise(n, {{PostOp::kRelu}});
    } else if (k == "aten::relu6") {
      elementwise(n, {{PostOp::kClip, 0.0f, 6.0f}});
    } else if (k == "aten::hardtanh" || k == "aten::hardtanh_" || k == "aten::clamp" || k == "aten::clamp_") {
      c10::IValue lo = constant(n, 1), hi = constant(n, 2);
      const float inf = std::numeric_limits<float>::infinity();
      elementwise(n, {{PostOp::kClip, lo.isNone() ? -inf : static_cast<float>(lo.toScalar().toDouble()),
                       hi.isNone() ? inf : static_cast<float>(hi.toScalar().toDouble())}});
    } else if (k == "aten::add" || k == "aten::add_") {
      add(n);
    } else if (k == "aten::dropout" || k == "aten::feature_dropout") {
      if (constant(n, 2).toBool()) throw Unsupported(k + " in training mode");
      alias(n->output(), n->input(0));
    } else if (k == "aten::contiguous" || k == "aten::detach") {
      alias(n->output(), n->input(0));
    } else if (k == "aten::adaptive_avg_pool2d") {
      Step s{Step::kPool};
      s.in = id(n->input(0));
      s.global_pool = true;
      s.kernel = constant_ints(n, 1);  // the output size; the plan needs it to divide the input
      new_step(std::move(s), n->output());
    } else if (k == "aten::max_pool2d" || k == "aten::avg_pool2d") {
      Step s{Step::kPool};
      s.in = id(n->input(0));
      s.max_pool = k == "aten::max_pool2d";
      s.kernel = constant_ints(n, 1);
      s.stride = constant_ints(n, 2);
      if (s.stride.empty()) s.stride = s.kernel;
      s.padding = constant_ints(n, 3);
      if (s.max_pool) {
        if (constant_ints(n, 4) != std::vector<int64_t>{1, 1}) throw Unsupported("dilated max_pool2d");
        if (constant(n, 5).toBool()) throw Unsupported("max_pool2d with ceil_mode");
      } else {
        if (constant(n, 4).toBool()) throw Unsupported("avg_pool2d with ceil_mode");
        s.count_include_pad = constant(n, 5).toBool();
        if (!constant(n, 6).isNone()) throw Unsupported("avg_pool2d with divisor_override");
      }
      new_step(std::move(s), n->output());
    } else if (k == "aten::flatten") {
      if (constant(n, 1).toInt() != 1 || constant(n, 2).toInt() != -1) throw Unsupported("flatten other than (1, -1)");
      Step s{Step::kFlatten};
      s.in = id(n->input(0));
      new_step(std::move(s), n->output());
    } else {
      throw Unsupported("op " + k + " is not lowered");
    }
  }
};

memory::desc activation_desc(const Dims& d) {
  return memory::desc(d, memory::data_type::f32, d.size() == 4 ? Tag::nhwc : Tag::nc);
}

Dims per_channel_dims(const Dims& d) {
  Dims c(d.size(), 1);
  c[1] = d[1];
  return c;
}

// The plain twin of the post-ops, for chains no primitive carries (an element-wise op
// on the input, an add of two finished values) and for primitives that refuse a post-op.
// Channel-last layouts (NHWC, NC) make the channel the fastest index.
void apply_post_ops(float* y, int64_t n, int64_t channels, const std::vector<PostOp>& post,
                    const std::vector<const float*>& added) {
  at::parallel_for(0, n / channels, std::max<int64_t>(1, 16384 / channels), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t i = r * channels + c;
        float v = y[i];
        size_t a = 0;
        for (const PostOp& p : post) {
          switch (p.kind) {
            case PostOp::kLinear: v = p.a * v + p.b; break;
            case PostOp::kClip: v = std::min(std::max(v, p.a), p.b); break;
            case PostOp::kRound: v = std::nearbyint(v); break;
            case PostOp::kRelu: v = v > 0 ? v : 0.0f; break;
            case PostOp::kMulChannel: v = v * p.chan[c]; break;
            case PostOp::kAddChannel: v = v + p.chan[c]; break;
            case PostOp::kMaxChannel: v = std::max(v, p.chan[c]); break;
            case PostOp::kMinChannel: v = std::min(v, p.chan[c]); break;
            case PostOp::kAddTensor: v = v + added[a++][i]; break;
          }
        }
        y[i] = v;
      }
  });
}

}  // namespace

struct FusedModel::Impl {
  std::vector<Step> steps;
  int num_values = 0, output = -1, fused = 0;
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};

  struct Exec {
    const Step* step = nullptr;
    dnnl::primitive prim;
    std::unordered_map<int, memory> args;  // besides src and dst
    bool posts_on_cpu = false;
    bool alias = false;  // a flatten that keeps the bytes: dst is src under another shape
    bool int8 = false;         // an int8 conv: reads the integer form of its input
    bool writes_int8 = false;  // an int8 conv writing the integer form of its output
    dnnl::reorder dequantize;  // integer form of the output -> its float form
    dnnl::reorder quantize;    // float form of the output -> its integer form
  };
  struct Plan {
    std::vector<Dims> dims;
    std::vector<memory> values;   // float form of each value
    std::vector<memory> qvalues;  // integer form k = x / s of a value an int8 conv reads
    std::vector<Exec> execs;
    bool input_reorder = false;
  };
  bool int8 = true;  // FusedModel::compile's int8 argument
  std::map<std::vector<int64_t>, std::unique_ptr<Plan>> plans;

  Plan& plan_for(const at::Tensor& x);
  void build(Plan& p, const Dims& input, bool use_int8);
  dnnl::primitive_attr attributes(const std::vector<PostOp>& post, const Plan& p, const Dims& out,
                                  std::unordered_map<int, memory>& args);
  memory owned(const memory::desc& d) { return memory(d, engine); }
  // The weights (plain layout `plain`, at `data`) in the layout a primitive chose.
  memory reordered_weights(const memory::desc& plain, void* data, const memory::desc& chosen) {
    memory src(plain, engine, data), w = owned(chosen);
    dnnl::stream st(engine);
    dnnl::reorder(src, w).execute(st, src, w);
    st.wait();
    return w;
  }
};

dnnl::primitive_attr FusedModel::Impl::attributes(const std::vector<PostOp>& post, const Plan& p,
                                                  const Dims& out, std::unordered_map<int, memory>& args) {
  // Every op with a parameter is a binary post-op with its own operand: oneDNN 2.6's conv
  // kernels share one constant per eltwise algorithm across a chain, so two
  // eltwise_linear (or eltwise_clip) post-ops of one chain would both use the first's
  // parameters. Eltwise post-ops are kept for round and relu, which have none.
  using A = dnnl::algorithm;
  dnnl::post_ops po;
  auto binary = [&](A alg, const std::vector<float>& values) {
    const bool scalar = values.size() == 1;
    if (!scalar && static_cast<int64_t>(values.size()) != out[1])
      throw Error("a per-channel op has " + std::to_string(values.size()) + " values for " +
                  std::to_string(out[1]) + " channels");
    const memory::desc d(scalar ? Dims(out.size(), 1) : per_channel_dims(out), memory::data_type::f32,
                         out.size() == 4 ? Tag::nchw : Tag::nc);
    memory m = owned(d);
    std::memcpy(m.get_data_handle(), values.data(), values.size() * sizeof(float));
    args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(po.len()) | DNNL_ARG_SRC_1] = m;
    po.append_binary(alg, d);
  };
  for (const PostOp& op : post) {
    switch (op.kind) {
      case PostOp::kLinear:
        if (op.a != 1.0f) binary(A::binary_mul, {op.a});
        if (op.b != 0.0f) binary(A::binary_add, {op.b});
        break;
      case PostOp::kClip:
        if (op.a > -std::numeric_limits<float>::infinity()) binary(A::binary_max, {op.a});
        if (op.b < std::numeric_limits<float>::infinity()) binary(A::binary_min, {op.b});
        break;
      case PostOp::kRound: po.append_eltwise(1.0f, A::eltwise_round, 0.0f, 0.0f); break;
      case PostOp::kRelu: po.append_eltwise(1.0f, A::eltwise_relu, 0.0f, 0.0f); break;
      case PostOp::kMulChannel: binary(A::binary_mul, op.chan); break;
      case PostOp::kAddChannel: binary(A::binary_add, op.chan); break;
      case PostOp::kMaxChannel: binary(A::binary_max, op.chan); break;
      case PostOp::kMinChannel: binary(A::binary_min, op.chan); break;
      case PostOp::kAddTensor:
        if (p.dims[op.value] != out) throw Error("an add of tensors of different shapes");
        args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(po.len()) | DNNL_ARG_SRC_1] = p.values[op.value];
        po.append_binary(A::binary_add, activation_desc(out));
        break;
    }
  }
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  return attr;
}

void FusedModel::Impl::build(Plan& p, const Dims& input, bool use_int8) {
  p.dims.assign(num_values, {});
  p.values.assign(num_values, memory());
  p.dims[0] = input;
  p.values[0] = owned(activation_desc(input));
  // NCHW and NHWC are the same bytes when C == 1 or H * W == 1: no reorder then
  p.input_reorder = input.size() == 4 && input[1] != 1 && input[2] * input[3] != 1;
  using A = dnnl::algorithm;
  using DT = memory::data_type;
  const auto inference = dnnl::prop_kind::forward_inference;

  // Integer layers. A value whose layer ends in a per-tensor fake-quantizer
  // (x * inv, clamp to [lo, hi], round, * s) is k * s with k an integer in [lo, hi]. A conv
  // reading such a value with at most 8 bits, whose weights lie on an integer grid, runs
  // as an int8 conv: s_x * s_w * sum(k_x * k_w), exact, where the float conv rounds. The
  // producing layer then writes k (its chain without the final * s), and a reorder makes
  // the float form k * s (the same float product the chain ends with) when anything else
  // reads the value too.
  std::vector<DT> qtype(num_values, DT::undef);
  std::vector<float> qscale(num_values, 0.0f);
  std::vector<bool> int8_conv(steps.size(), false), need_float(num_values, false);
  std::vector<const Step*> producer(num_values, nullptr);  // the step whose final output a value is
  for (const Step& s : steps) producer[s.out] = &s;
  for (size_t i = 0; i < steps.size() && use_int8; ++i) {
    const Step& s = steps[i];
    if (s.kind != Step::kConv || !s.qweight.defined() || s.groups != 1) continue;
    const Step* prod = producer[s.in];
    if (!prod || prod->kind == Step::kFlatten) continue;
    const std::vector<PostOp>& pp = prod->post;
    const size_t n = pp.size();
    if (n < 4 || pp[n - 4].kind != PostOp::kLinear || pp[n - 4].b != 0.0f || pp[n - 3].kind != PostOp::kClip ||
        pp[n - 2].kind != PostOp::kRound || pp[n - 1].kind != PostOp::kLinear || pp[n - 1].b != 0.0f)
      continue;
    const float lo = pp[n - 3].a, hi = pp[n - 3].b;
    const DT t = lo >= -128 && hi <= 127 ? DT::s8 : (lo >= 0 && hi <= 255 ? DT::u8 : DT::undef);
    if (t == DT::undef) continue;
    qtype[s.in] = t;
    qscale[s.in] = pp[n - 1].a;
    int8_conv[i] = true;
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    if (!int8_conv[i]) need_float[s.in] = true;
    if (s.in2 >= 0) need_float[s.in2] = true;
    for (const PostOp& op : s.post)
      if (op.kind == PostOp::kAddTensor) need_float[op.value] = true;
  }
  need_float[output] = true;
  p.qvalues.assign(num_values, memory());

  for (size_t si = 0; si < steps.size(); ++si) {
    const Step& s = steps[si];
    Exec ex;
    ex.step = &s;
    ex.int8 = int8_conv[si];
    const Dims& in = p.dims[s.in];
    Dims out;
    // only integer layers write integers; a float layer's output is quantized by a reorder
    const DT out_type = qtype[s.out] != DT::undef && ex.int8 ? qtype[s.out] : DT::f32;
    ex.writes_int8 = out_type != DT::f32;
    std::vector<PostOp> post = s.post;
    if (out_type != DT::f32) post.pop_back();  // write k, not k * s
    if (ex.int8 && s.bias.defined()) {  // the bias after the output scale: s_x s_w sum + b
      PostOp b{PostOp::kAddChannel};
      b.chan.assign(s.bias.data_ptr<float>(), s.bias.data_ptr<float>() + s.bias.numel());
      post.insert(post.begin(), b);
    }
    auto out_desc = [&]() { return memory::desc(out, out_type, out.size() == 4 ? Tag::nhwc : Tag::nc); };
    auto make = [&](auto make_pd) {
      // post-ops on the primitive when oneDNN takes them, else the plain loops after it
      try {
        dnnl::primitive_attr attr = attributes(post, p, out, ex.args);
        if (ex.int8) {
          std::vector<float> scales(s.wstep.size());
          for (size_t c = 0; c < scales.size(); ++c) scales[c] = qscale[s.in] * s.wstep[c];
          attr.set_output_scales(1 << 1, scales);
        }
        return make_pd(attr);
      } catch (const dnnl::error&) {
        if (ex.int8) throw;  // no plain-loop twin for integer layers
        ex.args.clear();
        ex.posts_on_cpu = true;
        return make_pd(dnnl::primitive_attr());
      }
    };
    switch (s.kind) {
      case Step::kConv: {
        if (in.size() != 4) throw Error("a conv input has " + std::to_string(in.size()) + " dimensions");
        const int64_t O = s.weight.size(0), KH = s.weight.size(2), KW = s.weight.size(3), g = s.groups;
        if (in[1] != s.weight.size(1) * g)
          throw Error("a conv with " + std::to_string(s.weight.size(1) * g) + " input channels gets " +
                      std::to_string(in[1]));
        auto extent = [&](int64_t size, int64_t k, int i) {
          return (size + 2 * s.padding[i] - s.dilation[i] * (k - 1) - 1) / s.stride[i] + 1;
        };
        out = {in[0], O, extent(in[2], KH, 0), extent(in[3], KW, 1)};
        if (out[2] <= 0 || out[3] <= 0) throw Error("a conv input of " + std::to_string(in[2]) + "x" + std::to_string(in[3]) + " is smaller than its kernel");
        const Dims wdims = g == 1 ? Dims{O, in[1], KH, KW} : Dims{g, O / g, in[1] / g, KH, KW};
        const DT wtype = ex.int8 ? DT::s8 : DT::f32;
        const memory::desc wplain(wdims, wtype, g == 1 ? Tag::oihw : Tag::goihw);
        const memory::desc wany(wdims, wtype, Tag::any);
        const memory::desc bias = s.bias.defined() && !ex.int8 ? memory::desc({O}, DT::f32, Tag::x) : memory::desc();
        const memory::desc src = ex.int8 ? memory::desc(in, qtype[s.in], Tag::nhwc) : activation_desc(in);
        auto pd = make([&](const dnnl::primitive_attr& attr) {
          dnnl::convolution_forward::desc d(inference, A::convolution_direct, src, wany, bias,
                                            out_desc(), {s.stride[0], s.stride[1]},
                                            {s.dilation[0] - 1, s.dilation[1] - 1}, {s.padding[0], s.padding[1]},
                                            {s.padding[0], s.padding[1]});
          return dnnl::convolution_forward::primitive_desc(d, attr, engine);
        });
        ex.args[DNNL_ARG_WEIGHTS] =
            reordered_weights(wplain, ex.int8 ? s.qweight.data_ptr() : s.weight.data_ptr(), pd.weights_desc());
        if (s.bias.defined() && !ex.int8) ex.args[DNNL_ARG_BIAS] = memory(bias, engine, s.bias.data_ptr());
        ex.prim = dnnl::convolution_forward(pd);
        break;
      }
      case Step::kLinear: {
        if (in.size() != 2) throw Error("a linear input has " + std::to_string(in.size()) + " dimensions");
        const int64_t O = s.weight.size(0);
        if (in[1] != s.weight.size(1))
          throw Error("a linear layer with " + std::to_string(s.weight.size(1)) + " inputs gets " + std::to_string(in[1]));
        out = {in[0], O};
        const memory::desc wplain({O, in[1]}, memory::data_type::f32, Tag::oi);
        const memory::desc wany({O, in[1]}, memory::data_type::f32, Tag::any);
        const memory::desc bias = s.bias.defined() ? memory::desc({O}, memory::data_type::f32, Tag::x) : memory::desc();
        auto pd = make([&](const dnnl::primitive_attr& attr) {
          dnnl::inner_product_forward::desc d(inference, activation_desc(in), wany, bias, out_desc());
          return dnnl::inner_product_forward::primitive_desc(d, attr, engine);
        });
        ex.args[DNNL_ARG_WEIGHTS] = reordered_weights(wplain, s.weight.data_ptr(), pd.weights_desc());
        if (s.bias.defined()) ex.args[DNNL_ARG_BIAS] = memory(bias, engine, s.bias.data_ptr());
        ex.prim = dnnl::inner_product_forward(pd);
        break;
      }
      case Step::kPool: {
        if (in.size() != 4) throw Error("a pooling input has " + std::to_string(in.size()) + " dimensions");
        Dims kernel, stride, pad;
        if (s.global_pool) {  // adaptive average pooling to a size that divides the input
          const int64_t oh = s.kernel[0], ow = s.kernel[1];
          if (oh < 1 || ow < 1 || in[2] % oh != 0 || in[3] % ow != 0)
            throw Error("adaptive_avg_pool2d from " + std::to_string(in[2]) + "x" + std::to_string(in[3]) + " to " +
                        std::to_string(oh) + "x" + std::to_string(ow) + " (not a whole number of inputs per output)");
          kernel = {in[2] / oh, in[3] / ow};
          stride = kernel;
          pad = {0, 0};
          out = {in[0], in[1], oh, ow};
        } else {
          kernel = {s.kernel[0], s.kernel[1]};
          stride = {s.stride[0], s.stride[1]};
          pad = {s.padding[0], s.padding[1]};
          out = {in[0], in[1], (in[2] + 2 * pad[0] - kernel[0]) / stride[0] + 1,
                 (in[3] + 2 * pad[1] - kernel[1]) / stride[1] + 1};
        }
        const A alg = s.max_pool ? A::pooling_max
                                 : (s.count_include_pad ? A::pooling_avg_include_padding : A::pooling_avg_exclude_padding);
        auto pd = make([&](const dnnl::primitive_attr& attr) {
          dnnl::pooling_forward::desc d(inference, alg, activation_desc(in), out_desc(), stride, kernel, pad, pad);
          return dnnl::pooling_forward::primitive_desc(d, attr, engine);
        });
        ex.prim = dnnl::pooling_forward(pd);
        break;
      }
      case Step::kEltwise:
        out = in;
        ex.posts_on_cpu = true;
        break;
      case Step::kAdd:
        if (p.dims[s.in2] != in) throw Error("an add of tensors of different shapes");
        out = in;
        ex.posts_on_cpu = true;
        break;
      case Step::kFlatten: {
        int64_t f = 1;
        for (size_t i = 1; i < in.size(); ++i) f *= in[i];
        out = {in[0], f};
        break;
      }
    }
    p.dims[s.out] = out;
    if (out_type != DT::f32) {
      p.qvalues[s.out] = owned(out_desc());
      if (need_float[s.out]) {
        p.values[s.out] = owned(activation_desc(out));
        dnnl::primitive_attr ra;
        ra.set_output_scales(0, {qscale[s.out]});
        ex.dequantize = dnnl::reorder(dnnl::reorder::primitive_desc(p.qvalues[s.out], p.values[s.out], ra));
      }
      p.execs.push_back(std::move(ex));
      continue;
    }
    if (qtype[s.out] != DT::undef) {  // k = x * (1 / s) rounds back to the integer exactly
      p.values[s.out] = owned(activation_desc(out));
      p.qvalues[s.out] = owned(memory::desc(out, qtype[s.out], out.size() == 4 ? Tag::nhwc : Tag::nc));
      dnnl::primitive_attr ra;
      ra.set_output_scales(0, {1.0f / qscale[s.out]});
      ex.quantize = dnnl::reorder(dnnl::reorder::primitive_desc(p.values[s.out], p.qvalues[s.out], ra));
      p.execs.push_back(std::move(ex));
      continue;
    }
    ex.alias = s.kind == Step::kFlatten && (in.size() == 2 || in[2] * in[3] == 1);
    if (ex.alias)
      p.values[s.out] = memory(activation_desc(out), engine, p.values[s.in].get_data_handle());
    else
      p.values[s.out] = owned(activation_desc(out));
    p.execs.push_back(std::move(ex));
  }
}

FusedModel::Impl::Plan& FusedModel::Impl::plan_for(const at::Tensor& x) {
  std::vector<int64_t> key = x.sizes().vec();
  auto it = plans.find(key);
  if (it != plans.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  try {
    try {
      build(*p, Dims(key.begin(), key.end()), int8);
    } catch (const dnnl::error&) {
      if (!int8) throw;
      p = std::make_unique<Plan>();  // an integer layer oneDNN does not take: all float
      build(*p, Dims(key.begin(), key.end()), false);
    }
  } catch (const dnnl::error& e) {
    throw Error(std::string("oneDNN cannot run this model on inputs of shape ") + c10::str(x.sizes()) + ": " + e.what());
  }
  return *(plans[key] = std::move(p));
}

FusedModel::FusedModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FusedModel::~FusedModel() = default;
int FusedModel::primitives() const {
  int n = 0;
  for (const Step& s : impl_->steps) n += s.kind == Step::kConv || s.kind == Step::kLinear || s.kind == Step::kPool;
  return n;
}
int FusedModel::conv_layers() const {
  int n = 0;
  for (const Step& s : impl_->steps) n += s.kind == Step::kConv;
  return n;
}
int FusedModel::fused_ops() const { return impl_->fused; }
int FusedModel::int8_layers(const at::Tensor& x) const {
  auto it = impl_->plans.find(x.sizes().vec());
  int n = 0;
  if (it != impl_->plans.end())
    for (const Impl::Exec& e : it->second->execs) n += e.int8;
  return n;
}

std::unique_ptr<FusedModel> FusedModel::compile(const torch::jit::Module& frozen, std::string* why_not, bool int8) {
  auto impl = std::make_unique<Impl>();
  impl->int8 = int8;
  try {
    Compiler c;
    c.run(frozen.get_method("forward").graph());
    if (c.output == 0) throw Unsupported("forward returns its input");
    impl->steps = std::move(c.steps);
    impl->num_values = c.num_values;
    impl->output = c.output;
    impl->fused = c.fused;
    if (int8)
      for (Step& s : impl->steps)
        if (s.kind == Step::kConv && !integer_grid(s.weight, &s.qweight, &s.wstep)) s.qweight = at::Tensor();
  } catch (const Unsupported& e) {
    if (why_not) *why_not = e.what();
    return nullptr;
  } catch (const c10::Error& e) {
    if (why_not) *why_not = std::string(e.what_without_backtrace());
    return nullptr;
  }
  return std::unique_ptr<FusedModel>(new FusedModel(std::move(impl)));
}

at::Tensor FusedModel::forward(const at::Tensor& x_in) {
  if (x_in.dim() != 4 && x_in.dim() != 2) throw Error("the compiled model takes [N, C, H, W] or [N, F] inputs, got " + c10::str(x_in.sizes()));
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  Impl::Plan& p = impl_->plan_for(x);
  dnnl::stream st(impl_->engine);
  const memory::desc plain(p.dims[0], memory::data_type::f32, x.dim() == 4 ? Tag::nchw : Tag::nc);
  memory xin(plain, impl_->engine, const_cast<float*>(x.data_ptr<float>()));
  if (p.input_reorder) {
    dnnl::reorder(xin, p.values[0]).execute(st, xin, p.values[0]);
  } else {
    p.values[0].set_data_handle(xin.get_data_handle());
  }
  for (Impl::Exec& ex : p.execs) {
    const Step& s = *ex.step;
    memory& dst = ex.writes_int8 ? p.qvalues[s.out] : p.values[s.out];
    memory& src = ex.int8 ? p.qvalues[s.in] : p.values[s.in];
    int64_t n = 1;
    for (int64_t d : p.dims[s.out]) n *= d;
    if (s.kind == Step::kFlatten) {
      if (ex.alias) {
        dst.set_data_handle(src.get_data_handle());
      } else {  // NHWC -> NCHW order, as torch.flatten reads it
        memory nchw(memory::desc(p.dims[s.in], memory::data_type::f32, Tag::nchw), impl_->engine,
                    dst.get_data_handle());
        dnnl::reorder(src, nchw).execute(st, src, nchw);
      }
      continue;
    }
    if (ex.prim) {
      std::unordered_map<int, memory> args = ex.args;
      args[DNNL_ARG_SRC] = src;
      args[DNNL_ARG_DST] = dst;
      ex.prim.execute(st, args);
      st.wait();
    } else {
      const float* a = static_cast<const float*>(src.get_data_handle());
      float* y = static_cast<float*>(dst.get_data_handle());
      if (s.kind == Step::kAdd) {
        const float* b = static_cast<const float*>(p.values[s.in2].get_data_handle());
        at::parallel_for(0, n, 16384, [&](int64_t lo, int64_t hi) {
          for (int64_t i = lo; i < hi; ++i) y[i] = a[i] + b[i];
        });
      } else {
        std::memcpy(y, a, n * sizeof(float));
      }
    }
    if (ex.posts_on_cpu && !s.post.empty()) {
      std::vector<const float*> added;
      for (const PostOp& op : s.post)
        if (op.kind == PostOp::kAddTensor) added.push_back(static_cast<const float*>(p.values[op.value].get_data_handle()));
      apply_post_ops(static_cast<float*>(dst.get_data_handle()), n, p.dims[s.out][1], s.post, added);
    }
    if (ex.dequantize) ex.dequantize.execute(st, p.qvalues[s.out], p.values[s.out]);
    if (ex.quantize) ex.quantize.execute(st, p.values[s.out], p.qvalues[s.out]);
    if (ex.dequantize || ex.quantize) st.wait();
  }
  st.wait();
  const Dims& od = p.dims[impl_->output];
  at::Tensor out = at::empty(od, x.options());
  memory& ov = p.values[impl_->output];
  if (od.size() == 4) {
    memory o(memory::desc(od, memory::data_type::f32, Tag::nchw), impl_->engine, out.data_ptr());
    dnnl::reorder(ov, o).execute(st, ov, o);
    st.wait();
  } else {
    std::memcpy(out.data_ptr(), ov.get_data_handle(), out.numel() * sizeof(float));
  }
  return out;
}

}  // namespace anybit
