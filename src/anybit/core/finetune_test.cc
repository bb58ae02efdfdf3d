// Fine-tuning lowers the loss of a low-bit model, and a resumed run equals an
// uninterrupted one.
#include "anybit/core/finetune.h"

#include <gtest/gtest.h>

#include "anybit/core/quantize.h"
#include "anybit/ptq/fold_bn.h"

namespace anybit {
namespace {

torch::jit::Module w2a2_model(const DataSource& calib) {
  ModelGraph g = load_model(std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt");
  fold_batch_norm(g);
  Config c = parse_config_string(
      "calibrator: mse\nweight_calibrator: mse\nrules:\n"
      "  - {kind: [conv, linear], role: weight, spec: 'int2:per_channel:lsq'}\n"
      "  - {kind: [relu, pool], spec: 'uint2:lsq'}\n");
  QuantizeOptions o;
  o.progress = false;
  o.calib_batches = 1;
  return quantize(std::move(g), c, &calib, o).model.module;
}

double loss_on(torch::jit::Module& m, const DataSource& d) {
  torch::NoGradGuard ng;
  m.eval();
  auto b = d.batch(0, d.size());
  return at::cross_entropy_loss(m.forward({b.first}).toTensor(), b.second).item<double>();
}

TEST(Finetune, FiftyStepsLowerTheLossOfAW2A2Model) {
  auto data = open_data("fmnist::train:limit=512");
  torch::jit::Module m = w2a2_model(*data);
  const double before = loss_on(m, *data);
  FinetuneOptions o;
  o.epochs = 10;
  o.batch_size = 64;
  o.max_steps = 50;
  o.lr = 0.01;
  o.progress = false;
  auto reports = finetune(m, *data, o);
  int64_t steps = 0;
  for (const auto& r : reports) steps += r.steps;
  EXPECT_EQ(steps, 50);
  EXPECT_LT(loss_on(m, *data), before * 0.9);
}

TEST(Finetune, ResumingFromTheCheckpointGivesTheWeightsOfAnUninterruptedRun) {
  auto data = open_data("fmnist::train:limit=256");
  FinetuneOptions o;
  o.epochs = 2;
  o.batch_size = 64;
  o.lr = 0.02;
  o.progress = false;
  torch::jit::Module a = w2a2_model(*data);
  finetune(a, *data, o);
  const std::string dir = ::testing::TempDir() + "/anybit_ft_resume";
  std::system(("rm -rf '" + dir + "'").c_str());
  torch::jit::Module b = w2a2_model(*data);
  FinetuneOptions first = o;
  first.max_steps = 4;  // "killed" after the first epoch (4 steps of 64)
  first.checkpoint_dir = dir;
  finetune(b, *data, first);
  torch::jit::Module c = w2a2_model(*data);  // a fresh process would start from the file
  FinetuneOptions rest = o;
  rest.checkpoint_dir = dir;
  rest.resume = true;
  finetune(c, *data, rest);
  auto pa = a.named_parameters(true);
  auto pc = c.named_parameters(true);
  int compared = 0;
  for (const auto& p : pa) {
    for (const auto& q : pc)
      if (q.name == p.name) {
        EXPECT_TRUE(at::equal(p.value, q.value)) << p.name << " max diff " << (p.value - q.value).abs().max().item<double>();
        ++compared;
      }
  }
  EXPECT_GT(compared, 10);
}

}  // namespace
}  // namespace anybit
