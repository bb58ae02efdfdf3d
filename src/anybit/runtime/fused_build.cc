// Building one step of a plan: its oneDNN primitive (or ATen operation), its memory and
// layouts, and the post-ops fused into it. See fused_eval.cc.
#include "anybit/runtime/fused_eval_internal.h"

namespace anybit {

memory FusedModel::Impl::pooled(Plan& p, const memory::desc& d, int v, bool integer, size_t si) {
  const size_t need = d.get_size();
  const int step = static_cast<int>(si);
  // a step built again (its post-ops moved to the CPU) asks again and keeps the buffer it had
  auto it = p.buffer_of.find({v, integer});
  if (it == p.buffer_of.end() || p.buffers[it->second].bytes.numel() < static_cast<int64_t>(need)) {
    size_t best = p.buffers.size();
    for (size_t b = 0; b < p.buffers.size(); ++b) {
      const Plan::Buffer& f = p.buffers[b];
      if (f.busy_until < step && f.bytes.numel() >= static_cast<int64_t>(need) &&
          (best == p.buffers.size() || f.bytes.numel() < p.buffers[best].bytes.numel()))
        best = b;
    }
    if (best == p.buffers.size())
      p.buffers.push_back({at::empty({static_cast<int64_t>(std::max<size_t>(need, 1))}, at::kByte), -1});
    it = p.buffer_of.insert_or_assign({v, integer}, best).first;
  }
  Plan::Buffer& b = p.buffers[it->second];
  b.busy_until = std::max(b.busy_until, buffer_end[v]);
  return memory(d, engine, b.bytes.data_ptr());
}

void FusedModel::Impl::build_step(Plan& p, size_t si, bool posts_on_cpu, bool aten_conv) {
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
      if (aten_conv && !ex.int8) {  // oneDNN refused this conv at run time: ATen's, its chain after it
        resolve_added(p, ex, post, out_layout, out_sizes);
        ex.aten_layer = true;
        ex.posts_on_cpu = true;
        break;
      }
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
    p.qvalues[s.out] = pooled(p, out_desc(), s.out, true, si);
    if (p.need_float[s.out]) {
      p.values[s.out] = pooled(p, layout_desc(out, DT::f32, out_layout), s.out, false, si);
      dnnl::primitive_attr ra;
      ra.set_output_scales(0, {p.qscale[s.out]});
      ex.dequantize = dnnl::reorder(dnnl::reorder::primitive_desc(p.qvalues[s.out], p.values[s.out], ra));
    }
    return;
  }
  if (p.qtype[s.out] != DT::undef) {  // k = x * (1 / s) rounds back to the integer exactly
    p.values[s.out] = pooled(p, layout_desc(out, DT::f32, out_layout), s.out, false, si);
    p.qvalues[s.out] = pooled(p, layout_desc(out, p.qtype[s.out], out_layout), s.out, true, si);
    dnnl::primitive_attr ra;
    ra.set_output_scales(0, {1.0f / p.qscale[s.out]});
    ex.quantize = dnnl::reorder(dnnl::reorder::primitive_desc(p.values[s.out], p.qvalues[s.out], ra));
    return;
  }
  if (ex.alias)
    p.values[s.out] = memory(layout_desc(out, DT::f32, out_layout), engine, DNNL_MEMORY_NONE);
  else
    p.values[s.out] = pooled(p, layout_desc(out, DT::f32, out_layout), s.out, false, si);
}

}  // namespace anybit
