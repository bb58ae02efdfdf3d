// Runs a model graph on calibration inputs and returns what chosen values of the graph
// held: the layer inputs and outputs that AdaRound and bias correction fit against.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "anybit/graph/graph.h"

namespace anybit {

class DataSource;

// The values `vals` (of g's graph) over the first `samples` inputs of `data`, run in
// batches of `batch`, concatenated along the batch dimension. g's graph is left as it was.
std::vector<at::Tensor> capture_values(ModelGraph& g, const std::vector<torch::jit::Value*>& vals,
                                       const DataSource& data, int64_t samples, int64_t batch);

}  // namespace anybit
