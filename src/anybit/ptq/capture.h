// Runs a model graph on calibration inputs and returns what chosen values of the graph
// held: the layer inputs and outputs that AdaRound and bias correction fit against.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

#include "anybit/graph/graph.h"

namespace anybit {

class DataSource;

// The values `vals` (of g's graph) over the first `samples` inputs of `data`, run in
// batches of `batch`, concatenated along the batch dimension. g's graph is left as it was.
std::vector<at::Tensor> capture_values(ModelGraph& g, const std::vector<torch::jit::Value*>& vals,
                                       const DataSource& data, int64_t samples, int64_t batch);

// The same values computed from `from`, a value of g's graph whose values over the samples
// are known (`from_values`, as capture_values returned them), instead of from the model's
// input: a capture that runs only the part of the model between the two. nullopt when the
// values also need the model's input (a skip connection from before `from`) or `from` is a
// view of another value. The caller keeps `from_values` true to the model as it is now, with
// the samples along its first dimension. `batch_first`, when given, says of each value
// whether it has the samples along its first dimension (a sequence-first value does not:
// its batches are concatenated along the sequence).
std::optional<std::vector<at::Tensor>> capture_values_from(ModelGraph& g, torch::jit::Value* from,
                                                           const at::Tensor& from_values,
                                                           const std::vector<torch::jit::Value*>& vals,
                                                           int64_t batch, std::vector<bool>* batch_first = nullptr);

// Captures the values of one model graph layer after layer (GPTQ, AdaRound, BRECQ): each
// value is computed from the latest value captured before it that it can be computed from
// alone (its block's input, the previous layer's input), not from the model's input, which
// would run the whole model up to every layer. The same batches as capture_values, so the
// same numbers. The caller says when an op's result changes (a weight rounded, a step
// learned); every kept value computed through that op is dropped.
class CaptureChain {
 public:
  CaptureChain(ModelGraph& g, const DataSource& data, int64_t samples, int64_t batch = 128);
  // The values over the samples (kept, as the latest cuts: not to be changed in place). Earlier cuts than the one used
  // are dropped; with `forward_only` (a caller that never goes back before `vals`) the one
  // used is dropped too.
  std::vector<at::Tensor> get(const std::vector<torch::jit::Value*>& vals, bool forward_only = false);
  at::Tensor get(torch::jit::Value* v, bool forward_only = false) { return get(std::vector<torch::jit::Value*>{v}, forward_only)[0]; }
  // `n` now computes something else.
  void changed(const torch::jit::Node* n);

 private:
  struct Cut {
    torch::jit::Value* value;
    at::Tensor x;
  };
  ModelGraph& g_;
  const DataSource& data_;
  int64_t samples_, batch_;
  std::vector<Cut> cuts_;  // latest last
};

// Whether `v` is computed (through any chain of ops, nested blocks included) from `n`'s outputs.
bool depends_on(torch::jit::Value* v, const torch::jit::Node* n);

}  // namespace anybit
