// A quantization point as configs and reports see it (no LibTorch types here, so rule
// matching and reports stay light).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace anybit {

enum class Role { kWeight, kBias, kActivation, kInput };
const char* role_name(Role r);

struct PointDesc {
  std::string name;    // features.0.weight, features.1:out, layer1.0:add:out, input.0
  Role role = Role::kActivation;
  std::string kind;    // conv, linear, relu, act, add, mul, cat, pool, bn, mean, input
  std::string op;      // the aten op, e.g. aten::conv2d
  std::string module;  // module path of the op ("" for the root)
  std::vector<int64_t> shape;  // parameters: their shape; activations: per-sample shape once known
  int64_t numel = 0;
  int index = 0;         // forward order
  int channel_axis = 0;  // weights: output-channel axis (1 for transposed convs); activations: 1
  // activations and inputs: the kinds of linear algebra (conv, linear, matmul) that read the
  // value as data, directly or through ops that only move it (view, transpose, dropout, ...);
  // what a config's `feeds` key selects
  std::vector<std::string> feeds;
  // weights and biases read by ops of further kinds too (an embedding table tied to the output
  // layer's weight): a rule naming any of them selects the point
  std::vector<std::string> also_kinds;
};

// The JSON form of each result (nlohmann's to_json, found by `json j = x;`): `inspect --json`,
// the other commands' --json, the files studies write and the Python package's dicts (the
// binding converts this JSON) all use it, so they agree by construction.
// {index, name, role, kind, op, module, shape, params (its element count)[, feeds][, also_kinds]}
void to_json(nlohmann::json& j, const PointDesc& p);

}  // namespace anybit
