// Bias correction removes a planted per-channel mean shift.
#include "anybit/ptq/bias_correction.h"

#include <gtest/gtest.h>

#include "anybit/api/quantize.h"
#include "anybit/ptq/fold_bn.h"

namespace anybit {
namespace {

TEST(BiasCorrection, RemovesAPlantedMeanShift) {
  const std::string model = std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt";
  auto calib = open_data("fmnist::train:limit=256");
  ModelGraph ref = load_model(model);
  fold_batch_norm(ref);
  ModelGraph q = load_model(model);
  fold_batch_norm(q);
  at::Tensor b0 = resolve_attr(q.module, "layer2.conv1.bias").toTensor().detach().clone();
  at::Tensor planted = at::linspace(-0.5, 0.5, b0.numel());
  assign_attr(q.module, "layer2.conv1.bias", b0 + planted);
  std::vector<BiasCorrection> r = correct_bias(q, ref, *calib, 256);
  ASSERT_FALSE(r.empty());
  at::Tensor b1 = resolve_attr(q.module, "layer2.conv1.bias").toTensor();
  EXPECT_TRUE(at::allclose(b1, b0, 0, 1e-4)) << (b1 - b0).abs().max();
  // the layer with the planted shift was measured with it; the layers before it were not
  for (const auto& c : r) {
    if (c.layer == "layer2.conv1.weight") EXPECT_NEAR(c.mean_abs_shift, planted.abs().mean().item<double>(), 1e-4);
    if (c.layer == "stem.0.weight") EXPECT_LT(c.mean_abs_shift, 1e-5);
  }
}

TEST(BiasCorrection, ReducesTheOutputMeanShiftOfQuantizedWeights) {
  const std::string model = std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt";
  auto calib = open_data("fmnist::train:limit=256");
  Config c = parse_config_string("rules: [{kind: [conv, linear], role: weight, spec: int3}]");
  QuantizeOptions o;
  o.progress = false;
  o.bias_correction = true;
  ModelGraph g = load_model(model);
  fold_batch_norm(g);
  QuantizeResult with = quantize(std::move(g), c, calib.get(), o);
  o.bias_correction = false;
  ModelGraph g2 = load_model(model);
  fold_batch_norm(g2);
  QuantizeResult without = quantize(std::move(g2), c, calib.get(), o);
  torch::jit::Module fm = load_module(model);
  auto x = calib->batch(0, 256).first;
  torch::NoGradGuard ng;
  at::Tensor yf = fm.forward({x}).toTensor();
  const double shift_with = (with.model.module.forward({x}).toTensor() - yf).mean(0).abs().mean().item<double>();
  const double shift_without = (without.model.module.forward({x}).toTensor() - yf).mean(0).abs().mean().item<double>();
  EXPECT_LT(shift_with, shift_without);
}

}  // namespace
}  // namespace anybit
