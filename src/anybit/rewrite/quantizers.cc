// Graph rewriting: quantizer nodes at points, int32 biases. See quantizers.h.
#include "anybit/rewrite/quantizers.h"

#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <string>
#include <vector>

#include "anybit/base/error.h"
#include "anybit/quant/node.h"

namespace anybit {
namespace jit = torch::jit;

jit::Value* insert_at_point(jit::Graph& graph, const Point& p,
                            const std::function<jit::Value*(jit::Value* x)>& build) {
  if (p.role == Role::kWeight || p.role == Role::kBias) {
    jit::WithInsertPoint guard(p.node);
    jit::Value* y = build(p.value);
    p.node->replaceInputWith(p.value, y);
    // later readers of the same attribute (p.node is the first, in the same block)
    for (const auto& [n, v] : p.more_uses) n->replaceInputWith(v, y);
    return y;
  }
  jit::Node* after = p.role == Role::kInput ? nullptr : p.node;
  jit::Node* first = after ? after->next() : *graph.nodes().begin();
  jit::Value* y;
  {
    jit::WithInsertPoint guard(first);
    y = build(p.value);
  }
  jit::Node* last = y->node();
  p.value->replaceAllUsesAfterNodeWith(last, y);
  if (p.inplace) p.node->input(0)->replaceAllUsesAfterNodeWith(last, y);
  return y;
}

namespace {

jit::Value* insert_op(jit::Graph& graph, const char* name, std::vector<jit::Value*> inputs) {
  jit::Node* n = graph.create(c10::Symbol::fromQualString(name), inputs);
  graph.insertNode(n);
  n->output()->setType(c10::TensorType::get());
  return n->output();
}

}  // namespace

Installed install_quantizer(ModelGraph& g, const Point& p, const QuantSpec& spec, const scheme::Params& P,
                            bool portable) {
  Installed out;
  Installed* report = &out;
  jit::Graph& graph = *g.graph;
  jit::Value* self = graph.inputs().at(0);
  const scheme::Entry& entry = scheme::entry_of(spec);
  report->portable = entry.portable(spec);
  if (portable && !report->portable)
    throw Error(p.name + ": spec " + spec.str() +
                " has no stock aten::fake_quantize_* form (portable save needs uniform, "
                "half-even, per-tensor or per-channel, not learned)");
  scheme::Site site;
  site.graph = &graph;
  site.portable = portable;
  auto reg = [&](const std::string& what, const at::Tensor& t, bool learned) {
    const std::string name = qnode::attribute(p.name, what);
    if (report->first_param.empty()) report->first_param = name;
    if (g.module.hasattr(name))
      throw Error(p.name + ": the model already has a quantizer here (attribute " + name + ")");
    if (learned)
      g.module.register_parameter(name, t.clone().set_requires_grad(true), false);
    else
      g.module.register_buffer(name, t.clone());
    return name;
  };
  site.param = [&](const std::string& what, const at::Tensor& t, bool learned) {
    return graph.insertGetAttr(self, reg(what, t, learned));
  };
  const bool many = (P.scale.defined() && P.scale.numel() > 1) || (P.alpha.defined() && P.alpha.numel() > 1) ||
                    (P.hi.defined() && P.hi.numel() > 1);
  if (many && spec.granularity == Granularity::kPerChannel) site.axis = spec.axis >= 0 ? spec.axis : p.channel_axis;
  site.group = spec.granularity == Granularity::kPerGroup ? spec.group_size : 0;
  insert_at_point(graph, p, [&](jit::Value* x) { return entry.insert(site, spec, P, x); });
  report->params = P.summary;
  return out;
}

namespace {

// The scale of a uniform quantizer node as a tensor value ([1] or [C]); null if the node
// is not a uniform quantizer.
jit::Value* quantizer_scale(jit::Graph& graph, jit::Node* n) {
  const qnode::OpInfo& q = qnode::info(qnode::op_of(n));
  if (!q.uniform) return nullptr;
  jit::Value* scale = n->input(q.scale);
  if (scale->type()->cast<c10::TensorType>()) return scale;
  auto s = jit::toIValue(scale);  // aten's per-tensor op takes the step as a number
  if (!s) return nullptr;
  jit::WithInsertPoint guard(n);
  return graph.insertConstant(at::full({1}, static_cast<float>(s->toDouble())));
}

}  // namespace

int quantize_biases_int32(ModelGraph& g) {
  jit::Graph& graph = *g.graph;
  int count = 0;
  for (jit::Node* n : graph.nodes()) {
    const std::string k = n->kind().toQualString();
    if (k != "aten::_convolution" && k != "aten::conv2d" && k != "aten::conv1d" && k != "aten::linear") continue;
    jit::Value* bias = n->input(2);
    if (bias->type()->kind() == c10::TypeKind::NoneType || jit::toIValue(bias)) continue;
    // An Optional[Tensor] attribute (nn.Conv2d's bias) that holds None: no bias to quantize.
    std::string bias_path;
    if (!bias->type()->cast<c10::TensorType>() && attr_path(bias, graph.inputs().at(0), &bias_path) &&
        resolve_attr(g.module, bias_path).isNone())
      continue;
    // the input's quantizer, also behind ops that keep values on its grid (flatten before a
    // classifier, max pooling, ReLU with the grid's zero on it)
    jit::Node* src = n->input(0)->node();
    for (;;) {
      const std::string sk = src->kind().toQualString();
      if (sk != "aten::flatten" && sk != "aten::view" && sk != "aten::reshape" && sk != "aten::contiguous" &&
          sk != "aten::squeeze" && sk != "aten::unsqueeze" && sk != "aten::max_pool2d" && sk != "aten::relu" &&
          sk != "aten::relu_")
        break;
      src = src->input(0)->node();
    }
    jit::Value* sx = quantizer_scale(graph, src);
    jit::Value* sw = quantizer_scale(graph, n->input(1)->node());
    if (!sx || !sw) continue;
    if (qnode::op_of(src) == qnode::Op::kAtenPerChannel) continue;
    jit::WithInsertPoint guard(n);
    auto op = [&](const char* name, std::vector<jit::Value*> in) { return insert_op(graph, name, std::move(in)); };
    jit::Value* one = graph.insertConstant(int64_t{1});
    jit::Value* b = bias;
    if (!bias->type()->cast<c10::TensorType>()) b = graph.insertUncheckedCast(bias, c10::TensorType::get());
    jit::Value* s = op("aten::mul", {sx, sw});
    jit::Value* y = op("aten::mul", {op("aten::round", {op("aten::div", {b, s})}), s});
    jit::Value* ste = op("aten::add", {b, op("aten::detach", {op("aten::sub", {y, b, one})}), one});
    n->replaceInputWith(bias, ste);
    ++count;
  }
  return count;
}


}  // namespace anybit
