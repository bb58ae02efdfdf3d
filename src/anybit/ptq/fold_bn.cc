// BatchNorm folding (Jacob et al. 2018, section 3.2; Krishnamoorthi 2018):
//   y = gamma * (conv(x, W) + b - mean) / sqrt(var + eps) + beta
//     = conv(x, W * k) + (b - mean) * k + beta,   k = gamma / sqrt(var + eps)
// applied to every eval-mode aten::batch_norm whose input is a conv/linear output used
// nowhere else. The folded weight replaces the conv's weight attribute; the folded bias
// becomes a buffer on the root module (a conv without bias has no tensor to overwrite).
#include "anybit/ptq/fold_bn.h"

#include <torch/csrc/jit/ir/ir.h>

#include <cmath>

#include "anybit/quant/node.h"
#include "anybit/quant/spec.h"

namespace anybit {
namespace jit = torch::jit;

namespace {

bool is_none(jit::Value* v) { return v->type()->kind() == c10::TypeKind::NoneType; }

}  // namespace

int fold_batch_norm(ModelGraph& g) {
  // BatchNorm in eval mode only: settle `self.training` branches first
  g.module.eval();
  specialize_fixed_ifs(g, true);
  jit::Graph& graph = *g.graph;
  jit::Value* self = graph.inputs().at(0);
  int folded = 0;
  std::vector<jit::Node*> to_destroy;
  for (jit::Node* bn : graph.nodes()) {
    if (bn->kind() != c10::aten::batch_norm) continue;
    jit::Node* conv = bn->input(0)->node();
    const std::string ck = conv->kind().toQualString();
    const bool is_conv = ck == "aten::conv1d" || ck == "aten::conv2d" || ck == "aten::conv3d" ||
                         ck == "aten::_convolution";
    const bool is_linear = ck == "aten::linear";
    if (!is_conv && !is_linear) continue;
    if (!only_user_besides_shape_checks(conv->output(), bn)) continue;
    if (ck == "aten::_convolution") {
      auto tr = jit::toIValue(conv->input(6));
      if (!tr || !tr->isBool() || tr->toBool()) continue;  // transposed convs keep their BN
    }
    // batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)
    // `training` is a constant (traced) or self.<bn>.training (scripted): fold only in eval
    bool training = true;
    if (auto tr = jit::toIValue(bn->input(5)); tr && tr->isBool()) {
      training = tr->toBool();
    } else if (std::string tp; attr_path(bn->input(5), self, &tp)) {
      c10::IValue v = resolve_attr(g.module, tp);
      training = !v.isBool() || v.toBool();
    }
    if (training) continue;
    auto eps = jit::toIValue(bn->input(7));
    if (!eps || !eps->isDouble()) continue;
    std::string wpath, bpath, gpath, betapath, mpath, vpath;
    // a quantized model (folding when BatchNorm statistics freeze during fine-tuning): the
    // weight reaches the conv through its quantizer, whose per-channel range scales with k
    jit::Node* wq = conv->input(1)->node();
    std::vector<std::string> qranges;  // attribute paths of the quantizer's scale / alpha / delta
    const int nranges = qnode::info(qnode::op_of(wq)).ranges;  // the quantizer's ranges that scale with k
    if (nranges > 0) {
      if (!attr_path(wq->input(0), self, &wpath)) continue;
      for (int i = 1; i <= nranges; ++i) {
        std::string rp;
        if (!attr_path(wq->input(i), self, &rp))
          throw Error(wpath + ": its quantizer's range is not a module attribute; BatchNorm cannot be folded into it");
        qranges.push_back(rp);
      }
    } else if (!attr_path(conv->input(1), self, &wpath)) {
      continue;
    }
    if (!attr_path(bn->input(3), self, &mpath) || !attr_path(bn->input(4), self, &vpath)) continue;
    const bool has_gamma = !is_none(bn->input(1)), has_beta = !is_none(bn->input(2));
    if (has_gamma && !attr_path(bn->input(1), self, &gpath)) continue;
    if (has_beta && !attr_path(bn->input(2), self, &betapath)) continue;
    bool has_bias = !is_none(conv->input(2));
    if (has_bias && !attr_path(conv->input(2), self, &bpath)) continue;
    if (has_bias && resolve_attr(g.module, bpath).isNone()) has_bias = false;  // Optional[Tensor] = None

    torch::NoGradGuard no_grad;
    at::Tensor W = resolve_attr(g.module, wpath).toTensor();
    at::Tensor mean = resolve_attr(g.module, mpath).toTensor().to(at::kDouble);
    at::Tensor var = resolve_attr(g.module, vpath).toTensor().to(at::kDouble);
    const int64_t C = W.size(0);
    at::Tensor gamma = has_gamma ? resolve_attr(g.module, gpath).toTensor().to(at::kDouble) : at::ones({C}, at::kDouble);
    at::Tensor beta = has_beta ? resolve_attr(g.module, betapath).toTensor().to(at::kDouble) : at::zeros({C}, at::kDouble);
    at::Tensor b = has_bias ? resolve_attr(g.module, bpath).toTensor().to(at::kDouble) : at::zeros({C}, at::kDouble);
    at::Tensor k = gamma / (var + eps->toDouble()).sqrt();
    std::vector<int64_t> kshape(W.dim(), 1);
    kshape[0] = C;
    at::Tensor W2 = (W.to(at::kDouble) * k.reshape(kshape)).to(W.scalar_type());
    at::Tensor b2 = ((b - mean) * k + beta).to(W.scalar_type());
    for (const auto& rp : qranges) {
      // q(W * k; r * |k|) = k * q(W; r) per channel (symmetric levels; a negative k mirrors
      // them, exact except at the one level -2^(b-1) has no mirror for)
      at::Tensor r = resolve_attr(g.module, rp).toTensor();
      if (r.numel() != C) {
        if ((k.abs() - k.abs().mean()).abs().max().item<double>() > 1e-12 * k.abs().max().item<double>())
          throw Error(wpath + ": a per-tensor weight quantizer cannot absorb BatchNorm's per-channel factor; "
                      "quantize the weight per_channel, or fold BatchNorm before quantizing (--fold-bn)");
        assign_attr(g.module, rp, (r.to(at::kDouble) * k.abs().mean()).to(r.scalar_type()).detach()
                                      .requires_grad_(r.requires_grad()));
      } else {
        assign_attr(g.module, rp, (r.to(at::kDouble) * k.abs().reshape(r.sizes())).to(r.scalar_type()).detach()
                                      .requires_grad_(r.requires_grad()));
      }
    }
    assign_attr(g.module, wpath, W2.detach().requires_grad_(W.requires_grad()));
    // The folded bias goes into the conv's own `bias` slot when its type allows a tensor
    // (nn.Conv2d(bias=False) in a scripted model: Optional[Tensor]), so the point keeps
    // the user's name `stem.0.bias`; otherwise it becomes a new parameter of the root.
    const size_t wdot = wpath.rfind('.');
    const std::string owner_path = wdot == std::string::npos ? "" : wpath.substr(0, wdot);
    c10::IValue owner = owner_path.empty() ? g.module._ivalue() : resolve_attr(g.module, owner_path);
    auto owner_type = owner.toObject()->type();
    std::string bias_path;
    if (has_bias) {
      bias_path = bpath;
    } else if (owner_type->hasAttribute("bias") &&
               (owner_type->getAttribute("bias")->kind() == c10::TypeKind::OptionalType ||
                owner_type->getAttribute("bias")->kind() == c10::TypeKind::TensorType)) {
      bias_path = (owner_path.empty() ? "" : owner_path + ".") + "bias";
    }
    if (!bias_path.empty()) {
      assign_attr(g.module, bias_path, b2.detach());
      jit::WithInsertPoint guard(conv);
      jit::Value* v = self;
      size_t start = 0;
      for (;;) {
        const size_t dot = bias_path.find('.', start);
        v = graph.insertGetAttr(v, bias_path.substr(start, dot == std::string::npos ? dot : dot - start));
        if (dot == std::string::npos) break;
        start = dot + 1;
      }
      conv->replaceInput(2, v);
    } else {
      std::string bias_name = "anybit_folded__";
      for (char c : wpath) bias_name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
      bias_name += "__bias";
      if (g.module.hasattr(bias_name)) continue;
      g.module.register_parameter(bias_name, b2.detach(), false);
      jit::WithInsertPoint guard(conv);
      conv->replaceInput(2, graph.insertGetAttr(self, bias_name));
    }
    bn->output()->replaceAllUsesWith(conv->output());
    to_destroy.push_back(bn);
    ++folded;
  }
  for (jit::Node* n : to_destroy) n->destroy();
  if (folded) {
    invalidate_plan(g);
    find_points(g);
  }
  return folded;
}

}  // namespace anybit
