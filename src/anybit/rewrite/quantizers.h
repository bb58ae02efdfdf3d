// Graph rewriting: the quantizer node of a point (its scheme's op reading tensors registered
// on the root module, quant/scheme.h) and int32 biases. The steps of anybit::quantize that
// change the graph; calibration and the parameters come before them.
#pragma once

#include <torch/csrc/jit/ir/ir.h>

#include <functional>
#include <string>

#include "anybit/graph/graph.h"
#include "anybit/quant/scheme.h"

namespace anybit {

// Inserts y = build(x) at the point and routes later uses of x to y: after the producer of
// an output (taking over every later use, also of the input an in-place op aliases), before
// the consumer of a weight or bias, at the top for a model input.
torch::jit::Value* insert_at_point(torch::jit::Graph& graph, const Point& p,
                                   const std::function<torch::jit::Value*(torch::jit::Value* x)>& build);

// What install_quantizer put in: whether the node is a stock aten::fake_quantize_* op, the
// name of its first parameter tensor on the root module, and the parameters' summary.
struct Installed {
  bool portable = true;
  std::string first_param;
  std::string params;
};
// Registers the point's tensors on the root module (parameters where learned) and inserts
// its scheme's quantizer node. `portable`: only stock ops, else an Error naming the point.
Installed install_quantizer(ModelGraph& g, const Point& p, const QuantSpec& spec, const scheme::Params& P,
                           bool portable);

// int32 biases at s_in * s_w (QuantizeOptions::int32_bias): each conv/linear bias whose input
// and weight have uniform quantizers becomes b + detach(round(b / s) * s - b). Returns how many.
int quantize_biases_int32(ModelGraph& g);

}  // namespace anybit
