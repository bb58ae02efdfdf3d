// Runs the Steps of a compiled graph (fused_graph.h) on oneDNN; see fused_eval.h. A Plan
// instantiates the Steps for one input shape, cached per shape. A plan is built during its
// first forward, step by step, so that each step sees the shapes its inputs actually have
// (an op run through ATen has no shape function here).
#include "anybit/runtime/fused_eval.h"

#include "anybit/runtime/fused_eval_internal.h"

namespace anybit {
namespace fused_impl {

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

}  // namespace fused_impl


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
  p.buffers.clear();
  p.buffer_of.clear();
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
    // a flatten that keeps the bytes makes its output this staged tensor under another shape
    const int until = s.kind == Step::kFlatten && ex.alias ? buffer_end[s.out] : static_cast<int>(si);
    p.keep.emplace_back(until, std::move(t));
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
    } else {  // adaptive average pooling or a conv, NHWC in and out
      auto nhwc = [](void* data, const Dims& e) {
        const std::vector<int64_t> sizes(e.begin(), e.end());
        return at::from_blob(data, sizes, strides_of(sizes, Layout::kNHWC), at::TensorOptions(at::kFloat));
      };
      const Dims od = dst.get_desc().dims();
      const at::Tensor x = nhwc(src.get_data_handle(), d);
      nhwc(dst.get_data_handle(), od)
          .copy_(s.kind == Step::kConv
                     ? at::conv2d(x, s.weight, s.bias, s.stride, s.padding, s.dilation, s.groups)
                     : at::adaptive_avg_pool2d(x, {od[2], od[3]}));
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
    if (!taken) {
      release(p, si);
      continue;
    }
    // oneDNN 2.6 can accept a primitive and still refuse to run it: a post-op chain (a gemm
    // inner product with a tensor added), which then runs as the plain loops after it, or a
    // conv (its gemm conv on NHWC with AVX2 only, e.g. AlexNet's first layer), which then
    // runs as ATen's conv on the same buffers
    for (;;) {
      try {
        run_step(p, si, st);
        break;
      } catch (const dnnl::error& e) {
        Exec& ex = p.execs[si];
        if (first && ex.int8) throw;  // forward() retries the plan in float
        const bool conv = steps[si].kind == Step::kConv && !ex.aten_layer;
        if (!first || steps[si].kind == Step::kGeneric || (ex.posts_on_cpu && !conv))
          throw Error("oneDNN failed on the layer of " + steps[si].op_name + " (inputs of shape " +
                      c10::str(x.sizes()) + "): " + e.what());
        const bool to_aten = ex.posts_on_cpu;  // the chain was on the CPU already: the layer itself
        p.execs.pop_back();
        build_step(p, si, /*posts_on_cpu=*/true, /*aten_conv=*/to_aten);
      }
    }
    release(p, si);
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

void FusedModel::Impl::release(Plan& p, size_t si) {
  p.keep.erase(std::remove_if(p.keep.begin(), p.keep.end(),
                              [&](const std::pair<int, at::Tensor>& k) { return k.first <= static_cast<int>(si); }),
               p.keep.end());
  for (int v : dies_after[si])
    if (p.layout[v] == Layout::kNone) p.ivals[v] = c10::IValue();
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
// Over the execs of the plan for x's shape (none before forward ran on it): how many are
// int8 layers, and how many are convs run through ATen.
std::pair<int, int> FusedModel::Impl::count_execs(const at::Tensor& x) const {
  std::pair<int, int> n{0, 0};
  auto it = plans.find(x.sizes().vec());
  if (it == plans.end()) return n;
  for (size_t i = 0; i < it->second->execs.size(); ++i) {
    const Exec& e = it->second->execs[i];
    n.first += e.int8;
    n.second += e.aten_layer && steps[i].kind == Step::kConv;
  }
  return n;
}

int FusedModel::int8_layers(const at::Tensor& x) const { return impl_->count_execs(x).first; }
int64_t FusedModel::buffer_bytes(const at::Tensor& x) const {
  auto it = impl_->plans.find(x.sizes().vec());
  int64_t n = 0;
  if (it != impl_->plans.end())
    for (const Impl::Plan::Buffer& b : it->second->buffers) n += b.bytes.numel();
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
  const auto [int8, aten_convs] = impl_->count_execs(x);
  std::string s = std::to_string(impl_->onednn_ops) + " of " + std::to_string(impl_->onednn_ops + aten) +
                  " ops on oneDNN, " + std::to_string(int8) + " of " + std::to_string(layers) +
                  " conv and linear layers in int8";
  if (aten) s += "; through ATen: " + names;
  if (aten_convs)
    s += "; " + std::to_string(aten_convs) + " conv" + (aten_convs > 1 ? "s" : "") + " through ATen (oneDNN refused at run time)";
  if (impl_->int8_off_here) s += "; int8 off: this CPU has no VNNI, and oneDNN's int8 kernels would saturate";
  return s;
}

bool FusedModel::int8_exact_here() {
  static const bool exact = [] {
    using isa = dnnl::cpu_isa;
    const isa i = dnnl::get_effective_cpu_isa();
    return i == isa::avx512_core_vnni || i == isa::avx512_core_bf16 || i == isa::avx512_core_amx ||
           i == isa::avx2_vnni;
  }();
  return exact;
}

std::unique_ptr<FusedModel> FusedModel::compile(const torch::jit::Module& frozen, std::string* why_not, bool int8) {
  auto impl = std::make_unique<Impl>();
  impl->int8_off_here = int8 && !int8_exact_here();
  int8 = int8 && !impl->int8_off_here;
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
    impl->buffer_end = std::move(c.buffer_end);
    impl->dies_after.assign(impl->steps.size(), {});
    for (int v = 0; v < c.num_values; ++v)
      if (c.last_read[v] >= 0 && c.last_read[v] < static_cast<int>(impl->steps.size()))
        impl->dies_after[c.last_read[v]].push_back(v);
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
  if (!at::isFloatingType(x_in.scalar_type()))
    throw Error(std::string("the oneDNN layers take float inputs, and the model is fed ") +
                c10::toString(x_in.scalar_type()) + " (token ids?): the interpreter runs it");
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
