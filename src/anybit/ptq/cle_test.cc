// Cross-layer equalization keeps the float function, equalizes the ranges, and lowers the
// error of per-tensor weight quantization where channel ranges are unbalanced.
#include "anybit/ptq/cle.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "anybit/ptq/fold_bn.h"

namespace anybit {
namespace {

std::string fixture(const std::string& name) {
  const char* dir = std::getenv("ANYBIT_FIXTURES");
  return std::string(dir ? dir : "fixtures") + "/" + name;
}

at::Tensor attr(const ModelGraph& g, const std::string& path) { return resolve_attr(g.module, path).toTensor(); }

// Per-tensor symmetric round-to-nearest of the conv weights (the equalized pair), in place.
void quantize_weights_rtn(ModelGraph& g, int bits) {
  torch::NoGradGuard no_grad;
  const double qmax = (1 << (bits - 1)) - 1;
  for (const auto& p : g.points) {
    if (p.role != Role::kWeight || p.kind != "conv") continue;
    at::Tensor w = attr(g, p.attr_path);
    const double s = w.abs().max().item<double>() / qmax;
    w.copy_((w / s).round().clamp(-qmax, qmax) * s);
  }
}

// root_bn: conv1 -> BN -> ReLU -> conv2 -> BN -> ReLU -> pool -> fc, with channel ranges of
// conv1 made unbalanced by factors 10^-2..10^1 (conv2's inputs compensate, so the float
// function is the same: ReLU is positively homogeneous).
ModelGraph unbalanced_model() {
  ModelGraph g = load_model(fixture("root_bn_script.pt"));
  fold_batch_norm(g);
  torch::NoGradGuard no_grad;
  at::Tensor w1 = attr(g, "conv1.weight"), b1 = attr(g, "conv1.bias"), w2 = attr(g, "conv2.weight");
  const at::Tensor f = at::logspace(-2, 1, w1.size(0));
  w1.mul_(f.reshape({-1, 1, 1, 1}));
  b1.mul_(f);
  w2.div_(f.reshape({1, -1, 1, 1}));
  return g;
}

TEST(Cle, KeepsTheFloatFunctionAndEqualizesRanges) {
  ModelGraph g = unbalanced_model();
  at::manual_seed(0);
  const at::Tensor x = at::rand({4, 3, 16, 16});
  const at::Tensor want = g.module.forward({x}).toTensor();
  const CleResult r = equalize_cross_layer(g);
  EXPECT_EQ(r.pairs, 1);  // conv1 -> conv2; conv2 -> fc goes through pooling
  EXPECT_EQ(r.relu6_replaced, 0);
  const at::Tensor got = g.module.forward({x}).toTensor();
  EXPECT_TRUE(at::allclose(got, want, 1e-4, 1e-5)) << (got - want).abs().max();
  const at::Tensor r1 = std::get<0>(attr(g, "conv1.weight").abs().reshape({8, -1}).max(1));
  const at::Tensor r2 = std::get<0>(attr(g, "conv2.weight").abs().transpose(0, 1).reshape({8, -1}).max(1));
  EXPECT_TRUE(at::allclose(r1, r2, 1e-4, 1e-6)) << r1 << r2;
}

TEST(Cle, LowersTheErrorOfPerTensorWeightQuantization) {
  at::manual_seed(0);
  const at::Tensor x = at::rand({16, 3, 16, 16});
  ModelGraph plain = unbalanced_model(), equalized = unbalanced_model();
  const at::Tensor want = plain.module.forward({x}).toTensor();
  equalize_cross_layer(equalized);
  quantize_weights_rtn(plain, 4);
  quantize_weights_rtn(equalized, 4);
  const double e_plain = (plain.module.forward({x}).toTensor() - want).pow(2).mean().item<double>();
  const double e_cle = (equalized.module.forward({x}).toTensor() - want).pow(2).mean().item<double>();
  EXPECT_LT(e_cle, 0.5 * e_plain) << "MSE with CLE " << e_cle << ", without " << e_plain;
}

TEST(Cle, MobileNetV2PairsThroughReLU6OnlyWhenAsked) {
  at::manual_seed(0);
  const at::Tensor x = at::rand({2, 3, 64, 64});
  ModelGraph g = load_model(fixture("mobilenet_v2_script.pt"));
  fold_batch_norm(g);
  const at::Tensor folded = g.module.forward({x}).toTensor();
  // without relu6_to_relu only the pairs joined directly (a project conv feeding the next
  // block's expand conv, no residual) qualify, and the function is unchanged
  const CleResult direct = equalize_cross_layer(g);
  EXPECT_EQ(direct.relu6_replaced, 0);
  EXPECT_GE(direct.pairs, 1);
  EXPECT_LE(direct.pairs, 6);
  EXPECT_TRUE(at::allclose(g.module.forward({x}).toTensor(), folded, 1e-3, 1e-4));
  // relu6_to_relu: first only the ReLU6 -> ReLU rewrite (no iterations), then equalization;
  // the equalization must keep the function of the rewritten model
  ModelGraph h = load_model(fixture("mobilenet_v2_script.pt"));
  fold_batch_norm(h);
  CleOptions replace_only;
  replace_only.relu6_to_relu = true;
  replace_only.max_iterations = 0;
  const CleResult r0 = equalize_cross_layer(h, replace_only);
  EXPECT_GT(r0.relu6_replaced, 30);
  const at::Tensor want = h.module.forward({x}).toTensor();
  ModelGraph e = load_model(fixture("mobilenet_v2_script.pt"));
  fold_batch_norm(e);
  CleOptions full;
  full.relu6_to_relu = true;
  const CleResult r = equalize_cross_layer(e, full);
  EXPECT_EQ(r.relu6_replaced, r0.relu6_replaced);
  EXPECT_GE(r.pairs, direct.pairs + 33);  // + expand -> depthwise, depthwise -> project
  const at::Tensor got = e.module.forward({x}).toTensor();
  EXPECT_TRUE(at::allclose(got, want, 1e-3, 1e-4)) << (got - want).abs().max();
}

}  // namespace
}  // namespace anybit
