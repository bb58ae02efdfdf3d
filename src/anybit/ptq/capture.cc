// Capturing intermediate values of a model graph on calibration data.
#include "anybit/ptq/capture.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include "anybit/core/quantize.h"

namespace anybit {
namespace jit = torch::jit;

// Runs the graph on the first `samples` calibration inputs and returns the values `vals`
// took, as their producers made them (copies taken before any later in-place op),
// concatenated over batches. The graph's output is swapped for a tuple of those values while
// a copy of it is taken, then restored; the copy, with the model's own output gone, loses
// every op the values do not depend on (dead code elimination), so capturing the input of
// an early layer runs only the model up to it.
std::vector<at::Tensor> capture_values(ModelGraph& g, const std::vector<jit::Value*>& vals, const DataSource& data,
                                int64_t samples, int64_t batch) {
  jit::Graph& graph = *g.graph;
  jit::Value* orig = graph.outputs().at(0);
  std::vector<jit::Value*> all;
  // each value as its producer made it, before any in-place op later in the graph
  for (jit::Value* v : vals) all.push_back(insert_snapshot(graph, v));
  jit::Node* tup;
  {
    jit::WithInsertPoint guard(graph.return_node());
    tup = graph.insertNode(graph.createTuple(all));
  }
  graph.eraseOutput(0);
  graph.registerOutput(tup->output());
  std::vector<std::vector<at::Tensor>> parts(vals.size());
  std::exception_ptr err;
  try {
    std::shared_ptr<jit::Graph> prefix = graph.copy();
    jit::EliminateDeadCode(prefix);
    jit::GraphFunction fn("anybit_capture", prefix, nullptr);
    torch::NoGradGuard no_grad;
    const int64_t n = std::min(samples, data.size());
    for (int64_t b = 0; b < n; b += batch) {
      auto bt = data.batch(b, std::min(batch, n - b));
      jit::Stack stack{g.module._ivalue(), bt.first};
      fn.run(stack);
      auto elems = stack.back().toTuple()->elements();
      for (size_t i = 0; i < vals.size(); ++i) parts[i].push_back(elems[i].toTensor());
    }
  } catch (...) {
    err = std::current_exception();
  }
  graph.eraseOutput(0);
  graph.registerOutput(orig);
  tup->destroy();
  for (size_t i = 0; i < all.size(); ++i) {
    jit::Node* copy = all[i]->node();
    jit::Node* none = copy->input(1)->node();
    copy->destroy();
    if (!none->hasUses()) none->destroy();
  }
  if (err) std::rethrow_exception(err);
  std::vector<at::Tensor> out;
  for (auto& p : parts) out.push_back(at::cat(p));
  return out;
}

}  // namespace anybit
