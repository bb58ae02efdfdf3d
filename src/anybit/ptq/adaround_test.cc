// AdaRound on the shipped model: never worse than round-to-nearest on its own objective,
// and the learned weights land exactly on the quantization grid.
#include "anybit/ptq/adaround.h"

#include <gtest/gtest.h>

#include "anybit/api/quantize.h"
#include "anybit/ptq/fold_bn.h"

namespace anybit {
namespace {

TEST(AdaRound, NeverDoesWorseThanRoundToNearestOnItsObjectiveAndStaysOnTheGrid) {
  const std::string model = std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt";
  auto calib = open_data("fmnist::train:limit=128");
  ModelGraph g = load_model(model);
  fold_batch_norm(g);
  QuantizeOptions o;
  o.progress = false;
  o.calib_batches = 1;
  o.batch_size = 128;
  o.adaround_iterations = 150;
  o.adaround_samples = 128;
  Config c = parse_config_string(
      "weight_calibrator: mse\ncalibrator: mse\nrules:\n"
      "  - {kind: [conv, linear], role: weight, spec: 'int3:per_channel'}\n"
      "  - {kind: [relu, pool], spec: uint4}\n");
  QuantizeResult q = quantize(std::move(g), c, calib.get(), o);
  ASSERT_EQ(q.adaround.size(), 10u);  // 9 convs and the classifier
  int better = 0;
  for (const auto& [name, nearest, ada] : q.adaround) {
    EXPECT_LE(ada, nearest) << name;
    better += ada < nearest;
  }
  EXPECT_GE(better, 5) << "AdaRound should beat nearest rounding on most layers";
  // the rounded weight is on the grid of its scale: fake-quantizing it changes nothing
  at::Tensor w = q.model.module.attr("layer2").toModule().attr("conv1").toModule().attr("weight").toTensor();
  at::Tensor s = q.model.module.attr("anybit__layer2_conv1_weight__scale").toTensor();
  at::Tensor k = w / s.view({-1, 1, 1, 1});
  EXPECT_TRUE(at::allclose(k, k.round(), 0, 1e-3));
  EXPECT_LE(k.round().abs().max().item<float>(), 4.0f);
}

}  // namespace
}  // namespace anybit
