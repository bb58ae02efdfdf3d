// The first stage of fused evaluation (fused_eval.h): a frozen TorchScript graph turned into
// Steps, each a oneDNN layer with the element-wise ops fused after it (its post-ops), an
// element-wise or binary step, or one op run through its ATen operator, exactly as the
// interpreter calls it; no shapes yet (fused_eval.cc builds a plan per input shape).
// Internal to runtime/fused_eval.cc.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/stack.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace torch {
namespace jit {
struct Graph;
}  // namespace jit
}  // namespace torch

namespace anybit {
namespace fused {

// One element-wise op of a fused chain, in oneDNN's terms.
struct PostOp {
  enum Kind {
    kLinear, kClip, kRound, kRelu, kMulChannel, kAddChannel, kMaxChannel, kMinChannel, kAddTensor, kDiv,
    // activations (oneDNN eltwise algorithms without parameters)
    kSilu, kSigmoid, kHardswish, kGeluErf, kGeluTanh
  };
  PostOp(Kind k, float a_ = 0, float b_ = 0) : kind(k), a(a_), b(b_) {}
  Kind kind;
  float a = 0, b = 0;      // kLinear: a * x + b; kClip: [a, b]; kDiv: x / a
  std::vector<float> chan;  // per-channel operand (channel = dim 1)
  int value = -1;           // kAddTensor: the value added
  bool last_dim = false;    // a per-channel operand along the last dim (a linear layer's bias)
};

// How a value computed by oneDNN lies in memory: NHWC for a 4-D feature map (the
// channel is dim 1), or row-major (the tensor's own order, seen by oneDNN as
// [numel / last, last]: the channel of a post-op is the last dim).
enum class Layout { kNone, kNHWC, kRows };

struct Step {
  enum Kind { kConv, kLinear, kPool, kEltwise, kBinary, kFlatten, kGeneric };
  explicit Step(Kind k) : kind(k) {}
  Kind kind;
  int in = -1, in2 = -1, out = -1;
  at::Tensor weight, bias;  // float32, contiguous
  std::vector<int64_t> stride, padding, dilation, kernel;
  int64_t groups = 1;
  bool max_pool = false, global_pool = false, count_include_pad = true;
  dnnl::algorithm binary = dnnl::algorithm::binary_add;  // kBinary: add or mul
  bool rows_for_linear = false;  // kEltwise, kBinary: a linear layer reads the result (row-major then)
  std::vector<PostOp> post;
  // conv weights on an integer grid: weight = qweight * wstep[out channel], |qweight| <= 127
  at::Tensor qweight;  // int8, the weight's shape; undefined when the weight is not on one
  std::vector<float> wstep;
  // kGeneric: the graph op run through its ATen operator, exactly as the interpreter runs it
  std::shared_ptr<torch::jit::Operation> op;
  std::string op_name;
  std::vector<int> args;             // per op input: a value, or -1 for consts[i]
  std::vector<c10::IValue> consts;
  std::vector<int> outs;             // one value per op output (tensors and others)
  bool metadata_only = false;        // size(), dim(): reads no tensor data
  bool strided = false;              // view(): depends on its input's strides, not only its values
  bool aliases = false;              // an output may share memory with an argument, or the op writes one
  std::vector<std::pair<int, bool>> guards;  // runs only when each (bool value, expected) holds
};

// What compile_graph cannot lower; the model then runs in the interpreter, with this message.
class Unsupported : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct CompiledGraph {
  std::vector<Step> steps;
  int num_values = 0;  // value 0 is the input
  int output = -1;
  int fused = 0;       // graph ops that run as post-ops of a layer
  int onednn_ops = 0;  // tensor ops that run as oneDNN layers, post-ops or no-ops
  std::map<std::string, int> aten_ops;  // tensor ops that run through ATen, by name
  // Liveness, by step index (steps run in index order, a guarded step maybe not at all):
  // last_read[v] is the last step that reads value v (its own step when none does; INT_MAX
  // for the input and the output); buffer_end[v] is the last step that may read v's memory,
  // through v or through any value that may share it (views, lists, in-place writes,
  // flatten). After buffer_end[v], v's oneDNN buffer may hold another value.
  std::vector<int> last_read, buffer_end;
};

// Throws Unsupported. `self` is the module object (graph input 0), for the attributes
// freezing kept. With int8, the conv and linear weights that lie on an integer grid of at
// most 8 bits get their integers (Step::qweight, wstep).
CompiledGraph compile_graph(const std::shared_ptr<torch::jit::Graph>& graph, const c10::IValue& self, bool int8);

}  // namespace fused
}  // namespace anybit
