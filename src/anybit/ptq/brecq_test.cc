// Block reconstruction (BRECQ + QDrop) on the shipped model, with few samples and
// iterations: the partition, never worse than round-to-nearest with calibrated steps on
// its own block objective, learned activation steps positive and changed, weights on the grid.
#include "anybit/ptq/brecq.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "anybit/api/quantize.h"
#include "anybit/ptq/fold_bn.h"

namespace anybit {
namespace {

const char* kConfig =
    "weight_calibrator: mse\ncalibrator: mse\nrules:\n"
    "  - {kind: [conv, linear], role: weight, spec: 'int3:per_channel'}\n"
    "  - {kind: [relu, pool], spec: uint3}\n"
    "  - {kind: add, spec: int3}\n";

std::string model_path() { return std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt"; }

QuantizeResult run(int brecq_iterations, const std::string& checkpoint_dir = "", bool resume = false) {
  auto calib = open_data("fmnist::train:limit=128");
  ModelGraph g = load_model(model_path());
  fold_batch_norm(g);
  QuantizeOptions o;
  o.progress = false;
  o.calib_batches = 1;
  o.batch_size = 128;
  o.brecq_iterations = brecq_iterations;
  o.brecq_samples = 128;
  o.brecq_checkpoint_dir = checkpoint_dir;
  o.brecq_resume = resume;
  return quantize(std::move(g), parse_config_string(kConfig), calib.get(), o);
}

// one BRECQ run and one round-to-nearest run with the same calibration, shared by the tests
struct Runs {
  QuantizeResult nearest = run(0);
  QuantizeResult learned = run(30);
};
const Runs& runs() {
  static Runs r;
  return r;
}

TEST(Brecq, AKilledRunResumesAtTheNextBlockWithTheSameResult) {
  const std::string dir = ::testing::TempDir() + "/anybit_brecq_ckpt";
  std::system(("rm -rf '" + dir + "'").c_str());
  QuantizeResult full = run(30, dir);
  ASSERT_EQ(full.brecq.size(), 5u);
  // a kill during the fourth block: the first three blocks' checkpoints are there
  for (int b = 3; b < 5; ++b) std::remove((dir + "/brecq_block_" + std::to_string(b) + ".pt").c_str());
  EXPECT_THROW(run(30, dir), Error);  // without --resume the checkpoints are not overwritten
  QuantizeResult resumed = run(30, dir, true);
  ASSERT_EQ(resumed.brecq.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(std::get<0>(resumed.brecq[i]), std::get<0>(full.brecq[i]));
    EXPECT_EQ(std::get<2>(resumed.brecq[i]), std::get<2>(full.brecq[i])) << i;  // the same objective, bit for bit
    EXPECT_EQ(std::get<3>(resumed.brecq[i]) == 0, i < 3) << i;  // restored blocks did not learn
  }
  // every learned weight and step equals the uninterrupted run's
  auto tensors = [](torch::jit::Module& m) {
    std::map<std::string, at::Tensor> t;
    for (const auto& p : m.named_parameters()) t[p.name] = p.value;
    for (const auto& b : m.named_buffers()) t[b.name] = b.value;
    return t;
  };
  const auto a = tensors(full.model.module), b = tensors(resumed.model.module);
  ASSERT_EQ(a.size(), b.size());
  int compared = 0;
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(at::equal(t, b.at(name))) << name;
    ++compared;
  }
  EXPECT_GT(compared, 20);
  const at::Tensor x = open_data("fmnist::test:limit=64")->batch(0, 64).first;
  EXPECT_TRUE(at::equal(full.model.module.forward({x}).toTensor(), resumed.model.module.forward({x}).toTensor()));
}

TEST(Brecq, PartitionIsStemResidualBlocksAndClassifier) {
  ModelGraph g = load_model(model_path());
  fold_batch_norm(g);
  std::vector<BrecqBlock> blocks = brecq_partition(g);
  std::vector<std::string> names;
  std::map<std::string, std::string> block_of;
  for (const auto& b : blocks) {
    names.push_back(b.name);
    for (const auto& p : b.points) block_of[p] = b.name;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"stem.0", "layer1", "layer2", "layer3", "fc"}));
  EXPECT_EQ(block_of["input.0"], "stem.0");
  EXPECT_EQ(block_of["stem.2:out"], "stem.0");
  EXPECT_EQ(block_of["layer2.downsample.0.weight"], "layer2");
  EXPECT_EQ(block_of["layer2:add:out"], "layer2");
  EXPECT_EQ(block_of["pool:out"], "fc");
  EXPECT_EQ(block_of["fc.weight"], "fc");
}

TEST(Brecq, NeverDoesWorseThanRoundToNearestWithCalibratedStepsOnItsBlockObjective) {
  const auto& r = runs().learned.brecq;
  ASSERT_EQ(r.size(), 5u);
  int better = 0;
  for (const auto& [name, nearest, learned, seconds] : r) {
    EXPECT_LE(learned, nearest) << name;
    EXPECT_GT(seconds, 0) << name << ": every block learned here, and says how long an iteration took";
    better += learned < nearest;
  }
  EXPECT_GE(better, 3) << "block reconstruction should beat nearest rounding on most blocks";
}

TEST(Brecq, LearnedActivationStepsStayPositiveAndChange) {
  const QuantizeResult& a = runs().nearest;
  const QuantizeResult& b = runs().learned;
  int changed = 0, steps = 0;
  for (const auto& p : b.points) {
    if (p.point.role != Role::kActivation || p.first_param.empty()) continue;
    at::Tensor s1 = b.model.module.attr(p.first_param).toTensor();
    at::Tensor s0 = a.model.module.attr(p.first_param).toTensor();
    ++steps;
    EXPECT_GT(s1.min().item<float>(), 0.0f) << p.point.name;
    const bool moved = !at::equal(s0, s1);
    changed += moved;
    // the report (what `anybit quantize` prints) shows the learned step
    EXPECT_EQ(moved, p.params.find("(learned, brecq)") != std::string::npos) << p.point.name << ": " << p.params;
  }
  EXPECT_EQ(steps, 11);  // the stem's ReLU, 2 ReLUs and the add in each residual block, the pool
  EXPECT_GE(changed, steps / 2);
}

TEST(Brecq, WeightsEndExactlyOnTheGrid) {
  const QuantizeResult& b = runs().learned;
  const QuantizeResult& a = runs().nearest;
  int moved = 0;
  for (const char* layer : {"conv1", "conv2"}) {
    at::Tensor w = b.model.module.attr("layer2").toModule().attr(layer).toModule().attr("weight").toTensor();
    at::Tensor w0 = a.model.module.attr("layer2").toModule().attr(layer).toModule().attr("weight").toTensor();
    at::Tensor s = b.model.module.attr(std::string("anybit__layer2_") + layer + "_weight__scale").toTensor();
    at::Tensor k = w / s.view({-1, 1, 1, 1});
    EXPECT_TRUE(at::allclose(k, k.round(), 0, 1e-3)) << layer;
    EXPECT_LE(k.round().abs().max().item<float>(), 4.0f);
    EXPECT_GE(k.round().min().item<float>(), -4.0f);
    // rounded up or down: within one step of the float weight clipped to the grid's range
    at::Tensor k0 = (w0 / s.view({-1, 1, 1, 1})).clamp(-4, 3);
    EXPECT_LE((k - k0).abs().max().item<float>(), 1.0f + 1e-3f) << layer;
    moved += !at::equal(w, w0);
  }
  EXPECT_GE(moved, 1);
}

}  // namespace
}  // namespace anybit
