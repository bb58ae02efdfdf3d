// GPTQ equals the optimal brain quantizer done the plain way (one column at a time with an
// explicit inverse Hessian), beats round-to-nearest on the layer output, and on the shipped
// model every conv and linear is GPTQ'd onto its grid.
#include "anybit/ptq/gptq.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "anybit/api/quantize.h"
#include "anybit/ptq/fold_bn.h"

namespace anybit {
namespace {

// OBQ in its textbook form (Frantar & Alistarh 2022, eq. 2-3 in a fixed order): quantize
// column j, spread its error over every other column with H^-1's row j, then remove j from
// H^-1 by one Gaussian elimination step.
// s: [rows] or, per element, [rows, cols]
at::Tensor obq_reference(at::Tensor W, const at::Tensor& H, const at::Tensor& s, int64_t qmin, int64_t qmax,
                         double damp, bool act_order) {
  W = W.to(at::kDouble).clone();
  at::Tensor h = H.to(at::kDouble).clone();
  const int64_t cols = W.size(1);
  at::Tensor order = act_order ? at::argsort(h.diagonal(), 0, true) : at::arange(cols, at::kLong);
  h = h + damp * h.diagonal().mean() * at::eye(cols, at::kDouble);
  at::Tensor hinv = at::inverse(h);
  at::Tensor Q = at::zeros_like(W);
  const at::Tensor S = s.dim() == 2 ? s.to(at::kDouble) : s.to(at::kDouble).reshape({-1, 1}).expand(W.sizes());
  for (int64_t k = 0; k < cols; ++k) {
    const int64_t j = order[k].item<int64_t>();
    const at::Tensor sc = S.select(1, j);
    const at::Tensor w = W.select(1, j).clone();
    const at::Tensor q = (w / sc).round().clamp(qmin, qmax) * sc;
    Q.select(1, j).copy_(q);
    const double d = hinv[j][j].item<double>();
    W -= at::outer((w - q) / d, hinv[j]);
    hinv = hinv - at::outer(hinv.select(1, j), hinv[j]) / d;
  }
  return Q;
}

struct Layer {
  at::Tensor W, X, H, s;
};

Layer random_layer(int64_t rows, int64_t cols, int64_t n, int64_t qmax) {
  at::manual_seed(3);
  Layer L;
  L.W = at::randn({rows, cols}, at::kDouble);
  // correlated inputs with very different scales per column: what act-order is for
  L.X = at::randn({n, cols}, at::kDouble).matmul(at::randn({cols, cols}, at::kDouble)) *
        at::linspace(0.1, 3.0, cols, at::kDouble);
  L.H = 2 * L.X.t().matmul(L.X) / n;
  L.s = std::get<0>(L.W.abs().max(1)) / qmax;
  return L;
}

TEST(Gptq, EqualsThePlainOptimalBrainQuantizer) {
  for (bool act_order : {false, true}) {
    const Layer L = random_layer(6, 40, 300, 3);
    GptqOptions o;
    o.act_order = act_order;
    o.block = 16;  // lazy batches that split the columns unevenly
    const at::Tensor got = gptq_quantize(L.W, L.H, L.s, -4, 3, o);
    const at::Tensor want = obq_reference(L.W, L.H, L.s, -4, 3, o.damp, act_order);
    EXPECT_TRUE(at::allclose(got, want, 0, 1e-9)) << "act_order " << act_order << "\n"
                                                  << (got - want).abs().max().item<double>();
    // on the grid, and the integers in range
    const at::Tensor k = got / L.s.reshape({-1, 1});
    EXPECT_TRUE(at::allclose(k, k.round(), 0, 1e-9));
    EXPECT_GE(k.min().item<double>(), -4 - 1e-9);
    EXPECT_LE(k.max().item<double>(), 3 + 1e-9);
  }
}

TEST(Gptq, PerGroupScalesEqualThePlainOptimalBrainQuantizer) {
  const Layer L = random_layer(6, 40, 300, 3);
  // one scale per 8 consecutive columns of a row, each from its group's largest weight
  const at::Tensor sg = std::get<0>(L.W.abs().reshape({6, 5, 8}).max(2)) / 3;  // [rows, cols / 8]
  GptqOptions o;
  o.block = 16;
  const at::Tensor got = gptq_quantize(L.W, L.H, sg, -4, 3, o, 8);
  const at::Tensor want = obq_reference(L.W, L.H, sg.repeat_interleave(8, 1), -4, 3, o.damp, true);
  EXPECT_TRUE(at::allclose(got, want, 0, 1e-9)) << (got - want).abs().max().item<double>();
  const at::Tensor k = got / sg.repeat_interleave(8, 1);
  EXPECT_TRUE(at::allclose(k, k.round(), 0, 1e-9));
}

TEST(Gptq, BeatsRoundToNearestOnTheLayerOutput) {
  const Layer L = random_layer(16, 64, 500, 3);
  const at::Tensor near = (L.W / L.s.reshape({-1, 1})).round().clamp(-4, 3) * L.s.reshape({-1, 1});
  const at::Tensor q = gptq_quantize(L.W, L.H, L.s, -4, 3, {});
  const double e_near = (L.X.matmul((near - L.W).t())).pow(2).sum().item<double>();
  const double e_gptq = (L.X.matmul((q - L.W).t())).pow(2).sum().item<double>();
  EXPECT_LT(e_gptq, 0.8 * e_near) << e_gptq << " vs " << e_near;
}

TEST(Gptq, TheFloatTargetSplitsTheAsymmetricErrorExactly) {
  // the quantized model's input X_q differs from the float one X_f; GPTQ on W' =
  // W C H^-1 minimizes |W X_f - Q X_q|^2, which is |W X_f - W' X_q|^2 + |(W' - Q) X_q|^2
  const Layer L = random_layer(8, 24, 400, 3);
  const at::Tensor Xf = L.X;
  const at::Tensor Xq = Xf + 0.3 * at::randn_like(Xf);
  const int64_t m = Xf.size(0);
  const at::Tensor H = 2 * Xq.t().matmul(Xq) / m, C = 2 * Xf.t().matmul(Xq) / m;
  const at::Tensor Wt = gptq_target_weight(L.W, H, C, 0.0);
  auto err = [&](const at::Tensor& Q) { return (Xf.matmul(L.W.t()) - Xq.matmul(Q.t())).pow(2).sum().item<double>(); };
  const at::Tensor any = (L.W / L.s.reshape({-1, 1})).round().clamp(-4, 3) * L.s.reshape({-1, 1});
  const double split = err(Wt) + (Xq.matmul((Wt - any).t())).pow(2).sum().item<double>();
  EXPECT_NEAR(err(any), split, 1e-9 * err(any));
  // and GPTQ on W' beats GPTQ on W on that objective
  GptqOptions o;
  const double plain = err(gptq_quantize(L.W, H, L.s, -4, 3, o));
  const double asym = err(gptq_quantize(Wt, H, L.s, -4, 3, o));
  EXPECT_LT(asym, plain);
}

TEST(Gptq, EveryConvAndLinearOfTheShippedModelLandsOnItsGrid) {
  const std::string model = std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt";
  auto calib = open_data("fmnist::train:limit=128");
  ModelGraph g = load_model(model);
  fold_batch_norm(g);
  QuantizeOptions o;
  o.progress = false;
  o.calib_batches = 1;
  o.batch_size = 128;
  o.gptq = true;
  o.gptq_samples = 128;
  Config c = parse_config_string(
      "weight_calibrator: mse\ncalibrator: mse\nrules:\n"
      "  - {kind: [conv, linear], role: weight, spec: 'int3:per_channel'}\n"
      "  - {kind: [relu, pool], spec: uint8}\n");
  QuantizeResult q = quantize(std::move(g), c, calib.get(), o);
  ASSERT_EQ(q.gptq.size(), 10u);  // 9 convs and the classifier
  EXPECT_TRUE(q.gptq_skipped.empty());
  int better = 0;
  for (const auto& [name, nearest, err] : q.gptq) {
    EXPECT_LE(err, nearest) << name;
    better += err < 0.9 * nearest;
  }
  EXPECT_GE(better, 8) << "GPTQ should clearly beat nearest rounding on most layers";
  at::Tensor w = q.model.module.attr("layer2").toModule().attr("conv1").toModule().attr("weight").toTensor();
  at::Tensor s = q.model.module.attr("anybit__layer2_conv1_weight__scale").toTensor();
  at::Tensor k = w / s.view({-1, 1, 1, 1});
  EXPECT_TRUE(at::allclose(k, k.round(), 0, 1e-3));
  // per-group grids (the first conv's 9 columns per row do not split into groups of 16)
  Config cg = parse_config_string(
      "weight_calibrator: mse\ncalibrator: mse\nrules:\n"
      "  - {kind: [conv, linear], role: weight, spec: 'int3:group=16'}\n"
      "  - {kind: conv, role: weight, position: first, spec: 'int8:per_channel'}\n"
      "  - {kind: [relu, pool], spec: uint8}\n");
  ModelGraph g2 = load_model(model);
  fold_batch_norm(g2);
  QuantizeResult qg = quantize(std::move(g2), cg, calib.get(), o);
  ASSERT_EQ(qg.gptq.size(), 10u);
  int gbetter = 0;
  for (const auto& [name, nearest, err] : qg.gptq) gbetter += err < 0.9 * nearest;
  EXPECT_GE(gbetter, 8);
  at::Tensor wg = qg.model.module.attr("layer2").toModule().attr("conv1").toModule().attr("weight").toTensor();
  at::Tensor sgp = qg.model.module.attr("anybit__layer2_conv1_weight__scale").toTensor();
  at::Tensor kg = wg.reshape({32, -1}) / sgp.reshape({32, -1}).repeat_interleave(16, 1);
  EXPECT_TRUE(at::allclose(kg, kg.round(), 0, 1e-3));
  // it needs data, and it is one choice among the rounding methods
  o.adaround_iterations = 10;
  EXPECT_THROW(quantize(load_model(model), c, calib.get(), o), Error);
  o.adaround_iterations = 0;
  EXPECT_THROW(quantize(load_model(model), c, nullptr, o), Error);
}

}  // namespace
}  // namespace anybit
