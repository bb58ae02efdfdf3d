// Runs the Steps of a compiled graph (fused_graph.h) on oneDNN; see fused_eval.h. A Plan
// instantiates the Steps for one input shape, cached per shape. A plan is built during its
// first forward, step by step, so that each step sees the shapes its inputs actually have
// (an op run through ATen has no shape function here).
#include "anybit/runtime/fused_eval.h"

#include <ATen/Parallel.h>
#include <ATen/ops/adaptive_avg_pool2d.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <unordered_map>

#include "anybit/base/npy.h"
#include "anybit/quant/spec.h"
#include "anybit/runtime/fused_graph.h"

namespace anybit {
namespace {
namespace jit = torch::jit;
using dnnl::memory;
using Tag = memory::format_tag;
using Dims = memory::dims;
using fused::Layout;
using fused::PostOp;
using fused::Step;

memory::desc layout_desc(const Dims& d, memory::data_type t, Layout l) {
  if (l == Layout::kNHWC) return memory::desc(d, t, Tag::nhwc);
  return memory::desc(d, t, Tag::nc);
}

// The strides of a tensor of `sizes` laid out as `l` (NHWC: channels fastest; rows: its own order).
std::vector<int64_t> strides_of(const std::vector<int64_t>& s, Layout l) {
  if (l == Layout::kNHWC) return {s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]};
  std::vector<int64_t> strides(s.size(), 1);
  for (int64_t i = static_cast<int64_t>(s.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * s[i + 1];
  return strides;
}

Dims per_channel_dims(const Dims& d) {
  Dims c(d.size(), 1);
  c[1] = d[1];
  return c;
}

// oneDNN's dims of a tensor of semantic sizes `sizes` laid out as `l`.
Dims memory_dims(const std::vector<int64_t>& sizes, Layout l) {
  if (l == Layout::kNHWC) return Dims(sizes.begin(), sizes.end());
  const int64_t last = sizes.empty() ? 1 : sizes.back();
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < sizes.size(); ++i) rows *= sizes[i];
  return {rows, last};
}

float apply_activation(PostOp::Kind k, float v) {
  // the scalar forms of ATen's CPU kernels (aten/src/ATen/native/cpu/Activation.cpp)
  switch (k) {
    case PostOp::kSilu: return v / (1.0f + std::exp(-v));
    case PostOp::kSigmoid: return 1.0f / (1.0f + std::exp(-v));
    case PostOp::kHardswish: return v * std::min(std::max(v + 3.0f, 0.0f), 6.0f) / 6.0f;
    case PostOp::kGeluErf: return v * 0.5f * (1.0f + std::erf(v * static_cast<float>(M_SQRT1_2)));
    case PostOp::kGeluTanh: {
      const float inner = static_cast<float>(M_2_SQRTPI * M_SQRT1_2) * (v + 0.044715f * v * v * v);
      return 0.5f * v * (1.0f + std::tanh(inner));
    }
    default: return v;
  }
}

// The plain twin of the post-ops, for primitives that refuse a post-op. Channel-last
// layouts (NHWC, rows) make the channel the fastest index.
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
            case PostOp::kDiv: v = v / p.a; break;
            default: v = apply_activation(p.kind, v); break;
          }
        }
        y[i] = v;
      }
  });
}


}  // namespace

struct FusedModel::Impl {
  std::vector<Step> steps;
  int num_values = 0, output = -1, fused = 0, onednn_ops = 0;
  std::map<std::string, int> aten_ops;
  std::shared_ptr<jit::Graph> graph;  // owns the nodes the generic steps' operations came from
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};

  // A value that a oneDNN step reads in a layout it does not have (an ATen result, or a
  // oneDNN value laid out otherwise): copied into that layout by ATen before the step.
  struct Stage {
    int value = -1;
    Layout layout = Layout::kRows;
    std::vector<int64_t> sizes;
    memory mem;  // no buffer of its own: pointed at the staged tensor each forward
  };
  struct Exec {
    dnnl::primitive prim;
    std::unordered_map<int, memory> args;  // besides src and dst
    memory src, src2;                      // the inputs as the primitive reads them
    std::vector<Stage> stages;
    std::vector<memory> added;  // kAddTensor operands, in post-op order
    bool posts_on_cpu = false;
    bool alias = false;  // a flatten that keeps the bytes: dst is src under another shape
    bool int8 = false;         // an int8 conv: reads the integer form of its input
    bool aten_layer = false;  // a float linear layer (ATen's addmm) or an uneven adaptive pooling (ATen's), its chain after it
    bool writes_int8 = false;  // an int8 conv writing the integer form of its output
    dnnl::reorder dequantize;  // integer form of the output -> its float form
    dnnl::reorder quantize;    // float form of the output -> its integer form
  };
  struct Plan {
    bool use_int8 = true;
    bool built = false;  // every step has its Exec (after the first forward)
    std::vector<std::vector<int64_t>> sizes;  // each value's shape (as torch sees it)
    std::vector<Layout> layout;               // oneDNN values: how they lie in `values`
    std::vector<memory> values;   // float form of each oneDNN value
    std::vector<memory> qvalues;  // integer form k = x / s of a value an int8 conv reads
    std::vector<c10::IValue> ivals;  // the values the ATen steps computed, this forward
    std::vector<at::Tensor> keep;    // staged tensors, this forward
    std::vector<Exec> execs;
    bool input_reorder = false;
    // which convs run in int8 (from the graph; no shapes needed)
    std::vector<memory::data_type> qtype;
    std::vector<float> qscale;
    std::vector<bool> int8_conv, need_float;
  };
  bool int8 = true;  // FusedModel::compile's int8 argument
  std::map<std::vector<int64_t>, std::unique_ptr<Plan>> plans;

  void prepare(Plan& p, bool use_int8) const;
  void build_step(Plan& p, size_t si, bool posts_on_cpu = false);
  void run_step(Plan& p, size_t si, dnnl::stream& st);
  at::Tensor run(Plan& p, const at::Tensor& x);
  dnnl::primitive_attr attributes(const std::vector<PostOp>& post, Exec& ex, const Dims& out, Layout out_layout,
                                  const std::vector<int64_t>& out_sizes);
  // The kAddTensor operands of a chain into ex.added, in the step's output layout.
  void resolve_added(Plan& p, Exec& ex, const std::vector<PostOp>& post, Layout out_layout,
                     const std::vector<int64_t>& out_sizes) {
    ex.added.clear();
    for (const PostOp& op : post) {
      if (op.kind != PostOp::kAddTensor) continue;
      if (sizes_of(p, op.value) != out_sizes)
        throw Error("an add of tensors of shapes " + shape_str(out_sizes) + " and " + shape_str(sizes_of(p, op.value)));
      ex.added.push_back(input_memory(p, ex, op.value, out_layout));
    }
  }
  memory owned(const memory::desc& d) { return memory(d, engine); }
  // The weights (plain layout `plain`, at `data`) in the layout a primitive chose.
  memory reordered_weights(const memory::desc& plain, void* data, const memory::desc& chosen) {
    memory src(plain, engine, data), w = owned(chosen);
    dnnl::stream st(engine);
    dnnl::reorder(src, w).execute(st, src, w);
    st.wait();
    return w;
  }
  // Value v as a float tensor of its own shape (a view of oneDNN's buffer when oneDNN
  // computed it).
  at::Tensor tensor_of(Plan& p, int v) const {
    if (p.layout[v] == Layout::kNone) return p.ivals[v].toTensor();
    const std::vector<int64_t>& s = p.sizes[v];
    const std::vector<int64_t> strides = strides_of(s, p.layout[v]);
    if (!p.values[v]) {  // only int8 convs read its data: a view of the integers for size() and dim()
      return at::from_blob(p.qvalues[v].get_data_handle(), s, strides,
                           at::TensorOptions(p.qtype[v] == memory::data_type::s8 ? at::kChar : at::kByte));
    }
    return at::from_blob(p.values[v].get_data_handle(), s, strides, at::TensorOptions(at::kFloat));
  }
  c10::IValue ivalue_of(Plan& p, int v) const {
    if (p.layout[v] == Layout::kNone) return p.ivals[v];
    return tensor_of(p, v);
  }
  std::vector<int64_t> sizes_of(Plan& p, int v) const {
    if (p.layout[v] != Layout::kNone) return p.sizes[v];
    const c10::IValue& i = p.ivals[v];
    if (!i.isTensor()) throw Error("a oneDNN layer reads a value that is not a tensor");
    const at::Tensor& t = i.toTensor();
    if (t.scalar_type() != at::kFloat) throw Error(std::string("a oneDNN layer reads a ") + c10::toString(t.scalar_type()) + " tensor");
    return t.sizes().vec();
  }
  // The memory a oneDNN step reads value v from, in layout `want` (kNone: the value's own
  // layout, or for an ATen value NHWC when 4-D, else rows).
  memory input_memory(Plan& p, Exec& ex, int v, Layout want, Layout* got = nullptr) {
    const std::vector<int64_t> s = sizes_of(p, v);
    if (want == Layout::kNone) want = p.layout[v] != Layout::kNone ? p.layout[v] : (s.size() == 4 ? Layout::kNHWC : Layout::kRows);
    if (want == Layout::kNHWC && s.size() != 4) throw Error("a layer that takes [N, C, H, W] gets " + shape_str(s));
    if (got) *got = want;
    if (p.layout[v] == want) return p.values[v];
    Stage st;
    st.value = v;
    st.layout = want;
    st.sizes = s;
    st.mem = memory(layout_desc(memory_dims(s, want), memory::data_type::f32, want), engine, DNNL_MEMORY_NONE);
    ex.stages.push_back(st);
    return st.mem;
  }
};

dnnl::primitive_attr FusedModel::Impl::attributes(const std::vector<PostOp>& post, Exec& ex, const Dims& out,
                                                  Layout out_layout, const std::vector<int64_t>& out_sizes) {
  // Every op with a parameter is a binary post-op with its own operand: oneDNN 2.6's conv
  // kernels share one constant per eltwise algorithm across a chain, so two
  // eltwise_linear (or eltwise_clip) post-ops of one chain would both use the first's
  // parameters. Eltwise post-ops are kept for the ops without parameters (round, relu,
  // the activations; swish's alpha is always 1).
  using A = dnnl::algorithm;
  dnnl::post_ops po;
  auto binary = [&](A alg, const std::vector<float>& values, bool last_dim = false) {
    const bool scalar = values.size() == 1;
    if (!scalar && static_cast<int64_t>(values.size()) != out[1])
      throw Error("a per-channel op has " + std::to_string(values.size()) + " values for " +
                  std::to_string(out[1]) + " channels");
    if (!scalar && !last_dim && out_layout == Layout::kRows && out_sizes.size() != 2)
      throw Error("a per-channel op along dim 1 of a tensor of shape " + shape_str(out_sizes) +
                  " (oneDNN's channel is its last dim)");
    const memory::desc d(scalar ? Dims(out.size(), 1) : per_channel_dims(out), memory::data_type::f32,
                         out.size() == 4 ? Tag::nchw : Tag::nc);
    memory m = owned(d);
    std::memcpy(m.get_data_handle(), values.data(), values.size() * sizeof(float));
    ex.args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(po.len()) | DNNL_ARG_SRC_1] = m;
    po.append_binary(alg, d);
  };
  size_t added = 0;  // ex.added holds the kAddTensor operands (resolve_added)
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
      case PostOp::kDiv: binary(A::binary_div, {op.a}); break;
      case PostOp::kRound: po.append_eltwise(1.0f, A::eltwise_round, 0.0f, 0.0f); break;
      case PostOp::kRelu: po.append_eltwise(1.0f, A::eltwise_relu, 0.0f, 0.0f); break;
      case PostOp::kSilu: po.append_eltwise(1.0f, A::eltwise_swish, 1.0f, 0.0f); break;
      case PostOp::kSigmoid: po.append_eltwise(1.0f, A::eltwise_logistic, 0.0f, 0.0f); break;
      case PostOp::kHardswish: po.append_eltwise(1.0f, A::eltwise_hardswish, 0.0f, 0.0f); break;
      case PostOp::kGeluErf: po.append_eltwise(1.0f, A::eltwise_gelu_erf, 0.0f, 0.0f); break;
      case PostOp::kGeluTanh: po.append_eltwise(1.0f, A::eltwise_gelu_tanh, 0.0f, 0.0f); break;
      case PostOp::kMulChannel: binary(A::binary_mul, op.chan); break;
      case PostOp::kAddChannel: binary(A::binary_add, op.chan, op.last_dim); break;
      case PostOp::kMaxChannel: binary(A::binary_max, op.chan); break;
      case PostOp::kMinChannel: binary(A::binary_min, op.chan); break;
      case PostOp::kAddTensor: {
        ex.args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(po.len()) | DNNL_ARG_SRC_1] = ex.added.at(added++);
        po.append_binary(A::binary_add, layout_desc(out, memory::data_type::f32, out_layout));
        break;
      }
    }
  }
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  return attr;
}

// Which convs run in int8 and which values need a float form; see build_step.
void FusedModel::Impl::prepare(Plan& p, bool use_int8) const {
  using DT = memory::data_type;
  p.use_int8 = use_int8;
  p.sizes.assign(num_values, {});
  p.layout.assign(num_values, Layout::kNone);
  p.values.assign(num_values, memory());
  p.qvalues.assign(num_values, memory());
  p.ivals.assign(num_values, c10::IValue());
  p.execs.clear();
  p.built = false;
  // Integer layers. A value whose layer ends in a per-tensor fake-quantizer
  // (x * inv, clamp to [lo, hi], round, * s) is k * s with k an integer in [lo, hi]. A conv
  // reading such a value with at most 8 bits, whose weights lie on an integer grid, runs
  // as an int8 conv: s_x * s_w * sum(k_x * k_w), exact, where the float conv rounds. The
  // producing layer then writes k (its chain without the final * s), and a reorder makes
  // the float form k * s (the same float product the chain ends with) when anything else
  // reads the value too.
  p.qtype.assign(num_values, DT::undef);
  p.qscale.assign(num_values, 0.0f);
  p.int8_conv.assign(steps.size(), false);
  p.need_float.assign(num_values, false);
  std::vector<const Step*> producer(num_values, nullptr);  // the step whose final output a value is
  for (const Step& s : steps)
    if (s.kind != Step::kGeneric) producer[s.out] = &s;
  for (size_t i = 0; i < steps.size() && use_int8; ++i) {
    const Step& s = steps[i];
    if ((s.kind != Step::kConv && s.kind != Step::kLinear) || !s.qweight.defined() || s.groups != 1) continue;
    const Step* prod = producer[s.in];
    // the producer writes the integers in the layout this layer reads (NHWC for a conv,
    // rows for a linear layer), which a conv or pooling (NHWC), a linear layer (rows) or
    // an element-wise step (its input's layout, checked when the plan is built) does
    if (!prod || prod->kind == Step::kFlatten || (s.kind == Step::kConv && prod->kind == Step::kLinear) ||
        (s.kind == Step::kLinear && (prod->kind == Step::kConv || prod->kind == Step::kPool)))
      continue;
    const std::vector<PostOp>& pp = prod->post;
    const size_t n = pp.size();
    if (n < 4 || pp[n - 4].kind != PostOp::kLinear || pp[n - 4].b != 0.0f || pp[n - 3].kind != PostOp::kClip ||
        pp[n - 2].kind != PostOp::kRound || pp[n - 1].kind != PostOp::kLinear || pp[n - 1].b != 0.0f)
      continue;
    const float lo = pp[n - 3].a, hi = pp[n - 3].b;
    const DT t = lo >= -128 && hi <= 127 ? DT::s8 : (lo >= 0 && hi <= 255 ? DT::u8 : DT::undef);
    if (t == DT::undef) continue;
    p.qtype[s.in] = t;
    p.qscale[s.in] = pp[n - 1].a;
    p.int8_conv[i] = true;
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    if (s.kind == Step::kGeneric) {
      // every read of a oneDNN value by ATen needs its float form, but size() and dim()
      if (!s.metadata_only)
        for (int a : s.args)
          if (a >= 0) p.need_float[a] = true;
      continue;
    }
    if (!p.int8_conv[i]) p.need_float[s.in] = true;
    if (s.in2 >= 0) p.need_float[s.in2] = true;
    for (const PostOp& op : s.post)
      if (op.kind == PostOp::kAddTensor) p.need_float[op.value] = true;
  }
  p.need_float[output] = true;
}

void FusedModel::Impl::build_step(Plan& p, size_t si, bool posts_on_cpu) {
  using A = dnnl::algorithm;
  using DT = memory::data_type;
  const auto inference = dnnl::prop_kind::forward_inference;
  const Step& s = steps[si];
  p.execs.emplace_back();
  Exec& ex = p.execs.back();
  if (s.kind == Step::kGeneric) return;  // ATen allocates its results
  ex.int8 = p.int8_conv[si];
  Layout in_layout = Layout::kNone;
  const std::vector<int64_t> in_sizes = sizes_of(p, s.in);
  if (ex.int8) {
    in_layout = s.kind == Step::kConv ? Layout::kNHWC : Layout::kRows;
    if (p.layout[s.in] != in_layout) throw dnnl::error(dnnl_unimplemented, "an int8 layer's input in another layout");
  } else {
    const Layout want = s.kind == Step::kConv || s.kind == Step::kPool        ? Layout::kNHWC
                        : s.kind == Step::kLinear || s.rows_for_linear ? Layout::kRows
                                                                        : Layout::kNone;
    ex.src = input_memory(p, ex, s.in, want, &in_layout);
  }
  const Dims in = memory_dims(in_sizes, in_layout);
  Dims out;
  std::vector<int64_t> out_sizes;
  Layout out_layout = in_layout;
  // only integer layers write integers; a float layer's output is quantized by a reorder
  const DT out_type = p.qtype[s.out] != DT::undef && ex.int8 ? p.qtype[s.out] : DT::f32;
  ex.writes_int8 = out_type != DT::f32;
  std::vector<PostOp> post = s.post;
  if (out_type != DT::f32) post.pop_back();  // write k, not k * s
  if (ex.int8 && s.bias.defined()) {  // the bias after the output scale: s_x s_w sum + b
    PostOp b{PostOp::kAddChannel};
    b.chan.assign(s.bias.data_ptr<float>(), s.bias.data_ptr<float>() + s.bias.numel());
    b.last_dim = s.kind == Step::kLinear;
    post.insert(post.begin(), b);
  }
  auto out_desc = [&]() { return layout_desc(out, out_type, out_layout); };
  auto make = [&](auto make_pd) {
    // post-ops on the primitive when oneDNN takes them, else the plain loops after it
    resolve_added(p, ex, post, out_layout, out_sizes);
    try {
      if (posts_on_cpu && !ex.int8) throw dnnl::error(dnnl_unimplemented, "post-ops refused at run time");
      dnnl::primitive_attr attr = attributes(post, ex, out, out_layout, out_sizes);
      if (ex.int8) {
        std::vector<float> scales(s.wstep.size());
        for (size_t c = 0; c < scales.size(); ++c) scales[c] = p.qscale[s.in] * s.wstep[c];
        attr.set_output_scales(1 << 1, scales);
      }
      auto pd = make_pd(attr);
      // oneDNN's reference kernels (ref:any) take a chain it has no JIT kernel for at a
      // hundredth of the speed: the plain loops are faster
      if (!ex.int8 && !post.empty() && std::string(pd.impl_info_str()).rfind("ref", 0) == 0)
        throw dnnl::error(dnnl_unimplemented, "reference kernel");
      return pd;
    } catch (const dnnl::error&) {
      if (ex.int8) throw;  // no plain-loop twin for integer layers
      ex.args.clear();
      ex.posts_on_cpu = true;
      return make_pd(dnnl::primitive_attr());
    }
  };
  // A chain with no layer to carry it (after an element-wise step's input, after ATen's
  // linear layer): a binary primitive multiplying by 1 (exact) takes it as post-ops.
  auto carrier = [&](const Dims& d, Layout l) {
    ex.src2 = owned(memory::desc(Dims(d.size(), 1), DT::f32, d.size() == 4 ? Tag::nchw : Tag::nc));
    *static_cast<float*>(ex.src2.get_data_handle()) = 1.0f;
    auto pd = make([&](const dnnl::primitive_attr& attr) {
      const memory::desc d0 = layout_desc(d, DT::f32, l);
      dnnl::binary::desc bd(A::binary_mul, d0, ex.src2.get_desc(), d0);
      return dnnl::binary::primitive_desc(bd, attr, engine);
    });
    ex.prim = dnnl::binary(pd);
  };
  switch (s.kind) {
    case Step::kConv: {
      const int64_t O = s.weight.size(0), KH = s.weight.size(2), KW = s.weight.size(3), g = s.groups;
      if (in[1] != s.weight.size(1) * g)
        throw Error("a conv with " + std::to_string(s.weight.size(1) * g) + " input channels gets " +
                    std::to_string(in[1]));
      auto extent = [&](int64_t size, int64_t k, int i) {
        return (size + 2 * s.padding[i] - s.dilation[i] * (k - 1) - 1) / s.stride[i] + 1;
      };
      out = {in[0], O, extent(in[2], KH, 0), extent(in[3], KW, 1)};
      out_sizes = out;
      if (out[2] <= 0 || out[3] <= 0) throw Error("a conv input of " + std::to_string(in[2]) + "x" + std::to_string(in[3]) + " is smaller than its kernel");
      const Dims wdims = g == 1 ? Dims{O, in[1], KH, KW} : Dims{g, O / g, in[1] / g, KH, KW};
      const DT wtype = ex.int8 ? DT::s8 : DT::f32;
      const memory::desc wplain(wdims, wtype, g == 1 ? Tag::oihw : Tag::goihw);
      const memory::desc wany(wdims, wtype, Tag::any);
      const memory::desc bias = s.bias.defined() && !ex.int8 ? memory::desc({O}, DT::f32, Tag::x) : memory::desc();
      const memory::desc src = ex.int8 ? memory::desc(in, p.qtype[s.in], Tag::nhwc) : layout_desc(in, DT::f32, Layout::kNHWC);
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
      const int64_t O = s.weight.size(0);
      if (in[1] != s.weight.size(1))
        throw Error("a linear layer with " + std::to_string(s.weight.size(1)) + " inputs gets " + std::to_string(in[1]));
      out = {in[0], O};
      out_sizes = in_sizes;
      out_sizes.back() = O;
      if (!ex.int8) {
        // A float linear layer is ATen's own addmm, the interpreter's kernel (here faster than
        // oneDNN 2.6's inner product, and bit-identical to the interpreter), written into
        // the output buffer; its chain runs after it, in place, on a binary primitive
        // multiplying by 1 (exact).
        ex.aten_layer = true;
        if (!post.empty()) carrier(out, Layout::kRows);
        break;
      }
      // int8: the integers of the input and the weights, the bias a post-op after the scale
      const memory::desc wplain({O, in[1]}, DT::s8, Tag::oi), wany({O, in[1]}, DT::s8, Tag::any);
      auto pd = make([&](const dnnl::primitive_attr& attr) {
        dnnl::inner_product_forward::desc d(inference, memory::desc(in, p.qtype[s.in], Tag::nc), wany,
                                            memory::desc(), out_desc());
        return dnnl::inner_product_forward::primitive_desc(d, attr, engine);
      });
      ex.args[DNNL_ARG_WEIGHTS] = reordered_weights(wplain, s.qweight.data_ptr(), pd.weights_desc());
      ex.prim = dnnl::inner_product_forward(pd);
      break;
    }
    case Step::kPool: {
      Dims kernel, stride, pad;
      if (s.global_pool) {  // adaptive average pooling
        const int64_t oh = s.kernel[0], ow = s.kernel[1];
        if (oh < 1 || ow < 1) throw Error("adaptive_avg_pool2d to " + std::to_string(oh) + "x" + std::to_string(ow));
        if (in[2] % oh != 0 || in[3] % ow != 0) {
          // windows of different sizes (VGG's 7x7 from 2x2, AlexNet's 6x6 from 1x1): ATen's
          // own kernel writes the output, the chain runs after it
          ex.aten_layer = true;
          out = {in[0], in[1], oh, ow};
          out_sizes = out;
          if (!post.empty()) carrier(out, Layout::kNHWC);
          break;
        }
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
      out_sizes = out;
      const A alg = s.max_pool ? A::pooling_max
                               : (s.count_include_pad ? A::pooling_avg_include_padding : A::pooling_avg_exclude_padding);
      auto pd = make([&](const dnnl::primitive_attr& attr) {
        dnnl::pooling_forward::desc d(inference, alg, layout_desc(in, DT::f32, Layout::kNHWC), out_desc(), stride,
                                      kernel, pad, pad);
        return dnnl::pooling_forward::primitive_desc(d, attr, engine);
      });
      ex.prim = dnnl::pooling_forward(pd);
      break;
    }
    case Step::kEltwise:
      out = in;
      out_sizes = in_sizes;
      carrier(in, in_layout);
      break;
    case Step::kBinary: {  // two values, one of them broadcast (a gate of [N, C, 1, 1]) or not
      std::vector<int64_t> s1 = sizes_of(p, s.in2);
      auto covers = [](const std::vector<int64_t>& full, const std::vector<int64_t>& b) {
        if (full.size() != b.size()) return false;
        for (size_t i = 0; i < full.size(); ++i)
          if (b[i] != full[i] && b[i] != 1) return false;
        return true;
      };
      out_sizes = in_sizes;
      if (covers(in_sizes, s1)) {
        ex.src2 = input_memory(p, ex, s.in2, in_layout);
      } else if (covers(s1, in_sizes)) {  // the first operand is the broadcast one: swap (add and mul commute)
        ex.src2 = ex.src;
        ex.src = input_memory(p, ex, s.in2, in_layout);
        std::swap(s1, out_sizes);
      } else {
        throw Error(std::string(s.binary == A::binary_mul ? "a product" : "an add") + " of tensors of shapes " +
                    shape_str(in_sizes) + " and " + shape_str(s1));
      }
      if (s1 != out_sizes && in_layout == Layout::kRows && out_sizes.size() != 2)
        throw Error("a broadcast of " + shape_str(s1) + " onto " + shape_str(out_sizes) + " outside [N, C, H, W] and [N, C]");
      out = memory_dims(out_sizes, in_layout);
      auto pd = make([&](const dnnl::primitive_attr& attr) {
        dnnl::binary::desc d(s.binary, layout_desc(out, DT::f32, in_layout), ex.src2.get_desc(),
                             layout_desc(out, DT::f32, in_layout));
        return dnnl::binary::primitive_desc(d, attr, engine);
      });
      ex.prim = dnnl::binary(pd);
      break;
    }
    case Step::kFlatten: {
      if (in_sizes.empty()) throw Error("flatten of a scalar");
      int64_t f = 1;
      for (size_t i = 1; i < in_sizes.size(); ++i) f *= in_sizes[i];
      out = {in_sizes[0], f};
      out_sizes = out;
      out_layout = Layout::kRows;
      ex.alias = in_layout == Layout::kRows || in_sizes[2] * in_sizes[3] == 1;
      break;
    }
    case Step::kGeneric:
      break;
  }
  p.sizes[s.out] = out_sizes;
  p.layout[s.out] = out_layout;
  if (out_type != DT::f32) {
    p.qvalues[s.out] = owned(out_desc());
    if (p.need_float[s.out]) {
      p.values[s.out] = owned(layout_desc(out, DT::f32, out_layout));
      dnnl::primitive_attr ra;
      ra.set_output_scales(0, {p.qscale[s.out]});
      ex.dequantize = dnnl::reorder(dnnl::reorder::primitive_desc(p.qvalues[s.out], p.values[s.out], ra));
    }
    return;
  }
  if (p.qtype[s.out] != DT::undef) {  // k = x * (1 / s) rounds back to the integer exactly
    p.values[s.out] = owned(layout_desc(out, DT::f32, out_layout));
    p.qvalues[s.out] = owned(layout_desc(out, p.qtype[s.out], out_layout));
    dnnl::primitive_attr ra;
    ra.set_output_scales(0, {1.0f / p.qscale[s.out]});
    ex.quantize = dnnl::reorder(dnnl::reorder::primitive_desc(p.values[s.out], p.qvalues[s.out], ra));
    return;
  }
  if (ex.alias)
    p.values[s.out] = memory(layout_desc(out, DT::f32, out_layout), engine, DNNL_MEMORY_NONE);
  else
    p.values[s.out] = owned(layout_desc(out, DT::f32, out_layout));
}

void FusedModel::Impl::run_step(Plan& p, size_t si, dnnl::stream& st) {
  const Step& s = steps[si];
  Exec& ex = p.execs[si];
  if (s.kind == Step::kGeneric) {
    jit::Stack stack;
    stack.reserve(s.args.size());
    for (size_t i = 0; i < s.args.size(); ++i) {
      const int a = s.args[i];
      if (a >= 0 && s.strided && i == 0) {
        // view() needs strides that the interpreter's tensor has and ours may not: a oneDNN
        // value is NHWC, and ATen's ops keep that layout in what they compute from it
        c10::IValue v = ivalue_of(p, a);
        stack.push_back(v.isTensor() ? v.toTensor().contiguous() : v);
        continue;
      }
      stack.push_back(a >= 0 ? ivalue_of(p, a) : s.consts[i]);
    }
    try {
      (*s.op)(stack);
    } catch (const c10::Error& e) {
      throw Error(s.op_name + " (through ATen): " + e.what_without_backtrace());
    }
    if (stack.size() != s.outs.size())
      throw Error(s.op_name + " returned " + std::to_string(stack.size()) + " values, not " + std::to_string(s.outs.size()));
    for (size_t k = 0; k < s.outs.size(); ++k) p.ivals[s.outs[k]] = std::move(stack[k]);
    return;
  }
  for (Stage& g : ex.stages) {
    at::Tensor t = tensor_of(p, g.value);
    if (t.scalar_type() != at::kFloat) throw Error(std::string("a oneDNN layer reads a ") + c10::toString(t.scalar_type()) + " tensor");
    if (t.sizes() != c10::IntArrayRef(g.sizes))
      throw Error("a tensor changed shape between batches of one shape: " + shape_str(g.sizes) + " then " + c10::str(t.sizes()));
    t = g.layout == Layout::kNHWC ? t.contiguous(at::MemoryFormat::ChannelsLast) : t.contiguous();
    g.mem.set_data_handle(t.data_ptr());
    p.keep.push_back(std::move(t));
  }
  memory& dst = ex.writes_int8 ? p.qvalues[s.out] : p.values[s.out];
  memory src = ex.int8 ? p.qvalues[s.in] : ex.src;
  int64_t n = 1;
  for (int64_t d : dst.get_desc().dims()) n *= d;
  if (s.kind == Step::kFlatten) {
    if (ex.alias) {
      dst.set_data_handle(src.get_data_handle());
    } else {  // NHWC -> NCHW order, as torch.flatten reads it
      const std::vector<int64_t>& in = sizes_of(p, s.in);
      memory nchw(memory::desc(Dims(in.begin(), in.end()), memory::data_type::f32, Tag::nchw), engine,
                  dst.get_data_handle());
      dnnl::reorder(src, nchw).execute(st, src, nchw);
      st.wait();
    }
    return;
  }
  if (ex.aten_layer) {  // ATen writes the output; the chain's carrier (if any) then runs on it in place
    const Dims d = src.get_desc().dims();
    if (s.kind == Step::kLinear) {
      const at::Tensor a = at::from_blob(src.get_data_handle(), {d[0], d[1]}, at::TensorOptions(at::kFloat));
      at::Tensor y = at::from_blob(dst.get_data_handle(), {d[0], s.weight.size(0)}, at::TensorOptions(at::kFloat));
      if (s.bias.defined())
        at::addmm_out(y, s.bias, a, s.weight.t());
      else
        at::mm_out(y, a, s.weight.t());
    } else {  // adaptive average pooling, NHWC in and out
      auto nhwc = [](void* data, const Dims& e) {
        const std::vector<int64_t> sizes(e.begin(), e.end());
        return at::from_blob(data, sizes, strides_of(sizes, Layout::kNHWC), at::TensorOptions(at::kFloat));
      };
      const Dims od = dst.get_desc().dims();
      nhwc(dst.get_data_handle(), od).copy_(at::adaptive_avg_pool2d(nhwc(src.get_data_handle(), d), {od[2], od[3]}));
    }
    src = dst;
  }
  if (ex.posts_on_cpu && s.kind == Step::kEltwise) {
    std::memcpy(dst.get_data_handle(), src.get_data_handle(), n * sizeof(float));
  } else if (ex.prim) {
    std::unordered_map<int, memory> args = ex.args;
    args[DNNL_ARG_SRC] = src;
    if (ex.src2) args[DNNL_ARG_SRC_1] = ex.src2;  // the second operand of a binary op or carrier
    args[DNNL_ARG_DST] = dst;
    ex.prim.execute(st, args);
    st.wait();
  }
  if (ex.posts_on_cpu && !s.post.empty()) {
    std::vector<const float*> added;
    for (const memory& m : ex.added) added.push_back(static_cast<const float*>(m.get_data_handle()));
    const Dims d = dst.get_desc().dims();
    apply_post_ops(static_cast<float*>(dst.get_data_handle()), n, d[1], s.post, added);
  }
  if (ex.dequantize) ex.dequantize.execute(st, p.qvalues[s.out], p.values[s.out]);
  if (ex.quantize) ex.quantize.execute(st, p.values[s.out], p.qvalues[s.out]);
  if (ex.dequantize || ex.quantize) st.wait();
}

at::Tensor FusedModel::Impl::run(Plan& p, const at::Tensor& x) {
  dnnl::stream st(engine);
  if (!p.built && p.execs.empty()) {
    p.sizes[0] = x.sizes().vec();
    p.layout[0] = x.dim() == 4 ? Layout::kNHWC : Layout::kRows;
    const memory::desc d = layout_desc(memory_dims(p.sizes[0], p.layout[0]), memory::data_type::f32, p.layout[0]);
    // NCHW and NHWC are the same bytes when C == 1 or H * W == 1: no reorder then
    p.input_reorder = x.dim() == 4 && x.size(1) != 1 && x.size(2) * x.size(3) != 1;
    p.values[0] = p.input_reorder ? owned(d) : memory(d, engine, DNNL_MEMORY_NONE);
  }
  if (p.input_reorder) {
    memory xin(memory::desc(p.values[0].get_desc().dims(), memory::data_type::f32, Tag::nchw), engine,
               const_cast<float*>(x.data_ptr<float>()));
    dnnl::reorder(xin, p.values[0]).execute(st, xin, p.values[0]);
    st.wait();
  } else {
    p.values[0].set_data_handle(const_cast<float*>(x.data_ptr<float>()));
  }
  p.keep.clear();
  for (size_t si = 0; si < steps.size(); ++si) {
    const bool first = si >= p.execs.size();
    if (first) build_step(p, si);
    bool taken = true;
    for (const auto& [cond, expect] : steps[si].guards) taken = taken && p.ivals[cond].toBool() == expect;
    if (!taken) continue;
    try {
      run_step(p, si, st);
    } catch (const dnnl::error& e) {
      // oneDNN 2.6 can accept a post-op chain and still refuse to run it (a gemm inner
      // product with a tensor added): the chain then runs as the plain loops after it
      if (first && p.execs[si].int8) throw;  // forward() retries the plan in float
      if (!first || p.execs[si].posts_on_cpu || steps[si].kind == Step::kGeneric)
        throw Error("oneDNN failed on the layer of " + steps[si].op_name + " (inputs of shape " + c10::str(x.sizes()) +
                    "): " + e.what());
      p.execs.pop_back();
      build_step(p, si, /*posts_on_cpu=*/true);
      run_step(p, si, st);
    }
  }
  p.built = true;
  st.wait();
  at::Tensor out;
  const int o = output;
  if (p.layout[o] == Layout::kNone) {
    const c10::IValue& v = p.ivals[o];
    if (!v.isTensor()) throw Error("the model's output is not a tensor");
    out = v.toTensor().clone(at::MemoryFormat::Contiguous);
  } else {
    out = at::empty(p.sizes[o], x.options());
    memory& ov = p.values[o];
    if (p.layout[o] == Layout::kNHWC) {
      memory m(memory::desc(ov.get_desc().dims(), memory::data_type::f32, Tag::nchw), engine, out.data_ptr());
      dnnl::reorder(ov, m).execute(st, ov, m);
      st.wait();
    } else {
      std::memcpy(out.data_ptr(), ov.get_data_handle(), out.numel() * sizeof(float));
    }
  }
  p.keep.clear();
  for (c10::IValue& v : p.ivals) v = c10::IValue();
  return out;
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
int FusedModel::onednn_ops() const { return impl_->onednn_ops; }
std::map<std::string, int> FusedModel::aten_ops() const { return impl_->aten_ops; }
int FusedModel::int8_layers(const at::Tensor& x) const {
  auto it = impl_->plans.find(x.sizes().vec());
  int n = 0;
  if (it != impl_->plans.end())
    for (const Impl::Exec& e : it->second->execs) n += e.int8;
  return n;
}
std::string FusedModel::summary(const at::Tensor& x) const {
  int aten = 0;
  std::string names;
  for (const auto& [name, count] : impl_->aten_ops) {
    aten += count;
    names += (names.empty() ? "" : ", ") + name + (count > 1 ? " x" + std::to_string(count) : "");
  }
  int layers = 0;
  for (const Step& st : impl_->steps) layers += st.kind == Step::kConv || st.kind == Step::kLinear;
  std::string s = std::to_string(impl_->onednn_ops) + " of " + std::to_string(impl_->onednn_ops + aten) +
                  " ops on oneDNN, " + std::to_string(int8_layers(x)) + " of " + std::to_string(layers) +
                  " conv and linear layers in int8";
  if (aten) s += "; through ATen: " + names;
  return s;
}

std::unique_ptr<FusedModel> FusedModel::compile(const torch::jit::Module& frozen, std::string* why_not, bool int8) {
  auto impl = std::make_unique<Impl>();
  impl->int8 = int8;
  try {
    impl->graph = frozen.get_method("forward").graph();
    fused::CompiledGraph c = fused::compile_graph(impl->graph, c10::IValue(frozen._ivalue()), int8);
    impl->steps = std::move(c.steps);
    impl->num_values = c.num_values;
    impl->output = c.output;
    impl->fused = c.fused;
    impl->onednn_ops = c.onednn_ops;
    impl->aten_ops = c.aten_ops;
  } catch (const fused::Unsupported& e) {
    if (why_not) *why_not = e.what();
    return nullptr;
  } catch (const c10::Error& e) {
    if (why_not) *why_not = std::string(e.what_without_backtrace());
    return nullptr;
  }
  return std::unique_ptr<FusedModel>(new FusedModel(std::move(impl)));
}

at::Tensor FusedModel::forward(const at::Tensor& x_in) {
  if (x_in.dim() < 1) throw Error("the compiled model takes a batch of inputs, got a scalar");
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const std::vector<int64_t> key = x.sizes().vec();
  auto it = impl_->plans.find(key);
  if (it == impl_->plans.end()) {
    auto p = std::make_unique<Impl::Plan>();
    impl_->prepare(*p, impl_->int8);
    it = impl_->plans.emplace(key, std::move(p)).first;
  }
  Impl::Plan& p = *it->second;
  try {
    try {
      return impl_->run(p, x);
    } catch (const dnnl::error&) {
      if (!p.use_int8 || p.built) throw;
      impl_->prepare(p, false);  // an integer layer oneDNN does not take: all float
      return impl_->run(p, x);
    }
  } catch (const dnnl::error& e) {
    if (!p.built) impl_->plans.erase(key);
    throw Error(std::string("oneDNN cannot run this model on inputs of shape ") + c10::str(x.sizes()) + ": " + e.what());
  } catch (const c10::Error& e) {
    if (!p.built) impl_->plans.erase(key);
    throw Error(e.what_without_backtrace());
  } catch (...) {
    if (!p.built) impl_->plans.erase(key);
    throw;
  }
}

}  // namespace anybit
