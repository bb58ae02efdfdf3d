// BatchNorm folding keeps the float function and removes every foldable BatchNorm.
#include "anybit/ptq/fold_bn.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace anybit {
namespace {

std::string fixture(const std::string& name) {
  const char* dir = std::getenv("ANYBIT_FIXTURES");
  return std::string(dir ? dir : "fixtures") + "/" + name;
}

int count_kind(const ModelGraph& g, const std::string& kind) {
  int n = 0;
  for (const auto& p : g.points) n += p.kind == kind;
  return n;
}

class FoldBn : public ::testing::TestWithParam<std::string> {};

TEST_P(FoldBn, FoldedModelEqualsTheOriginalInFloat) {
  const std::string path = GetParam() == "fmnist" ? std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt"
                                                  : fixture(GetParam() + ".pt");
  const bool small = GetParam() == "fmnist";
  at::manual_seed(0);
  at::Tensor x = small ? at::rand({4, 1, 28, 28}) : at::rand({2, 3, 64, 64});
  torch::jit::Module ref = load_module(path);
  const at::Tensor want = ref.forward({x}).toTensor();
  ModelGraph g = load_model(path);
  const int bns = count_kind(g, "bn");
  ASSERT_GT(bns, 0);
  const int folded = fold_batch_norm(g);
  EXPECT_EQ(folded, bns);
  EXPECT_EQ(count_kind(g, "bn"), 0);
  const at::Tensor got = g.module.forward({x}).toTensor();
  EXPECT_TRUE(at::allclose(got, want, 1e-4, 1e-4)) << (got - want).abs().max();
}

INSTANTIATE_TEST_SUITE_P(Models, FoldBn,
                         ::testing::Values("fmnist", "resnet18_script", "resnet18_trace",
                                           "mobilenet_v2_script", "root_bn_script", "root_bn_trace"));

}  // namespace
}  // namespace anybit
