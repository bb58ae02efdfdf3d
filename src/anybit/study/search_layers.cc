// The layers a search chooses widths for, the configs that set them, and the metrics that
// compare a quantized model's logits with the float model's; see search.cc.
#include <torch/csrc/jit/api/module.h>
#include <torch/script.h>

#include <fmt/core.h>

#include <functional>
#include <map>
#include <set>
#include <string>

#include "anybit/api/quantize.h"
#include "anybit/ptq/capture.h"
#include "anybit/study/search_internal.h"

namespace anybit {
namespace search_impl {
namespace jit = torch::jit;

bool is_layout_op(jit::Node* n) {
  static const std::set<std::string> ops = {
      "aten::flatten", "aten::view",      "aten::reshape",     "aten::contiguous", "aten::dropout",
      "aten::dropout_", "aten::feature_dropout", "aten::squeeze", "aten::unsqueeze", "aten::permute",
      "aten::transpose", "aten::t",       "aten::detach",      "aten::clone"};
  return ops.count(n->kind().toQualString()) > 0;
}

// The layers (quantized conv/linear weights), the activation quantizers and which feeds which.
Model analyze(ModelGraph& g, const Config& base, const DataSource& calib) {
  Model m;
  const std::vector<PointReport> plan_ = plan(g, base);
  std::map<jit::Value*, int> act_of;
  std::vector<const Point*> layer_points;
  for (const auto& r : plan_) {
    if (r.assignment.spec.is_float()) continue;
    const Point* p = g.find(r.point.name);
    if (!p) continue;
    if (r.point.role == Role::kWeight && (r.point.kind == "conv" || r.point.kind == "linear")) {
      Layer l;
      l.point = p->name;
      l.params = p->numel;
      l.channels = p->shape.empty() ? 1 : p->shape.at(p->channel_axis);
      m.layers.push_back(l);
      layer_points.push_back(p);
    } else if (r.point.role == Role::kActivation || r.point.role == Role::kInput) {
      act_of[p->value] = static_cast<int>(m.acts.size());
      m.acts.push_back({p->name, r.assignment.spec, {}});
    }
  }
  if (m.layers.empty()) throw Error("search: the model has no conv or linear weights to search widths for");
  // MACs per sample from one sample's layer inputs and outputs
  std::vector<jit::Value*> vals;
  for (const Point* p : layer_points) {
    vals.push_back(p->node->input(0));
    vals.push_back(p->node->output(0));
  }
  const std::vector<at::Tensor> seen = capture_values(g, vals, calib, 1, 1);
  for (size_t i = 0; i < layer_points.size(); ++i) {
    const Point* p = layer_points[i];
    Layer& l = m.layers[i];
    const int64_t in = seen[2 * i].numel(), out = seen[2 * i + 1].numel();
    // each output takes numel / out_channels products; a transposed conv spreads each input
    l.macs = p->channel_axis == 1 ? in * (p->numel / p->shape.at(0)) : out * (p->numel / std::max<int64_t>(1, l.channels));
    m.params += l.params;
    m.macs += l.macs;
    jit::Value* v = p->node->input(0);
    while (true) {
      auto it = act_of.find(v);
      if (it != act_of.end()) {
        l.act = it->second;
        m.acts[it->second].consumers.push_back(static_cast<int>(i));
        break;
      }
      if (v->node()->kind() == c10::prim::Param || !is_layout_op(v->node())) break;
      v = v->node()->input(0);
    }
  }
  return m;
}

std::string quote(const std::string& s) { return "'" + s + "'"; }

// The config: the base rules, then one rule per layer and per activation quantizer.
std::string config_text(const std::string& base, const Model& m, const std::vector<int>& wbits,
                        const std::vector<int>& abits) {
  std::string c = base;
  for (size_t i = 0; i < m.layers.size(); ++i)
    c += fmt::format("  - {{match: {}, spec: 'int{}:per_channel'}}\n", quote(m.layers[i].point), wbits[i]);
  for (size_t i = 0; i < m.acts.size(); ++i) {
    QuantSpec s = m.acts[i].spec;
    s.bits = abits[i];
    c += fmt::format("  - {{match: {}, spec: '{}'}}\n", quote(m.acts[i].point), s.str());
  }
  return c;
}

double kl_or_noise(const at::Tensor& ref, const at::Tensor& q, const std::string& metric) {
  if (metric == "sqnr")
    return (q - ref).pow(2).sum().item<double>() / std::max(1e-30, ref.pow(2).sum().item<double>());
  const at::Tensor lp = ref.log_softmax(1), lq = q.log_softmax(1);
  return (lp.exp() * (lp - lq)).sum(1).mean().item<double>();
}

at::Tensor run_logits(jit::Module& m, const at::Tensor& x, int64_t batch, const std::string& scores) {
  torch::NoGradGuard no_grad;
  const ScoresPicker pick(m, scores);
  std::vector<at::Tensor> outs;
  for (int64_t b = 0; b < x.size(0); b += batch)
    outs.push_back(pick(m.forward({x.slice(0, b, std::min(x.size(0), b + batch))})).reshape({std::min(batch, x.size(0) - b), -1}));
  return at::cat(outs);
}

std::string hex_hash(const std::string& s) { return fmt::format("{:016x}", std::hash<std::string>{}(s)); }

}  // namespace search_impl
}  // namespace anybit
