// End to end on the shipped Fashion-MNIST model: calibrate on real training images,
// evaluate on the real 10k test set.
#include "anybit/api/quantize.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <string>

#include "anybit/api/pipeline.h"
#include "anybit/export/export.h"
#include "anybit/quant/node.h"
#include "anybit/runtime/evaluate.h"
#include "anybit/source/data_source.h"
#include "anybit/train/finetune.h"

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

// The number formats on the shipped model: real training images for calibration, the 10k
// test images for evaluation, one format for the conv/linear weights and one for the input and
// every activation.
class Formats : public ::testing::Test {
 protected:
  Formats() : train(open_data("fmnist::train")), test(open_data("fmnist::test")), fm(load_module(shipped_model())) {
    eo.progress = false;
    opt.progress = false;
    opt.calib_batches = 4;
  }
  static Config rules(const std::string& w, const std::string& a) {
    return parse_config_string("rules:\n  - {kind: [conv, linear], role: weight, spec: '" + w +
                               "'}\n  - {role: [input, activation], spec: '" + a + "'}\n");
  }
  QuantizeResult run(const std::string& w, const std::string& a, bool with_data = true) {
    return quantize(load_model(shipped_model()), rules(w, a), with_data ? train.get() : nullptr, opt);
  }
  EvalResult eval(QuantizeResult& q, bool fused = true) {
    EvalOptions o = eo;
    o.fused = fused;
    return evaluate(q.model.module, *test, o, &fm);
  }
  static void expect_no_integer_export(QuantizeResult& q, const std::string& why) {
    try {
      export_integer_model(q.model.module, {});
      ADD_FAILURE() << "exported as integers: " << why;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  }
  std::unique_ptr<DataSource> train, test;
  torch::jit::Module fm;
  EvalOptions eo;
  QuantizeOptions opt;
};

// Minifloats (fpN:eXmY): FP8 stays within a point of float, FP4 loses more, the fused
// evaluation agrees with the interpreter, and export names why it has no integer form.
TEST_F(Formats, MinifloatsQuantizeEvaluateAndRefuseIntegerExport) {
  QuantizeResult q8 = run("fp8:e4m3:per_channel", "fp8:e4m3");
  int minifloat_points = 0;
  for (const auto& r : q8.points) {
    if (r.assignment.spec.scheme != Scheme::kMinifloat) continue;
    ++minifloat_points;
    EXPECT_NE(r.params.find("scale"), std::string::npos) << r.point.name << ": " << r.params;
    EXPECT_FALSE(r.portable);
  }
  EXPECT_GT(minifloat_points, 20);
  const EvalResult r8 = eval(q8);
  EXPECT_EQ(r8.runtime, "onednn") << r8.runtime_note;
  // measured 92.33 (97.48% agreement): E4M3's 3 mantissa bits are coarser than int8 near the
  // top of the range (docs/formats.md)
  EXPECT_GE(r8.top1, 92.89 - 1.0);
  EXPECT_GT(r8.agreement, 96.0);
  EXPECT_NEAR(eval(q8, false).top1, r8.top1, 0.05);
  QuantizeResult q4 = run("fp4:e2m1:per_channel", "fp4:e2m1");
  EXPECT_LT(eval(q4).top1, r8.top1);
  expect_no_integer_export(q8, "minifloat values have no integer export");
}

// Block formats: MX scales every block from itself (activations need no calibration data),
// NVFP4 calibrates only its tensor scale; MX activations and NVFP4 have no integer export.
TEST_F(Formats, BlockFormatsQuantizeWithoutDataWhereTheyNeedNoneAndEvaluate) {
  QuantizeResult mx = run("mxint8", "mxint8", /*with_data=*/false);  // every point is MX: no data
  int blocks = 0;
  for (const auto& r : mx.points) blocks += r.assignment.spec.is_block() && r.params.find("blocks of 32") == 0;
  EXPECT_GT(blocks, 20);
  const EvalResult r8 = eval(mx);
  EXPECT_GE(r8.top1, 92.89 - 0.5);
  QuantizeResult fp4 = run("mxfp4", "mxfp4", false);
  const EvalResult r4 = eval(fp4);
  EXPECT_LT(r4.top1, r8.top1);
  EXPECT_GT(r4.top1, 30.0);
  // NVFP4's tensor scale needs data, and a calibrator that gives a maximum
  EXPECT_THROW(run("nvfp4", "nvfp4", false), Error);
  Config mse = rules("nvfp4", "nvfp4");
  mse.calibrator = "mse";
  try {
    quantize(load_model(shipped_model()), mse, train.get(), opt);
    FAIL() << "NVFP4 calibrated with mse";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("minmax, ema or percentile"), std::string::npos) << e.what();
  }
  QuantizeResult nv = run("nvfp4", "nvfp4");
  const EvalResult rn = eval(nv);
  EXPECT_GT(rn.top1, r4.top1 - 5.0);  // E4M3 block scales of 16 against E8M0 scales of 32
  EXPECT_NEAR(eval(nv, false).top1, rn.top1, 0.05);
  expect_no_integer_export(mx, "MX activations have no integer export");  // MX weights export (export_test)
  expect_no_integer_export(nv, "NVFP4 has no integer export");
}

// Codebooks: NF4 (fixed levels, a scale per channel), lut4 (k-means levels), and levels given
// in the spec; lut4:lsq makes the levels trainable.
TEST_F(Formats, CodebooksQuantizeWithNf4KmeansAndGivenLevels) {
  QuantizeResult nf4 = run("nf4:per_channel", "nf4");
  const EvalResult rn = eval(nf4);
  QuantizeResult lut = run("lut4:per_channel:lsq", "lut4");
  const EvalResult rl = eval(lut);
  // 16 k-means levels fit each channel's weights and each activation better than NF4's
  // normal-distribution levels do (post-ReLU activations are one-sided)
  EXPECT_GT(rl.top1, rn.top1);
  EXPECT_GT(rl.top1, 85.0);  // measured 86.54 (int4 with the same rules: 46)
  // a codebook given in the spec: no data needed, and the weights take only those values
  QuantizeResult given = quantize(load_model(shipped_model()),
                                  parse_config_string("rules:\n  - {kind: conv, role: weight, spec: "
                                                      "'lut2:levels=-1/-0.25/0.25/1'}\n  - {kind: relu, "
                                                      "spec: 'lut2:levels=0/0.5/1/2'}\n"),
                                  nullptr, opt);
  int probed = 0;
  for (const auto& q : probe_quantizers(given.model.module, train->batch(0, 4).first)) {
    const at::Tensor u = std::get<0>(at::_unique(q.value));
    const bool weight = q.point.find(".weight") != std::string::npos;
    const at::Tensor allowed = weight ? at::tensor({-1.0f, -0.25f, 0.25f, 1.0f}) : at::tensor({0.0f, 0.5f, 1.0f, 2.0f});
    EXPECT_TRUE(at::isin(u, allowed).all().item<bool>()) << q.point << " " << u;
    ++probed;
  }
  EXPECT_GT(probed, 10);
  int learned = 0;
  for (const auto& p : lut.model.module.named_parameters(false))
    if (qnode::what_of(p.name) == "levels") {
      ++learned;
      EXPECT_EQ(p.value.dim(), 2) << p.name;  // [channels, 16]
      EXPECT_EQ(p.value.size(1), 16) << p.name;
    }
  EXPECT_GT(learned, 5);
  expect_no_integer_export(nf4, "codebook activations have no integer export");
}

// The preparation the CLI, Python and the sweep share: folding, equalization, and the
// option check they all give the same message for.
TEST(Pipeline, PrepareFoldsEqualizesAndRefusesEqualizingUnfoldedModels) {
  PrepareOptions o;
  o.cle = true;
  try {
    prepare_model(shipped_model(), o);
    FAIL() << "equalized without folding";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs BatchNorm folded first"), std::string::npos) << e.what();
  }
  o.fold_bn = true;
  const PreparedModel p = prepare_model(shipped_model(), o);
  EXPECT_GT(p.folded, 5);
  EXPECT_GT(p.cle.pairs, 0);
  const PreparedModel plain = prepare_model(shipped_model(), {});
  EXPECT_EQ(plain.folded, 0);
  EXPECT_EQ(plain.cle.pairs, 0);
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

TEST(OneInput, AModelWhoseForwardTakesTwoInputsIsOneClearErrorBeforeAnyWork) {
  torch::jit::Module m("two_inputs");
  m.define(R"(
def forward(self, x, mask):
    return x.masked_fill(mask, 0.0).flatten(1)
)");
  auto data = tensor_data(at::rand({8, 3, 4, 4}), at::zeros({8}, at::kLong), "random images");
  auto expect_error = [](const std::function<void()>& f, const std::string& what) {
    try {
      f();
      ADD_FAILURE() << what << ": no error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(what + ": the model's forward takes 2 inputs (x, mask)"), std::string::npos) << msg;
      EXPECT_NE(msg.find("one tensor"), std::string::npos) << msg;
    }
  };
  Config config = parse_config_string("rules:\n  - {role: input, spec: int8}\n");
  expect_error([&] { quantize(analyze_module(m.clone()), config, data.get(), QuantizeOptions()); }, "quantize");
  expect_error([&] { evaluate(m, *data, EvalOptions()); }, "evaluate");
  FinetuneOptions fo;
  expect_error([&] { finetune(m, *data, fo); }, "finetune");
  // an input with a default value is not needed: the model runs on one tensor
  torch::jit::Module d("default_mask");
  d.define(R"(
def forward(self, x, scale: float = 2.0):
    return (x * scale).flatten(1)
)");
  EXPECT_NO_THROW(check_one_input(d, "evaluate"));
  EXPECT_NO_THROW(quantize(analyze_module(d.clone()), config, data.get(), QuantizeOptions()));
}

}  // namespace
}  // namespace anybit
