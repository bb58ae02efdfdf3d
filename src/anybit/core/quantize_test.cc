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

// Inputs normalized the torchvision way are signed: an unsigned input quantizer clips every
// value below 0, which the report names; `auto8` chooses a signed asymmetric int8 instead.
TEST(Quantize, AutoSignFollowsTheDataAndUnsignedSpecsOnSignedDataAreReported) {
  const std::string spec = "fmnist:/usr/share/datasets/fashion-mnist:train:mean=0.2860:std=0.3530";
  auto calib = open_data(spec);
  QuantizeOptions opt;
  opt.progress = false;
  opt.calib_batches = 2;
  opt.batch_size = 64;
  // the share of calibration values below 0, counted directly
  const at::Tensor x = calib->batch(0, 128).first;
  const double negative = (x < 0).to(at::kDouble).mean().item<double>();
  ASSERT_GT(negative, 0.3);

  auto config = [](const std::string& input) {
    return parse_config_string("rules:\n  - {role: input, spec: '" + input +
                               "'}\n  - {kind: relu, spec: auto4}\n  - {match: 'fc:out', spec: auto8}\n");
  };
  QuantizeResult a = quantize(load_model(shipped_model()), config("auto8"), calib.get(), opt);
  EXPECT_TRUE(a.clipping.empty());
  int relus = 0;
  for (const auto& r : a.points) {
    if (r.point.role == Role::kInput) {
      EXPECT_EQ(r.assignment.spec.str(), "int8:asym");
      EXPECT_EQ(r.auto_spec, "auto8");
      EXPECT_EQ(r.clipped_low, 0.0);
    } else if (r.point.kind == "relu") {
      EXPECT_EQ(r.assignment.spec.str(), "uint4") << r.point.name;  // a ReLU is never negative
      EXPECT_EQ(r.auto_spec, "auto4");
      EXPECT_GE(r.clipped_low, 0.0);
      EXPECT_LT(r.clipped_high, 0.05) << r.point.name;  // what MSE clips on purpose, not reported
      EXPECT_TRUE(r.clip_warning.empty());
      ++relus;
    } else if (r.point.name == "fc:out") {
      EXPECT_EQ(r.assignment.spec.str(), "int8:asym");  // logits are signed
    }
  }
  EXPECT_EQ(relus, 7);

  QuantizeResult u = quantize(load_model(shipped_model()), config("uint8"), calib.get(), opt);
  ASSERT_EQ(u.clipping.size(), 1u);
  const std::string& w = u.clipping[0];
  EXPECT_NE(w.find("input.0: uint8 clips the"), std::string::npos) << w;
  EXPECT_NE(w.find("below 0"), std::string::npos) << w;
  EXPECT_NE(w.find("use auto8"), std::string::npos) << w;
  for (const auto& r : u.points)
    if (r.point.role == Role::kInput) EXPECT_NEAR(r.clipped_low, negative, 1e-12);  // 0 is a bin edge: exact

  opt.strict = true;
  try {
    quantize(load_model(shipped_model()), config("uint8"), calib.get(), opt);
    FAIL() << "--strict accepted a clipping input quantizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("strict: 1 quantizer(s) clip their calibration data: input.0: uint8 clips"), std::string::npos)
        << e.what();
  }
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
