// Cross-layer equalization: see cle.h for the method and its paper.
#include "anybit/ptq/cle.h"

#include <torch/csrc/jit/ir/ir.h>

#include <cmath>
#include <limits>

namespace anybit {
namespace jit = torch::jit;

namespace {

// A conv2d/linear node's weight (and bias) as attribute paths, and its groups.
struct Layer {
  jit::Node* node = nullptr;
  std::string weight, bias;  // bias empty: none
  int64_t groups = 1;
  bool linear = false;
};

bool as_layer(jit::Node* n, jit::Value* self, const jit::Module& m, Layer* out) {
  const std::string k = n->kind().toQualString();
  Layer l;
  l.node = n;
  int groups_input = -1;
  if (k == "aten::conv2d") {
    groups_input = 6;
  } else if (k == "aten::_convolution") {
    auto transposed = jit::toIValue(n->input(6));
    if (!transposed || !transposed->isBool() || transposed->toBool()) return false;
    groups_input = 8;
  } else if (k == "aten::linear") {
    l.linear = true;
  } else {
    return false;
  }
  if (!attr_path(n->input(1), self, &l.weight)) return false;
  if (!resolve_attr(m, l.weight).isTensor()) return false;
  jit::Value* b = n->input(2);
  if (b->type()->kind() != c10::TypeKind::NoneType) {
    if (!attr_path(b, self, &l.bias)) return false;  // a computed bias: leave the pair alone
    if (resolve_attr(m, l.bias).isNone()) l.bias.clear();
  }
  if (groups_input >= 0) {
    auto g = jit::toIValue(n->input(groups_input));
    if (!g || !g->isInt()) return false;
    l.groups = g->toInt();
  }
  *out = l;
  return true;
}

// The activation between two layers: nothing, ReLU, or ReLU6 (relu6 or hardtanh(0, 6)).
enum class Joint { kNone, kRelu, kRelu6 };

bool is_relu6(jit::Node* n) {
  const std::string k = n->kind().toQualString();
  if (k == "aten::relu6" || k == "aten::relu6_") return true;
  if (k != "aten::hardtanh" && k != "aten::hardtanh_") return false;
  auto lo = jit::toIValue(n->input(1)), hi = jit::toIValue(n->input(2));
  return lo && hi && lo->isScalar() && hi->isScalar() && lo->toScalar().toDouble() == 0.0 &&
         hi->toScalar().toDouble() == 6.0;
}

struct Pair {
  Layer first, second;
  jit::Node* relu6 = nullptr;  // the ReLU6 to turn into ReLU (relu6_to_relu)
};

// max |w| over everything but `axis` (0: per output channel, 1: per input channel).
at::Tensor channel_ranges(const at::Tensor& w, int64_t axis) {
  at::Tensor t = w.detach().to(at::kDouble).abs().transpose(0, axis).contiguous();
  return std::get<0>(t.reshape({t.size(0), -1}).max(1));
}

}  // namespace

CleResult equalize_cross_layer(ModelGraph& g, const CleOptions& options) {
  jit::Graph& graph = *g.graph;
  jit::Value* self = graph.inputs().at(0);
  CleResult result;
  std::vector<Pair> pairs;
  for (jit::Node* n : graph.nodes()) {
    Pair p;
    if (!as_layer(n, self, g.module, &p.second)) continue;
    jit::Value* x = n->input(0);
    jit::Node* mid = x->node();
    Joint joint = Joint::kNone;
    const std::string mk = mid->kind().toQualString();
    if (mk == "aten::relu" || mk == "aten::relu_") {
      joint = Joint::kRelu;
    } else if (is_relu6(mid)) {
      if (!options.relu6_to_relu) continue;
      joint = Joint::kRelu6;
    }
    if (joint != Joint::kNone) {
      if (!only_user_besides_shape_checks(x, n)) continue;  // the activation feeds others too
      x = mid->input(0);
      if (!only_user_besides_shape_checks(x, mid)) continue;
    } else if (!only_user_besides_shape_checks(x, n)) {
      continue;
    }
    if (!as_layer(x->node(), self, g.module, &p.first)) continue;
    const at::Tensor w1 = resolve_attr(g.module, p.first.weight).toTensor();
    const at::Tensor w2 = resolve_attr(g.module, p.second.weight).toTensor();
    const int64_t channels = w1.size(0);
    // The first layer's output channels must be the second's input channels one to one:
    // groups 1 (w2 [O, C, ...]) or depthwise (w2 [C, 1, ...], groups C).
    const bool depthwise2 = p.second.groups == channels && w2.size(0) == channels && w2.size(1) == 1;
    const bool dense2 = p.second.groups == 1 && w2.size(1) == channels;
    if (!depthwise2 && !dense2) continue;
    if (p.first.groups != 1 && !(p.first.groups == channels && w1.size(1) == 1)) continue;
    if (w1.dim() != w2.dim() && !(p.first.linear && p.second.linear)) continue;
    if (joint == Joint::kRelu6) p.relu6 = mid;
    pairs.push_back(p);
  }

  torch::NoGradGuard no_grad;
  for (const Pair& p : pairs) {
    if (!p.relu6) continue;
    // ReLU6 -> ReLU: hardtanh(x, 0, inf) keeps the node (and the point's name and kind).
    jit::WithInsertPoint guard(p.relu6);
    jit::Value* inf = graph.insertConstant(std::numeric_limits<double>::infinity());
    const std::string k = p.relu6->kind().toQualString();
    if (k == "aten::hardtanh" || k == "aten::hardtanh_") {
      p.relu6->replaceInput(2, inf);
    } else {
      jit::Node* r = graph.create(k == "aten::relu6_" ? c10::aten::relu_ : c10::aten::relu, {p.relu6->input(0)});
      r->insertBefore(p.relu6);
      r->output()->setType(p.relu6->output()->type());
      r->setScope(p.relu6->scope());
      r->setSourceRange(p.relu6->sourceRange());
      p.relu6->output()->replaceAllUsesWith(r->output());
      p.relu6->destroy();
    }
    ++result.relu6_replaced;
  }

  for (int it = 0; it < options.max_iterations && !pairs.empty(); ++it) {
    double largest = 0;
    for (const Pair& p : pairs) {
      at::Tensor w1 = resolve_attr(g.module, p.first.weight).toTensor();
      at::Tensor w2 = resolve_attr(g.module, p.second.weight).toTensor();
      const bool depthwise2 = p.second.groups != 1;
      const at::Tensor r1 = channel_ranges(w1, 0);
      const at::Tensor r2 = channel_ranges(w2, depthwise2 ? 0 : 1);
      // s = sqrt(r1 / r2); a channel that is zero on either side keeps s = 1
      at::Tensor s = (r1 / r2).sqrt();
      s = at::where((r1 > 0) & (r2 > 0) & s.isfinite(), s, at::ones_like(s));
      largest = std::max(largest, s.log().abs().max().item<double>());
      std::vector<int64_t> out_shape(w1.dim(), 1), in_shape(w2.dim(), 1);
      out_shape[0] = s.size(0);
      in_shape[depthwise2 ? 0 : 1] = s.size(0);
      w1.div_(s.to(w1.scalar_type()).reshape(out_shape));
      w2.mul_(s.to(w2.scalar_type()).reshape(in_shape));
      if (!p.first.bias.empty()) {
        at::Tensor b1 = resolve_attr(g.module, p.first.bias).toTensor();
        b1.div_(s.to(b1.scalar_type()));
      }
    }
    result.iterations = it + 1;
    if (largest < options.tolerance) break;
  }
  result.pairs = static_cast<int>(pairs.size());
  if (result.relu6_replaced) {
    invalidate_plan(g);
    find_points(g);
  }
  return result;
}

}  // namespace anybit
