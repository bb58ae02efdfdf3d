// Shared by the engine's tests: a random model through every op the engine has, its inputs,
// a run that keeps every tensor, and the comparison of two runs tensor by tensor.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "anybit/intsim/engine.h"
#include "anybit/intsim/test_util.h"

namespace anybit {
namespace intsim {
namespace testing {

// input -> conv (fused relu?) -> depthwise conv -> add (residual) -> max/avg pools ->
// concat -> global average pool -> flatten -> linear, with random sizes and quantization;
// the add also feeds an adaptive average pool to a random size (a third output).
inline ModelBuilder random_model(uint64_t seed) {
  ModelBuilder b(seed);
  std::mt19937_64& rng = b.rng;
  const int64_t C = uniform_int(rng, 1, 4), H = uniform_int(rng, 8, 11), W = uniform_int(rng, 8, 11);
  const std::string x = b.input("x", {C, H, W}, testing::random_quant(rng));
  const int64_t O = uniform_int(rng, 2, 6);
  const std::string c1 = b.conv2d(x, O, uniform_int(rng, 1, 3), uniform_int(rng, 1, 2), uniform_int(rng, 0, 1),
                                  uniform_int(rng, 1, 2), 1, /*relu=*/uniform_int(rng, 0, 1) == 1,
                                  /*per_channel=*/uniform_int(rng, 0, 1) == 1);
  const std::string dw = b.conv2d(c1, O, 3, 1, 1, 1, /*groups=*/O);
  const std::string sum = b.add(c1, dw);
  const std::string r = b.relu(sum);
  const std::string mp = b.maxpool(r, 2, 2);
  const std::string ap = b.avgpool(sum, 2, 2);
  const std::string cat = b.concat({mp, ap});
  const std::string gap = b.global_avgpool(cat);
  const std::string fc = b.linear(b.flatten(gap), uniform_int(rng, 3, 7), false, true);
  b.output(fc);
  b.output(r);
  b.output(b.adaptive_avgpool(sum, uniform_int(rng, 1, 7), uniform_int(rng, 1, 7)));
  return b;
}

inline std::vector<Tensor> random_inputs(ModelBuilder& b, int64_t batch) {
  std::vector<Tensor> in;
  for (size_t i = 0; i < b.model.inputs.size(); ++i) {
    std::vector<int64_t> shape = b.model.inputs[i].shape;
    shape.insert(shape.begin(), batch);
    in.push_back(Tensor::from_int32(shape, b.random_input(i, batch)));
  }
  return in;
}

inline std::map<std::string, Tensor> run_all(const Model& m, const EngineOptions& o, const std::vector<Tensor>& in,
                                      std::vector<LayerStats>* stats = nullptr) {
  Engine e(m, o);
  std::map<std::string, Tensor> all;
  e.run(in, &all);
  if (stats) *stats = e.stats();
  return all;
}

inline void expect_same_tensors(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    EXPECT_EQ(t.shape, b.at(name).shape) << name;
    EXPECT_EQ(t.data, b.at(name).data) << name;
  }
}

}  // namespace testing
}  // namespace intsim
}  // namespace anybit
