// End to end on the shipped Fashion-MNIST model: calibrate on real training images,
// evaluate on the real 10k test set.
#include "anybit/core/quantize.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace anybit {
namespace {

std::string shipped_model() { return std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt"; }

TEST(ShippedModel, Int8WeightsAndActivationsStayWithinPointThreeOfFloat) {
  auto train = open_data("fmnist:/usr/share/datasets/fashion-mnist:train");
  auto test = open_data("fmnist:/usr/share/datasets/fashion-mnist:test");
  torch::jit::Module fm = load_module(shipped_model());
  EvalOptions eo;
  eo.progress = false;
  EvalResult f = evaluate(fm, *test, eo);
  EXPECT_NEAR(f.top1, 92.89, 0.005);  // the accuracy models/fmnist_resnet.json records
  Config c = parse_config_string(
      "rules:\n"
      "  - {kind: [conv, linear], role: weight, spec: 'int8:per_channel'}\n"
      "  - {role: input, spec: uint8}\n"
      "  - {kind: [relu, pool], spec: uint8}\n"
      "  - {kind: add, spec: int8}\n");
  QuantizeOptions opt;
  opt.progress = false;
  QuantizeResult q = quantize(load_model(shipped_model()), c, train.get(), opt);
  EvalResult r = evaluate(q.model.module, *test, eo, &fm);
  eo.freeze = false;
  EvalResult r2 = evaluate(q.model.module, *test, eo, &fm);
  EXPECT_NEAR(r2.top1, r.top1, 0.05);  // freezing folds BatchNorm: same math
  EXPECT_EQ(r.samples, 10000);
  EXPECT_GE(r.top1, f.top1 - 0.3);
  EXPECT_GT(r.agreement, 99.0);
}

TEST(ShippedModel, ScriptedAndTracedFilesHaveTheSamePoints) {
  ModelGraph s = load_model(shipped_model());
  const std::string traced = shipped_model().substr(0, shipped_model().size() - 3) + "_traced.pt";
  ModelGraph t = load_model(traced);
  ASSERT_EQ(s.points.size(), t.points.size());
  for (size_t i = 0; i < s.points.size(); ++i) EXPECT_EQ(s.points[i].name, t.points[i].name);
}

TEST(Evaluate, AModelThatRejectsTheInputShapeGivesOneClearError) {
  auto wrong = tensor_data(at::zeros({4, 3, 32, 32}), at::zeros({4}, at::kLong), "wrong.npy");
  torch::jit::Module fm = load_module(shipped_model());
  try {
    EvalOptions eo;
    eo.progress = false;
    evaluate(fm, *wrong, eo);
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("wrong.npy"), std::string::npos) << m;
    EXPECT_NE(m.find("[4, 3, 32, 32]"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace anybit
