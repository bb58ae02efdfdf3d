// What graph.cc (loading and analysis), specialize.cc (graph rewrites before the points are
// named) and points.cc (naming the points) share. Internal to graph/.
#pragma once

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <memory>
#include <string>
#include <unordered_map>

namespace anybit {
namespace detail {

// Ops that do linear algebra inside one kernel, where no point can reach it, with the reason
// shown to the user.
const std::unordered_map<std::string, std::string>& fused_ops();
bool contains_fused(torch::jit::Block* b);

inline bool is_tensor(const torch::jit::Value* v) { return v->type()->cast<c10::TensorType>() != nullptr; }

// aten::scaled_dot_product_attention replaced by its definition in plain ops (specialize.cc).
void decompose_attention(std::shared_ptr<torch::jit::Graph>& graph);

// Whether v is a bool fixed for this module instance (a constant, a bool attribute, a pure op on
// fixed values), and its value; `training` only with include_training (specialize.cc).
bool fixed_bool(torch::jit::Value* v, torch::jit::Value* self, const torch::jit::Module& m, bool* out,
                bool include_training);
// Replaces each prim::If on a fixed bool by the branch taken.
void specialize_ifs(std::shared_ptr<torch::jit::Graph>& graph_ptr, const torch::jit::Module& m, bool include_training);

}  // namespace detail
}  // namespace anybit
