// What fused_eval.cc (plans, running them, the public API) and fused_build.cc (building a
// plan's step) share: FusedModel::Impl and the layout helpers. Internal to runtime/.
#pragma once

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

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <unordered_map>

#include "anybit/base/npy.h"
#include "anybit/quant/spec.h"
#include "anybit/runtime/fused_graph.h"

namespace anybit {
namespace fused_impl {
namespace jit = torch::jit;
using dnnl::memory;
using Tag = memory::format_tag;
using Dims = memory::dims;
using fused::Layout;
using fused::PostOp;
using fused::Step;

memory::desc layout_desc(const Dims& d, memory::data_type t, Layout l);

// The strides of a tensor of `sizes` laid out as `l` (NHWC: channels fastest; rows: its own order).
std::vector<int64_t> strides_of(const std::vector<int64_t>& s, Layout l);

Dims per_channel_dims(const Dims& d);

// oneDNN's dims of a tensor of semantic sizes `sizes` laid out as `l`.
Dims memory_dims(const std::vector<int64_t>& sizes, Layout l);

float apply_activation(PostOp::Kind k, float v);

// The plain twin of the post-ops, for primitives that refuse a post-op. Channel-last
// layouts (NHWC, rows) make the channel the fastest index.
void apply_post_ops(float* y, int64_t n, int64_t channels, const std::vector<PostOp>& post,
                    const std::vector<const float*>& added);

}  // namespace fused_impl

using namespace fused_impl;  // NOLINT: the fused evaluation's shared names

struct FusedModel::Impl {
  std::vector<Step> steps;
  int num_values = 0, output = -1, fused = 0, onednn_ops = 0;
  std::map<std::string, int> aten_ops;
  std::vector<int> buffer_end;             // fused::CompiledGraph's
  std::vector<std::vector<int>> dies_after;  // per step: the values no later step reads
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
    bool aten_layer = false;  // a float linear layer (ATen's addmm), an uneven adaptive pooling or a conv oneDNN
                              // refused at run time (ATen's), its chain after it
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
    std::vector<std::pair<int, at::Tensor>> keep;  // staged tensors, this forward, and the last step that reads each
    std::vector<Exec> execs;
    bool input_reorder = false;
    // The oneDNN values' buffers: a value takes a buffer whose last holder's buffer_end is
    // before the value's step, so that a value's memory lives from its step to its
    // buffer_end and no longer.
    struct Buffer {
      at::Tensor bytes;
      int busy_until = -1;  // the last step that may read it
    };
    std::vector<Buffer> buffers;
    std::map<std::pair<int, bool>, size_t> buffer_of;  // (value, integer form) -> its buffer
    // which convs run in int8 (from the graph; no shapes needed)
    std::vector<memory::data_type> qtype;
    std::vector<float> qscale;
    std::vector<bool> int8_conv, need_float;
  };
  bool int8 = true;  // FusedModel::compile's int8 argument, where this CPU computes int8 exactly
  bool int8_off_here = false;  // int8 asked for, and off because this CPU has no VNNI
  std::map<std::vector<int64_t>, std::unique_ptr<Plan>> plans;

  void prepare(Plan& p, bool use_int8) const;
  void build_step(Plan& p, size_t si, bool posts_on_cpu = false, bool aten_conv = false);
  // Over the execs of the plan for x's shape (none before forward ran on it): the int8
  // layers, and the convs run through ATen.
  std::pair<int, int> count_execs(const at::Tensor& x) const;
  void run_step(Plan& p, size_t si, dnnl::stream& st);
  // After step si: drops the staged tensors and the ATen values that no later step reads.
  void release(Plan& p, size_t si);
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
  // Memory for the float (or integer) form of value v, written by step si, in a buffer
  // of the plan that no value reads after si (best fit), or a new one.
  memory pooled(Plan& p, const memory::desc& d, int v, bool integer, size_t si);
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

}  // namespace anybit
