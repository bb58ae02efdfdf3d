// AdaRound; see adaround.h for the objective and its source.
#include "anybit/ptq/adaround.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/optim/adam.h>

#include <cmath>

#include "anybit/data/progress.h"
#include "anybit/ptq/capture.h"
#include "anybit/source/data_source.h"

namespace anybit {
namespace jit = torch::jit;

namespace {

constexpr double kZeta = 1.1, kGamma = -0.1;




// The layer's own op, re-run with another weight. Returns false for ops whose
// hyper-parameters are not constants.
struct LayerOp {
  std::string kind;
  std::vector<c10::IValue> args;  // constant arguments after (input, weight, bias)
  at::Tensor bias;

  bool init(jit::Node* n, const jit::Module& ref, jit::Value* ref_self, jit::Node* fnode) {
    kind = n->kind().toQualString();
    size_t nargs;
    if (kind == "aten::linear") nargs = 0;
    else if (kind == "aten::conv1d" || kind == "aten::conv2d" || kind == "aten::conv3d") nargs = 4;
    else if (kind == "aten::_convolution") nargs = 10;
    else return false;
    for (size_t i = 3; i < 3 + nargs; ++i) {
      auto iv = jit::toIValue(n->input(i));
      if (!iv) return false;
      args.push_back(*iv);
    }
    if (kind != "aten::linear" && kind != "aten::_convolution" && !args[1].isIntList()) return false;  // padding='same'
    jit::Value* bv = fnode->input(2);
    std::string bp;
    if (bv->type()->kind() != c10::TypeKind::NoneType && attr_path(bv, ref_self, &bp)) {
      c10::IValue b = resolve_attr(ref, bp);
      if (b.isTensor()) bias = b.toTensor().detach();
    }
    return true;
  }

  at::Tensor operator()(const at::Tensor& x, const at::Tensor& w) const {
    const c10::optional<at::Tensor> b = bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt;
    if (kind == "aten::linear") return at::linear(x, w, b);
    if (kind == "aten::_convolution")
      return at::convolution(x, w, b, args[0].toIntVector(), args[1].toIntVector(), args[2].toIntVector(),
                             args[3].toBool(), args[4].toIntVector(), args[5].toInt());
    auto st = args[0].toIntVector(), pd = args[1].toIntVector(), dl = args[2].toIntVector();
    const int64_t groups = args[3].toInt();
    if (kind == "aten::conv1d") return at::conv1d(x, w, b, st, pd, dl, groups);
    if (kind == "aten::conv3d") return at::conv3d(x, w, b, st, pd, dl, groups);
    return at::conv2d(x, w, b, st, pd, dl, groups);
  }
};

at::Tensor recon_mse(const LayerOp& op, const at::Tensor& xq, const at::Tensor& yfp, const at::Tensor& w) {
  torch::NoGradGuard no_grad;
  double total = 0;
  const int64_t n = xq.size(0);
  for (int64_t b = 0; b < n; b += 128) {
    const int64_t k = std::min<int64_t>(128, n - b);
    total += (op(xq.narrow(0, b, k), w) - yfp.narrow(0, b, k)).pow(2).sum().item<double>();
  }
  return at::full({}, total / n);
}

}  // namespace

LearnedRounding::LearnedRounding(const at::Tensor& weight, const AdaRoundLayer& L)
    : qmin(L.qmin), qmax(L.qmax) {
  w = weight.detach().to(at::kFloat);
  std::vector<int64_t> sshape(w.dim(), 1);
  if (L.scale.numel() > 1) sshape[L.channel_axis] = L.scale.numel();
  s = L.scale.detach().to(w.device(), at::kFloat).reshape(sshape);
  const at::Tensor wf = w / s;
  w_floor = wf.floor();
  const at::Tensor rest = wf - w_floor;
  // h(V) = rest at the start: V = -log((zeta - gamma) / (rest - gamma) - 1)
  v = (-(((kZeta - kGamma) / (rest - kGamma)) - 1).log()).detach().requires_grad_(true);
}

at::Tensor LearnedRounding::h() const { return (at::sigmoid(v) * (kZeta - kGamma) + kGamma).clamp(0, 1); }

at::Tensor LearnedRounding::soft(const at::Tensor& h) const { return s * (w_floor + h).clamp(qmin, qmax); }

at::Tensor LearnedRounding::regularizer(const at::Tensor& h, double beta) {
  return (1 - (2 * h - 1).abs().pow(beta)).sum();
}

at::Tensor LearnedRounding::hard() const { return s * (w_floor + (v >= 0).to(at::kFloat)).clamp(qmin, qmax); }

at::Tensor LearnedRounding::nearest() const { return s * (w / s).round().clamp(qmin, qmax); }

std::vector<AdaRoundReport> adaround(ModelGraph& q, ModelGraph& ref, std::vector<AdaRoundLayer> layers,
                                     const DataSource& calib, const AdaRoundOptions& o) {
  std::vector<AdaRoundReport> reports;
  jit::Value* rself = ref.graph->inputs().at(0);
  data::ProgressBar bar("adaround", static_cast<int64_t>(layers.size()) * o.iterations, o.progress);
  at::Generator gen = at::detail::createCPUGenerator(0);
  // each layer's input in the quantized and in the float model from the latest value
  // captured before it that it follows from
  CaptureChain quantized(q, calib, o.samples), floats(ref, calib, o.samples);
  for (size_t li = 0; li < layers.size(); ++li) {
    const AdaRoundLayer& L = layers[li];
    LayerOp op;
    if (!op.init(L.qnode, ref.module, rself, L.fnode)) continue;
    // the layer's input in the quantized model, earlier layers already rounded
    at::Tensor xq = quantized.get(L.qnode->input(0));
    // the float layer's output from its input (the float chain keeps layer inputs, as the
    // quantized one does: a block's input serves every layer of the block)
    const at::Tensor xfp = floats.get(L.fnode->input(0));
    const auto from_input = capture_values_from(ref, L.fnode->input(0), xfp, {L.fnode->output()}, 128);
    const at::Tensor yfp =
        from_input ? (*from_input)[0] : capture_values(ref, {L.fnode->output()}, calib, o.samples, 128)[0];
    const at::Tensor W = resolve_attr(q.module, L.weight_path).toTensor();
    LearnedRounding rounding(W, L);
    torch::optim::Adam adam({rounding.v}, torch::optim::AdamOptions(o.learning_rate));
    const int64_t n = xq.size(0);
    const int warmup = o.iterations / 5;
    for (int it = 0; it < o.iterations; ++it) {
      // drawn on the CPU, so that a seed picks the same samples on any device
      at::Tensor idx = at::randint(n, {std::min(o.batch_size, n)}, gen, at::TensorOptions().dtype(at::kLong))
                           .to(xq.device());
      at::Tensor h = rounding.h();
      at::Tensor out = op(xq.index_select(0, idx), rounding.soft(h));
      at::Tensor loss = (out - yfp.index_select(0, idx)).pow(2).flatten(1).sum(1).mean();
      if (it >= warmup) {
        // beta anneals from 20 to 2 over the rest of the run (AdaRound, section 4)
        const double t = static_cast<double>(it - warmup) / std::max(1, o.iterations - warmup);
        const double beta = 2 + 0.5 * (20 - 2) * (1 + std::cos(t * M_PI));
        loss = loss + o.reg_weight * LearnedRounding::regularizer(h, beta);
      }
      adam.zero_grad();
      loss.backward();
      adam.step();
      bar.update(static_cast<int64_t>(li) * o.iterations + it + 1);
    }
    torch::NoGradGuard no_grad;
    const at::Tensor Whard = rounding.hard(), Wnear = rounding.nearest();
    AdaRoundReport r;
    r.name = L.name;
    r.mse_nearest = recon_mse(op, xq, yfp, Wnear).item<double>();
    r.mse_adaround = recon_mse(op, xq, yfp, Whard).item<double>();
    // never worse than round-to-nearest on the objective: keep the better rounding
    if (r.mse_adaround <= r.mse_nearest) {
      assign_attr(q.module, L.weight_path, Whard.to(W.scalar_type()));
      quantized.changed(L.qnode);
    } else {
      r.mse_adaround = r.mse_nearest;
    }
    reports.push_back(r);
  }
  bar.finish();
  return reports;
}

}  // namespace anybit
